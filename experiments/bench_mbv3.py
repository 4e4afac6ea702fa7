"""MobileNetV3 (squeeze-excitation, hard-swish) on digits: does the latency table see the float islands int8 leaves?

Issues 14 and 15: ORT keeps hard-swish, hard-sigmoid and the SE gate's Mul in float between int8 convs,
so whole-model int8 pays a Dequantize/Quantize pair around each. This script
1. trains the built-in ``mobilenetv3`` on digits (cached) and realises dense fp32, whole-model int8
   (U8S8, S8S8, percentile calibration, 256 calibration samples), ONNX Runtime's one-line ``quantize_static``
   of the dense file (the ``--baseline ort-default`` recipes: S8S8 and U8S8, measured only) and ``--policies``
   random held-out policies (seeded; keep, fp32/int8/fp16 per layer);
2. profiles exactly the kernels those policies lower to into a fresh 1-thread table (``hwsearch profile``'s
   own loop, the shipped tables' timing settings) and predicts each policy from it;
3. times every file in ``--rounds`` interleaved rounds (1 ORT thread, batch 1, each file keeping its
   fastest round's p10, the statistic the table sums; the table is not calibrated) and scores the test split.
Writes experiments/results/mbv3_digits.json; ``write_benchmarks.py`` renders it.

    .venv/bin/python experiments/bench_mbv3.py     # about 10 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, machine_info, measure_lock  # noqa: E402

FAST = dict(warmup=10, min_runs=40, min_time_s=0.03)  # the shipped tables' kernel timing settings


def random_policy(space, rng: np.random.Generator) -> dict:
    return {"keep": {g.name: float(rng.choice(space.keep_choices)) for g in space.groups},
            "precision": {layer: str(rng.choice(["fp32", "int8", "fp16"], p=[0.4, 0.5, 0.1])) for layer in space.layers}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", type=int, default=30, help="random held-out policies besides fp32 and whole-model int8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", default="", help="predict from this table (e.g. latency_tables/mbv3-cpu-1t, calibrated) instead of a fresh uncalibrated profile")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    from hwsearch import context
    from hwsearch.compress import realise
    from hwsearch.compress.realise import score_onnx
    from hwsearch.families.cnn.enumerate import kernel_timer
    from hwsearch.families.cnn.lowering import UnitGraph
    from hwsearch.latency.profile import run_profile
    from hwsearch.policy import Policy
    from hwsearch.runtime.session import SessionSettings, count_quantized_kernels, detect_block
    from hwsearch.runtime.timing import MeasureSettings, time_model
    from hwsearch.search.ort_default import RECIPES, build_models
    from hwsearch.tables.kernels import Kernel

    t0 = time.time()
    ctx = context.build("digits", "mobilenetv3")
    settings = SessionSettings(threads=1)
    block = detect_block(settings)
    graph = UnitGraph.from_model(ctx.baseline.model, ctx.task.example_input(), ctx.space, block)
    rng = np.random.default_rng(args.seed)
    policies = {"dense fp32": {}, "int8 (U8S8)": {"default_precision": "int8"},
                "int8 (S8S8)": {"default_precision": "int8", "quant": {"activation_type": "int8"}},
                "int8 (percentile)": {"default_precision": "int8", "quant": {"calibration": "percentile"}},
                "int8 (256 calibration samples)": {"default_precision": "int8", "quant": {"calib_samples": 256}}}
    policies |= {f"random {i}": random_policy(ctx.space, rng) for i in range(args.policies)}
    kernels = sorted({Kernel(*t) for p in policies.values() for t in graph.lower(ctx.space, Policy.from_dict(p))})
    with tempfile.TemporaryDirectory() as tmp, measure_lock():
        table = Path(args.table) if args.table else Path(tmp) / "mbv3-cpu-1t"
        if not args.table:
            run_profile(table, "mbv3-cpu-1t", kernels, settings, block, ["digits/mobilenetv3"], kernel_timer(block), MeasureSettings(**FAST), progress=True)
        predictor = ctx.predictor(table, strict=True)
        files, rows = {}, {}
        for name, p in policies.items():
            res = realise(ctx, Policy.from_dict(p), Path(tmp) / f"{len(files)}.onnx", score=not name.startswith("random"))
            files[name] = res.onnx_path
            s8s8 = (p.get("quant") or {}).get("activation_type") == "int8"  # tables time U8S8 int8 only: S8S8 is measured, not predicted
            rows[name] = {"policy": p, "predicted_ms": None if s8s8 else predictor.predict(Policy.from_dict(p)).latency_ms, "params": res.params,
                          "val_accuracy": res.accuracy, "quantized_kernels": count_quantized_kernels(res.onnx_path)}
            if not name.startswith("random"):
                rows[name]["test_accuracy"] = score_onnx(ctx, res.onnx_path, "test")
        for name, (call, path) in build_models(ctx, Path(tmp) / "ort", RECIPES["cnn"]).items():
            if name != "dense":  # the one-line recipes a user gets without hwsearch: measured, not predicted (S8S8 is not in the tables)
                files[name] = path
                rows[name] = {"policy": None, "call": call, "predicted_ms": None, "params": rows["dense fp32"]["params"], "val_accuracy": score_onnx(ctx, path, "val"),
                              "quantized_kernels": count_quantized_kernels(path), "test_accuracy": score_onnx(ctx, path, "test")}
        best: dict[str, float] = {}
        feed = ctx.task.latency_feed()
        timing = MeasureSettings(warmup=20, min_runs=200, min_time_s=0.2)
        for r in range(args.rounds):
            for name, path in files.items():
                ms = time_model(path, settings, timing, feed).p10_us / 1e3  # the statistic the table's kernels are summed in (p10)
                best[name] = min(best.get(name, ms), ms)
            print(f"round {r + 1}/{args.rounds} timed", file=sys.stderr)
    for name, row in rows.items():
        row["measured_ms"] = best[name]
        row["error"] = None if row["predicted_ms"] is None else row["predicted_ms"] / best[name] - 1
    errors = [abs(r["error"]) for n, r in rows.items() if n.startswith("random")]
    out = {"command": "python experiments/bench_mbv3.py " + " ".join(sys.argv[1:]), "machine": machine_info(), "kernels": len(kernels), "table": args.table or None,
           "block": block, "rounds": args.rounds, "total_s": round(time.time() - t0), "rows": rows,
           "held_out": {"n": len(errors), "within_5": float(np.mean([e <= 0.05 for e in errors])), "within_10": float(np.mean([e <= 0.10 for e in errors])),
                        "max_abs_error": max(errors)}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mbv3_digits.json").write_text(json.dumps(out, indent=1))
    for name, r in rows.items():
        if name.startswith("random"):
            continue
        pred = "-" if r["predicted_ms"] is None else f"{r['predicted_ms']:.3f} ms ({r['error']:+.1%})"
        print(f"{name:14s} predicted {pred}, measured {r['measured_ms']:.3f} ms, test {r['test_accuracy']:.4f}")
    print(f"held-out: {out['held_out']}")


if __name__ == "__main__":
    main()
