"""A winner's recovery for the encoder: distillation toward the dense model on training sentences.

Each step draws a batch from one length bucket (sentences of similar length, so little padding),
deterministic in (seed, step); half of the sentences are cut to a random contiguous run of at
least half their words, so 2000 training sentences give many more distinct inputs (the student
overfits them less). The dense teacher runs on the same batch. Loss: ``1 - cosine`` of the
sentence embeddings, plus ``hidden_weight`` times the mean squared difference of every layer's
token states (the hidden size is never pruned, so the layers line up one to one).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

BUCKET_BATCHES = 4  # a length bucket holds this many batches of sentences
CROP = 0.5  # share of a batch's sentences cut to a random run of their words
HIDDEN_WEIGHT = 1.0


class EmbeddingDistillation:
    """See the module docstring."""

    def __init__(self, teacher: nn.Module, task: Any, batch_size: int, seed: int, crop: float = CROP, hidden_weight: float = HIDDEN_WEIGHT) -> None:
        self.task, self.teacher, self.batch_size, self.seed = task, teacher.eval(), batch_size, seed
        self.crop, self.hidden_weight = crop, hidden_weight
        self.sentences = list(task.sentences("train"))
        lengths = task.tokenizer(self.sentences)["attention_mask"].sum(1)
        order = np.argsort(lengths, kind="stable")
        size = max(batch_size, BUCKET_BATCHES * batch_size)
        self.buckets = [order[i : i + size] for i in range(0, len(order), size)]
        hidden = f" + {hidden_weight:g} x mean squared difference of every layer's token states" if hidden_weight else ""
        self.loss_name = f"1 - cosine(student embedding, dense teacher embedding){hidden}; training sentences, {crop:.0%} cut to a random run of their words"

    def _sentence(self, i: int, rng: np.random.Generator) -> str:
        words = self.sentences[i].split()
        if len(words) < 4 or rng.random() >= self.crop:
            return self.sentences[i]
        k = int(rng.integers(max(2, len(words) // 2), len(words) + 1))
        start = int(rng.integers(0, len(words) - k + 1))
        return " ".join(words[start : start + k])

    def batch(self, step: int) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        bucket = self.buckets[int(rng.integers(len(self.buckets)))]
        idx = rng.choice(bucket, size=min(self.batch_size, len(bucket)), replace=False)
        feed = {k: torch.from_numpy(v) for k, v in self.task.tokenizer([self._sentence(int(i), rng) for i in idx]).items()}
        with torch.no_grad():
            states, embedding = self.teacher.hidden_states(feed["input_ids"], feed["attention_mask"])
        return feed, states, embedding

    def loss(self, student: nn.Module, batch: tuple[dict[str, torch.Tensor], list[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        feed, states, target = batch
        mine, embedding = student.hidden_states(feed["input_ids"], feed["attention_mask"])
        loss = (1.0 - (embedding * target).sum(1)).mean()
        if self.hidden_weight:
            mask = feed["attention_mask"].unsqueeze(-1).to(embedding.dtype)
            count = mask.sum() * target.shape[-1]
            loss = loss + self.hidden_weight * sum(((a - b) ** 2 * mask).sum() / count for a, b in zip(mine, states, strict=True)) / len(states)
        return loss
