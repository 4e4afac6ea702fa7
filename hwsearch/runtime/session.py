"""ONNX Runtime sessions: the only place that builds one (the timing loop, scoring, parity and
the optimised-graph inspection all open their sessions here)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


def runtime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def check_model(path: str | Path) -> str | None:
    """Run ``onnx.checker`` with the full check (shape inference included); the error text or None."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - any checker failure is data for the caller
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
    return None


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


def run_feeds(sess, feeds: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
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


def detect_block(settings: SessionSettings) -> int:
    """The NCHWc block size ORT uses on this CPU (read from a transformed conv's padded weights), 0 if none."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "W")
    g = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, f"{tmp}/c.onnx")
        session(f"{tmp}/c.onnx", settings, optimized_path=f"{tmp}/o.onnx")
        opt = onnx.load(f"{tmp}/o.onnx").graph
    dims = [list(i.dims) for n in opt.node if n.domain == "com.microsoft.nchwc" and n.op_type == "Conv" for i in opt.initializer if i.name == n.input[1]]
    return dims[0][0] if dims else 0
