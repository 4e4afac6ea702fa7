"""Ship winners: rebuild each from the base model and its stored policy, export, verify, measure, index.

For every chosen trial of ``runs/NAME`` this writes ``runs/NAME/export/<trial>/model.onnx`` and
``manifest.json``; the dense fp32 model is exported and measured the same way into
``export/dense/`` (what scores and speedups are compared with), and ``export/index.json`` ranks
every exported winner with a recommended pick per device (:mod:`hwsearch.export.index`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

from hwsearch.compress.realise import compressed_model, realise
from hwsearch.context import ensure_adaptation
from hwsearch.export.index import load_index, winner_notes, write_index
from hwsearch.export.manifest import DenseReference, Manifest
from hwsearch.export.verify import measure_devices, split_scores, verify_winner
from hwsearch.export.winners import RunContext, Winner, load_run, select_winners
from hwsearch.policy import Policy
from hwsearch.search.labels import note_winners

REBUILD_THREADS = 1  # torch threads of the search's workers (hwsearch.search.evaluate.Evaluator)
DENSE_DIR = "dense"


def _single_threaded(fn, *args, **kwargs):
    """``fn`` with torch on the search workers' thread count, so a fine-tune repeats the search's arithmetic."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(REBUILD_THREADS)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def build_winner(ctx: RunContext, winner: Winner, out_dir: Path):
    """Rebuild the winner's torch model and its ONNX file; returns (torch model, Candidate)."""
    policy = Policy.from_dict(winner.policy)

    def build():
        model = compressed_model(ctx.ctx, policy)
        return model, realise(ctx.ctx, policy, out_dir / "model.onnx", model=model)

    return _single_threaded(build)


def measure_dense(ctx: RunContext) -> DenseReference:
    """Export the dense fp32 model (the empty policy: nothing pruned, nothing quantized, no recovery) to ``export/dense/``,
    score it on validation and test, predict and re-measure it per device; saved as ``export/dense/reference.json``."""
    out_dir = ctx.run_dir / "export" / DENSE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    result = _single_threaded(realise, ctx.ctx, Policy(), out_dir / "model.onnx", score=False)
    path = Path(result.onnx_path)
    measured, _, _ = measure_devices(ctx.devices, path, ctx.ctx.task.latency_feed(), ctx.config.ray_address)
    predicted, _ = ctx.predict(Winner(-1, {}))
    dense = DenseReference(split_scores(ctx, path), predicted, measured,
                           result.params, result.macs, path.stat().st_size, f"{DENSE_DIR}/{path.name}")
    (out_dir / "reference.json").write_text(json.dumps(asdict(dense), indent=2) + "\n")
    return dense


def export_winner(ctx: RunContext, winner: Winner, dense: DenseReference | None = None) -> Manifest:
    """Rebuild, export, verify and measure one winner; writes ``export/<trial>/{model.onnx,manifest.json}``."""
    started = time.perf_counter()
    out_dir = ctx.run_dir / "export" / str(winner.trial)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, result = build_winner(ctx, winner, out_dir)
    manifest = verify_winner(ctx, winner, model, result, started, dense)
    provenance = manifest.provenance | {"export_seconds": round(time.perf_counter() - started, 3)}
    manifest = replace(manifest, provenance=provenance)
    manifest.save(out_dir / "manifest.json")
    return manifest


class _QuantizerHints(logging.Filter):
    """ORT's quantizer logs a pre-processing hint on the root logger for every int8 export."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def export_run(run_dir: str | Path, trials: list[int] | None = None, pareto: bool = True, study_name: str | None = None, progress: bool = False,
               tolerance: float | None = None) -> list[Manifest]:
    """Export the Pareto front (``pareto=True``, from pareto.json) and/or the listed trial numbers of ``run_dir``.

    Each winner is written to ``run_dir/export/<trial>/`` (model.onnx, manifest.json), the dense
    reference to ``export/dense/``, and ``export/index.json`` is rewritten over every exported
    winner (``tolerance``: the recommendation's score tolerance, default
    :data:`hwsearch.export.index.TOLERANCE`). Returns one manifest per winner exported now,
    flagged ones included (``manifest.ok`` is False, reasons in ``flags``); raises
    :class:`HwsearchError` only for problems a user must fix (no such run, no pareto.json, unknown
    trial). ``study_name`` (for ``trials``) defaults to the run's name.
    """
    root = logging.getLogger()
    if not any(isinstance(f, _QuantizerHints) for f in root.filters):
        root.addFilter(_QuantizerHints())
    ctx = load_run(run_dir, study_name)
    winners = select_winners(ctx, trials, pareto)  # user errors (no front, unknown trial) before any work
    for spec in ctx.config.devices:  # the tables checked (and adapted) on this machine before predicting
        ensure_adaptation(spec, progress, ctx.config.ray_address)
    dense = measure_dense(ctx)
    manifests = [export_winner(ctx, w, dense) for w in winners]
    write_index(ctx.run_dir, **({} if tolerance is None else {"tolerance": tolerance}))
    _note_study(ctx)
    return manifests


def _note_study(ctx: RunContext) -> None:
    """Each exported winner's note in the study, shown by optuna-dashboard (skipped when it is not installed)."""
    db = ctx.run_dir / "study.db"
    index = load_index(ctx.run_dir)
    if db.is_file() and index:
        note_winners(f"sqlite:///{db.resolve()}", ctx.study_name, winner_notes(index))
