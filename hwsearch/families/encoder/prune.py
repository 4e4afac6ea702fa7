"""The encoder's space and mechanics: attention heads and FFN neurons removed physically, then distilled.

A policy keeps, per layer, a number of attention heads (group ``layer<i>.attn``, counted in heads)
and FFN neurons (group ``layer<i>.ffn``, in multiples of the space's ``channel_multiple``, 64 by
default), and sets each block's linear layers to one precision (precision layers
``layer<i>.attn`` / ``layer<i>.ffn``: fp32, int8 or int8d). Heads and neurons are ranked by L1 magnitude and cut with
Torch-Pruning's linear-layer pruners; the hidden size is untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.families.encoder.model import HEAD_DIM, SentenceEncoder
from hwsearch.policy import Policy
from hwsearch.space import DEFAULT_KEEP_CHOICES, GroupInfo, TransformerSpace

BLOCKS = ("attn", "ffn")


def block_layers(i: int, block: str) -> tuple[str, ...]:
    """The linear modules (= ONNX MatMul node names) of block ``layer<i>.<block>``."""
    if block == "attn":
        return tuple(f"encoder.layer.{i}.attention.self.{p}" for p in ("query", "key", "value")) + (f"encoder.layer.{i}.attention.output.dense",)
    return (f"encoder.layer.{i}.ffn.intermediate.dense", f"encoder.layer.{i}.ffn.output.dense")


def layer_nodes(layer: str) -> tuple[str, ...]:
    """The ONNX nodes of precision layer ``layer<i>.attn`` / ``layer<i>.ffn``."""
    index, block = layer[len("layer"):].split(".")
    return block_layers(int(index), block)


def transformer_space(model: SentenceEncoder, keep_choices: Sequence[float] | None, precisions: Sequence[str], channel_multiple: int,
                      can_take: Sequence[str] = ("fp32", "int8", "int8d")) -> TransformerSpace:
    """Heads and neurons per layer; every block a precision layer that can take ``can_take``."""
    if not isinstance(model, SentenceEncoder):
        raise HwsearchError(f"The encoder family compresses its SentenceEncoder, not {type(model).__name__}; use model \"all-minilm-l6-v2\".")
    groups, heads = [], []
    for i, layer in enumerate(model.layers):
        groups.append(GroupInfo(f"layer{i}.attn", layer.attention.heads, block_layers(i, "attn")[:3]))
        groups.append(GroupInfo(f"layer{i}.ffn", layer.ffn.intermediate.dense.out_features, block_layers(i, "ffn")[:1]))
        heads.append(f"layer{i}.attn")
    layers = tuple(f"layer{i}.{b}" for i in range(len(model.layers)) for b in BLOCKS)
    return TransformerSpace.build(groups, layers, keep_choices or DEFAULT_KEEP_CHOICES, precisions, channel_multiple,
                                  layer_precisions={layer: tuple(can_take) for layer in layers}, head_groups=frozenset(heads))


def check_policy(space: TransformerSpace, policy: Policy) -> Policy:
    """The policy, checked against the space (layer names, precisions each block can take: no fp16 MatMul on ORT's CPU)."""
    return space.validate(policy)


def _linear_score(layers_out: list[nn.Linear], layers_in: list[nn.Linear], unit: int) -> torch.Tensor:
    """L1 magnitude per unit of ``unit`` consecutive channels: rows of ``layers_out`` + columns of ``layers_in``."""
    score = sum(lin.weight.detach().abs().sum(1) for lin in layers_out) + sum(lin.weight.detach().abs().sum(0) for lin in layers_in)
    return score.reshape(-1, unit).sum(1)


def prune_blocks(blocks: list[tuple[list[nn.Linear], list[nn.Linear], int, int]]) -> None:
    """Physically remove attention heads / FFN neurons with torch-pruning's linear-layer pruners.

    Each block is ``(producers, consumers, unit, n_keep)``: the output channels of ``producers``
    (q, k, v projections; the FFN up projection) and the matching input channels of ``consumers``
    (the attention output projection; the FFN down projection) are cut together, ``unit`` channels
    at a time (one head = ``head_dim`` channels, one neuron = 1), keeping the ``n_keep`` units of
    largest L1 magnitude.
    """
    import torch_pruning as tp

    for producers, consumers, unit, n_keep in blocks:
        n_units = producers[0].out_features // unit
        if not 1 <= n_keep <= n_units:
            raise HwsearchError(f"Cannot keep {n_keep} of {n_units} units in a transformer block; keep between 1 and {n_units}.")
        if n_keep == n_units:
            continue
        keep = set(torch.argsort(_linear_score(producers, consumers, unit), descending=True)[:n_keep].tolist())
        drop = [u * unit + j for u in range(n_units) if u not in keep for j in range(unit)]
        for lin in producers:
            tp.prune_linear_out_channels(lin, drop)
        for lin in consumers:
            tp.prune_linear_in_channels(lin, drop)


def prune(model: SentenceEncoder, policy: Policy, space: TransformerSpace) -> SentenceEncoder:
    """A copy of ``model`` with the heads and FFN neurons ``policy`` drops physically removed."""
    keep = space.keep_channels(check_policy(space, policy))
    pruned = copy.deepcopy(model).eval()
    blocks = []
    for i, layer in enumerate(pruned.layers):
        s, ffn = layer.attention.self, layer.ffn
        blocks.append(([s.query, s.key, s.value], [layer.attention.output.dense], HEAD_DIM, keep[f"layer{i}.attn"]))
        blocks.append(([ffn.intermediate.dense], [ffn.output.dense], 1, keep[f"layer{i}.ffn"]))
    prune_blocks(blocks)
    return pruned


def distill(student: nn.Module, teacher: nn.Module, task: Any, steps: int, lr: float, batch_size: int = 32, seed: int = 0) -> nn.Module:
    """``steps`` AdamW steps minimising 1 - cos(student, teacher) on train-split sentences (in place)."""
    if steps <= 0:
        return student
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train = task.sentences("train")
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / max(1, steps))
    teacher.eval()
    student.train()
    for _ in range(steps):
        idx = torch.randint(len(train), (batch_size,), generator=gen).tolist()
        f = task.tokenizer([train[i] for i in idx])
        ids, mask = torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"])
        with torch.no_grad():
            target = teacher(ids, mask)
        loss = (1.0 - (student(ids, mask) * target).sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return student.eval()


def count_macs(model: SentenceEncoder, seq_len: int) -> int:
    """Multiply-accumulates of one sequence of ``seq_len`` tokens: linear layers plus the two attention matmuls."""
    total = 0
    for layer in model.layers:
        heads = layer.attention.heads
        total += seq_len * sum(lin.in_features * lin.out_features for lin in layer.modules() if isinstance(lin, nn.Linear))
        total += 2 * heads * seq_len * seq_len * HEAD_DIM
    return total
