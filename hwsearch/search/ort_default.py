"""The ``ort-default`` baseline: what a user gets from one line of ONNX Runtime, in the search's harness.

``hwsearch search CONFIG --baseline ort-default`` quantizes the dense fp32 export of the run's
baseline model with ORT's own whole-model defaults (:data:`RECIPES`: for the encoder
``quantize_dynamic`` per-channel and not, and static QDQ int8; for CNNs static QDQ int8 with int8
and with uint8 activations, S8S8 / U8S8), calibrated on the same samples the search's int8 uses.
Each file is scored as the search scores trials (the task's metric on the validation split; the
test split beside it), its latency predicted from each device's table where the table has its
kernels (as the hwsearch policy running the same kernels: all int8d, all int8 U8S8; S8S8 has no
table kernels and is only measured) and MEASURED with
the table's session settings and timing loop (:func:`hwsearch.runtime.timing.time_model`),
interleaved with the dense fp32 file in ``rounds`` rounds, each file keeping its fastest round.

Stored in ``runs/NAME/baselines/ort-default/``: ``ort-default.json`` (every record),
``pareto.json`` (one entry per recipe, the form the run summary reads), ``trials.csv``, ``dense.json``,
``config.json``, an empty ``study.db`` (so the summary reads it like a run) and ``models/*.onnx``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hwsearch import context
from hwsearch.config import ExperimentConfig
from hwsearch.errors import HwsearchError
from hwsearch.policy import Policy
from hwsearch.results import atomic_write

KIND = "ort-default"
RECIPES = {"encoder": ("ort-dynamic-per-channel", "ort-dynamic", "ort-static-s8s8"), "cnn": ("ort-static-s8s8", "ort-static-u8s8")}
# the hwsearch precision whose table kernels a recipe runs; S8S8 has none (the tables time U8S8 QLinearConv /
# QLinearMatMul, and ORT on a CPU without VNNI leaves part of an S8S8 model unfused), so it is measured only
PREDICT_AS = {"ort-dynamic-per-channel": "int8d", "ort-dynamic": "int8d", "ort-static-u8s8": "int8"}
ROUNDS = 5


@dataclass(frozen=True)
class RecipeRecord:
    """One ORT default (or the dense fp32 file, ``name == "dense"``) as measured in this run."""

    name: str
    call: str  # the ORT call that wrote it
    onnx_path: str
    accuracy: float | None  # the task's score on the validation split (as trials are scored)
    test_score: float | None
    size_bytes: int
    quantized_kernels: int  # integer conv/matmul kernels in ORT's optimised graph
    predicted_ms: dict[str, float | None] = field(default_factory=dict)  # per device; None: the table lacks its kernels
    predicted_as: str = ""  # the hwsearch policy whose kernels the prediction sums
    measured_ms: dict[str, float | None] = field(default_factory=dict)  # per device: fastest round of the table's statistic
    speedup: dict[str, float | None] = field(default_factory=dict)  # measured dense / measured this, per device
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"notes": list(self.notes)}


def recipes_for(family: str) -> tuple[str, ...]:
    if family not in RECIPES:
        raise HwsearchError(f"The ort-default baseline has no recipes for model family {family!r}; it covers {', '.join(RECIPES)}.")
    return RECIPES[family]


def build_models(ctx, out: Path, recipes: tuple[str, ...]) -> dict[str, tuple[str, Path]]:
    """The dense fp32 export and one file per recipe under ``out``: name -> (call, path)."""
    from hwsearch.runtime.quantize import ort_recipe

    out.mkdir(parents=True, exist_ok=True)
    dense = ctx.family.export(ctx.baseline.model, ctx.task, out / "dense.onnx")
    files = {"dense": ("torch.onnx.export (fp32)", dense)}
    calibration = ctx.task.calibration_feeds(ctx.options.calib_samples)
    for name in recipes:
        files[name] = (ort_recipe(dense, out / f"{name}.onnx", name, calibration), out / f"{name}.onnx")
    return files


def measure_interleaved(devices, paths: dict[str, Path], feed, rounds: int) -> tuple[dict[str, dict[str, float | None]], list[str]]:
    """Per file and device: the fastest of ``rounds`` rounds (files interleaved within each round) of
    the table's statistic, in ms (:func:`hwsearch.export.verify.interleaved`); devices measured elsewhere
    (Ray resources) or whose provider this machine lacks are None, with a note."""
    from hwsearch.export.verify import interleaved
    from hwsearch.export.winners import Device

    devs = [Device.from_spec(spec) for spec in devices]
    remote = [d.name for d in devs if d.ray_resources]
    value, _, file_notes, _ = interleaved([d for d in devs if not d.ray_resources], paths, feed, rounds, anchor="dense" if "dense" in paths else None)
    notes = [f"device {name!r}: not measured on this machine (Ray resources elsewhere)" for name in remote]
    notes += list(dict.fromkeys(n for per_file in file_notes.values() for n in per_file))
    out = {name: {d.name: (None if d.name in remote or value[name].get(d.name) is None else round(value[name][d.name], 4)) for d in devs} for name in paths}
    return out, notes


def _predicted(ctx, recipe: str) -> tuple[dict[str, float | None], str, list[str]]:
    if recipe != "dense" and recipe not in PREDICT_AS:
        return {name: None for name in ctx.predictors()}, "", ["not predicted: the tables have no kernels of this recipe (measured only)"]
    policy = Policy(default_precision=PREDICT_AS.get(recipe, "fp32"))
    out, notes = {}, []
    for name, predictor in ctx.predictors().items():
        try:
            out[name] = round(float(predictor.predict(policy).latency_ms), 4)
        except HwsearchError as exc:  # the table lacks the kernels (e.g. no int8d rows): no prediction, said why
            out[name] = None
            notes.append(f"device {name!r}: not predicted ({exc})")
    return out, policy.to_json(), notes


def _record(ctx, name: str, call: str, path: Path, measured: dict[str, dict[str, float | None]]) -> RecipeRecord:
    from hwsearch.compress.realise import score_onnx
    from hwsearch.runtime.session import count_quantized_kernels

    predicted, predicted_as, notes = _predicted(ctx, name)
    mine, dense = measured[name], measured["dense"]
    speedup = {d: (round(dense[d] / ms, 4) if ms and dense.get(d) else None) for d, ms in mine.items()}
    return RecipeRecord(name, call, str(path), score_onnx(ctx, path, "val"), score_onnx(ctx, path, "test"), path.stat().st_size,
                        count_quantized_kernels(path), predicted, predicted_as, dict(mine), speedup, tuple(notes))


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n"))


def _write_csv(path: Path, records: list[RecipeRecord]) -> None:
    import csv

    devices = sorted({d for r in records for d in r.measured_ms})
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["recipe", "accuracy", "test_score", "size_bytes", "quantized_kernels"] + [f"{d}_{k}" for d in devices for k in ("predicted_ms", "measured_ms", "speedup")])
        for r in records:
            out.writerow([r.name, r.accuracy, r.test_score, r.size_bytes, r.quantized_kernels]
                         + [v.get(d) for d in devices for v in (r.predicted_ms, r.measured_ms, r.speedup)])


def measure_defaults(cfg: ExperimentConfig, run_dir: Path, rounds: int = ROUNDS, progress: bool = True) -> tuple[list[RecipeRecord], int]:
    """Build, score, predict and measure every recipe of the run's model family; returns the records
    (dense first) and the dense model's parameter count."""
    ctx = context.from_config(cfg, verbose=progress)
    files = build_models(ctx, run_dir / "models", recipes_for(ctx.family.name))
    measured, notes = measure_interleaved(cfg.devices, {n: p for n, (_, p) in files.items()}, ctx.task.latency_feed(), rounds)
    records = [_record(ctx, name, call, path, measured) for name, (call, path) in files.items()]
    records = [replace(r, notes=r.notes + tuple(notes)) for r in records]
    from hwsearch.search.summary import write_dense

    write_dense(run_dir, ctx)
    return records, sum(p.numel() for p in ctx.baseline.model.parameters())


def run_ort_default(cfg: ExperimentConfig, progress: bool = True, rounds: int = ROUNDS):
    """Run the ``ort-default`` baseline into ``runs/NAME/baselines/ort-default`` (see the module docstring)."""
    from hwsearch.search.driver import SearchStats
    from hwsearch.search.rundir import check_tables, run_files
    from hwsearch.search.study import open_study

    start = time.perf_counter()
    cfg = context.resolve(cfg)
    check_tables(cfg)
    run_dir = Path(cfg.output_dir) / "baselines" / KIND
    with run_files(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        records, params = measure_defaults(cfg, run_dir, rounds, progress)
        recipes = [r for r in records if r.name != "dense"]
        bcfg = replace(cfg, n_trials=len(recipes))
        bcfg.save(run_dir / "config.json")
        open_study(bcfg, run_dir, f"{cfg.name}-{KIND}", None)
        _write_json(run_dir / f"{KIND}.json", {"kind": KIND, "rounds": rounds, "records": [r.to_dict() for r in records]})
        _write_csv(run_dir / "trials.csv", records)
        _write_json(run_dir / "pareto.json", [{"trial": None, "recipe": r.name, "accuracy": r.accuracy, "params": params,
                                               "latency_ms": {d: ms for d, ms in r.predicted_ms.items() if ms is not None},
                                               "measured_ms": r.measured_ms, "size_bytes": r.size_bytes} for r in recipes])
    wall = time.perf_counter() - start
    return SearchStats(str(run_dir), len(recipes), 0, len(recipes), len(recipes), 0, 0, wall, 0.0, wall, 0.0, 0.0, 1, 0, f"{cfg.name}-{KIND}")
