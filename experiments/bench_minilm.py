"""MiniLM benchmark: the search's front next to int8-only and uniform-pruning baselines, measured here.

For the dense fp32 model, every point of ``runs/minilm_cpu/pareto.json`` and the baselines
(int8 everywhere; int8 attention blocks only; uniform pruning of heads and FFN neurons at 0.875 / 0.75 / 0.5 in fp32 and int8)
this takes the verified ONNX file `hwsearch export` wrote for that policy (or builds it with the
run's options into --work), measures fidelity to the dense model on the
*test* split (the search used val), counts parameters, and times batch-1, 128-token latency with
1 ONNX Runtime thread (p10 and median of repeated runs, minimum over 5 interleaved rounds, holding
/tmp/hwsearch-measure.lock while timing). Writes experiments/results/minilm.csv and minilm.json.

    HWSEARCH_CACHE=... .venv/bin/python experiments/bench_minilm.py [--run runs/minilm_cpu]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = ("kind", "trial", "params", "param_reduction_pct", "size_bytes", "int8_blocks", "heads_kept", "ffn_neurons_kept",
           "latency_p10_ms_1t", "latency_median_ms_1t", "speedup_vs_dense_fp32_1t", "predicted_latency_ms_1t",
           "cosine_test", "spearman_test", "top10_test", "cosine_val_search", "policy")
BASELINES = [("dense_fp32", {}), ("int8_only", {"default_precision": "int8"}),
             ("int8_attention_only", {"precision": {f"layer{i}.attn": "int8" for i in range(6)}})] + [
    (f"uniform_{k}_{p}", {"default_keep": k, "default_precision": p}) for p in ("fp32", "int8") for k in (0.875, 0.75, 0.5)]


def main() -> int:
    import torch

    from hwsearch.compress import realise
    from hwsearch.compress.realise import onnx_outputs
    from hwsearch.export.winners import load_run
    from hwsearch.policy import Policy
    from hwsearch.runtime.session import SessionSettings
    from hwsearch.runtime.timing import MeasureSettings, measuring, time_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "minilm_cpu"))
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "minilm"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", default="/tmp/hwsearch-minilm-bench", help="ONNX files built here (kept; reused on a re-run)")
    ap.add_argument("--lock", default="/tmp/hwsearch-measure.lock")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(1)
    ctx = load_run(args.run).ctx
    task, model, space = ctx.task, ctx.baseline.model, ctx.space
    front = json.loads((Path(args.run) / "pareto.json").read_text())
    points = [(name, None, pol, None) for name, pol in BASELINES] + [("front", e["trial"], e["policy"], e.get("accuracy")) for e in front]
    pred = ctx.predictor(str(ROOT / "latency_tables" / "minilm-cpu-1t"))
    settings, ms, feed = SessionSettings(threads=1), MeasureSettings(warmup=5, min_runs=30, min_time_s=0.3), task.latency_feed()
    rows, start = [], time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    exported = {}
    for m in sorted(Path(args.run).glob("export/*/manifest.json")):
        man = json.loads(m.read_text())
        if man.get("schema_version") == 2:  # an older export's manifest: its file is rebuilt below instead
            exported[Policy.from_dict(man["policy"]).to_json()] = (m.parent / man["model"]["file"], man)
    built = []
    for kind, trial, pol, search_cos in points:
        policy = Policy.from_dict(pol)
        if policy.to_json() in exported:  # the verified file `hwsearch export` wrote for this policy
            path, man = exported[policy.to_json()]
            info = {"params": man["model"]["params"], "size_bytes": man["model"]["size_bytes"], "int8": man["model"]["precision_counts"]["int8"], "source": str(path.relative_to(ROOT))}
        else:
            path = work / f"{kind}-{trial}.onnx"
            if not path.is_file():
                r = realise(ctx, policy, path, score=False)  # the run's options; fidelity is measured on test below
                (work / f"{kind}-{trial}.json").write_text(json.dumps({"params": r.params, "size_bytes": r.size_bytes, "int8": r.precision_counts["int8"]}))
            info = json.loads((work / f"{kind}-{trial}.json").read_text()) | {"source": "built by this script"}
        fid = task.fidelity(onnx_outputs(task, path, "test"), task.targets("test", model))
        built.append((kind, trial, policy, search_cos, path, info, fid, space.keep_channels(policy)))
        print(f"{kind} {trial}: cosine_test={fid['cosine']:.4f} ({info['source']})", flush=True)
    timings: list[list] = [[] for _ in built]
    for _ in range(args.rounds):
        for i, b in enumerate(built):
            with measuring(args.lock):
                timings[i].append(time_model(b[4], settings, ms, feed))
    dense_p10 = min(t.p10_us for t in timings[0]) / 1e3
    dense_params = built[0][5]["params"]
    for (kind, trial, policy, search_cos, _, info, fid, keep), ts in zip(built, timings):
        p10 = min(t.p10_us for t in ts) / 1e3
        rows.append({
            "kind": kind, "trial": "" if trial is None else trial, "params": info["params"],
            "param_reduction_pct": round(100 * (1 - info["params"] / dense_params), 2), "size_bytes": info["size_bytes"],
            "int8_blocks": info["int8"], "heads_kept": sum(v for k, v in keep.items() if k.endswith(".attn")),
            "ffn_neurons_kept": sum(v for k, v in keep.items() if k.endswith(".ffn")),
            "latency_p10_ms_1t": round(p10, 4), "latency_median_ms_1t": round(min(t.median_us for t in ts) / 1e3, 4),
            "speedup_vs_dense_fp32_1t": round(dense_p10 / p10, 3), "predicted_latency_ms_1t": round(pred.predict(policy).latency_ms, 4),
            "cosine_test": round(fid["cosine"], 5), "spearman_test": round(fid["spearman"], 5), "top10_test": round(fid["top10"], 5),
            "cosine_val_search": "" if search_cos is None else round(search_cos, 5), "policy": policy.to_json(),
        })
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    ok = [r for r in rows if r["kind"] == "front" and r["cosine_test"] >= 0.98]
    best = max(ok, key=lambda r: r["speedup_vs_dense_fp32_1t"], default=None)
    summary = {
        "description": "MiniLM-L6 (all-MiniLM-L6-v2) compression, batch 1, 128 tokens, ONNX Runtime CPU 1 thread; fidelity to the dense model on the test split",
        "run": str(Path(args.run).relative_to(ROOT)) if Path(args.run).is_relative_to(ROOT) else args.run,
        "dense_fp32_latency_p10_ms_1t": round(dense_p10, 4), "dense_params": dense_params,
        "best_front_speedup_at_cosine_ge_0.98": best, "rows": len(rows), "seconds": round(time.perf_counter() - start, 1),
        "statistic": "p10 (and median) of >=30 runs after 5 warm-up runs, minimum over interleaved rounds (the least disturbed round)", "rounds": args.rounds,
        "columns": {"latency_*_ms_1t": "milliseconds, 1 thread", "speedup_vs_dense_fp32_1t": "dense fp32 p10 / this p10",
                    "param_reduction_pct": "percent of the dense model's parameters removed (embeddings included)",
                    "cosine_test/spearman_test/top10_test": "fidelity to the dense fp32 model's embeddings on the test split"},
    }
    out.with_suffix(".json").write_text(json.dumps(summary | {"points": rows}, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "columns"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
