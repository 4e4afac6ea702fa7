"""``hwsearch validate-table``: predicted vs measured latency of random compressed models.

Random policies (pruning and mixed precision) are realised end to end with ``build_candidate``
(no fine-tuning), exported, and each ONNX file is timed with the table's own session settings in
``rounds`` interleaved passes; the figures go to ``validation.json``.

A model's measured latency combines its passes by ``combine``: ``min`` (default) keeps its fastest
pass, as the profile keeps each kernel's fastest pass, so that a slow spell of the virtual machine
(seconds to minutes of 20-80% slower 2-thread runs on the dev VM) reaches neither side of the
comparison; ``median`` is the typical pass. The report carries the other figure too
(``vs_median_of_rounds``).
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from hwsearch import onnx_io
from hwsearch.latency.predict import Predictor
from hwsearch.latency.profile import MeasureSettings, time_model
from hwsearch.latency.table import model_statistic, statistic
from hwsearch.policy import Policy
from hwsearch.space import SearchSpace


class _NoPrediction:  # stands in for a Prediction where only the measurement is wanted
    latency_ms = float("nan")
    coverage = 1.0


@dataclass(frozen=True)
class Case:
    model: str
    policy: dict[str, Any]
    predicted_ms: float
    measured_ms: float
    measured_p90_ms: float
    coverage: float
    repeat_error: float | None = None  # one half of the timing rounds vs the other: the measurement's own spread
    measured_median_ms: float | None = None  # median over the rounds (measured_ms combines them as asked)


    @property
    def error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1.0


def random_policy(space: SearchSpace, rng: random.Random) -> Policy:
    """A random policy: each group pruned with probability p_prune, each layer int8/fp16 with random odds."""
    p_prune, p_int8, p_fp16 = rng.random(), rng.choice([0.0, 0.2, 0.5, 0.8, 1.0]), rng.choice([0.0, 0.1, 0.3])
    keep = {g.name: rng.choice(space.keep_choices) if rng.random() < p_prune else 1.0 for g in space.groups}
    prec = {}
    for layer in space.layers:
        r = rng.random()
        prec[layer] = "int8" if r < p_int8 else "fp16" if r < p_int8 + p_fp16 else "fp32"
        prec[layer] = prec[layer] if prec[layer] in space.precisions else "fp32"
    return Policy(keep=keep, precision=prec)


def build_cases(task, baseline, space: SearchSpace, predictor: Predictor, n: int, seed: int, tmp: Path, name: str) -> list[tuple[str, Policy, Path, Any]]:
    from hwsearch.compress import CompressOptions

    rng = random.Random(seed)
    out = []
    for i in range(n):
        policy = Policy() if i == 0 else random_policy(space, rng)
        path = tmp / f"{name}-{i}.onnx"
        task.build_candidate(baseline, policy, space, path, CompressOptions(calib_samples=32, eval_split="val"))
        out.append((name, policy, path, predictor.predict(policy)))
    return out


COMBINE = {"min": min, "median": statistics.median}  # how a model's timing rounds make its measured latency


def check_combine(combine: str) -> None:
    if combine not in COMBINE:
        from hwsearch.errors import HwsearchError

        raise HwsearchError(f"combine={combine!r} is unknown; use one of {', '.join(COMBINE)}.")


def repeat_error(values: Sequence[float], combine: str = "median") -> float | None:
    """One timing session's half against the other: ``combine`` of the even sessions / of the odd
    ones - 1 (None with fewer than two). The measurement's own spread, beside the prediction's error."""
    return COMBINE[combine](values[0::2]) / COMBINE[combine](values[1::2]) - 1.0 if len(values) > 1 else None


def measure_cases(built, settings: onnx_io.SessionSettings, rounds: int, ms: MeasureSettings, feed: dict | None = None, combine: str = "min") -> list[Case]:
    """Time every built model ``rounds`` times, interleaved, so that background load spreads evenly;
    ``measured_ms`` combines the rounds' ``ms.statistic`` (the table's statistic) by ``combine``
    (``min``: the fastest round; ``median``). With two or more rounds, ``repeat_error`` compares the
    even rounds with the odd ones, combined the same way: how far two measurements of the same file
    disagree (the noise floor of the validation)."""
    check_combine(combine)
    per: list[list[tuple[float, float]]] = [[] for _ in built]
    for _ in range(rounds):
        for i, (_, _, path, _) in enumerate(built):
            t = time_model(path, settings, ms, feed)
            per[i].append((t.value(ms.statistic), t.p90_us))
    cases = []
    for (name, policy, _, pred), runs in zip(built, per):
        values = [m for m, _ in runs]
        p90 = statistics.median(p for _, p in runs) / 1e3
        cases.append(Case(name, policy.to_dict(), pred.latency_ms, COMBINE[combine](values) / 1e3, p90, pred.coverage, repeat_error(values, combine),
                          statistics.median(values) / 1e3))
    return cases


def repeatability_summary(cases: Sequence[Case], combine: str = "median") -> dict[str, Any] | None:
    """How closely the timing passes of the same files agree (None with fewer than two passes)."""
    rep = [c.repeat_error for c in cases if c.repeat_error is not None]
    return {**_figures(rep), "what": f"measured vs measured: {combine} of the even timing rounds / {combine} of the odd rounds - 1, same ONNX file"} if rep else None


def summarize(cases: Sequence[Case], meta: dict[str, Any], seconds: float, worst: int = 10, combine: str = "median") -> dict[str, Any]:
    from scipy.stats import spearmanr

    errs = [c.error for c in cases]
    n = len(cases)
    by_model = {m: _figures([c.error for c in cases if c.model == m]) for m in sorted({c.model for c in cases})}
    ranked = sorted(cases, key=lambda c: -abs(c.error))[:worst]
    repeatability = repeatability_summary(cases, combine)
    vs_median = {"vs_median_of_rounds": _figures([c.predicted_ms / c.measured_median_ms - 1.0 for c in cases])
                 | {"what": "predicted vs the median of each model's timing rounds (instead of measured_ms)"}} if all(c.measured_median_ms for c in cases) else {}
    return {
        **_figures(errs),
        "mean_error": statistics.fmean(errs), "spearman": float(spearmanr([c.predicted_ms for c in cases], [c.measured_ms for c in cases]).statistic) if n > 2 else None,
        "mean_coverage": statistics.fmean(c.coverage for c in cases), "by_model": by_model, "repeatability": repeatability, **vs_median,
        "worst": [{"model": c.model, "error": c.error, "predicted_ms": c.predicted_ms, "measured_ms": c.measured_ms, "measured_p90_ms": c.measured_p90_ms, "policy": c.policy} for c in ranked],
        "device": meta.get("device"), "threads": meta.get("threads"), "seconds": round(seconds, 1),
        "cases": [{"model": c.model, "predicted_ms": round(c.predicted_ms, 4), "measured_ms": round(c.measured_ms, 4), "coverage": c.coverage}
                  | ({"measured_median_ms": round(c.measured_median_ms, 4)} if c.measured_median_ms else {}) for c in cases],
    }


def _figures(errs: Sequence[float]) -> dict[str, Any]:
    """n_models, rmspe, within_5pct and within_10pct of relative errors."""
    return {"n_models": len(errs), "rmspe": _rms(errs), "within_5pct": _within(errs, 0.05), "within_10pct": _within(errs, 0.10)}


def _loadavg() -> float | None:
    """1-minute load average (other work on the cores makes timings noisy; recorded beside them)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) CPU time in clock ticks since boot, from /proc/stat (None where unreadable)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_since(before: tuple[int, int] | None) -> float | None:
    """Fraction of the CPU time since ``before`` (a :func:`cpu_times` reading) that the hypervisor
    gave to other guests ("steal"): on a VM, the share of the run in which a vCPU was not running at all."""
    after = cpu_times() if before is not None else None
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def noise_warnings(report: dict[str, Any]) -> list[str]:
    """What in a validation report says the machine was disturbed while it was measured (the figures
    then describe the disturbance more than the table), each with the fix."""
    out = []
    rep, drift = report.get("repeatability"), report.get("drift")
    if rep and rep["n_models"] >= 5 and rep["within_10pct"] < 0.9:
        out.append(f"timing passes of the same files disagreed by more than 10% for {1 - rep['within_10pct']:.0%} of models "
                   f"(cpu_steal {report.get('cpu_steal') or 0:.1%}): other work or the hypervisor took the cores; measure again on an idle machine")
    if drift and drift["n_models"] >= 5 and abs(drift["mean_change"]) > 0.10:
        out.append(f"the calibration's models now time {drift['mean_change']:+.0%} against their timing at {drift.get('calibrated_at')}: "
                   "the machine's speed changed since calibrating; calibrate and validate again on an idle machine")
    return out


def _rms(errs: Sequence[float]) -> float:
    return (sum(e * e for e in errs) / len(errs)) ** 0.5 if errs else 0.0


def _within(errs: Sequence[float], tol: float) -> float:
    return sum(abs(e) <= tol for e in errs) / len(errs) if errs else 0.0


def drift_cases(table_dir: str | Path, models: Sequence[tuple[str, Any, Any, SearchSpace, Predictor]], n: int, tmp: Path) -> list[tuple[str, Policy, Path, float]]:
    """Up to ``n`` of the whole models stored in the table's calibration.json (spread over the
    validated models), rebuilt: (model, policy, onnx path, the latency measured at calibration, ms)."""
    path = Path(table_dir) / "calibration.json"
    if n < 1 or not path.is_file():
        return []
    by_name = {m[0]: m for m in models}
    stored = [c for c in json.loads(path.read_text()).get("cases", []) if c["model"] in by_name]
    picked = stored[:: max(1, len(stored) // n)][:n]
    out = []
    from hwsearch.compress import CompressOptions

    for i, c in enumerate(picked):
        name, task, baseline, space, _ = by_name[c["model"]]
        policy, onnx_path = Policy.from_dict(c["policy"]), tmp / f"drift-{i}.onnx"
        task.build_candidate(baseline, policy, space, onnx_path, CompressOptions(calib_samples=32, eval_split="val"))
        out.append((name, policy, onnx_path, float(c["measured_ms"])))
    return out


def drift_report(rows: Sequence[tuple[float, float]], calibrated_at: str | None) -> dict[str, Any]:
    """Same files measured at calibration time and now: how far the machine itself moved between the two."""
    errs = [now / then - 1.0 for then, now in rows]
    return {**_figures(errs), "mean_change": statistics.fmean(errs), "calibrated_at": calibrated_at,
            "what": "calibration's stored whole models rebuilt and re-measured during validation: now / then - 1"}


def validate(table_dir: str | Path, models: Sequence[tuple[str, Any, Any, SearchSpace, Predictor]], samples: int, seed: int = 0,
             rounds: int = 6, ms: MeasureSettings = MeasureSettings(min_runs=100, min_time_s=0.1), write: bool = True,
             drift: int = 30, combine: str = "min") -> dict[str, Any]:
    """Validate a table over ``models`` ((name, task, baseline module, space, predictor) each); ``samples`` split across them.

    With ``drift`` > 0 and a calibrated table, that many of the calibration's whole models are timed
    again beside the validation's (interleaved with them), giving the between-run drift of the machine."""
    check_combine(combine)
    start, load_before, cpu_before = time.perf_counter(), _loadavg(), cpu_times()
    predictor = models[0][4]
    ms = replace(ms, statistic=model_statistic(predictor.table.meta))
    settings = onnx_io.SessionSettings(threads=int(predictor.table.meta["threads"]))
    with tempfile.TemporaryDirectory() as tmp:
        built = []
        for j, (name, task, baseline, space, pred) in enumerate(models):
            n = samples // len(models) + (1 if j < samples % len(models) else 0)
            built += build_cases(task, baseline, space, pred, n, seed + j, Path(tmp), name)
        again = drift_cases(table_dir, models, drift if predictor.calibration is not None else 0, Path(tmp))
        measured = measure_cases(built + [(n, pol, p, _NoPrediction) for n, pol, p, _ in again], settings, rounds, ms, models[0][1].latency_feed(), combine)
        cases, redone = measured[:len(built)], measured[len(built):]
    report = summarize(cases, predictor.table.meta, time.perf_counter() - start, combine=combine)
    if again:
        report["drift"] = drift_report([(then, c.measured_ms) for (_, _, _, then), c in zip(again, redone)], predictor.calibration.info.get("measured_at") or predictor.calibration.info.get("date"))
    report["statistic"], report["load_average"] = ms.statistic, {"before": load_before, "after": _loadavg()}
    report["kernel_statistic"], report["rounds"] = statistic(predictor.table.meta), {"n": rounds, "combine": combine}
    report["cpu_steal"] = steal_since(cpu_before)
    report["warnings"] = noise_warnings(report)
    cal = predictor.calibration
    report["calibrated"] = cal is not None
    if cal is not None:
        report["calibration"] = {"n_models": cal.info.get("n_models"), "seed": cal.info.get("seed"), "date": cal.info.get("date")}
    if write:
        (Path(table_dir) / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
