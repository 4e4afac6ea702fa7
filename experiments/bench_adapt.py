"""Each shipped table checked and adapted on this machine, then validated with and without the adaptation.

For every table given: this machine's stored adaptation (if any) is removed, so the run starts as a
fresh machine would; ``hwsearch check-table TABLE --adapt`` re-times the reference models and fits the
adaptation (its wall time is the "check + adapt" figure); ``hwsearch validate-table TABLE --adapt require``
then times ``--samples`` held-out random policies and scores the adapted predictor and the table as built
on the same measurements. Results: experiments/results/adapt_<table>.json (rendered into BENCHMARKS.md by
write_benchmarks.py). Run alone on an idle machine; about 7 min per CNN table at 200 samples, and
about 1.5 s per MiniLM sample plus two minutes.

    .venv/bin/python experiments/bench_adapt.py --tables cpu-1t cpu-2t --samples 200
    .venv/bin/python experiments/bench_adapt.py --tables minilm-cpu-1t --samples 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, machine_info  # noqa: E402

BIN = Path(sys.executable).parent


def models_of(table: Path) -> list[str]:
    meta = json.loads((table / "meta.json").read_text())
    pairs = [m.split("/", 1) for m in meta.get("models", [])]
    args = ["--task", pairs[0][0]]
    for _, model in pairs:
        args += ["--model", model]
    minilm = ["--batch", "16", "--rounds", "3", "--min-runs", "40", "--min-time", "0.2", "--combine", "median"]  # as build_minilm_tables.sh
    return args + (minilm if pairs[0][0] == "minilm" else ["--random-init"])


def run(cmd: list[str]) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
    return done.stdout, time.perf_counter() - start


def bench(name: str, samples: int) -> dict:
    from hwsearch.tables import adaptation

    table = Path("latency_tables") / name
    threads = int(json.loads((table / "meta.json").read_text())["threads"])
    key = adaptation.fingerprint_key(adaptation.machine_fingerprint(threads))
    for stale in (table / adaptation.ADAPT_DIR).glob(f"{key}*.json"):
        stale.unlink()  # start as a fresh machine
    check_cmd = [str(BIN / "hwsearch"), "check-table", str(table), "--adapt", "--json", "--quiet"]
    out, check_s = run(check_cmd)
    check = json.loads(out)
    val_cmd = [str(BIN / "hwsearch"), "validate-table", str(table), *models_of(table), "--samples", str(samples), "--adapt", "require", "--quiet"]
    run(val_cmd)
    val = json.loads(adaptation.validation_path(table, check["adaptation"]["key"]).read_text())
    keep = ("n_models", "rmspe", "within_5pct", "within_10pct", "mean_error", "spearman", "repeatability", "unadapted", "drift", "seconds", "load_average", "cpu_steal")
    shown = [" ".join(["hwsearch", *c[1:]]) for c in (check_cmd, val_cmd)]
    return {"table": name, "threads": threads, "machine": machine_info(), "commands": shown, "check_seconds": round(check_s, 1),
            "check": {k: check[k] for k in ("offset", "by_family", "before", "after_leave_one_out", "repeatability", "verdict", "references", "vs_builder", "builder", "machine")},
            "validation": {k: val.get(k) for k in keep}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", nargs="+", default=["cpu-1t", "cpu-2t", "minilm-cpu-1t"])
    p.add_argument("--samples", type=int, default=200)
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.tables:
        result = bench(name, args.samples)
        (RESULTS / f"adapt_{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        v, c = result["validation"], result["check"]
        print(f"{name}: check+adapt {result['check_seconds']} s, offset {c['offset']:+.1%}; within ±10%: {v['unadapted']['within_10pct']:.0%} as built -> "
              f"{v['within_10pct']:.0%} adapted (±5%: {v['unadapted']['within_5pct']:.0%} -> {v['within_5pct']:.0%}); repeatability ±10% {v['repeatability']['within_10pct']:.0%}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
