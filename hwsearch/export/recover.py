"""Recover a chosen winner before it ships (``hwsearch export RUN --recover-steps N``).

The winner's pruned model (rebuilt as the search built it) is distilled from the run's dense
teacher on the task's train split (:func:`hwsearch.compress.recover.distil`), re-exported and
re-quantized with the winner's own recipe (int8 calibration runs on the recovered weights), and
checked like any export. It ships only when its validation score is at least the unrecovered
file's; otherwise the unrecovered file stays and the manifest's ``recovery`` group says so.

Files in ``export/<trial>/``: ``recovery.ckpt.pt`` (step checkpoint while training, removed at
the end), ``recovered.pt`` (the recovered PyTorch weights) and ``recovery.json`` (what they are).
An export started again with the same settings reuses a finished winner's weights and resumes an
unfinished one from its checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hwsearch.compress.realise import compressed_model, pruned_anything, realise
from hwsearch.compress.recover import RecoveryRun, RecoverySettings, distil
from hwsearch.export.manifest import score_key
from hwsearch.export.verify import Checked, check_winner, split_scores
from hwsearch.export.winners import RunContext, single_threaded
from hwsearch.policy import Policy

CHECKPOINT = "recovery.ckpt.pt"
WEIGHTS = "recovered.pt"
RECORD = "recovery.json"
PROGRESS_EVERY_S = 10.0


def say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _reporter(trial: int, position: str, progress: bool):
    last = [0.0]

    def report(step: int, steps: int, loss: float, seconds: float) -> None:
        if time.perf_counter() - last[0] < PROGRESS_EVERY_S and step < steps:
            return
        last[0] = time.perf_counter()
        eta = seconds / max(step, 1) * (steps - step)
        say(progress, f"export: recovering trial {trial} ({position}): step {step}/{steps}, loss {loss:.4f}, {_clock(seconds)} elapsed, ETA {_clock(eta)}")

    return report


def identity(ctx: RunContext, policy: Policy) -> dict[str, Any]:
    """What a recovery's result depends on besides its settings: the policy, the starting weights and the teacher."""
    base = ctx.ctx.baseline
    return {"policy": policy.to_json(), "task": ctx.ctx.task.fingerprint(), "model": base.model_spec, "model_options": dict(base.model_options),
            "checkpoint": Path(str(base.checkpoint)).name, "compress": ctx.ctx.options.to_dict()}


def _finished(out_dir: Path, key: dict[str, Any], settings: RecoverySettings) -> RecoveryRun | None:
    """A finished recovery of the same identity and settings (its weights present), else None."""
    try:
        record = json.loads((out_dir / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("identity") != key or record.get("settings") != settings.identity() or not (out_dir / WEIGHTS).is_file():
        return None
    return RecoveryRun(**record["run"])


def _train(ctx: RunContext, student, key: dict[str, Any], settings: RecoverySettings, out_dir: Path, report) -> RecoveryRun:
    import torch

    run = distil(ctx.ctx.family, ctx.ctx.task, student, ctx.ctx.baseline.model, settings, ctx.ctx.options, out_dir / CHECKPOINT, key, report)
    tmp = out_dir / (WEIGHTS + ".tmp")
    torch.save(student.state_dict(), tmp)
    os.replace(tmp, out_dir / WEIGHTS)
    (out_dir / RECORD).write_text(json.dumps({"identity": key, "settings": settings.identity(), "run": run.to_dict()}, indent=2) + "\n")
    return run


def recover_winner(ctx: RunContext, checked: Checked, settings: RecoverySettings, position: str = "1 of 1", progress: bool = False) -> tuple[Checked, dict[str, Any]]:
    """Recover one checked winner (its unrecovered file in ``checked``); returns the file that ships, checked, and the manifest's ``recovery`` group."""
    import torch

    winner = checked.winner
    out_dir = checked.path.parent
    policy = Policy.from_dict(winner.policy)
    settings = settings.resolved(ctx.ctx.family)
    if not pruned_anything(ctx.ctx.space, policy):  # its fp32 weights are the teacher's: distilling them cannot undo quantization error
        say(progress, f"export: trial {winner.trial} ({position}): nothing pruned, nothing to recover; shipped as built")
        return checked, _record(ctx, checked.scores, checked.scores, None, False, "kept unrecovered: the policy prunes nothing, so its weights are "
                                "the dense model's and distillation (in fp32) has nothing to recover", False)
    key = identity(ctx, policy)
    student = single_threaded(compressed_model, ctx.ctx, policy)  # the search's weights: where recovery starts
    run = _finished(out_dir, key, settings)
    if run is not None and run.loss != ctx.ctx.family.distillation(ctx.ctx.baseline.model, ctx.ctx.task, settings.batch_size, settings.seed).loss_name:
        run = None  # recovered with another loss (an older hwsearch): recover again
    reused = run is not None
    if reused:
        student.load_state_dict(torch.load(out_dir / WEIGHTS, map_location="cpu", weights_only=True))
        say(progress, f"export: trial {winner.trial} ({position}): reusing its finished recovery ({out_dir / WEIGHTS})")
    else:
        run = _train(ctx, student, key, settings, out_dir, _reporter(winner.trial, position, progress))
    tmp = out_dir / "model.recovered.onnx"
    result = single_threaded(realise, ctx.ctx, policy, tmp, model=student.eval())
    after = split_scores(ctx, tmp, result.accuracy)
    before = checked.scores
    better = after.get("val") is not None and (before.get("val") is None or after["val"] >= before["val"])
    if better:
        os.replace(tmp, checked.path)
        shipped = check_winner(ctx, winner, student, replace(result, onnx_path=str(checked.path)), checked.started)
        reason = "recovered: its validation score is at least the unrecovered file's"
    else:
        tmp.unlink(missing_ok=True)
        shipped = checked
        reason = (f"kept unrecovered: recovery lowered the validation score ({before.get('val'):.4f} -> {after.get('val'):.4f}); "
                  f"try other --recover-lr / --recover-steps")
    say(progress, f"export: trial {winner.trial} ({position}): validation {before.get('val')} -> {after.get('val')}: {reason}")
    return shipped, _record(ctx, before, after, run, better, reason, reused)


def _record(ctx: RunContext, before: dict, after: dict, run: RecoveryRun | None, better: bool, reason: str, reused: bool) -> dict[str, Any]:
    """The manifest's ``recovery`` group (``run`` None: no recovery ran)."""
    metric = ctx.ctx.task.metric_name()
    base = ctx.ctx.baseline
    ran = run.to_dict() if run is not None else {"steps": 0}
    return {"kept": "recovered" if better else "unrecovered", "reason": reason,
            "before": {score_key(s, metric): before.get(s) for s in ("test", "val")}, "after": {score_key(s, metric): after.get(s) for s in ("test", "val")},
            **ran, "teacher": {"model": base.model_spec, "checkpoint": Path(str(base.checkpoint)).name, "what": "the run's dense fp32 baseline (the model the search compressed)"},
            "data": "the task's train split", "weights": WEIGHTS if better else None, "reused_finished_recovery": reused,
            "schedule": "linear warm-up over 5% of the steps, then cosine decay to 0"}
