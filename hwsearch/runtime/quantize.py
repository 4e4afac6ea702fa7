"""Per-layer precision on an exported fp32 ONNX model: int8 (ORT static QDQ), int8d (ORT dynamic) and fp16.

int8: ONNX Runtime static quantization in QDQ format, uint8 activations (int8 with the policy's
``quant.activation_type``) and int8 per-channel weights, calibrated on training samples (MinMax, or
the policy's ``quant.calibration``; ORT's ``quant_pre_process`` first with ``quant.preprocess``), applied to exactly the conv/linear nodes the policy marks
int8 (plus a ReLU that directly follows one, so the fused kernel stays quantized). On an x86 CPU
without VNNI, ORT's kernels add products in int16 and can saturate with full-range weights
(``hwsearch.runtime.cpu``): there both 8-bit and 7-bit weights (ORT's ``reduce_range``) are
tried and the one closer to the fp32 model on the calibration inputs is kept. An empty
selection quantizes nothing: ORT would read an empty ``nodes_to_quantize`` as "everything", so
we never call it then.

int8d: ONNX Runtime dynamic quantization (``quantize_dynamic``) of exactly the MatMul nodes the
policy marks int8d: int8 per-channel weights, uint8 activations quantized at run time by a
``DynamicQuantizeLinear``; ORT's optimiser fuses each into ``DynamicQuantizeMatMul`` /
``MatMulIntegerToFloat``. A Gemm (a CNN's ``nn.Linear``) is first rewritten as MatMul + Add, since
ORT dynamically quantizes only MatMul. Applied before int8 (so calibration sees the final int8d
layers); an empty selection again quantizes nothing.

fp16: the layer's weights are stored as float16 and the layer's input is cast to float16 (its
output back to float32). A GPU runtime computes such a layer in fp16; ONNX Runtime's CPU provider
has no fp16 Conv/Gemm kernels on x86, so it inserts casts and computes in fp32: on CPU fp16 only
halves the layer's weight bytes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hwsearch.errors import HwsearchError
from hwsearch.policy import QuantRecipe
from hwsearch.runtime.cpu import int8_saturates
from hwsearch.runtime.onnx_export import layer_of


@contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantizers log a pre-processing hint on the root logger on every call: silenced while they run."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _consumers(graph, tensor: str) -> list:
    return [n for n in graph.node if tensor in n.input]


def int8_node_names(graph, layers: Iterable[str]) -> list[str]:
    """The ONNX nodes to quantize for ``layers``: each layer's node and a ReLU fed only by it."""
    chosen = set(layers)
    names: list[str] = []
    for node in graph.node:
        if layer_of(node.name) not in chosen:
            continue
        names.append(node.name)
        users = _consumers(graph, node.output[0])
        if len(users) == 1 and users[0].op_type in ("Relu", "Clip"):  # a fused activation (ReLU6 is a Clip) is quantized with its conv
            names.append(users[0].name)
    return names


class _Reader:
    """ORT CalibrationDataReader over a list of ready feeds."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._batches = iter([dict(feed) for feed in feeds])

    def get_next(self):
        return next(self._batches, None)


def _preprocessed(src: Path, tmp: Path) -> Path:
    """ORT's ``quant_pre_process`` of ``src`` (graph optimisation + shape inference; symbolic shape
    inference where it completes). Node names survive it, so layers are still selected by name."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "pre.onnx"
    left = Path.cwd() / SYMBOLIC_LEFTOVER
    existed = left.exists()
    try:
        quant_pre_process(str(src), str(out))
    except Exception:  # noqa: BLE001 - symbolic inference gives up on some graphs (the encoder's): ONNX shape inference only
        if not existed:
            _remove_leftover(left)
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


SYMBOLIC_LEFTOVER = "sym_shape_infer_temp.onnx"  # ORT's symbolic shape inference saves its partial model here (in the cwd) when it gives up


def _remove_leftover(path: Path) -> None:
    """Remove the partial model ORT's symbolic shape inference left in the working directory, with its external data file."""
    import onnx

    if not path.is_file():
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
        data = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    except Exception:  # noqa: BLE001 - an unreadable leftover: remove the model file only
        data = set()
    for name in data:
        if Path(name).name == name:  # a bare file name beside the leftover, never a path elsewhere
            (path.parent / name).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _calibrate_method(recipe: QuantRecipe):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[recipe.calibration]


def quantize_int8(src: Path, dst: Path, layers: Iterable[str], calibration: np.ndarray | Sequence[Mapping[str, np.ndarray]], per_channel: bool = True,
                  recipe: QuantRecipe = QuantRecipe(), weight_bits: int | None = None) -> int:
    """Write ``dst``: ``src`` with ``layers`` quantized to int8. Returns the number of layers quantized.

    ``calibration``: input samples (one input) or a list of feed dicts (several inputs);
    ``recipe``: activation type, calibration method and ORT pre-processing (its ``calib_samples``
    is the caller's business: it chose ``calibration``). ``weight_bits``: 8, or 7 (ORT's
    ``reduce_range``); None: 8 on a CPU whose int8 kernels do not saturate, else whichever of 7 and
    8 bits gives outputs closer to ``src``'s on the calibration inputs (7-bit weights cannot
    saturate there but lose precision; which costs less depends on the model).
    """
    import onnx

    proto = onnx.load(str(src))
    nodes = int8_node_names(proto.graph, layers)
    n_layers = len(set(layers) & {layer_of(n.name) for n in proto.graph.node})
    if not nodes:
        if src != dst:
            shutil.copyfile(src, dst)
        return 0
    feeds = _feeds(proto.graph.input[0].name, calibration)
    bits = (weight_bits,) if weight_bits is not None else (7, 8) if int8_saturates() else (8,)
    with tempfile.TemporaryDirectory() as tmp:
        outs = {b: _quantize_static(src, Path(tmp) / f"q{b}.onnx", nodes, feeds, per_channel, recipe, b) for b in bits}
        best = min(outs, key=lambda b: output_error(src, outs[b], feeds)) if len(outs) > 1 else bits[0]
        shutil.move(str(outs[best]), dst)
    return n_layers


def _feeds(input_name: str, x: np.ndarray | Sequence[Mapping[str, np.ndarray]], batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """Calibration feeds: batches of an array of inputs, or the given feed dicts (several inputs, e.g. token ids and mask)."""
    if isinstance(x, np.ndarray):
        return [{input_name: x[i : i + batch_size]} for i in range(0, len(x), batch_size)]
    return [dict(feed) for feed in x]


def _quantize_static(src: Path, out: Path, nodes: list[str], feeds: list[dict[str, np.ndarray]], per_channel: bool, recipe: QuantRecipe,
                     weight_bits: int) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    extra = {"ActivationSymmetric": False, "WeightSymmetric": True} | ({"CalibPercentile": recipe.percentile} if recipe.calibration == "percentile" else {})
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        quantize_static(
            str(_preprocessed(src, Path(tmp)) if recipe.preprocess else src), str(out), _Reader(feeds), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if recipe.activation_type == "int8" else QuantType.QUInt8, weight_type=QuantType.QInt8,
            per_channel=per_channel, reduce_range=weight_bits == 7, nodes_to_quantize=nodes, calibrate_method=_calibrate_method(recipe), extra_options=extra,
        )
    return out


def output_error(reference: Path, candidate: Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> float:
    """Mean squared difference of ``candidate``'s first output from ``reference``'s over ``feeds``."""
    from hwsearch.runtime.session import run_feeds, session

    ref, got = (run_feeds(session(p), [dict(f) for f in feeds]) for p in (reference, candidate))
    return float(np.mean((got.astype(np.float64) - ref) ** 2))


def int8_weight_bits(path: Path) -> int | None:
    """7 or 8: the bits a file's static int8 weights use (symmetric per-channel weights reach 127 at 8 bits, 64 at 7); None without them."""
    import onnx
    from onnx import TensorProto, numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception:  # noqa: BLE001 - an unreadable file is flagged by the export checks
        return None
    dequantized = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}  # QDQ weights (int8d weights feed MatMulInteger)
    weights = [numpy_helper.to_array(i) for i in graph.initializer if i.name in dequantized and i.data_type == TensorProto.INT8 and i.dims]
    peak = max((int(np.abs(w.astype(np.int32)).max()) for w in weights if w.size), default=0)
    return None if peak == 0 else 7 if peak <= 64 else 8


def _gemm_as_matmul(graph, node) -> None:
    """Rewrite Gemm ``node`` (``Y = X @ W^T + b``, as torch exports ``nn.Linear``) as MatMul + Add in place.

    The MatMul keeps the node's name, so the layer is still selected by it."""
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    inits = {i.name: i for i in graph.initializer}
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0) or node.input[1] not in inits:
        raise HwsearchError(f"Gemm node {node.name!r} is not a plain linear layer (alpha = beta = 1, constant weight); keep it in fp32 or int8.")
    w = numpy_helper.to_array(inits[node.input[1]])
    w = w.T if attrs.get("transB", 0) else w
    weight = numpy_helper.from_array(np.ascontiguousarray(w), f"{node.name}/weight_t")
    graph.initializer.append(weight)
    x, bias, y = node.input[0], node.input[2] if len(node.input) > 2 else "", node.output[0]
    matmul = helper.make_node("MatMul", [x, weight.name], [f"{node.name}/matmul" if bias else y], name=node.name)
    nodes = [matmul] + ([helper.make_node("Add", [matmul.output[0], bias], [y], name=f"{node.name}/bias")] if bias else [])
    index = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, n in enumerate(nodes):
        graph.node.insert(index + offset, n)


def quantize_dynamic_int8(src: Path, dst: Path, layers: Iterable[str]) -> int:
    """Write ``dst``: ``src`` with the MatMul/Gemm nodes named ``layers`` dynamically quantized (int8d).

    Returns the number of layers quantized; a layer that is not a MatMul/Gemm node is a one-line error."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(str(src))
    chosen = [n for n in proto.graph.node if layer_of(n.name) in set(layers)]
    if not chosen:
        if src != dst:
            shutil.copyfile(src, dst)
        return 0
    for node in chosen:
        if node.op_type not in ("MatMul", "Gemm"):
            raise HwsearchError(f"Layer {node.name!r} is a {node.op_type}, which int8d cannot quantize (only MatMul/Gemm); use int8 or fp32 for it.")
        if node.op_type == "Gemm":
            _gemm_as_matmul(proto.graph, node)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        src_mm, out = Path(tmp) / "mm.onnx", Path(tmp) / "q.onnx"
        onnx.save(proto, str(src_mm))
        quantize_dynamic(str(src_mm), str(out), op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                         nodes_to_quantize=[n.name for n in chosen], extra_options={"MatMulConstBOnly": True})
        shutil.move(str(out), dst)
    return len({layer_of(n.name) for n in chosen})


def apply_fp16(path: Path, layers: Iterable[str]) -> int:
    """Rewrite ``path`` in place so that ``layers`` run in fp16. Returns the number converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    chosen = set(layers)
    converted: set[str] = set()  # layers (a module called twice has two nodes)
    new_nodes = []
    for node in graph.node:
        if layer_of(node.name) not in chosen:
            new_nodes.append(node)
            continue
        for idx in range(1, len(node.input)):
            init = inits.get(node.input[idx])
            if init is not None and init.data_type == TensorProto.FLOAT:
                # a fresh fp16 copy per node: the exporter may share one initializer between layers
                half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}/fp16/{node.name}")
                graph.initializer.append(half)
                node.input[idx] = half.name
            elif init is None:  # a weight computed in the graph (e.g. a Constant node): cast it
                cast = f"{node.input[idx]}/fp16/{node.name}"
                new_nodes.append(helper.make_node("Cast", [node.input[idx]], [cast], to=TensorProto.FLOAT16, name=f"{node.name}/cast_w{idx}"))
                node.input[idx] = cast
        x16, y16, y32 = f"{node.name}/x_fp16", f"{node.name}/y_fp16", node.output[0]
        new_nodes.append(helper.make_node("Cast", [node.input[0]], [x16], to=TensorProto.FLOAT16, name=f"{node.name}/cast_in"))
        node.input[0] = x16
        node.output[0] = y16
        new_nodes.append(node)
        new_nodes.append(helper.make_node("Cast", [y16], [y32], to=TensorProto.FLOAT, name=f"{node.name}/cast_out"))
        converted.add(layer_of(node.name))
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for n in graph.node for name in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(proto, str(path))
    return len(converted)


def apply_precisions(src: Path, dst: Path, precision: Mapping[str, str], calibration: np.ndarray | Sequence[Mapping[str, np.ndarray]],
                     per_channel: bool = True, recipe: QuantRecipe = QuantRecipe()) -> dict[str, int]:
    """Write ``dst`` = ``src`` with each node in its precision (int8d, then int8, then fp16); returns nodes per precision."""
    def named(prec: str) -> list[str]:
        return [name for name, p in precision.items() if p == prec]

    with tempfile.TemporaryDirectory() as tmp:
        dynamic = Path(tmp) / "int8d.onnx" if named("int8d") else src  # no int8d layer: no extra copy of the model on every trial
        n_int8d = quantize_dynamic_int8(src, dynamic, named("int8d")) if named("int8d") else 0
        n_int8 = quantize_int8(dynamic, dst, named("int8"), calibration, per_channel, recipe)
    n_fp16 = apply_fp16(dst, named("fp16")) if named("fp16") else 0
    return {"int8": n_int8, "int8d": n_int8d, "fp16": n_fp16, "fp32": len(precision) - n_int8 - n_int8d - n_fp16}


# The one-line ONNX Runtime defaults a user would reach for (the ``ort-default`` baselines): each
# quantizes the whole model with ORT's own defaults plus the one setting its name says.
ORT_RECIPES = {
    "ort-dynamic-per-channel": "quantize_dynamic(per_channel=True, weight_type=QInt8)",
    "ort-dynamic": "quantize_dynamic(weight_type=QInt8)",
    "ort-static-s8s8": "quantize_static(QDQ, activation_type=QInt8, weight_type=QInt8, MinMax)",
    "ort-static-u8s8": "quantize_static(QDQ, activation_type=QUInt8, weight_type=QInt8, MinMax)",
}


def ort_recipe(src: Path, dst: Path, recipe: str, calibration: np.ndarray | Sequence[Mapping[str, np.ndarray]]) -> str:
    """Write ``dst``: the whole of ``src`` quantized by ORT recipe ``recipe`` (see ``ORT_RECIPES``); returns its call."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if recipe not in ORT_RECIPES:
        raise HwsearchError(f"ORT recipe {recipe!r} is unknown; use one of {', '.join(ORT_RECIPES)}.")
    with _quiet():
        if recipe.startswith("ort-dynamic"):
            quantize_dynamic(str(src), str(dst), per_channel=recipe.endswith("per-channel"), weight_type=QuantType.QInt8)
        else:
            import onnx

            act = QuantType.QUInt8 if recipe.endswith("u8s8") else QuantType.QInt8
            reader = _Reader(_feeds(onnx.load(str(src)).graph.input[0].name, calibration))
            quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, activation_type=act, weight_type=QuantType.QInt8)
    return ORT_RECIPES[recipe]

