"""Parse a model's fp32 ONNX export (as written by :func:`hwsearch.runtime.onnx_export.export`) into the units the CNN lowering works on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hwsearch.errors import HwsearchError
from hwsearch.runtime.onnx_export import layer_of

SUPPORTED = ("Conv", "Gemm", "Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Mul", "Add", "Concat", "Slice", "MaxPool", "AveragePool",
             "GlobalAveragePool", "Flatten", "Reshape", "Identity", "Constant", "Shape", "Gather", "Unsqueeze")
SHAPE_ONLY = ("Shape", "Gather", "Unsqueeze")  # supported only inside a flattening Reshape's shape computation
SHAPE_OPS = SHAPE_ONLY + ("Concat", "Constant")  # what ``x.view(x.size(0), -1)`` computes its target shape with (Concat, Constant also stand alone)
ACTIVATIONS = ("Relu", "Clip")  # fused into the conv / add before them (ReLU6 exports as Clip(0, 6)); one kernel key "relu" for both
CONV_ACTIVATIONS = {"Relu": True, "Clip": True, "HardSwish": "hswish", "HardSigmoid": "hsigmoid", "Sigmoid": "sigmoid"}  # ORT fuses these into a float conv


@dataclass(frozen=True)
class Unit:
    """One fused operator of the fp32 graph: ``kind`` in conv, gemm, add, mul, act, silu, concat, slice, maxpool, avgpool, gap, flatten,
    reshape (a flattening Reshape: ``x.view(x.size(0), -1)``).

    ``act``: the activation fused into a conv or add (True: ReLU/ReLU6; or hswish, hsigmoid, sigmoid),
    or the activation an ``act`` unit applies. A ``mul`` with a 1×1 second input is a squeeze-excitation
    gate (``k`` = 1); ``silu`` is x·sigmoid(x); ``concat`` joins its inputs' channels (GhostNet) and
    ``slice`` keeps leading channels of its input. A conv is dense, depthwise (one input channel per
    conv group) or grouped (``groups`` > 1)."""

    kind: str
    name: str  # layer name for conv / gemm, node name otherwise
    inputs: tuple[int, ...]  # tensor ids
    output: int
    hw: tuple[int, int]  # input spatial size
    k: int = 0
    s: int = 1
    depthwise: bool = False
    act: bool | str = False
    # a grouped conv's (ResNeXt, RegNet) conv groups, which pruning keeps (a depthwise conv's follow its channels); out of
    # the repr, so the fingerprints of graphs without grouped convs (the keys of shipped calibrations) stay as they were
    groups: int = field(default=1, repr=False)

    def conv_groups(self, c: int) -> int:
        """The conv groups with ``c`` input channels kept."""
        return c if self.depthwise else self.groups


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _shapes(proto) -> dict[str, list[int]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        out[vi.name] = [d.dim_value if d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
    return out


def _walk_up_from_reshape_shapes(graph, accept) -> set[str]:
    """Names of the nodes reached walking up from every Reshape's target-shape input through the nodes
    ``accept(node, found)`` lets in; a Shape reads a data tensor, so the walk stops there."""
    producer = {o: n for n in graph.node for o in n.output}
    found: set[str] = set()
    todo = [producer[n.input[1]] for n in graph.node if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] in producer]
    while todo:
        node = todo.pop()
        if node.name in found or not accept(node, found):
            continue
        found.add(node.name)
        if node.op_type != "Shape":
            todo += [producer[t] for t in node.input if t in producer]
    return found


def _shape_subgraph(graph) -> set[str]:
    """Names of the nodes that only compute a Reshape's target shape (``x.view(x.size(0), -1)`` exports
    Shape -> Gather -> Unsqueeze -> Concat with constants): ORT folds them away, so they are no units."""
    readers: dict[str, list] = {}
    for n in graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)

    def shape_only(node, found: set[str]) -> bool:  # a shape op none of whose outputs is also read as data
        return node.op_type in SHAPE_OPS and not any(
            r.name not in found and not (r.op_type == "Reshape" and r.input[1] in node.output) and r.op_type not in SHAPE_OPS
            for o in node.output for r in readers.get(o, []))

    return _walk_up_from_reshape_shapes(graph, shape_only)


def _refuse_unmodelled(graph, shape_nodes: set[str]) -> None:
    """One line naming the first op the tables have no kernel for; an op on the data path is named before
    one that only computes a reshape's target shape (that reshape is then the thing not modelled)."""
    bad = [n for n in graph.node if n.op_type not in SUPPORTED or n.op_type in SHAPE_ONLY and n.name not in shape_nodes]
    if not bad:
        return
    side = _walk_up_from_reshape_shapes(graph, lambda node, found: True)  # every node a target shape depends on
    data = [n for n in bad if n.name not in side]
    if data:
        node = data[0]
        raise HwsearchError(f"ONNX op {node.op_type!r} (node {node.name!r}) has no latency kernel; latency tables support "
                            f"{', '.join(op for op in SUPPORTED if op not in SHAPE_OPS)} (and the shape computation of a flattening Reshape).")
    node = bad[0]
    raise HwsearchError(f"ONNX op {node.op_type!r} (node {node.name!r}) computes a Reshape's target shape, and latency tables model only "
                        "a flattening reshape (x.view(x.size(0), -1)); reshape with constants or flatten the tensor instead.")


def parse_units(path: str | Path):
    """Return (units, tensor_source, consumers, layer_channels) for the exported graph at ``path``.

    ``tensor_source[t]``: the layer whose output channels tensor ``t`` has, a fixed channel count, or
    (a concatenation) a tuple of such sources whose channels add up."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    shapes = _shapes(proto)
    inits = {i.name: list(i.dims) for i in graph.initializer}
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(_attr(n, "value")) for n in graph.node if n.op_type == "Constant" and _attr(n, "value") is not None})
    alias: dict[str, str] = {}
    users: dict[str, list] = {}
    shape_nodes = _shape_subgraph(graph)
    _refuse_unmodelled(graph, shape_nodes)
    for node in graph.node:
        if node.name in shape_nodes:
            continue
        if node.op_type == "Identity":
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
        for t in node.input:
            users.setdefault(alias.get(t, t), []).append(node)
    inp = graph.input[0].name
    ids: dict[str, int] = {inp: 0}
    source: list[str | int] = [shapes[inp][1]]
    units: list[Unit] = []
    channels: dict[str, int] = {}
    fused: set[str] = set()

    def tid(name: str) -> int:
        return ids[alias.get(name, name)]

    def new_tensor(name: str, src: str | int) -> int:
        ids[name] = len(source)
        source.append(src)
        return ids[name]

    def fuse_act(out: str, allowed=dict.fromkeys(ACTIVATIONS, True)) -> tuple[str, bool | str]:
        nxt = users.get(out, [])
        if len(nxt) == 1 and nxt[0].op_type in allowed:
            fused.add(nxt[0].name)
            return nxt[0].output[0], allowed[nxt[0].op_type]
        return out, False

    def silu_mul(node):
        """The Mul of x·sigmoid(x) when ``node`` is that Sigmoid (its output read only by that Mul)."""
        nxt = users.get(node.output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Mul" and alias.get(node.input[0], node.input[0]) in [alias.get(t, t) for t in nxt[0].input]:
            return nxt[0]
        return None

    def spatial(name: str) -> tuple[int, ...]:
        return tuple(shapes.get(alias.get(name, name), [1, 1, 1, 1])[2:4])

    for node in graph.node:
        if node.op_type in ("Identity", "Constant") or node.name in fused or node.name in shape_nodes:
            continue
        x = node.input[0]
        hw = tuple(shapes.get(alias.get(x, x), [1, 1, 1, 1])[2:4]) or (1, 1)
        hw = hw if len(hw) == 2 else (1, 1)
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            group = _attr(node, "group", 1)
            nxt = users.get(node.output[0], [])
            sig = [n for n in nxt if n.op_type == "Sigmoid"]
            mul = silu_mul(sig[0]) if len(nxt) == 2 and len(sig) == 1 else None
            if mul is not None and mul in nxt:  # conv -> x·sigmoid(x): SiLU after the conv
                fused.update((sig[0].name, mul.name))
                out, act = mul.output[0], "silu"
            else:
                out, act = fuse_act(node.output[0], CONV_ACTIVATIONS)
            channels[layer_of(node.name)] = w[0]
            depthwise = group > 1 and w[1] == 1
            units.append(Unit("conv", layer_of(node.name), (tid(x),), new_tensor(out, layer_of(node.name)), hw, w[2], _attr(node, "strides", [1])[0], depthwise, act,
                              1 if depthwise else group))
        elif node.op_type == "Gemm":
            channels[layer_of(node.name)] = inits[node.input[1]][0]
            units.append(Unit("gemm", layer_of(node.name), (tid(x),), new_tensor(node.output[0], layer_of(node.name)), (1, 1)))
        elif node.op_type == "Sigmoid" and (mul := silu_mul(node)) is not None:
            fused.add(mul.name)
            units.append(Unit("silu", node.name, (tid(x),), new_tensor(mul.output[0], source[tid(x)]), hw))
        elif node.op_type in CONV_ACTIVATIONS:
            units.append(Unit("act", node.name, (tid(x),), new_tensor(node.output[0], source[tid(x)]), hw, act=CONV_ACTIVATIONS[node.op_type]))
        elif node.op_type == "Mul":
            if any(alias.get(t, t) not in ids for t in node.input):
                raise HwsearchError(f"Mul node {node.name!r} multiplies by a constant; latency tables model only products of two computed tensors "
                                    "(squeeze-excitation gates, x·sigmoid(x)): fold the constant into the layer before it.")
            a, b = node.input
            if spatial(a) == (1, 1) and spatial(b) != (1, 1):
                a, b = b, a
            gate = spatial(b) == (1, 1) and spatial(a) != (1, 1)
            units.append(Unit("mul", node.name, (tid(a), tid(b)), new_tensor(node.output[0], source[tid(a)]), tuple(spatial(a)) or (1, 1), k=int(gate)))
        elif node.op_type == "Add":
            out, act = fuse_act(node.output[0])
            a, b = tid(node.input[0]), tid(node.input[1])
            units.append(Unit("add", node.name, (a, b), new_tensor(out, source[a]), hw, act=act))
        elif node.op_type == "Concat":
            if _attr(node, "axis") != 1 or any(alias.get(t, t) not in ids for t in node.input):
                raise HwsearchError(f"Concat node {node.name!r} is not a concatenation of computed tensors along channels (axis {_attr(node, 'axis')}); "
                                    "latency tables model only channel concatenations (GhostNet-style).")
            parts = tuple(tid(t) for t in node.input)
            units.append(Unit("concat", node.name, parts, new_tensor(node.output[0], tuple(source[t] for t in parts)), hw))
        elif node.op_type == "Slice":
            starts, ends, axes, steps = (consts.get(t) if t else None for t in (list(node.input[1:]) + [""] * 4)[:4])
            c_in, c_out = shapes.get(alias.get(x, x), [0, 0])[1], shapes.get(node.output[0], [0, 0])[1]
            if starts is None or ends is None or (axes is not None and list(axes.ravel()) != [1]) or (steps is not None and list(steps.ravel()) != [1]) \
                    or int(starts.ravel()[0]) != 0:
                raise HwsearchError(f"Slice node {node.name!r} is not a slice of leading channels (x[:, :n]); latency tables model only that kind of Slice "
                                    "(GhostNet's cut of its concatenation).")
            units.append(Unit("slice", node.name, (tid(x),), new_tensor(node.output[0], source[tid(x)] if c_out == c_in else c_out), hw))
        elif node.op_type == "Reshape":
            dims_in, dims_out = shapes.get(alias.get(x, x), []), shapes.get(node.output[0], [])
            flat = len(dims_in) == 4 and dims_in[1] * dims_in[2] * dims_in[3]
            if len(dims_out) != 2 or dims_out[1] != flat and not (dims_out[1] == 1 and flat == dims_in[1]):  # 1: not inferred (x.size(0)), after a global pool
                raise HwsearchError(f"Reshape node {node.name!r} is not a flattening reshape (x.view(x.size(0), -1)); latency tables model only that kind.")
            units.append(Unit("reshape", node.name, (tid(x),), new_tensor(node.output[0], source[tid(x)]), hw))
        elif node.op_type in ("MaxPool", "AveragePool", "GlobalAveragePool", "Flatten"):
            kind = {"MaxPool": "maxpool", "AveragePool": "avgpool", "GlobalAveragePool": "gap", "Flatten": "flatten"}[node.op_type]
            if kind in ("maxpool", "avgpool") and (any(_attr(node, "pads", [0])) or _attr(node, "ceil_mode", 0) or len(set(_attr(node, "kernel_shape", [0]))) > 1):
                raise HwsearchError(f"{node.op_type} node {node.name!r} pads its input, rounds up or has a non-square window; latency tables model only "
                                    "square unpadded pools such as nn.MaxPool2d(2) / nn.AvgPool2d(2).")
            k = _attr(node, "kernel_shape", [0])[0]
            s = _attr(node, "strides", [1])[0]
            units.append(Unit(kind, node.name, (tid(x),), new_tensor(node.output[0], source[tid(x)]), hw, k, s))
        else:
            raise HwsearchError(f"ONNX op {node.op_type!r} (node {node.name!r}) is listed as supported but the CNN lowering has no unit for it; "
                                "this is a bug in hwsearch/families/cnn/parse.py: please report it.")
    consumers: list[list[int]] = [[] for _ in source]
    for i, u in enumerate(units):
        for t in u.inputs:
            consumers[t].append(i)
    return units, source, [tuple(c) for c in consumers], channels
