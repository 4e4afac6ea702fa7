"""What several commands share: model/task arguments, the Context they describe, and the checks of
arguments that every command makes before any work (training, loading a baseline, timing)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.options import CompressOptions

KEEP_CHOICES_HELP = ("keep ratios of the space, comma-separated, e.g. 1.0 for a precision-only table (default: the model family's); "
                     "profile, calibrate-table and validate-table of one table take the same")
CHANNEL_MULTIPLE_HELP = "channel rounding (default: the model family's, 8 for CNNs, 16 for the pretrained edge CNNs, 64 FFN neurons for the encoder)"
DEVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value (bare words are strings): ``widths=[16,32,64]``."""
    if "=" not in text:
        raise HwsearchError(f"Option {text!r} is not key=value; write e.g. widths=[16,32,64].")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def model_args(p: argparse.ArgumentParser, several: bool = False, trains: bool = True) -> None:
    """``--task``, ``--task-option``, ``--model``, ``--model-option``, ``--data-dir``; ``--epochs`` unless the command never trains."""
    p.add_argument("--task", default="digits", help="digits, cifar10, fashion, imagenet-photos, minilm, or package.module:function (code: imported and called; default: digits)")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=JSON", help="task option, e.g. size=224 or normalize=tf (repeatable; bare words are strings)")
    if several:
        p.add_argument("--model", action="append", default=None, help="model name; repeat to cover several models (default: the task's)")
    else:
        p.add_argument("--model", default=None, help="resnet20, mobilenetv2, vgg, mobilenetv2_imagenet, efficientnet_lite0, all-minilm-l6-v2 or package.module:function (code: imported and called; default: the task's)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=JSON", help="model factory option, e.g. widths=[16,32,64]")
    p.add_argument("--data-dir", default=None, help="dataset directory (cifar10: the CIFAR-10 python batches)")
    if trains:
        p.add_argument("--epochs", type=int, default=None, help="baseline training epochs (default: the task's, 15 for digits)")


def keep_choices_arg(text: str | None) -> tuple[float, ...] | None:
    """``--keep-choices 0.5,1.0`` as the space's keep ratios (None when not given); a bad list is a one-line error."""
    from hwsearch.policy import check_keep_ratio

    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise HwsearchError(f"--keep-choices {text!r} is not a comma-separated list of numbers; use fractions in (0, 1], e.g. --keep-choices 0.5,0.75,1.0.") from None
    if not values:
        raise HwsearchError("--keep-choices is empty; give fractions in (0, 1], e.g. --keep-choices 1.0.")
    return tuple(sorted({check_keep_ratio(v, "--keep-choices") for v in values}))


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(parse_option(o) for o in args.model_option)


def context_from_args(args: argparse.Namespace, model: str | None = None, *, random_init: bool = False, retrain: bool = False,
                      options: CompressOptions = CompressOptions()):
    """The Context the command line describes (the baseline trained and cached unless ``random_init``)."""
    from hwsearch import context

    train: dict[str, Any] = {}
    if getattr(args, "epochs", None) is not None:
        at_least("--epochs", args.epochs, 1)
        train["epochs"] = args.epochs
    task_options = ({"data_dir": args.data_dir} if args.data_dir else {}) | dict(parse_option(o) for o in getattr(args, "task_option", []))
    return context.build(args.task, model or (args.model if isinstance(args.model, str) else None), task_options=task_options,
                         model_options=model_options(args), train=train, channel_multiple=getattr(args, "channel_multiple", None), options=options,
                         keep_choices=keep_choices_arg(getattr(args, "keep_choices", None)),
                         random_init=random_init, retrain=retrain, verbose=True)


def at_least(option: str, value: float, low: float, example: str = "") -> None:
    """``value`` of ``option`` must be ``low`` or more (a one-line error otherwise)."""
    if value < low:
        raise HwsearchError(f"{option} {value} must be {low} or more{f', e.g. {example}' if example else ''}.")


def table_arg(value: str, option: str = "table") -> str:
    """The latency table a command names, loaded and checked whole (milliseconds) before any work;
    returns the folder to use. A path that is not a table is a one-line error naming it."""
    from hwsearch.config.builtin import PREFIX, resolve_table
    from hwsearch.tables.table import load_table

    path = resolve_table(value, key=option) if value.startswith(PREFIX) else Path(value).expanduser()
    if not (path / "table.csv").is_file():
        where = "does not exist" if not path.exists() else "is not a folder" if not path.is_dir() else "has no table.csv"
        raise HwsearchError(f"{option} {value!r} is not a latency table folder ({where}); pass one such as builtin:cpu-1t (see `hwsearch tables`), or make one with `hwsearch profile`.")
    load_table(path, warn_provenance=False)
    return str(path)


def policy_arg(value: str):
    """The policy file a command names, read and checked (the space check follows with the model)."""
    from hwsearch.policy import Policy

    return Policy.load(value)


def out_dir_arg(value: str, option: str = "--out") -> Path:
    """An output folder: an existing folder, or one that can be created (its nearest existing parent is a folder)."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise HwsearchError(f"{option} {value!r} is a file, not a folder; pass a folder to write into (it is created if missing).")
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise HwsearchError(f"{option} {value!r} cannot be created: {str(parent)!r} is a file; pass a folder path.")
    return path


def device_arg(value: str) -> str:
    if not DEVICE_NAME.fullmatch(value):
        raise HwsearchError(f"--device {value!r} is not a table name; use letters, digits and ._- (not starting with a dot or dash), e.g. cpu-1t.")
    return value
