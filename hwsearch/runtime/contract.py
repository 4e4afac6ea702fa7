"""What a deployed ONNX file promises: its input/output signature (read from the file) and the
ONNX Runtime session options that reproduce its scores and latency, in ONNX Runtime's own names
(what :func:`hwsearch.runtime.session.session` sets from a :class:`SessionSettings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwsearch.runtime.session import SessionSettings

INTER_OP_THREADS = 1  # session() always runs one inter-op thread


def _value_info(value: Any) -> dict[str, Any]:
    from onnx import helper

    tensor = value.type.tensor_type
    shape = [d.dim_param if d.HasField("dim_param") else (int(d.dim_value) if d.HasField("dim_value") else None) for d in tensor.shape.dim]
    return {"name": value.name, "dtype": helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": shape}


def io_signature(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The graph's inputs and outputs: name, numpy dtype name and shape (a symbolic axis is its name, e.g. ``"batch"``)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return {"inputs": [_value_info(v) for v in graph.input if v.name not in initializers], "outputs": [_value_info(v) for v in graph.output]}


def ort_session_options(settings: SessionSettings) -> dict[str, Any]:
    """``settings`` as ONNX Runtime names them: ``SessionOptions`` attributes (enum members by name) and the
    ``InferenceSession`` arguments ``providers`` and ``disabled_optimizers``."""
    return {"intra_op_num_threads": settings.threads, "inter_op_num_threads": INTER_OP_THREADS,
            "graph_optimization_level": settings.graph_optimization, "execution_mode": settings.execution_mode,
            "providers": [settings.provider], "disabled_optimizers": list(settings.disabled_optimizers)}

