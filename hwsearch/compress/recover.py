"""Recover a chosen winner: distil its pruned model from the dense teacher, resumably.

The search scores candidates with a few recovery steps (or none), which ranks them; a winner that
ships deserves more. :func:`distil` runs ``steps`` optimizer steps of the model family's
distillation (:meth:`~hwsearch.families.ModelFamily.distillation`: the data and the loss, e.g.
KL to the teacher's logits plus label cross-entropy for CNNs, 1 - cosine to the teacher's
embeddings for the encoder), with a linear warm-up then cosine decay of the learning rate, then the
family's finishing pass (BatchNorm re-estimated for CNNs). Every ``checkpoint_s`` seconds the
student, optimizer and schedule are saved to ``checkpoint``; a killed recovery started again
with the same identity continues from the last checkpoint and sees the same batches it would have.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwsearch.errors import HwsearchError

WARMUP = 0.05  # share of the steps the learning rate ramps up over
LOSS_WINDOW = 50  # the final loss is the mean of this many last steps

Progress = Callable[[int, int, float, float], None]  # (step done, steps, recent loss, seconds so far)


@dataclass(frozen=True)
class RecoverySettings:
    """How a winner is recovered: steps, peak learning rate and batch (None: the model family's default)."""

    steps: int
    lr: float | None = None
    batch_size: int | None = None
    seed: int = 0
    checkpoint_s: float = 60.0  # a step checkpoint at most this often (and at the end)

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise HwsearchError(f"--recover-steps {self.steps!r} is not allowed; give a whole number of steps >= 1, e.g. 1000 (or leave it out to ship the search's weights).")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise HwsearchError(f"--recover-lr {self.lr!r} is not allowed; give a learning rate between 0 and 1, e.g. 1e-4 for the encoder or 0.01 for CNNs.")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise HwsearchError(f"--recover-batch {self.batch_size!r} is not allowed; give a batch size >= 1, e.g. 32.")

    def resolved(self, family: Any) -> RecoverySettings:
        """Defaults filled in from the model family (``recovery_lr``, ``recovery_batch``)."""
        return replace(self, lr=float(family.recovery_lr if self.lr is None else self.lr),
                       batch_size=int(family.recovery_batch if self.batch_size is None else self.batch_size))

    def identity(self) -> dict[str, Any]:
        """What makes two recoveries the same (a checkpoint or a finished recovery is reused only when it matches)."""
        return {k: v for k, v in asdict(self).items() if k != "checkpoint_s"}


@dataclass(frozen=True)
class RecoveryRun:
    """What one recovery did (plain data, recorded in the manifest)."""

    steps: int
    lr: float
    batch_size: int
    seconds: float  # training time, summed over resumed sessions
    loss_first: float  # mean loss of the first steps
    loss_last: float  # mean loss of the last steps
    loss: str  # what the loss is
    optimizer: str
    resumed_from_step: int  # 0: ran from the start

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _schedule(steps: int) -> Callable[[int], float]:
    warm = max(1, int(WARMUP * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return factor


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load(path: Path | None, identity: str) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint (e.g. cut by a full disk) is started over
        return None
    return state if state.get("identity") == identity else None


def distil(family: Any, task: Any, student: nn.Module, teacher: nn.Module, settings: RecoverySettings, options: Any,
           checkpoint: Path | None = None, identity: Mapping[str, Any] | None = None, progress: Progress | None = None) -> RecoveryRun:
    """Distil ``student`` (in place) from ``teacher`` for ``settings.steps`` steps, then the family's finishing pass.

    ``checkpoint``: where step checkpoints go (resumed from when its ``identity`` matches; removed
    when the recovery ends); ``identity``: what else must match for a resume (e.g. the policy);
    ``progress`` is called after every step."""
    settings = settings.resolved(family)
    torch.manual_seed(settings.seed)
    data = family.distillation(teacher, task, settings.batch_size, settings.seed)
    key = json.dumps({"settings": settings.identity(), "loss": data.loss_name, **dict(identity or {})}, sort_keys=True, default=str)
    opt = family.optimizer(student.parameters(), settings.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(settings.steps))
    state = _load(checkpoint, key)
    start, spent, losses = 0, 0.0, []
    if state is not None:
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, spent, losses = int(state["step"]), float(state["seconds"]), [float(v) for v in state["losses"]]
    began, saved = time.perf_counter(), time.perf_counter()

    def snapshot(step: int) -> dict[str, Any]:
        return {"identity": key, "step": step, "student": student.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "seconds": spent + time.perf_counter() - began, "losses": losses}

    student.train()
    for step in range(start, settings.steps):
        loss = data.loss(student, data.batch(step))
        if not torch.isfinite(loss):
            raise HwsearchError(f"Recovery diverged at step {step + 1} (loss {float(loss)}); lower --recover-lr (now {settings.lr}).")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if checkpoint is not None and time.perf_counter() - saved >= settings.checkpoint_s and step + 1 < settings.steps:
            _save(checkpoint, snapshot(step + 1))
            saved = time.perf_counter()
        if progress is not None:
            progress(step + 1, settings.steps, sum(losses[-LOSS_WINDOW:]) / len(losses[-LOSS_WINDOW:]), spent + time.perf_counter() - began)
    family.finish_recovery(student, task, options)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    window = min(LOSS_WINDOW, len(losses)) or 1
    return RecoveryRun(settings.steps, float(settings.lr), int(settings.batch_size), round(spent + time.perf_counter() - began, 2),
                       round(sum(losses[:window]) / window, 6) if losses else float("nan"), round(sum(losses[-window:]) / window, 6) if losses else float("nan"),
                       data.loss_name, type(opt).__name__, start)
