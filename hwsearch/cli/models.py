"""``hwsearch train``, ``hwsearch space``, ``hwsearch compress``: one model at a time."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hwsearch.cli.common import CHANNEL_MULTIPLE_HELP, context_from_args, model_args
from hwsearch.options import CompressOptions


def cmd_train(args: argparse.Namespace) -> int:
    ctx = context_from_args(args, retrain=args.retrain)
    b = ctx.baseline
    print(json.dumps({"task": ctx.task.name, "model": b.model_spec, "checkpoint": str(b.checkpoint), "test_accuracy": b.test_accuracy, "val_accuracy": b.val_accuracy}, indent=2))
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    print(context_from_args(args, random_init=True).space.to_json())
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from hwsearch.compress import realise
    from hwsearch.policy import Policy
    from hwsearch.runtime.session import SessionSettings, count_quantized_kernels
    from hwsearch.runtime.timing import MeasureSettings, time_model

    policy = Policy.load(args.policy)
    opts = CompressOptions(importance=args.importance, finetune_steps=args.finetune_steps, bn_recalib_batches=args.bn_recalib_batches,
                           calib_samples=args.calib_samples, eval_split=args.split)
    ctx = context_from_args(args, options=opts)
    out = Path(args.out)
    result = realise(ctx, policy, out / "model.onnx")
    lat = time_model(result.onnx_path, SessionSettings(threads=args.threads), MeasureSettings(warmup=20, min_runs=100, min_time_s=0.0), feed=ctx.task.latency_feed())
    summary = {
        "task": ctx.task.name, "model": ctx.baseline.model_spec, "policy": policy.to_dict(), "split": args.split,
        "accuracy": result.accuracy, "latency_ms": lat.median_us / 1e3, "latency_p90_ms": lat.p90_us / 1e3, "latency_runs": lat.runs, "threads": args.threads,
        "params": result.params, "macs": result.macs, "size_bytes": result.size_bytes,
        "quantized_kernels": count_quantized_kernels(result.onnx_path), "layers_by_precision": result.precision_counts,
        "baseline_test_accuracy": ctx.baseline.test_accuracy, "seconds": result.seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train (or reuse the cached) baseline for a task and model")
    model_args(p)
    p.add_argument("--retrain", action="store_true", help="ignore the cached checkpoint and train again")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("space", help="print a model's search space as JSON")
    model_args(p)
    p.add_argument("--channel-multiple", type=int, default=None, help=CHANNEL_MULTIPLE_HELP)
    p.set_defaults(func=cmd_space)

    p = sub.add_parser("compress", help="apply one policy: write DIR/model.onnx and DIR/summary.json")
    model_args(p)
    p.add_argument("--policy", required=True, help="policy JSON file ({} is the baseline)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--importance", default="l1", help="channel importance: l1 (default), bn_scale, taylor")
    p.add_argument("--finetune-steps", type=int, default=0)
    p.add_argument("--bn-recalib-batches", type=int, default=0)
    p.add_argument("--calib-samples", type=int, default=256, help="training samples that calibrate int8 activations (default 256)")
    p.add_argument("--channel-multiple", type=int, default=None, help=CHANNEL_MULTIPLE_HELP)
    p.add_argument("--threads", type=int, default=1, help="ORT intra-op threads for the latency figure (default 1)")
    p.add_argument("--split", default="test", help="split the accuracy is measured on (default test)")
    p.set_defaults(func=cmd_compress)
