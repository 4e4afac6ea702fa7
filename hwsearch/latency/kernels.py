"""Kernel keys: one record per operator ONNX Runtime really executes after graph optimisation.

On x86 CPUs ORT runs fp32 convolutions in the blocked NCHWc layout (``com.microsoft.nchwc``
Conv with folded BatchNorm, fused ReLU and, for residual blocks, the fused ``Sum`` input),
int8 QDQ convolutions as ``QLinearConv`` on uint8 NHWC tensors, and inserts layout and
precision conversions (ReorderInput / ReorderOutput, QuantizeLinear, DequantizeLinear, uint8 Transpose) where neighbouring kernels disagree. Each of those is a :class:`Kernel`.

Key text (one line, ``;``-separated, stable): ``op;precision;layout;CxHxW;co=..;k=..;s=..;g=..;act;sum``
for example ``conv;fp32;nchwc;32x16x16;co=64;k=3;s=2;g=1;relu;-``.

:func:`build_kernel_model` writes the kernel as a tiny ONNX model whose inputs already have the
layout and dtype the kernel consumes, so timing it measures only that kernel (plus the per-call
overhead, which the profiler measures separately and subtracts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

OPS = ("conv", "gemm", "reorder_in", "reorder_out", "quantize", "dequantize", "to_nhwc", "to_nchw", "add", "maxpool", "gap", "flatten")
_KEY = re.compile(r"^(\w+);(fp32|int8);(\w+|-);(\d+)x(\d+)x(\d+);co=(\d+);k=(\d+);s=(\d+);g=(\d+);(relu|-);(sum|-)$")


@dataclass(frozen=True, order=True)
class Kernel:
    """One executed kernel: operator, executed precision, layout, input shape (C, H, W) and attributes."""

    op: str
    precision: str  # what really executes: fp32 or int8 (fp16 layers run as fp32 on ORT's CPU provider)
    layout: str  # nchwc, nchw, nhwc or - (not spatial)
    c: int
    h: int
    w: int
    co: int = 0
    k: int = 0
    s: int = 1
    g: int = 1
    act: bool = False
    sum: bool = False

    @property
    def key(self) -> str:
        return (f"{self.op};{self.precision};{self.layout};{self.c}x{self.h}x{self.w};co={self.co};k={self.k};s={self.s};g={self.g};"
                f"{'relu' if self.act else '-'};{'sum' if self.sum else '-'}")

    @classmethod
    def parse(cls, key: str) -> "Kernel":
        m = _KEY.match(key.strip())
        if not m:
            raise ValueError(f"Kernel key {key!r} is malformed; expected e.g. 'conv;fp32;nchwc;32x16x16;co=64;k=3;s=2;g=1;relu;-'.")
        op, prec, lay, c, h, w, co, k, s, g, act, sm = m.groups()
        return cls(op, prec, lay, int(c), int(h), int(w), int(co), int(k), int(s), int(g), act == "relu", sm == "sum")

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.op in ("conv", "maxpool"):
            pad = self.k // 2 if self.op == "conv" else 0
            return (self.h + 2 * pad - self.k) // self.s + 1, (self.w + 2 * pad - self.k) // self.s + 1
        if self.op == "gap":
            return 1, 1
        return self.h, self.w

    @property
    def work(self) -> float:
        """A size measure used only to interpolate a missing kernel from its nearest measured neighbours."""
        oh, ow = self.out_hw
        if self.op in ("conv", "gemm"):
            return float(oh * ow * max(self.co, 1) * max(self.c // max(self.g, 1), 1) * max(self.k, 1) ** 2)
        return float(max(self.c, 1) * self.h * self.w)

    def family(self) -> str:
        """Kernels that differ only in channel counts: the pool a missing kernel is interpolated from."""
        return replace(self, c=0, co=0, g=0 if self.g == self.c else 1).key


def pad_to(c: int, block: int) -> int:
    return -(-c // block) * block


def build_kernel_model(kernel: Kernel, block: int):
    """A tiny ONNX ModelProto that runs exactly ``kernel`` (inputs already in its layout and dtype)."""
    from hwsearch.latency import _builders

    return _builders.build(kernel, block)


def random_feed(inputs) -> dict[str, np.ndarray]:
    """Random inputs for an ORT session's ``get_inputs()`` list (float32 or uint8)."""
    rng = np.random.default_rng(0)
    feed = {}
    for arg in inputs:
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        if "uint8" in arg.type:
            feed[arg.name] = rng.integers(0, 255, size=shape, dtype=np.uint8)
        else:
            feed[arg.name] = rng.standard_normal(shape).astype(np.float32)
    return feed
