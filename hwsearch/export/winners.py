"""What export needs from a run directory: its resolved config, device tables, and chosen winners.

A run directory holds ``config.json`` (the resolved :class:`~hwsearch.config.ExperimentConfig`),
``study.db`` (the Optuna study, named after the run) and ``pareto.json``. :func:`load_run`
rebuilds the run's :class:`~hwsearch.context.Context` exactly as the search's workers do;
:func:`select_winners` reads the policies to export.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hwsearch import context
from hwsearch.config import load_config
from hwsearch.errors import HwsearchError
from hwsearch.policy import Policy
from hwsearch.runtime.session import SessionSettings
from hwsearch.runtime.timing import MeasureSettings
from hwsearch.tables.adaptation import validation_path
from hwsearch.tables.table import file_sha256, model_statistic

REBUILD_THREADS = 1  # torch threads of the search's workers (hwsearch.search.evaluate.Evaluator)
PREDICTION_TOLERANCE = 0.01  # a fresh table prediction this far from the search's stored one is reported


def read_json(path: Path, what: str, fix: str) -> Any:
    if not path.is_file():
        raise HwsearchError(f"{what} {str(path)!r} does not exist; {fix}.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HwsearchError(f"{what} {str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); {fix}.") from None


def versions() -> dict[str, str]:
    """Library versions a manifest records (what reproduces the file and its measurement)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("hwsearch", "torch", "torch-pruning", "onnx", "onnxruntime", "optuna", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out



@dataclass(frozen=True)
class Device:
    """A target device: its name, latency table directory and latency budget, and the Ray resources of the node that measures it."""

    name: str
    table_dir: Path
    budget_ms: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    ray_resources: Mapping[str, float] | None = field(default=None, hash=False)

    @classmethod
    def from_spec(cls, spec: Any) -> Device:
        """From the config's :class:`~hwsearch.config.DeviceSpec` (its table path is already resolved)."""
        path = Path(spec.table)
        meta = read_json(path / "meta.json", f"Latency table metadata for device {spec.name!r}", "run `hwsearch profile` for that device or fix the table path in the config")
        return cls(spec.name, path, spec.budget_ms, meta, getattr(spec, "ray_resources", None))

    def settings(self) -> SessionSettings:
        """The table's ORT session settings (meta.json ``session``, else its ``threads`` / ``provider``)."""
        d = SessionSettings().to_dict()
        m = {**d, **{k: self.meta[k] for k in ("threads", "provider") if k in self.meta}, **dict(self.meta.get("session") or {})}
        return SessionSettings(**{k: type(d[k])(m[k]) for k in d})

    def measure_settings(self) -> MeasureSettings:
        """The table's timing loop (meta.json ``measurement``: warmup, min_runs, min_time_s) and the statistic its predictions estimate."""
        m = dict(self.meta.get("measurement") or self.meta)
        return MeasureSettings(int(m.get("warmup", 20)), int(m.get("min_runs", m.get("runs", 100))), float(m.get("min_time_s", 0.0)), self.statistic())

    def statistic(self) -> str:
        """What the table's predictions estimate (``p10`` or ``median`` of repeated runs): re-measured latency uses the same."""
        return model_statistic(self.meta)

    def provenance(self) -> dict[str, Any]:
        csv = self.table_dir / "table.csv"
        digest = file_sha256(csv)
        keep = ("device", "cpu_model", "gpu", "runtime", "runtime_version", "threads", "provider", "date", "schema")
        return {"name": self.table_dir.name, "path": str(self.table_dir), "sha256": digest, "budget_ms": self.budget_ms,
                "meta": {k: self.meta[k] for k in keep if k in self.meta}}

    def session_record(self, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """The ORT session options and timing loop that reproduce this device's measured latency."""
        timing = self.measure_settings()
        return self.settings().to_dict() | {"inter_op_num_threads": 1, "input_shape": list(input_shape), "warmup": timing.warmup, "runs": timing.min_runs, "min_time_s": timing.min_time_s,
                                            "statistic": f"{self.statistic()} of runs after warmup, batch 1 (p90 recorded too)"}


@dataclass(frozen=True)
class Winner:
    """A trial to export: its policy and what the search recorded for it."""

    trial: int
    policy: Mapping[str, Any]
    search_accuracy: float | None = None
    predicted_latency_ms: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """Everything needed to rebuild a run's candidates on this machine: the run's Context and devices."""

    run_dir: Path
    name: str
    config: Any  # hwsearch.config.ExperimentConfig
    study_name: str
    ctx: Any  # hwsearch.context.Context
    devices: tuple[Device, ...]

    @cached_property
    def _predictors(self) -> dict[str, Any]:
        try:
            return self.ctx.predictors()
        except Exception as exc:  # noqa: BLE001 - no usable predictor: the search's record is used, and said so
            return {"__error__": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}

    def adaptations(self) -> dict[str, str | None]:
        """The machine adaptation each device's predictor applies (None: the table as built)."""
        return {d.name: getattr(getattr(self._predictors.get(d.name), "adaptation", None), "key", None) for d in self.devices}

    def validation_rmspe(self) -> dict[str, float | None]:
        """Per device, the RMSPE of the predictor export compares with: the adapted predictor's validation on this machine when
        there is one, else the table's validation.json (None without either)."""
        out: dict[str, float | None] = {}
        for dev, key in self.adaptations().items():
            table = next(d.table_dir for d in self.devices if d.name == dev)
            candidates = [validation_path(table, key) if key else None, table / "validation.json"]
            found = next((c for c in candidates if c is not None and c.is_file()), None)
            try:
                out[dev] = float(json.loads(found.read_text())["rmspe"]) if found else None
            except (OSError, ValueError, KeyError, TypeError):
                out[dev] = None
        return out

    def predict(self, winner: Winner) -> tuple[dict[str, float | None], list[str]]:
        """Predicted latency per device from the tables (the search's stored figure when no predictor exists)."""
        out: dict[str, float | None] = {}
        notes: list[str] = []
        for dev in self.devices:
            stored = winner.predicted_latency_ms.get(dev.name)
            pred = self._predictors.get(dev.name)
            value = float(pred.predict(Policy.from_dict(winner.policy)).latency_ms) if pred is not None else stored
            if pred is None:
                why = self._predictors.get("__error__", "no predictor for this device")
                notes.append(f"device {dev.name!r}: predicted latency taken from the search's record (table predictor unavailable: {why})")
            elif stored is not None and abs(value - stored) > PREDICTION_TOLERANCE * max(stored, 1e-9):
                notes.append(f"device {dev.name!r}: table now predicts {value:.4f} ms, the search recorded {stored:.4f} ms (table changed since the search?)")
            out[dev.name] = None if value is None else float(value)
        return out, notes


def single_threaded(fn, *args, **kwargs):
    """``fn`` with torch on the search workers' thread count, so a fine-tune repeats the search's arithmetic."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(REBUILD_THREADS)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def load_run(run_dir: str | Path, study_name: str | None = None) -> RunContext:
    """Read ``run_dir/config.json`` and rebuild the run's Context (task, family, trained baseline, space, options) as the search did."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HwsearchError(f"Run directory {str(run_dir)!r} does not exist; pass a directory written by `hwsearch search`, e.g. runs/NAME.")
    if not (run_dir / "config.json").is_file():
        raise HwsearchError(f"Run directory {str(run_dir)!r} has no config.json; pass a directory written by `hwsearch search`, e.g. runs/NAME.")
    cfg = context.resolve(load_config(run_dir / "config.json"))
    devices = tuple(Device.from_spec(d) for d in cfg.devices)
    return RunContext(run_dir, cfg.name, cfg, study_name or recorded_study(run_dir) or cfg.name, context.from_config(cfg), devices)


def recorded_study(run_dir: Path) -> str | None:
    """The study name the run's last session recorded in ``sessions.jsonl`` (a baseline run's is ``NAME-uniform``
    or ``NAME-random``, not the config's name); None when there is no record."""
    path = run_dir / "sessions.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in reversed(lines):
        try:
            name = json.loads(line).get("study")
        except (ValueError, AttributeError):
            continue
        if name:
            return str(name)
    return None


def _winner(entry: Mapping[str, Any]) -> Winner:
    lat = entry.get("latency_ms") or {}
    return Winner(int(entry["trial"]), entry.get("policy") or {}, entry.get("accuracy"), {k: float(v) for k, v in dict(lat).items()})


def _study_winner(ctx: RunContext, number: int) -> Winner:
    import optuna

    db = ctx.run_dir / "study.db"
    if not db.is_file():
        raise HwsearchError(f"Run {str(ctx.run_dir)!r} has no study.db, so trial {number} cannot be looked up; export with --pareto instead.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=ctx.study_name, storage=f"sqlite:///{db.resolve()}")
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise HwsearchError(f"Trial {number} is not in run {ctx.name!r} (it has trials 0..{max(trials, default=-1)}); pick an existing trial number.")
    t = trials[number]
    if t.state != optuna.trial.TrialState.COMPLETE or "policy" not in t.user_attrs:
        raise HwsearchError(f"Trial {number} of run {ctx.name!r} is {t.state.name} without a usable policy; pick a COMPLETE trial (see trials.csv).")
    policy = t.user_attrs["policy"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    acc = t.user_attrs.get("accuracy", t.values[0] if t.values else None)
    return _winner({"trial": number, "policy": policy, "accuracy": acc, "latency_ms": t.user_attrs.get("latency_ms") or {}})


def select_winners(ctx: RunContext, trials: list[int] | None, pareto: bool) -> list[Winner]:
    """The Pareto front (from pareto.json) and/or the listed trial numbers, each once, in trial order."""
    chosen: dict[int, Winner] = {}
    if pareto:
        front = read_json(ctx.run_dir / "pareto.json", "Pareto front", "let the search finish (or resume it), or export single trials with --trial N")
        chosen.update({w.trial: w for w in map(_winner, front)})
    front_by_trial = dict(chosen)
    for n in trials or []:
        chosen[n] = front_by_trial.get(n) or _study_winner(ctx, n)
    if not chosen:
        raise HwsearchError(f"Nothing to export from run {ctx.name!r}: its pareto.json is empty and no --trial was given; pass --trial N.")
    return [chosen[k] for k in sorted(chosen)]
