"""The dashboard's reference rules: the dense fp32 point, the plotted score range, the hypervolume reference.

- **Dense point** (per device): the run's trial of the dense fp32 policy (every keep ratio 1.0,
  every layer fp32: the ``warm_start = [1.0, ...]`` trial), else the uniform baseline's; None when
  neither ran. Speedups are ``dense latency / latency`` on the same device's predictions.
- **Score floor**: ``(1 - USEFUL_DROP) x`` the dense score (the best completed score when there is
  no dense point). Trials below it (collapsed models) stay in the plot's data but outside the
  initial range; the page counts them in a caption and marks them on the lower edge.
- **Hypervolume reference** (recomputed from all trials so far each time the page is written):
  the nadir of every series' front inside the plotted range, i.e. the fronts' lowest score (less
  ``HV_SCORE_MARGIN`` of their score span) and a latency ceiling, the lower of the budget and
  ``HV_LATENCY_MARGIN x`` the dense latency (the worst completed latency x 1.01 when neither
  exists). Not the worst trial: collapsed trials would make the box so tall that the warm starts
  fill it and the curve is flat after them; the fronts' nadir keeps the area to where the series
  compete, so later gains stay visible. The curve is divided by ``(best front score - reference
  score) x ceiling`` (1.0 would be the best score at zero latency).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

USEFUL_DROP = 0.25  # trials scoring more than 25% below the dense model are outside the plotted range
HV_LATENCY_MARGIN = 1.1  # the hypervolume's latency ceiling: 10% slower than the dense model
HV_SCORE_MARGIN = 0.05  # the hypervolume's score reference: 5% of the fronts' score span below their lowest point


@dataclass(frozen=True)
class DensePoint:
    """The dense fp32 model on one device: its validation score and predicted latency, and where they come from."""

    device: str
    score: float
    latency_ms: float
    trial: int
    series: str


def is_dense(policy: Mapping[str, Any]) -> bool:
    """Whether a policy dict keeps every channel and every layer in fp32."""
    keep = [float(v) for v in (policy.get("keep") or {}).values()] + [float(policy.get("default_keep", 1.0))]
    prec = list((policy.get("precision") or {}).values()) + [str(policy.get("default_precision", "fp32"))]
    return bool(policy) and all(k == 1.0 for k in keep) and all(p == "fp32" for p in prec)


def dense_point(series: Sequence[Any], device: str) -> DensePoint | None:
    """The first completed dense fp32 trial with a latency on ``device``, searching the series in order."""
    for s in series:
        for t in s.completed():
            if device in t.latency_ms and is_dense(t.policy):
                return DensePoint(device, float(t.accuracy), float(t.latency_ms[device]), t.number, s.label)
    return None


def score_floor(series: Sequence[Any], dense: DensePoint | None) -> float | None:
    """The lowest score of the plotted range (None: no completed trial, or a non-positive reference)."""
    top = dense.score if dense is not None else max((t.accuracy for s in series for t in s.completed()), default=None)
    return None if top is None or top <= 0 else top * (1.0 - USEFUL_DROP)


def hv_reference(fronts: Sequence[tuple[float, float]], pts: Sequence[tuple[float, float]], dense: DensePoint | None,
                 floor: float | None, budget_ms: float | None) -> tuple[float, float]:
    """(score, latency) reference of the hypervolume on one device (see the module docstring).

    ``fronts``: the (score, latency) points of every series' front; ``pts``: every completed trial's."""
    ceilings = [c for c in (budget_ms, dense.latency_ms * HV_LATENCY_MARGIN if dense else None) if c is not None]
    lat = min(ceilings) if ceilings else (max((p[1] for p in pts), default=1.0) * 1.01)
    useful = [a for a, ms in fronts if ms < lat and (floor is None or a >= floor)]
    if useful:
        lo, hi = min(useful), max(useful)
        score = lo - max(HV_SCORE_MARGIN * (hi - lo), 1e-6)
    else:
        score = floor if floor is not None else (min((p[0] for p in pts), default=0.0) - 1e-9)
    return (float(score), float(lat))


def hv_scale(fronts: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """What the hypervolume is divided by: the box from the reference to (best front score, 0 ms)."""
    area = (max((a for a, _ in fronts), default=ref[0] + 1.0) - ref[0]) * ref[1]
    return area if area > 0 else 1.0


def plotted_range(scores: Sequence[float], floor: float | None) -> tuple[float, float] | None:
    """The initial score axis range: from the floor (or the lowest score above it) to the best score, padded."""
    shown = [s for s in scores if floor is None or s >= floor]
    if not shown:
        return None
    lo, hi = min(shown), max(shown)
    pad = max(0.04 * (hi - lo), 0.002)
    return (lo - pad, hi + 2 * pad)  # room above the best point for its label


def speedup(dense: DensePoint | None, latency_ms: float | None) -> float | None:
    """``dense latency / latency`` (None without a dense point or a latency)."""
    if dense is None or latency_ms is None or latency_ms <= 0:
        return None
    return dense.latency_ms / latency_ms
