"""The encoder family: the pretrained all-MiniLM-L6-v2 sentence encoder (the ``nlp`` extra).

- baseline: the packaged pretrained weights (nothing is trained; :mod:`.model`);
- analysis and mechanics: heads and FFN neurons per layer, cut by L1 magnitude, optionally
  distilled toward the dense embeddings (:mod:`.prune`); each block is one precision layer (fp32,
  static int8 or dynamic int8d for all of the block's linear layers);
- lowering: one kernel per whole block plus a zero-time transition kernel where the precision
  changes; profiling exports each block as a real ORT subgraph (:mod:`.lowering`).
It needs a text task with ``sentences`` and a ``tokenizer`` (the built-in ``minilm`` task).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.families.base import Baseline, ModelFamily
from hwsearch.options import CompressOptions, TrainConfig
from hwsearch.policy import Policy
from hwsearch.space import SearchSpace

MODEL_NAMES = ("all-minilm-l6-v2", "minilm-l6")


class EncoderFamily(ModelFamily):
    name = "encoder"
    default_channel_multiple = 64
    precisions = ("fp32", "int8", "int8d")  # ORT's CPU provider has no fp16 MatMul
    default_precisions = ("fp32", "int8")
    default_finetune_lr = 5e-5  # AdamW on a pretrained transformer; 0.01 (the CNNs' SGD rate) collapses every embedding to one vector
    recovery_lr = 3e-4
    recovery_batch = 32

    def models(self) -> tuple[str, ...]:
        return MODEL_NAMES

    def build_model(self, spec: str, task: Any, options: Mapping[str, Any]) -> nn.Module:
        from hwsearch.families.encoder.model import load_encoder

        if spec not in MODEL_NAMES:
            raise HwsearchError(f"Model {spec!r} is unknown for the encoder family; use {MODEL_NAMES[0]!r}.")
        if options:
            raise HwsearchError(f"Model {spec!r} takes no model options (got {sorted(options)}); remove [model_options].")
        return load_encoder()

    def load_baseline(self, task: Any, spec: str, options: Mapping[str, Any], train_config: TrainConfig, *,
                      retrain: bool = False, verbose: bool = True) -> Baseline:
        """The pretrained model as the baseline (fidelity to itself is 1 by definition)."""
        from hwsearch.tasks.minilm import model_dir

        return Baseline(self.build_model(spec, task, options), spec, dict(options), model_dir() / "model.safetensors", 1.0, 1.0)

    def search_space(self, model: nn.Module, task: Any, keep_choices: Sequence[float] | None = None,
                     precisions: Sequence[str] | None = None, channel_multiple: int | None = None) -> SearchSpace:
        from hwsearch.families.encoder.prune import transformer_space

        multiple = self.default_channel_multiple if channel_multiple is None else channel_multiple
        return transformer_space(model, keep_choices, self.check_precisions(precisions or self.default_precisions), multiple, self.precisions)

    def prune(self, model: nn.Module, policy: Policy, space: SearchSpace, task: Any, options: CompressOptions) -> nn.Module:
        from hwsearch.families.encoder.prune import prune

        if options.importance != "l1":
            raise HwsearchError(f"Importance {options.importance!r} is not available for the encoder; heads and neurons are ranked by L1 magnitude, set compress.importance = \"l1\".")
        return prune(model, policy, space)

    def recover(self, model: nn.Module, teacher: nn.Module, task: Any, options: CompressOptions) -> nn.Module:
        from hwsearch.families.encoder.prune import distill

        return distill(model, teacher, task, options.finetune_steps, self.finetune_lr(options))

    def distillation(self, teacher: nn.Module, task: Any, batch_size: int, seed: int):
        from hwsearch.families.encoder.recover import EmbeddingDistillation

        return EmbeddingDistillation(teacher, task, batch_size, seed)

    def precision_nodes(self, policy: Policy, space: SearchSpace) -> dict[str, str]:
        from hwsearch.families.encoder.prune import check_policy, layer_nodes

        check_policy(space, policy)
        return {node: policy.precision_for(layer) for layer in space.layers for node in layer_nodes(layer)}

    def count_macs(self, model: nn.Module, task: Any) -> int:
        from hwsearch.families.encoder.prune import count_macs

        return count_macs(model, task.seq_len)

    def lowering(self, model: nn.Module, task: Any, space: SearchSpace, table: Any):
        from hwsearch.families.encoder.lowering import EncoderLowering, check_table

        check_table(table, task.seq_len)
        return EncoderLowering(model, space, task.seq_len)

    def profile_plan(self, model: nn.Module, task: Any, space: SearchSpace, block: int):
        from hwsearch.families.encoder.lowering import enumerate_kernels, measure_kernel

        return enumerate_kernels(model, space, task.seq_len), measure_kernel, {"seq_len": task.seq_len, "kernels": "transformer blocks (hwsearch.families.encoder.lowering)"}
