"""What ``hwsearch profile`` measures for a CNN: every kernel any policy of a space can lower to, and how to time one."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterable
from pathlib import Path

from hwsearch.families.cnn.kernel_models import build_kernel_model
from hwsearch.families.cnn.kernel_rules import nchwc_blocked, out_hw
from hwsearch.families.cnn.lowering import _CONV_OPS, UnitGraph
from hwsearch.runtime.session import SessionSettings
from hwsearch.runtime.timing import MeasureSettings, Timing, time_model
from hwsearch.space import SearchSpace
from hwsearch.tables.kernels import Kernel


def _channel_choices(graph: UnitGraph, space: SearchSpace) -> list[tuple[int, ...]]:
    """Per tensor: every channel count the search space can give it (a concatenation: every sum of its parts' counts)."""
    def choices(src) -> set[int]:
        if isinstance(src, tuple):
            return {sum(c) for c in itertools.product(*map(choices, src))}
        if isinstance(src, int):
            return {src}
        if src in graph.layer_group:
            return {graph.layer_kept(space, src, r) for r in space.keep_choices}
        return {graph.layer_channels[src]}

    return [tuple(sorted(choices(src))) for src in graph.tensor_source]


def enumerate_kernels(graph: UnitGraph, space: SearchSpace) -> list[Kernel]:
    """Every kernel any policy of ``space`` lowers to: all keep choices × precisions per unit and tensor."""
    choices = _channel_choices(graph, space)
    gemm_precs = ("fp32", "int8", "int8d")  # like int8, int8d gemms are profiled whatever space.precisions offers (one kernel per shape)
    found: set[tuple] = set()
    for u in graph.units:
        x, y = u.inputs[0], u.output
        if u.kind == "concat":
            found.update(k for co in choices[y] for k in _concat_kernels(len(u.inputs), co, *u.hw))
            continue
        same = u.kind == "slice" and graph.tensor_source[x] == graph.tensor_source[y]  # a slice that keeps every channel
        for c, co in zip(choices[x], choices[y]) if same else itertools.product(choices[x], choices[y]):
            found.update(_unit_kernels(u, c, co, graph.block, gemm_precs))
            if u.kind == "gemm" and any(v.kind == "reshape" and v.output == x for v in graph.units):  # uint8 input after a flattening Reshape
                found.add(("gemm", "int8", "u8", c, 1, 1, co, 0, 1, 1, False, False))
    for t, cs in enumerate(choices):
        hw = _tensor_hw(graph, t)
        for c in cs:
            for op, (prec, lay) in _CONV_OPS.items():
                if op == "reorder_in" and c % 4:
                    continue  # ORT reorders into NCHWc only channel counts divisible by 4 (smaller inputs feed NCHW convs)
                found.add((op, prec, lay, c, *hw, 0, 0, 1, 1, False, False))
    return sorted(Kernel(*k) for k in found)


def _tensor_hw(graph: UnitGraph, tensor: int) -> tuple[int, int]:
    for u in graph.units:
        if tensor in u.inputs:
            return (1, 1) if u.kind == "gemm" else u.hw
    return (1, 1)


def _float_acts(act, c: int, h: int, w: int) -> list[tuple]:
    """The float kernels of a standalone activation (or one ORT cannot absorb), in every layout it can run in."""
    if act == "silu":
        out = [("act", "fp32", lay, c, h, w, 0, 0, 1, 1, "silu", False) for lay in ("nchwc", "nchw", "nhwc")]
        return out + [k for lay in ("nchw", "nhwc") for k in (("act", "fp32", lay, c, h, w, 0, 0, 1, 1, "sigmoid", False),
                                                                 ("mul", "fp32", lay, c, h, w, 0, 0, 1, 1, False, False))]
    return [("act", "fp32", lay, c, h, w, 0, 0, 1, 1, act, False) for lay in ("nchwc", "nchw", "nhwc")]


def _concat_kernels(parts: int, c: int, h: int, w: int) -> list[tuple]:
    return [("concat", p, lay, c, h, w, 0, parts, 1, 1, False, False)
            for p, lay in (("int8", "nhwc"), ("int8", "nchw"), ("fp32", "nhwc"), ("fp32", "nchw"), ("fp32", "nchwc"))]


def _unit_kernels(u, c: int, co: int, block: int, gemm_precs: tuple[str, ...] = ("fp32", "int8")) -> Iterable[tuple]:
    h, w = u.hw
    if u.kind == "conv":
        g = u.conv_groups(c)
        if u.depthwise and c != co or c % g or co % g:
            return []
        out = [("conv", "int8", "nhwc", c, h, w, co, u.k, u.s, g, False, False)]
        acts = (False, True) if not isinstance(u.act, str) else (False,) if u.act == "silu" else (u.act,)
        lays = ("nchw",) if not nchwc_blocked(c, co, g, block) else ("nchwc", "nchw") if not u.depthwise and c >= block and c % 4 else ("nchwc",)
        out += [("conv", "fp32", lay, c, h, w, co, u.k, u.s, g, act, sm) for lay in lays for act in acts for sm in (False, True)]
        if isinstance(u.act, str):
            oh, ow = out_hw(out[0])
            out += _float_acts(u.act, co, oh, ow)
        return out
    if u.kind in ("act", "silu"):
        return _float_acts("silu" if u.kind == "silu" else u.act, c, h, w)
    if u.kind == "mul":
        return [("mul", "fp32", lay, c, h, w, 0, u.k, 1, 1, False, False) for lay in ("nchw", "nhwc") + (() if u.k else ("nchwc",))]
    if u.kind == "gemm":
        return [("gemm", p, "-", c, 1, 1, co, 0, 1, 1, False, False) for p in gemm_precs]
    if u.kind == "slice":
        return [("slice", p, lay, c, h, w, co, 0, 1, 1, False, False) for p, lay in (("int8", "nhwc"), ("int8", "nchw"), ("fp32", "nhwc"), ("fp32", "nchw"))
                if co <= c]
    if u.kind == "add":
        return [("add", "int8", "nhwc", c, h, w, 0, 0, 1, 1, False, False)] + [("add", "fp32", lay, c, h, w, 0, 0, 1, 1, a, False) for a in {u.act, False}
                                                                              for lay in ("nchw", "nchwc", "nhwc")]
    if u.kind == "avgpool":
        return [("avgpool", "int8", "nhwc", c, h, w, 0, u.k, u.s, 1, False, False)] + [("avgpool", "fp32", lay, c, h, w, 0, u.k, u.s, 1, False, False)
                                                                                      for lay in ("nchwc", "nchw")]
    if u.kind in ("maxpool", "gap"):
        extra = [("maxpool", "int8", lay, c, h, w, 0, u.k, u.s, 1, False, False) for lay in ("nhwc", "nchw")] if u.kind == "maxpool" else \
            [("gap", "int8", "nhwc", c, h, w, 0, u.k, u.s, 1, False, False)]
        return extra + [(u.kind, "fp32", lay, c, h, w, 0, u.k, u.s, 1, False, False) for lay in ("nchwc", "nchw")]
    if u.kind == "reshape":
        return [("flatten", p, "nchw", c, h, w, 0, 0, 1, 1, False, False) for p in ("fp32", "int8")]
    return [("flatten", "fp32", "nchw", c, h, w, 0, 0, 1, 1, False, False)]


def kernel_timer(block: int):
    """Times one CNN kernel as its single-kernel ONNX model (:func:`build_kernel_model`)."""
    def measure(kernel: Kernel, settings: SessionSettings, timing: MeasureSettings) -> Timing:
        import onnx

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "k.onnx"
            onnx.save(build_kernel_model(kernel, block), str(path))
            return time_model(path, settings, timing)
    return measure
