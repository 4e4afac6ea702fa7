"""Tiny single-kernel ONNX models, written directly in the form ORT executes after optimisation.

:func:`build_kernel_model` writes one CNN kernel as a tiny ONNX model whose inputs already have
the layout and dtype the kernel consumes, so timing it measures only that kernel (plus the
per-call overhead, which the profiler measures separately and subtracts).
"""

from __future__ import annotations

import numpy as np

from hwsearch.families.cnn.kernel_rules import depthwise, out_hw
from hwsearch.tables.kernels import Kernel

OPS = ("conv", "gemm", "reorder_in", "reorder_out", "quantize", "dequantize", "to_nhwc", "to_nchw", "to_nhwc_f", "to_nchw_f", "add", "mul", "act",
       "concat", "slice", "maxpool", "avgpool", "gap", "flatten")
# a float conv's fused activation: (NCHWc Conv ``activation``, its ``activation_params``)
HSIGMOID = {"alpha": 1 / 6, "beta": 0.5}  # torch's hard-sigmoid, as it exports
CONV_ACTIVATION = {True: ("Relu", None), "hswish": ("HardSwish", None), "hsigmoid": ("HardSigmoid", list(HSIGMOID.values())), "sigmoid": ("Sigmoid", None)}

NCHWC = "com.microsoft.nchwc"
MS = "com.microsoft"


def _h():
    from onnx import TensorProto, helper, numpy_helper

    return helper, TensorProto, numpy_helper


def _init(name: str, arr: np.ndarray):
    return _h()[2].from_array(arr, name)


def _vi(name: str, dtype: str, shape: list[int]):
    helper, T, _ = _h()
    return helper.make_tensor_value_info(name, {"f": T.FLOAT, "u8": T.UINT8}[dtype], shape)


def _model(nodes, inputs, outputs, inits):
    helper = _h()[0]
    graph = helper.make_graph(nodes, "kernel", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1), helper.make_opsetid(NCHWC, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _rand(shape, dtype=np.float32, scale: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(1)
    if dtype == np.int8:
        return rng.integers(-64, 64, size=shape, dtype=np.int8)
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _conv_fp32(kn: Kernel, block: int):
    helper = _h()[0]
    oh, ow = out_hw(kn)
    if kn.layout == "nchw":  # input channels ORT cannot block: a plain (Fused)Conv, as ORT's optimiser makes it from this
        w = _rand([kn.co, kn.c // kn.g, kn.k, kn.k])
        nodes = [helper.make_node("Conv", ["x", "W", "B"], ["z" if kn.act else "y"], kernel_shape=[kn.k, kn.k], strides=[kn.s, kn.s],
                                  pads=[kn.k // 2] * 4, group=kn.g)]
        if kn.act:
            nodes += _activation("z", "y", kn.act)
        return _model(nodes, [_vi("x", "f", [1, kn.c, kn.h, kn.w])], [_vi("y", "f", [1, kn.co, oh, ow])], [_init("W", w), _init("B", _rand([kn.co]))])
    cop = pad_to(kn.co, block)
    dw = depthwise(kn.c, kn.g)
    nchw_in = kn.g == 1 and kn.c < block
    cin = kn.c if nchw_in else pad_to(kn.c, block)
    groups = cop if dw else kn.g  # a blocked grouped conv's channels already fill whole blocks per group
    w = _rand([cop, 1 if dw else cin // groups, kn.k, kn.k])
    inputs = [_vi("x", "f", [1, cin, kn.h, kn.w])]
    names = ["x", "W", "B"]
    if kn.sum:
        inputs.append(_vi("s", "f", [1, cop, oh, ow]))
        names.append("s")
    attrs = dict(kernel_shape=[kn.k, kn.k], strides=[kn.s, kn.s], pads=[kn.k // 2] * 4, group=groups)
    if kn.act:
        attrs["activation"], params = CONV_ACTIVATION[kn.act]
        if params:
            attrs["activation_params"] = params
    node = helper.make_node("Conv", names, ["y"], domain=NCHWC, **attrs)
    return _model([node], inputs, [_vi("y", "f", [1, cop, oh, ow])], [_init("W", w), _init("B", _rand([cop]))])


def _qparams(prefix: str, n: int | None = None) -> list:
    if n is None:
        return [_init(f"{prefix}_s", np.array(0.05, np.float32)), _init(f"{prefix}_z", np.array(128, np.uint8))]
    return [_init(f"{prefix}_s", np.full([n], 0.01, np.float32)), _init(f"{prefix}_z", np.zeros([n], np.int8))]


def _conv_int8(kn: Kernel, block: int):
    helper = _h()[0]
    oh, ow = out_hw(kn)
    cin_g = kn.c // kn.g
    inits = _qparams("x") + _qparams("w", kn.co) + _qparams("y") + [_init("W", _rand([kn.co, cin_g, kn.k, kn.k], np.int8)), _init("B", np.zeros([kn.co], np.int32))]
    node = helper.make_node("QLinearConv", ["x", "x_s", "x_z", "W", "w_s", "w_z", "y_s", "y_z", "B"], ["y"], domain=MS, channels_last=1,
                            kernel_shape=[kn.k, kn.k], strides=[kn.s, kn.s], pads=[kn.k // 2] * 4, group=kn.g)
    return _model([node], [_vi("x", "u8", [1, kn.h, kn.w, kn.c])], [_vi("y", "u8", [1, oh, ow, kn.co])], inits)


def _gemm(kn: Kernel, block: int):
    helper = _h()[0]
    if kn.precision == "fp32":
        node = helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)
        return _model([node], [_vi("x", "f", [1, kn.c])], [_vi("y", "f", [1, kn.co])], [_init("W", _rand([kn.co, kn.c])), _init("B", _rand([kn.co]))])
    if kn.precision == "int8d":  # dynamic int8: what ORT fuses a dynamically quantized MatMul + bias Add into
        node = helper.make_node("DynamicQuantizeMatMul", ["x", "W", "w_s", "w_z", "B"], ["y"], domain=MS)
        inits = [_init("W", _rand([kn.c, kn.co], np.int8)), _init("w_s", np.full([kn.co], 0.01, np.float32)),
                 _init("w_z", np.zeros([kn.co], np.int8)), _init("B", _rand([kn.co]))]
        return _model([node], [_vi("x", "f", [1, kn.c])], [_vi("y", "f", [1, kn.co])], inits)
    if kn.layout == "u8":  # a uint8 input (after a flattening Reshape): no QuantizeLinear of its own
        node = helper.make_node("QGemm", ["x", "x_s", "x_z", "W", "w_s", "w_z", "B", "y_s", "y_z"], ["yq"], domain=MS, transB=1)
        inits = _qparams("x") + _qparams("y") + [_init("W", _rand([kn.co, kn.c], np.int8)), _init("w_s", np.array(0.01, np.float32)),
                                                 _init("w_z", np.array(0, np.int8)), _init("B", np.zeros([kn.co], np.int32))]
        return _model([node, helper.make_node("DequantizeLinear", ["yq", "y_s", "y_z"], ["y"])], [_vi("x", "u8", [1, kn.c])], [_vi("y", "f", [1, kn.co])], inits)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
        helper.make_node("QGemm", ["xq", "x_s", "x_z", "W", "w_s", "w_z", "B", "y_s", "y_z"], ["yq"], domain=MS, transB=1),
        helper.make_node("DequantizeLinear", ["yq", "y_s", "y_z"], ["y"]),
    ]
    inits = _qparams("x") + _qparams("y") + [_init("W", _rand([kn.co, kn.c], np.int8)), _init("w_s", np.array(0.01, np.float32)),
                                             _init("w_z", np.array(0, np.int8)), _init("B", np.zeros([kn.co], np.int32))]
    return _model(nodes, [_vi("x", "f", [1, kn.c])], [_vi("y", "f", [1, kn.co])], inits)


def _layout_change(kn: Kernel, block: int):
    helper = _h()[0]
    c, cp, hw = kn.c, pad_to(kn.c, block), [kn.h, kn.w]
    if kn.op == "reorder_in":
        return _model([helper.make_node("ReorderInput", ["x"], ["y"], domain=NCHWC, channels_last=0)], [_vi("x", "f", [1, c, *hw])], [_vi("y", "f", [1, cp, *hw])], [])
    if kn.op == "reorder_out":
        return _model([helper.make_node("ReorderOutput", ["x"], ["y"], domain=NCHWC, channels=c, channels_last=0)], [_vi("x", "f", [1, cp, *hw])], [_vi("y", "f", [1, c, *hw])], [])
    if kn.op == "quantize":
        return _model([helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["y"])], [_vi("x", "f", [1, c, *hw])], [_vi("y", "u8", [1, c, *hw])], _qparams("x"))
    if kn.op == "dequantize":
        return _model([helper.make_node("DequantizeLinear", ["x", "x_s", "x_z"], ["y"])], [_vi("x", "u8", [1, c, *hw])], [_vi("y", "f", [1, c, *hw])], _qparams("x"))
    dt = "f" if kn.op.endswith("_f") else "u8"  # to_nhwc_f / to_nchw_f: float transposes around a float NHWC island
    if kn.op.startswith("to_nhwc"):
        return _model([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], [_vi("x", dt, [1, c, *hw])], [_vi("y", dt, [1, *hw, c])], [])
    return _model([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 3, 1, 2])], [_vi("x", dt, [1, *hw, c])], [_vi("y", dt, [1, c, *hw])], [])


def _add(kn: Kernel, block: int):
    helper = _h()[0]
    shape = _shape(kn, block)  # int8: uint8 NHWC
    if kn.precision == "int8":
        node = helper.make_node("QLinearAdd", ["a", "x_s", "x_z", "b", "x_s", "x_z", "y_s", "y_z"], ["y"], domain=MS)
        return _model([node], [_vi("a", "u8", shape), _vi("b", "u8", shape)], [_vi("y", "u8", shape)], _qparams("x") + _qparams("y"))
    nodes = [helper.make_node("Add", ["a", "b"], ["z" if kn.act else "y"])] + ([helper.make_node("Relu", ["z"], ["y"])] if kn.act else [])
    return _model(nodes, [_vi("a", "f", shape), _vi("b", "f", shape)], [_vi("y", "f", shape)], [])


def _activation(x: str, y: str, act) -> list:
    """Nodes of one activation from tensor ``x`` to ``y`` (hard-swish as ORT runs it: HardSigmoid, then Mul)."""
    helper = _h()[0]
    if act == "hswish":
        return [helper.make_node("HardSigmoid", [x], [f"{y}_g"], **HSIGMOID), helper.make_node("Mul", [x, f"{y}_g"], [y])]
    if act == "hsigmoid":
        return [helper.make_node("HardSigmoid", [x], [y], **HSIGMOID)]
    if act == "silu":  # x·sigmoid(x), fused by ORT into one QuickGelu
        return [helper.make_node("QuickGelu", [x], [y], domain=MS, alpha=1.0)]
    return [helper.make_node({True: "Relu", "sigmoid": "Sigmoid"}[act], [x], [y])]


def _shape(kn: Kernel, block: int, c: int | None = None, hw: tuple[int, int] | None = None) -> list[int]:
    c, (h, w) = kn.c if c is None else c, hw or (kn.h, kn.w)
    if kn.layout == "nhwc":
        return [1, h, w, c]
    return [1, pad_to(c, block) if kn.layout == "nchwc" else c, h, w]


def _act(kn: Kernel, block: int):
    shape = _shape(kn, block)
    return _model(_activation("x", "y", kn.act), [_vi("x", "f", shape)], [_vi("y", "f", shape)], [])


def _mul(kn: Kernel, block: int):
    helper = _h()[0]
    shape = _shape(kn, block)
    gate = _shape(kn, block, hw=(1, 1)) if kn.k else shape  # k = 1: a squeeze-excitation gate, one value per channel
    return _model([helper.make_node("Mul", ["x", "g"], ["y"])], [_vi("x", "f", shape), _vi("g", "f", gate)], [_vi("y", "f", shape)], [])


def concat_parts(kn: Kernel, block: int) -> list[int]:
    """The channels of a concatenation's ``kn.k`` inputs: equal shares of ``kn.c`` (whole NCHWc blocks each in NCHWc)."""
    unit = block if kn.layout == "nchwc" else 1
    base = kn.c // kn.k // unit * unit
    return [base] * (kn.k - 1) + [kn.c - base * (kn.k - 1)]


def _concat(kn: Kernel, block: int):
    helper = _h()[0]
    parts, names = concat_parts(kn, block), [f"x{i}" for i in range(kn.k)]
    axis = 3 if kn.layout == "nhwc" else 1
    if kn.precision == "int8":
        ins = [v for n in names for v in (n, "x_s", "x_z")]
        node = helper.make_node("QLinearConcat", ["y_s", "y_z", *ins], ["y"], domain=MS, axis=axis)
        return _model([node], [_vi(n, "u8", _shape(kn, block, c)) for n, c in zip(names, parts)], [_vi("y", "u8", _shape(kn, block))],
                      _qparams("x") + _qparams("y"))
    node = helper.make_node("Concat", names, ["y"], axis=axis)
    return _model([node], [_vi(n, "f", _shape(kn, block, c)) for n, c in zip(names, parts)], [_vi("y", "f", _shape(kn, block))], [])


def _slice(kn: Kernel, block: int):
    """The leading ``kn.co`` of ``kn.c`` channels (uint8 for int8)."""
    helper = _h()[0]
    axis, dt = (3 if kn.layout == "nhwc" else 1), ("u8" if kn.precision == "int8" else "f")
    inits = [_init("st", np.array([0], np.int64)), _init("en", np.array([kn.co], np.int64)), _init("ax", np.array([axis], np.int64))]
    node = helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])
    return _model([node], [_vi("x", dt, _shape(kn, block))], [_vi("y", dt, _shape(kn, block, kn.co))], inits)


def _pool(kn: Kernel, block: int):
    helper = _h()[0]
    oh, ow = out_hw(kn)
    if kn.layout == "nhwc" and kn.op == "gap":
        node = helper.make_node("QLinearGlobalAveragePool", ["x", "x_s", "x_z", "y_s", "y_z"], ["y"], domain=MS, channels_last=1)
        return _model([node], [_vi("x", "u8", [1, kn.h, kn.w, kn.c])], [_vi("y", "u8", [1, 1, 1, kn.c])], _qparams("x") + _qparams("y"))
    if kn.layout == "nhwc" and kn.op == "avgpool":
        node = helper.make_node("QLinearAveragePool", ["x", "x_s", "x_z", "y_s", "y_z"], ["y"], domain=MS, channels_last=1, kernel_shape=[kn.k, kn.k],
                                strides=[kn.s, kn.s])
        return _model([node], [_vi("x", "u8", [1, kn.h, kn.w, kn.c])], [_vi("y", "u8", [1, oh, ow, kn.c])], _qparams("x") + _qparams("y"))
    if kn.layout == "nhwc":
        node = helper.make_node("NhwcMaxPool", ["x"], ["y"], domain=MS, kernel_shape=[kn.k, kn.k], strides=[kn.s, kn.s])
        return _model([node], [_vi("x", "u8", [1, kn.h, kn.w, kn.c])], [_vi("y", "u8", [1, oh, ow, kn.c])], [])
    if kn.precision == "int8":  # uint8 NCHW max-pool: QuantizeLinear moved above it (float producer, int8 reader)
        node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[kn.k, kn.k], strides=[kn.s, kn.s])
        return _model([node], [_vi("x", "u8", [1, kn.c, kn.h, kn.w])], [_vi("y", "u8", [1, kn.c, oh, ow])], [])
    c = pad_to(kn.c, block) if kn.layout == "nchwc" else kn.c
    dom = NCHWC if kn.layout == "nchwc" else ""
    if kn.op in ("maxpool", "avgpool"):
        node = helper.make_node({"maxpool": "MaxPool", "avgpool": "AveragePool"}[kn.op], ["x"], ["y"], domain=dom, kernel_shape=[kn.k, kn.k], strides=[kn.s, kn.s])
    else:
        node = helper.make_node("GlobalAveragePool", ["x"], ["y"], domain=dom)
    return _model([node], [_vi("x", "f", [1, c, kn.h, kn.w])], [_vi("y", "f", [1, c, oh, ow])], [])


def _flatten(kn: Kernel, block: int):
    """Flatten to (N, C·H·W); int8: of a uint8 tensor (a flattening Reshape that Q/DQ moved through)."""
    helper = _h()[0]
    dt = "u8" if kn.precision == "int8" else "f"
    return _model([helper.make_node("Flatten", ["x"], ["y"], axis=1)], [_vi("x", dt, [1, kn.c, kn.h, kn.w])], [_vi("y", dt, [1, kn.c * kn.h * kn.w])], [])


def pad_to(c: int, block: int) -> int:
    return -(-c // block) * block


def build_kernel_model(kn: Kernel, block: int):
    """A tiny ONNX ModelProto that runs exactly ``kn`` (inputs already in its layout and dtype)."""
    if kn.op == "conv":
        return (_conv_int8 if kn.precision == "int8" else _conv_fp32)(kn, block)
    if kn.op == "gemm":
        return _gemm(kn, block)
    if kn.op in ("reorder_in", "reorder_out", "quantize", "dequantize", "to_nhwc", "to_nchw", "to_nhwc_f", "to_nchw_f"):
        return _layout_change(kn, block)
    if kn.op == "add":
        return _add(kn, block)
    if kn.op == "mul":
        return _mul(kn, block)
    if kn.op == "act":
        return _act(kn, block)
    if kn.op == "concat":
        return _concat(kn, block)
    if kn.op == "slice":
        return _slice(kn, block)
    if kn.op in ("maxpool", "avgpool", "gap"):
        return _pool(kn, block)
    if kn.op == "flatten":
        return _flatten(kn, block)
    raise ValueError(f"Kernel op {kn.op!r} has no builder; known ops: {', '.join(OPS)}.")
