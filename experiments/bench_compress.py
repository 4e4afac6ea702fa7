"""Measure what single policies buy on the digits models: fp32 vs int8 vs pruned, 1 and 2 threads.

Usage: .venv/bin/python experiments/bench_compress.py [--out experiments/results/compress.csv]

For resnet20, mobilenetv2 and vgg (default widths) it realises the baseline ({}), whole-model int8,
{"default_keep": 0.5} (fine-tuned) and both together, measures test accuracy on the ONNX file and
ONNX Runtime CPU latency (batch 1, median of >=300 runs after warm-up; under the machine-wide measurement
lock of bench_common.py) at 1 and 2 threads, and writes
one CSV row per (model, policy).
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import measure_lock  # noqa: E402

from hwsearch import context
from hwsearch.compress import realise
from hwsearch.options import CompressOptions
from hwsearch.policy import Policy
from hwsearch.runtime.session import SessionSettings, count_quantized_kernels
from hwsearch.runtime.timing import MeasureSettings, time_model

POLICIES = {
    "baseline": {},
    "int8": {"default_precision": "int8"},
    "keep0.5": {"default_keep": 0.5},
    "keep0.5+int8": {"default_keep": 0.5, "default_precision": "int8"},
}


def measure(ctx, name: str, policy: Policy, tmp: Path) -> dict:
    res = realise(ctx, policy, tmp / f"{name}.onnx")
    row = {"policy": name, "accuracy": round(res.accuracy, 4), "params": res.params, "macs": res.macs, "size_bytes": res.size_bytes,
           "quantized_kernels": count_quantized_kernels(res.onnx_path)}
    for threads in (1, 2):
        with measure_lock():  # no other measurement on this machine overlaps this one
            t = time_model(res.onnx_path, SessionSettings(threads=threads), MeasureSettings(warmup=50, min_runs=300, min_time_s=1.0))
        row[f"latency_ms_{threads}t"] = round(t.median_us / 1e3, 4)
        row[f"p90_ms_{threads}t"] = round(t.p90_us / 1e3, 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="experiments/results/compress.csv")
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2", "vgg"])
    ap.add_argument("--finetune-steps", type=int, default=150)
    args = ap.parse_args()
    torch.set_num_threads(2)
    # the space's defaults (every keep choice and precision, channel multiple 8); calib_samples=256: the
    # calibration these results were measured with (CompressOptions' default is now the search's 128)
    opts = CompressOptions(finetune_steps=args.finetune_steps, bn_recalib_batches=8, calib_samples=256, eval_split="test")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            ctx = context.build("digits", model, options=opts, verbose=True)
            for name, data in POLICIES.items():
                row = {"model": model, **measure(ctx, name, Policy.from_dict(data), Path(tmp))}
                rows.append(row)
                print(row, file=sys.stderr, flush=True)
    base = {r["model"]: r for r in rows if r["policy"] == "baseline"}
    for r in rows:
        for t in (1, 2):
            r[f"speedup_{t}t"] = round(base[r["model"]][f"latency_ms_{t}t"] / r[f"latency_ms_{t}t"], 3)
        r.update(machine=platform.processor() or platform.machine(), ort=onnxruntime.__version__, date=date.today().isoformat())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
