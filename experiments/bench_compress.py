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

from hwsearch import onnx_io

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import measure_lock  # noqa: E402
from hwsearch.compress import CompressOptions, build_candidate
from hwsearch.policy import Policy
from hwsearch.space import SearchSpace
from hwsearch.tasks import get_task
from hwsearch.tasks.train import load_baseline

POLICIES = {
    "baseline": {},
    "int8": {"default_precision": "int8"},
    "keep0.5": {"default_keep": 0.5},
    "keep0.5+int8": {"default_keep": 0.5, "default_precision": "int8"},
}


def measure(task, baseline, name: str, policy: Policy, tmp: Path, finetune_steps: int) -> dict:
    space = SearchSpace.from_model(baseline.model, task.example_input())
    opts = CompressOptions(finetune_steps=finetune_steps, bn_recalib_batches=8, eval_split="test")
    res = build_candidate(task, baseline.model, policy, space, tmp / f"{name}.onnx", opts)
    shape = tuple(task.example_input().shape)
    row = {"policy": name, "accuracy": round(res.accuracy, 4), "params": res.params, "macs": res.macs, "size_bytes": res.size_bytes,
           "quantized_kernels": onnx_io.count_quantized_kernels(res.onnx_path)}
    for threads in (1, 2):
        with measure_lock():  # no other measurement on this machine overlaps this one
            lat = onnx_io.measure_latency(res.onnx_path, shape, onnx_io.SessionSettings(threads=threads), warmup=50, runs=300, min_time_s=1.0)
        row[f"latency_ms_{threads}t"] = round(lat.median_ms, 4)
        row[f"p90_ms_{threads}t"] = round(lat.p90_ms, 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="experiments/results/compress.csv")
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2", "vgg"])
    ap.add_argument("--finetune-steps", type=int, default=150)
    args = ap.parse_args()
    torch.set_num_threads(2)
    task = get_task("digits")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            baseline = load_baseline(task, model)
            for name, data in POLICIES.items():
                row = {"model": model, **measure(task, baseline, name, Policy.from_dict(data), Path(tmp), args.finetune_steps)}
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
