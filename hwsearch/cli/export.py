"""``hwsearch export RUN [--pareto|--trial N|--targets 2x,3x] [--recover-steps N]`` and ``hwsearch dashboard RUN [--serve]``: parsing and wiring only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError

DASHBOARD_EXTRA = "pip install 'hwsearch[dashboard]'"
TOLERANCE = 0.01  # = hwsearch.export.index.TOLERANCE (not imported here: the CLI imports export lazily)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f} ms"


def format_manifest(m: Any, run_dir: Path) -> list[str]:
    """Human-readable lines for one exported winner: figures, then FAILED / warning lines."""
    scores = "  ".join(f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in (("test", m.test_score), ("validation", m.validation_score)))
    lat = ", ".join(f"{d}: predicted {_ms(m.predicted_latency_ms.get(d))} measured {_ms(v)}" for d, v in m.measured_latency_ms.items())
    parity = "n/a" if m.parity.get("value") is None else f"{m.parity['value']:.3g}"
    status = "ok" if m.ok else "FAILED"
    lines = [f"trial {m.trial}: {status}  {m.metric}: {scores}  {lat}  parity {m.parity['metric']} {parity}  "
             f"params {m.model['params']}  size {m.model['size_bytes']} B  -> {run_dir / 'export' / str(m.trial) / m.model['file']}"]
    lines += [f"  FAILED: {flag}" for flag in m.flags]
    lines += [f"  warning: {w}" for w in m.warnings]
    return lines


def recovery_arg(args: argparse.Namespace):
    """The recovery settings of ``--recover-steps`` / ``--recover-lr`` / ``--recover-batch`` (None: ship the search's weights)."""
    from hwsearch.compress.recover import RecoverySettings

    if args.recover_steps is None:
        given = [flag for flag, v in (("--recover-lr", args.recover_lr), ("--recover-batch", args.recover_batch)) if v is not None]
        if given:
            raise HwsearchError(f"{given[0]} needs --recover-steps N (how many distillation steps each chosen winner gets), e.g. --recover-steps 1000.")
        return None
    return RecoverySettings(args.recover_steps, args.recover_lr, args.recover_batch)


def cmd_export(args: argparse.Namespace) -> int:
    from hwsearch.export import export_run, format_index, load_index
    from hwsearch.export.targets import parse_targets

    if not args.tolerance >= 0:
        raise HwsearchError(f"--tolerance {args.tolerance} is not allowed; give a score difference >= 0, e.g. 0.01 (one point of accuracy).")
    if args.rounds < 1:
        raise HwsearchError(f"--rounds {args.rounds} is not allowed; give 1 or more interleaved measuring rounds, e.g. 3.")
    targets = parse_targets(args.targets) if args.targets is not None else None
    if args.device is not None and targets is None:
        raise HwsearchError(f"--device {args.device} names the device speedup targets are measured on; give --targets too, e.g. --targets 2x,3x --device {args.device}.")
    if targets and args.trial:
        raise HwsearchError("--targets picks from the whole Pareto front, so it does not take --trial; export a trial with --trial N alone.")
    recovery = recovery_arg(args)
    run_dir = Path(args.run_dir)
    manifests = export_run(run_dir, trials=args.trial or None, pareto=args.pareto or not args.trial, study_name=args.study_name, tolerance=args.tolerance,
                           targets=targets, device=args.device, recovery=recovery, rounds=args.rounds, progress=True)
    index = load_index(run_dir)
    if args.json:
        print(json.dumps(index, indent=2))
    else:
        for m in manifests:
            print("\n".join(format_manifest(m, run_dir)))
        print("\n".join(format_index(index)))
    bad = [m.trial for m in manifests if not m.ok]
    if bad:
        print(f"{len(bad)} of {len(manifests)} exported winners failed their checks (trials {', '.join(map(str, bad))}); "
              "see 'flags' in their manifest.json. They are flagged, not shipped.", file=sys.stderr)
        return 1
    if not args.json:
        print(f"exported {len(manifests)} winners to {run_dir / 'export'}; all passed onnx.checker and parity; index: {run_dir / 'export' / 'index.json'} "
              "(README: Deploying an exported model)")
    return 0


def serve(run_dir: Path, host: str, port: int) -> int:
    """Start optuna-dashboard on the run's study storage (blocks until interrupted)."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise HwsearchError(f"optuna-dashboard is not installed, so --serve cannot start it; run {DASHBOARD_EXTRA}.") from None
    db = run_dir / "study.db"
    if not db.is_file():
        raise HwsearchError(f"Run directory {str(run_dir)!r} has no study.db to serve; pass a directory written by `hwsearch search`.")
    print(f"optuna-dashboard for {run_dir} at http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    run_server(f"sqlite:///{db.resolve()}", host=host, port=port)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if args.serve:
        return serve(run_dir, "127.0.0.1", args.port)
    from hwsearch.dashboard import write_dashboard

    if args.json:
        import json

        from hwsearch.dashboard.data import data_record, load_dashboard_data

        print(json.dumps(data_record(load_dashboard_data(run_dir)), indent=1))
        return 0
    out = write_dashboard(run_dir, Path(args.out) if args.out else None, winner=args.winner)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB, self-contained: open it in a browser, no network needed)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="rebuild winners from their policies, export verified ONNX + manifest.json")
    p.add_argument("run_dir", help="run directory written by `hwsearch search`, e.g. runs/quickstart")
    p.add_argument("--pareto", action="store_true", help="export every trial on the Pareto front (default when no --trial is given)")
    p.add_argument("--trial", type=int, action="append", default=[], metavar="N", help="export trial N (repeatable)")
    p.add_argument("--study-name", default=None, help="Optuna study name for --trial (default: the run's name)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, metavar="D",
                   help=f"recommend the fastest winner whose validation score is within D of the best (default {TOLERANCE}; a device with budget_ms: the best within budget)")
    p.add_argument("--targets", default=None, metavar="2x,3x,4x",
                   help="per speedup target, export the most accurate front point measured at least that much faster than dense fp32 on this machine")
    p.add_argument("--device", default=None, metavar="NAME", help="the device --targets are measured on (default: the run's first device)")
    p.add_argument("--recover-steps", type=int, default=None, metavar="N",
                   help="distil each chosen winner (the targets' picks, else every exported winner) from the dense teacher for N steps before it ships")
    p.add_argument("--recover-lr", type=float, default=None, metavar="LR", help="peak learning rate of the recovery (default: the model family's, CNN 0.01 SGD, encoder 3e-4 AdamW)")
    p.add_argument("--recover-batch", type=int, default=None, metavar="B", help="recovery batch size (default: the model family's, CNN 64, encoder 32)")
    p.add_argument("--rounds", type=int, default=3, metavar="R", help="interleaved measuring rounds over every exported file and the dense model (default 3; each keeps its fastest)")
    p.add_argument("--json", action="store_true", help="print export/index.json (the machine-readable record) instead of the tables")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("dashboard", help="write RUN/dashboard.html (self-contained), or --serve optuna-dashboard")
    p.add_argument("run_dir", help="run directory written by `hwsearch search`, e.g. runs/quickstart")
    p.add_argument("--out", default=None, help="output HTML path (default RUN/dashboard.html)")
    p.add_argument("--winner", type=int, default=None, help="trial whose per-layer policy is shown first (default: the most accurate winner)")
    p.add_argument("--json", action="store_true", help="print the dashboard's data record (fronts, dense point, winners, run facts) as JSON instead of writing the page")
    p.add_argument("--serve", action="store_true", help="start optuna-dashboard on 127.0.0.1 on the run's study.db instead")
    p.add_argument("--port", type=int, default=8080, help="port for --serve (default 8080)")
    p.set_defaults(func=cmd_dashboard)
