"""``hwsearch validate-table``: predicted vs measured latency of random compressed models.

Random policies (pruning and mixed precision, held out from the calibration's seed) are realised
end to end and timed (:mod:`hwsearch.latency.cases`); the figures go to ``validation.json``, next to
the measurement's own repeatability (even vs odd rounds) and the machine's drift since calibrating
(some of the calibration's stored whole models built and timed again now). Works for every model
family (``--task minilm`` realises encoder policies 16 at a time by default). With this machine's
adaptation applied (``hwsearch check-table --adapt``) the report also gives the same models'
figures unadapted, and goes to ``adaptations/<key>-validation.json`` instead of validation.json.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hwsearch.latency.cases import Case, Spec, cpu_times, figures, loadavg, measure_policies, noise_warnings, policies_for, repeatability_summary, steal_since
from hwsearch.policy import Policy
from hwsearch.runtime.session import SessionSettings
from hwsearch.runtime.timing import MeasureSettings, time_model
from hwsearch.tables import adaptation as adapt_files
from hwsearch.tables.calibration import CALIBRATION_FILE
from hwsearch.tables.table import model_statistic, statistic


def summarize(cases: Sequence[Case], meta: dict[str, Any], seconds: float, worst: int = 10, combine: str = "median") -> dict[str, Any]:
    from scipy.stats import spearmanr

    errs = [c.error for c in cases]
    n = len(cases)
    by_model = {m: figures([c.error for c in cases if c.model == m]) for m in sorted({c.model for c in cases})}
    ranked = sorted(cases, key=lambda c: -abs(c.error))[:worst]
    repeatability = repeatability_summary(cases, combine)
    vs_median = {"vs_median_of_rounds": figures([c.predicted_ms / c.measured_median_ms - 1.0 for c in cases])
                 | {"what": "predicted vs the median of each model's timing rounds (instead of measured_ms)"}} if all(c.measured_median_ms for c in cases) else {}
    return {
        **figures(errs),
        "mean_error": statistics.fmean(errs), "spearman": float(spearmanr([c.predicted_ms for c in cases], [c.measured_ms for c in cases]).statistic) if n > 2 else None,
        "mean_coverage": statistics.fmean(c.coverage for c in cases), "by_model": by_model, "repeatability": repeatability, **vs_median,
        "worst": [{"model": c.model, "error": c.error, "predicted_ms": c.predicted_ms, "measured_ms": c.measured_ms, "measured_p90_ms": c.measured_p90_ms, "policy": c.policy} for c in ranked],
        "device": meta.get("device"), "threads": meta.get("threads"), "seconds": round(seconds, 1),
        "cases": [{"model": c.model, "predicted_ms": round(c.predicted_ms, 4), "measured_ms": round(c.measured_ms, 4), "coverage": c.coverage}
                  | ({"measured_median_ms": round(c.measured_median_ms, 4)} if c.measured_median_ms else {}) for c in cases],
    }


def drift_report(rows: Sequence[tuple[float, float]], calibrated_at: str | None) -> dict[str, Any]:
    """Same files measured at calibration time and now: how far the machine itself moved between the two."""
    errs = [now / then - 1.0 for then, now in rows]
    return {**figures(errs), "mean_change": statistics.fmean(errs), "calibrated_at": calibrated_at,
            "what": "calibration's stored whole models rebuilt and re-measured during validation: now / then - 1"}


def split_samples(samples: int, n_models: int) -> list[int]:
    """``samples`` spread over ``n_models`` models (the first ones get the remainder)."""
    return [samples // n_models + (1 if j < samples % n_models else 0) for j in range(n_models)]


def drift_jobs(table_dir: str | Path, specs: Sequence[Spec], n: int) -> list[tuple[Spec, Policy, float]]:
    """Up to ``n`` of the whole models stored in the table's calibration.json (spread over the
    validated models): (spec without predictor, policy, the latency measured at calibration, ms)."""
    path = Path(table_dir) / CALIBRATION_FILE
    if n < 1 or not path.is_file():
        return []
    by_name = {s.name: s for s in specs}
    stored = [c for c in json.loads(path.read_text()).get("cases", []) if c["model"] in by_name]
    picked = stored[:: max(1, len(stored) // n)][:n]
    return [(replace(by_name[c["model"]], predictor=None), Policy.from_dict(c["policy"]), float(c["measured_ms"])) for c in picked]


def validate(table_dir: str | Path, specs: Sequence[Spec], samples: int, seed: int = 0, rounds: int = 6,
             timing: MeasureSettings = MeasureSettings(min_runs=100, min_time_s=0.1), write: bool = True, drift: int = 30,
             combine: str = "min", batch: int = 0, lock_path: str | None = None, progress: bool = False, timer: Callable[..., Any] = time_model) -> dict[str, Any]:
    """Validate a table over ``specs`` (one per model, each with its predictor); ``samples`` split across them.

    With ``drift`` > 0 and a calibrated table, that many of the calibration's whole models are timed
    again beside the validation's (interleaved with them), giving the between-run drift of the machine."""
    start, load_before, cpu_before = time.perf_counter(), loadavg(), cpu_times()
    predictor = specs[0].predictor
    timing = replace(timing, statistic=model_statistic(predictor.table.meta))
    settings = SessionSettings(threads=int(predictor.table.meta["threads"]))
    jobs = [(s, p) for j, (s, n) in enumerate(zip(specs, split_samples(samples, len(specs)))) for p in policies_for(s.ctx.space, n, seed + j)]
    again = drift_jobs(table_dir, specs, drift if predictor.calibration is not None else 0)
    measured = measure_policies(jobs + [(s, p) for s, p, _ in again], settings, rounds, timing, combine, batch, lock_path, progress, timer)
    cases, redone = measured[:len(jobs)], measured[len(jobs):]
    report = summarize(cases, predictor.table.meta, time.perf_counter() - start, combine=combine)
    if again:
        cal_info = predictor.calibration.info
        report["drift"] = drift_report([(then, c.measured_ms) for (_, _, then), c in zip(again, redone)], cal_info.get("measured_at") or cal_info.get("date"))
    report["statistic"], report["load_average"] = timing.statistic, {"before": load_before, "after": loadavg()}
    report["kernel_statistic"], report["rounds"] = statistic(predictor.table.meta), {"n": rounds, "combine": combine}
    if batch:
        report["rounds"]["batch"] = batch
    report["cpu_steal"] = steal_since(cpu_before)
    report["warnings"] = noise_warnings(report)
    cal, adaptation = predictor.calibration, predictor.adaptation
    report["adaptation"] = adaptation.key if adaptation is not None else None
    if adaptation is not None:  # the same measurements against the table as built: the adaptation's gain, measured once
        plain = {s.name: s.predictor.corrected(s.predictor.calibration) for s in specs}
        report["unadapted"] = figures([plain[c.model].predict(Policy.from_dict(c.policy)).latency_ms / c.measured_ms - 1.0 for c in cases]) | {
            "what": "the same models predicted without this machine's adaptation"}
    report["calibrated"] = cal is not None
    if cal is not None:
        report["calibration"] = {"n_models": cal.info.get("n_models"), "seed": cal.info.get("seed"), "date": cal.info.get("date")}
    if write:  # an adapted predictor's validation describes this machine, not the table as built: it goes beside the adaptation
        path = (adapt_files.validation_path(table_dir, adaptation.key) if adaptation is not None else None) or Path(table_dir) / "validation.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        report["written_to"] = str(path)
    return report
