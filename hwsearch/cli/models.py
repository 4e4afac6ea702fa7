"""``hwsearch train``, ``hwsearch space``, ``hwsearch compress``: one model at a time."""

from __future__ import annotations

import argparse
import json
import math
import sys

from hwsearch.cli.common import CHANNEL_MULTIPLE_HELP, at_least, context_from_args, model_args, out_dir_arg, policy_arg
from hwsearch.options import CompressOptions

DEFAULTS = CompressOptions()


def cmd_train(args: argparse.Namespace) -> int:
    ctx = context_from_args(args, retrain=args.retrain)
    b = ctx.baseline
    print(json.dumps({"task": ctx.task.name, "model": b.model_spec, "checkpoint": str(b.checkpoint), "test_accuracy": b.test_accuracy, "val_accuracy": b.val_accuracy}, indent=2))
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    print(context_from_args(args, random_init=True).space.to_json())
    return 0


def compress_options(args: argparse.Namespace) -> CompressOptions:
    """The realisation options of ``hwsearch compress``: the search's recovery defaults
    (:class:`~hwsearch.options.CompressOptions`) unless given; ``--finetune-steps 0`` turns the fine-tune off."""
    given = {"importance": args.importance, "finetune_steps": args.finetune_steps, "bn_recalib_batches": args.bn_recalib_batches,
             "calib_samples": args.calib_samples, "eval_split": args.split}
    return CompressOptions(**{k: v for k, v in given.items() if v is not None})


def score_drop_warning(score: float | None, baseline: float | None, split: str, max_drop: float, opts: CompressOptions) -> str | None:
    """One sentence when ``score`` falls more than ``max_drop`` below the baseline's score on ``split``, else None."""
    if score is None or baseline is None or math.isnan(baseline) or baseline - score <= max_drop:
        return None
    steps = max(100, 5 * opts.finetune_steps)
    return (f"the compressed model scores {score:.4f} on {split}, {baseline - score:.4f} below the baseline's {baseline:.4f} (more than --max-drop {max_drop}); "
            f"recover it with more fine-tune steps (--finetune-steps {steps}, now {opts.finetune_steps}) or keep more channels.")


def cmd_compress(args: argparse.Namespace) -> int:
    from hwsearch.compress import realise
    from hwsearch.runtime.session import SessionSettings, count_quantized_kernels
    from hwsearch.runtime.timing import MeasureSettings, time_model

    policy = policy_arg(args.policy)  # every argument is checked before the baseline is trained or loaded
    out = out_dir_arg(args.out)
    at_least("--threads", args.threads, 1)
    at_least("--max-drop", args.max_drop, 0, "0.05")
    opts = compress_options(args)
    context_from_args(args, random_init=True).space.validate(policy)  # the policy's groups and layers, on the model's shapes
    ctx = context_from_args(args, options=opts)
    result = realise(ctx, policy, out / "model.onnx")
    lat = time_model(result.onnx_path, SessionSettings(threads=args.threads), MeasureSettings(warmup=20, min_runs=100, min_time_s=0.0), feed=ctx.task.latency_feed())
    b = ctx.baseline
    reference = {"test": b.test_accuracy, "val": b.val_accuracy}.get(opts.eval_split)
    summary = {
        "task": ctx.task.name, "model": b.model_spec, "policy": policy.to_dict(), "split": opts.eval_split,
        "accuracy": result.accuracy, "latency_ms": lat.median_us / 1e3, "latency_p90_ms": lat.p90_us / 1e3, "latency_runs": lat.runs, "threads": args.threads,
        "params": result.params, "macs": result.macs, "size_bytes": result.size_bytes,
        "quantized_kernels": count_quantized_kernels(result.onnx_path), "layers_by_precision": result.precision_counts,
        "baseline_accuracy": reference, "baseline_test_accuracy": b.test_accuracy, "seconds": result.seconds,
        "recovery": {"finetune_steps": opts.finetune_steps, "finetune_lr": ctx.family.finetune_lr(opts), "distill": opts.distill, "bn_recalib_batches": opts.bn_recalib_batches},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    warning = score_drop_warning(result.accuracy, reference, opts.eval_split, args.max_drop, opts)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
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
    p.add_argument("--finetune-steps", type=int, default=None,
                   help=f"recovery: distilled fine-tune steps after pruning (default {DEFAULTS.finetune_steps}, the search's; 0: none)")
    p.add_argument("--bn-recalib-batches", type=int, default=None,
                   help=f"recovery: training batches that re-estimate BatchNorm statistics (default {DEFAULTS.bn_recalib_batches}, the search's; 0: none)")
    p.add_argument("--calib-samples", type=int, default=256, help="training samples that calibrate int8 activations (default 256)")
    p.add_argument("--max-drop", type=float, default=0.05, help="warn when the score falls more than this below the baseline's on --split (default 0.05)")
    p.add_argument("--channel-multiple", type=int, default=None, help=CHANNEL_MULTIPLE_HELP)
    p.add_argument("--threads", type=int, default=1, help="ORT intra-op threads for the latency figure (default 1)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"), help="split the accuracy is measured on (default test)")
    p.set_defaults(func=cmd_compress)
