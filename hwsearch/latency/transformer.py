"""Latency tables for transformer encoders: one kernel per whole block, measured as a real ORT subgraph.

A transformer at a fixed sequence length executes, after ONNX Runtime's optimisations, a short
chain of big blocks whose boundaries are fp32 tensors (LayerNorm outputs), so each block is timed
on its own and the model's latency is predicted as the per-call overhead plus the sum of its
blocks. Kernel keys (the :class:`~hwsearch.latency.kernels.Kernel` text form, ``CxHxW`` =
hidden x seq x 1):

- ``attn;<prec>;-;384x128x1;co=<heads>;k=32;...``: projections, attention, output, residual + LayerNorm
- ``ffn;<prec>;-;384x128x1;co=<neurons>;k=0;...``: up projection + GELU, down projection, residual + LayerNorm
- ``embed;fp32;-;384x128x1;co=0;...``: token/position embeddings + LayerNorm + the attention-mask bias
- ``pool;fp32;-;384x128x1;co=0;...``: masked mean pooling + L2 normalisation

Each block is exported from the same torch modules as the whole model (dynamic batch and sequence
axes), int8 blocks are quantized by the same ORT QDQ call, and the session settings are the
table's. An optional ``calibration.json`` (fitted by ``python -m hwsearch.latency.transformer_validate
--calibrate N`` on whole models of other random policies) maps the sum to
``scale * sum + intercept``. Interpolation rule for a block the table lacks: linear in ``co`` (heads or neurons)
between the nearest measured blocks of the same op, precision, hidden size and sequence length;
outside the measured range the nearest is scaled by the ``co`` ratio. It is counted in
``Prediction.missing``; ``strict=True`` makes it an error.
"""

from __future__ import annotations

import bisect
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.latency.kernels import Kernel
from hwsearch.latency.predict import Prediction
from hwsearch.latency.table import Table, load_table
from hwsearch.policy import Policy
from hwsearch.tasks.minilm_model import HEAD_DIM, Attention, Embeddings, FFN, attention_bias, mean_pool

OPS = ("attn", "ffn", "embed", "pool")


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
    """Every block any policy of ``space`` can produce: all head counts 1..H, all neuron multiples, both precisions."""
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
    """Export block ``k`` as an ONNX file (int8 blocks quantized as in whole models)."""
    from hwsearch import onnx_io
    from hwsearch.compress.quantize import quantize_int8

    if k.op not in OPS:
        raise HwsearchError(f"Kernel {k.key!r} is not a transformer block; its op must be one of {', '.join(OPS)}.")
    torch.manual_seed(seed)
    module = {"attn": lambda: Attention(k.c, k.co, 1e-12), "ffn": lambda: FFN(k.c, k.co, 1e-12), "embed": lambda: _Embed(k.c), "pool": _Pool}[k.op]().eval()
    names, tensors = _inputs(k)
    axes = {n: {1: "seq"} if n != "bias" else {3: "seq"} for n in names}
    fp32 = path.with_name(path.stem + ".fp32.onnx")
    onnx_io.export(module, tensors, fp32, input_names=names, dynamic_axes=axes)
    layers = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)] if k.precision == "int8" else []
    quantize_int8(fp32, path, layers, [kernel_feed(k)] * 4)
    fp32.unlink()
    return path


def precision_transitions(policy: Policy, layers: Sequence[str]) -> int:
    """How often the precision changes between consecutive blocks (``layers`` in execution order)."""
    precs = [policy.precision_for(layer) for layer in layers]
    return sum(a != b for a, b in zip(precs, precs[1:]))


class TransformerInterpolator:
    """Measured blocks per family (op, precision, hidden, seq), sorted by ``co``."""

    def __init__(self, table: Table) -> None:
        fams: dict[tuple, list[tuple[int, float]]] = {}
        for k, us in table.us.items():
            fams.setdefault((k.op, k.precision, k.c, k.h), []).append((k.co, us))
        self.families = {f: sorted(v) for f, v in fams.items()}

    def estimate(self, k: Kernel) -> float:
        pts = self.families.get((k.op, k.precision, k.c, k.h))
        if not pts:
            raise HwsearchError(f"Kernel {k.key!r} is not in the latency table and no block of its op, precision, hidden size and sequence length is; profile this model into the table (hwsearch profile --task minilm).")
        i = bisect.bisect_left(pts, (k.co, -1.0))
        if 0 < i < len(pts):
            (c0, t0), (c1, t1) = pts[i - 1], pts[i]
            return t0 + (t1 - t0) * (k.co - c0) / (c1 - c0)
        c0, t0 = pts[0] if i == 0 else pts[-1]
        return t0 * k.co / c0 if c0 > 0 else t0


@dataclass
class TransformerPredictor:
    """Predicted latency = per-call overhead + the table's time of every block of the policy's model."""

    table: Table
    model: Any
    space: Any
    seq_len: int
    strict: bool = False
    calibration: Any = None
    _interp: TransformerInterpolator = field(init=False)

    def __post_init__(self) -> None:
        self._interp = TransformerInterpolator(self.table)
        self.device = self.table.device

    def kernels(self, policy: Policy) -> list[Kernel]:
        self.space.validate(policy)
        return model_kernels(self.model, self.space, policy, self.seq_len)

    def predict(self, policy: Policy) -> Prediction:
        total, missing = self.table.call_overhead_us, []
        kernels = self.kernels(policy)
        for k in kernels:
            v = self.table.us.get(k)
            if v is None:
                if self.strict:
                    raise HwsearchError(f"Kernel {k.key!r} is not in latency table {str(self.table.path)!r} (strict mode); profile the model into this table or drop --strict to interpolate it.")
                v = self._interp.estimate(k)
                missing.append(k.key)
            total += v
        if self.calibration:
            total = self.calibration["scale"] * total + self.calibration["intercept_us"]
            total += self.calibration.get("per_transition_us", 0.0) * precision_transitions(policy, self.space.layers)
        return Prediction(total / 1e3, (len(kernels) - len(missing)) / len(kernels), tuple(missing))


def load_calibration(table_dir: str | Path) -> dict[str, Any] | None:
    """The table's calibration.json (scale and intercept fitted on whole models) if it matches table.csv, else None."""
    import json
    import warnings

    from hwsearch.latency.calibrate import table_hash

    path = Path(table_dir) / "calibration.json"
    if not path.is_file():
        return None
    cal = json.loads(path.read_text())
    if cal.get("table_sha256") != table_hash(table_dir) or "scale" not in cal:
        warnings.warn(f"{str(path)!r} was fitted on another table.csv; predicting uncalibrated. Re-run the calibration.", stacklevel=2)
        return None
    return cal


def load_predictor(table_dir: str | Path, model: Any, space: Any, strict: bool = False, seq_len: int = 128, calibrated: bool = True) -> TransformerPredictor:
    """Load the block table (and its calibration.json unless ``calibrated=False``) for ``model``'s policies."""
    table = load_table(table_dir)
    seq = table.meta.get("seq_len")
    if seq is not None and int(seq) != int(seq_len):
        raise HwsearchError(f"Latency table {str(table_dir)!r} was measured at seq_len={seq}, the task uses seq_len={seq_len}; set task_options.seq_len = {seq} or profile a table at {seq_len} tokens.")
    if not any(k.op in OPS for k in table.us):
        raise HwsearchError(f"Latency table {str(table_dir)!r} has no transformer blocks; use a table profiled with --task minilm (e.g. latency_tables/minilm-cpu-1t).")
    return TransformerPredictor(table, model, space, seq_len, strict, load_calibration(table_dir) if calibrated else None)


def measure_kernel(k: Kernel, settings: Any, ms: Any) -> tuple[float, float, int]:
    from hwsearch.latency.profile import time_model

    with tempfile.TemporaryDirectory() as tmp:
        path = write_kernel_model(k, Path(tmp) / "k.onnx")
        return time_model(path, settings, ms, feed=kernel_feed(k))
