"""Whole-model calibration of a kernel table: ``calibration.json`` beside ``table.csv``.

Kernels timed one at a time run hot in cache and without their neighbours; inside a whole model
the same kernels run a little differently (cache state, ORT's per-node dispatch, memory planning).
Calibration fits that difference per *kernel class* (conv fp32 3×3 / 1×1 / depthwise, conv int8
3×3 / 1×1 / depthwise, reorders, quantize/dequantize, transposes, adds, pooling, gemm) on
whole models measured on the same device:

    predicted_us = call_overhead_us + intercept_us + Σ_kernels (scale[class] · table_us + per_kernel_us[class])

The coefficients (scales bounded at 0 and above) minimise the squared *relative* error over ``samples`` random policies (a seed
of their own, so ``validate-table``'s policies stay held out), with a small ridge pull toward the
uncalibrated sum (scale 1, per-kernel 0) so that a rare class cannot take wild values. Each
architecture calibrated (keyed by a fingerprint of its unpruned unit graph) then gets its own
coefficients, fitted on its own models with a ridge pull toward the global ones; an architecture
that was not calibrated uses the global coefficients. The measured cases are kept in the file, so
``--refit`` can refit without measuring again. The file records the table.csv hash it was fitted
on; a table re-profiled since is used uncalibrated, with a warning. ``hwsearch calibrate-table``
writes it; the predictor applies it when present.
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
RIDGE_MODEL = 4.0  # how much more strongly an architecture's own coefficients are pulled toward the global ones


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


def table_hash(table_dir: str | Path) -> str | None:
    """The content hash of a table's table.csv, which a calibration.json names to say what it was fitted on."""
    from hwsearch.export_context import file_sha256

    return file_sha256(Path(table_dir) / "table.csv")


Coefs = tuple  # (scale: dict[class, float], per_kernel_us: dict[class, float], intercept_us: float)


@dataclass(frozen=True)
class Calibration:
    """Fitted coefficients: ``scale`` and ``per_kernel_us`` per kernel class, plus ``intercept_us``;
    ``by_model`` holds an architecture's own set (keyed by :func:`fingerprint`)."""

    scale: Mapping[str, float]
    per_kernel_us: Mapping[str, float]
    intercept_us: float
    info: Mapping[str, Any]
    by_model: Mapping[str, Mapping[str, Any]] = None  # fingerprint -> {"name", "scale", "per_kernel_us", "intercept_us"}

    def for_model(self, fp: str) -> "Calibration":
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
    data = json.loads(path.read_text())
    if data.get("schema") != SCHEMA or data.get("table_sha256") != table_hash(table_dir):
        warnings.warn(f"{str(path)!r} was fitted on a different table.csv (or an older schema); predicting uncalibrated. "
                      f"Re-run `hwsearch calibrate-table {table_dir}`.", stacklevel=3)
        return None
    info = {k: v for k, v in data.items() if k not in ("schema", "intercept_us", "scale", "per_kernel_us", "by_model", "cases")}
    return Calibration(data["scale"], data["per_kernel_us"], float(data["intercept_us"]), info, data.get("by_model") or {})


def fingerprint(graph) -> str:
    """Identifies an architecture: a hash of its unpruned unit graph (units, channels, NCHWc block)."""
    text = repr((graph.units, sorted(graph.layer_channels.items()), graph.tensor_source, graph.block))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def class_terms(predictor, policy) -> dict[str, tuple[float, int]]:
    """Per class: (sum of the table's kernel times in µs, kernel count) for ``policy``, uncalibrated."""
    out: dict[str, list] = {}
    for t in predictor.graph.lower(predictor.space, predictor.space.validate(policy)):
        acc = out.setdefault(kernel_class(t), [0.0, 0])
        acc[0] += predictor.kernel_us(t)
        acc[1] += 1
    return {c: (v[0], v[1]) for c, v in out.items()}


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
    reg_a[0, 0] = strength * RIDGE_PER_KERNEL_US / 10
    reg_b[0] = reg_a[0, 0] * p_icpt
    for i, c in enumerate(classes):
        reg_a[1 + i, 1 + i] = strength * RIDGE_SCALE
        reg_b[1 + i] = strength * RIDGE_SCALE * p_scale.get(c, 1.0)
        reg_a[1 + n + i, 1 + n + i] = strength * RIDGE_PER_KERNEL_US
        reg_b[1 + n + i] = strength * RIDGE_PER_KERNEL_US * p_per.get(c, 0.0)
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


def _rmspe(pred: Sequence[float], meas: Sequence[float]) -> float:
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
    return _rmspe(pred, [m for _, m in rows])


def calibrate(table_dir: str | Path, models: Sequence[tuple[str, Any, Any, Any, Any]], samples: int, seed: int = 1000, rounds: int = 6,
              ms=None, write: bool = True, refit: bool = False, combine: str = "min") -> dict[str, Any]:
    """Measure ``samples`` random policies over ``models`` ((name, task, baseline, space, uncalibrated predictor)), fit, write.

    With ``refit`` the cases stored in the existing calibration.json are reused instead of measured
    (for the models given; their policies are lowered again with the current code). ``combine``
    says how a model's timing rounds make its measured latency (see :mod:`hwsearch.latency.validate`)."""
    from hwsearch import onnx_io
    from hwsearch.latency.profile import MeasureSettings
    from hwsearch.latency.table import model_statistic
    from hwsearch.latency.validate import _loadavg, build_cases, cpu_times, measure_cases, noise_warnings, repeatability_summary, steal_since
    from hwsearch.policy import Policy

    start, load_before, cpu_before = time.perf_counter(), _loadavg(), cpu_times()
    table = models[0][4].table
    ms = replace(ms or MeasureSettings(min_runs=100, min_time_s=0.1), statistic=model_statistic(table.meta))
    by_name = {name: pred for name, _, _, _, pred in models}
    if refit:
        old = json.loads((Path(table_dir) / CALIBRATION_FILE).read_text()) if (Path(table_dir) / CALIBRATION_FILE).is_file() else {}
        cases = [c for c in old.get("cases", []) if c["model"] in by_name]
        if not cases:
            from hwsearch.errors import HwsearchError

            raise HwsearchError(f"{str(Path(table_dir) / CALIBRATION_FILE)!r} has no stored cases for {sorted(by_name)}; run calibrate-table without --refit.")
        ms_info, load_info, steal, measured_at = old.get("measurement"), old.get("load_average"), old.get("cpu_steal"), old.get("measured_at") or old.get("date")
        repeat = old.get("repeatability")
    else:
        settings = onnx_io.SessionSettings(threads=int(table.meta["threads"]))
        with tempfile.TemporaryDirectory() as tmp:
            built = []
            for j, (name, task, baseline, space, pred) in enumerate(models):
                n = samples // len(models) + (1 if j < samples % len(models) else 0)
                built += build_cases(task, baseline, space, pred, n, seed + j, Path(tmp), name)
            measured = measure_cases(built, settings, rounds, ms, combine=combine)
        cases = [{"model": c.model, "measured_ms": c.measured_ms, "policy": c.policy} for c in measured]
        repeat = repeatability_summary(measured, combine)
        ms_info = {"rounds": rounds, "combine": combine, "warmup": ms.warmup, "min_runs": ms.min_runs, "min_time_s": ms.min_time_s, "statistic": ms.statistic}
        load_info, steal = {"before": load_before, "after": _loadavg()}, steal_since(cpu_before)
        measured_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    fps = {name: fingerprint(pred.graph) for name, pred in by_name.items()}
    rows = [(class_terms(by_name[c["model"]], Policy.from_dict(c["policy"])), c["measured_ms"] * 1e3) for c in cases]
    keys = [fps[c["model"]] for c in cases]
    overhead = table.call_overhead_us
    (scale, per_kernel, intercept), own = fit_hierarchical(rows, keys, overhead)
    fitted = [apply(t, *own[k], overhead) for (t, _), k in zip(rows, keys)]
    meas = [m for _, m in rows]
    info = {"table_sha256": table_hash(table_dir), "n_models": len(rows), "seed": seed, "models": sorted(by_name),
            "rmspe_uncalibrated": _rmspe([apply(t, {}, {}, 0.0, overhead) for t, _ in rows], meas), "rmspe_fitted": _rmspe(fitted, meas),
            "rmspe_cross_validated": cross_validated_rmspe(rows, overhead, keys), "rmspe_cross_validated_global_only": cross_validated_rmspe(rows, overhead),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "measured_at": measured_at, "seconds": round(time.perf_counter() - start, 1), "measurement": ms_info, "load_average": load_info, "cpu_steal": steal,
            "repeatability": repeat, "warnings": noise_warnings({"repeatability": repeat, "cpu_steal": steal})}
    by_model = {fp: {"name": name, "scale": own[fp][0], "per_kernel_us": own[fp][1], "intercept_us": own[fp][2]} for name, fp in fps.items()}
    result = Calibration(scale, per_kernel, intercept, info, by_model)
    if write:
        (Path(table_dir) / CALIBRATION_FILE).write_text(json.dumps({**result.to_dict(), "cases": cases}, indent=1) + "\n")
    return result.to_dict()
