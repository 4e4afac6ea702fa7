"""``hwsearch calibrate-table``: measure whole models and fit the table's per-class correction.

``samples`` random policies (seeds 1000+, so ``validate-table``'s policies stay held out) are
realised and timed (:mod:`hwsearch.latency.cases`); the fit and the file format are
:mod:`hwsearch.tables.calibration`. The measured cases are kept in ``calibration.json``, so
``--refit`` refits without measuring again. Up to ten of the cases become the table's reference
models (``reference.json``, :func:`hwsearch.latency.check.derive_reference`). Works for every model family.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.latency.cases import Spec, cpu_times, loadavg, measure_policies, noise_warnings, policies_for, repeatability_summary, steal_since
from hwsearch.latency.check import derive_reference
from hwsearch.latency.validate import split_samples
from hwsearch.policy import Policy
from hwsearch.runtime.session import SessionSettings
from hwsearch.runtime.timing import MeasureSettings, time_model
from hwsearch.tables.calibration import CALIBRATION_FILE, Calibration, apply, cross_validated_rmspe, fit_hierarchical, rmspe
from hwsearch.tables.table import model_statistic, table_hash


def class_terms(predictor: Any, policy: Policy) -> dict[str, tuple[float, int]]:
    """Per class: (sum of the table's kernel times in µs, kernel count) for ``policy``, uncalibrated."""
    out: dict[str, list] = {}
    for t in predictor.kernel_tuples(predictor.space.validate(policy)):
        acc = out.setdefault(predictor.lowering.kernel_class(t), [0.0, 0])
        acc[0] += predictor.kernel_us(t)
        acc[1] += 1
    return {c: (v[0], v[1]) for c, v in out.items()}


def _stored_cases(table_dir: str | Path, names: Sequence[str]) -> tuple[list[dict], dict[str, Any]]:
    """The cases (and measurement record) a previous calibration.json kept, for ``--refit``."""
    path = Path(table_dir) / CALIBRATION_FILE
    old = json.loads(path.read_text()) if path.is_file() else {}
    cases = [c for c in old.get("cases", []) if c["model"] in names]
    if not cases:
        raise HwsearchError(f"{str(path)!r} has no stored cases for {sorted(names)}; run calibrate-table without --refit.")
    record = {"measurement": old.get("measurement"), "load_average": old.get("load_average"), "cpu_steal": old.get("cpu_steal"),
              "measured_at": old.get("measured_at") or old.get("date"), "repeatability": old.get("repeatability")}
    return cases, record


def _measure(specs: Sequence[Spec], samples: int, seed: int, rounds: int, timing: MeasureSettings, combine: str, batch: int,
             lock_path: str | None, progress: bool, timer: Callable[..., Any] = time_model) -> tuple[list[dict], dict[str, Any]]:
    load_before, cpu_before = loadavg(), cpu_times()
    settings = SessionSettings(threads=int(specs[0].predictor.table.meta["threads"]))
    jobs = [(s, p) for j, (s, n) in enumerate(zip(specs, split_samples(samples, len(specs)))) for p in policies_for(s.ctx.space, n, seed + j)]
    measured = measure_policies(jobs, settings, rounds, timing, combine, batch, lock_path, progress, timer)
    cases = [{"model": c.model, "measured_ms": c.measured_ms, "policy": c.policy} for c in measured]
    record = {"measurement": {"rounds": rounds, "combine": combine, "warmup": timing.warmup, "min_runs": timing.min_runs, "min_time_s": timing.min_time_s, "statistic": timing.statistic},
              "load_average": {"before": load_before, "after": loadavg()}, "cpu_steal": steal_since(cpu_before),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "repeatability": repeatability_summary(measured, combine)}
    return cases, record


def calibrate(table_dir: str | Path, specs: Sequence[Spec], samples: int, seed: int = 1000, rounds: int = 6, timing: MeasureSettings | None = None,
              write: bool = True, refit: bool = False, combine: str = "min", batch: int = 0, lock_path: str | None = None,
              progress: bool = False, timer: Callable[..., Any] = time_model) -> dict[str, Any]:
    """Measure ``samples`` random policies over ``specs`` (each with its uncalibrated predictor), fit, write;
    ``timer`` times each file (here, or on a device's Ray node: :class:`hwsearch.runtime.remote.Router`).

    With ``refit`` the cases stored in the existing calibration.json are reused instead of measured
    (for the models given; their policies are lowered again with the current code)."""
    start = time.perf_counter()
    table = specs[0].predictor.table
    timing = replace(timing or MeasureSettings(min_runs=100, min_time_s=0.1), statistic=model_statistic(table.meta))
    by_name = {s.name: s.predictor for s in specs}
    if refit:
        cases, record = _stored_cases(table_dir, list(by_name))
    else:
        cases, record = _measure(specs, samples, seed, rounds, timing, combine, batch, lock_path, progress, timer)
    fps = {name: pred.lowering.fingerprint() for name, pred in by_name.items()}
    rows = [(class_terms(by_name[c["model"]], Policy.from_dict(c["policy"])), c["measured_ms"] * 1e3) for c in cases]
    keys = [fps[c["model"]] for c in cases]
    overhead = table.call_overhead_us
    (scale, per_kernel, intercept), own = fit_hierarchical(rows, keys, overhead)
    fitted = [apply(t, *own[k], overhead) for (t, _), k in zip(rows, keys)]
    meas = [m for _, m in rows]
    info = {"table_sha256": table_hash(table_dir), "n_models": len(rows), "seed": seed, "models": sorted(by_name),
            "rmspe_uncalibrated": rmspe([apply(t, {}, {}, 0.0, overhead) for t, _ in rows], meas), "rmspe_fitted": rmspe(fitted, meas),
            "rmspe_cross_validated": cross_validated_rmspe(rows, overhead, keys), "rmspe_cross_validated_global_only": cross_validated_rmspe(rows, overhead),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.perf_counter() - start, 1), **record,
            "warnings": noise_warnings({"repeatability": record["repeatability"], "cpu_steal": record["cpu_steal"]})}
    by_model = {fp: {"name": name, "scale": own[fp][0], "per_kernel_us": own[fp][1], "intercept_us": own[fp][2]} for name, fp in fps.items()}
    result = Calibration(scale, per_kernel, intercept, info, by_model)
    if write:
        (Path(table_dir) / CALIBRATION_FILE).write_text(json.dumps({**result.to_dict(), "cases": cases}, indent=1) + "\n")
        calibrated = [replace(s, predictor=s.predictor.corrected(result.for_model(fps[s.name]))) for s in specs]
        derive_reference(table_dir, calibrated)  # reference.json: the models `hwsearch check-table` re-times on another machine
    return result.to_dict()
