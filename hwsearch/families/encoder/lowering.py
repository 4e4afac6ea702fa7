"""The encoder family's latency lowering: one kernel per whole block, measured as a real ORT subgraph.

A transformer at a fixed sequence length executes, after ONNX Runtime's optimisations, a short
chain of big blocks whose boundaries are fp32 tensors (LayerNorm outputs), so each block is timed
on its own and the model's latency is predicted (by the one predictor, :mod:`hwsearch.latency.predict`) as the
per-call overhead plus the sum of its blocks. Kernel keys (the :class:`~hwsearch.tables.kernels.Kernel` text form, ``CxHxW`` =
hidden x seq x 1):

- ``attn;<prec>;-;384x128x1;co=<heads>;k=32;...``: projections, attention, output, residual + LayerNorm
- ``ffn;<prec>;-;384x128x1;co=<neurons>;k=0;...``: up projection + GELU, down projection, residual + LayerNorm
- ``embed;fp32;-;384x128x1;co=0;...``: token/position embeddings + LayerNorm + the attention-mask bias
- ``pool;fp32;-;384x128x1;co=0;...``: masked mean pooling + L2 normalisation
- ``transition;fp32;-;0x0x0;...``: a zero-time kernel between two consecutive blocks of different
  precision (never measured: its cost is what the calibration's ``per_kernel_us`` gives it)

Each block is exported from the same torch modules as the whole model (dynamic batch and sequence
axes), int8 blocks are quantized by the same ORT QDQ call and int8d blocks by the same ORT dynamic
quantization (``DynamicQuantizeLinear`` + ``MatMulIntegerToFloat`` for q/k/v, ``DynamicQuantizeMatMul``
for the other projections after ORT's fusion), and the session settings are the table's. Calibration classes are ``<op>-<precision>`` plus ``transition``. Interpolation rule for a
block the table lacks: linear in ``co`` (heads or neurons) between the nearest measured blocks of
the same op, precision, hidden size and sequence length; outside the measured range the nearest is
scaled by the ``co`` ratio.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.families.encoder.model import FFN, HEAD_DIM, Attention, Embeddings, attention_bias, mean_pool
from hwsearch.policy import Policy
from hwsearch.runtime.session import SessionSettings
from hwsearch.runtime.timing import MeasureSettings, Timing, time_model
from hwsearch.tables.kernels import Kernel

OPS = ("attn", "ffn", "embed", "pool")
TRANSITION = ("transition", "fp32", "-", 0, 0, 0, 0, 0, 1, 1, False, False)


def attn_kernel(prec: str, hidden: int, seq: int, heads: int) -> Kernel:
    return Kernel("attn", prec, "-", hidden, seq, 1, heads, HEAD_DIM)


def ffn_kernel(prec: str, hidden: int, seq: int, neurons: int) -> Kernel:
    return Kernel("ffn", prec, "-", hidden, seq, 1, neurons, 0)


def model_kernels(model: Any, space: Any, policy: Policy, seq: int) -> list[Kernel]:
    """The blocks a policy's model executes, in order."""
    hidden = model.embeddings.LayerNorm.normalized_shape[0]
    keep = space.keep_channels(policy)
    out = [Kernel("embed", "fp32", "-", hidden, seq, 1)]
    for i in range(len(model.layers)):
        out.append(attn_kernel(policy.precision_for(f"layer{i}.attn"), hidden, seq, keep[f"layer{i}.attn"]))
        out.append(ffn_kernel(policy.precision_for(f"layer{i}.ffn"), hidden, seq, keep[f"layer{i}.ffn"]))
    return out + [Kernel("pool", "fp32", "-", hidden, seq, 1)]


def enumerate_kernels(model: Any, space: Any, seq: int) -> list[Kernel]:
    """Every block any policy of ``space`` can produce: all head counts 1..H, all neuron multiples, every precision of the space."""
    hidden = model.embeddings.LayerNorm.normalized_shape[0]
    found = {Kernel("embed", "fp32", "-", hidden, seq, 1), Kernel("pool", "fp32", "-", hidden, seq, 1)}
    for g in space.groups:
        counts = range(1, g.channels + 1) if g.name in space.head_groups else sorted({space.kept_channels(g, r) for r in space.keep_choices} | set(range(space.channel_multiple, g.channels + 1, space.channel_multiple)))
        make = attn_kernel if g.name in space.head_groups else ffn_kernel
        found.update(make(p, hidden, seq, c) for c in counts for p in space.precisions)
    return sorted(found)


class _Embed(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.embeddings = Embeddings(30522, hidden, 512, 2, 1e-12)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.embeddings(input_ids), attention_bias(attention_mask)


class _Pool(nn.Module):
    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return mean_pool(tokens, attention_mask)


def _inputs(k: Kernel) -> tuple[tuple[str, ...], tuple[torch.Tensor, ...]]:
    x = torch.randn(1, k.h, k.c)
    mask = torch.ones(1, k.h, dtype=torch.int64)
    if k.op == "attn":
        return ("x", "bias"), (x, torch.zeros(1, 1, 1, k.h))
    if k.op == "ffn":
        return ("x",), (x,)
    if k.op == "embed":
        return ("input_ids", "attention_mask"), (torch.full((1, k.h), 1000, dtype=torch.int64), mask)
    return ("tokens", "attention_mask"), (x, mask)


def kernel_feed(k: Kernel) -> dict[str, np.ndarray]:
    names, tensors = _inputs(k)
    return {n: t.numpy() for n, t in zip(names, tensors)}


def write_kernel_model(k: Kernel, path: Path, seed: int = 0) -> Path:
    """Export block ``k`` as an ONNX file (int8 / int8d blocks quantized by the same calls as whole models)."""
    from hwsearch.runtime.onnx_export import export
    from hwsearch.runtime.quantize import quantize_dynamic_int8, quantize_int8

    if k.op not in OPS:
        raise HwsearchError(f"Kernel {k.key!r} is not a transformer block; its op must be one of {', '.join(OPS)}.")
    torch.manual_seed(seed)
    module = {"attn": lambda: Attention(k.c, k.co, 1e-12), "ffn": lambda: FFN(k.c, k.co, 1e-12), "embed": lambda: _Embed(k.c), "pool": _Pool}[k.op]().eval()
    names, tensors = _inputs(k)
    axes = {n: {1: "seq"} if n != "bias" else {3: "seq"} for n in names}
    fp32 = path.with_name(path.stem + ".fp32.onnx")
    export(module, tensors, fp32, input_names=names, dynamic_axes=axes)
    linears = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if k.precision == "int8d":
        quantize_dynamic_int8(fp32, path, linears)
    else:
        quantize_int8(fp32, path, linears if k.precision == "int8" else [], [kernel_feed(k)] * 4, weight_bits=8)  # timing does not depend on the weights
    fp32.unlink()
    return path


def measure_kernel(k: Kernel, settings: SessionSettings, timing: MeasureSettings) -> Timing:
    """Times block ``k`` as its own ONNX file with the table's session settings."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_kernel_model(k, Path(tmp) / "k.onnx")
        return time_model(path, settings, timing, feed=kernel_feed(k))


@dataclass(frozen=True)
class EncoderLowering:
    """The encoder family's :class:`~hwsearch.families.base.Lowering`: blocks in order, a transition
    kernel wherever the precision changes between consecutive blocks."""

    model: Any
    space: Any
    seq_len: int
    fixed_us: Mapping[tuple, float] = field(default_factory=lambda: {TRANSITION: 0.0})

    def kernels(self, policy: Policy) -> list[tuple]:
        blocks = [k.fields() for k in model_kernels(self.model, self.space, policy, self.seq_len)]
        precs = [policy.precision_for(layer) for layer in self.space.layers]
        return blocks + [TRANSITION] * sum(a != b for a, b in zip(precs, precs[1:]))

    def fingerprint(self) -> str:
        """Identifies the architecture: the dense model's blocks at this sequence length."""
        text = repr(self.kernels(Policy()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @staticmethod
    def kernel_class(t: tuple) -> str:
        return "transition" if t[0] == "transition" else f"{t[0]}-{t[1]}"

    @staticmethod
    def neighbours_key(t: tuple) -> Hashable:
        return (t[0], t[1], t[3], t[4])  # op, precision, hidden size, sequence length

    @staticmethod
    def work(t: tuple) -> float:
        return float(t[6])  # heads or neurons


def check_table(table: Any, seq_len: int) -> None:
    """A block table at this sequence length, or a one-line error saying which table to use."""
    seq = table.meta.get("seq_len")
    if seq is not None and int(seq) != int(seq_len):
        raise HwsearchError(f"Latency table {str(table.path)!r} was measured at seq_len={seq}, the task uses seq_len={seq_len}; set task_options.seq_len = {seq} or profile a table at {seq_len} tokens.")
    if not any(k.op in OPS for k in table.us):
        raise HwsearchError(f"Latency table {str(table.path)!r} has no transformer blocks; use a table profiled with --task minilm (e.g. latency_tables/minilm-cpu-1t).")
