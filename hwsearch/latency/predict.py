"""Predict a policy's latency from a device table: sum of the kernels it lowers to + per-call overhead,
corrected per kernel class by the table's ``calibration.json`` when it has one (see calibrate.py).

Interpolation rule (for a kernel the table lacks): take the measured kernels of the same *family*
(same op, precision, layout, spatial size, kernel size, stride, activation, sum, depthwise-ness;
only the channel counts differ) and interpolate linearly in the kernel's work
(MACs for conv/gemm, C·H·W elements otherwise) between the two nearest measured neighbours that
bracket it; outside the measured range, scale the nearest neighbour by the work ratio. The kernel is
reported in ``Prediction.missing`` and lowers ``coverage``. With ``strict=True`` a missing kernel
is an error naming it; a kernel with no family in the table is always an error.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import torch

from hwsearch.errors import HwsearchError
from hwsearch.latency.calibrate import Calibration, fingerprint, kernel_class, load_calibration
from hwsearch.latency.graph import UnitGraph
from hwsearch.latency.kernels import Kernel
from hwsearch.latency.table import Table, load_table
from hwsearch.policy import Policy
from hwsearch.space import SearchSpace
from hwsearch.tasks.base import Task


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    coverage: float  # fraction of kernels found exactly in the table (0..1)
    missing: tuple[str, ...]  # keys that were interpolated

    def to_dict(self) -> dict:
        return {"latency_ms": self.latency_ms, "coverage": self.coverage, "missing": list(self.missing)}


def _tuple(k: Kernel) -> tuple:
    return (k.op, k.precision, k.layout, k.c, k.h, k.w, k.co, k.k, k.s, k.g, k.act, k.sum)


class Interpolator:
    """Families of measured kernels, sorted by work, for the documented interpolation rule."""

    def __init__(self, table: Table) -> None:
        fams: dict[str, list[tuple[float, float]]] = {}
        for kernel, us in table.us.items():
            fams.setdefault(kernel.family(), []).append((kernel.work, us))
        self.families = {f: sorted(v) for f, v in fams.items()}

    def estimate(self, kernel: Kernel) -> float:
        pts = self.families.get(kernel.family())
        if not pts:
            raise HwsearchError(f"Kernel {kernel.key!r} is not in the latency table and no kernel of its family is; profile this model into the table (hwsearch profile --model ...).")
        work = kernel.work
        i = bisect.bisect_left(pts, (work, -1.0))
        if 0 < i < len(pts):
            (w0, t0), (w1, t1) = pts[i - 1], pts[i]
            return t0 + (t1 - t0) * (work - w0) / (w1 - w0) if w1 > w0 else t0
        w0, t0 = pts[0] if i == 0 else pts[-1]
        return t0 * work / w0 if w0 > 0 else t0


class Predictor:
    """Latency predictions for one (table, task, model, space); construct once, predict per trial."""

    def __init__(self, table: Table, graph: UnitGraph, space: SearchSpace, strict: bool = False, calibration: Calibration | None = None) -> None:
        self.table, self.graph, self.space, self.strict, self.calibration = table, graph, space, strict, calibration
        self.device: str = table.device
        self._us = {_tuple(k): v for k, v in table.us.items()}
        self._interp = Interpolator(table)
        self._estimated: dict[tuple, float] = {}
        self._overhead_us = table.call_overhead_us + (calibration.intercept_us if calibration else 0.0)
        self._coef: dict[tuple, tuple[float, float]] = {}
        self._names = (frozenset(space.group_names), frozenset(space.layers))

    def _validated(self, policy: Policy) -> Policy:
        if not (self._names[0].issuperset(policy.keep) and self._names[1].issuperset(policy.precision)):
            self.space.validate(policy)  # raises, naming the unknown group or layer
        return policy

    def kernels(self, policy: Policy) -> list[Kernel]:
        return [Kernel(*t) for t in self.graph.lower(self.space, self._validated(policy))]

    def kernel_us(self, t: tuple) -> float:
        """The table's (uncalibrated) time of one kernel tuple, interpolated if the table lacks it."""
        v = self._us.get(t)
        return self._missing(t) if v is None else v

    def predict(self, policy: Policy) -> Prediction:
        ktuples = self.graph.lower(self.space, self._validated(policy))
        us, coef, cal = self._us, self._coef, self.calibration
        total = self._overhead_us
        missing: list[str] = []
        for t in ktuples:
            v = us.get(t)
            if v is None:
                v = self._missing(t)
                missing.append(Kernel(*t).key)
            if cal is not None:
                a_b = coef.get(t)
                if a_b is None:
                    a_b = coef[t] = cal.coefficients(kernel_class(t))
                v = a_b[0] * v + a_b[1]
            total += v
        n = len(ktuples)
        return Prediction(total / 1e3, (n - len(missing)) / n if n else 1.0, tuple(missing))

    def _missing(self, t: tuple) -> float:
        if self.strict:
            raise HwsearchError(f"Kernel {Kernel(*t).key!r} is not in latency table {str(self.table.path)!r} (strict mode); profile the model into this table or drop --strict to interpolate it.")
        v = self._estimated.get(t)
        if v is None:
            v = self._estimated[t] = self._interp.estimate(Kernel(*t))
        return v


def load_predictor(table_dir: str | Path, task: Task, model: torch.nn.Module, space: SearchSpace, strict: bool = False,
                   calibrated: bool = True) -> Predictor:
    """Load and check the table at ``table_dir`` (and its calibration.json unless ``calibrated=False``),
    then lower ``model``'s graph once for fast predictions."""
    table = load_table(table_dir)
    block = int(table.meta["nchwc_block"])
    if block <= 0:
        raise HwsearchError(f"Latency table {str(table_dir)!r} has nchwc_block={block}; this CPU has no NCHWc kernels, which these tables do not model yet.")
    graph = UnitGraph.from_model(model, task.example_input(), space, block)
    cal = load_calibration(table_dir) if calibrated else None
    return Predictor(table, graph, space, strict, cal.for_model(fingerprint(graph)) if cal else None)
