"""Predict a policy's latency from a device table: the sum of the kernels its model family lowers it
to, plus the per-call overhead, corrected per kernel class by the table's ``calibration.json`` when
it has one (:mod:`hwsearch.tables.calibration`). One predictor for every family.

Interpolation rule (for a kernel the table lacks): take the measured kernels with the same
*neighbours key* (the family says which: for CNNs same op, precision, layout, spatial size, kernel
size, stride, activation, sum and depthwise-ness, only the channel counts differ; for the encoder
same block op, precision, hidden size and sequence length) and interpolate linearly in the
family's *work* measure (CNN: MACs for conv/gemm, C·H·W elements otherwise; encoder: heads or
neurons) between the two nearest measured neighbours that bracket it; outside the measured range,
scale the nearest neighbour by the work ratio. The kernel is reported in ``Prediction.missing``
and lowers ``coverage``. With ``strict=True`` a missing kernel is an error naming it; a kernel with
no neighbours in the table is always an error.

With an adaptation (:mod:`hwsearch.tables.adaptation`: fitted by ``hwsearch check-table --adapt``
on this machine), each kernel's calibrated time is scaled by its class family's factor and the
fixed part by the machine's overall one; ``Predictor.adaptation`` names the one applied.
"""

from __future__ import annotations

import bisect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.policy import Policy
from hwsearch.space import SearchSpace
from hwsearch.tables import adaptation as adapt_files
from hwsearch.tables.adaptation import Adaptation
from hwsearch.tables.calibration import Calibration, load_calibration
from hwsearch.tables.kernels import Kernel
from hwsearch.tables.table import Table, check_provenance, load_table


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    coverage: float  # fraction of table kernels found exactly in the table (0..1)
    missing: tuple[str, ...]  # keys that were interpolated
    adaptation: str | None = None  # key of the machine adaptation applied (None: the table as built)

    def to_dict(self) -> dict:
        return {"latency_ms": self.latency_ms, "coverage": self.coverage, "missing": list(self.missing), "adaptation": self.adaptation}


class Interpolator:
    """Measured kernels grouped by the lowering's neighbours key, sorted by its work measure."""

    def __init__(self, table: Table, lowering: Any) -> None:
        self.lowering = lowering
        groups: dict[Any, list[tuple[float, float]]] = {}
        for kernel, us in table.us.items():
            t = kernel.fields()
            groups.setdefault(lowering.neighbours_key(t), []).append((lowering.work(t), us))
        self.groups = {key: sorted(v) for key, v in groups.items()}

    def estimate(self, t: tuple) -> float:
        pts = self.groups.get(self.lowering.neighbours_key(t))
        if not pts:
            raise HwsearchError(f"Kernel {Kernel(*t).key!r} is not in the latency table and no kernel of its family is; profile this model into the table (hwsearch profile --model ...).")
        work = self.lowering.work(t)
        i = bisect.bisect_left(pts, (work, -1.0))
        if 0 < i < len(pts):
            (w0, t0), (w1, t1) = pts[i - 1], pts[i]
            return t0 + (t1 - t0) * (work - w0) / (w1 - w0) if w1 > w0 else t0
        w0, t0 = pts[0] if i == 0 else pts[-1]
        return t0 * work / w0 if w0 > 0 else t0


class Predictor:
    """Latency predictions for one (table, lowering, space); construct once, predict per trial."""

    def __init__(self, table: Table, lowering: Any, space: SearchSpace, strict: bool = False, calibration: Calibration | None = None,
                 adaptation: Adaptation | None = None) -> None:
        self.table, self.lowering, self.space, self.strict, self.calibration = table, lowering, space, strict, calibration
        self.adaptation = adaptation
        self.device: str = table.device
        self._us = {k.fields(): v for k, v in table.us.items()}
        self._fixed = dict(lowering.fixed_us)
        self._interp = Interpolator(table, lowering)
        self._estimated: dict[tuple, float] = {}
        self.fixed_us = table.call_overhead_us + (calibration.intercept_us if calibration else 0.0)  # before any adaptation
        self._overhead_us = adaptation.fixed_us(self.fixed_us) if adaptation else self.fixed_us
        self._coef: dict[tuple, tuple[float, float]] = {}
        self._names = (frozenset(space.group_names), frozenset(space.layers))

    def _validated(self, policy: Policy) -> Policy:
        if not (self._names[0].issuperset(policy.keep) and self._names[1].issuperset(policy.precision)):
            self.space.validate(policy)  # raises, naming the unknown group or layer
        if policy.quant.activation_type != "uint8" and any(policy.precision_for(layer) == "int8" for layer in self.space.layers):
            raise HwsearchError(f"Policy quant.activation_type {policy.quant.activation_type!r} (S8S8) has no kernels in latency tables, which time U8S8 "
                                "static int8; predict it with the default activation_type 'uint8', or measure S8S8 with `hwsearch search CONFIG --baseline ort-default`.")
        return policy

    def kernel_tuples(self, policy: Policy) -> list[tuple]:
        return self.lowering.kernels(self._validated(policy))

    def kernels(self, policy: Policy) -> list[Kernel]:
        return [Kernel(*t) for t in self.kernel_tuples(policy)]

    def kernel_us(self, t: tuple) -> float:
        """The table's (uncalibrated) time of one kernel tuple, interpolated if the table lacks it."""
        v = self._us.get(t)
        if v is None:
            v = self._fixed.get(t)
        return self._missing(t) if v is None else v

    def predict(self, policy: Policy) -> Prediction:
        ktuples = self.kernel_tuples(policy)
        us, fixed, coef, coef_on = self._us, self._fixed, self._coef, self.calibration is not None or self.adaptation is not None
        total = self._overhead_us
        missing: list[str] = []
        n_fixed = 0
        for t in ktuples:
            v = us.get(t)
            if v is None:
                v = fixed.get(t)
                if v is None:
                    v = self._missing(t)
                    missing.append(Kernel(*t).key)
                else:
                    n_fixed += 1
            if coef_on:
                a_b = coef.get(t)
                if a_b is None:
                    a_b = coef[t] = self._coefficients(t)
                v = a_b[0] * v + a_b[1]
            total += v
        n = len(ktuples) - n_fixed
        return Prediction(total / 1e3, (n - len(missing)) / n if n else 1.0, tuple(missing), self.adaptation.key if self.adaptation is not None else None)

    def corrected(self, calibration: Calibration | None, adaptation: Adaptation | None = None) -> Predictor:
        """The same table, lowering and space with other corrections (e.g. the table as built: no adaptation)."""
        return Predictor(self.table, self.lowering, self.space, self.strict, calibration, adaptation)

    def _calibrated(self, cls: str) -> tuple[float, float]:
        return self.calibration.coefficients(cls) if self.calibration is not None else (1.0, 0.0)

    def _coefficients(self, t: tuple) -> tuple[float, float]:
        """(scale, per-kernel µs) of a kernel: its class's calibration, times its class family's adaptation."""
        cls = self.lowering.kernel_class(t)
        a, b = self._calibrated(cls)
        s = self.adaptation.family_scale(cls) if self.adaptation is not None else 1.0
        return a * s, b * s

    def family_terms(self, policy: Policy) -> dict[str, float]:
        """µs of the calibrated, unadapted prediction per class family, without the fixed part (what an adaptation is fitted on)."""
        out: dict[str, float] = {}
        for t in self.kernel_tuples(policy):
            cls = self.lowering.kernel_class(t)
            a, b = self._calibrated(cls)
            fam = adapt_files.class_family(cls)
            out[fam] = out.get(fam, 0.0) + a * self.kernel_us(t) + b
        return out

    def _missing(self, t: tuple) -> float:
        if self.strict:
            raise HwsearchError(f"Kernel {Kernel(*t).key!r} is not in latency table {str(self.table.path)!r} (strict mode); profile the model into this table or drop --strict to interpolate it.")
        v = self._estimated.get(t)
        if v is None:
            v = self._estimated[t] = self._interp.estimate(t)
        return v


def machine_adaptation(table: Table, calibrated: bool, mode: str | None = None) -> Adaptation | None:
    """The stored adaptation of ``table`` for this machine under ``mode`` (``off``: none; ``auto``:
    the matching one if any; ``require``: the matching one, else a one-line error). Adaptations made
    on another machine are not applied, with a warning naming both machines."""
    mode = adapt_files.default_mode(mode)
    if mode == "off":
        return None
    found = adapt_files.find(table.path, int(table.meta["threads"]), str(table.meta.get("provider", "CPUExecutionProvider")), calibrated)
    if found.adaptation is None:
        for why in found.rejected:
            warnings.warn(f"Latency table {str(table.path)!r}: {why}; not applied.", stacklevel=3)
        if mode == "require":
            raise HwsearchError(f"Latency table {str(table.path)!r} has no adaptation for this machine ({adapt_files.describe(found.fingerprint)}) and adapt = \"require\"; "
                                f"run `hwsearch check-table {table.path} --adapt` here first, or set adapt = \"auto\".")
    return found.adaptation


def load_predictor(table_dir: str | Path, family: Any, model: Any, task: Any, space: SearchSpace, strict: bool = False,
                   calibrated: bool = True, adapt: str | None = None) -> Predictor:
    """Load and check the table at ``table_dir`` (and its calibration.json unless ``calibrated=False``,
    and the adaptation for this machine under ``adapt``: see :func:`machine_adaptation`), then lower
    ``model``'s graph once (``family.lowering``) for fast predictions."""
    table = load_table(table_dir, warn_provenance=False)
    lowering = family.lowering(model, task, space, table)
    cal = load_calibration(table_dir) if calibrated else None
    adaptation = machine_adaptation(table, cal is not None, adapt)
    if adaptation is None:  # an adaptation fitted here is this machine's provenance
        check_provenance(table.meta, str(table_dir), stacklevel=4)
    return Predictor(table, lowering, space, strict, cal.for_model(lowering.fingerprint()) if cal else None, adaptation)
