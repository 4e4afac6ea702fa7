"""Realising a policy on the MiniLM encoder: heads / FFN neurons removed, distilled, exported, int8 per block.

Pipeline (:func:`build_candidate`): copy the pretrained encoder, remove the heads and neurons the
policy drops (:func:`hwsearch.compress.prune.prune_transformer_in_place`), optionally distil the
student toward the dense model's embeddings on the train split for ``finetune_steps`` steps,
export fp32 ONNX (dynamic batch and sequence axes, linear layers' MatMul nodes named after their
modules), quantize the int8 blocks' linear layers with ONNX Runtime static QDQ (uint8 activations,
int8 per-channel weights; they run as QLinearMatMul), and score fidelity on the ONNX file.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.policy import Policy
from hwsearch.space import DEFAULT_KEEP_CHOICES, TransformerSpace
from hwsearch.tasks.minilm_model import HEAD_DIM, SentenceEncoder

BLOCKS = ("attn", "ffn")


def block_layers(i: int, block: str) -> tuple[str, ...]:
    """The linear modules (= ONNX MatMul node names) of block ``layer<i>.<block>``."""
    if block == "attn":
        return tuple(f"encoder.layer.{i}.attention.self.{p}" for p in ("query", "key", "value")) + (f"encoder.layer.{i}.attention.output.dense",)
    return (f"encoder.layer.{i}.ffn.intermediate.dense", f"encoder.layer.{i}.ffn.output.dense")


def transformer_space(model: SentenceEncoder, keep_choices: Any, precisions: Any, channel_multiple: int) -> TransformerSpace:
    from hwsearch.compress.prune import GroupInfo

    if not isinstance(model, SentenceEncoder):
        raise HwsearchError(f"Task 'minilm' compresses its SentenceEncoder, not {type(model).__name__}; use model \"all-minilm-l6-v2\".")
    bad = [p for p in precisions if p not in ("fp32", "int8")]
    if bad:
        raise HwsearchError(f"Precision {bad[0]!r} is not offered for task 'minilm' (ONNX Runtime's CPU provider has no fp16 MatMul); use space.precisions = [\"fp32\", \"int8\"].")
    if channel_multiple < 1:
        raise HwsearchError(f"channel_multiple={channel_multiple} must be a positive integer such as 64.")
    groups, heads = [], []
    for i, layer in enumerate(model.layers):
        groups.append(GroupInfo(f"layer{i}.attn", layer.attention.heads, block_layers(i, "attn")[:3]))
        groups.append(GroupInfo(f"layer{i}.ffn", layer.ffn.intermediate.dense.out_features, block_layers(i, "ffn")[:1]))
        heads.append(f"layer{i}.attn")
    layers = tuple(f"layer{i}.{b}" for i in range(len(model.layers)) for b in BLOCKS)
    choices = tuple(sorted(set(keep_choices or DEFAULT_KEEP_CHOICES)))
    return TransformerSpace(tuple(groups), layers, choices, tuple(dict.fromkeys(precisions)), channel_multiple, frozenset(heads))


def check_policy(space: TransformerSpace, policy: Policy) -> Policy:
    space.validate(policy)
    for layer in space.layers:
        if policy.precision_for(layer) not in ("fp32", "int8"):
            raise HwsearchError(f"Policy precision {layer}={policy.precision_for(layer)!r} is not supported for task 'minilm'; use fp32 or int8.")
    return policy


def compress(model: SentenceEncoder, policy: Policy, space: TransformerSpace) -> SentenceEncoder:
    """A copy of ``model`` with the heads and FFN neurons ``policy`` drops physically removed."""
    from hwsearch.compress.prune import prune_transformer_in_place

    keep = space.keep_channels(check_policy(space, policy))
    pruned = copy.deepcopy(model).eval()
    blocks = []
    for i, layer in enumerate(pruned.layers):
        s, ffn = layer.attention.self, layer.ffn
        blocks.append(([s.query, s.key, s.value], [layer.attention.output.dense], HEAD_DIM, keep[f"layer{i}.attn"]))
        blocks.append(([ffn.intermediate.dense], [ffn.output.dense], 1, keep[f"layer{i}.ffn"]))
    prune_transformer_in_place(blocks)
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


def recovered_model(task: Any, baseline: nn.Module, policy: Policy, space: TransformerSpace, opts: Any) -> nn.Module:
    """Pruned, then distilled (when anything was pruned and ``opts.finetune_steps`` > 0)."""
    if opts.importance != "l1":
        raise HwsearchError(f"Importance {opts.importance!r} is not available for task 'minilm'; heads and neurons are ranked by L1 magnitude, set compress.importance = \"l1\".")
    model = compress(baseline, policy, space)
    pruned_any = any(space.kept_channels(g, policy.keep_for(g.name)) < g.channels for g in space.groups)
    if pruned_any:
        distill(model, baseline, task, opts.finetune_steps, opts.finetune_lr)
    return model.eval()


def count_macs(model: SentenceEncoder, seq_len: int) -> int:
    """Multiply-accumulates of one sequence of ``seq_len`` tokens: linear layers plus the two attention matmuls."""
    total = 0
    for layer in model.layers:
        heads = layer.attention.heads
        total += seq_len * sum(lin.in_features * lin.out_features for lin in layer.modules() if isinstance(lin, nn.Linear))
        total += 2 * heads * seq_len * seq_len * HEAD_DIM
    return total


def export_onnx(task: Any, model: nn.Module, path: Path) -> Path:
    from hwsearch import onnx_io

    axes = {name: {1: "seq"} for name in ("input_ids", "attention_mask")}
    return onnx_io.export(model, task.example_input(), path, input_names=("input_ids", "attention_mask"), dynamic_axes=axes)


def realise(task: Any, model: nn.Module, policy: Policy, space: TransformerSpace, out_path: Path, calib_samples: int) -> dict[str, int]:
    """Export ``model`` and apply the policy's block precisions; returns blocks per precision."""
    from hwsearch.compress.quantize import apply_precisions

    fp32_path = out_path.with_name(out_path.stem + ".fp32.onnx")
    export_onnx(task, model, fp32_path)
    nodes = {node: policy.precision_for(layer) for layer in space.layers for node in block_layers(int(layer[5:].split(".")[0]), layer.split(".")[1])}
    train = task.sentences("train")
    calib, _ = task.feeds(train[: max(1, min(calib_samples, len(train)))], batch_size=32)
    apply_precisions(fp32_path, out_path, nodes, calib)
    fp32_path.unlink()
    n_int8 = sum(policy.precision_for(layer) == "int8" for layer in space.layers)
    return {"int8": n_int8, "fp16": 0, "fp32": len(space.layers) - n_int8}


def build_candidate(task: Any, baseline: nn.Module, policy: Policy, space: TransformerSpace, out_path: str | Path, opts: Any, *,
                    model: nn.Module | None = None):
    from hwsearch.compress import CandidateResult
    from hwsearch.compress.stats import count_params

    start = time.perf_counter()
    check_policy(space, policy)
    model = model if model is not None else recovered_model(task, baseline, policy, space, opts)
    out_path = Path(out_path)
    counts = realise(task, model, policy, space, out_path, opts.calib_samples)
    score = task.score_onnx(out_path, opts.eval_split)
    return CandidateResult(onnx_path=str(out_path), accuracy=score, params=count_params(model), macs=count_macs(model, task.seq_len),
                           size_bytes=out_path.stat().st_size, precision_counts=counts, seconds=time.perf_counter() - start)
