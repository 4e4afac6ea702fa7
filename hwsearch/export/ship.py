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
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from hwsearch.compress.realise import compressed_model, realise
from hwsearch.compress.recover import RecoverySettings
from hwsearch.context import ensure_adaptation
from hwsearch.errors import HwsearchError
from hwsearch.export.index import load_index, winner_notes, write_index
from hwsearch.export.manifest import DenseReference, Manifest
from hwsearch.export.recover import recover_winner, say
from hwsearch.export.targets import Point, device_name, label, pick_targets
from hwsearch.export.targets import save as save_targets
from hwsearch.export.verify import Checked, Measured, check_winner, describe_winner, measure_files, split_scores
from hwsearch.export.winners import RunContext, Winner, load_run, select_winners, single_threaded
from hwsearch.policy import Policy
from hwsearch.search.labels import note_winners

DENSE_DIR = "dense"
ROUNDS = 3  # interleaved measuring rounds over every exported file


def build_winner(ctx: RunContext, winner: Winner, out_dir: Path):
    """Rebuild the winner's torch model and its ONNX file; returns (torch model, Candidate)."""
    policy = Policy.from_dict(winner.policy)

    def build():
        model = compressed_model(ctx.ctx, policy)
        return model, realise(ctx.ctx, policy, out_dir / "model.onnx", model=model)

    return single_threaded(build)


def build_dense(ctx: RunContext):
    """The dense fp32 model (the empty policy: nothing pruned, nothing quantized, no recovery) exported to ``export/dense/``."""
    out_dir = ctx.run_dir / "export" / DENSE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    return single_threaded(realise, ctx.ctx, Policy(), out_dir / "model.onnx", score=False)


def dense_reference(ctx: RunContext, result, measured: Measured) -> DenseReference:
    """The dense file scored on validation and test, predicted, and as measured in this export's pass; saved as ``export/dense/reference.json``."""
    path = Path(result.onnx_path)
    predicted, _ = ctx.predict(Winner(-1, {}))
    dense = DenseReference(split_scores(ctx, path), predicted, measured.value, result.params, result.macs, path.stat().st_size, f"{DENSE_DIR}/{path.name}")
    (path.parent / "reference.json").write_text(json.dumps(asdict(dense), indent=2) + "\n")
    return dense


def measure_dense(ctx: RunContext) -> DenseReference:
    """Export the dense fp32 model to ``export/dense/``, score, predict and re-measure it alone."""
    result = build_dense(ctx)
    return dense_reference(ctx, result, measure_files(ctx, {DENSE_DIR: Path(result.onnx_path)})[DENSE_DIR])


def check_built(ctx: RunContext, winner: Winner) -> Checked:
    """Rebuild one winner into ``export/<trial>/model.onnx`` and check it (latency is measured later, with the others)."""
    started = time.perf_counter()
    out_dir = ctx.run_dir / "export" / str(winner.trial)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, result = build_winner(ctx, winner, out_dir)
    return check_winner(ctx, winner, model, result, started)


def export_winner(ctx: RunContext, winner: Winner, dense: DenseReference | None = None) -> Manifest:
    """Rebuild, export, verify and measure one winner alone; writes ``export/<trial>/{model.onnx,manifest.json}``."""
    checked = check_built(ctx, winner)
    measured = measure_files(ctx, {winner.trial: checked.path if checked.runs else None})[winner.trial]
    return _save(ctx, describe_winner(ctx, checked, measured, dense))


def _save(ctx: RunContext, manifest: Manifest, started: float | None = None) -> Manifest:
    provenance = dict(manifest.provenance)
    if started is not None:
        provenance["export_seconds"] = round(time.perf_counter() - started, 3)
    manifest = replace(manifest, provenance=provenance)
    manifest.save(ctx.run_dir / "export" / str(manifest.trial) / "manifest.json")
    return manifest


class _QuantizerHints(logging.Filter):
    """ORT's quantizer logs a pre-processing hint on the root logger for every int8 export."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def export_run(run_dir: str | Path, trials: list[int] | None = None, pareto: bool = True, study_name: str | None = None, progress: bool = False,
               tolerance: float | None = None, targets: Sequence[float] | None = None, device: str | None = None,
               recovery: RecoverySettings | None = None, rounds: int = ROUNDS) -> list[Manifest]:
    """Export the Pareto front (``pareto=True``, from pareto.json) and/or the listed trial numbers of ``run_dir``.

    Each winner is rebuilt into ``run_dir/export/<trial>/`` (model.onnx, manifest.json) and checked;
    then every file and the dense reference (``export/dense/``) are measured in one interleaved pass
    of ``rounds`` rounds, so speedups compare figures taken side by side. ``targets`` (speedups over
    dense fp32, measured on ``device``; :mod:`hwsearch.export.targets`) exports the whole front and
    picks one point per target. ``recovery`` distils the chosen winners (the targets' picks, else
    every winner) from the dense teacher (:mod:`hwsearch.export.recover`), then measures again.
    ``export/index.json`` is rewritten over every exported winner (``tolerance``: the
    recommendation's score tolerance, default :data:`hwsearch.export.index.TOLERANCE`).

    Returns one manifest per winner exported now, flagged ones included (``manifest.ok`` is False,
    reasons in ``flags``); raises :class:`HwsearchError` only for problems a user must fix (no such
    run, no pareto.json, unknown trial or device). ``study_name`` (for ``trials``) defaults to the run's name.
    """
    root = logging.getLogger()
    if not any(isinstance(f, _QuantizerHints) for f in root.filters):
        root.addFilter(_QuantizerHints())
    ctx = load_run(run_dir, study_name)
    winners = select_winners(ctx, trials, pareto or bool(targets))  # user errors (no front, unknown trial or device) before any work
    target_device = device_name(ctx.devices, device) if targets else None
    for spec in ctx.config.devices:  # the tables checked (and adapted) on this machine before predicting
        ensure_adaptation(spec, progress, ctx.config.ray_address)
    dense_built = build_dense(ctx)
    checked = {}
    for i, w in enumerate(winners, 1):
        say(progress, f"export: rebuilding trial {w.trial} ({i} of {len(winners)})")
        checked[w.trial] = check_built(ctx, w)
    chosen, measured = set(checked), None
    if targets:
        chosen, measured = _pick(ctx, dense_built, checked, targets, target_device, rounds, progress)
    records: dict[int, dict] = {}
    if recovery is not None:
        todo = [checked[t] for t in sorted(chosen)]
        for i, c in enumerate(todo, 1):
            checked[c.winner.trial], records[c.winner.trial] = recover_winner(ctx, c, recovery, f"{i} of {len(todo)}", progress)
    if measured is None or records:  # the targets' pass already timed these very files unless recovery rewrote some
        say(progress, f"export: measuring {len(checked) + 1} files ({rounds} interleaved rounds)")
        measured = _measure_all(ctx, dense_built, checked, rounds)
    dense = dense_reference(ctx, dense_built, measured[DENSE_DIR])
    manifests = [_save(ctx, describe_winner(ctx, c, measured[t], dense, records.get(t)), c.started) for t, c in checked.items()]
    write_index(ctx.run_dir, **({} if tolerance is None else {"tolerance": tolerance}))
    _note_study(ctx)
    return manifests


def _measure_all(ctx: RunContext, dense_built, checked: dict[int, Checked], rounds: int) -> dict:
    """The dense file (first: the pass's anchor) and every winner's file that runs, in one interleaved pass."""
    return measure_files(ctx, {DENSE_DIR: Path(dense_built.onnx_path), **{t: (c.path if c.runs else None) for t, c in checked.items()}}, rounds)


def _pick(ctx: RunContext, dense_built, checked: dict[int, Checked], targets: Sequence[float], device: str, rounds: int,
          progress: bool) -> tuple[set[int], dict]:
    """Measure the front and the dense model side by side, pick a point per target among the files that passed their checks
    (saved to export/targets.json); returns the picked trials and the pass's measurements."""
    say(progress, f"export: measuring the front ({len(checked)} files) and the dense model for the targets ({rounds} interleaved rounds)")
    measured = _measure_all(ctx, dense_built, checked, rounds)
    dense_ms = measured[DENSE_DIR].value.get(device)
    if dense_ms is None:
        raise HwsearchError(f"Device {device!r} cannot be measured here ({'; '.join(measured[DENSE_DIR].notes) or 'no measurement'}), so speedup targets cannot be "
                            "picked on it; pass --device with a device this machine (or its Ray node) runs.")
    points = []
    for trial, c in checked.items():
        ms = measured[trial].value.get(device) if c.parity.ok and c.checker_error is None else None  # a flagged file is never picked
        points.append(Point(trial, c.scores.get("val"), round(dense_ms / ms, 4) if ms else None, ms))
    picks = pick_targets(points, targets, device, ctx.ctx.task.metric_name())
    save_targets(ctx.run_dir / "export", device, targets, picks, points, dense_ms)
    for p in picks:
        say(progress, f"target {label(p.target)}: " + (f"trial {p.trial} ({p.speedup:.2f}x measured, validation {p.score:.4f})" if p.trial is not None else p.reason))
    return {p.trial for p in picks if p.trial is not None}, measured


def _note_study(ctx: RunContext) -> None:
    """Each exported winner's note in the study, shown by optuna-dashboard (skipped when it is not installed)."""
    db = ctx.run_dir / "study.db"
    index = load_index(ctx.run_dir)
    if db.is_file() and index:
        note_winners(f"sqlite:///{db.resolve()}", ctx.study_name, winner_notes(index))
