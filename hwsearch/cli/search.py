"""``hwsearch search CONFIG [--set key=value ...] [--baseline uniform|random]``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict


def cmd_search(args: argparse.Namespace) -> int:
    from hwsearch.config import load_config
    from hwsearch.search.baselines import run_baseline, warm_start
    from hwsearch.search.driver import run_search

    cfg = load_config(args.config, args.set)
    stats = run_baseline(cfg, args.baseline, progress=not args.quiet) if args.baseline else run_search(cfg, prepare=warm_start(cfg), progress=not args.quiet)
    print(json.dumps(asdict(stats) | {"driver_share": round(stats.driver_share, 4)}, indent=2))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("search", help="search compression policies for the accuracy/latency Pareto front (resumes if interrupted)")
    p.add_argument("config", help="experiment TOML, e.g. experiments/quickstart.toml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (TOML value), e.g. n_trials=10 or devices.cpu-1t.budget_ms=1.5")
    p.add_argument("--baseline", choices=("uniform", "random"), default=None, help="run a baseline search into runs/NAME/baselines/KIND instead")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_search)
