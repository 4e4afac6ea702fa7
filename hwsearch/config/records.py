"""The experiment config's records (frozen, validated by :func:`hwsearch.config.parse_config`)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwsearch.config.builtin import display_name
from hwsearch.options import CompressOptions
from hwsearch.space import DEFAULT_KEEP_CHOICES

SAMPLERS = ("nsga2", "tpe", "random", "guided")
ADAPT_MODES = ("auto", "off", "require")  # a device table's machine adaptation (hwsearch.tables.adaptation)
OBJECTIVES = ("accuracy", "latency_ms", "size_bytes")
TABLES = ("task_options", "model_options", "baseline", "devices", "compress", "space")


@dataclass(frozen=True)
class DeviceSpec:
    """One target device: its latency table directory (absolute), optional budget, and how the table
    is adapted to the machine (``auto`` / ``off`` / ``require``; None: ``$HWSEARCH_ADAPT`` or auto), and
    the Ray resources of the node that measures it (None: measured where the command runs)."""

    name: str
    table: str
    budget_ms: float | None = None
    adapt: str | None = None
    ray_resources: Mapping[str, float] | None = field(default=None, hash=False)  # e.g. {"edge-board": 1.0}: hwsearch.runtime.remote


COMPRESS_KEYS = ("importance", "finetune_steps", "finetune_lr", "distill", "bn_recalib_batches", "calib_samples")  # CompressOptions' config keys


@dataclass(frozen=True)
class SpaceSpec:
    keep_choices: tuple[float, ...] = DEFAULT_KEEP_CHOICES
    precisions: tuple[str, ...] = ("fp32", "int8")
    channel_multiple: int | None = None  # None: the model family's (8 for CNNs, 64 FFN neurons for the encoder)
    quant: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # static-int8 recipe settings searched over (hwsearch.policy.QuantRecipe)


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
        # a search always scores on val; an unset learning rate (the family's default, filled in by context.resolve) is left out
        data["compress"] = {k: data["compress"][k] for k in COMPRESS_KEYS if data["compress"][k] is not None}
        data["space"].pop("quant")
        if self.space.quant:  # only when searched over, so older runs' config.json stays the same experiment
            data["space"]["quant"] = {k: list(v) for k, v in self.space.quant}
        # a built-in table is saved as builtin:NAME, so a run survives reinstalling or moving the package
        data["devices"] = {d.name: {k: (display_name(v) if k == "table" else v) for k, v in asdict(d).items() if k != "name" and v is not None} for d in self.devices}
        return json.loads(json.dumps(data))

    def save(self, path: str | Path) -> None:
        """Write the config as JSON, readable by its owner only, via a temporary file in the same
        folder and ``os.replace``: a kill or a full disk leaves the old file whole, never half a one."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
