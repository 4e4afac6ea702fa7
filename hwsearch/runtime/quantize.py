"""Per-layer precision on an exported fp32 ONNX model: int8 (ORT static QDQ) and fp16.

int8: ONNX Runtime static quantization in QDQ format, uint8 activations and int8 per-channel
weights, calibrated on training samples, applied to exactly the conv/linear nodes the policy marks
int8 (plus a ReLU that directly follows one, so the fused kernel stays quantized). An empty
selection quantizes nothing: ORT would read an empty ``nodes_to_quantize`` as "everything", so
we never call it then.

fp16: the layer's weights are stored as float16 and the layer's input is cast to float16 (its
output back to float32). A GPU runtime computes such a layer in fp16; ONNX Runtime's CPU provider
has no fp16 Conv/Gemm kernels on x86, so it inserts casts and computes in fp32: on CPU fp16 only
halves the layer's weight bytes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np


def _consumers(graph, tensor: str) -> list:
    return [n for n in graph.node if tensor in n.input]


def int8_node_names(graph, layers: Iterable[str]) -> list[str]:
    """The ONNX nodes to quantize for ``layers``: each layer's node and a ReLU fed only by it."""
    chosen = set(layers)
    names: list[str] = []
    for node in graph.node:
        if node.name not in chosen:
            continue
        names.append(node.name)
        users = _consumers(graph, node.output[0])
        if len(users) == 1 and users[0].op_type == "Relu":
            names.append(users[0].name)
    return names


class _Reader:
    """ORT CalibrationDataReader over a fixed array of calibration inputs (or a list of ready feeds)."""

    def __init__(self, input_name: str, x: np.ndarray | Sequence[Mapping[str, np.ndarray]], batch_size: int = 32) -> None:
        if isinstance(x, np.ndarray):
            self._batches = iter([{input_name: x[i : i + batch_size]} for i in range(0, len(x), batch_size)])
        else:  # several inputs (e.g. token ids and mask): one feed dict per calibration batch
            self._batches = iter([dict(feed) for feed in x])

    def get_next(self):
        return next(self._batches, None)


def quantize_int8(src: Path, dst: Path, layers: Iterable[str], calibration: np.ndarray | Sequence[Mapping[str, np.ndarray]], per_channel: bool = True) -> int:
    """Write ``dst``: ``src`` with ``layers`` quantized to int8. Returns the number of layers quantized.

    ``calibration``: input samples (one input) or a list of feed dicts (several inputs).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    proto = onnx.load(str(src))
    nodes = int8_node_names(proto.graph, layers)
    n_layers = len(set(layers) & {n.name for n in proto.graph.node})
    if not nodes:
        if src != dst:
            shutil.copyfile(src, dst)
        return 0
    input_name = proto.graph.input[0].name
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT logs a pre-processing hint on the root logger on every call
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "q.onnx"
            quantize_static(
                str(src), str(out), _Reader(input_name, calibration), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                nodes_to_quantize=nodes, calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
            shutil.move(str(out), dst)
    finally:
        root.setLevel(level)
    return n_layers


def apply_fp16(path: Path, layers: Iterable[str]) -> int:
    """Rewrite ``path`` in place so that ``layers`` run in fp16. Returns the number converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    chosen = set(layers)
    converted = 0
    new_nodes = []
    for node in graph.node:
        if node.name not in chosen:
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
        converted += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for n in graph.node for name in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(proto, str(path))
    return converted


def apply_precisions(src: Path, dst: Path, precision: Mapping[str, str], calibration: np.ndarray | Sequence[Mapping[str, np.ndarray]],
                     per_channel: bool = True) -> dict[str, int]:
    """Write ``dst`` = ``src`` with each layer in its precision; returns counts per precision."""
    int8 = [name for name, p in precision.items() if p == "int8"]
    fp16 = [name for name, p in precision.items() if p == "fp16"]
    n_int8 = quantize_int8(src, dst, int8, calibration, per_channel)
    n_fp16 = apply_fp16(dst, fp16) if fp16 else 0
    return {"int8": n_int8, "fp16": n_fp16, "fp32": len(precision) - n_int8 - n_fp16}
