"""ONNX export, ONNX Runtime sessions, latency measurement. The only place that builds ORT sessions.

Exported Conv/Gemm/MatMul nodes are renamed to the torch module names they come from (for
example ``layer1.0.conv1``), so per-layer precision choices select ONNX nodes by those names.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwsearch.compress.prune import execution_order
from hwsearch.errors import HwsearchError

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
# ORT kernels that run integer arithmetic for a conv / matmul after QDQ fusion
QUANTIZED_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


@dataclass(frozen=True)
class SessionSettings:
    """The ORT settings a latency figure was measured with (recorded in tables and manifests)."""

    threads: int = 1
    provider: str = "CPUExecutionProvider"
    graph_optimization: str = "ORT_ENABLE_ALL"
    execution_mode: str = "ORT_SEQUENTIAL"
    # ORT >= 1.20 quantizes the float weights of a conv that sits between quantized tensors at load
    # time; disabled so that a layer a policy keeps in fp32 really runs in fp32.
    disabled_optimizers: tuple[str, ...] = ("WeightBiasQuantization",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "disabled_optimizers", tuple(self.disabled_optimizers))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists, not tuples), so a saved record compares equal to a fresh one."""
        return {**asdict(self), "disabled_optimizers": list(self.disabled_optimizers)}


def export(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...], path: str | Path,
           input_names: tuple[str, ...] = (INPUT_NAME,), dynamic_axes: dict[str, dict[int, str]] | None = None) -> Path:
    """Export ``model`` (eval mode, BatchNorm folded) to ONNX with a dynamic batch axis.

    A tuple ``example_input`` is passed as several inputs named ``input_names``; ``dynamic_axes``
    (by input name) adds dynamic axes beyond the batch (e.g. a sequence length).
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    layer_names = execution_order(model, example_input)
    axes = {name: {0: "batch"} for name in (*input_names, OUTPUT_NAME)}
    for name, extra in (dynamic_axes or {}).items():
        axes[name] = {**axes.get(name, {}), **extra}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), args, str(path), dynamo=False, opset_version=OPSET,
            input_names=list(input_names), output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    nodes = [n for n in proto.graph.node if n.op_type in COMPUTE_OPS and len(n.input) > 1 and _is_weight(proto, n.input[1])]
    if len(nodes) != len(layer_names):
        raise HwsearchError(f"Export produced {len(nodes)} conv/matmul nodes for {len(layer_names)} conv/linear modules; the model must call each layer once per forward.")
    for node, name in zip(nodes, layer_names):
        node.name = name
    _unshare_initializers(proto)
    onnx.save(proto, str(path))
    return path


def _unshare_initializers(proto) -> None:
    """Give every consumer of a shared initializer its own copy, as a plain initializer.

    The exporter merges equal tensors (for example the all-zero folded biases of an untrained model)
    into one initializer, handed to the other consumers through Identity nodes. The int8 quantizer
    then leaves such biases in float (or quantizes one tensor with one scale for several convs), and
    ONNX Runtime refuses to fuse those convs into QLinearConv: they run as dequantize + float conv,
    slower than either precision."""
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    for node in [n for n in proto.graph.node if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs]:
        proto.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0]))
        proto.graph.node.remove(node)
    inits = {i.name: i for i in proto.graph.initializer}
    seen: set[str] = set()
    for node in proto.graph.node:
        for j, name in enumerate(node.input):
            if name not in inits:
                continue
            if name in seen:
                copy = numpy_helper.from_array(numpy_helper.to_array(inits[name]), f"{name}__{node.name or 'n'}_{j}")
                proto.graph.initializer.append(copy)
                node.input[j] = copy.name
            else:
                seen.add(name)
    used = {name for n in proto.graph.node for name in n.input}
    for init in [i for i in proto.graph.initializer if i.name not in used]:
        proto.graph.initializer.remove(init)


def _is_weight(proto, name: str) -> bool:
    return any(init.name == name for init in proto.graph.initializer)


def session(path: str | Path, settings: SessionSettings = SessionSettings(), optimized_path: str | Path | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = getattr(ort.ExecutionMode, settings.execution_mode)
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings.graph_optimization)
    opts.log_severity_level = 3
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), sess_options=opts, providers=[settings.provider], disabled_optimizers=list(settings.disabled_optimizers))


def run(sess, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)])


def run_feeds(sess, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The first output of ``sess`` for each feed (name -> array) in turn, concatenated along the batch."""
    return np.concatenate([sess.run(None, feed)[0] for feed in feeds])


def optimized_op_types(path: str | Path, settings: SessionSettings = SessionSettings()) -> list[str]:
    """Op types of the graph ORT really executes after its optimisations (QDQ fusion included)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        session(path, settings, optimized_path=out)
        return [n.op_type for n in onnx.load(str(out)).graph.node]


def count_quantized_kernels(path: str | Path) -> int:
    return sum(op in QUANTIZED_OPS for op in optimized_op_types(path))


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    runs: int
    p10_ms: float = 0.0

    def value(self, statistic: str) -> float:
        """The figure a latency table of that ``statistic`` (``p10`` or ``median``) predicts."""
        return self.p10_ms if statistic == "p10" else self.median_ms


def measure_latency(path: str | Path, input_shape: tuple[int, ...], settings: SessionSettings = SessionSettings(), warmup: int = 20, runs: int = 100,
                    min_time_s: float = 0.0, feed: dict[str, np.ndarray] | None = None) -> Latency:
    """Batch-1 latency: ``warmup`` runs, then at least ``runs`` timed runs (and ``min_time_s``).

    The input is random normal of ``input_shape`` unless ``feed`` gives every input (name -> array).
    """
    sess = session(path, settings)
    name = sess.get_inputs()[0].name
    feed = feed or {name: np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)}
    for _ in range(warmup):
        sess.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return Latency(statistics.median(times), times[int(0.9 * (len(times) - 1))], len(times), times[int(0.1 * (len(times) - 1))])
