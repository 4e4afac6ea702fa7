"""A winner's recovery for the encoder: distillation toward the dense model's sentence embeddings.

The teacher's embedding of every training sentence is computed once; each step draws a batch from
one length bucket (sentences of similar length, so little padding), deterministic in (seed, step).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

BUCKET_BATCHES = 4  # a length bucket holds this many batches of sentences


class EmbeddingDistillation:
    """Loss ``1 - cosine(student, teacher)`` on unit-norm sentence embeddings of training sentences."""

    loss_name = "1 - cosine(student embedding, dense teacher embedding), training sentences"

    def __init__(self, teacher: nn.Module, task: Any, batch_size: int, seed: int) -> None:
        self.task, self.batch_size, self.seed = task, batch_size, seed
        self.sentences = list(task.sentences("train"))
        self.targets = torch.from_numpy(task.embed_torch(teacher, self.sentences))
        lengths = task.tokenizer(self.sentences)["attention_mask"].sum(1)
        order = np.argsort(lengths, kind="stable")
        size = max(batch_size, BUCKET_BATCHES * batch_size)
        self.buckets = [order[i : i + size] for i in range(0, len(order), size)]

    def batch(self, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        bucket = self.buckets[int(rng.integers(len(self.buckets)))]
        idx = rng.choice(bucket, size=min(self.batch_size, len(bucket)), replace=False)
        feed = self.task.tokenizer([self.sentences[i] for i in idx])
        return {k: torch.from_numpy(v) for k, v in feed.items()}, self.targets[idx]

    def loss(self, student: nn.Module, batch: tuple[dict[str, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        feed, target = batch
        return (1.0 - (student(feed["input_ids"], feed["attention_mask"]) * target).sum(1)).mean()
