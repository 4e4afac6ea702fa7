"""What several commands share: model/task arguments and the Context they describe."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.options import CompressOptions

CHANNEL_MULTIPLE_HELP = "channel rounding (default: the model family's, 8 for CNNs, 64 FFN neurons for the encoder)"


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value (bare words are strings): ``widths=[16,32,64]``."""
    if "=" not in text:
        raise HwsearchError(f"Option {text!r} is not key=value; write e.g. widths=[16,32,64].")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def model_args(p: argparse.ArgumentParser, several: bool = False) -> None:
    p.add_argument("--task", default="digits", help="digits, cifar10, minilm, or package.module:function (code: imported and called; default: digits)")
    if several:
        p.add_argument("--model", action="append", default=None, help="model name; repeat to cover several models (default: the task's)")
    else:
        p.add_argument("--model", default=None, help="resnet20, mobilenetv2, vgg, all-minilm-l6-v2 or package.module:function (code: imported and called; default: the task's)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=JSON", help="model factory option, e.g. widths=[16,32,64]")
    p.add_argument("--data-dir", default=None, help="dataset directory (cifar10: the CIFAR-10 python batches)")
    p.add_argument("--epochs", type=int, default=None, help="baseline training epochs (default: the task's, 15 for digits)")


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(parse_option(o) for o in args.model_option)


def context_from_args(args: argparse.Namespace, model: str | None = None, *, random_init: bool = False, retrain: bool = False,
                      options: CompressOptions = CompressOptions()):
    """The Context the command line describes (the baseline trained and cached unless ``random_init``)."""
    from hwsearch import context

    train: dict[str, Any] = {}
    if getattr(args, "epochs", None) is not None:
        if args.epochs < 1:
            raise HwsearchError(f"--epochs {args.epochs} must be at least 1.")
        train["epochs"] = args.epochs
    return context.build(args.task, model or (args.model if isinstance(args.model, str) else None), task_options={"data_dir": args.data_dir} if args.data_dir else {},
                         model_options=model_options(args), train=train, channel_multiple=getattr(args, "channel_multiple", None), options=options,
                         random_init=random_init, retrain=retrain, verbose=True)
