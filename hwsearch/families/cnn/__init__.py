"""The CNN family: conv/linear image models trained from scratch on the task (built-ins and user models).

- analysis: Torch-Pruning's dependency graph gives the coupled channel groups (:mod:`.prune`);
  grouped convs and coupled concatenations remove channels in sets, and groups that cannot be cut
  safely are left out with a note (:mod:`.groups`, :class:`~.space.CNNSpace`); every conv/linear
  layer is a precision layer named after its module;
- mechanics: channels cut through the dependency graph, then a distilled fine-tune and BatchNorm
  statistics re-estimated on the final weights (:mod:`.recover`);
- baseline: trained with the task's :class:`~hwsearch.options.TrainConfig` and cached (:mod:`.train`);
- lowering: the fp32 export parsed into fused units (:mod:`.parse`) and lowered per policy the way
  ORT's CPU optimisers rewrite it (:mod:`.lowering`); profiling enumerates and builds single-kernel
  models (:mod:`.enumerate`, :mod:`.kernel_models`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.families.base import Baseline, ModelFamily
from hwsearch.imports import import_object
from hwsearch.options import CompressOptions, TrainConfig
from hwsearch.policy import Policy
from hwsearch.space import DEFAULT_KEEP_CHOICES, SearchSpace


class CNNFamily(ModelFamily):
    name = "cnn"
    default_channel_multiple = 8
    precisions = ("fp32", "fp16", "int8", "int8d")  # int8d: linear layers only
    default_precisions = ("fp32", "fp16", "int8")

    def models(self) -> tuple[str, ...]:
        from hwsearch.families.cnn.models import BUILTIN_MODELS

        return tuple(BUILTIN_MODELS)

    def build_model(self, spec: str, task: Any, options: Mapping[str, Any]) -> nn.Module:
        from hwsearch.families.cnn.models import BUILTIN_MODELS

        factory = BUILTIN_MODELS.get(spec) or (import_object(spec, "Model") if ":" in spec else None)
        if factory is None:
            raise HwsearchError(f"Model {spec!r} is unknown for task {task.name!r}; use one of {', '.join(sorted(BUILTIN_MODELS))} or package.module:function.")
        try:
            model = factory(in_channels=task.in_channels, num_classes=task.num_classes, **dict(options))
        except TypeError as exc:
            raise HwsearchError(f"Model {spec!r} rejected its arguments ({exc}); a model factory takes in_channels=, num_classes= and its own options.") from None
        if not isinstance(model, nn.Module):
            raise HwsearchError(f"Model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module; return the model instance.")
        return model

    def load_baseline(self, task: Any, spec: str, options: Mapping[str, Any], train_config: TrainConfig, *,
                      retrain: bool = False, verbose: bool = True) -> Baseline:
        from hwsearch.families.cnn.train import load_baseline

        return load_baseline(task, spec, lambda: self.build_model(spec, task, options), dict(options), train_config, retrain=retrain, verbose=verbose)

    def search_space(self, model: nn.Module, task: Any, keep_choices: Sequence[float] | None = None,
                     precisions: Sequence[str] | None = None, channel_multiple: int | None = None) -> SearchSpace:
        from hwsearch.families.cnn.prune import analyse
        from hwsearch.families.cnn.space import CNNSpace
        from hwsearch.runtime.onnx_export import layer_order

        x = task.example_input()
        found = analyse(model, x)
        layers = layer_order(model, x)
        can_take = {n: self.precisions if isinstance(model.get_submodule(n), nn.Linear) else ("fp32", "fp16", "int8") for n in layers}
        return CNNSpace.build(found.groups, layers, keep_choices or DEFAULT_KEEP_CHOICES,
                              self.check_precisions(precisions or self.default_precisions),
                              self.default_channel_multiple if channel_multiple is None else channel_multiple,
                              layer_precisions=can_take, divisors=tuple(found.divisors.items()), notes=found.notes)

    def prune(self, model: nn.Module, policy: Policy, space: SearchSpace, task: Any, options: CompressOptions) -> nn.Module:
        import copy

        from hwsearch.families.cnn.prune import prune_in_place

        train = task.split("train")
        calibration = (torch.from_numpy(train.x[:64]), torch.from_numpy(train.y[:64]))
        pruned = copy.deepcopy(model).eval()
        prune_in_place(pruned, task.example_input(), space.keep_channels(policy), importance=options.importance, calibration=calibration)
        return pruned

    def recover(self, model: nn.Module, teacher: nn.Module, task: Any, options: CompressOptions) -> nn.Module:
        from hwsearch.families.cnn.recover import finetune, recalibrate_bn

        # fine-tuning runs BatchNorm on batch statistics; the running statistics the exported model keeps are
        # re-estimated afterwards, on the final weights
        finetune(model, task, options.finetune_steps, self.finetune_lr(options), teacher=teacher if options.distill else None)
        return recalibrate_bn(model, task, options.bn_recalib_batches)

    def distillation(self, teacher: nn.Module, task: Any, batch_size: int, seed: int):
        from hwsearch.families.cnn.recover import LogitDistillation

        return LogitDistillation(teacher, task, batch_size, seed)

    def optimizer(self, params: Any, lr: float) -> Any:
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def finish_recovery(self, model: nn.Module, task: Any, options: CompressOptions) -> nn.Module:
        from hwsearch.families.cnn.recover import RECOVERY_BN_BATCHES, recalibrate_bn

        return recalibrate_bn(model, task, max(options.bn_recalib_batches, RECOVERY_BN_BATCHES))

    def precision_nodes(self, policy: Policy, space: SearchSpace) -> dict[str, str]:
        return {layer: policy.precision_for(layer) for layer in space.layers}

    def count_macs(self, model: nn.Module, task: Any) -> int:
        from hwsearch.families.cnn.stats import count_macs

        return count_macs(model, task.example_input())

    def lowering(self, model: nn.Module, task: Any, space: SearchSpace, table: Any):
        from hwsearch.families.cnn.lowering import CNNLowering, UnitGraph

        block = int(table.meta["nchwc_block"])
        if block <= 0:
            raise HwsearchError(f"Latency table {str(table.path)!r} has nchwc_block={block}; this CPU has no NCHWc kernels, which these tables do not model yet.")
        return CNNLowering(UnitGraph.from_model(model, task.example_input(), space, block), space)

    def profile_plan(self, model: nn.Module, task: Any, space: SearchSpace, block: int):
        from hwsearch.families.cnn.enumerate import enumerate_kernels, kernel_timer
        from hwsearch.families.cnn.lowering import UnitGraph

        return enumerate_kernels(UnitGraph.from_model(model, task.example_input(), space, block), space), kernel_timer(block), {}
