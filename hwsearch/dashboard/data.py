"""The dashboard's data: everything :mod:`hwsearch.dashboard` draws, computed from a run directory.

Plain records only (no plotting here); ``hwsearch dashboard RUN --json`` prints :func:`data_record`.
Fronts and hypervolumes use :mod:`hwsearch.results`' :func:`~hwsearch.results.pareto_front` and
:func:`~hwsearch.results.hypervolume`, on (score, latency_ms) per device; only feasible completed
trials count. The dense reference point, the plotted score range and the hypervolume reference
follow the rules of :mod:`hwsearch.dashboard.reference`; the winners table is
:mod:`hwsearch.dashboard.winners`'; dates, config, table versions and warm starts are
:mod:`hwsearch.dashboard.runinfo`'s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwsearch.config import read_saved_config
from hwsearch.dashboard.reference import DensePoint, dense_point, hv_reference, hv_scale, plotted_range, score_floor
from hwsearch.dashboard.runinfo import RunInfo, run_info
from hwsearch.dashboard.winners import ExportView, WinnerRow, dense_row, read_exports, read_index, winner_rows
from hwsearch.errors import HwsearchError
from hwsearch.results import hypervolume, pareto_front
from hwsearch.search.summary import ort_defaults

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
    """Score vs latency on one device: every series' front, the search's (in)feasible trials and
    warm starts, the budget, the dense point, the plotted range and the trials below it, the hypervolume."""

    device: str
    budget_ms: float | None
    fronts: tuple[Curve, ...]
    feasible: Curve
    infeasible: Curve
    hypervolume: tuple[Curve, ...]  # normalised: divided by ``hv_scale``
    reference: tuple[float, float]
    dense: DensePoint | None = None
    warm: Curve = Curve("warm start", (), ())
    score_range: tuple[float, float] | None = None
    below: Curve = Curve("below range", (), ())  # the search's completed trials under the plotted range
    below_count: Mapping[str, int] = field(default_factory=dict)  # series label -> completed trials under the range
    floor: float | None = None
    hv_scale: float = 1.0


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
    winner_rows: tuple[WinnerRow, ...] = ()
    info: RunInfo | None = None
    metric: str = "accuracy"
    dense_row: WinnerRow | None = None
    ort_defaults: tuple[Mapping[str, Any], ...] = ()  # ``--baseline ort-default``: ONNX Runtime's one-line recipes, measured
    recovered: tuple[RecoveredPoint, ...] = ()  # exported winners recovered by ``hwsearch export --recover-steps``


@dataclass(frozen=True)
class RecoveredPoint:
    """An exported winner before and after its recovery, at its predicted latency per device (validation scores, as the fronts)."""

    trial: int
    predicted_ms: Mapping[str, float | None]
    before: float | None
    after: float | None
    kept: str
    steps: int | None


def recovered_points(exports: Sequence[ExportView]) -> tuple[RecoveredPoint, ...]:
    out = []
    for e in exports:
        r = e.recovery
        if r:
            key = f"validation_{e.metric}"
            out.append(RecoveredPoint(e.trial, dict(e.predicted_ms), (r.get("before") or {}).get(key), (r.get("after") or {}).get(key), str(r.get("kept")), r.get("steps")))
    return tuple(out)


def device_front(trials: Sequence[TrialPoint], device: str) -> Curve:
    """The (latency, accuracy) Pareto front of the feasible completed trials on ``device``, by latency."""
    pool = [t for t in trials if t.state == "COMPLETE" and t.feasible and t.accuracy is not None and device in t.latency_ms]
    idx = pareto_front([(t.accuracy, t.latency_ms[device]) for t in pool])
    return Curve("front", tuple(pool[i].latency_ms[device] for i in idx), tuple(pool[i].accuracy for i in idx), tuple(pool[i].number for i in idx))


def hypervolume_curve(trials: Sequence[TrialPoint], device: str, ref: tuple[float, float], label: str = "", scale: float = 1.0) -> Curve:
    """Hypervolume (divided by ``scale``) of the feasible trials finished so far, after each trial (in trial-number order)."""
    front: list[tuple[float, float]] = []
    xs, ys = [], []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == "COMPLETE" and t.feasible and t.accuracy is not None and device in t.latency_ms:
            pts = front + [(t.accuracy, t.latency_ms[device])]
            front = [pts[i] for i in pareto_front(pts)]
        xs.append(float(t.number))
        ys.append(hypervolume(front, ref) / scale)
    return Curve(label, tuple(xs), tuple(ys))


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


def export_points(exports: Sequence[ExportView]) -> tuple[ExportPoint, ...]:
    return tuple(ExportPoint(e.trial, d, e.predicted_ms.get(d), m, e.ok) for e in exports for d, m in e.measured_ms.items())


def winner_layers(entry: Mapping[str, Any]) -> WinnerLayers:
    """Per-group keep and per-layer precision of a pareto.json entry (defaults shown under 'default')."""
    pol = entry.get("policy") or {}
    keep = tuple(sorted((pol.get("keep") or {}).items())) or (("default", float(pol.get("default_keep", 1.0))),)
    prec = tuple((pol.get("precision") or {}).items()) or (("default", str(pol.get("default_precision", "fp32"))),)
    return WinnerLayers(int(entry["trial"]), float(entry["accuracy"]), dict(entry.get("latency_ms") or {}), keep, prec)


def _curve(label: str, pts: Sequence[TrialPoint], device: str, y: float | None = None) -> Curve:
    return Curve(label, tuple(t.latency_ms[device] for t in pts), tuple(t.accuracy if y is None else y for t in pts), tuple(t.number for t in pts))


def device_panel(series: Sequence[Series], device: str, budget_ms: float | None, warm: set[int] = frozenset()) -> DevicePanel:
    dense = dense_point(series, device)
    floor = score_floor(series, dense)
    fronts = tuple(Curve(s.label, *_xyz(device_front(s.trials, device))) for s in series)
    every = [(t.accuracy, t.latency_ms[device]) for s in series for t in s.completed() if device in t.latency_ms]
    front_pts = [(y, x) for f in fronts for x, y in zip(f.x, f.y)]
    ref = hv_reference(front_pts, every, dense, floor, budget_ms)
    scale = hv_scale([p for p in front_pts if p[1] < ref[1] and p[0] > ref[0]], ref)
    pts = [t for t in series[0].completed() if device in t.latency_ms]
    span = plotted_range([a for a, _ in every], floor)
    low = [t for t in pts if floor is not None and t.accuracy < floor]
    below = {s.label: n for s in series if (n := sum(1 for t in s.completed() if floor is not None and t.accuracy < floor))}
    hv = tuple(hypervolume_curve(s.trials, device, ref, s.label, scale) for s in series)
    return DevicePanel(device, budget_ms, fronts, _curve("feasible", [t for t in pts if t.feasible], device),
                       _curve("infeasible", [t for t in pts if not t.feasible], device), hv, ref, dense,
                       _curve("warm start", [t for t in pts if t.number in warm], device), span,
                       _curve("below range", low, device, span[0] if span else None), below, floor, scale)


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
    info = run_info(run_dir, cfg)
    series = [read_series(run_dir, f"search ({sampler})")]
    series += [read_series(run_dir / "baselines" / k, k) for k in BASELINE_KINDS if _has_trials(run_dir / "baselines" / k)]
    pareto = json.loads((run_dir / "pareto.json").read_text()) if (run_dir / "pareto.json").is_file() else []
    panels = tuple(device_panel(series, d, budgets[d], set(info.warm_starts)) for d in devices)
    exports, index = read_exports(run_dir), read_index(run_dir)
    metric = str(index.get("metric") or (exports[0].metric if exports else "accuracy"))
    dense = {p.device: p.dense for p in panels}
    rows = winner_rows(pareto, exports, devices, dense, set(info.warm_starts), {t.number: t for t in series[0].trials}, index)
    cols, table = trials_table(series, devices)
    return DashboardData(str(cfg.get("name") or run_dir.name), sampler, devices, panels, export_points(exports),
                         tuple(winner_layers(e) for e in pareto), cols, table, rows, info, metric, dense_row(index, devices, dense, metric),
                         ort_defaults(run_dir), recovered_points(exports))


def data_record(data: DashboardData) -> dict[str, Any]:
    """The dashboard's data as plain JSON-serialisable data (``hwsearch dashboard RUN --json``)."""
    return json.loads(json.dumps(asdict(data), default=str))
