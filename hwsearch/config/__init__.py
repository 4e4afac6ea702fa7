"""Experiment config: a TOML file → one frozen, validated :class:`ExperimentConfig`.

Layout (every key but ``[devices]`` is optional; top-level keys come before the tables)::

    name = "quickstart"             # default: the file name; letters, digits and ._- (no leading dot)
    task = "digits"                 # built-in name or package.module:function (code: imported and called;
    model = "resnet20"              # built-in name or package.module:function   see the README's "Security")
    objectives = ["accuracy", "latency_ms"]   # + "size_bytes"; latency_ms = one objective per device
    sampler = "nsga2"               # nsga2 | tpe | random | guided (sensitivity profile + surrogate + table: hwsearch.search.guided)
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
    table = "builtin:cpu-1t"        # a built-in table, or a folder with table.csv + meta.json; a relative
                                    # path resolves against the config's folder, the working directory,
                                    # then the built-ins (hwsearch.config.builtin)
    budget_ms = 1.5                 # optional latency constraint on this device
    [compress]                      # importance, finetune_steps, finetune_lr, distill, bn_recalib_batches, calib_samples
                                    # (defaults: hwsearch.options.CompressOptions)
    [space]                         # keep_choices, precisions, channel_multiple (default: the model family's)

``--set key=value`` (dotted keys, TOML values) overrides any key. Unknown keys and bad values raise
:class:`~hwsearch.errors.HwsearchError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hwsearch.config.builtin import PREFIX, builtin_config
from hwsearch.config.checks import COMPRESS_CHECKS, DEFAULT_WARM_START, SPACE_CHECKS, _baseline, _check_keys, _dataclass_from, _devices, _int, _objectives, _str, _table, _warm_start, _warm_start_layerwise, _warm_start_policies
from hwsearch.config.records import COMPRESS_KEYS, OBJECTIVES, SAMPLERS, TABLES, DeviceSpec, ExperimentConfig, SpaceSpec
from hwsearch.errors import HwsearchError
from hwsearch.options import CompressOptions


def parse_config(raw: Mapping[str, Any], name: str, base_dir: Path) -> ExperimentConfig:
    """Validate a raw mapping (parsed TOML or a saved config.json) into an :class:`ExperimentConfig`."""
    allowed = ("name", "task", "model", "objectives", "sampler", "n_trials", "workers", "ray_address", "seed",
               "population_size", "max_failures", "warm_start", "warm_start_policies", "warm_start_layerwise", "output_dir") + TABLES
    _check_keys("", raw, allowed)
    if "devices" not in raw:
        raise HwsearchError("Config has no [devices.<name>] table; add one, e.g. [devices.cpu-1t] with table = \"builtin:cpu-1t\".")
    name = _name(raw.get("name", name))
    n_trials = _int("n_trials", raw.get("n_trials", 40), 1)
    output = _str("output_dir", raw.get("output_dir", "")) or str(Path("runs") / name)
    space = _dataclass_from(SpaceSpec, "space", raw.get("space", {}), SPACE_CHECKS)
    cfg = ExperimentConfig(
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
        compress=_dataclass_from(CompressOptions, "compress", raw.get("compress", {}), COMPRESS_CHECKS),
        space=space, warm_start=_warm_start(raw.get("warm_start", [r for r in DEFAULT_WARM_START if r in space.keep_choices]), space.keep_choices),
        warm_start_policies=_warm_start_policies(raw.get("warm_start_policies", []), base_dir),
        warm_start_layerwise=_warm_start_layerwise(raw.get("warm_start_layerwise", []), space),
    )
    routed = [d.name for d in cfg.devices if d.ray_resources]
    if routed and not cfg.ray_address:
        raise HwsearchError(f"Device {routed[0]!r} names ray_resources, which only a Ray cluster has, but ray_address is \"\"; set ray_address to the cluster whose node has them, or remove devices.{routed[0]}.ray_resources.")
    return cfg


RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")  # a run's folder under runs/ and its study name


def _name(value: Any) -> str:
    """A run name that is one safe path component: it can never point outside ``runs/``."""
    if not isinstance(value, str) or not RUN_NAME.fullmatch(value):
        raise HwsearchError(f"Config key 'name' has value {value!r}, which is not a safe run name; use letters, digits and . _ - "
                            "(not starting with a dot, at most 100 characters), e.g. name = \"quickstart-2\".")
    return value


def derive(cfg: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """``cfg`` with top-level keys changed, validated again (e.g. a baseline run's ``sampler="random"``)."""
    return parse_config({**cfg.to_dict(), **changes}, cfg.name, Path.cwd())


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
        parts = [p.strip() for p in key.strip().split(".")]
        if not all(parts):
            raise HwsearchError(f"Override {item!r} has an empty key (or key part); write KEY=VALUE, e.g. --set n_trials=10 or --set devices.cpu-1t.budget_ms=1.5.")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise HwsearchError(f"Override {item!r}: {part!r} is not a table; check the key name.")
        node[parts[-1]] = parse_value(text.strip())
    return out


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment TOML (or a run's saved config.json, or ``builtin:NAME``)."""
    p = builtin_config(str(path)[len(PREFIX):]) if str(path).startswith(PREFIX) else Path(path)
    if not p.is_file():
        raise HwsearchError(f"Config file {str(p)!r} does not exist; pass an experiment TOML such as experiments/quickstart.toml, builtin:quickstart, or write one with `hwsearch init NAME`.")
    if p.suffix == ".json":
        raw = read_saved_config(p)
    else:
        try:
            raw = tomllib.loads(p.read_bytes().decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise HwsearchError(f"Config file {str(p)!r} cannot be parsed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); fix its syntax.") from None
    return parse_config(apply_overrides(raw, overrides), p.stem, p.parent)


def read_saved_config(path: str | Path) -> dict[str, Any]:
    """A run directory's ``config.json`` as a dict, or a one-line error saying it is damaged."""
    p = Path(path)
    try:
        raw = json.loads(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = f"{exc.msg}, line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raw = None
    else:
        why = f"a JSON {type(raw).__name__}, not an object"
    if not isinstance(raw, dict):
        raise HwsearchError(f"Run config {str(p)!r} is damaged ({why}); restore it from a copy, or move the run directory away and search again to start over.")
    return raw


__all__ = ["COMPRESS_KEYS", "OBJECTIVES", "RUN_NAME", "SAMPLERS", "DeviceSpec", "ExperimentConfig", "SpaceSpec", "apply_overrides", "derive", "load_config", "parse_config",
           "parse_value", "read_saved_config"]
