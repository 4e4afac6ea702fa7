"""Search results as data: trial records, feasibility, Pareto fronts, hypervolume, run-dir files.

Pure functions first (no Optuna, no I/O): :func:`non_dominated`, :func:`pareto_front`,
:func:`is_feasible`, :func:`hypervolume`. Then the run-directory files a search writes:

- ``trials.csv`` / ``trials.parquet``: one row per trial with columns ``number``, ``state``,
  ``accuracy``, ``latency_ms:<device>`` per device, ``coverage:<device>``, ``feasible``, ``params``,
  ``macs``, ``size_bytes``, ``eval_seconds``, ``error``, ``policy`` (JSON text).
- ``pareto.json``: a list of ``{"trial", "accuracy", "latency_ms": {device: ms}, "size_bytes",
  "params", "macs", "policy"}`` for the feasible, non-dominated completed trials, by latency.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COLUMN_ORDER = ("number", "state", "accuracy", "feasible", "params", "macs", "size_bytes", "eval_seconds", "error", "policy")


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """True if ``a`` is at least as good as ``b`` everywhere and strictly better somewhere."""
    better = False
    for x, y, up in zip(a, b, maximize):
        if (x < y) if up else (x > y):
            return False
        better = better or x != y
    return better


def non_dominated(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices of the non-dominated points; of identical points only the first is kept."""
    keep: list[int] = []
    for i, p in enumerate(points):
        if any(tuple(points[j]) == tuple(p) for j in keep):
            continue
        if not any(dominates(q, p, maximize) for j, q in enumerate(points) if j != i):
            keep.append(i)
    return keep


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated (accuracy max, latency min) points, sorted by latency."""
    idx = non_dominated(points, (True, False))
    return sorted(idx, key=lambda i: (points[i][1], -points[i][0]))


def is_feasible(latency_ms: Mapping[str, float], budgets: Mapping[str, float]) -> bool:
    """True if every budgeted device's latency is within its budget (devices without one always pass)."""
    return all(latency_ms.get(dev, float("inf")) <= budget for dev, budget in budgets.items())


def hypervolume(points: Iterable[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (accuracy, latency_ms) points above ``ref``'s accuracy and below its latency."""
    acc_ref, lat_ref = ref
    pts = [(float(a), float(lat)) for a, lat in points if a > acc_ref and lat < lat_ref]
    front = [pts[i] for i in pareto_front(pts)]
    area = 0.0
    for i, (acc, lat) in enumerate(front):
        next_lat = front[i + 1][1] if i + 1 < len(front) else lat_ref
        area += (next_lat - lat) * (acc - acc_ref)
    return area


@dataclass(frozen=True)
class TrialRecord:
    """One trial as plain data (from Optuna's FrozenTrial and the user attributes the driver sets)."""

    number: int
    state: str
    accuracy: float | None
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    coverage: Mapping[str, float] = field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    size_bytes: int | None = None
    eval_seconds: float | None = None
    feasible: bool = False
    error: str = ""
    policy: Mapping[str, Any] = field(default_factory=dict)

    def objectives(self, names: Sequence[str]) -> tuple[float, ...]:
        """Objective values in ``names`` order (accuracy, latency_ms:<device>, size_bytes)."""
        out = []
        for n in names:
            out.append(self.latency_ms[n.split(":", 1)[1]] if n.startswith("latency_ms:") else getattr(self, n))
        return tuple(float(v) for v in out)

    def row(self) -> dict[str, Any]:
        row = {k: getattr(self, k) for k in COLUMN_ORDER if k != "policy"}
        row |= {f"latency_ms:{d}": v for d, v in self.latency_ms.items()}
        row |= {f"coverage:{d}": v for d, v in self.coverage.items()}
        return row | {"policy": json.dumps(dict(self.policy), sort_keys=True)}

    def pareto_entry(self) -> dict[str, Any]:
        return {"trial": self.number, "accuracy": self.accuracy, "latency_ms": dict(self.latency_ms), "size_bytes": self.size_bytes,
                "params": self.params, "macs": self.macs, "policy": dict(self.policy)}


def record_from_trial(trial: Any, budgets: Mapping[str, float]) -> TrialRecord:
    """Build a :class:`TrialRecord` from an Optuna ``FrozenTrial``."""
    attrs = trial.user_attrs
    latency = {k: float(v) for k, v in (attrs.get("latency_ms") or {}).items()}
    complete = trial.state.name == "COMPLETE"
    return TrialRecord(
        number=trial.number, state=trial.state.name, accuracy=float(trial.values[0]) if complete and trial.values else None,
        latency_ms=latency, coverage=dict(attrs.get("coverage") or {}), params=attrs.get("params"), macs=attrs.get("macs"),
        size_bytes=attrs.get("size_bytes"), eval_seconds=attrs.get("eval_seconds"),
        feasible=complete and is_feasible(latency, budgets), error=str(attrs.get("error", "")), policy=attrs.get("policy") or {},
    )


def pareto_records(records: Sequence[TrialRecord], objective_names: Sequence[str]) -> list[TrialRecord]:
    """The feasible, non-dominated completed trials, sorted by their first latency objective."""
    pool = [r for r in records if r.state == "COMPLETE" and r.feasible]
    maximize = [n == "accuracy" for n in objective_names]
    idx = non_dominated([r.objectives(objective_names) for r in pool], maximize)
    lat_pos = next((i for i, n in enumerate(objective_names) if n.startswith("latency_ms:")), 0)
    return sorted((pool[i] for i in idx), key=lambda r: (r.objectives(objective_names)[lat_pos], r.number))


def trials_frame(records: Sequence[TrialRecord]):
    """The trials table as a pandas DataFrame (one row per trial)."""
    import pandas as pd

    return pd.DataFrame([r.row() for r in records])


def write_results(run_dir: str | Path, records: Sequence[TrialRecord], objective_names: Sequence[str]) -> list[TrialRecord]:
    """Write trials.csv, trials.parquet and pareto.json into ``run_dir``; return the front."""
    run_dir = Path(run_dir)
    frame = trials_frame(records)
    atomic_write(run_dir / "trials.csv", lambda p: frame.to_csv(p, index=False))
    atomic_write(run_dir / "trials.parquet", lambda p: frame.to_parquet(p, index=False))
    front = pareto_records(records, objective_names)
    atomic_write(run_dir / "pareto.json", lambda p: p.write_text(json.dumps([r.pareto_entry() for r in front], indent=2) + "\n"))
    return front


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` beside ``path``, then rename it over ``path``: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


def load_pareto(run_dir: str | Path) -> list[dict[str, Any]]:
    return json.loads((Path(run_dir) / "pareto.json").read_text())
