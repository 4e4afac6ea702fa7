"""The ``hwsearch`` command: argument parsing and wiring only (one module per group of subcommands)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from hwsearch import __version__
from hwsearch.cli import export, latency, models, search, tables
from hwsearch.config.builtin import suggest
from hwsearch.errors import HwsearchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwsearch", description="Hardware-aware compression search: structured pruning + int8/fp16, scored on real ONNX Runtime latency.")
    parser.add_argument("--version", action="version", version=f"hwsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (models, latency, search, export, tables):
        module.register(sub)
    parser.set_defaults(commands=tuple(sub.choices))  # for the "did you mean" of a typo'd command
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = parser.get_default("commands")
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        print(f"hwsearch: error: {argv[0]!r} is not a command{suggest(argv[0], list(commands))}; the commands are {', '.join(commands)} (hwsearch --help).", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HwsearchError as exc:
        print(f"hwsearch: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"hwsearch: error: no space left on the device (writing {exc.filename or 'an output file'}); free disk space, then run the same command again.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwsearch: interrupted; finished work is kept (run the same command again to resume).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
