"""A test double for the latency predictor (hwsearch.latency.predict.load_predictor), used until the
real latency package lands. Latency grows with kept channels and shrinks with int8 layers; it is
not a measurement. Selected with HWSEARCH_PREDICTOR=tests.test_search_double:load_predictor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    coverage: float
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class DoublePredictor:
    device: str
    space: object

    def predict(self, policy) -> Prediction:
        kept = self.space.keep_channels(policy)
        frac = sum(kept[g.name] / g.channels for g in self.space.groups) / len(self.space.groups)
        int8 = sum(policy.precision_for(layer) == "int8" for layer in self.space.layers) / len(self.space.layers)
        return Prediction(0.05 + 1.0 * frac * (1.0 - 0.5 * int8), 1.0)


def load_predictor(table_dir, task, model, space, strict=False) -> DoublePredictor:
    return DoublePredictor(Path(table_dir).name, space)


def make_table(path: Path) -> Path:
    """A directory that passes the config's table check (the double ignores its contents)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "table.csv").write_text("op\n")
    (path / "meta.json").write_text("{}\n")
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


def use_double(monkeypatch) -> None:
    """Point the search at this double (env vars reach subprocesses and Ray workers too)."""
    import os

    repo = str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("HWSEARCH_PREDICTOR", "tests.test_search_double:load_predictor")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
