"""Whole-model calibration of a kernel table: ``calibration.json`` beside ``table.csv``.

Kernels timed one at a time run hot in cache and without their neighbours; inside a whole model
the same kernels run a little differently (cache state, ORT's per-node dispatch, memory planning).
Calibration fits that difference per *kernel class* (conv fp32 3×3 / 1×1 / depthwise, conv int8
3×3 / 1×1 / depthwise, reorders, quantize/dequantize, transposes, adds, pooling, gemm) on
whole models measured on the same device:

    predicted_us = call_overhead_us + intercept_us + Σ_kernels (scale[class] · table_us + per_kernel_us[class])

The coefficients minimise the squared *relative* error over ``samples`` random policies (a seed
of their own, so ``validate-table``'s policies stay held out), with a small ridge pull toward the
uncalibrated sum (scale 1, per-kernel 0) so that a rare class cannot take wild values. The file
records the table.csv hash it was fitted on; a table re-profiled since is used uncalibrated, with
a warning. ``hwsearch calibrate-table`` writes it; the predictor applies it when present.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

CALIBRATION_FILE = "calibration.json"
SCHEMA = 1
RIDGE_SCALE = 0.05  # pull of each class scale toward 1 (in units of relative error)
RIDGE_PER_KERNEL_US = 0.02  # pull of each per-kernel offset toward 0, per microsecond


def kernel_class(t: tuple) -> str:
    """The calibration class of a kernel tuple (op, precision, layout, c, h, w, co, k, s, g, act, sum)."""
    op, prec, _, c, _, _, _, k, _, g = t[:10]
    if op == "conv":
        kind = "dw" if g > 1 and g == c else "k1" if k == 1 else "kxk"
        return f"conv-{prec}-{kind}"
    if op in ("reorder_in", "reorder_out"):
        return "reorder"
    if op in ("quantize", "dequantize"):
        return "qdq"
    if op in ("to_nhwc", "to_nchw"):
        return "transpose"
    if op in ("maxpool", "gap", "flatten"):
        return f"pool-{prec}"
    return f"{op}-{prec}"


def table_hash(table_dir: str | Path) -> str:
    return hashlib.sha256((Path(table_dir) / "table.csv").read_bytes()).hexdigest()


@dataclass(frozen=True)
class Calibration:
    """Fitted coefficients: ``scale`` and ``per_kernel_us`` per kernel class, plus ``intercept_us``."""

    scale: Mapping[str, float]
    per_kernel_us: Mapping[str, float]
    intercept_us: float
    info: Mapping[str, Any]

    def coefficients(self, cls: str) -> tuple[float, float]:
        return self.scale.get(cls, 1.0), self.per_kernel_us.get(cls, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "intercept_us": self.intercept_us, "scale": dict(self.scale), "per_kernel_us": dict(self.per_kernel_us), **self.info}


def load_calibration(table_dir: str | Path) -> Calibration | None:
    """The table's calibration, or None if it has none (or was fitted on a different table.csv: warns)."""
    path = Path(table_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("schema") != SCHEMA or data.get("table_sha256") != table_hash(table_dir):
        warnings.warn(f"{str(path)!r} was fitted on a different table.csv (or an older schema); predicting uncalibrated. "
                      f"Re-run `hwsearch calibrate-table {table_dir}`.", stacklevel=3)
        return None
    info = {k: v for k, v in data.items() if k not in ("schema", "intercept_us", "scale", "per_kernel_us")}
    return Calibration(data["scale"], data["per_kernel_us"], float(data["intercept_us"]), info)


def class_terms(predictor, policy) -> dict[str, tuple[float, int]]:
    """Per class: (sum of the table's kernel times in µs, kernel count) for ``policy``, uncalibrated."""
    out: dict[str, list] = {}
    for k in predictor.kernels(policy):
        t = (k.op, k.precision, k.layout, k.c, k.h, k.w, k.co, k.k, k.s, k.g, k.act, k.sum)
        acc = out.setdefault(kernel_class(t), [0.0, 0])
        acc[0] += predictor.kernel_us(t)
        acc[1] += 1
    return {c: (v[0], v[1]) for c, v in out.items()}


def _design(rows: Sequence[tuple[Mapping[str, tuple[float, int]], float]], classes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows [1, S_c..., N_c...] and the offset-free targets; weights 1/measured make errors relative."""
    x = np.array([[1.0] + [terms.get(c, (0.0, 0))[0] for c in classes] + [terms.get(c, (0.0, 0))[1] for c in classes] for terms, _ in rows])
    y = np.array([m for _, m in rows])
    return x, y, 1.0 / y


def fit(rows: Sequence[tuple[Mapping[str, tuple[float, int]], float]], overhead_us: float) -> tuple[dict[str, float], dict[str, float], float]:
    """Least-squares (relative error, ridge toward the plain sum) fit of (scale, per_kernel_us, intercept_us)."""
    classes = sorted({c for terms, _ in rows for c in terms})
    x, y, w = _design(rows, classes)
    n = len(classes)
    a = x * w[:, None]
    b = (y - overhead_us) * w
    # ridge rows: scale_c -> 1, per_kernel_c -> 0, intercept -> 0
    reg_a = np.zeros((1 + 2 * n, 1 + 2 * n))
    reg_b = np.zeros(1 + 2 * n)
    reg_a[0, 0] = RIDGE_PER_KERNEL_US / 10
    for i in range(n):
        reg_a[1 + i, 1 + i] = RIDGE_SCALE
        reg_b[1 + i] = RIDGE_SCALE
        reg_a[1 + n + i, 1 + n + i] = RIDGE_PER_KERNEL_US
    coef, *_ = np.linalg.lstsq(np.vstack([a, reg_a]), np.concatenate([b, reg_b]), rcond=None)
    return dict(zip(classes, map(float, coef[1:1 + n]))), dict(zip(classes, map(float, coef[1 + n:]))), float(coef[0])


def apply(terms: Mapping[str, tuple[float, int]], scale: Mapping[str, float], per_kernel: Mapping[str, float], intercept: float, overhead_us: float) -> float:
    return overhead_us + intercept + sum(scale.get(c, 1.0) * s + per_kernel.get(c, 0.0) * n for c, (s, n) in terms.items())


def _rmspe(pred: Sequence[float], meas: Sequence[float]) -> float:
    return float(np.sqrt(np.mean([(p / m - 1) ** 2 for p, m in zip(pred, meas)])))


def cross_validated_rmspe(rows, overhead_us: float, folds: int = 5, seed: int = 0) -> float:
    """RMSPE of predictions for rows left out of the fit (``folds``-fold): the figure to trust."""
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    pred = [0.0] * len(rows)
    for f in range(folds):
        held = set(idx[f::folds])
        s, p, i0 = fit([r for i, r in enumerate(rows) if i not in held], overhead_us)
        for i in held:
            pred[i] = apply(rows[i][0], s, p, i0, overhead_us)
    return _rmspe(pred, [m for _, m in rows])


def calibrate(table_dir: str | Path, models: Sequence[tuple[str, Any, Any, Any, Any]], samples: int, seed: int = 1000, rounds: int = 3,
              ms=None, write: bool = True) -> dict[str, Any]:
    """Measure ``samples`` random policies over ``models`` ((name, task, baseline, space, uncalibrated predictor)), fit, write."""
    from hwsearch import onnx_io
    from hwsearch.latency.profile import MeasureSettings
    from hwsearch.latency.table import statistic
    from hwsearch.latency.validate import _loadavg, build_cases, measure_cases

    start, load_before = time.perf_counter(), _loadavg()
    table = models[0][4].table
    ms = replace(ms or MeasureSettings(min_runs=100, min_time_s=0.1), statistic=statistic(table.meta))
    settings = onnx_io.SessionSettings(threads=int(table.meta["threads"]))
    with tempfile.TemporaryDirectory() as tmp:
        built = []
        for j, (name, task, baseline, space, pred) in enumerate(models):
            n = samples // len(models) + (1 if j < samples % len(models) else 0)
            built += [(b, pred) for b in build_cases(task, baseline, space, pred, n, seed + j, Path(tmp), name)]
        cases = measure_cases([b for b, _ in built], settings, rounds, ms)
    rows = [(class_terms(pred, b[1]), case.measured_ms * 1e3) for (b, pred), case in zip(built, cases)]
    overhead = table.call_overhead_us
    scale, per_kernel, intercept = fit(rows, overhead)
    before = _rmspe([apply(t, {}, {}, 0.0, overhead) for t, _ in rows], [m for _, m in rows])
    after = _rmspe([apply(t, scale, per_kernel, intercept, overhead) for t, _ in rows], [m for _, m in rows])
    info = {"table_sha256": table_hash(table_dir), "n_models": len(rows), "seed": seed, "models": sorted({b[0] for b, _ in built}),
            "rmspe_uncalibrated": before, "rmspe_fitted": after, "rmspe_cross_validated": cross_validated_rmspe(rows, overhead),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.perf_counter() - start, 1),
            "measurement": {"rounds": rounds, "warmup": ms.warmup, "min_runs": ms.min_runs, "min_time_s": ms.min_time_s, "statistic": ms.statistic},
            "load_average": {"before": load_before, "after": _loadavg()}}
    result = Calibration(scale, per_kernel, intercept, info)
    if write:
        (Path(table_dir) / CALIBRATION_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result.to_dict()
