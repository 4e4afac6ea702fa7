"""Value checks of the experiment config: each names the key, the bad value and what is allowed."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from hwsearch.config.builtin import resolve_table, suggest
from hwsearch.config.records import ADAPT_MODES, OBJECTIVES, DeviceSpec, SpaceSpec
from hwsearch.errors import HwsearchError
from hwsearch.options import IMPORTANCES, TrainConfig
from hwsearch.policy import PRECISIONS, Policy, check_keep_ratio


def _fail(key: str, value: Any, allowed: str) -> HwsearchError:
    return HwsearchError(f"Config key {key!r} has value {value!r}, which is not allowed; use {allowed}.")


def _int(key: str, value: Any, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(key, value, f"an integer >= {low}")
    return value


def _num(key: str, value: Any, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= low:
        raise _fail(key, value, f"a number > {low:g}")
    return float(value)


def _str(key: str, value: Any, choices: Sequence[str] | None = None) -> str:
    if not isinstance(value, str) or (choices is not None and value not in choices):
        raise _fail(key, value, "one of " + ", ".join(choices) if choices else "a string")
    return value


def _table(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(key, value, f"a TOML table such as [{key}]")
    return dict(value)


def _check_keys(where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise HwsearchError(f"Config key {prefix}{key!r} is unknown{suggest(str(key), list(allowed))}; allowed keys{' in [' + where + ']' if where else ''} are {', '.join(allowed)}.")


def _resolve_table(name: str, value: Any, base_dir: Path) -> str:
    """The absolute table folder: ``builtin:NAME``, or a path against the config's folder, the working directory, then the built-ins."""
    return str(resolve_table(_str(f"devices.{name}.table", value), base_dir, key=f"Config key 'devices.{name}.table'"))


def _devices(value: Any, base_dir: Path) -> tuple[DeviceSpec, ...]:
    table = _table("devices", value)
    if not table:
        raise HwsearchError("Config has no [devices.<name>] table; add one, e.g. [devices.cpu-1t] with table = \"builtin:cpu-1t\".")
    out = []
    for name, spec in table.items():
        spec = _table(f"devices.{name}", spec)
        _check_keys(f"devices.{name}", spec, ("table", "budget_ms", "adapt", "ray_resources"))
        if "table" not in spec:
            raise HwsearchError(f"Config table [devices.{name}] has no 'table' key; set it to a latency table directory such as \"builtin:cpu-1t\" or \"latency_tables/my-device\".")
        budget = spec.get("budget_ms")
        adapt = None if spec.get("adapt") is None else _str(f"devices.{name}.adapt", spec["adapt"], ADAPT_MODES)
        resources = None if spec.get("ray_resources") is None else _ray_resources(f"devices.{name}.ray_resources", spec["ray_resources"])
        out.append(DeviceSpec(name, _resolve_table(name, spec["table"], base_dir), None if budget is None else _num(f"devices.{name}.budget_ms", budget), adapt, resources))
    return tuple(out)


def _ray_resources(key: str, value: Any) -> dict[str, float]:
    """A non-empty table of Ray resource name -> positive amount (the node that measures the device)."""
    if not isinstance(value, Mapping) or not value:
        raise _fail(key, value, 'a non-empty table of Ray resource names and amounts, e.g. { "edge-board" = 1 }')
    for res, amount in value.items():
        if not isinstance(res, str) or not res.strip():
            raise _fail(key, value, 'resource names that are non-empty strings, e.g. { "edge-board" = 1 }')
        _num(f"{key}.{res}", amount)
    return {res: float(amount) for res, amount in value.items()}


def _dataclass_from(cls: type, where: str, data: Any, checks: Mapping[str, Callable[[str, Any], Any]]) -> Any:
    data = _table(where, data)
    _check_keys(where, data, list(checks))
    return cls(**{k: checks[k](f"{where}.{k}", v) for k, v in data.items()})


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, value, "true or false")
    return value


def _keep_choices(key: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(key, value, "a non-empty list of fractions in (0, 1], e.g. [0.5, 0.75, 1.0]")
    return tuple(sorted({check_keep_ratio(v, key) for v in value}))


def _precisions(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(v not in PRECISIONS for v in value):
        raise _fail(key, value, f"a non-empty list drawn from {', '.join(PRECISIONS)}")
    return tuple(dict.fromkeys(value))


COMPRESS_CHECKS = {
    "importance": lambda k, v: _str(k, v, IMPORTANCES), "finetune_steps": _int, "finetune_lr": _num,
    "distill": _bool, "bn_recalib_batches": _int, "calib_samples": lambda k, v: _int(k, v, 1),
}
def _quant_choices(key: str, value: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """``space.quant``: static-int8 recipe settings the search chooses among, e.g. ``{calibration = ["minmax", "percentile"]}``.
    ``activation_type = "int8"`` (S8S8) is refused: the latency tables time U8S8 kernels only, so its latency could not be predicted."""
    from hwsearch.policy import QuantRecipe

    data = _table(key, value)
    _check_keys(key, data, [f.name for f in fields(QuantRecipe)])
    out = []
    for name, values in data.items():
        if not isinstance(values, list) or not values:
            raise _fail(f"{key}.{name}", values, f"a non-empty list of values, e.g. {name} = [{QuantRecipe().to_dict()[name]!r}]")
        checked = QuantRecipe.checked_values(name, values)
        if name == "activation_type" and "int8" in checked:
            raise HwsearchError(f"{key}.activation_type {values!r} offers int8 activations (S8S8), but the latency tables time U8S8 kernels only, so the search could not "
                                "predict their latency; leave activation_type out (uint8), or compare S8S8 measured with `hwsearch search CONFIG --baseline ort-default`.")
        out.append((name, checked))
    return tuple(out)


SPACE_CHECKS = {"keep_choices": _keep_choices, "precisions": _precisions, "channel_multiple": lambda k, v: None if v is None else _int(k, v, 1), "quant": _quant_choices}


def _objectives(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or any(v not in OBJECTIVES for v in value) or not {"accuracy", "latency_ms"} <= set(value):
        raise _fail("objectives", value, "a list with \"accuracy\" and \"latency_ms\", optionally \"size_bytes\"")
    return tuple(dict.fromkeys(value))


def _baseline(value: Any) -> dict[str, Any]:
    data = _table("baseline", value)
    allowed = [f.name for f in fields(TrainConfig)]
    _check_keys("baseline", data, allowed)
    # steps / hflip = None (a saved TrainConfig's default): as if the key were absent (epochs x batches; no mirroring)
    return {k: (_num(f"baseline.{k}", v, -1e-12) if k in ("lr", "weight_decay") else _bool(f"baseline.{k}", v) if k == "hflip" else _int(f"baseline.{k}", v, 0))
            for k, v in data.items() if not (k in ("steps", "hflip") and v is None)}


DEFAULT_WARM_START = (1.0, 0.75, 0.5)  # those of them in space.keep_choices


def _warm_start(value: Any, keep_choices: tuple[float, ...]) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        raise HwsearchError(f"warm_start={value!r} is not a list; use keep ratios from space.keep_choices, e.g. [1.0, 0.5], or [] for none.")
    bad = [v for v in value if v not in keep_choices]
    if bad:
        raise HwsearchError(f"warm_start value {bad[0]!r} is not one of space.keep_choices {list(keep_choices)}; pick ratios from that list.")
    return tuple(float(v) for v in value)


def _warm_start_layerwise(value: Any, space: SpaceSpec) -> tuple[str | float, ...]:
    """Precision names from ``space.precisions`` and keep ratios from ``space.keep_choices``."""
    if not isinstance(value, (list, tuple)):
        raise HwsearchError(f"warm_start_layerwise={value!r} is not a list; use precisions and keep ratios of the space, e.g. [\"int8\", 0.75], or [] for none.")
    out: list[str | float] = []
    for i, item in enumerate(value):
        if isinstance(item, str) and item in space.precisions:
            out.append(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and float(item) in space.keep_choices:
            out.append(float(item))
        else:
            raise HwsearchError(f"warm_start_layerwise[{i}] = {item!r} is neither a precision in space.precisions {list(space.precisions)} "
                                f"nor a keep ratio in space.keep_choices {list(space.keep_choices)}; use one of those.")
    return tuple(out)


def _warm_start_policies(value: Any, base_dir: Path) -> tuple[dict[str, Any], ...]:
    """Policy files (relative to the config's folder, then the working directory) or inline policy tables, as policy dicts."""

    if not isinstance(value, (list, tuple)):
        raise HwsearchError(f"warm_start_policies={value!r} is not a list; use policy JSON paths, e.g. [\"experiments/policies/half_int8.json\"], or [] for none.")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, Mapping):
            try:
                out.append(Policy.from_dict(item).to_dict())
            except HwsearchError as exc:
                raise HwsearchError(f"warm_start_policies[{i}]: {exc}") from None
            continue
        raw = _str(f"warm_start_policies[{i}]", item)
        candidates = [Path(raw)] if Path(raw).is_absolute() else list(dict.fromkeys([base_dir / raw, Path.cwd() / raw]))
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise HwsearchError(f"warm_start_policies[{i}] names {raw!r}, which is not a file (looked in {', '.join(str(c) for c in candidates)}); fix the path or write the policy JSON there.")
        try:
            out.append(Policy.load(path).to_dict())
        except HwsearchError as exc:
            raise HwsearchError(f"warm_start_policies[{i}] ({raw}): {exc}") from None
    return tuple(out)
