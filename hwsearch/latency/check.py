"""``hwsearch check-table``: is this table right on this machine, and if not, adapt it.

The table's reference models (:mod:`hwsearch.tables.reference`; derived from its calibration's
cases on first use) are realised and timed here with the table's session settings
(:mod:`hwsearch.latency.cases`), then compared with the table's calibrated prediction: the
machine's overall offset and one per class family, the reference models' figures before and
after a few-shot adaptation (:mod:`hwsearch.tables.adaptation`; leave-one-out, since ten models
fit it), the builder-vs-here ratio where the builder's times are stored, and a verdict. With
``adapt`` the adaptation is stored for this machine's fingerprint, and every predictor loaded
here applies it from then on. Works for every model family.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.latency.cases import Spec, cpu_times, figures, loadavg, measure_policies, policies_for, repeatability_summary, steal_since
from hwsearch.policy import Policy
from hwsearch.runtime.session import SessionSettings
from hwsearch.runtime.timing import MeasureSettings
from hwsearch.tables import adaptation as adapt_files
from hwsearch.tables import reference
from hwsearch.tables.calibration import CALIBRATION_FILE
from hwsearch.tables.table import model_statistic, table_hash

CHECK_TIMING = MeasureSettings(warmup=10, min_runs=30, min_time_s=0.1)
CHECK_ROUNDS = 4
FITS = 0.05  # |overall offset| at most this and >= 90% of references within ±10%: the table fits this machine
RETRY_WITHIN_S = 45.0  # a check whose rounds disagree is timed once more if it took less than this
DERIVED_PER_MODEL = 6  # reference models per model (of 3x as many seeded candidates) for a table whose calibration kept no cases


def derive_reference(table_dir: str | Path, specs: Sequence[Spec], n: int = reference.MAX_MODELS) -> dict[str, Any]:
    """Choose the table's reference models (from its calibration's measured cases, or seeded random
    policies when it kept none) and write reference.json; returns its content."""
    table = specs[0].predictor.table
    tasks = {s.name: s.ctx.task.name for s in specs}
    task_options = {s.name: s.ctx.task.options() for s in specs}
    path = Path(table_dir) / CALIBRATION_FILE
    calibration = json.loads(path.read_text()) if path.is_file() else {}
    cases = [c for c in calibration.get("cases", []) if c["model"] in tasks]
    source = "the calibration's cases, measured on the machine that built the table"
    if not cases:
        n = min(n, DERIVED_PER_MODEL * len(specs))
        cases = [{"model": s.name, "policy": p.to_dict(), "measured_ms": None} for s in specs for p in policies_for(s.ctx.space, 3 * DERIVED_PER_MODEL, 2000)]
        source = "seeded random policies (the table's calibration kept no measured cases, so measured_ms is unknown)"
    by_name = {s.name: s.predictor for s in specs}
    preds = [by_name[c["model"]] for c in cases]
    terms = [p.family_terms(Policy.from_dict(c["policy"])) for p, c in zip(preds, cases)]
    shares = [{f: v / max(sum(t.values()), 1e-9) for f, v in t.items()} for t in terms]
    picked = reference.select(shares, [c["model"] for c in cases], n)
    options = {s.name: dict(s.ctx.baseline.model_options) for s in specs}
    models = [{"task": tasks[cases[i]["model"]], "task_options": task_options[cases[i]["model"]], "model": cases[i]["model"],
               "model_options": options[cases[i]["model"]], "policy": cases[i]["policy"],
               "measured_ms": cases[i].get("measured_ms"),
               "predicted_ms": round((preds[i].fixed_us + sum(terms[i].values())) / 1e3, 5)} for i in picked]
    meta = table.meta
    record = {"source": source, "builder": {k: meta.get(k) for k in ("cpu_model", "runtime_version", "threads", "date")},
              "measurement": calibration.get("measurement"), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    reference.write(table_dir, models, record)
    return reference.load(table_dir)


def _geo(ratios: Sequence[float]) -> float | None:
    return math.exp(statistics.fmean(math.log(r) for r in ratios)) - 1.0 if ratios else None


def check_table(table_dir: str | Path, specs: Sequence[Spec], adapt: bool = False, rounds: int = CHECK_ROUNDS, timing: MeasureSettings = CHECK_TIMING,
                batch: int = 0, lock_path: str | None = None, progress: bool = False, write: bool = True,
                measure: Callable[..., list] = measure_policies) -> dict[str, Any]:
    """Time the table's reference models here (``specs``: one per reference model name, each with the
    table's calibrated, unadapted predictor) and report; with ``adapt`` fit and store this machine's adaptation."""
    start, load_before, cpu_before = time.perf_counter(), loadavg(), cpu_times()
    by_name = {s.name: s for s in specs}
    ref = reference.load(table_dir) or derive_reference(table_dir, specs)
    absent = sorted({m["model"] for m in ref["models"]} - set(by_name))
    if absent:
        raise HwsearchError(f"Reference models {absent} of table {str(table_dir)!r} were not given; pass them with --model (the table's reference.json lists them).")
    table = specs[0].predictor.table
    threads, provider = int(table.meta["threads"]), str(table.meta.get("provider", "CPUExecutionProvider"))
    timing = replace(timing, statistic=model_statistic(table.meta))
    jobs = [(by_name[m["model"]], Policy.from_dict(m["policy"])) for m in ref["models"]]
    settings = SessionSettings(threads=threads, provider=provider)
    measured = measure(jobs, settings, rounds, timing, "min", batch, lock_path, progress)
    rep = repeatability_summary(measured, "min")
    retried = bool(rep and rep["within_10pct"] < 0.9 and time.perf_counter() - start < RETRY_WITHIN_S)
    if retried:  # a slow spell: time them all again, keep each one's fastest
        again = measure(jobs, settings, rounds, timing, "min", batch, lock_path, progress)
        measured = [replace(a, measured_ms=min(a.measured_ms, b.measured_ms), repeat_error=b.measured_ms / a.measured_ms - 1.0) for a, b in zip(measured, again)]
    rows = [(spec.predictor.family_terms(policy), spec.predictor.fixed_us, case.measured_ms * 1e3) for (spec, policy), case in zip(jobs, measured)]
    meas = [r[2] for r in rows]
    plain = [r[1] + sum(r[0].values()) for r in rows]
    base, scale, icpt = adapt_files.fit(rows)
    fitted = adapt_files.Adaptation("", {}, base, scale, icpt)
    before, loo = figures(adapt_files.errors(plain, meas)), figures(adapt_files.leave_one_out(rows))
    current = adapt_files.find(table_dir, threads, provider, specs[0].predictor.calibration is not None)
    here = current.fingerprint
    repeat = repeatability_summary(measured, "min") if retried else rep
    if repeat is not None:
        repeat["timed_twice"] = retried  # the second time's summary: each model's first fastest vs its second
    then = [(c.measured_ms, m["measured_ms"]) for c, m in zip(measured, ref["models"]) if m.get("measured_ms")]
    report: dict[str, Any] = {
        "table": str(table_dir), "device": table.device, "threads": threads, "machine": here, "builder": ref.get("builder"),
        "references": len(rows), "offset": base - 1.0,
        "by_family": {f: {"offset": scale[f] - 1.0, "share": statistics.fmean(r[0].get(f, 0.0) / p for r, p in zip(rows, plain))} for f in sorted(scale)},
        "intercept_us": icpt, "vs_builder": _geo([now / old for now, old in then]), "before": before, "after_leave_one_out": loo,
        "after_in_sample": figures(adapt_files.errors([fitted.apply(r[0], r[1]) for r in rows], meas)), "repeatability": repeat,
        "load_average": {"before": load_before, "after": loadavg()}, "cpu_steal": steal_since(cpu_before),
        "models": [{"model": m["model"], "predicted_ms": round(p / 1e3, 5), "measured_ms": round(c.measured_ms, 5), "builder_ms": m.get("measured_ms")}
                   for m, p, c in zip(ref["models"], plain, measured)],
    }
    block, built = _nchwc_block(specs, settings), table.meta.get("nchwc_block")
    if block is not None and built and int(built) != block:
        report["layout"] = {"table_nchwc_block": int(built), "here_nchwc_block": block}
    if current.adaptation is not None:
        a = current.adaptation
        report["current_adaptation"] = {"key": a.key, "created": a.info.get("created"), **figures(adapt_files.errors([a.apply(r[0], r[1]) for r in rows], meas))}
    if adapt:
        key = adapt_files.fingerprint_key(here)
        info = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "table": str(table_dir), "table_sha256": table_hash(table_dir),
                "calibration_sha256": adapt_files.calibration_hash(table_dir) if specs[0].predictor.calibration is not None else None,
                "signature": [{"model": m["model"], "measured_ms": round(c.measured_ms, 5)} for m, c in zip(ref["models"], measured)],
                "fit": {"before": before, "after_leave_one_out": loo, "references": len(rows)}, "load_average": report["load_average"], "cpu_steal": report["cpu_steal"],
                "measurement": {"rounds": rounds, "combine": "min", "warmup": timing.warmup, "min_runs": timing.min_runs, "min_time_s": timing.min_time_s, "statistic": timing.statistic}}
        made = adapt_files.Adaptation(key, here, base, scale, icpt, info)
        report["adaptation"] = {"key": key, "path": str(adapt_files.save(table_dir, made)) if write else None}
    report["verdict"] = verdict(report)
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def _nchwc_block(specs: Sequence[Spec], settings: SessionSettings) -> int | None:
    """This CPU's NCHWc block where the table's models are CNNs (their lowering depends on it), else None."""
    lowering = getattr(specs[0].predictor, "lowering", None)
    if not hasattr(getattr(lowering, "graph", None), "block"):
        return None
    from hwsearch.runtime.session import detect_block

    return detect_block(settings)


def verdict(report: dict[str, Any]) -> str:
    """One line: does the table (as built, or with this machine's current adaptation) fit here?"""
    line = _verdict(report)
    if "layout" in report:
        lay = report["layout"]
        line += (f"; note: the table was built on a CPU whose ONNX Runtime blocks channels by {lay['table_nchwc_block']} and this one blocks by "
                 f"{lay['here_nchwc_block']}, so some kernels (padding, which concatenations and pools stay blocked) differ here and an adaptation "
                 "only rescales them: for exact predictions on this machine build a table here (experiments/build_tables.sh)")
    return line


def _verdict(report: dict[str, Any]) -> str:
    rep, before, cur = report.get("repeatability"), report["before"], report.get("current_adaptation")
    if rep and rep["n_models"] >= 5 and rep["within_10pct"] < 0.9:
        return (f"noisy: timing rounds of the same files disagreed by more than 10% for {1 - rep['within_10pct']:.0%} of the reference models; "
                "measure again on an idle machine")
    if cur and cur["within_10pct"] >= 0.9:
        return f"fits with this machine's adaptation {cur['key']}: {cur['within_10pct']:.0%} of reference models within ±10% (rmspe {cur['rmspe']:.1%})"
    if abs(report["offset"]) <= FITS and before["within_10pct"] >= 0.9:
        return f"fits: this machine is {report['offset']:+.1%} against the table; {before['within_10pct']:.0%} of reference models within ±10% (rmspe {before['rmspe']:.1%})"
    worst = max(report["by_family"].items(), key=lambda kv: abs(kv[1]["offset"]) * kv[1]["share"], default=None)
    detail = f", {worst[0]} kernels {worst[1]['offset']:+.0%}" if worst else ""
    return (f"off: this machine is {report['offset']:+.1%} against the table{detail}; {before['within_10pct']:.0%} of reference models within ±10%; "
            f"an adaptation brings them to {report['after_leave_one_out']['within_10pct']:.0%} (leave-one-out rmspe {report['after_leave_one_out']['rmspe']:.1%})"
            + (f"; stored as adaptation {report['adaptation']['key']}" if report.get("adaptation") else f": run `hwsearch check-table {report['table']} --adapt`"))
