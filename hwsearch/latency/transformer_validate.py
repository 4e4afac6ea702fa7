"""Validate transformer block tables (several thread counts at once) on random whole models.

Random policies (the same generator as ``hwsearch validate-table``) are realised (heads and
neurons removed, exported, int8 blocks quantized; no fine-tuning, which does not change latency)
``batch`` at a time and synced to disk; each batch is then timed in ``rounds`` interleaved passes
(every model with every table's own session settings and statistic, one pass after the other) and
deleted. So hundreds of 60-90 MB files never sit on disk together, and a disturbance of a few
seconds hits one pass of a model, which keeping its fastest pass (``combine="min"``, as
``hwsearch validate-table``; or ``"median"``) drops. Timing a batch holds an
exclusive ``flock`` on ``lock_path`` (when given) so that measurements of other processes do not
overlap; a build script that runs other work beside this one should hold the lock around the whole
command instead. Each table gets its ``validation.json`` (same format as ``hwsearch validate-table``).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from hwsearch import onnx_io
from hwsearch.errors import HwsearchError
from hwsearch.latency.profile import MeasureSettings, measuring, time_model
from hwsearch.latency.table import model_statistic
from hwsearch.latency.validate import COMBINE, Case, _loadavg, check_combine, cpu_times, noise_warnings, random_policy, repeat_error, repeatability_summary, steal_since, summarize
from hwsearch.policy import Policy


def collect(predictors: Sequence[Any], task: Any, baseline: Any, space: Any, samples: int, seed: int, rounds: int, ms: MeasureSettings,
            lock_path: str | None, name: str = "minilm", progress: bool = True, on_case: Any = None, batch: int = 16,
            combine: str = "min") -> list[list[Case]]:
    """Realise ``samples`` random policies (the first is the dense model), ``batch`` at a time, and time
    each batch in ``rounds`` interleaved passes with every predictor's table settings."""
    from hwsearch.tasks.minilm_compress import compress, realise

    if batch < 1:
        raise HwsearchError(f"batch={batch} must be at least 1 (models realised before each timing pass).")
    settings = [onnx_io.SessionSettings(threads=int(p.table.meta["threads"])) for p in predictors]
    stats = [replace(ms, statistic=model_statistic(p.table.meta)) for p in predictors]
    feed = task.latency_feed()
    rng = random.Random(seed)
    policies = [Policy() if i == 0 else random_policy(space, rng) for i in range(samples)]
    cases: list[list[Case]] = [[] for _ in predictors]
    with tempfile.TemporaryDirectory() as tmp:
        for first in range(0, samples, batch):
            chunk = list(enumerate(policies[first:first + batch], first))
            paths = []
            for i, policy in chunk:
                paths.append(Path(tmp) / f"{name}-{i}.onnx")
                realise(task, compress(baseline, policy, space), policy, space, paths[-1], calib_samples=4)
            os.sync()  # the kernel writes the new files back now, not during the timing
            values: dict[tuple[int, int], list[Any]] = {}
            with measuring(lock_path):
                for _ in range(rounds):
                    for (i, _), path in zip(chunk, paths):
                        for j, (st, m) in enumerate(zip(settings, stats)):
                            values.setdefault((i, j), []).append(time_model(path, st, m, feed))
            for (i, policy), path in zip(chunk, paths):
                for j, (pred, m) in enumerate(zip(predictors, stats)):
                    runs = values[i, j]
                    v = [t.value(m.statistic) for t in runs]
                    p = pred.predict(policy)
                    cases[j].append(Case(name, policy.to_dict(), p.latency_ms, COMBINE[combine](v) / 1e3,
                                         statistics.median(t.p90_us for t in runs) / 1e3, p.coverage, repeat_error(v, combine),
                                         statistics.median(v) / 1e3))
                path.unlink()
                if on_case is not None:
                    on_case(cases)
                if progress:
                    print(f"seed {seed} {i + 1}/{samples} " + " ".join(f"{c[-1].predicted_ms:.2f}/{c[-1].measured_ms:.2f}ms" for c in cases), flush=True)
    return cases


def fit_calibration(cases: Sequence[Case], table_dir: str | Path, seed: int, layers: Sequence[str], combine: str = "min") -> dict[str, Any]:
    """``latency = scale * (table sum incl. overhead) + intercept + per_transition * precision changes``,
    least squares on the relative error. A precision change between consecutive blocks (fp32 -> int8
    or back, in ``layers`` order) costs time that neither block's own measurement holds."""
    import numpy as np

    from hwsearch.latency.calibrate import table_hash
    from hwsearch.latency.transformer import precision_transitions

    pred = np.array([c.predicted_ms for c in cases])
    meas = np.array([c.measured_ms for c in cases])
    trans = np.array([precision_transitions(Policy.from_dict(c.policy), layers) for c in cases], dtype=float)
    (scale, intercept, per_transition), *_ = np.linalg.lstsq(np.stack([pred / meas, 1 / meas, trans / meas], 1), np.ones(len(cases)), rcond=None)
    before = float(np.sqrt(np.mean((pred / meas - 1) ** 2)))
    after = float(np.sqrt(np.mean(((scale * pred + intercept + per_transition * trans) / meas - 1) ** 2)))
    repeat = repeatability_summary(cases, combine)
    return {"scale": float(scale), "intercept_us": float(intercept * 1e3), "per_transition_us": float(per_transition * 1e3), "n_models": len(cases), "seed": seed,
            "rmspe_uncalibrated": before, "rmspe_fitted": after, "table_sha256": table_hash(table_dir),
            "repeatability": repeat, "warnings": noise_warnings({"repeatability": repeat}), "combine": combine,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": "latency_ms = scale * (overhead + sum of blocks) + intercept + per_transition * (precision changes between consecutive blocks)"}


def validate_tables(table_dirs: Sequence[str | Path], task: Any, baseline: Any, space: Any, samples: int, seed: int = 0, rounds: int = 3,
                    ms: MeasureSettings = MeasureSettings(min_runs=30, min_time_s=0.2), lock_path: str | None = None,
                    calibrate: int = 0, write: bool = True, progress: bool = True, batch: int = 16, combine: str = "min") -> dict[str, dict[str, Any]]:
    """Validation over ``samples`` policies (seed ``seed``); with ``calibrate`` > 0, first fit and write
    each table's calibration.json on that many other policies (seed 1000 + ``seed``)."""
    check_combine(combine)
    start, load_before, cpu_before = time.perf_counter(), _loadavg(), cpu_times()
    if calibrate:
        raw = [task.load_predictor(d, baseline, space, calibrated=False) for d in table_dirs]
        fit_cases = collect(raw, task, baseline, space, calibrate, 1000 + seed, rounds, ms, lock_path, progress=progress, batch=batch, combine=combine)
        for d, cs in zip(table_dirs, fit_cases):
            (Path(d) / "calibration.json").write_text(json.dumps(fit_calibration(cs, d, 1000 + seed, space.layers, combine), indent=2) + "\n")
    predictors = [task.load_predictor(d, baseline, space) for d in table_dirs]

    def report_all(cases: list[list[Case]], complete: bool) -> dict[str, dict[str, Any]]:
        reports = {}
        for d, pred, cs in zip(table_dirs, predictors, cases):
            report = summarize(cs, pred.table.meta, time.perf_counter() - start, combine=combine)
            report |= {"complete": complete, "samples_planned": samples, "statistic": model_statistic(pred.table.meta),
                       "load_average": {"before": load_before, "after": _loadavg()}, "cpu_steal": steal_since(cpu_before), "calibrated": pred.calibration is not None,
                       "calibration": pred.calibration,
                       "method": f"random policies realised once, {batch} at a time; each batch timed in {rounds} interleaved passes with every table's settings ({combine} over passes)",
                       "measurement": {"rounds": rounds, "batch": batch, "warmup": ms.warmup, "min_runs": ms.min_runs, "min_time_s": ms.min_time_s}}
            report["warnings"] = noise_warnings(report)
            if write:
                (Path(d) / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
            reports[str(d)] = report
        return reports

    def partial(cases: list[list[Case]]) -> None:  # a killed validation still leaves its figures so far
        if len(cases[0]) % 10 == 0 and len(cases[0]) > 2:
            report_all(cases, complete=False)

    cases = collect(predictors, task, baseline, space, samples, seed, rounds, ms, lock_path, progress=progress, on_case=partial, batch=batch, combine=combine)
    return report_all(cases, complete=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hwsearch.latency.transformer_validate TABLE... [--samples N]`` (task minilm)."""
    import argparse
    import logging

    import torch

    from hwsearch.tasks import get_task

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tables", nargs="+")
    p.add_argument("--samples", type=int, default=210)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing passes per batch")
    p.add_argument("--combine", choices=tuple(COMBINE), default="min", help="a model's measured latency from its passes: min (default: its fastest) or median")
    p.add_argument("--batch", type=int, default=16, help="models realised on disk before each batch's timing passes")
    p.add_argument("--min-runs", type=int, default=30)
    p.add_argument("--lock", default=None, help="flock this file while timing")
    p.add_argument("--calibrate", type=int, default=0, help="first fit calibration.json on this many other policies")
    args = p.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(1)
    task = get_task("minilm")
    baseline = task.load_baseline("all-minilm-l6-v2")
    reports = validate_tables(args.tables, task, baseline.model, task.search_space(baseline.model), args.samples, args.seed, args.rounds,
                              MeasureSettings(min_runs=args.min_runs, min_time_s=0.2), lock_path=args.lock, calibrate=args.calibrate, batch=args.batch,
                              combine=args.combine)
    keys = ("n_models", "rmspe", "within_5pct", "within_10pct", "mean_error", "spearman", "mean_coverage", "seconds")
    print(json.dumps({d: {k: r[k] for k in keys} for d, r in reports.items()}, indent=2))
    for d, r in reports.items():
        for w in r["warnings"]:
            print(f"warning: {d}: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
