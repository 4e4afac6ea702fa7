"""ONNX export of a torch model, with the conv/linear nodes named after the torch modules they come from.

Exported Conv/Gemm/MatMul nodes carry the module names (for example ``layer1.0.conv1``), so
per-layer precision choices select ONNX nodes by those names: the n-th weighted compute node is
the n-th conv/linear module the forward pass runs, so a model must call each such module once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from hwsearch.errors import HwsearchError

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
LAYER_TYPES = (nn.Conv2d, nn.Linear)


def layer_order(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> list[str]:
    """Names of the conv/linear modules in the order a forward pass runs them (a tuple input is unpacked)."""
    names = {m: n for n, m in model.named_modules()}
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(names[mod])) for m in model.modules() if isinstance(m, LAYER_TYPES)]
    try:
        with torch.no_grad():
            model.eval()(*example_input) if isinstance(example_input, tuple) else model.eval()(example_input)
    finally:
        for h in hooks:
            h.remove()
    return order


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
    layer_names = layer_order(model, example_input)
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


