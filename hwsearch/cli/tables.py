"""``hwsearch tables [--json]`` (the built-in latency tables) and ``hwsearch init NAME`` (a ready config)."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from hwsearch.config import RUN_NAME
from hwsearch.config.builtin import PREFIX, resolve_table, suggest
from hwsearch.errors import HwsearchError

INIT_TRIALS = 24  # a few minutes on 2 cores with the default digits task (the quickstart runs 40)


def cmd_tables(args: argparse.Namespace) -> int:
    from hwsearch.tables.builtin import all_tables, render

    tables = all_tables()
    print(json.dumps([t.to_dict() for t in tables], indent=2) if args.json else render(tables))
    return 0


def _check_name(value: str, what: str, builtins: tuple[str, ...] | list[str], example: str) -> str:
    """A built-in name or ``package.module:function`` (not imported here: that is code, run by the search)."""
    if value in builtins or ":" in value:
        return value
    raise HwsearchError(f"{what} {value!r} is unknown{suggest(value, builtins)}; use one of {', '.join(builtins)} or package.module:function, e.g. {example}.")


def _device_name(table: str, path: Path) -> str:
    """The ``[devices.NAME]`` key: the built-in's name or the table folder's name."""
    name = table[len(PREFIX):] if table.startswith(PREFIX) else path.name
    if not RUN_NAME.fullmatch(name):
        raise HwsearchError(f"--table {table!r}: its folder name {name!r} cannot name a device; use letters, digits and ._- (e.g. rename the folder to my-device).")
    return name


def _coverage_note(task: str, model: str, table: str, path: Path) -> str | None:
    """An error when the table holds another model family's kernels (a transformer table for a CNN, or
    the reverse); a warning when it was profiled for other models of the family; else None."""
    from hwsearch.families import BUILTIN_MODELS
    from hwsearch.tables.table import read_meta

    covered = [str(m) for m in read_meta(path).get("models") or []]
    wanted = f"{task}/{model}" if model else f"{task}/"
    if ":" in task or ":" in model or not covered or any(m.startswith(wanted) for m in covered):
        return None
    family = BUILTIN_MODELS.get(model) or ("encoder" if task == "minilm" else "cnn")
    families = {BUILTIN_MODELS.get(m.split("/")[-1]) for m in covered} - {None}
    if families and family not in families:
        raise HwsearchError(f"--table {table!r} was profiled for {', '.join(covered)} ({', '.join(sorted(families))} kernels), which cannot time {wanted.rstrip('/')} ({family}); "
                            f"pick a table of its family from `hwsearch tables`, e.g. {PREFIX}{'minilm-cpu-1t' if family == 'encoder' else 'cpu-1t'}.")
    return (f"hwsearch: warning: table {table!r} was profiled for {', '.join(covered)}, not {wanted.rstrip('/')}; kernels it lacks are "
            f"estimated (see `hwsearch tables`), so profile one for this model with `hwsearch profile` if its coverage is low.")


def config_text(name: str, task: str, model: str, table: str, device: str) -> str:
    """The TOML of ``hwsearch init``: the quickstart's shape, fewer trials; every key not written keeps its default."""
    encoder = task == "minilm"
    model_line = f'model = "{model}"' if model else "# model: the task's default model (set model = \"...\" to choose)"
    compress = ("finetune_steps = 0      # distillation steps per candidate; 0 = prune only\ncalib_samples = 64" if encoder else
                "finetune_steps = 10     # distilled fine-tune steps after pruning\nbn_recalib_batches = 2\ncalib_samples = 64      # int8 activation calibration samples")
    return f"""# Written by `hwsearch init {name}`: a ready search; edit freely (README "Config reference").
#   hwsearch search {name}.toml                  (resumes if interrupted; results in runs/{name})
#   hwsearch export runs/{name} --pareto         (verified ONNX winners)
#   hwsearch dashboard runs/{name}
task = "{task}"
{model_line}
objectives = ["accuracy", "latency_ms"]
sampler = "nsga2"
n_trials = {INIT_TRIALS}
workers = 2             # Ray actors; 0 evaluates in this process
seed = 0
population_size = 8     # NSGA-II generation size
# output_dir defaults to runs/{name}

[devices.{device}]
table = "{table}"
# budget_ms = 1.0       # optional latency constraint on this device (ms)

[compress]
{compress}

# [space]               # default: the model family's keep_choices, precisions and channel_multiple
"""


def cmd_init(args: argparse.Namespace) -> int:
    from hwsearch.config import parse_config
    from hwsearch.families import BUILTIN_MODELS
    from hwsearch.tasks import BUILTIN_TASKS

    if not RUN_NAME.fullmatch(args.name):
        raise HwsearchError(f"init name {args.name!r} is not a safe run name; use letters, digits and . _ - (not starting with a dot), e.g. hwsearch init quick.")
    out = Path(f"{args.name}.toml")
    if out.exists() and not args.force:
        raise HwsearchError(f"{str(out)!r} already exists; pass --force to overwrite it, or choose another name.")
    task = _check_name(args.task, "--task", BUILTIN_TASKS, "--task digits")
    model = "" if args.model is None else _check_name(args.model, "--model", tuple(BUILTIN_MODELS), "--model resnet20")
    table = args.table or (f"{PREFIX}minilm-cpu-1t" if task == "minilm" else f"{PREFIX}cpu-1t")
    path = resolve_table(table, Path.cwd(), key="--table")
    text = config_text(args.name, task, model, table, _device_name(table, path))
    note = _coverage_note(task, model, table, path)
    parse_config(tomllib.loads(text), args.name, Path.cwd())  # what `hwsearch search` reads first: the file is ready
    out.write_text(text)
    if note:
        print(note, file=sys.stderr)
    print(f"Wrote {out} (runs into runs/{args.name}); run it with: hwsearch search {out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("tables", help="list the built-in latency tables (builtin:NAME): device, runtime, threads, coverage, validation")
    p.add_argument("--json", action="store_true", help="one JSON object per table instead of the table")
    p.set_defaults(func=cmd_tables)
    p = subparsers.add_parser("init", help="write NAME.toml, a ready search config (a few minutes; runs into runs/NAME)")
    p.add_argument("name", help="config and run name (letters, digits, ._-), e.g. quick")
    p.add_argument("--task", default="digits", help="digits, cifar10, minilm, or package.module:function (default: digits)")
    p.add_argument("--model", default=None, help="resnet20, mobilenetv2, vgg, all-minilm-l6-v2 or package.module:function (default: the task's)")
    p.add_argument("--table", default=None, help="latency table: builtin:NAME (see `hwsearch tables`) or a folder (default: builtin:cpu-1t, builtin:minilm-cpu-1t for minilm)")
    p.add_argument("--force", action="store_true", help="overwrite an existing NAME.toml")
    p.set_defaults(func=cmd_init)
