"""Helpers for the search tests: a small experiment config and a real latency table for it.

The table is measured on this machine (once per test session, a couple of seconds) for the tiny
resnet20 (widths 16/32/64) over keep choices 0.25/0.5/0.75/1.0 in fp32 and int8, so the search
tests predict latency with the real predictor.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def _tiny_table() -> Path:
    from hwsearch.families import get_family
    from hwsearch.families.cnn.enumerate import enumerate_kernels, kernel_timer
    from hwsearch.families.cnn.lowering import UnitGraph
    from hwsearch.latency.profile import run_profile
    from hwsearch.runtime.session import SessionSettings, detect_block
    from hwsearch.runtime.timing import MeasureSettings
    from hwsearch.tasks import get_task

    task = get_task("digits")
    family = get_family("cnn")
    model = family.build_model("resnet20", task, {"widths": [16, 32, 64]}).eval()  # timing needs the shapes, not the weights
    space = family.search_space(model, task, keep_choices=(0.25, 0.5, 0.75, 1.0), precisions=("fp32", "int8"))
    settings = SessionSettings(threads=1)
    block = detect_block(settings)
    graph = UnitGraph.from_model(model, task.example_input(), space, block)
    out = Path(tempfile.mkdtemp(prefix="hwtable-")) / "cpu-1t"
    run_profile(out, "cpu-1t", enumerate_kernels(graph, space), settings, block, ["digits/resnet20-tiny"], kernel_timer(block),
                MeasureSettings(warmup=2, min_runs=5, min_time_s=0.002), progress=False)
    return out


def make_table(path: Path) -> Path:
    """A real latency table for the tiny resnet20 search space, copied to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(_tiny_table(), path, dirs_exist_ok=True)
    return path


TINY_BASELINE = {"epochs": 4, "batch_size": 64, "lr": 0.05}  # = conftest.TINY_TRAIN, so the cached tiny_resnet is reused


def write_config(tmp_path: Path, name: str = "exp", **top) -> Path:
    """A small experiment TOML in ``tmp_path`` for the tiny resnet baseline and a test-double table."""
    table = make_table(tmp_path / "tables" / "cpu-1t")
    budget = top.pop("budget_ms", None)
    compress = top.pop("compress", {"finetune_steps": 0, "bn_recalib_batches": 1, "calib_samples": 32})
    space = top.pop("space", {"keep_choices": [0.25, 0.5, 0.75, 1.0], "precisions": ["fp32"]})  # fp32: no int8 calibration, quicker
    top = {"n_trials": 4, "workers": 0, "seed": 0, "population_size": 4, "output_dir": str(tmp_path / "runs" / name)} | top
    lines = [f"{k} = {_toml(v)}" for k, v in top.items()]
    lines += ["[model_options]", "widths = [16, 32, 64]", "[baseline]"] + [f"{k} = {_toml(v)}" for k, v in TINY_BASELINE.items()]
    lines += ["[devices.cpu-1t]", f"table = {_toml(str(table))}"] + ([f"budget_ms = {budget}"] if budget is not None else [])
    lines += ["[compress]"] + [f"{k} = {_toml(v)}" for k, v in compress.items()]
    lines += ["[space]"] + [f"{k} = {_toml(v)}" for k, v in space.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value) -> str:
    import json

    return "true" if value is True else "false" if value is False else json.dumps(value)
