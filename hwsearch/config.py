"""Experiment config: a TOML file → one frozen, validated :class:`ExperimentConfig`.

Layout (every key but ``[devices]`` is optional; top-level keys come before the tables)::

    task = "digits"                 # built-in name or package.module:function
    model = "resnet20"              # built-in name or package.module:function (default: the task's)
    objectives = ["accuracy", "latency_ms"]   # + "size_bytes"; latency_ms = one objective per device
    sampler = "nsga2"               # nsga2 | tpe | random
    n_trials = 40
    workers = 2                     # Ray actors; 0 evaluates in-process
    ray_address = ""                # "" starts a private local Ray; else joins that cluster
    seed = 0
    population_size = 0             # NSGA-II generation size; 0 = n_trials // 4 clamped to [4, 50]
    max_failures = 0                # stop after this many failed trials in one session; 0 = n_trials
    warm_start = [1.0, 0.75, 0.5]   # keep ratios whose uniform policies (fp32 and int8) are tried first
                                    # (default: those of 1.0, 0.75, 0.5 that are in space.keep_choices)
    warm_start_policies = []        # policy JSON files (or inline tables) also tried first, e.g. a known-good mix
    warm_start_layerwise = []       # one layer at a time: "int8" = each precision layer alone in int8, 0.75 = each
                                    # prunable group alone at keep 0.75 (all else dense fp32); the search learns
                                    # every layer's sensitivity and crossover combines the cheap ones
    output_dir = ""                 # "" = runs/<config file name without .toml>
    [task_options]                  # keyword arguments of the task factory
    [model_options]                 # keyword arguments of the model factory, e.g. widths = [16, 32, 64]
    [baseline]                      # TrainConfig overrides (epochs, batch_size, lr, ...); trained if not cached
    [devices.cpu-1t]
    table = "latency_tables/cpu-1t" # directory with table.csv + meta.json
    budget_ms = 1.5                 # optional latency constraint on this device
    [compress]                      # importance, finetune_steps, finetune_lr, distill, bn_recalib_batches, calib_samples
                                    # (defaults: hwsearch.options.CompressOptions)
    [space]                         # keep_choices, precisions, channel_multiple (default: the model family's)

``--set key=value`` (dotted keys, TOML values) overrides any key. Unknown keys and bad values raise
:class:`~hwsearch.errors.HwsearchError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hwsearch.errors import HwsearchError
from hwsearch.policy import PRECISIONS, check_keep_ratio
from hwsearch.space import DEFAULT_KEEP_CHOICES
from hwsearch.options import IMPORTANCES, CompressOptions, TrainConfig

SAMPLERS = ("nsga2", "tpe", "random")
OBJECTIVES = ("accuracy", "latency_ms", "size_bytes")
_TABLES = ("task_options", "model_options", "baseline", "devices", "compress", "space")


@dataclass(frozen=True)
class DeviceSpec:
    """One target device: its latency table directory (absolute) and optional budget."""

    name: str
    table: str
    budget_ms: float | None = None


COMPRESS_KEYS = ("importance", "finetune_steps", "finetune_lr", "distill", "bn_recalib_batches", "calib_samples")  # CompressOptions' config keys


@dataclass(frozen=True)
class SpaceSpec:
    keep_choices: tuple[float, ...] = DEFAULT_KEEP_CHOICES
    precisions: tuple[str, ...] = ("fp32", "int8")
    channel_multiple: int | None = None  # None: the model family's (8 for CNNs, 64 FFN neurons for the encoder)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    devices: tuple[DeviceSpec, ...]
    task: str = "digits"
    model: str = ""  # "" = the task's default model
    objectives: tuple[str, ...] = ("accuracy", "latency_ms")
    sampler: str = "nsga2"
    n_trials: int = 40
    workers: int = 2
    ray_address: str = ""
    seed: int = 0
    population_size: int = 0
    max_failures: int = 0
    warm_start: tuple[float, ...] = (1.0, 0.75, 0.5)
    warm_start_policies: tuple[Mapping[str, Any], ...] = ()  # Policy.to_dict() each, loaded from the config's files
    warm_start_layerwise: tuple[str | float, ...] = ()  # precisions (one layer at a time) and keep ratios (one group at a time)
    output_dir: str = ""
    task_options: Mapping[str, Any] = field(default_factory=dict)
    model_options: Mapping[str, Any] = field(default_factory=dict)
    baseline: Mapping[str, Any] = field(default_factory=dict)
    compress: CompressOptions = CompressOptions()
    space: SpaceSpec = SpaceSpec()

    @property
    def device_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    @property
    def budgets(self) -> dict[str, float]:
        return {d.name: d.budget_ms for d in self.devices if d.budget_ms is not None}

    @property
    def objective_names(self) -> tuple[str, ...]:
        """One name per Optuna objective: accuracy, latency_ms:<device>..., size_bytes."""
        names = ["accuracy"] + [f"latency_ms:{d}" for d in self.device_names]
        return tuple(names + (["size_bytes"] if "size_bytes" in self.objectives else []))

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple("maximize" if n == "accuracy" else "minimize" for n in self.objective_names)

    @property
    def effective_population(self) -> int:
        return self.population_size or max(4, min(50, self.n_trials // 4))

    @property
    def failure_limit(self) -> int:
        return self.max_failures or max(self.n_trials, 5)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compress"] = {k: data["compress"][k] for k in COMPRESS_KEYS}  # a search always scores on val
        data["devices"] = {d.name: {k: v for k, v in asdict(d).items() if k != "name" and v is not None} for d in self.devices}
        return json.loads(json.dumps(data))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def replace(self, **changes: Any) -> "ExperimentConfig":
        return parse_config({**self.to_dict(), **changes}, self.name, Path.cwd())


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
            raise HwsearchError(f"Config key {prefix}{key!r} is unknown; allowed keys{' in [' + where + ']' if where else ''} are {', '.join(allowed)}.")


def _resolve_table(name: str, value: Any, base_dir: Path) -> str:
    raw = _str(f"devices.{name}.table", value)
    candidates = [Path(raw)] if Path(raw).is_absolute() else [Path.cwd() / raw, base_dir / raw]
    for path in candidates:
        if (path / "table.csv").is_file():
            return str(path.resolve())
    raise HwsearchError(f"Config key 'devices.{name}.table' names {raw!r}, which is not a latency table directory (no table.csv found in {', '.join(str(c) for c in candidates)}); run `hwsearch profile` to measure one or fix the path.")


def _devices(value: Any, base_dir: Path) -> tuple[DeviceSpec, ...]:
    table = _table("devices", value)
    if not table:
        raise HwsearchError("Config has no [devices.<name>] table; add one, e.g. [devices.cpu-1t] with table = \"latency_tables/cpu-1t\".")
    out = []
    for name, spec in table.items():
        spec = _table(f"devices.{name}", spec)
        _check_keys(f"devices.{name}", spec, ("table", "budget_ms"))
        if "table" not in spec:
            raise HwsearchError(f"Config table [devices.{name}] has no 'table' key; set it to a latency table directory such as \"latency_tables/cpu-1t\".")
        budget = spec.get("budget_ms")
        out.append(DeviceSpec(name, _resolve_table(name, spec["table"], base_dir), None if budget is None else _num(f"devices.{name}.budget_ms", budget)))
    return tuple(out)


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


_COMPRESS_CHECKS = {
    "importance": lambda k, v: _str(k, v, IMPORTANCES), "finetune_steps": _int, "finetune_lr": _num,
    "distill": _bool, "bn_recalib_batches": _int, "calib_samples": lambda k, v: _int(k, v, 1),
}
_SPACE_CHECKS = {"keep_choices": _keep_choices, "precisions": _precisions, "channel_multiple": lambda k, v: None if v is None else _int(k, v, 1)}


def _objectives(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or any(v not in OBJECTIVES for v in value) or not {"accuracy", "latency_ms"} <= set(value):
        raise _fail("objectives", value, "a list with \"accuracy\" and \"latency_ms\", optionally \"size_bytes\"")
    return tuple(dict.fromkeys(value))


def _baseline(value: Any) -> dict[str, Any]:
    data = _table("baseline", value)
    allowed = [f.name for f in fields(TrainConfig)]
    _check_keys("baseline", data, allowed)
    return {k: (_num(f"baseline.{k}", v, -1e-12) if k in ("lr", "weight_decay") else _int(f"baseline.{k}", v, 0)) for k, v in data.items()}


def parse_config(raw: Mapping[str, Any], name: str, base_dir: Path) -> ExperimentConfig:
    """Validate a raw mapping (parsed TOML or a saved config.json) into an :class:`ExperimentConfig`."""
    allowed = ("name", "task", "model", "objectives", "sampler", "n_trials", "workers", "ray_address", "seed",
               "population_size", "max_failures", "warm_start", "warm_start_policies", "warm_start_layerwise", "output_dir") + _TABLES
    _check_keys("", raw, allowed)
    if "devices" not in raw:
        raise HwsearchError("Config has no [devices.<name>] table; add one, e.g. [devices.cpu-1t] with table = \"latency_tables/cpu-1t\".")
    name = _str("name", raw.get("name", name))
    n_trials = _int("n_trials", raw.get("n_trials", 40), 1)
    output = _str("output_dir", raw.get("output_dir", "")) or str(Path("runs") / name)
    space = _dataclass_from(SpaceSpec, "space", raw.get("space", {}), _SPACE_CHECKS)
    return ExperimentConfig(
        name=name, devices=_devices(raw["devices"], base_dir),
        task=_str("task", raw.get("task", "digits")), model=_str("model", raw.get("model", "")),
        objectives=_objectives(raw.get("objectives", ["accuracy", "latency_ms"])),
        sampler=_str("sampler", raw.get("sampler", "nsga2"), SAMPLERS), n_trials=n_trials,
        workers=_int("workers", raw.get("workers", 2)), ray_address=_str("ray_address", raw.get("ray_address", "")),
        seed=_int("seed", raw.get("seed", 0)), population_size=_int("population_size", raw.get("population_size", 0)),
        max_failures=_int("max_failures", raw.get("max_failures", 0)), output_dir=str(Path(output).absolute()),
        task_options=_table("task_options", raw.get("task_options", {})),
        model_options=_table("model_options", raw.get("model_options", {})),
        baseline=_baseline(raw.get("baseline", {})),
        compress=_dataclass_from(CompressOptions, "compress", raw.get("compress", {}), _COMPRESS_CHECKS),
        space=space, warm_start=_warm_start(raw.get("warm_start", [r for r in DEFAULT_WARM_START if r in space.keep_choices]), space.keep_choices),
        warm_start_policies=_warm_start_policies(raw.get("warm_start_policies", []), base_dir),
        warm_start_layerwise=_warm_start_layerwise(raw.get("warm_start_layerwise", []), space),
    )


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
    """Policy files (relative to the working directory or the config's folder) or inline policy tables, as policy dicts."""
    from hwsearch.policy import Policy

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
        candidates = [Path(raw)] if Path(raw).is_absolute() else [Path.cwd() / raw, base_dir / raw]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise HwsearchError(f"warm_start_policies[{i}] names {raw!r}, which is not a file (looked in {', '.join(str(c) for c in candidates)}); fix the path or write the policy JSON there.")
        try:
            out.append(Policy.load(path).to_dict())
        except HwsearchError as exc:
            raise HwsearchError(f"warm_start_policies[{i}] ({raw}): {exc}") from None
    return tuple(out)


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (``3``, ``0.5``, ``[0.5, 1.0]``, ``true``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` / ``table.key=value`` overrides to a raw config mapping (copied)."""
    out = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise HwsearchError(f"Override {item!r} is not key=value; write e.g. --set n_trials=10 or --set devices.cpu-1t.budget_ms=1.5.")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise HwsearchError(f"Override {item!r}: {part!r} is not a table; check the key name.")
        node[parts[-1]] = parse_value(text.strip())
    return out


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment TOML (or a run's saved config.json)."""
    p = Path(path)
    if not p.is_file():
        raise HwsearchError(f"Config file {str(p)!r} does not exist; pass an experiment TOML such as experiments/quickstart.toml.")
    try:
        raw = json.loads(p.read_text()) if p.suffix == ".json" else tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise HwsearchError(f"Config file {str(p)!r} cannot be parsed ({exc}); fix its syntax.") from None
    return parse_config(apply_overrides(raw, overrides), p.stem, p.parent)
