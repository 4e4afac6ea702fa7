"""The ModelFamily extension point: the mechanics of one kind of model.

A family owns everything that depends on what the model *is*: which model names it builds and how
a baseline is obtained (trained and cached, or pretrained), the analysis that turns a model into a
:class:`~hwsearch.space.SearchSpace` (coupled channel groups, precision layers), the mechanics
that cut channels and recover accuracy afterwards, which ONNX nodes each precision layer names,
and the latency *lowering*: policy → the kernels the device really runs, the kernels a profile must
measure, the calibration class of each kernel and the neighbour rule for a kernel the table lacks.
Everything generic (export, quantize, score, predict, profile, calibrate, validate) lives above and
calls these methods; a :class:`~hwsearch.tasks.Task` supplies the data and the metric.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.options import CompressOptions, TrainConfig
from hwsearch.policy import Policy
from hwsearch.runtime.onnx_export import export
from hwsearch.space import SearchSpace


@dataclass(frozen=True)
class Baseline:
    """The model a search compresses: the module plus where it came from and how good it is."""

    model: nn.Module
    model_spec: str
    model_options: dict[str, Any]
    checkpoint: Path
    test_accuracy: float  # the task's score on its test split (1.0 for a fidelity task's reference)
    val_accuracy: float


class Lowering(Protocol):
    """A model's policies lowered to device kernels (plain tuples, :meth:`hwsearch.tables.kernels.Kernel.fields` order)."""

    fixed_us: Mapping[tuple, float]  # kernels whose time is known without the table (e.g. a zero-time transition)

    def kernels(self, policy: Policy) -> list[tuple]: ...  # noqa: E704 - protocol stubs

    def fingerprint(self) -> str: ...  # noqa: E704 - identifies the architecture for per-model calibration

    def kernel_class(self, kernel: tuple) -> str: ...  # noqa: E704 - calibration class

    def neighbours_key(self, kernel: tuple) -> Hashable: ...  # noqa: E704 - kernels a missing one is interpolated from

    def work(self, kernel: tuple) -> float: ...  # noqa: E704 - the size measure interpolation is linear in


KernelTimer = Callable[[Any, Any, Any], Any]  # (Kernel, SessionSettings, MeasureSettings) -> Timing


class Distillation(Protocol):
    """One recovery's data and loss (:meth:`ModelFamily.distillation`): what a student learns from the dense teacher.

    ``batch(step)`` depends only on the recovery's seed and ``step``, so a recovery resumed from a
    checkpoint sees the batches it would have seen; ``loss`` is the scalar the optimizer minimises."""

    loss_name: str  # how the loss reads in a manifest, e.g. "1 - cosine(student, teacher embedding)"

    def batch(self, step: int) -> Any: ...  # noqa: E704 - protocol stubs

    def loss(self, student: nn.Module, batch: Any) -> Any: ...  # noqa: E704 - a 0-d torch tensor


class ModelFamily(ABC):
    """One kind of model (see the module docstring). Subclasses set ``name`` and the defaults."""

    name: str = ""
    default_channel_multiple: int = 8
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")  # what its layers can run in
    default_precisions: tuple[str, ...] = ("fp32", "int8")  # what a search space offers unless told
    default_finetune_lr: float = 0.01  # the search's short recovery (CompressOptions.finetune_lr None)
    recovery_lr: float = 0.01  # an exported winner's recovery (hwsearch export --recover-steps): peak learning rate
    recovery_batch: int = 64  # and batch size

    @abstractmethod
    def models(self) -> tuple[str, ...]:
        """The built-in model names this family builds."""

    @abstractmethod
    def build_model(self, spec: str, task: Any, options: Mapping[str, Any]) -> nn.Module:
        """An untrained (or pretrained) model by name or import path."""

    @abstractmethod
    def load_baseline(self, task: Any, spec: str, options: Mapping[str, Any], train_config: TrainConfig, *,
                      retrain: bool = False, verbose: bool = True) -> Baseline:
        """The baseline to compress: trained and cached, or pretrained."""

    @abstractmethod
    def search_space(self, model: nn.Module, task: Any, keep_choices: Sequence[float] | None = None,
                     precisions: Sequence[str] | None = None, channel_multiple: int | None = None) -> SearchSpace:
        """Analysis: the model's channel groups and precision layers (``None``: the family's defaults)."""

    @abstractmethod
    def prune(self, model: nn.Module, policy: Policy, space: SearchSpace, task: Any, options: CompressOptions) -> nn.Module:
        """A copy of ``model`` with the channels ``policy`` drops physically removed (the input is never mutated)."""

    @abstractmethod
    def recover(self, model: nn.Module, teacher: nn.Module, task: Any, options: CompressOptions) -> nn.Module:
        """Recovery after pruning (in place): BN recalibration, distilled fine-tune."""

    def finetune_lr(self, options: CompressOptions) -> float:
        """The search's fine-tune learning rate: the config's ``compress.finetune_lr``, else this family's default."""
        return self.default_finetune_lr if options.finetune_lr is None else float(options.finetune_lr)

    def distillation(self, teacher: nn.Module, task: Any, batch_size: int, seed: int) -> Distillation:
        """The data and loss a pruned model is distilled from ``teacher`` with (``hwsearch export --recover-steps``)."""
        raise HwsearchError(f"The {self.name} model family cannot recover exported winners: it has no distillation; implement ModelFamily.distillation, optimizer and finish_recovery.")

    def optimizer(self, params: Any, lr: float) -> Any:
        """The optimizer of a winner's recovery (AdamW unless a family says otherwise)."""
        import torch

        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    def finish_recovery(self, model: nn.Module, task: Any, options: CompressOptions) -> nn.Module:
        """After a winner's distillation (in place): e.g. BatchNorm statistics re-estimated on the final weights."""
        return model.eval()

    @abstractmethod
    def precision_nodes(self, policy: Policy, space: SearchSpace) -> dict[str, str]:
        """ONNX node name -> precision, for every node a precision layer covers."""

    @abstractmethod
    def count_macs(self, model: nn.Module, task: Any) -> int:
        """Multiply-accumulates of one batch-1 forward pass at the task's input size."""

    @abstractmethod
    def lowering(self, model: nn.Module, task: Any, space: SearchSpace, table: Any) -> Lowering:
        """The lowering of ``model``'s policies for a device table (checks the table fits the model)."""

    @abstractmethod
    def profile_plan(self, model: nn.Module, task: Any, space: SearchSpace, block: int) -> tuple[list, KernelTimer, dict[str, Any]]:
        """What ``hwsearch profile`` measures: every kernel the space can produce, how to time one, extra meta.json keys."""

    def export(self, model: nn.Module, task: Any, path: Path) -> Path:
        """fp32 ONNX of ``model`` with nodes named after its modules (batch axis, plus the task's dynamic axes)."""
        return export(model, task.example_input(), path, input_names=task.input_names, dynamic_axes=task.dynamic_axes or None)

    def check_precisions(self, precisions: Sequence[str]) -> tuple[str, ...]:
        bad = [p for p in precisions if p not in self.precisions]
        if bad:
            raise HwsearchError(f"Precision {bad[0]!r} is not offered by the {self.name} model family; use space.precisions from {list(self.precisions)}.")
        return tuple(dict.fromkeys(precisions))
