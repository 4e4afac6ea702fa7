"""``hwsearch search CONFIG [--set key=value ...] [--baseline uniform|random] [--json]``.

Every search ends on its summary (:mod:`hwsearch.search.summary`, rendered here): the Pareto front
beside the dense model and any stored baselines, where the files are, the next commands. ``--json``
prints the same record as JSON; the driver's timings are in it and in ``runs/NAME/sessions.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from dataclasses import asdict
from pathlib import Path

from hwsearch.cli.common import out_dir_arg


def cmd_search(args: argparse.Namespace) -> int:
    from hwsearch.config import load_config
    from hwsearch.search.baselines import run_baseline, warm_start
    from hwsearch.search.driver import run_search
    from hwsearch.search.rundir import log_text
    from hwsearch.search.summary import build_summary

    cfg = load_config(args.config, args.set)  # keys, values, tables and policy files checked before any work
    out_dir_arg(cfg.output_dir, "output_dir")
    progress = not (args.quiet or args.json)
    stats = run_baseline(cfg, args.baseline, progress=progress) if args.baseline else run_search(cfg, prepare=warm_start(cfg), progress=progress)
    again = " ".join([shlex.quote(args.config)] + [f"--set {shlex.quote(item)}" for item in args.set])  # the same experiment, for the next commands
    summary = build_summary(stats.run_dir, asdict(stats) | {"driver_share": round(stats.driver_share, 4)}, config_path=again)
    text = render_summary(summary)
    log_text(Path(stats.run_dir), text)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else text)
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _row(label: str, point, devices) -> list[str]:
    cells = [label, "-" if point.trial is None else str(point.trial), "-" if point.score is None else f"{point.score:.4f}"]
    for d in devices:
        speedup = point.speedup.get(d)
        cells += [_ms(point.latency_ms.get(d)), "-" if speedup is None else f"{speedup:.2f}x"]
    return cells + ["-" if point.params is None else f"{point.params:,}", "warm start" if point.warm_start else ""]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = [(str.ljust if i in (0, len(header) - 1) else str.rjust) for i in range(len(header))]
    return ["  " + "  ".join(fmt[i](cell, widths[i]) for i, cell in enumerate(r)).rstrip() for r in [header, *rows]]


def _headline(s) -> str:
    if s.already_complete:
        return f"Search {s.name}: already complete ({s.completed} trials); nothing was run. Its front: {len(s.front)} trials."
    session = s.session
    return (f"Search {s.name}: {s.completed} of {s.n_trials} trials complete ({session.get('session_completed', 0)} this session, {s.failed} failed in all); "
            f"{len(s.front)} on the Pareto front. This session took {session.get('wall_s', 0):.0f} s, {session.get('driver_share', 0):.0%} of it outside evaluation.")


def _points_table(s) -> list[str]:
    header = ["", "trial", f"score ({s.split})"]
    for d in s.devices:
        header += [f"{d} ms", f"{d} speedup"]
    header += ["params", ""]
    rows = [_row("dense fp32", s.dense, s.devices)] if s.dense else []
    rows += [_row("front", p, s.devices) for p in s.front]
    for kind, points in s.baselines.items():
        rows += [_row(kind, p, s.devices) for p in points]
    return _table(header, rows)


def _ort_table(s) -> list[str]:
    """ONNX Runtime's one-line defaults as measured (``--baseline ort-default``), dense fp32 first."""
    header = ["", f"score ({s.split})", "test"]
    for d in s.devices:
        header += [f"{d} measured ms", f"{d} speedup", f"{d} predicted ms"]
    header += ["size_bytes", "call"]
    num = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    rows = []
    for r in s.ort_defaults:
        cells = [f"{r['name']}", num(r.get("accuracy"), ".4f"), num(r.get("test_score"), ".4f")]
        for d in s.devices:
            speed = (r.get("speedup") or {}).get(d)
            cells += [num((r.get("measured_ms") or {}).get(d), ".3f"), "-" if speed is None else f"{speed:.2f}x", num((r.get("predicted_ms") or {}).get(d), ".3f")]
        rows.append(cells + [num(r.get("size_bytes"), ","), str(r.get("call") or "")])
    return _table(header, rows)


def render_summary(s) -> str:
    """The summary as the text ``hwsearch search`` prints (and appends to ``search.log``)."""
    lines = [_headline(s), ""]
    here = Path(s.run_dir)
    what = (f"the {here.name} baseline's Pareto front" if here.parent.name == "baselines" and s.front else "the search's Pareto front")
    what += f" (front) and the fronts of {', '.join(s.baselines)}" if s.baselines else " (front)"
    lines.append(f"Dense model vs {what}; latency predicted from each device's table, speedup vs the dense fp32 model:")
    lines += _points_table(s)
    if s.budgets:
        lines.append("  budgets: " + ", ".join(f"{d} <= {b} ms" for d, b in s.budgets.items()) + " (front: trials within them)")
    if not s.dense:
        lines.append(f"  (no {Path(s.files['dense']).name} in the run directory: speedups unknown)")
    if s.ort_defaults:
        lines += ["", "ONNX Runtime's one-line defaults (--baseline ort-default), MEASURED beside the dense fp32 file in the same rounds:"]
        lines += _ort_table(s)
    f = s.files
    dashboard = f["dashboard"] + ("" if Path(f["dashboard"]).is_file() else " (not written yet)")
    lines += ["", "Files:", f"  run directory  {f['run_dir']}", f"  study          {f['study']} (Optuna SQLite)", f"  pareto front   {f['pareto']}",
              f"  trials         {f['trials']}", f"  log            {f['log']}", f"  dashboard      {dashboard}"]
    lines += ["", "Next:"] + [f"  {c}" for c in s.next_commands]
    return "\n".join(lines).replace(os.getcwd().rstrip(os.sep) + os.sep, "")  # paths below the working directory as runs/NAME/...


def register(subparsers) -> None:
    p = subparsers.add_parser("search", help="search compression policies for the accuracy/latency Pareto front (resumes if interrupted)")
    p.add_argument("config", help="experiment TOML, e.g. experiments/quickstart.toml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (TOML value), e.g. n_trials=10 or devices.cpu-1t.budget_ms=1.5")
    p.add_argument("--baseline", choices=("uniform", "random", "ort-default"), default=None, help="run a baseline into runs/NAME/baselines/KIND instead (ort-default: ONNX Runtime's one-line quantization defaults, measured)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (front, dense model, baselines, files, next commands, the session's timings) instead")
    p.set_defaults(func=cmd_search)
