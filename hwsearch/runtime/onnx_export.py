"""ONNX export of a torch model, with the conv/linear nodes named after the torch modules they come from.

A zero Pad before a Conv (a TF "SAME"-padded stride-2 conv) is folded into the conv's pads.
Exported Conv/Gemm/MatMul nodes carry the module names (for example ``layer1.0.conv1``), so
per-layer precision choices select ONNX nodes by those names: the n-th weighted compute node is
the n-th conv/linear call the forward pass makes. A module called twice gives nodes ``b`` and ``b#2``
(:func:`layer_of` maps both to layer ``b``: one precision for both), and weights the exporter merged
because they were equal are unshared first.
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
CALL_MARK = "#"  # the n-th call (n > 1) of a module is node ``name#n``


def layer_of(node_name: str) -> str:
    """The module (layer) an exported node belongs to: ``b#2``, the second call of ``b``, belongs to ``b``."""
    return node_name.split(CALL_MARK, 1)[0]


def layer_order(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> list[str]:
    """Names of the conv/linear modules in the order a forward pass first runs them (a tuple input is unpacked)."""
    return list(dict.fromkeys(layer_calls(model, example_input)))


def layer_calls(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> list[str]:
    """The conv/linear module of every conv/linear call of a forward pass, in order (a module called twice is listed twice)."""
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
    layer_names = layer_calls(model, example_input)
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
    _unshare_initializers(proto)  # first: a weight merged with an equal one reaches its conv through an Identity
    nodes = [n for n in proto.graph.node if n.op_type in COMPUTE_OPS and len(n.input) > 1 and _is_weight(proto, n.input[1])]
    if len(nodes) != len(layer_names):
        raise HwsearchError(f"Export produced {len(nodes)} conv/matmul nodes with constant weights for {len(layer_names)} conv/linear calls; "
                            "a layer whose weight is computed in forward (or an F.conv2d / F.linear call) cannot be mapped to its module: "
                            "compute the weight once outside forward, or call the nn.Conv2d / nn.Linear module.")
    calls: dict[str, int] = {}
    for node, name in zip(nodes, layer_names):
        calls[name] = calls.get(name, 0) + 1
        node.name = name if calls[name] == 1 else f"{name}{CALL_MARK}{calls[name]}"  # node names must be unique: b, b#2
    _fold_pads(proto)
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


def _constant_value(graph, name: str):
    """The value of tensor ``name`` when only initializers and Constant-fed nodes produce it (else None)."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = {i.name: i for i in graph.initializer}
    if name in inits:
        return numpy_helper.to_array(inits[name])
    producer = {o: n for n in graph.node for o in n.output}
    needed, todo, used_inits = [], [name], []
    while todo:
        t = todo.pop()
        if t in inits:
            used_inits.append(inits[t])
            continue
        node = producer.get(t)
        if node is None:  # a graph input: not a constant
            return None
        if node not in needed:
            needed.append(node)
            todo += [i for i in node.input if i]
    order = [n for n in graph.node if n in needed]
    sub = onnx.helper.make_model(onnx.helper.make_graph(order, "const", [], [onnx.helper.make_tensor_value_info(name, 0, None)], used_inits),
                                 opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    return ReferenceEvaluator(sub).run(None, {})[0]


def _fold_pads(proto) -> None:
    """Fold a zero, constant, spatial-only Pad into the Conv it feeds (the conv's pads become asymmetric).

    ORT's optimiser does the same at load time; doing it in the file keeps the graph the quantizer
    sees and the kernels the lowering parses to plain convs (a TF "SAME"-padded stride-2 conv)."""
    from onnx import helper

    graph = proto.graph
    users: dict[str, list] = {}
    for n in graph.node:
        for t in n.input:
            users.setdefault(t, []).append(n)
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        after = users.get(pad.output[0], [])
        mode = next((helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"), b"constant")
        if len(after) != 1 or after[0].op_type != "Conv" or mode not in (b"constant", "constant") or len(pad.input) > 3 and pad.input[3]:
            continue
        pads = _constant_value(graph, pad.input[1])
        value = _constant_value(graph, pad.input[2]) if len(pad.input) > 2 and pad.input[2] else 0
        if pads is None or value is None or float(value) != 0 or len(pads) != 8 or any(int(pads[i]) for i in (0, 1, 4, 5)) or min(pads) < 0:
            continue
        conv = after[0]
        old = next((list(helper.get_attribute_value(a)) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
        new = [old[0] + int(pads[2]), old[1] + int(pads[3]), old[2] + int(pads[6]), old[3] + int(pads[7])]
        for a in [a for a in conv.attribute if a.name in ("pads", "auto_pad")]:
            conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
    _drop_dead_nodes(graph)


def _drop_dead_nodes(graph) -> None:
    """Remove nodes none of whose outputs reach a graph output."""
    live = {o.name for o in graph.output}
    for node in reversed(list(graph.node)):
        if any(o in live for o in node.output):
            live.update(i for i in node.input if i)
        else:
            graph.node.remove(node)


def _is_weight(proto, name: str) -> bool:
    return any(init.name == name for init in proto.graph.initializer)


