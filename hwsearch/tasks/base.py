"""The Task record: data + metric. One of the two extension points (a model family is the other).

A task says what the data is (seeded splits, batches fed to a model, int8 calibration samples,
the example input a model is traced with) and how outputs are judged (the score, what a
candidate is scored against, and how two outputs of the same input agree for parity). It knows
nothing of pruning, export or latency: those belong to a model family and to the generic
pipeline. Subclass :class:`Task` (the defaults are image classification: ``split(name)`` returns
images and integer labels) and point ``--task package.module:function`` at a function returning it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.options import SPLITS, TrainConfig

INPUT_NAME = "input"
SCORE_BATCH = 256  # inputs per ORT / torch call when scoring a split
CALIB_BATCH = 32  # inputs per int8 calibration batch


@dataclass(frozen=True)
class Split:
    """One data split: inputs ``x`` (N, C, H, W float32) and integer labels ``y``."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def head(self, n: int) -> Split:
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Agreement:
    """How closely two outputs of the same inputs agree (an exported file vs its torch model)."""

    ok: bool
    metric: str
    value: float | None
    threshold: float
    samples: int


@dataclass
class Task:
    """Base task (image classification): subclasses provide ``split``; the rest has working defaults."""

    name: str
    in_channels: int
    num_classes: int
    input_size: tuple[int, int]
    train_config: TrainConfig = field(default_factory=TrainConfig)
    default_model: str = "resnet20"
    families: tuple[str, ...] = ("cnn",)  # the model families whose models this task can score
    fp32_max_abs_diff: float = 1e-4  # parity of an fp32 file: largest output difference to torch
    min_top1_agreement: float = 0.99  # parity of a quantized file: share of equal predicted classes

    # --- data ---------------------------------------------------------------------------------
    def split(self, name: str) -> Split:  # pragma: no cover - abstract
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this task's data for the baseline cache key."""
        return {"task": self.name, "in_channels": self.in_channels, "num_classes": self.num_classes}

    def options(self) -> dict[str, Any]:
        """The task options this task was made with that differ from their defaults (a subclass's own
        fields), without paths (they belong to one machine): what rebuilds its models' shapes and
        inputs elsewhere, e.g. a latency table's reference models (``{"normalize": "tf"}``)."""
        base = {f.name for f in fields(Task)}
        out = {}
        for f in fields(self):
            if f.name in base or f.name.startswith("_") or f.name.endswith("_dir") or not f.init or f.default is MISSING:
                continue
            value = getattr(self, f.name)
            if isinstance(value, (bool, int, float, str)) and value != f.default:
                out[f.name] = value
        return out

    # --- what a deployed model needs to know (export manifests record it) ----------------------
    def metric_name(self) -> str:
        """The score's name (manifests call their scores ``test_<name>`` / ``validation_<name>``)."""
        return "accuracy"

    def class_names(self) -> list[str] | None:
        """The label of each output class in output order (None: the task has no class names)."""
        return None

    def preprocessing(self) -> dict[str, Any]:
        """How raw data becomes the model's input and how the splits are drawn (plain JSON data)."""
        return {"description": f"the model's input is task {self.name!r}'s split(name).x as given; this task records no preprocessing of raw data"}

    @property
    def input_names(self) -> tuple[str, ...]:
        return (INPUT_NAME,)

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Axes beyond the batch that vary between inputs (e.g. a sequence length)."""
        return {}

    def example_input(self, batch: int = 1) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """What a model is traced and exported with."""
        return torch.zeros(batch, self.in_channels, *self.input_size)

    def input_shape(self) -> tuple[int, ...]:
        """The batch-1 input shape latency is measured and recorded at."""
        return (1, self.in_channels, *self.input_size)

    def latency_feed(self) -> dict[str, np.ndarray]:
        """The batch-1 ORT feed latency is measured with."""
        return {INPUT_NAME: np.random.default_rng(0).standard_normal(self.input_shape()).astype(np.float32)}

    def feeds(self, split: str) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
        """A split's inputs as ORT feeds (batches), and the order that restores the split's order (None: already in order)."""
        x = self.split(split).x
        return [{INPUT_NAME: x[i : i + SCORE_BATCH]} for i in range(0, len(x), SCORE_BATCH)], None

    def calibration_feeds(self, samples: int) -> list[dict[str, np.ndarray]]:
        """The int8 calibration batches: the first ``samples`` training inputs."""
        train = self.split("train").x
        x = train[: max(1, min(samples, len(train)))]
        return [{INPUT_NAME: x[i : i + CALIB_BATCH]} for i in range(0, len(x), CALIB_BATCH)]

    # --- metric -------------------------------------------------------------------------------
    def targets(self, split: str, baseline: nn.Module) -> np.ndarray:
        """What a candidate's outputs on ``split`` are scored against: the labels (a fidelity task
        uses the dense ``baseline``'s outputs instead)."""
        return self.split(split).y

    @staticmethod
    def score(outputs: np.ndarray, targets: np.ndarray) -> float:
        """Top-1 accuracy in [0, 1]."""
        return float((np.asarray(outputs).argmax(axis=1) == np.asarray(targets)).mean())

    def parity_rule(self, quantized: bool) -> tuple[str, float]:
        """How an exported file's outputs must agree with its torch model's: (metric, threshold).
        fp32: max abs output difference <= 1e-4; int8/fp16: top-1 agreement >= 99%."""
        return ("top1_agreement", self.min_top1_agreement) if quantized else ("max_abs_diff", self.fp32_max_abs_diff)

    def parity_value(self, got: np.ndarray, ref: np.ndarray, quantized: bool) -> float:
        """The :meth:`parity_rule` metric of ``got`` against ``ref``."""
        return float((got.argmax(1) == ref.argmax(1)).mean()) if quantized else float(np.abs(got - ref).max())

    def agreement(self, got: np.ndarray, ref: np.ndarray, quantized: bool) -> Agreement:
        """``got`` vs ``ref`` judged by :meth:`parity_rule` (``max_abs_diff`` must stay at or below its threshold, the others reach it)."""
        if got.shape != ref.shape:
            raise ValueError(f"output shape {got.shape} differs from torch's {ref.shape}")
        metric, threshold = self.parity_rule(quantized)
        value = self.parity_value(got, ref, quantized)
        ok = bool(np.isfinite(value)) and (value <= threshold if metric == "max_abs_diff" else value >= threshold)
        return Agreement(ok, metric, value, threshold, len(got))


def check_split(name: str) -> str:
    if name not in SPLITS:
        raise HwsearchError(f"Split {name!r} is unknown; use train, val or test.")
    return name


@torch.no_grad()
def torch_outputs(model: nn.Module, feeds: Sequence[dict[str, np.ndarray]], order: np.ndarray | None = None) -> np.ndarray:
    """``model``'s outputs for ORT-style feeds (each feed's arrays passed positionally), in split order."""
    model.eval()
    out = np.concatenate([model(*(torch.from_numpy(v) for v in feed.values())).numpy() for feed in feeds])
    return out if order is None else out[order]
