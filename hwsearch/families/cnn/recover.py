"""Recovery after pruning: a short (distilled) fine-tune, then BatchNorm statistics re-estimated on the final weights."""

from __future__ import annotations

import torch
from torch import nn

from hwsearch.families.cnn.train import batches, labeled_cross_entropy, train_steps
from hwsearch.tasks.base import Task

RECOVERY_BN_BATCHES = 16  # BatchNorm statistics after a winner's recovery: at least this many training batches


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


class LogitDistillation:
    """A winner's recovery data and loss: training images with random shifts; KL divergence to the teacher's
    softened logits (temperature 2) plus cross-entropy on the labels (where there are labels)."""

    loss_name = "KL(student || teacher logits, T=2) x 4 + cross-entropy on labels"
    temperature = 2.0

    def __init__(self, teacher: nn.Module, task: Task, batch_size: int, seed: int) -> None:
        train = task.split("train")
        self.x, self.y = torch.from_numpy(train.x), torch.from_numpy(train.y)
        self.teacher, self.batch_size, self.seed, self.shift_px = teacher.eval(), batch_size, seed, task.train_config.shift_px

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        from hwsearch.families.cnn.train import shifted

        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randint(len(self.y), (self.batch_size,), generator=gen)
        return shifted(self.x[idx], self.shift_px, gen), self.y[idx]

    def loss(self, student: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        import torch.nn.functional as F

        xb, yb = batch
        with torch.no_grad():
            soft = F.softmax(self.teacher(xb) / self.temperature, dim=1)
        out = student(xb)
        kl = F.kl_div(F.log_softmax(out / self.temperature, dim=1), soft, reduction="batchmean")
        return kl * self.temperature**2 + labeled_cross_entropy(out, yb)
