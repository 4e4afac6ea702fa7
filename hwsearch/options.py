"""Option records with their defaults, in one place: baseline training and policy realisation.

:class:`TrainConfig` is what a CNN baseline is trained with (part of its checkpoint cache key);
:class:`CompressOptions` is how a policy is realised (importance criterion, recovery and int8
calibration budgets, the split it is scored on). The experiment config's ``[baseline]`` and
``[compress]`` tables override these fields; nothing else holds a default for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hwsearch.errors import HwsearchError

IMPORTANCES = ("l1", "bn_scale", "taylor")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TrainConfig:
    """Baseline training hyper-parameters; part of the checkpoint cache key."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    seed: int = 0
    shift_px: int = 2  # random-translation augmentation, in pixels
    steps: int | None = None  # SGD steps in all (a fine-tuned pretrained backbone); None: epochs x batches of the training split
    hflip: bool | None = None  # mirror each training image left-right with probability 0.5 (clothes, photos; not digits); None: off


@dataclass(frozen=True)
class CompressOptions:
    """How a policy is realised: importance criterion, recovery and calibration budgets, scoring split.

    The defaults are the search's (``[compress]`` in an experiment config overrides them).
    """

    importance: str = "l1"
    finetune_steps: int = 20
    finetune_lr: float | None = None  # None: the model family's default (CNN SGD 0.01, encoder AdamW 5e-5)
    distill: bool = True  # fine-tune toward the baseline's predictions as well as the labels
    bn_recalib_batches: int = 4
    calib_samples: int = 128  # training samples used to calibrate int8 activations
    eval_split: str = "val"

    def __post_init__(self) -> None:
        if self.importance not in IMPORTANCES:
            raise HwsearchError(f"Importance criterion {self.importance!r} is unknown; use one of {', '.join(IMPORTANCES)}.")
        for name in ("finetune_steps", "bn_recalib_batches", "calib_samples"):
            if int(getattr(self, name)) < 0:
                raise HwsearchError(f"{name}={getattr(self, name)!r} is negative; use 0 or more.")
        if self.eval_split not in SPLITS:
            raise HwsearchError(f"eval_split={self.eval_split!r} is unknown; use val or test.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The options a latency measurement realises policies with: no recovery (latency does not depend
# on weights), few calibration samples (int8 speed does not depend on the scales).
LATENCY_ONLY = CompressOptions(finetune_steps=0, bn_recalib_batches=0, calib_samples=32)
