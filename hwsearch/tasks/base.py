"""The Task record: a model factory + data splits + a metric (+ baseline training settings).

A task is the one extension point for new problems: subclass :class:`Task` (or build an
:class:`ImageClassificationTask`) and point ``--task package.module:function`` at a function that
returns it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.tasks.models import BUILTIN_MODELS

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One data split: inputs ``x`` (N, C, H, W float32) and integer labels ``y``."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def head(self, n: int) -> "Split":
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class TrainConfig:
    """Baseline training hyper-parameters; part of the checkpoint cache key."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    seed: int = 0
    shift_px: int = 2  # random-translation augmentation, in pixels


def import_object(spec: str, what: str) -> Any:
    """Import ``package.module:attribute`` or raise an error saying the expected form."""
    if ":" not in spec:
        raise HwsearchError(f"{what} {spec!r} is not a built-in name and not of the form package.module:function; fix the name or give the import path.")
    mod_name, attr = spec.split(":", 1)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise HwsearchError(f"{what} {spec!r}: module {mod_name!r} cannot be imported ({exc}); put it on PYTHONPATH or install it.") from None
    if not hasattr(module, attr):
        raise HwsearchError(f"{what} {spec!r}: module {mod_name!r} has no attribute {attr!r}; check the function name.")
    return getattr(module, attr)


@dataclass
class Task:
    """Base task: subclasses provide data; models are built by name or import path."""

    name: str
    in_channels: int
    num_classes: int
    input_size: tuple[int, int]
    train_config: TrainConfig = field(default_factory=TrainConfig)
    models: Mapping[str, Callable[..., nn.Module]] = field(default_factory=lambda: dict(BUILTIN_MODELS))

    def split(self, name: str) -> Split:  # pragma: no cover - abstract
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this task's data for the baseline cache key."""
        return {"task": self.name, "in_channels": self.in_channels, "num_classes": self.num_classes}

    def build_model(self, spec: str, **options: Any) -> nn.Module:
        factory = self.models.get(spec) or (import_object(spec, "Model") if ":" in spec else None)
        if factory is None:
            raise HwsearchError(f"Model {spec!r} is unknown for task {self.name!r}; use one of {', '.join(sorted(self.models))} or package.module:function.")
        try:
            model = factory(in_channels=self.in_channels, num_classes=self.num_classes, **options)
        except TypeError as exc:
            raise HwsearchError(f"Model {spec!r} rejected its arguments ({exc}); a model factory takes in_channels=, num_classes= and its own options.") from None
        if not isinstance(model, nn.Module):
            raise HwsearchError(f"Model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module; return the model instance.")
        return model

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.in_channels, *self.input_size)

    @staticmethod
    def score(logits: np.ndarray, y: np.ndarray) -> float:
        """Top-1 accuracy in [0, 1]."""
        return float((np.asarray(logits).argmax(axis=1) == np.asarray(y)).mean())

    # The pipeline steps the search, export and latency commands call. The defaults are the
    # image-classification path (trained CNN baseline, dependency-group space, CNN kernel tables);
    # a task of another kind (e.g. hwsearch.tasks.minilm) overrides them.

    def input_shape(self) -> tuple[int, ...]:
        """The batch-1 input shape latency is measured and recorded at."""
        return tuple(self.example_input().shape)

    def latency_feed(self) -> dict[str, np.ndarray]:
        """The batch-1 ORT feed latency is measured with."""
        from hwsearch.onnx_io import INPUT_NAME

        return {INPUT_NAME: np.random.default_rng(0).standard_normal(self.input_shape()).astype(np.float32)}

    def load_baseline(self, model_spec: str, model_options: dict[str, Any] | None = None, cfg: TrainConfig | None = None, *,
                      retrain: bool = False, verbose: bool = True):
        """The baseline to compress (a :class:`hwsearch.tasks.train.Baseline`): trained and cached here."""
        from hwsearch.tasks.train import load_baseline

        return load_baseline(self, model_spec, model_options, cfg, retrain=retrain, verbose=verbose)

    def search_space(self, model: nn.Module, keep_choices: Any = None, precisions: Any = None, channel_multiple: int | None = None):
        """The :class:`hwsearch.space.SearchSpace` of ``model`` (None: the space's defaults, channel multiple 8)."""
        from hwsearch.space import DEFAULT_KEEP_CHOICES, SearchSpace
        from hwsearch.policy import PRECISIONS

        return SearchSpace.from_model(model, self.example_input(), keep_choices=keep_choices or DEFAULT_KEEP_CHOICES,
                                      precisions=precisions or PRECISIONS, channel_multiple=8 if channel_multiple is None else channel_multiple)

    def recovered_model(self, baseline: nn.Module, policy: Any, space: Any, opts: Any) -> nn.Module:
        """The compressed, recovered torch model a candidate's ONNX file is exported from."""
        from hwsearch.compress import recovered_model

        return recovered_model(self, baseline, policy, space, opts)

    def build_candidate(self, baseline: nn.Module, policy: Any, space: Any, out_path: Any, opts: Any, *, model: nn.Module | None = None):
        """Realise ``policy`` as an ONNX file scored in ONNX Runtime (a :class:`hwsearch.compress.CandidateResult`)."""
        from hwsearch.compress import build_candidate

        return build_candidate(self, baseline, policy, space, out_path, opts, model=model)

    def load_predictor(self, table_dir: Any, model: nn.Module, space: Any, strict: bool = False):
        """The latency predictor of ``model``'s policies from the table at ``table_dir``."""
        from hwsearch.latency.predict import load_predictor

        return load_predictor(table_dir, self, model, space, strict=strict)

    def latency_plan(self, model: nn.Module, space: Any, block: int) -> tuple[list, Any, dict]:
        """What ``hwsearch profile`` measures: (kernels, a function timing one kernel or None for the
        CNN single-kernel models, extra meta.json keys)."""
        from hwsearch.latency.graph import UnitGraph
        from hwsearch.latency.profile import enumerate_kernels

        return enumerate_kernels(UnitGraph.from_model(model, self.example_input(), space, block), space), None, {}

    def score_onnx(self, path: Any, split: str) -> float:
        """The task's score of an ONNX file on a split, computed in ONNX Runtime."""
        from hwsearch import onnx_io

        data = self.split(split)
        return self.score(onnx_io.run(onnx_io.session(path), data.x), data.y)

    def parity(self, path: Any, model: nn.Module, quantized: bool):
        """The exported file vs the torch model it came from (a :class:`hwsearch.export.Parity`)."""
        from hwsearch.export import check_parity

        return check_parity(path, model, self.split("val").x, quantized)
