"""Seeded baseline training with a checkpoint cache keyed by task, model and hyper-parameters.

The cache is shared by concurrent runs: a ``flock`` per checkpoint lets one process train it while
the others wait and then load it; checkpoints are written to a unique temporary name and renamed
into place, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwsearch.families.base import Baseline
from hwsearch.options import TrainConfig
from hwsearch.tasks.base import Split, Task


def cache_dir() -> Path:
    """``$HWSEARCH_CACHE`` if set, else ``~/.cache/hwsearch``."""
    return Path(os.environ.get("HWSEARCH_CACHE") or Path.home() / ".cache" / "hwsearch")


def shifted(x: torch.Tensor, max_px: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``max_px`` pixels (zero padding), one offset per batch."""
    if max_px <= 0:
        return x
    dx, dy = (int(v) for v in torch.randint(-max_px, max_px + 1, (2,), generator=gen))
    return torch.roll(F.pad(x, (max_px,) * 4), shifts=(dy, dx), dims=(2, 3))[..., max_px:-max_px, max_px:-max_px]


def mirrored(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 0.5."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def batches(split: Split, batch_size: int, gen: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(split), generator=gen) if gen is not None else torch.arange(len(split))
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        yield x[idx], y[idx]


@torch.no_grad()
def torch_logits(model: nn.Module, split: Split, batch_size: int = 256) -> np.ndarray:
    model.eval()
    return np.concatenate([model(xb).numpy() for xb, _ in batches(split, batch_size)])


def labeled_cross_entropy(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the rows with a label (a fidelity task's unlabeled inputs carry -1); 0 when none has one."""
    known = labels >= 0
    if bool(known.all()):
        return F.cross_entropy(out, labels)
    return F.cross_entropy(out[known], labels[known]) if bool(known.any()) else out.sum() * 0.0


def train_steps(model: nn.Module, task: Task, cfg: TrainConfig, steps: int, lr: float, teacher: nn.Module | None = None) -> nn.Module:
    """Train for ``steps`` SGD steps (cosine learning rate), in place; used for baselines and fine-tunes.

    With ``teacher``, the loss adds a distillation term toward the teacher's soft predictions.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    train = task.split("train")
    done = 0
    model.train()
    while done < steps:
        for xb, yb in batches(train, cfg.batch_size, gen):
            xb = shifted(xb, cfg.shift_px, gen)
            if cfg.hflip:
                xb = mirrored(xb, gen)
            out = model(xb)
            loss = labeled_cross_entropy(out, yb)
            if teacher is not None:
                with torch.no_grad():
                    soft = F.softmax(teacher(xb) / 2.0, dim=1)
                loss = loss + F.kl_div(F.log_softmax(out / 2.0, dim=1), soft, reduction="batchmean") * 4.0
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            if done >= steps:
                break
    return model.eval()


def _key(task: Task, model: nn.Module, model_spec: str, model_options: dict[str, Any], cfg: TrainConfig) -> str:
    """Cache key: task data, model name/options, its architecture (repr: layers, strides) and training."""
    train = {k: v for k, v in asdict(cfg).items() if v is not None}  # an unset field leaves earlier keys unchanged
    blob = json.dumps({"task": task.fingerprint(), "model": model_spec, "options": model_options, "arch": repr(model), "train": train}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_baseline(task: Task, model_spec: str, build: Callable[[], nn.Module], model_options: dict[str, Any] | None = None,
                  cfg: TrainConfig | None = None, *, retrain: bool = False, verbose: bool = True) -> Baseline:
    """Return the trained baseline for (task, model, options, cfg), training and caching it if needed.

    ``build`` makes the untrained model (called once, after seeding torch with ``cfg.seed``)."""
    options = dict(model_options or {})
    cfg = cfg or task.train_config
    torch.manual_seed(cfg.seed)
    model = build()
    key = _key(task, model, model_spec, options, cfg)
    path = cache_dir() / "baselines" / f"{task.name.replace(':', '_')}-{model_spec.replace(':', '_')}-{key}.pt"
    if path.is_file() and not retrain:
        return _cached(path, model, model_spec, options)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path.with_suffix(".lock")):  # two runs needing the same baseline: one trains, the other waits and loads it
        if path.is_file() and not retrain:
            return _cached(path, model, model_spec, options)
        return _train(task, model, model_spec, options, cfg, path, verbose)


def _cached(path: Path, model: nn.Module, model_spec: str, options: dict[str, Any]) -> Baseline:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return Baseline(model, model_spec, options, path, ckpt["test_accuracy"], ckpt["val_accuracy"])


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (released when the process dies, even by SIGKILL)."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _train(task: Task, model: nn.Module, model_spec: str, options: dict[str, Any], cfg: TrainConfig, path: Path, verbose: bool) -> Baseline:
    start = time.time()
    steps = cfg.steps if cfg.steps is not None else cfg.epochs * -(-len(task.split("train")) // cfg.batch_size)
    if verbose:
        what = f"{steps} steps" if cfg.steps is not None else f"{cfg.epochs} epochs ({steps} steps)"
        print(f"training baseline {task.name}/{model_spec} for {what} -> {path}", file=sys.stderr)
    train_steps(model, task, cfg, steps, cfg.lr)
    test_acc = task.score(torch_logits(model, task.split("test")), task.split("test").y)
    val_acc = task.score(torch_logits(model, task.split("val")), task.split("val").y)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")  # unique, renamed into place whole
    os.close(fd)
    try:
        torch.save({"state_dict": model.state_dict(), "test_accuracy": test_acc, "val_accuracy": val_acc, "train": asdict(cfg), "options": options}, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    if verbose:
        print(f"baseline {task.name}/{model_spec}: test accuracy {test_acc:.4f}, val {val_acc:.4f} ({time.time() - start:.0f}s)", file=sys.stderr)
    return Baseline(model, model_spec, options, path, test_acc, val_acc)
