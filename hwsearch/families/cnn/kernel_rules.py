"""The CNN family's per-kernel rules: output size, calibration class, and the interpolation neighbours and work measure."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace

from hwsearch.tables.kernels import Kernel


def out_hw(k: Kernel | tuple) -> tuple[int, int]:
    """A kernel's output spatial size (convs pad k // 2; pools do not pad)."""
    op, h, w, kk, st = (k[0], k[4], k[5], k[7], k[8]) if isinstance(k, tuple) else (k.op, k.h, k.w, k.k, k.s)
    if op in ("conv", "maxpool", "avgpool"):
        pad = kk // 2 if op == "conv" else 0
        return (h + 2 * pad - kk) // st + 1, (w + 2 * pad - kk) // st + 1
    if op == "gap":
        return 1, 1
    return h, w


def depthwise(c: int, g: int) -> bool:
    """A conv with ``c`` input channels in ``g`` groups is depthwise: one input channel per group."""
    return g > 1 and g == c


def nchwc_blocked(c: int, co: int, g: int, block: int) -> bool:
    """Whether ORT's NCHWc transformer can block a conv's groups (measured on ORT's optimised graphs): a dense or
    depthwise conv always can (a dense conv's channel counts are padded to whole blocks); a grouped conv (ResNeXt,
    RegNet) only when each group's input and output channels fill whole blocks, else it stays a plain NCHW conv."""
    return g == 1 or depthwise(c, g) or (c // g) % block == 0 and (co // g) % block == 0


def kernel_class(t: tuple) -> str:
    """The calibration class of a kernel tuple (op, precision, layout, c, h, w, co, k, s, g, act, sum)."""
    op, prec, _, c, _, _, _, k, _, g = t[:10]
    if op == "conv":
        kind = "dw" if depthwise(c, g) else "k1" if k == 1 else "kxk"
        return f"conv-{prec}-{kind}"
    if op in ("reorder_in", "reorder_out"):
        return "reorder"
    if op in ("quantize", "dequantize"):
        return "qdq"
    if op in ("to_nhwc", "to_nchw"):
        return "transpose"
    if op in ("maxpool", "avgpool", "gap", "flatten"):
        return f"pool-{prec}"
    return f"{op}-{prec}"


def work(t: tuple) -> float:
    """Interpolation measure: MACs for conv/gemm, C·H·W elements otherwise."""
    k = Kernel(*t)
    oh, ow = out_hw(k)
    if k.op in ("conv", "gemm"):
        return float(oh * ow * max(k.co, 1) * max(k.c // max(k.g, 1), 1) * max(k.k, 1) ** 2)
    return float(max(k.c, 1) * k.h * k.w)


def neighbours_key(t: tuple) -> Hashable:
    """Kernels that differ only in channel counts (depthwise-ness kept): the pool a missing kernel is interpolated from."""
    k = Kernel(*t)
    return replace(k, c=0, co=0, g=0 if depthwise(k.c, k.g) else k.g).key
