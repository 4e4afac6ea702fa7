"""The model's unit graph (from its fp32 ONNX export) and the lowering of a policy to kernels.

:class:`UnitGraph` is built once per (model, search space): convs with their folded BN and fused
ReLU, residual adds, pools, flatten and gemm, each with its input/output tensors, spatial sizes
and which layer decides each tensor's channel count. :meth:`UnitGraph.lower` turns a policy into
the list of kernels ORT executes, following ORT's CPU graph rewrites:

* fp32 and fp16 convs run as NCHWc convs (fp16 weights are cast back to fp32 on the CPU provider);
  int8 convs run as ``QLinearConv`` on uint8 NHWC tensors; an int8 gemm runs as ``QGemm`` between a
  Quantize/DequantizeLinear pair, an int8d (dynamic) gemm as one ``DynamicQuantizeMatMul``;
* a residual Add (+ReLU) fuses into the fp32 conv feeding it when the skip tensor is NCHWc; between
  int8 convs it becomes ``QLinearAdd``; otherwise it runs as a plain NCHW Add (+ReLU);
* every tensor is converted once per representation its consumers need
  (NCHWc ↔ NCHW: Reorder; NCHW ↔ int8 NHWC: Quantize+Transpose / Transpose+Dequantize);
* hard-swish, hard-sigmoid and sigmoid fuse into a float conv like ReLU does; after an int8 conv they
  stay float (a "float island": Dequantize, the activation, Quantize for the next int8 conv), in
  NHWC when an int8 conv or a gate reads the result, else in NCHW after a uint8 Transpose;
* a squeeze-excitation gate (``mul``) runs as a plain NCHW Mul between float convs and in float
  NHWC between int8 ones; a global pool between int8 convs is ``QLinearGlobalAveragePool``, one that
  reads a float island transposes it back to NCHW first; x·sigmoid(x) runs as one ``QuickGelu``;
* a channel concatenation (GhostNet) stays NCHWc when every input is NCHWc with channels that fill
  whole blocks, else runs in NCHW; it is ``QLinearConcat`` (uint8 NHWC) when every input and the result
  are quantized (an int8 conv reads each, or makes it), else a float Concat of
  dequantized inputs (in NHWC when an int8 conv reads the result); a slice of leading channels runs
  on uint8 when an int8 conv reads it (the QuantizeLinear moves above it), else in float NCHW (NHWC
  inside a float NHWC region).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from hwsearch.families.cnn.kernel_rules import kernel_class, nchwc_blocked, neighbours_key, out_hw, work
from hwsearch.families.cnn.parse import Unit, parse_units
from hwsearch.policy import Policy
from hwsearch.space import SearchSpace

KTuple = tuple  # (op, precision, layout, c, h, w, co, k, s, g, act, sum): Kernel's fields in order
_CONV_OPS = {  # conversion op -> (precision, layout it reads)
    "reorder_in": ("fp32", "nchw"), "reorder_out": ("fp32", "nchwc"), "quantize": ("int8", "nchw"),
    "dequantize": ("int8", "nchw"), "to_nhwc": ("int8", "nchw"), "to_nchw": ("int8", "nhwc"),
    "to_nhwc_f": ("fp32", "nchw"), "to_nchw_f": ("fp32", "nhwc"),  # float transposes around a float NHWC island
}
FLOAT_ACTS = ("hswish", "hsigmoid", "sigmoid", "silu")  # activations an int8 conv cannot absorb (ReLU is True and is absorbed)
INT8_WORLD = ("q", "qnchw", "fnhwc")  # representations next to int8 convs: uint8 (NHWC or NCHW) and float NHWC
PASS_THROUGH = ("add", "mul", "act", "silu", "concat", "slice")  # float units a float NHWC region extends through to an int8 reader


@dataclass(frozen=True)
class UnitGraph:
    units: tuple[Unit, ...]
    tensor_source: tuple  # per tensor: the layer whose out channels it has, a fixed count, or a tuple of these (a concatenation: their sum)
    consumers: tuple[tuple[int, ...], ...]  # per tensor: indices of consuming units
    layer_group: dict[str, int]  # layer -> index of the group that cuts its output channels
    layer_channels: dict[str, int]  # unpruned out channels per layer
    block: int  # NCHWc block size of this CPU (16 with AVX-512, 8 with AVX2)

    @classmethod
    def from_model(cls, model: nn.Module, example_input, space: SearchSpace, block: int) -> UnitGraph:
        from hwsearch.runtime.onnx_export import export

        with tempfile.TemporaryDirectory() as tmp:
            path = export(model, example_input[:1], Path(tmp) / "baseline.onnx")
            units, source, consumers, channels = parse_units(path)
        layer_group = {layer: i for i, g in enumerate(space.groups) for layer in g.layers}
        return cls(tuple(units), tuple(source), tuple(consumers), layer_group, channels, block)

    def layer_kept(self, space: SearchSpace, layer: str, ratio: float) -> int:
        """Out channels ``layer`` keeps when its group keeps ``ratio``: the group's kept count, scaled for a layer that
        holds a share of the group's channels (GhostNet: each half of a concatenation that a residual add couples)."""
        g = space.groups[self.layer_group[layer]]
        return space.kept_channels(g, ratio) * self.layer_channels[layer] // g.channels

    def tensor_channels(self, space: SearchSpace, policy: Policy) -> list[int]:
        ratios = {g.name: policy.keep_for(g.name) for g in space.groups}
        out = {layer: self.layer_kept(space, layer, ratios[space.groups[self.layer_group[layer]].name]) if layer in self.layer_group else c
               for layer, c in self.layer_channels.items()}

        def resolve(src) -> int:
            return sum(map(resolve, src)) if isinstance(src, tuple) else out[src] if isinstance(src, str) else src

        return [resolve(s) for s in self.tensor_source]

    def lower(self, space: SearchSpace, policy: Policy) -> list[KTuple]:
        """The kernels ORT executes for ``policy``, in execution order (conversions after producers)."""
        ch = self.tensor_channels(space, policy)
        low = _Lowering(self, ch, {layer: policy.precision_for(layer) for layer in self.layer_channels})
        return low.run()


class _Lowering:
    """One policy's pass over the unit graph (see the module docstring for the rules)."""

    def __init__(self, graph: UnitGraph, channels: list[int], precision: dict[str, str]) -> None:
        self.g, self.ch, self.prec = graph, channels, precision
        units = graph.units
        self.qconv = [u.kind == "conv" and precision.get(u.name) == "int8" for u in units]
        self.quantized = self._quantized()
        self.rep: dict[int, str] = {0: "nchw"}  # tensor id -> representation it is produced in
        self.need: dict[int, list[str]] = {}
        self.hw: dict[int, tuple[int, int]] = {}
        self.kernels: list[KTuple] = []
        self.conv_kernel: dict[int, int] = {}  # fp32 conv output tensor -> index of its kernel
        self.producer = {u.output: i for i, u in enumerate(graph.units)}  # tensor -> index of the unit that makes it
        self._fill_reaches_int8()

    def _quantized(self) -> list[bool]:
        """A tensor is quantized when an int8 conv produces or reads it (QDQ puts Q on it; a ReLU before Q is dropped).

        A max-pool whose input an int8 conv produced is quantized too and runs on uint8 NHWC; one
        whose input comes from a float conv stays float even when an int8 conv reads its output."""
        quantized = [False] * len(self.g.consumers)
        self.q_produced = [False] * len(self.g.consumers)
        for q, u in zip(self.qconv, self.g.units):
            if q:
                quantized[u.inputs[0]] = True
                if u.act not in FLOAT_ACTS:  # a float activation after it leaves its output float
                    quantized[u.output] = self.q_produced[u.output] = True
        qgemm_in = {u.inputs[0] for u in self.g.units if u.kind == "gemm" and self.prec.get(u.name) == "int8"}
        for u in reversed(self.g.units):  # an int8 gemm (or conv) reading a flattening Reshape: the QuantizeLinear moves above the Reshape
            if u.kind == "reshape" and (quantized[u.output] or u.output in qgemm_in):
                quantized[u.output] = quantized[u.inputs[0]] = True
        for u in self.g.units:  # execution order: the producer's Q/DQ carries through a max-pool, and through a global pool read by an int8 conv
            if u.kind == "maxpool" and self.q_produced[u.inputs[0]]:
                quantized[u.output] = self.q_produced[u.output] = True
            if u.kind in ("gap", "avgpool") and self.q_produced[u.inputs[0]] and quantized[u.output]:
                self.q_produced[u.output] = True
        for u in self.g.units:  # float producer, int8 reader: the QuantizeLinear moves above the max-pool
            if u.kind == "maxpool" and quantized[u.output] and not self.q_produced[u.inputs[0]]:
                quantized[u.inputs[0]] = True
        for u in reversed(self.g.units):  # an int8 reader of a slice: the QuantizeLinear moves above the slice
            if u.kind == "slice" and quantized[u.output]:
                quantized[u.inputs[0]] = True
        for u in self.g.units:  # QLinearConcat: every input and the result are quantized (each has its Q/DQ pair)
            if u.kind == "concat" and quantized[u.output] and all(quantized[t] for t in u.inputs):
                self.q_produced[u.output] = True
            if u.kind == "slice" and quantized[u.output]:
                self.q_produced[u.output] = True
        return quantized

    def _fill_reaches_int8(self) -> None:
        """``reaches_int8[t]``: whether a path from tensor ``t`` through float element-wise units, concatenations and
        slices ends in an int8 reader: ORT's transpose optimiser then keeps that float region in NHWC (transposing
        only for other readers). Filled once, each tensor after the tensors its readers make."""
        self.reaches_int8 = [False] * len(self.g.consumers)
        for t in sorted(range(len(self.reaches_int8)), key=lambda t: self.producer.get(t, -1), reverse=True):
            self.reaches_int8[t] = any(self.qconv[j] or self.g.units[j].kind in PASS_THROUGH and self._int8_bound(self.g.units[j].output)
                                       for j in self.g.consumers[t])

    def _int8_bound(self, t: int) -> bool:
        """Tensor ``t`` is quantized, or feeds an int8 reader through float pass-through units."""
        return self.quantized[t] or self.reaches_int8[t]

    def require(self, tensor: int, rep: str, hw: tuple[int, int]) -> None:
        self.need.setdefault(tensor, []).append(rep)
        self.hw[tensor] = hw

    def run(self) -> list[KTuple]:
        for i, u in enumerate(self.g.units):
            getattr(self, f"_{u.kind}")(i, u)
        for tensor, reps in self.need.items():
            self._convert(tensor, reps)
        return self.kernels

    def _emit(self, op: str, tensor: int) -> None:
        prec, lay = _CONV_OPS[op]
        h, w = self.hw[tensor]
        self.kernels.append((op, prec, lay, self.ch[tensor], h, w, 0, 0, 1, 1, False, False))

    def _convert(self, t: int, reps: list[str]) -> None:
        src = self.rep[t]
        if src == "fnhwc":  # a float NHWC tensor: Quantize for int8 readers, a Transpose back to NCHW for the others
            if "q" in reps or self.quantized[t]:
                self._emit("quantize", t)
            if any(r in ("nchw", "nchwc", "nchwc2") for r in reps):
                if self.quantized[t] and self.producer.get(t) is not None and self.g.units[self.producer[t]].kind in ("add", "concat", "slice"):
                    self._emit("to_nchw", t)  # its Q -> DQ pair: the float readers read a uint8 Transpose, then a DequantizeLinear
                    self._emit("dequantize", t)
                else:
                    self._emit("to_nchw_f", t)
                if any(r in ("nchwc", "nchwc2") for r in reps):
                    self._emit("reorder_in", t)
            return
        if "fnhwc" in reps and src in ("nchw", "nchwc"):  # a float tensor read inside a float NHWC island
            if src == "nchwc":
                self._emit("reorder_out", t)
            self._emit("to_nhwc_f", t)
            reps = [r for r in reps if r != "fnhwc"]
        if src == "nchwc2":  # an fp16 conv's NCHWc output: its second-pass NCHWc readers take it as is
            reps = [r for r in reps if r != "nchwc2"]
            if not reps:
                return
            if not self.quantized[t]:  # everyone else gets it back in NCHW, then first-pass reorders as before
                self._emit("reorder_out", t)
                if "nchwc" in reps:
                    self._emit("reorder_in", t)
                return
            src = "nchwc"
        island = reps.count("fnhwc") if src == "q" else 0  # dequantized in NHWC, once per reader
        reps = [r for r in reps if r != "fnhwc"]
        floats = ["nchwc" if r == "nchwc2" else r for r in reps if r not in ("q", "qnchw")]
        if not self.quantized[t]:
            if src == "nchwc" and ("nchw" in floats or "nchwc2" in reps):
                self._emit("reorder_out", t)
            if "nchwc2" in reps:  # second-pass reorder of its own, even beside a first-pass one
                self._emit("reorder_in", t)
            if src == "nchw" and "nchwc" in [r for r in reps if r != "nchwc2"]:
                self._emit("reorder_in", t)
            return
        for _ in range(island):
            self._emit("dequantize", t)
        if src == "q":
            if floats or "qnchw" in reps:
                self._emit("to_nchw", t)
        elif src == "qnchw":  # a QLinearAdd's NCHW output
            if "q" in reps:
                self._emit("to_nhwc", t)
        else:
            if src == "nchwc":
                self._emit("reorder_out", t)
            self._emit("quantize", t)
            if "q" in reps:
                self._emit("to_nhwc", t)
        for r in floats:  # ORT duplicates the DequantizeLinear for every float consumer
            self._emit("dequantize", t)
            if r == "nchwc":
                self._emit("reorder_in", t)

    def _conv(self, i: int, u: Unit) -> None:
        x, y = u.inputs[0], u.output
        c, co = self.ch[x], self.ch[y]
        g = u.conv_groups(c)
        if self.qconv[i]:
            self.require(x, "q", u.hw)
            self.rep[y] = "q"
            self.kernels.append(("conv", "int8", "nhwc", c, *u.hw, co, u.k, u.s, g, False, False))
            if u.act in FLOAT_ACTS:
                self._island(u, y, co, out_hw(self.kernels[-1]))
            return
        act = u.act if u.act in FLOAT_ACTS else u.act and not self.quantized[y]
        small_in = g == 1 and c < self.g.block  # such dense convs read NCHW input directly
        fused = False if act == "silu" else act  # SiLU is no conv activation: one QuickGelu after the conv
        if not small_in and not u.depthwise and c % 4 or not nchwc_blocked(c, co, g, self.g.block):  # channels ORT cannot block: a plain NCHW (Fused)Conv
            self.require(x, "nchw", u.hw)
            self.rep[y] = "nchw"
            self.kernels.append(("conv", "fp32", "nchw", c, *u.hw, co, u.k, u.s, g, fused, False))
        elif self.prec.get(u.name) == "fp16":  # NCHWc in ORT's second pass, once the fp16 weights are cast back to fp32
            self.require(x, "nchw" if small_in else "nchwc2", u.hw)
            self.rep[y] = "nchwc2"
            self.kernels.append(("conv", "fp32", "nchwc", c, *u.hw, co, u.k, u.s, g, fused, False))
        else:
            self.require(x, "nchw" if small_in else "nchwc", u.hw)
            self.rep[y] = "nchwc"
            if act not in FLOAT_ACTS:  # a conv with a float activation fused takes no Sum input
                self.conv_kernel[y] = len(self.kernels)
            self.kernels.append(("conv", "fp32", "nchwc", c, *u.hw, co, u.k, u.s, g, fused, False))
        if act == "silu":
            lay = "nchw" if self.rep[y] == "nchw" else "nchwc"
            self.kernels.append(("act", "fp32", lay, co, *out_hw(self.kernels[-1]), 0, 0, 1, 1, "silu", False))

    def _island(self, u: Unit, y: int, co: int, out: tuple[int, int]) -> None:
        """An int8 conv's float activation: Dequantize and the activation, in NHWC when an int8 conv reads the
        result (the Quantize for it follows) or a product with another int8 conv's output does, else in NCHW
        after a uint8 Transpose."""
        oh, ow = out

        def int8_gate(j: int) -> bool:  # a product whose other input an int8 conv makes, or is already uint8 / float NHWC
            other = [t for t in self.g.units[j].inputs if t != y]
            if not other:
                return False
            if other[0] in self.rep:
                return self.rep[other[0]] in INT8_WORLD
            return other[0] in self.producer and self.qconv[self.producer[other[0]]]

        nhwc = any(self.qconv[j] or self.g.units[j].kind == "mul" and int8_gate(j) for j in self.g.consumers[y])
        lay = "nhwc" if nhwc else "nchw"
        if not nhwc:
            self.kernels.append(("to_nchw", "int8", "nhwc", co, oh, ow, 0, 0, 1, 1, False, False))
        if u.act == "silu":  # DQ -> Sigmoid and DQ -> Mul: a DequantizeLinear for each
            self.kernels += [("dequantize", "int8", "nchw", co, oh, ow, 0, 0, 1, 1, False, False)] * 2
            self.kernels.append(("act", "fp32", lay, co, oh, ow, 0, 0, 1, 1, "sigmoid", False))
            self.kernels.append(("mul", "fp32", lay, co, oh, ow, 0, 0, 1, 1, False, False))
        else:
            self.kernels.append(("dequantize", "int8", "nchw", co, oh, ow, 0, 0, 1, 1, False, False))
            self.kernels.append(("act", "fp32", lay, co, oh, ow, 0, 0, 1, 1, u.act, False))
        self.rep[y] = "fnhwc" if nhwc else "nchw"

    def _elementwise(self, x: int, u: Unit, act: bool | str) -> None:
        """A standalone activation (or x·sigmoid(x)) in the layout its input has (a uint8 input is dequantized in NHWC)."""
        src = self.rep[x]
        rep = "fnhwc" if src in INT8_WORLD else "nchwc" if src in ("nchwc", "nchwc2") else "nchw"
        self.require(x, src if src in ("nchwc", "nchwc2", "nchw") else "fnhwc", u.hw)
        self.rep[u.output] = rep
        lay = {"fnhwc": "nhwc"}.get(rep, rep)
        self.kernels.append(("act", "fp32", lay, self.ch[x], *u.hw, 0, 0, 1, 1, act, False))

    def _act(self, i: int, u: Unit) -> None:
        self._elementwise(u.inputs[0], u, u.act)

    def _silu(self, i: int, u: Unit) -> None:
        x = u.inputs[0]
        if self.rep[x] != "q":
            self._elementwise(x, u, "silu")
            return
        # after an int8 conv ORT leaves DQ -> Sigmoid, DQ -> Mul (a DequantizeLinear for each) in float NHWC
        self.require(x, "fnhwc", u.hw)
        self.require(x, "fnhwc", u.hw)
        self.rep[u.output] = "fnhwc"
        self.kernels.append(("act", "fp32", "nhwc", self.ch[x], *u.hw, 0, 0, 1, 1, "sigmoid", False))
        self.kernels.append(("mul", "fp32", "nhwc", self.ch[x], *u.hw, 0, 0, 1, 1, False, False))

    def _mul(self, i: int, u: Unit) -> None:
        """A product of two tensors (``u.k`` = 1: the second is a 1×1 gate): float NHWC next to int8 tensors,
        NCHWc when both inputs are full-size NCHWc, else a plain NCHW Mul."""
        x, gate = u.inputs
        reps = (self.rep[x], self.rep[gate])
        if any(r in INT8_WORLD for r in reps) and self._int8_bound(u.output):
            rep, lay = "fnhwc", "nhwc"
        elif not u.k and reps == ("nchwc", "nchwc"):
            rep = lay = "nchwc"
        else:
            rep = lay = "nchw"
        self.require(x, rep, u.hw)
        self.require(gate, rep, (1, 1) if u.k else u.hw)
        self.rep[u.output] = rep
        self.kernels.append(("mul", "fp32", lay, self.ch[x], *u.hw, 0, u.k, 1, 1, False, False))

    def _add(self, i: int, u: Unit) -> None:
        y = u.output
        a, b = u.inputs
        if not self._fusable(a) and self._fusable(b):
            a, b = b, a
        qa, qb, qy = self.quantized[a], self.quantized[b], self.quantized[y]
        if self._fusable(a) and not (qa or qb) and self.rep.get(b) == "nchwc":
            k = self.conv_kernel[a]
            self.kernels[k] = self.kernels[k][:10] + (u.act and not qy, True)
            self.require(b, "nchwc", u.hw)
            self.rep[y] = "nchwc"
            return
        if qa and qb and qy:
            self.quantized[y] = True
            # ORT's transpose optimizer keeps a QLinearAdd in NCHW when an input was quantized from a float
            # (NCHW) tensor: the NHWC input is transposed to NCHW and the sum transposed back where needed
            rep = "q" if all(self.rep.get(t) == "q" for t in (a, b)) else "qnchw"
            self.require(a, rep, u.hw)
            self.require(b, rep, u.hw)
            self.rep[y] = rep
            self.kernels.append(("add", "int8", "nhwc", self.ch[y], *u.hw, 0, 0, 1, 1, False, False))
            return
        if "fnhwc" in (self.rep.get(a), self.rep.get(b)) and self._int8_bound(y):  # inside a float NHWC region (GhostNet's sliced sums)
            self.require(a, "fnhwc", u.hw)
            self.require(b, "fnhwc", u.hw)
            self.rep[y] = "fnhwc"
            self.kernels.append(("add", "fp32", "nhwc", self.ch[y], *u.hw, 0, 0, 1, 1, u.act and not qy, False))
            return
        lay = "nchwc" if not (qa or qb) and self.rep.get(a) == self.rep.get(b) == "nchwc" else "nchw"  # ORT keeps an Add of two NCHWc tensors blocked
        self.require(a, lay, u.hw)
        self.require(b, lay, u.hw)
        self.rep[y] = lay
        self.kernels.append(("add", "fp32", lay, self.ch[y], *u.hw, 0, 0, 1, 1, u.act and not qy, False))

    def _concat(self, i: int, u: Unit) -> None:
        y, parts = u.output, u.inputs
        reps = [self.rep[t] for t in parts]
        if self.q_produced[y]:  # QLinearConcat: uint8 NHWC, or NCHW when an input is quantized from a float (NCHW) tensor, as for QLinearAdd
            rep = "q" if all(r == "q" for r in reps) else "qnchw"
            for t in parts:
                self.require(t, rep, u.hw)
            self.rep[y] = rep
            self.kernels.append(("concat", "int8", "nhwc" if rep == "q" else "nchw", self.ch[y], *u.hw, 0, len(parts), 1, 1, False, False))
            return
        if any(r in INT8_WORLD for r in reps) and self.reaches_int8[y] or self.quantized[y] and all(r == "fnhwc" for r in reps):
            rep = lay = "fnhwc"
        elif all(r == "nchwc" for r in reps) and all(self.ch[t] % self.g.block == 0 for t in parts):
            rep = lay = "nchwc"
        else:
            rep = lay = "nchw"
        for t in parts:
            self.require(t, rep, u.hw)
        self.rep[y] = rep
        self.kernels.append(("concat", "fp32", {"fnhwc": "nhwc"}.get(lay, lay), self.ch[y], *u.hw, 0, len(parts), 1, 1, False, False))

    def _slice(self, i: int, u: Unit) -> None:
        x, y = u.inputs[0], u.output
        if self.quantized[y]:  # uint8, in the layout its input comes in
            rep = "q" if self.rep[x] == "q" else "qnchw"
            prec = "int8"
        else:
            rep, prec = ("fnhwc" if self.rep[x] in INT8_WORLD and self.reaches_int8[y] else "nchw"), "fp32"
        self.require(x, rep, u.hw)
        self.rep[y] = rep
        lay = {"q": "nhwc", "fnhwc": "nhwc", "qnchw": "nchw"}.get(rep, rep)
        self.kernels.append(("slice", prec, lay, self.ch[x], *u.hw, self.ch[y], 0, 1, 1, False, False))

    def _fusable(self, tensor: int) -> bool:
        """An fp32 conv output read only by this add: the add can become the conv's Sum input."""
        return tensor in self.conv_kernel and len(self.g.consumers[tensor]) == 1

    def _pool(self, u: Unit, op: str) -> None:
        """A float global pool runs NCHWc when its input is NCHWc with channels that fill whole blocks (else an
        NCHWc input is reordered back to NCHW for it); a float max-pool runs NCHWc when its input is NCHWc,
        or when its channels fill whole blocks (ORT then reorders the input into NCHWc for it)."""
        x, y = u.inputs[0], u.output
        whole = self.ch[x] % self.g.block == 0
        if op == "gap" and self.rep[x] == "nchwc2" and whole:  # converted with the fp16 conv before it, in the second pass (so is its output)
            self.require(x, "nchwc2", u.hw)
            self.rep[y] = "nchwc2"
            self.kernels.append((op, "fp32", "nchwc", self.ch[x], *u.hw, 0, u.k, u.s, 1, False, False))
            return
        blocked = self.rep[x] == "nchwc" and whole if op == "gap" else self.rep[x] == "nchwc" or whole
        lay = "nchwc" if blocked and not self.quantized[x] else "nchw"
        self.require(x, lay, u.hw)
        self.rep[y] = lay
        self.kernels.append((op, "fp32", lay, self.ch[x], *u.hw, 0, u.k, u.s, 1, False, False))

    def _maxpool(self, i: int, u: Unit) -> None:
        x, y = u.inputs[0], u.output
        if self.q_produced[x]:  # DQ -> MaxPool -> Q after an int8 conv: uint8 NHWC max-pool
            self.require(x, "q", u.hw)
            self.rep[y] = "q"
            self.kernels.append(("maxpool", "int8", "nhwc", self.ch[x], *u.hw, 0, u.k, u.s, 1, False, False))
            return
        if self.quantized[y]:  # float conv -> MaxPool -> int8 conv: Q at the pool's input, a uint8 NCHW max-pool
            self.require(x, "qnchw", u.hw)
            self.rep[y] = "qnchw"
            self.kernels.append(("maxpool", "int8", "nchw", self.ch[x], *u.hw, 0, u.k, u.s, 1, False, False))
            return
        self._pool(u, "maxpool")

    def _gap(self, i: int, u: Unit) -> None:
        x, y = u.inputs[0], u.output
        if self.q_produced[y]:  # DQ -> GlobalAveragePool -> Q between int8 convs: QLinearGlobalAveragePool on uint8 NHWC
            self.require(x, "q", u.hw)
            self.rep[y] = "q"
            self.kernels.append(("gap", "int8", "nhwc", self.ch[x], *u.hw, 0, u.k, u.s, 1, False, False))
            return
        self._pool(u, "gap")

    def _avgpool(self, i: int, u: Unit) -> None:
        """Between int8 convs a QLinearAveragePool on uint8 NHWC; else a float average pool, NCHWc when its channels
        fill whole blocks (whatever layout its input comes in: ORT reorders it), else NCHW."""
        x, y = u.inputs[0], u.output
        if self.q_produced[y]:
            rep, prec, lay = "q", "int8", "nhwc"
        else:
            rep, prec = ("nchwc" if self.ch[x] % self.g.block == 0 else "nchw"), "fp32"
            lay = rep
        self.require(x, rep, u.hw)
        self.rep[y] = rep
        self.kernels.append(("avgpool", prec, lay, self.ch[x], *u.hw, 0, u.k, u.s, 1, False, False))

    def _flatten(self, i: int, u: Unit) -> None:
        self.require(u.inputs[0], "nchw", u.hw)
        self.rep[u.output] = "nchw"
        self.kernels.append(("flatten", "fp32", "nchw", self.ch[u.inputs[0]], *u.hw, 0, 0, 1, 1, False, False))

    def _reshape(self, i: int, u: Unit) -> None:
        """A flattening Reshape: on uint8 when an int8 layer reads it (Q/DQ move through it), else like Flatten."""
        x, y = u.inputs[0], u.output
        if not self.quantized[y]:
            self._flatten(i, u)
            return
        self.require(x, "qnchw", u.hw)
        self.rep[y] = "qnchw"
        self.kernels.append(("flatten", "int8", "nchw", self.ch[x], *u.hw, 0, 0, 1, 1, False, False))

    def _gemm(self, i: int, u: Unit) -> None:
        x = u.inputs[0]
        prec = self.prec.get(u.name) if self.prec.get(u.name) in ("int8", "int8d") else "fp32"  # int8d: one DynamicQuantizeMatMul
        u8 = prec == "int8" and self.quantized[x]  # a uint8 input (a flattening Reshape's): QGemm without its own QuantizeLinear
        self.require(x, "qnchw" if u8 else "nchw", (1, 1))
        self.rep[u.output] = "nchw"
        self.kernels.append(("gemm", prec, "u8" if u8 else "-", self.ch[x], 1, 1, self.ch[u.output], 0, 1, 1, False, False))


@dataclass(frozen=True)
class CNNLowering:
    """The CNN family's :class:`~hwsearch.families.base.Lowering`: a unit graph and the space it is lowered in."""

    graph: UnitGraph
    space: SearchSpace
    fixed_us: Mapping[tuple, float] = field(default_factory=dict)

    def kernels(self, policy: Policy) -> list[tuple]:
        return self.graph.lower(self.space, policy)

    def fingerprint(self) -> str:
        """A hash of the unpruned unit graph (units, channels, NCHWc block): the key of a model's own calibration."""
        g = self.graph
        text = repr((g.units, sorted(g.layer_channels.items()), g.tensor_source, g.block))
        if any(u.groups > 1 for u in g.units):
            text += repr([u.groups for u in g.units])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    kernel_class = staticmethod(kernel_class)
    neighbours_key = staticmethod(neighbours_key)
    work = staticmethod(work)
