"""The ``hwsearch`` command: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from hwsearch.errors import HwsearchError

# Feature areas that add their own subcommands: each module has ``register(subparsers)``.
COMMAND_MODULES = ("hwsearch.latency.commands", "hwsearch.search.commands", "hwsearch.export_commands")


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value (bare words are strings): ``widths=[16,32,64]``."""
    if "=" not in text:
        raise HwsearchError(f"Option {text!r} is not key=value; write e.g. widths=[16,32,64].")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="digits", help="digits, cifar10, minilm, or package.module:function (default: digits)")
    p.add_argument("--model", default="resnet20", help="resnet20, mobilenetv2, vgg, or package.module:function")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=JSON", help="model factory option, e.g. widths=[16,32,64]")
    p.add_argument("--data-dir", default=None, help="dataset directory (cifar10: the CIFAR-10 python batches)")
    p.add_argument("--epochs", type=int, default=None, help="baseline training epochs (default: the task's, 15 for digits)")


def task_from_args(args: argparse.Namespace):
    from hwsearch.tasks import get_task

    return get_task(args.task, **({"data_dir": args.data_dir} if args.data_dir else {}))


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(parse_option(o) for o in args.model_option)


def load_task_and_baseline(args: argparse.Namespace, retrain: bool = False):
    from dataclasses import replace

    task = task_from_args(args)
    cfg = task.train_config
    if getattr(args, "epochs", None) is not None:
        if args.epochs < 1:
            raise HwsearchError(f"--epochs {args.epochs} must be at least 1.")
        cfg = replace(cfg, epochs=args.epochs)
    return task, task.load_baseline(args.model, model_options(args), cfg, retrain=retrain)


def cmd_train(args: argparse.Namespace) -> int:
    task, b = load_task_and_baseline(args, retrain=args.retrain)
    print(json.dumps({"task": task.name, "model": args.model, "checkpoint": str(b.checkpoint), "test_accuracy": b.test_accuracy, "val_accuracy": b.val_accuracy}, indent=2))
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    task = task_from_args(args)
    model = task.build_model(args.model, **model_options(args))
    print(task.search_space(model, channel_multiple=args.channel_multiple).to_json())
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from hwsearch import onnx_io
    from hwsearch.compress import CompressOptions
    from hwsearch.policy import Policy

    policy = Policy.load(args.policy)
    opts = CompressOptions(importance=args.importance, finetune_steps=args.finetune_steps, bn_recalib_batches=args.bn_recalib_batches, eval_split=args.split)
    task, baseline = load_task_and_baseline(args)
    space = task.search_space(baseline.model, channel_multiple=args.channel_multiple)
    out = Path(args.out)
    result = task.build_candidate(baseline.model, policy, space, out / "model.onnx", opts)
    lat = onnx_io.measure_latency(result.onnx_path, task.input_shape(), onnx_io.SessionSettings(threads=args.threads), feed=task.latency_feed())
    summary = {
        "task": task.name, "model": args.model, "policy": policy.to_dict(), "split": args.split,
        "accuracy": result.accuracy, "latency_ms": lat.median_ms, "latency_p90_ms": lat.p90_ms, "latency_runs": lat.runs, "threads": args.threads,
        "params": result.params, "macs": result.macs, "size_bytes": result.size_bytes,
        "quantized_kernels": onnx_io.count_quantized_kernels(result.onnx_path), "layers_by_precision": result.precision_counts,
        "baseline_test_accuracy": baseline.test_accuracy, "seconds": result.seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwsearch", description="Hardware-aware compression search: structured pruning + int8/fp16, scored on real ONNX Runtime latency.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (or reuse the cached) baseline for a task and model")
    model_args(p)
    p.add_argument("--retrain", action="store_true", help="ignore the cached checkpoint and train again")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("space", help="print a model's search space as JSON")
    model_args(p)
    p.add_argument("--channel-multiple", type=int, default=None, help="channel rounding (default: the task's, 8 for CNNs, 64 FFN neurons for minilm)")
    p.set_defaults(func=cmd_space)

    p = sub.add_parser("compress", help="apply one policy: write DIR/model.onnx and DIR/summary.json")
    model_args(p)
    p.add_argument("--policy", required=True, help="policy JSON file ({} is the baseline)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--importance", default="l1", help="channel importance: l1 (default), bn_scale, taylor")
    p.add_argument("--finetune-steps", type=int, default=0)
    p.add_argument("--bn-recalib-batches", type=int, default=0)
    p.add_argument("--channel-multiple", type=int, default=None, help="channel rounding (default: the task's, 8 for CNNs, 64 FFN neurons for minilm)")
    p.add_argument("--threads", type=int, default=1, help="ORT intra-op threads for the latency figure (default 1)")
    p.add_argument("--split", default="test", help="split the accuracy is measured on (default test)")
    p.set_defaults(func=cmd_compress)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HwsearchError as exc:
        print(f"hwsearch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwsearch: interrupted; finished work is kept (run the same command again to resume).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
