"""Recovery after pruning: a short (distilled) fine-tune, then BatchNorm statistics re-estimated on the final weights."""

from __future__ import annotations

import torch
from torch import nn

from hwsearch.families.cnn.train import batches, train_steps
from hwsearch.tasks.base import Task


@torch.no_grad()
def recalibrate_bn(model: nn.Module, task: Task, n_batches: int, batch_size: int = 64) -> nn.Module:
    """Re-estimate BatchNorm running statistics on ``n_batches`` training batches (in place)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if n_batches <= 0 or not bns:
        return model
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the recalibration batches
    model.train()
    gen = torch.Generator().manual_seed(0)
    for i, (xb, _) in enumerate(batches(task.split("train"), batch_size, gen)):
        if i >= n_batches:
            break
        model(xb)
    return model.eval()


def finetune(model: nn.Module, task: Task, steps: int, lr: float = 0.01, teacher: nn.Module | None = None) -> nn.Module:
    """Fine-tune for ``steps`` steps (distilling from ``teacher`` when given), in place."""
    if steps <= 0:
        return model
    return train_steps(model, task, task.train_config, steps, lr, teacher=teacher)
