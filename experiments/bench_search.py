"""Benchmark the search harness: trials per hour with 1 and 2 workers, and the driver's share of wall time.

    HWSEARCH_CACHE=/tmp/hwcache .venv/bin/python experiments/bench_search.py --trials 12
    (extra ``--set key=value`` options are passed to the config, e.g. --set compress.finetune_steps=0)

Each worker count runs a fresh search (same config, seed and trial budget) in a temporary run
directory. Writes experiments/results/bench_search.{json,csv}: per run the wall time, startup and
shutdown time (Ray start, baseline and worker load), time blocked waiting on evaluations, trials/hour
over the whole run and over the steady state (wall minus startup and shutdown), parallel efficiency
relative to 1 worker, and the driver's share of wall time outside evaluation. Unless --no-quickstart,
it first runs the quickstart exactly as ``make quickstart`` does (experiments/quickstart.toml, warm
start included, all its trials and workers) in a temporary run directory and records its wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from hwsearch.config import load_config
from hwsearch.search import run_search
from hwsearch.search.baselines import warm_start

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_info  # noqa: E402


def bench_one(config: str, overrides: list[str], workers: int, trials: int, out_root: Path) -> dict:
    run_dir = out_root / f"w{workers}"
    cfg = load_config(config, overrides + [f"n_trials={trials}", f"workers={workers}", f"output_dir={json.dumps(str(run_dir))}"])
    stats = run_search(cfg, progress=False)
    steady = stats.wall_s - stats.startup_s - stats.shutdown_s
    return {
        "workers": workers, "trials": stats.completed, "failed": stats.failed, "wall_s": round(stats.wall_s, 2),
        "startup_s": round(stats.startup_s, 2), "shutdown_s": round(stats.shutdown_s, 2), "eval_wait_s": round(stats.eval_wait_s, 2),
        "driver_loop_s": round(stats.driver_s, 3), "trials_per_hour": round(stats.completed / stats.wall_s * 3600, 1),
        "steady_trials_per_hour": round(stats.completed / steady * 3600, 1) if steady > 0 else None,
        "driver_share": round(stats.driver_share, 4), "driver_loop_share": round(stats.driver_s / stats.wall_s, 4),
        "pareto_size": stats.pareto_size,
    }


def quickstart(config: str, out_root: Path) -> dict:
    """``make quickstart`` (hwsearch search CONFIG), timed end to end in a fresh run directory."""
    cfg = load_config(config, [f"output_dir={json.dumps(str(out_root / 'quickstart'))}"])
    t0 = time.perf_counter()
    stats = run_search(cfg, prepare=warm_start(cfg), progress=False)
    wall = time.perf_counter() - t0
    return {"config": config, "trials": stats.completed, "failed": stats.failed, "workers": cfg.workers, "wall_s": round(wall, 1),
            "startup_s": round(stats.startup_s, 2), "trials_per_hour": round(stats.completed / wall * 3600, 1),
            "driver_share": round(stats.driver_share, 4), "pareto_size": stats.pareto_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/quickstart.toml")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="experiments/results/bench_search")
    parser.add_argument("--no-quickstart", action="store_true", help="skip timing the full quickstart run")
    args = parser.parse_args()
    rows, qs = [], None
    with tempfile.TemporaryDirectory(prefix="hwbench-") as tmp:
        if not args.no_quickstart:
            qs = quickstart(args.config, Path(tmp))
            print(json.dumps(qs), flush=True)
        for w in args.workers:
            rows.append(bench_one(args.config, args.set, w, args.trials, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    base = next((r for r in rows if r["workers"] == 1), None)
    for r in rows:
        for key in ("trials_per_hour", "steady_trials_per_hour"):
            if base and base[key] and r[key] and r["workers"] > 0:
                r[key.replace("trials_per_hour", "parallel_efficiency")] = round(r[key] / (base[key] * r["workers"]), 3)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": args.config, "overrides": args.set, "trials": args.trials, "machine": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": ".venv/bin/python experiments/bench_search.py " + " ".join(sys.argv[1:]), "host": machine_info()}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": rows, "quickstart": qs}, indent=2) + "\n")
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
