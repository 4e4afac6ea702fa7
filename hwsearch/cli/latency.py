"""CLI: ``hwsearch profile``, ``hwsearch predict``, ``hwsearch validate-table``, ``hwsearch calibrate-table``, ``hwsearch check-table``.

Latency does not depend on weights, so these commands never train or load a baseline: they build
each model with untrained weights (``context.build(random_init=True)``), and check their arguments
(table, policy, output folder, device name, numbers) before building anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from hwsearch.cli.common import CHANNEL_MULTIPLE_HELP, KEEP_CHOICES_HELP, at_least, context_from_args, device_arg, model_args, out_dir_arg, policy_arg, table_arg
from hwsearch.errors import HwsearchError


def _contexts(args: argparse.Namespace):
    """(name, Context) for every --model given (default: the task's model), with untrained weights."""
    out = []
    for name in args.model or [None]:
        ctx = context_from_args(args, name, random_init=True)
        out.append((ctx.baseline.model_spec, ctx))
    return out


def _specs(args: argparse.Namespace, calibrated: bool = True, adapt: str | None = None) -> list:
    from hwsearch.latency.cases import Spec

    return [Spec(name, ctx, ctx.predictor(args.table, calibrated=calibrated, adapt=adapt)) for name, ctx in _contexts(args)]


def _ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray-address", default="", help="with --ray-resources: time the models on the node of this Ray cluster that has those resources (they are built here)")
    p.add_argument("--ray-resources", default=None, help='JSON of the Ray resources of the node that times the models (a board running a Ray worker), e.g. \'{"edge-board": 1}\'')


def _timer(args: argparse.Namespace):
    """The timing function of a measuring command: here, or a Router to the Ray node with --ray-resources."""
    from hwsearch.config.checks import _ray_resources
    from hwsearch.runtime.remote import timer_for

    if args.ray_resources is None:
        if args.ray_address:
            raise HwsearchError(f"--ray-address {args.ray_address} needs --ray-resources naming the node that times the models, e.g. --ray-resources '{{\"edge-board\": 1}}'.")
        return timer_for(str(args.table), None)
    try:
        raw = json.loads(args.ray_resources)
    except json.JSONDecodeError as exc:
        raise HwsearchError(f"--ray-resources {args.ray_resources!r} is not JSON ({exc}); use e.g. '{{\"edge-board\": 1}}'.") from None
    if not args.ray_address:
        raise HwsearchError("--ray-resources needs --ray-address, the Ray cluster whose node has them (e.g. --ray-address HEAD_IP:6379).")
    return timer_for(str(args.table), _ray_resources("--ray-resources", raw), args.ray_address)


def _where(timer) -> dict:
    return {"measured_on": timer.where()} if hasattr(timer, "where") else {}


def close_timer(timer) -> None:
    if hasattr(timer, "close"):  # a Router leaves the cluster it joined
        timer.close()


def _common(p: argparse.ArgumentParser) -> None:
    model_args(p, several=True, trains=False)
    p.add_argument("--channel-multiple", type=int, default=None, help=CHANNEL_MULTIPLE_HELP)
    p.add_argument("--keep-choices", default=None, metavar="R,R,...", help=KEEP_CHOICES_HELP)
    p.add_argument("--random-init", action="store_true", help="accepted for older scripts: latency commands always use untrained models (latency does not depend on weights)")


def _check_timing(args: argparse.Namespace) -> None:
    """The timing options every measuring command shares, checked before any model is built."""
    at_least("--warmup", getattr(args, "warmup", 0), 0)
    at_least("--min-runs", args.min_runs, 1, "100")
    at_least("--min-time", args.min_time, 0)
    for name in ("rounds", "batch", "drift"):
        if getattr(args, name, None) is not None:
            at_least(f"--{name}", getattr(args, name), 1 if name == "rounds" else 0)
    if getattr(args, "lock", None) and not Path(args.lock).expanduser().parent.is_dir():
        raise HwsearchError(f"--lock {args.lock!r} is in a folder that does not exist; pass a file in an existing folder, e.g. /tmp/hwsearch-measure.lock.")


def cmd_profile(args: argparse.Namespace) -> int:
    from hwsearch.latency.profile import run_profile
    from hwsearch.runtime.session import SessionSettings, detect_block
    from hwsearch.runtime.timing import MeasureSettings

    at_least("--threads", args.threads, 1)
    device_arg(args.device)
    _check_timing(args)
    out = out_dir_arg(args.out or str(Path("latency_tables") / args.device))
    timing = MeasureSettings(warmup=args.warmup, min_runs=args.min_runs, min_time_s=args.min_time, statistic=args.statistic, passes=args.passes)
    settings = SessionSettings(threads=args.threads)
    block = detect_block(settings)
    if block <= 0:
        raise HwsearchError("ONNX Runtime uses no NCHWc kernels on this CPU; latency tables for it are not supported yet.")
    kernels: set = set()
    contexts = _contexts(args)
    for _, ctx in contexts:
        found, measure, extra = ctx.family.profile_plan(ctx.baseline.model, ctx.task, ctx.space, block)
        kernels.update(found)
    if args.keep_choices is not None:  # a narrower space than the family's: say so in meta.json
        extra = {**extra, "keep_choices": list(contexts[0][1].space.keep_choices)}
    start = time.perf_counter()
    run_profile(out, args.device, sorted(kernels), settings, block, [f"{ctx.task.name}/{n}" for n, ctx in contexts], measure, timing,
                progress=not args.quiet, extra_meta=extra)
    agreement = json.loads((out / "meta.json").read_text()).get("pass_agreement")
    print(json.dumps({"table": str(out), "kernels": len(kernels), "passes": timing.passes, "seconds": round(time.perf_counter() - start, 1), "pass_agreement": agreement}))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    table = table_arg(args.table, "--table")
    policy = policy_arg(args.policy)
    (name, ctx), = _contexts(args)[:1]
    predictor = ctx.predictor(table, strict=args.strict, adapt=args.adapt)
    pred = predictor.predict(policy)
    print(json.dumps({"device": predictor.device, "model": name, **pred.to_dict(), "kernels": len(predictor.kernels(policy))}, indent=2))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from hwsearch.latency.validate import validate
    from hwsearch.runtime.timing import MeasureSettings

    at_least("--samples", args.samples, 1, "200")
    args.table = table_arg(args.table)
    _check_timing(args)
    logging.getLogger().setLevel(logging.ERROR)  # the ORT quantizer's pre-processing hints
    timing = MeasureSettings(warmup=args.warmup, min_runs=args.min_runs, min_time_s=args.min_time)
    timer = _timer(args)
    try:
        report = validate(args.table, _specs(args, adapt=args.adapt), args.samples, seed=args.seed, rounds=args.rounds, timing=timing, drift=args.drift, combine=args.combine,
                          batch=args.batch, lock_path=args.lock, progress=not args.quiet, timer=timer)
    finally:
        close_timer(timer)
    keys = ("n_models", "rmspe", "within_5pct", "within_10pct", "mean_error", "spearman", "mean_coverage", "repeatability", "seconds", "adaptation")
    print(json.dumps({k: report[k] for k in keys} | {k: report.get(k) for k in ("unadapted", "vs_median_of_rounds", "drift", "written_to")} | {"by_model": report["by_model"]}
                     | _where(timer), indent=2))
    for w in report["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from hwsearch.latency.calibrate import calibrate
    from hwsearch.runtime.timing import MeasureSettings

    if args.samples < 10:
        raise HwsearchError(f"--samples {args.samples} is too few to fit a calibration; use 60 or more (e.g. 120).")
    args.table = table_arg(args.table)
    _check_timing(args)
    logging.getLogger().setLevel(logging.ERROR)
    timing = MeasureSettings(warmup=args.warmup, min_runs=args.min_runs, min_time_s=args.min_time)
    timer = _timer(args)
    try:
        report = calibrate(args.table, _specs(args, calibrated=False, adapt="off"), args.samples, seed=args.seed, rounds=args.rounds, timing=timing, refit=args.refit,
                           combine=args.combine, batch=args.batch, lock_path=args.lock, progress=not args.quiet, timer=timer)
    finally:
        close_timer(timer)
    keys = ("n_models", "rmspe_uncalibrated", "rmspe_fitted", "rmspe_cross_validated", "rmspe_cross_validated_global_only", "seconds")
    print(json.dumps({k: report[k] for k in keys} | {"scale": report["scale"]} | _where(timer), indent=2))
    for w in report.get("warnings") or []:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from functools import partial

    from hwsearch.context import reference_specs
    from hwsearch.latency.cases import measure_policies
    from hwsearch.latency.check import CHECK_TIMING, check_table
    from hwsearch.runtime.timing import MeasureSettings

    if args.rounds < 2:
        raise HwsearchError(f"--rounds {args.rounds} must be 2 or more (the rounds' agreement is the check's noise floor).")
    args.table = table_arg(args.table)
    _check_timing(args)
    logging.getLogger().setLevel(logging.ERROR)
    timing = MeasureSettings(warmup=CHECK_TIMING.warmup, min_runs=args.min_runs, min_time_s=args.min_time)
    timer = _timer(args)
    try:
        report = check_table(args.table, reference_specs(args.table), adapt=args.adapt, rounds=args.rounds, timing=timing, batch=args.batch, lock_path=args.lock,
                             progress=not args.quiet, measure=partial(measure_policies, timer=timer)) | _where(timer)
    finally:
        close_timer(timer)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    b, loo, here = report["before"], report["after_leave_one_out"], report["machine"]
    builder = report.get("builder") or {}
    print(f"table {report['table']} ({report['device']}, {report['threads']} thread(s)), built on {builder.get('cpu_model')} with ORT {builder.get('runtime_version')}")
    print(f"this machine: {here['cpu_model']}, {here['cores']} cores, ORT {here['runtime_version']}; {report['references']} reference models in {report['seconds']} s")
    vs = report.get("vs_builder")
    print(f"offset vs the table: {report['offset']:+.1%} overall" + (f" ({vs:+.1%} vs the builder's own timing of the same models)" if vs is not None else ""))
    for fam, v in report["by_family"].items():
        print(f"  {fam:>6}: {v['offset']:+.1%}  ({v['share']:.0%} of predicted time)")
    print(f"reference models within ±10%: {b['within_10pct']:.0%} as built (rmspe {b['rmspe']:.1%}), {loo['within_10pct']:.0%} adapted (leave-one-out rmspe {loo['rmspe']:.1%})")
    if report.get("repeatability"):
        print(f"repeatability (rounds vs rounds): rmspe {report['repeatability']['rmspe']:.1%}; cpu steal {report.get('cpu_steal') or 0:.1%}")
    print(f"verdict: {report['verdict']}")
    if report.get("measured_on"):
        on = report["measured_on"]
        print(f"timed on Ray node(s) {', '.join(on['nodes'])} ({', '.join(on['hosts'])}) with resources {on['resources']}: {on['measurements']} measurements")
    if report.get("adaptation"):
        print(f"adaptation {report['adaptation']['key']} stored at {report['adaptation']['path']}; predictors on this machine apply it from now on")
    return 0


def _measure_options(p: argparse.ArgumentParser, samples: int, seed: int) -> None:
    p.add_argument("table", help="table folder")
    p.add_argument("--samples", type=int, default=samples)
    p.add_argument("--seed", type=int, default=seed)
    p.add_argument("--rounds", type=int, default=6, help="interleaved timing passes per model (validate-table compares even vs odd passes: the repeatability figure)")
    p.add_argument("--combine", choices=("min", "median"), default="min",
                   help="a model's measured latency from its passes: min (default; its fastest pass, as the profile keeps each kernel's fastest) or median")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-runs", type=int, default=100)
    p.add_argument("--min-time", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=0, help="models realised on disk before each batch is timed (0: all; 16 suits the encoder's 60-90 MB files)")
    p.add_argument("--lock", default=None, help="flock this file while timing (other measuring processes wait)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _ray_options(p)


def _adapt_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapt", choices=("auto", "off", "require"), default=None,
                   help="this machine's table adaptation (hwsearch check-table --adapt): auto (default, $HWSEARCH_ADAPT): apply it if one matches; off: the table as built; require: fail without one")


def register(sub) -> None:
    p = sub.add_parser("profile", help="measure every kernel of a model's search space into latency_tables/NAME")
    _common(p)
    p.add_argument("--device", required=True, help="table name, e.g. cpu-1t")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="table folder (default latency_tables/DEVICE)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-runs", type=int, default=40)
    p.add_argument("--min-time", type=float, default=0.03, help="seconds of timed runs per kernel at least")
    p.add_argument("--statistic", choices=("p10", "median"), default="p10", help="per-kernel figure predictions use (default p10: steady under background load)")
    p.add_argument("--passes", type=int, default=3, help="shuffled passes over all kernels; each keeps its fastest (default 3: a VM's slow spells stay out of the table)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("predict", help="predict a policy's latency from a table (no export, no measurement)")
    _common(p)
    p.add_argument("--table", required=True, help="table folder, e.g. latency_tables/cpu-1t")
    p.add_argument("--policy", required=True, help="policy JSON file")
    p.add_argument("--strict", action="store_true", help="a kernel missing from the table is an error instead of interpolated")
    _adapt_option(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("validate-table", help="predicted vs measured latency of random compressed models; writes validation.json")
    _common(p)
    _measure_options(p, samples=200, seed=0)
    _adapt_option(p)
    p.add_argument("--drift", type=int, default=30, help="also re-time this many of the calibration's whole models: the machine's drift since calibrating (0: skip)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("check-table", help="re-time the table's reference models here: this machine's offset per kernel-class family and a verdict; --adapt stores a fitted adaptation")
    p.add_argument("table", help="table folder, e.g. latency_tables/cpu-1t")
    p.add_argument("--adapt", action="store_true", help="fit and store this machine's adaptation (applied by every predictor on this machine from then on)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds per reference model (their agreement is the noise floor)")
    p.add_argument("--min-runs", type=int, default=30)
    p.add_argument("--min-time", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=0, help="models realised on disk before each batch is timed (0: all)")
    p.add_argument("--lock", default=None, help="flock this file while timing (other measuring processes wait)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _ray_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("calibrate-table", help="fit the table's per-kernel-class correction on measured whole models; writes calibration.json")
    _common(p)
    _measure_options(p, samples=120, seed=1000)
    p.add_argument("--refit", action="store_true", help="refit on the cases stored in calibration.json instead of measuring again")
    p.set_defaults(func=cmd_calibrate)
