"""Speedup at equal accuracy and front quality: hwsearch (guided, NSGA-II) vs TPE, random search, uniform pruning, int8.

    HWSEARCH_CACHE=/tmp/hwcache .venv/bin/python experiments/bench_speedup.py --trials 30 --seeds 3

Three phases, each resumable (searches resume from their storage under --work):

1. Search. For every model, one ``uniform`` sweep (``hwsearch search --baseline uniform``: every keep
   ratio of the space, all-fp32 and all-int8) and, per seed, an NSGA-II run (with its warm start), a
   guided run (sampler ``guided``: sensitivity profile, surrogate and table; same warm start, its probes
   counted in the budget), a TPE run (same warm start) and a random search (``--baseline random``) at
   the same trial budget. The config is experiments/quickstart.toml with overrides (the model, the
   seed, ``n_trials``, ``population_size = 0`` (the budget's default generation size), ``workers = 0`` and both devices, cpu-1t and cpu-2t, so one search predicts
   the latency of every trial on both tables; NSGA-II then optimises accuracy and both latencies).
   Runs go ``--jobs`` at a time, each in its own process.
2. Rebuild. Of every run, the trials on the predicted Pareto front of each device (validation
   accuracy vs predicted latency, accuracy within --acc-window of the baseline), the PICKS trials
   predicted fastest on each device within 1 point of the baseline's validation accuracy (what a
   user would pick for "equal accuracy"), and every point of the uniform sweep, are rebuilt from their policy (deterministic) and exported to ONNX; accuracy is
   measured on the digits *test* split with ONNX Runtime.
3. Measure. Each rebuilt ONNX file and the fp32 baseline ONNX ({}) are timed with ORT CPU at 1 and
   2 threads (the two tables' settings; batch 1, median of >= 60 runs and 0.1 s after 30 warm-up runs), one at
   a time under the machine-wide measurement lock (experiments/bench_common.py), in --rounds
   interleaved passes over all files of a model; the lowest of the pass medians is kept (the machine
   is shared, and load from other processes only ever adds time).

Writes experiments/results/bench_trials.csv (every trial of every run), bench_candidates.csv (every
rebuilt and measured policy) and bench_speedup.json (settings and machine); write_benchmarks.py turns
them into BENCHMARKS.md figures and docs/bench_front_<model>.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, machine_info, measure, write_csv, write_json  # noqa: E402

CONFIG = "experiments/quickstart.toml"
DEVICES = {"cpu-1t": 1, "cpu-2t": 2}
METHODS = ("nsga2", "tpe", "random", "guided")
PICKS = 3  # per run and device, the predicted-fastest trials within 1 validation point are rebuilt too


def policy_id(policy: dict) -> str:
    return hashlib.sha1(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:12]


def overrides(model: str, seed: int, trials: int, out: Path, extra: list[str]) -> list[str]:
    # population_size=0: hwsearch's own rule for the budget (n_trials // 4, clamped to [4, 50]) instead of the quickstart's 10
    return [f"model={model}", f"seed={seed}", f"n_trials={trials}", "population_size=0", "workers=0", f"output_dir={json.dumps(str(out))}",
            'devices.cpu-2t.table="latency_tables/cpu-2t"'] + extra


def run_dir(work: Path, model: str, method: str, seed: int, trials: int) -> Path:
    return work / "runs" / model / f"{method}-s{seed}-n{trials}"


def search_job(spec: tuple) -> dict:
    """One search in its own process (torch on one thread); returns its wall time."""
    import torch

    from hwsearch.config import load_config
    from hwsearch.search import run_baseline, run_search
    from hwsearch.search.baselines import baseline_dir, warm_start

    torch.set_num_threads(1)
    model, method, seed, trials, out, extra = spec
    cfg = load_config(CONFIG, overrides(model, seed, max(trials, 1), Path(out), extra) + ([f"sampler={method}"] if method in ("nsga2", "tpe", "guided") else []))
    t0 = time.perf_counter()
    if method in ("uniform", "random"):
        stats = run_baseline(cfg, method, progress=False)
        where = baseline_dir(cfg, method)
    else:
        stats = run_search(cfg, prepare=warm_start(cfg), progress=False)
        where = Path(cfg.output_dir)
    print(f"[search] {model} {method} seed {seed}: {stats.completed} trials in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    guided = json.loads((where / "guided.json").read_text()) if (where / "guided.json").is_file() else {}
    return {"model": model, "method": method, "seed": seed, "trials": stats.completed, "failed": stats.failed,
            "search_wall_s": round(stats.wall_s, 1), "driver_share": round(stats.driver_share, 4), "run_dir": str(where),
            "probes": (guided.get("profile") or {}).get("planned"), "proposal_s": guided.get("proposal_s"),
            "surrogate_spearman": (guided.get("proposals") or {}).get("spearman_predicted_vs_measured")}


def _front(rows: pd.DataFrame, col: str) -> list[int]:
    from hwsearch.results import pareto_front

    pts = list(zip(rows["accuracy"], rows[col]))
    return [rows.index[i] for i in pareto_front(pts)]


def collect_trials(runs: list[dict], acc_floor: dict[str, float], base_val: dict[str, float]) -> pd.DataFrame:
    """Every trial of every run, with ``selected`` = on that run's predicted front of some device, or among its
    PICKS predicted-fastest trials within 1 point of the baseline's validation accuracy (uniform: all)."""
    frames = []
    for run in runs:
        df = pd.read_csv(Path(run["run_dir"]) / "trials.csv")
        df = df[df["state"] == "COMPLETE"].copy()
        df["policy_id"] = [policy_id(json.loads(p)) for p in df["policy"]]
        df["selected"] = 0
        if run["method"] == "uniform":
            df["selected"] = 1
        else:
            pool = df[df["accuracy"] >= acc_floor[run["model"]]]
            close = df[df["accuracy"] >= base_val[run["model"]] - 0.01]
            for dev in DEVICES:
                df.loc[_front(pool, f"latency_ms:{dev}"), "selected"] = 1
                df.loc[close.nsmallest(PICKS, f"latency_ms:{dev}").index, "selected"] = 1
        df.insert(0, "seed", run["seed"])
        df.insert(0, "method", run["method"])
        df.insert(0, "model", run["model"])
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    return out.rename(columns={"accuracy": "val_accuracy", **{f"latency_ms:{d}": f"predicted_ms_{d}" for d in DEVICES}})


_CTX: dict = {}


def _context(model: str, extra: list[str]):
    """(config, Context) of a model's runs, loaded once per process (the baseline trained and cached if absent)."""
    if model not in _CTX:
        import torch

        from hwsearch import context
        from hwsearch.config import load_config

        torch.set_num_threads(1)
        cfg = context.resolve(load_config(CONFIG, overrides(model, 0, 1, Path("/tmp/unused"), extra)))
        _CTX[model] = (cfg, context.from_config(cfg))
    return _CTX[model]


def build_job(spec: tuple) -> dict:
    """Rebuild one policy (prune, recover, export, precisions) and score it on the test split."""
    from hwsearch.compress import realise
    from hwsearch.policy import Policy

    model, pid, policy, out, extra = spec
    _, ctx = _context(model, extra)
    t0 = time.perf_counter()
    res = realise(ctx.with_options(eval_split="test"), ctx.space.validate(Policy.from_dict(policy)), out)  # the run's [compress] options
    return {"model": model, "policy_id": pid, "test_accuracy": round(res.accuracy, 4), "params": res.params, "macs": res.macs,
            "size_bytes": res.size_bytes, "build_s": round(time.perf_counter() - t0, 3), "onnx": str(out), "policy": json.dumps(policy, sort_keys=True)}


def measure_rounds(rows: list[dict], rounds: int) -> list[dict]:
    """Time every ONNX file at each device's threads, ``rounds`` passes over all files (interleaved, so a
    burst of load from other processes hits one pass, not one file); keep the lowest per-pass median."""
    runs: dict[tuple[int, str], list] = {}
    for _ in range(rounds):
        for i, row in enumerate(rows):
            for dev, threads in DEVICES.items():
                runs.setdefault((i, dev), []).append(measure(row["onnx"], threads, runs=60, min_time_s=0.1, warmup=30))
    out = []
    for i, row in enumerate(rows):
        row = dict(row)
        for dev in DEVICES:
            best = min(runs[(i, dev)], key=lambda r: r[0].median_us)[0]
            medians = [r[0].median_us for r in runs[(i, dev)]]
            row[f"measured_ms_{dev}"], row[f"p90_ms_{dev}"] = round(best.median_us / 1e3, 4), round(best.p90_us / 1e3, 4)
            row[f"pass_spread_{dev}"] = round(max(medians) / min(medians), 3)
        row["measure_s"] = round(sum(t for dev in DEVICES for _, t in runs[(i, dev)]) / rounds, 3)
        out.append(row)
    return out


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2", "vgg"])
    ap.add_argument("--trials", type=int, default=30, help="trial budget of each NSGA-II / TPE / random run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--jobs", type=int, default=2, help="searches / rebuilds run in parallel (one process each)")
    ap.add_argument("--acc-window", type=float, default=0.12, help="rebuild front trials within this accuracy of the baseline (val)")
    ap.add_argument("--rounds", type=int, default=3, help="measurement passes over all ONNX files (lowest median kept)")
    ap.add_argument("--work", default="/tmp/hwbench", help="run directories and ONNX files (resumable)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides for every run")
    ap.add_argument("--results", default=str(RESULTS), help="folder the CSV/JSON results are written to (write_benchmarks.py reads "
                    "experiments/results, and experiments/results/guided for the guided-search section)")
    args = ap.parse_args()
    work, started = Path(args.work), time.time()
    info = machine_info()

    # 0. baselines (trained once, cached) and their validation accuracy, before any parallel job
    base_val = {m: _context(m, args.set)[1].baseline.val_accuracy for m in args.models}
    floors = {m: v - args.acc_window for m, v in base_val.items()}

    # 1. searches
    specs = [(m, "uniform", 0, 0, str(run_dir(work, m, "uniform", 0, 0)), args.set) for m in args.models]
    specs += [(m, meth, s, args.trials, str(run_dir(work, m, meth, s, args.trials)), args.set)
              for s in range(args.seeds) for m in args.models for meth in args.methods]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(search_job, specs))
    trials = collect_trials(runs, floors, base_val)
    t_search = time.time() - started

    # 2. rebuilds: every selected policy once per model, plus the fp32 baseline ({})
    wanted = {(m, pid): json.loads(p) for m, pid, p in trials[trials["selected"] == 1][["model", "policy_id", "policy"]].itertuples(index=False)}
    wanted |= {(m, policy_id({})): {} for m in args.models}
    jobs = [(m, pid, pol, str(work / "onnx" / m / f"{pid}.onnx"), args.set) for (m, pid), pol in sorted(wanted.items())]
    print(f"[rebuild] {len(jobs)} policies", file=sys.stderr, flush=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        built = list(pool.map(build_job, jobs, chunksize=4))
    t_build = time.time() - started - t_search

    # 3. measurements, one file at a time under the lock, in interleaved passes
    load = [_loadavg()]
    cands = []
    for m in args.models:
        rows = sorted((r for r in built if r["model"] == m), key=lambda r: r["policy_id"] != policy_id({}))
        cands += [r | {"is_baseline": int(r["policy_id"] == policy_id({}))} for r in measure_rounds(rows, args.rounds)]
        print(f"[measure] {m}: {len(rows)} ONNX files x {args.rounds} passes", file=sys.stderr, flush=True)
    t_measure = time.time() - started - t_search - t_build
    load.append(_loadavg())

    cols = ["model", "method", "seed", "number", "selected", "policy_id", "val_accuracy"] + [f"predicted_ms_{d}" for d in DEVICES] + ["eval_seconds"]
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    write_csv(results / "bench_trials.csv", trials[cols].to_dict("records"))
    write_csv(results / "bench_candidates.csv", [{k: v for k, v in r.items() if k != "onnx"} for r in cands])
    write_csv(results / "bench_runs.csv", [{k: v for k, v in r.items() if k != "run_dir"} for r in runs])
    cmd = ".venv/bin/python experiments/bench_speedup.py " + " ".join(sys.argv[1:])
    write_json(results / "bench_speedup.json", {
        "command": cmd.strip(), "config": CONFIG, "overrides": overrides("MODEL", 0, args.trials, Path("RUN"), args.set)[2:],
        "models": args.models, "trials": args.trials, "seeds": args.seeds, "methods": args.methods, "devices": DEVICES,
        "acc_window": args.acc_window, "rounds": args.rounds, "measure": {"warmup": 30, "runs": 60, "min_time_s": 0.1}, "machine": info, "loadavg_1min_measure_start_end": load, "phase_s": {"search": round(t_search), "rebuild": round(t_build), "measure": round(t_measure)},
    })
    print(f"wrote {results}/bench_trials.csv, bench_candidates.csv, bench_runs.csv, bench_speedup.json in {time.time() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
