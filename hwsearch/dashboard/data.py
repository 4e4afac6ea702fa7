"""The dashboard's data: everything :mod:`hwsearch.dashboard` draws, computed from a run directory.

Plain records only (no plotting here). Fronts and hypervolumes use :mod:`hwsearch.results`'
:func:`~hwsearch.results.pareto_front` and :func:`~hwsearch.results.hypervolume`, on
(accuracy, latency_ms) per device; only feasible completed trials count.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwsearch.config import read_saved_config
from hwsearch.errors import HwsearchError
from hwsearch.results import hypervolume, pareto_front

BASELINE_KINDS = ("uniform", "random")


@dataclass(frozen=True)
class TrialPoint:
    """One trial of one series, as the dashboard needs it."""

    number: int
    state: str
    accuracy: float | None
    latency_ms: Mapping[str, float]
    feasible: bool
    params: int | None = None
    size_bytes: int | None = None
    error: str = ""
    policy: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Series:
    """The trials of one search: the main run (its sampler) or a baseline (uniform, random)."""

    label: str
    trials: tuple[TrialPoint, ...]

    def completed(self) -> list[TrialPoint]:
        return [t for t in self.trials if t.state == "COMPLETE" and t.accuracy is not None]


@dataclass(frozen=True)
class Curve:
    """A labelled line: x and y values plus the trial number behind each point."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    trials: tuple[int, ...] = ()


@dataclass(frozen=True)
class DevicePanel:
    """Accuracy vs latency on one device: every series' front, the search's (in)feasible trials, the budget."""

    device: str
    budget_ms: float | None
    fronts: tuple[Curve, ...]
    feasible: Curve
    infeasible: Curve
    hypervolume: tuple[Curve, ...]
    reference: tuple[float, float]


@dataclass(frozen=True)
class ExportPoint:
    trial: int
    device: str
    predicted_ms: float | None
    measured_ms: float | None
    ok: bool


@dataclass(frozen=True)
class WinnerLayers:
    """A Pareto winner's per-group keep ratios and per-layer precisions."""

    trial: int
    accuracy: float
    latency_ms: Mapping[str, float]
    keep: tuple[tuple[str, float], ...]
    precision: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DashboardData:
    run: str
    sampler: str
    devices: tuple[str, ...]
    panels: tuple[DevicePanel, ...]
    exports: tuple[ExportPoint, ...]
    winners: tuple[WinnerLayers, ...]
    table_columns: tuple[str, ...]
    table_rows: tuple[tuple[Any, ...], ...]


def device_front(trials: Sequence[TrialPoint], device: str) -> Curve:
    """The (latency, accuracy) Pareto front of the feasible completed trials on ``device``, by latency."""
    pool = [t for t in trials if t.state == "COMPLETE" and t.feasible and t.accuracy is not None and device in t.latency_ms]
    idx = pareto_front([(t.accuracy, t.latency_ms[device]) for t in pool])
    return Curve("front", tuple(pool[i].latency_ms[device] for i in idx), tuple(pool[i].accuracy for i in idx), tuple(pool[i].number for i in idx))


def hypervolume_curve(trials: Sequence[TrialPoint], device: str, ref: tuple[float, float], label: str = "") -> Curve:
    """Hypervolume of the feasible trials finished so far, after each trial (in trial-number order)."""
    front: list[tuple[float, float]] = []
    xs, ys = [], []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == "COMPLETE" and t.feasible and t.accuracy is not None and device in t.latency_ms:
            pts = front + [(t.accuracy, t.latency_ms[device])]
            front = [pts[i] for i in pareto_front(pts)]
        xs.append(float(t.number))
        ys.append(hypervolume(front, ref))
    return Curve(label, tuple(xs), tuple(ys))


def reference_point(series: Sequence[Series], device: str, budget_ms: float | None) -> tuple[float, float]:
    """One (accuracy, latency) reference for every series: the worst completed accuracy, and the budget (or worst latency)."""
    pts = [(t.accuracy, t.latency_ms[device]) for s in series for t in s.completed() if device in t.latency_ms]
    if not pts:
        return (0.0, budget_ms or 1.0)
    acc_ref = min(a for a, _ in pts)
    lat_ref = budget_ms if budget_ms is not None else max(lat for _, lat in pts) * 1.01
    return (acc_ref - 1e-9, float(lat_ref))


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def read_series(run_dir: Path, label: str) -> Series:
    """The trials of the run (or baseline) in ``run_dir`` from its trials table."""
    import pandas as pd

    path = run_dir / "trials.parquet"
    frame = pd.read_parquet(path) if path.is_file() else pd.read_csv(run_dir / "trials.csv")
    devices = [c.split(":", 1)[1] for c in frame.columns if c.startswith("latency_ms:")]
    trials = []
    for row in frame.to_dict("records"):
        lat = {d: v for d in devices if (v := _number(row.get(f"latency_ms:{d}"))) is not None}
        policy = row.get("policy")
        trials.append(TrialPoint(int(row["number"]), str(row["state"]), _number(row.get("accuracy")), lat, bool(row.get("feasible")),
                                 _int(row.get("params")), _int(row.get("size_bytes")), str(row.get("error") or "")[:200],
                                 json.loads(policy) if isinstance(policy, str) and policy else {}))
    return Series(label, tuple(trials))


def _int(value: Any) -> int | None:
    v = _number(value)
    return None if v is None else int(v)


def read_exports(run_dir: Path) -> tuple[ExportPoint, ...]:
    out = []
    for path in sorted((run_dir / "export").glob("*/manifest.json")):
        m = json.loads(path.read_text())
        for dev, measured in (m.get("measured_latency_ms") or {}).items():
            out.append(ExportPoint(int(m["trial"]), dev, (m.get("predicted_latency_ms") or {}).get(dev), measured, bool(m.get("ok"))))
    return tuple(out)


def winner_layers(entry: Mapping[str, Any]) -> WinnerLayers:
    """Per-group keep and per-layer precision of a pareto.json entry (defaults shown under 'default')."""
    pol = entry.get("policy") or {}
    keep = tuple(sorted((pol.get("keep") or {}).items())) or (("default", float(pol.get("default_keep", 1.0))),)
    prec = tuple((pol.get("precision") or {}).items()) or (("default", str(pol.get("default_precision", "fp32"))),)
    return WinnerLayers(int(entry["trial"]), float(entry["accuracy"]), dict(entry.get("latency_ms") or {}), keep, prec)


def device_panel(series: Sequence[Series], device: str, budget_ms: float | None) -> DevicePanel:
    ref = reference_point(series, device, budget_ms)
    main = series[0]
    fronts = tuple(Curve(s.label, *_xyz(device_front(s.trials, device))) for s in series)
    pts = [t for t in main.completed() if device in t.latency_ms]
    feas = Curve("feasible", tuple(t.latency_ms[device] for t in pts if t.feasible), tuple(t.accuracy for t in pts if t.feasible), tuple(t.number for t in pts if t.feasible))
    infeas = Curve("infeasible", tuple(t.latency_ms[device] for t in pts if not t.feasible), tuple(t.accuracy for t in pts if not t.feasible), tuple(t.number for t in pts if not t.feasible))
    hv = tuple(hypervolume_curve(s.trials, device, ref, s.label) for s in series)
    return DevicePanel(device, budget_ms, fronts, feas, infeas, hv, ref)


def _xyz(c: Curve) -> tuple:
    return c.x, c.y, c.trials


def trials_table(series: Sequence[Series], devices: Sequence[str]) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    cols = ("series", "trial", "state", "accuracy", *(f"latency_ms:{d}" for d in devices), "feasible", "params", "size_bytes", "error")
    rows = []
    for s in series:
        for t in s.trials:
            rows.append((s.label, t.number, t.state, t.accuracy, *(t.latency_ms.get(d) for d in devices), t.feasible, t.params, t.size_bytes, t.error))
    return cols, tuple(rows)


def _has_trials(run_dir: Path) -> bool:
    return (run_dir / "trials.parquet").is_file() or (run_dir / "trials.csv").is_file()


def load_dashboard_data(run_dir: str | Path) -> DashboardData:
    """Read a run directory (and its baselines and exports) into :class:`DashboardData`."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file() or not _has_trials(run_dir):
        raise HwsearchError(f"Run directory {str(run_dir)!r} has no config.json and trials table; pass a directory written by `hwsearch search`, e.g. runs/NAME.")
    cfg = read_saved_config(cfg_path)
    devices = tuple(cfg.get("devices") or {})
    budgets = {d: (cfg["devices"][d] or {}).get("budget_ms") for d in devices}
    sampler = str(cfg.get("sampler", "search"))
    series = [read_series(run_dir, f"search ({sampler})")]
    series += [read_series(run_dir / "baselines" / k, k) for k in BASELINE_KINDS if _has_trials(run_dir / "baselines" / k)]
    pareto = json.loads((run_dir / "pareto.json").read_text()) if (run_dir / "pareto.json").is_file() else []
    cols, rows = trials_table(series, devices)
    return DashboardData(str(cfg.get("name") or run_dir.name), sampler, devices, tuple(device_panel(series, d, budgets[d]) for d in devices),
                         read_exports(run_dir), tuple(winner_layers(e) for e in pareto), cols, rows)
