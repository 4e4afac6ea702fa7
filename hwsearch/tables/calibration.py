"""Whole-model calibration of a kernel table: ``calibration.json`` beside ``table.csv``.

Kernels timed one at a time run hot in cache and without their neighbours; inside a whole model
the same kernels run a little differently (cache state, ORT's per-node dispatch, memory planning).
Calibration fits that difference per *kernel class* (a model family's lowering names the classes:
for CNNs conv fp32 3×3 / 1×1 / depthwise, conv int8 3×3 / 1×1 / depthwise, reorders,
quantize/dequantize, transposes, adds, pooling, gemm; for the encoder one class per block kind and
precision plus the zero-time ``transition`` kernel between blocks of different precision) on whole
models measured on the same device:

    predicted_us = call_overhead_us + intercept_us + Σ_kernels (scale[class] · table_us + per_kernel_us[class])

The coefficients (scales bounded at 0 and above) minimise the squared *relative* error over ``samples`` random policies (a seed
of their own, so ``validate-table``'s policies stay held out), with a small ridge pull toward the
uncalibrated sum (scale 1, per-kernel 0) so that a rare class cannot take wild values (the pull on
the offsets is per microsecond for models up to 1 ms and falls with the square of the median
model's size beyond, since a microsecond weighs less in a larger model's relative error). Each
architecture calibrated (keyed by its lowering's fingerprint) then gets its own
coefficients, fitted on its own models with a ridge pull toward the global ones; an architecture
that was not calibrated uses the global coefficients. The measured cases are kept in the file, so
``--refit`` can refit without measuring again. The file records the table.csv hash it was fitted
on; a table re-profiled since is used uncalibrated, with a warning. ``hwsearch calibrate-table``
(:mod:`hwsearch.latency.calibrate`) measures and writes it; the predictor applies it when present.
This module is the file format and the fit (pure functions, nothing measured).
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwsearch.errors import HwsearchError
from hwsearch.tables.table import table_hash

CALIBRATION_FILE = "calibration.json"
SCHEMA = 1
RIDGE_SCALE = 0.05  # pull of each class scale toward 1 (in units of relative error)
RIDGE_PER_KERNEL_US = 0.02  # pull of each per-kernel offset toward 0, per microsecond
OFFSET_REFERENCE_US = 1000.0  # offsets' pulls are per µs for models up to this size, proportionally weaker for larger ones
RIDGE_MODEL = 4.0  # how much more strongly an architecture's own coefficients are pulled toward the global ones


Coefs = tuple  # (scale: dict[class, float], per_kernel_us: dict[class, float], intercept_us: float)


@dataclass(frozen=True)
class Calibration:
    """Fitted coefficients: ``scale`` and ``per_kernel_us`` per kernel class, plus ``intercept_us``;
    ``by_model`` holds an architecture's own set (keyed by its lowering's ``fingerprint``)."""

    scale: Mapping[str, float]
    per_kernel_us: Mapping[str, float]
    intercept_us: float
    info: Mapping[str, Any]
    by_model: Mapping[str, Mapping[str, Any]] = None  # fingerprint -> {"name", "scale", "per_kernel_us", "intercept_us"}

    def for_model(self, fp: str) -> Calibration:
        """The coefficients for the architecture ``fp`` (its own set if calibrated, else the global one)."""
        own = (self.by_model or {}).get(fp)
        if own is None:
            return self
        return Calibration(own["scale"], own["per_kernel_us"], float(own["intercept_us"]), {**self.info, "model": own.get("name")})

    def coefficients(self, cls: str) -> tuple[float, float]:
        return self.scale.get(cls, 1.0), self.per_kernel_us.get(cls, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "intercept_us": self.intercept_us, "scale": dict(self.scale), "per_kernel_us": dict(self.per_kernel_us),
                "by_model": dict(self.by_model or {}), **self.info}


def load_calibration(table_dir: str | Path) -> Calibration | None:
    """The table's calibration, or None if it has none (or was fitted on a different table.csv: warns)."""
    path = Path(table_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        raise HwsearchError(f"Calibration file {str(path)!r} is damaged ({type(exc).__name__}: {exc}); restore it, or re-create it with `hwsearch calibrate-table {table_dir} --model ...`.") from None
    if data.get("schema") != SCHEMA or data.get("table_sha256") != table_hash(table_dir):
        warnings.warn(f"{str(path)!r} was fitted on a different table.csv (or an older schema); predicting uncalibrated. "
                      f"Re-run `hwsearch calibrate-table {table_dir}`.", stacklevel=3)
        return None
    info = {k: v for k, v in data.items() if k not in ("schema", "intercept_us", "scale", "per_kernel_us", "by_model", "cases")}
    return Calibration(data["scale"], data["per_kernel_us"], float(data["intercept_us"]), info, data.get("by_model") or {})


def _design(rows: Sequence[tuple[Mapping[str, tuple[float, int]], float]], classes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows [1, S_c..., N_c...] and the offset-free targets; weights 1/measured make errors relative."""
    x = np.array([[1.0] + [terms.get(c, (0.0, 0))[0] for c in classes] + [terms.get(c, (0.0, 0))[1] for c in classes] for terms, _ in rows])
    y = np.array([m for _, m in rows])
    return x, y, 1.0 / y


def fit(rows: Sequence[tuple[Mapping[str, tuple[float, int]], float]], overhead_us: float, prior: Coefs | None = None, strength: float = 1.0) -> Coefs:
    """Least-squares (relative error) fit of (scale, per_kernel_us, intercept_us), with a ridge pull
    of ``strength`` toward ``prior`` (default: the plain sum, scale 1 and no offsets)."""
    p_scale, p_per, p_icpt = prior or ({}, {}, 0.0)
    classes = sorted({c for terms, _ in rows for c in terms})
    x, y, w = _design(rows, classes)
    n = len(classes)
    a = x * w[:, None]
    b = (y - overhead_us) * w
    reg_a = np.zeros((1 + 2 * n, 1 + 2 * n))
    reg_b = np.zeros(1 + 2 * n)
    # errors are relative, so a µs of offset weighs less in a large model: scale the offsets' pull to match
    per_us = strength * RIDGE_PER_KERNEL_US * min(1.0, OFFSET_REFERENCE_US / float(np.median(y))) ** 2
    reg_a[0, 0] = per_us / 10
    reg_b[0] = reg_a[0, 0] * p_icpt
    for i, c in enumerate(classes):
        reg_a[1 + i, 1 + i] = strength * RIDGE_SCALE
        reg_b[1 + i] = strength * RIDGE_SCALE * p_scale.get(c, 1.0)
        reg_a[1 + n + i, 1 + n + i] = per_us
        reg_b[1 + n + i] = per_us * p_per.get(c, 0.0)
    from scipy.optimize import lsq_linear

    lower = np.full(1 + 2 * n, -np.inf)
    lower[1:1 + n] = 0.0  # a class scale below 0 would make a kernel's table time count against the model
    coef = lsq_linear(np.vstack([a, reg_a]), np.concatenate([b, reg_b]), bounds=(lower, np.inf)).x
    return dict(zip(classes, map(float, coef[1:1 + n]))), dict(zip(classes, map(float, coef[1 + n:]))), float(coef[0])


def fit_hierarchical(rows: Sequence[tuple[Mapping[str, tuple[float, int]], float]], keys: Sequence[str], overhead_us: float) -> tuple[Coefs, dict[str, Coefs]]:
    """Global coefficients on all rows, then per key (architecture) coefficients pulled toward them."""
    glob = fit(rows, overhead_us)
    own = {}
    for key in sorted(set(keys)):
        mine = [r for r, k in zip(rows, keys) if k == key]
        own[key] = fit(mine, overhead_us, prior=glob, strength=RIDGE_MODEL)
    return glob, own


def apply(terms: Mapping[str, tuple[float, int]], scale: Mapping[str, float], per_kernel: Mapping[str, float], intercept: float, overhead_us: float) -> float:
    return overhead_us + intercept + sum(scale.get(c, 1.0) * s + per_kernel.get(c, 0.0) * n for c, (s, n) in terms.items())


def rmspe(pred: Sequence[float], meas: Sequence[float]) -> float:
    return float(np.sqrt(np.mean([(p / m - 1) ** 2 for p, m in zip(pred, meas)])))


def cross_validated_rmspe(rows, overhead_us: float, keys: Sequence[str] | None = None, folds: int = 5, seed: int = 0) -> float:
    """RMSPE of predictions for rows left out of the fit (``folds``-fold): the figure to trust.
    With ``keys`` the fit is hierarchical (per-architecture coefficients)."""
    keys = list(keys) if keys is not None else None
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    pred = [0.0] * len(rows)
    for f in range(folds):
        held = set(idx[f::folds])
        train = [i for i in range(len(rows)) if i not in held]
        if keys is None:
            coefs, default = {}, fit([rows[i] for i in train], overhead_us)
        else:
            default, coefs = fit_hierarchical([rows[i] for i in train], [keys[i] for i in train], overhead_us)
        for i in held:
            pred[i] = apply(rows[i][0], *(coefs.get(keys[i], default) if keys else default), overhead_us)
    return rmspe(pred, [m for _, m in rows])


BLOCK_CLASSES = ("embed-fp32", "attn-fp32", "attn-int8", "ffn-fp32", "ffn-int8", "pool-fp32")


def from_block_calibration(old: Mapping[str, Any], overhead_us: float) -> dict[str, Any]:
    """The per-class form of a transformer table's former ``{scale, intercept_us, per_transition_us}`` calibration.

    ``scale · (overhead + Σ blocks) + intercept + per_transition · n`` equals the per-class
    ``overhead + intercept' + Σ (scale[c] · t + per_kernel[c])`` with the same scale on every block
    class, a zero-time ``transition`` kernel costing ``per_transition_us``, and
    ``intercept' = intercept + (scale - 1) · overhead``."""
    s = float(old["scale"])
    info = {k: v for k, v in old.items() if k not in ("scale", "intercept_us", "per_transition_us", "model")}
    return {"schema": SCHEMA, "intercept_us": float(old["intercept_us"]) + (s - 1.0) * overhead_us,
            "scale": {c: s for c in BLOCK_CLASSES} | {"transition": 1.0}, "per_kernel_us": {"transition": float(old.get("per_transition_us", 0.0))},
            "by_model": {}, **info,
            "converted_from": {k: old[k] for k in ("scale", "intercept_us", "per_transition_us", "model") if k in old}}
