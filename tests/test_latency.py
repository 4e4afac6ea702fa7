"""Latency tables: kernel keys, lowering vs ORT's optimised graph, table checks, interpolation,
strict mode, provenance warnings, and predicted vs measured latency on a small profiled table."""

from __future__ import annotations

import collections
import csv
import json
import logging
import random
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from hwsearch import context
from hwsearch.compress import realise
from hwsearch.errors import HwsearchError
from hwsearch.families.cnn.enumerate import kernel_timer
from hwsearch.families.cnn.kernel_rules import out_hw
from hwsearch.families.cnn.lowering import CNNLowering, UnitGraph
from hwsearch.latency.predict import Interpolator
from hwsearch.latency.profile import run_profile
from hwsearch.options import LATENCY_ONLY
from hwsearch.policy import Policy
from hwsearch.runtime.session import SessionSettings, detect_block, optimized_op_types
from hwsearch.runtime.timing import MeasureSettings, time_model
from hwsearch.tables.kernels import Kernel
from hwsearch.tables.table import Table, load_table, write_meta
from tests.conftest import cnn_context

FAST = MeasureSettings(warmup=10, min_runs=40, min_time_s=0.03)  # the shipped tables' settings: steadier medians
# ORT op types each kernel stands for (used to compare a lowering with ORT's optimised graph)
ORT_OPS = {"conv": {"fp32": ["Conv"], "int8": ["QLinearConv"]}, "gemm": {"fp32": ["Gemm"], "int8": ["QuantizeLinear", "QGemm", "DequantizeLinear"]},
           "reorder_in": {"fp32": ["ReorderInput"]}, "reorder_out": {"fp32": ["ReorderOutput"]}, "quantize": {"int8": ["QuantizeLinear"]},
           "dequantize": {"int8": ["DequantizeLinear"]}, "to_nhwc": {"int8": ["Transpose"]}, "to_nchw": {"int8": ["Transpose"]},
           "add": {"fp32": ["Add"], "int8": ["QLinearAdd"]}, "maxpool": {"fp32": ["MaxPool"], "int8": ["NhwcMaxPool"]},
           "gap": {"fp32": ["GlobalAveragePool"], "int8": ["QLinearGlobalAveragePool"]}, "flatten": {"fp32": ["Flatten"], "int8": ["Flatten"]},
           "to_nhwc_f": {"fp32": ["Transpose"]}, "to_nchw_f": {"fp32": ["Transpose"]}, "mul": {"fp32": ["Mul"]},
           "concat": {"fp32": ["Concat"], "int8": ["QLinearConcat"]}, "slice": {"fp32": ["Slice"], "int8": ["Slice"]},
           "avgpool": {"fp32": ["AveragePool"], "int8": ["QLinearAveragePool"]}}
ACT_OPS = {True: ["Relu"], "hswish": ["HardSigmoid", "Mul"], "hsigmoid": ["HardSigmoid"], "sigmoid": ["Sigmoid"], "silu": ["QuickGelu"]}
POLICIES = [
    {},
    {"default_keep": 0.5},
    {"default_precision": "int8"},
    {"keep": {"stem.0": 0.5}, "precision": {"layer2.0.conv1": "int8", "layer2.0.conv2": "int8", "layer3.1.conv1": "int8"}},
]


@pytest.fixture(scope="module")
def setup(digits, tiny_resnet):
    """(Context without recovery: op counts and latency do not depend on weights, graph, settings, block)."""
    model = tiny_resnet.model.eval()
    ctx = cnn_context(digits, tiny_resnet, options=LATENCY_ONLY)
    settings = SessionSettings(threads=1)
    block = detect_block(settings)
    graph = UnitGraph.from_model(model, digits.example_input(), ctx.space, block)
    return ctx, graph, settings, block


@pytest.fixture(scope="module")
def table_dir(setup, tmp_path_factory) -> Path:
    """A real table measured here, covering exactly the kernels of POLICIES (kept small for speed)."""
    ctx, graph, settings, block = setup
    kernels = sorted({Kernel(*t) for p in POLICIES for t in graph.lower(ctx.space, Policy.from_dict(p))})
    out = tmp_path_factory.mktemp("tables") / "cpu-test"
    run_profile(out, "cpu-test", kernels, settings, block, ["digits/resnet20-tiny"], kernel_timer(block), FAST, progress=False)
    return out


def _ort_op_counts(ctx, policy: Policy, path: Path) -> collections.Counter:
    """Op types ORT executes for the policy's realised file (``ctx`` without recovery: 32 calibration samples)."""
    logging.getLogger().setLevel(logging.ERROR)
    realise(ctx, policy, path, score=False)
    return collections.Counter("Flatten" if op == "Reshape" else op for op in optimized_op_types(path))  # a flattening Reshape is a flatten kernel


def _lowered_op_counts(graph, space, policy: Policy) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for t in graph.lower(space, policy):
        if t[0] == "act":
            counts.update(ACT_OPS[t[10]])
            continue
        if t[:3] == ("conv", "fp32", "nchw"):  # a conv ORT cannot block: FusedConv with its activation, else Conv
            counts["FusedConv" if t[10] else "Conv"] += 1
            continue
        if t[:3] == ("gemm", "int8", "u8"):  # a uint8 input: no QuantizeLinear of its own
            counts.update(["QGemm", "DequantizeLinear"])
            continue
        counts.update(["MaxPool"] if t[:3] == ("maxpool", "int8", "nchw") else ORT_OPS[t[0]][t[1]])  # uint8 NCHW: plain MaxPool
        if t[0] == "add" and t[1] == "fp32" and t[10]:
            counts["Relu"] += 1
    return counts


def test_kernel_key_round_trip():
    k = Kernel("conv", "fp32", "nchwc", 32, 16, 16, 64, 3, 2, 1, True, False)
    assert k.key == "conv;fp32;nchwc;32x16x16;co=64;k=3;s=2;g=1;relu;-"
    assert Kernel.parse(k.key) == k
    hs = Kernel("conv", "fp32", "nchwc", 32, 16, 16, 64, 3, 1, 32, "hswish", False)
    assert hs.key == "conv;fp32;nchwc;32x16x16;co=64;k=3;s=1;g=32;hswish;-" and Kernel.parse(hs.key) == hs
    relu, plain = (Kernel("conv", "fp32", "nchwc", 32, 16, 16, 64, 3, 1, 32, a, False) for a in (True, False))
    assert sorted([relu, hs, plain]) == [plain, hs, relu]  # mixed activation fields sort by their key text
    assert k.fields() == ("conv", "fp32", "nchwc", 32, 16, 16, 64, 3, 2, 1, True, False) and Kernel(*k.fields()) == k
    assert out_hw(k) == out_hw(k.fields()) == (8, 8)
    with pytest.raises(ValueError, match="malformed"):
        Kernel.parse("conv;fp32;32x16x16")


@pytest.mark.parametrize("policy", POLICIES, ids=["baseline", "pruned", "int8", "mixed"])
def test_lowering_matches_ort_optimized_graph(setup, tmp_path, policy):
    ctx, graph, _, _ = setup
    p = Policy.from_dict(policy)
    assert _lowered_op_counts(graph, ctx.space, p) == _ort_op_counts(ctx, p, tmp_path / "m.onnx")


VGG_POLICIES = {  # features.3 -> max-pool -> features.7 (32 channels, a whole NCHWc block multiple)
    "int8-pool-fp32": {"precision": {"features.3": "int8"}},  # uint8 NHWC max-pool, then DQ for the float conv
    "fp32-pool-int8": {"precision": {"features.7": "int8"}},  # Q moves above the pool: uint8 NCHW max-pool
    "fp16-pool-fp16": {"precision": {"features.3": "fp16", "features.7": "fp16"}},  # reorders around an NCHWc pool
    "fp16-chain": {"precision": {"features.7": "fp16", "features.10": "fp16"}, "default_keep": 0.75},  # fp16 convs chain in NCHWc
}


@pytest.mark.parametrize("policy", list(VGG_POLICIES.values()), ids=list(VGG_POLICIES))
def test_vgg_pool_and_fp16_lowering_matches_ort(digits, tmp_path, policy):
    ctx = context.build("digits", "vgg", random_init=True, options=LATENCY_ONLY)  # the full-size vgg, untrained
    model, space = ctx.baseline.model, ctx.space
    graph = UnitGraph.from_model(model, digits.example_input(), space, detect_block(SessionSettings(threads=1)))
    p = Policy.from_dict(policy)
    assert _lowered_op_counts(graph, space, p) == _ort_op_counts(ctx, p, tmp_path / "m.onnx")
    kernels = graph.lower(space, p)
    if "features.7" in p.precision and p.precision["features.7"] == "int8":  # quantized at the pool's input size (32x32)
        assert ("maxpool", "int8", "nchw", 32, 32, 32) in [k[:6] for k in kernels] and ("quantize", "int8", "nchw", 32, 32, 32) in [k[:6] for k in kernels]


EDGE_OP_POLICIES = {
    "fp32": {},
    "int8": {"default_precision": "int8"},
    "pruned": {"default_keep": 0.5},
    "pruned-int8": {"default_keep": 0.625, "default_precision": "int8"},
    # int8 convs around float squeeze-excitation convs (and back): islands in NCHW, gates as plain NCHW Muls
    "mixed": {"default_keep": 0.75, "precision": {"features.4.block.0": "int8", "features.4.block.3": "int8", "features.5.block.6.reduce": "int8",
                                                  "features.8.0": "int8"}},
    "mixed-fp16": {"default_keep": 0.625, "precision": {"features.1.block.3.expand": "int8", "features.4.block.6.reduce": "int8",
                                                        "features.4.block.6.expand": "int8", "features.6.block.3": "fp16"}},
}


@pytest.mark.parametrize("policy", [{}, {"default_precision": "int8"}, {"default_keep": 0.5},
                                    {"precision": {"blocks.0.dw.0": "int8", "blocks.0.se_r": "int8", "blocks.1.proj.0": "int8"}}],
                         ids=["fp32", "int8", "pruned", "mixed"])
def test_silu_lowering_matches_ort(digits, tmp_path, policy):
    """An EfficientNet-style user model: SiLU is one QuickGelu after a float conv, DQ -> Sigmoid, DQ -> Mul after an int8 one."""
    ctx = context.build("digits", "tests.test_prune_structures:effnet", random_init=True, options=LATENCY_ONLY)
    graph = UnitGraph.from_model(ctx.baseline.model, digits.example_input(), ctx.space, detect_block(SessionSettings(threads=1)))
    p = Policy.from_dict(policy)
    assert _lowered_op_counts(graph, ctx.space, p) == _ort_op_counts(ctx, p, tmp_path / "m.onnx")


GHOST_POLICIES = {
    "fp32": {},
    "int8": {"default_precision": "int8"},
    "pruned": {"default_keep": 0.5},
    "pruned-int8": {"default_keep": 0.5, "default_precision": "int8"},
    # float concatenations of int8 halves, QLinearConcat of a float and an int8 half, uint8 slices, float NHWC sums
    "mixed": {"default_keep": 0.75, "precision": {"blocks.0.g1.primary.0": "int8", "blocks.1.g2.cheap.0": "int8", "blocks.1.dw.0": "int8",
                                                  "blocks.2.se.fc2": "int8"}},
    "mixed-2": {"precision": {"blocks.0.g2.primary.0": "int8", "blocks.1.g1.cheap.0": "int8", "blocks.2.g1.primary.0": "int8",
                              "blocks.2.g1.cheap.0": "int8", "blocks.2.se.fc1": "int8"}},
    "mixed-fp16": {"default_keep": 0.625, "precision": {"blocks.1.g1.primary.0": "int8", "blocks.1.g1.cheap.0": "int8", "blocks.1.dw.0": "int8",
                                                        "blocks.1.se.fc1": "fp16", "blocks.2.g2.cheap.0": "int8"}},
}


# grouped 3x3 convs (4 groups of 8 channels, 16 in the second ResNeXt block): NCHWc where each group's channels fill
# whole NCHWc blocks (8-wide CPUs, unpruned), else plain NCHW (pruned to half, or 16-wide CPUs); int8: QLinearConv with groups
GROUPED_POLICIES = {
    "fp32": {},
    "int8": {"default_precision": "int8"},
    "pruned": {"default_keep": 0.5},
    "pruned-int8": {"default_keep": 0.5, "default_precision": "int8"},
}
RESNEXT_MIXED = {"keep": {"blocks.0.conv1.0": 0.5}, "precision": {"blocks.0.conv2.0": "int8", "blocks.1.conv1.0": "int8", "blocks.1.conv2.0": "int8"}}
REGNET_MIXED = {"keep": {"blocks.1.a.0": 0.75}, "precision": {"blocks.0.b.0": "int8", "blocks.1.a.0": "int8", "blocks.1.b.0": "int8", "blocks.1.c.0": "int8"}}
# average-pool downsampling (blocked when its channels fill whole NCHWc blocks, QLinearAveragePool between int8 convs) and x.view(n, -1)
AVGPOOL_POLICIES = {**GROUPED_POLICIES, "int8-in": {"precision": {"a.0": "int8"}}, "int8-out": {"precision": {"b.0": "int8"}},
                    "int8-around": {"precision": {"a.0": "int8", "b.0": "int8"}, "keep": {"a.0": 0.75}}, "fp16": {"precision": {"a.0": "fp16", "b.0": "fp16"}},
                    "int8-fc": {"precision": {"fc": "int8"}}, "int8-tail": {"precision": {"c.0": "int8", "fc": "int8"}, "default_keep": 0.5}}
EDGE_MODELS = {"mbv3": "mobilenetv3", "ghost": "tests.test_prune_structures:ghostnet",  # the built-in MobileNetV3; user models in the styles of
               "resnext": "tests.test_prune_structures:resnext", "regnet": "tests.test_prune_structures:regnet",  # GhostNet, ResNeXt, RegNet
               "avgpool": "tests.test_prune_structures:avgpooled"}
EDGE_CASES = {**{f"mbv3-{k}": ("mbv3", p) for k, p in EDGE_OP_POLICIES.items()}, **{f"ghost-{k}": ("ghost", p) for k, p in GHOST_POLICIES.items()},
              **{f"{m}-{k}": (m, p) for m in ("resnext", "regnet") for k, p in GROUPED_POLICIES.items()},
              "resnext-mixed": ("resnext", RESNEXT_MIXED), "regnet-mixed": ("regnet", REGNET_MIXED),
              **{f"avgpool-{k}": ("avgpool", p) for k, p in AVGPOOL_POLICIES.items()}}


@pytest.fixture(scope="module")
def edge_graph(digits):
    """``edge_graph(name)``: an ``EDGE_MODELS`` model, untrained (op counts do not depend on weights), and its unit graph, built once."""
    built = {}

    def get(name):
        if name not in built:
            ctx = context.build("digits", EDGE_MODELS[name], random_init=True, options=LATENCY_ONLY)
            built[name] = ctx, UnitGraph.from_model(ctx.baseline.model, digits.example_input(), ctx.space, detect_block(SessionSettings(threads=1)))
        return built[name]

    return get


@pytest.mark.parametrize(("model", "policy"), list(EDGE_CASES.values()), ids=list(EDGE_CASES))
def test_edge_model_lowering_matches_ort(edge_graph, tmp_path, model, policy):
    """MobileNetV3: hard-swish / hard-sigmoid fused into float convs and left as float islands after int8 convs, SE gates,
    int8 global pools. GhostNet: channel concatenations (NCHWc when block-aligned, QLinearConcat, float NHWC between int8
    convs) and leading-channel slices. ResNeXt / RegNet: grouped convs, blocked or plain NCHW. Average pools and x.view(n, -1)."""
    ctx, graph = edge_graph(model)
    p = Policy.from_dict(policy)
    assert _lowered_op_counts(graph, ctx.space, p) == _ort_op_counts(ctx, p, tmp_path / "m.onnx")


def test_ghost_channels_follow_the_coupled_halves(edge_graph):
    """A residual couples the stem with both halves of a ghost module: each half keeps half of the group's channels."""
    ctx, graph = edge_graph("ghost")
    policy = Policy.from_dict({"keep": {"stem.0": 0.5}})
    channels = dict(zip(graph.tensor_source, graph.tensor_channels(ctx.space, policy)))
    kept = ctx.space.kept_channels(next(g for g in ctx.space.groups if g.name == "stem.0"), 0.5)
    assert channels["stem.0"] == kept and channels["blocks.0.g2.primary.0"] == channels["blocks.0.g2.cheap.0"] == kept // 2
    assert channels[("blocks.0.g2.primary.0", "blocks.0.g2.cheap.0")] == kept


@pytest.mark.parametrize("model", ["mbv3", "ghost", "resnext", "avgpool"])
def test_edge_kernels_are_enumerated_and_each_kind_builds_and_runs(edge_graph, model):
    """Every kernel 100 random MobileNetV3 (or GhostNet-, ResNeXt-, average-pool-style) policies lower to is one ``hwsearch profile`` measures, and one of each kind runs in ORT."""
    from hwsearch.families.cnn.enumerate import enumerate_kernels
    from hwsearch.families.cnn.kernel_models import build_kernel_model
    from hwsearch.runtime.session import random_feed, session

    ctx, graph = edge_graph(model)
    rng = np.random.default_rng(0)
    lowered: set[Kernel] = set()
    for _ in range(100):
        policy = {"keep": {g.name: float(rng.choice(ctx.space.keep_choices)) for g in ctx.space.groups},
                  "precision": {layer: str(rng.choice(["fp32", "fp16", "int8"])) for layer in ctx.space.layers}}
        lowered.update(Kernel(*t) for t in graph.lower(ctx.space, Policy.from_dict(policy)))
    assert lowered <= set(enumerate_kernels(graph, ctx.space))
    kinds = {(k.op, k.precision, k.layout, str(k.act), k.k if k.op == "mul" else int(1 < k.g < k.c) if k.op == "conv" else 0): k for k in sorted(lowered)}
    if model == "mbv3":
        assert {"act", "mul", "to_nchw_f", "to_nhwc_f"} <= {kind[0] for kind in kinds} and ("gap", "int8", "nhwc", "False", 0) in kinds
    elif model == "resnext":  # grouped convs: int8, and plain NCHW fp32 where a group's channels do not fill whole NCHWc blocks (pruned)
        assert {("conv", "int8", "nhwc", "False", 1), ("conv", "fp32", "nchw", "True", 1)} <= set(kinds)
    elif model == "avgpool":
        assert {("avgpool", "int8", "nhwc"), ("avgpool", "fp32", "nchwc"), ("flatten", "int8", "nchw"), ("gemm", "int8", "u8")} <= {kind[:3] for kind in kinds}
    else:
        assert {("concat", "int8"), ("concat", "fp32"), ("slice", "int8"), ("slice", "fp32")} <= {kind[:2] for kind in kinds}
    for kernel in kinds.values():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "k.onnx"
            onnx.save(build_kernel_model(kernel, graph.block), str(path))
            sess = session(path)
            out = sess.run(None, random_feed(sess.get_inputs()))[0]
            assert out.size > 0, kernel.key


def test_table_schema(table_dir):
    meta = json.loads((table_dir / "meta.json").read_text())
    for key in ("device", "cpu_model", "isa_flags", "runtime", "runtime_version", "threads", "date", "measurement", "call_overhead_us", "nchwc_block"):
        assert key in meta
    assert meta["device"] == "cpu-test" and meta["threads"] == 1 and meta["runtime"] == "onnxruntime"
    assert 0 < meta["call_overhead_us"] < 1000
    rows = list(csv.DictReader((table_dir / "table.csv").open()))
    assert rows and all(0 <= float(r["p10_us"]) <= float(r["median_us"]) <= float(r["p90_us"]) + 1e-9 for r in rows)
    assert meta["measurement"]["statistic"] == "p10" and meta["schema"] == 2
    assert all(Kernel.parse(r["key"]).op == r["op"] for r in rows)
    table = load_table(table_dir)
    assert len(table.us) == len(rows)


def test_profile_keeps_each_kernels_fastest_pass_and_resumes_a_killed_run(tmp_path):
    """Several shuffled passes: a kernel timed during a slow spell in one pass keeps its fast pass;
    a profile killed mid-pass resumes without timing any (kernel, pass) twice."""
    from hwsearch.latency.profile import PASSES_FILE
    from hwsearch.runtime.timing import Timing

    kernels = [Kernel("conv", "fp32", "nchwc", c, 8, 8, 16, 3, 1, 1, False, False) for c in (8, 16, 24, 32, 40, 48)]
    slow = {kernels[1].key: 0, kernels[4].key: 2}  # kernel -> the pass that meets a slow spell (3x)
    calls: list[str] = []

    def measure(kernel, settings, ms, stop_after=None):
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt
        calls.append(kernel.key)
        p = calls.count(kernel.key) - 1  # this kernel's pass
        t = 100.0 * kernel.c * factor(kernel, p)
        return Timing(t, t * 1.05, t * 1.2, 50)

    def factor(kernel, p):
        return 3.0 if slow.get(kernel.key) == p else 1.0 + 0.01 * p

    out = tmp_path / "t"
    ms = MeasureSettings(passes=3)
    settings = SessionSettings(threads=1)
    with pytest.raises(KeyboardInterrupt):
        run_profile(out, "cpu-test", kernels, settings, 16, ["m"], measure=lambda k, s, m: measure(k, s, m, stop_after=8), timing=ms, progress=False)
    assert not (out / "table.csv").exists() and len((out / PASSES_FILE).read_text().splitlines()) == 1 + 8  # header + 8 passes kept
    with (out / PASSES_FILE).open("a") as f:  # killed in the middle of writing a row
        f.write(f"{kernels[5].key},1,61")
    run_profile(out, "cpu-test", kernels, settings, 16, ["m"], measure, ms, progress=False)
    assert len(calls) == 3 * len(kernels) and all(calls.count(k.key) == 3 for k in kernels)  # nothing timed twice
    meta = json.loads((out / "meta.json").read_text())
    overhead = meta["call_overhead_us"]
    table = load_table(out)
    fastest = {k: 100.0 * k.c * min(factor(k, p) for p in range(3)) for k in kernels}
    for k in kernels:  # the fastest pass (kernels[1]: pass 1, its pass 0 was slow), with its own median
        assert table.us[k] == pytest.approx(fastest[k] - overhead, abs=2e-3)
    rows = {r["key"]: r for r in csv.DictReader((out / "table.csv").open())}
    assert float(rows[kernels[1].key]["median_us"]) == pytest.approx(fastest[kernels[1]] * 1.05 - overhead, abs=2e-3)
    assert meta["measurement"]["passes"] == 3
    agreement = meta["pass_agreement"]
    assert agreement["n_kernels"] == 6 and agreement["over_50pct"] == pytest.approx(2 / 6) and agreement["within_5pct"] == pytest.approx(4 / 6)
    with pytest.raises(HwsearchError, match="passes=0"):
        MeasureSettings(passes=0)


def test_a_median_table_sums_kernel_medians_to_predict_a_models_p10(table_dir, tmp_path):
    """measurement.statistic picks the column summed; model_statistic what whole models are timed by."""
    from hwsearch.tables.table import model_statistic, statistic

    med = tmp_path / "med"
    shutil.copytree(table_dir, med)
    meta = json.loads((med / "meta.json").read_text())
    assert model_statistic(meta) == "p10" == statistic(meta)  # a p10 table predicts p10
    meta["measurement"]["statistic"] = "median"
    (med / "meta.json").write_text(json.dumps(meta))
    rows = {r["key"]: float(r["median_us"]) for r in csv.DictReader((med / "table.csv").open())}
    table = load_table(med)
    assert all(table.us[k] == rows[k.key] for k in table.us)
    assert statistic(table.meta) == "median" and model_statistic(table.meta) == "p10"
    del meta["measurement"]["model_statistic"]  # tables written before the field: models timed like kernels
    assert model_statistic(meta) == "median"


def test_table_with_bad_units_is_rejected(table_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text((table_dir / "meta.json").read_text())
    lines = (table_dir / "table.csv").read_text().splitlines()
    fields = lines[1].split(",")
    fields[-3] = "-5"  # a negative median
    (bad / "table.csv").write_text("\n".join([lines[0], ",".join(fields)]) + "\n")
    write_meta(bad, json.loads((table_dir / "meta.json").read_text()))  # as if profiled so: meta.json records this table.csv
    with pytest.raises(HwsearchError, match="microseconds"):
        load_table(bad)
    with pytest.raises(HwsearchError, match="table.csv and meta.json"):
        load_table(tmp_path / "nowhere")


def test_interpolation_rule():
    def conv(c: int, co: int) -> Kernel:
        return Kernel("conv", "fp32", "nchwc", c, 16, 16, co, 3, 1, 1, True, False)

    table = Table(Path("t"), {}, {conv(16, 16): 10.0, conv(16, 32): 20.0, conv(16, 64): 50.0})
    interp = Interpolator(table, CNNLowering)  # the CNN lowering's neighbours_key and work (MACs), static methods
    assert interp.estimate(conv(16, 48).fields()) == pytest.approx(35.0)  # linear in MACs between the bracketing neighbours
    assert interp.estimate(conv(16, 8).fields()) == pytest.approx(5.0)  # below the range: nearest scaled by the work ratio
    assert interp.estimate(conv(16, 128).fields()) == pytest.approx(100.0)
    with pytest.raises(HwsearchError, match="no kernel of its family"):
        interp.estimate(Kernel("gap", "fp32", "nchw", 16, 8, 8).fields())


def test_missing_kernel_is_interpolated_or_strict_error(setup, table_dir, tmp_path):
    ctx, graph, _, _ = setup
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "meta.json").write_text((table_dir / "meta.json").read_text())
    baseline_keys = {Kernel(*t).key for t in graph.lower(ctx.space, Policy())}
    lines = (table_dir / "table.csv").read_text().splitlines()
    dropped = next(line.split(",")[0] for line in lines[1:] if line.startswith("conv;fp32") and line.split(",")[0] in baseline_keys)
    (partial / "table.csv").write_text("\n".join(line for line in lines if not line.startswith(dropped + ",")) + "\n")
    write_meta(partial, json.loads((table_dir / "meta.json").read_text()))  # a whole table that lacks a kernel
    pred = ctx.predictor(partial).predict(Policy())
    assert dropped in pred.missing and 0 < pred.coverage < 1
    full = ctx.predictor(table_dir).predict(Policy())
    assert full.coverage == 1.0 and pred.latency_ms == pytest.approx(full.latency_ms, rel=0.2)
    with pytest.raises(HwsearchError, match=dropped.replace(";", ".").replace("(", ".")[:20]):
        ctx.predictor(partial, strict=True).predict(Policy())


def test_provenance_warning_names_both(setup, table_dir, tmp_path):
    ctx, _, _, _ = setup
    other = tmp_path / "other"
    other.mkdir()
    meta = json.loads((table_dir / "meta.json").read_text())
    meta["cpu_model"], meta["runtime_version"] = "Imaginary CPU 9000", "0.0.1"
    (other / "meta.json").write_text(json.dumps(meta))
    (other / "table.csv").write_bytes((table_dir / "table.csv").read_bytes())
    with pytest.warns(UserWarning, match="Imaginary CPU 9000") as record:
        ctx.predictor(other)
    assert any("0.0.1" in str(w.message) for w in record)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_table(table_dir)  # the table measured here loads without a warning


def test_prediction_is_the_sum_of_table_kernels(setup, table_dir):
    """A prediction is the call overhead plus the table's median of every kernel the policy lowers to."""
    ctx, _, _, _ = setup
    predictor = ctx.predictor(table_dir, strict=True)
    table = load_table(table_dir)
    for p in POLICIES:
        policy = Policy.from_dict(p)
        expected_us = table.call_overhead_us + sum(table.us[k] for k in predictor.kernels(policy))
        pred = predictor.predict(policy)
        assert pred.latency_ms == pytest.approx(expected_us / 1e3) and pred.coverage == 1.0 and not pred.missing


def test_prediction_ranks_far_apart_policies_like_measurement(setup, table_dir, tmp_path):
    """Behaviour, not a timing target: the policy predicted much faster is also measured faster.
    (How close predictions are is a benchmark: ``hwsearch validate-table`` writes it to validation.json.)"""
    ctx, _, settings, _ = setup
    predictor = ctx.predictor(table_dir, strict=True)
    by_pred = sorted(POLICIES, key=lambda p: predictor.predict(Policy.from_dict(p)).latency_ms)
    fast, slow = by_pred[0], by_pred[-1]
    assert predictor.predict(Policy.from_dict(slow)).latency_ms > 1.5 * predictor.predict(Policy.from_dict(fast)).latency_ms
    measured = []
    for i, p in enumerate((fast, slow)):
        path = tmp_path / f"m{i}.onnx"
        logging.getLogger().setLevel(logging.ERROR)
        realise(ctx, Policy.from_dict(p), path, score=False)
        measured.append(time_model(path, settings, MeasureSettings(warmup=20, min_runs=200, min_time_s=0.0), ctx.task.latency_feed()).median_us)
    assert measured[0] < measured[1], (fast, slow, measured)


def test_cli_predict(table_dir, tmp_path, capsys):
    from hwsearch.cli import main
    from tests.conftest import TINY_RESNET

    policy = tmp_path / "p.json"
    policy.write_text(json.dumps(POLICIES[1]))
    rc = main(["predict", "--table", str(table_dir), "--model", "resnet20", "--model-option", f"widths={json.dumps(TINY_RESNET['widths'])}",
               "--random-init", "--policy", str(policy)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["latency_ms"] > 0 and out["coverage"] == 1.0 and out["device"] == "cpu-test"


def test_calibration_fit_recovers_known_coefficients():
    from hwsearch.tables.calibration import apply, cross_validated_rmspe, fit

    rng = random.Random(0)
    truth_scale, truth_per, intercept, overhead = {"conv-fp32-kxk": 1.2, "reorder": 2.0}, {"conv-fp32-kxk": 0.5, "reorder": 1.0}, 3.0, 6.0
    rows = []
    for _ in range(60):
        terms = {"conv-fp32-kxk": (rng.uniform(100, 1000), rng.randint(5, 20)), "reorder": (rng.uniform(5, 50), rng.randint(1, 6))}
        rows.append((terms, apply(terms, truth_scale, truth_per, intercept, overhead)))
    scale, per, icpt = fit(rows, overhead)
    assert scale["conv-fp32-kxk"] == pytest.approx(1.2, abs=0.02) and scale["reorder"] == pytest.approx(2.0, abs=0.1)
    assert cross_validated_rmspe(rows, overhead) < 0.01


def test_per_architecture_calibration_beats_one_global_fit():
    from hwsearch.tables.calibration import apply, cross_validated_rmspe, fit_hierarchical

    rng = random.Random(1)
    rows, keys = [], []
    for arch, true_scale in (("a", 0.8), ("b", 1.3)):
        for _ in range(40):
            terms = {"conv-fp32-kxk": (rng.uniform(100, 1000), rng.randint(5, 20)), "reorder": (rng.uniform(5, 50), rng.randint(1, 6))}
            rows.append((terms, apply(terms, {"conv-fp32-kxk": true_scale}, {}, 0.0, 6.0)))
            keys.append(arch)
    glob, own = fit_hierarchical(rows, keys, 6.0)
    assert own["a"][0]["conv-fp32-kxk"] < glob[0]["conv-fp32-kxk"] < own["b"][0]["conv-fp32-kxk"]
    assert cross_validated_rmspe(rows, 6.0, keys) < 0.5 * cross_validated_rmspe(rows, 6.0)


def test_predictor_applies_calibration_and_ignores_a_stale_one(setup, table_dir, tmp_path):
    from hwsearch.families.cnn.kernel_rules import kernel_class
    from hwsearch.tables.calibration import CALIBRATION_FILE
    from hwsearch.tables.table import table_hash

    ctx, _, _, _ = setup
    cal_dir = tmp_path / "cal"
    shutil.copytree(table_dir, cal_dir)
    plain = ctx.predictor(cal_dir)
    policy = Policy.from_dict(POLICIES[3])
    kernels = plain.kernels(policy)
    cal = {"schema": 1, "table_sha256": table_hash(cal_dir), "intercept_us": 2.0, "scale": {"conv-fp32-kxk": 1.5}, "per_kernel_us": {"reorder": 0.25}}
    (cal_dir / CALIBRATION_FILE).write_text(json.dumps(cal))
    table = load_table(cal_dir)
    expected = table.call_overhead_us + 2.0
    for k in kernels:
        t = (k.op, k.precision, k.layout, k.c, k.h, k.w, k.co, k.k, k.s, k.g, k.act, k.sum)
        assert t == k.fields()
        c = kernel_class(t)
        expected += cal["scale"].get(c, 1.0) * table.us[k] + cal["per_kernel_us"].get(c, 0.0)
    assert ctx.predictor(cal_dir).predict(policy).latency_ms == pytest.approx(expected / 1e3)
    assert ctx.predictor(cal_dir, calibrated=False).predict(policy).latency_ms == pytest.approx(plain.predict(policy).latency_ms)
    cal["table_sha256"] = "0" * 64
    (cal_dir / CALIBRATION_FILE).write_text(json.dumps(cal))
    with pytest.warns(UserWarning, match="calibrate-table"):
        stale = ctx.predictor(cal_dir)
    assert stale.predict(policy).latency_ms == pytest.approx(plain.predict(policy).latency_ms)


def test_cli_profile_calibrate_validate(tmp_path, capsys):
    """The three table commands end to end on the tiny resnet20's whole space (quick, noisy timings)."""
    from hwsearch.cli import main
    from tests.conftest import TINY_RESNET

    work = tmp_path / "t"
    model = ["--model", "resnet20", "--model-option", f"widths={json.dumps(TINY_RESNET['widths'])}", "--random-init"]
    assert main(["profile", "--device", "cpu-tiny", "--out", str(work), *model, "--warmup", "2", "--min-runs", "5", "--min-time", "0", "--quiet", "--passes", "2"]) == 0
    profiled = json.loads(capsys.readouterr().out)
    assert profiled["kernels"] > 500 and profiled["passes"] == 2 and profiled["pass_agreement"]["n_kernels"] > 0
    assert len((work / "passes.csv").read_text().splitlines()) == 1 + 2 * profiled["kernels"]
    args = [*model, "--rounds", "1", "--min-runs", "20", "--min-time", "0"]
    assert main(["calibrate-table", str(work), "--samples", "12", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_models"] == 12 and out["rmspe_cross_validated"] >= 0 and (work / "calibration.json").is_file()
    stored = json.loads((work / "calibration.json").read_text())
    assert len(stored["cases"]) == 12 and len(stored["by_model"]) == 1
    assert main(["calibrate-table", str(work), "--refit", *args]) == 0  # refits on the stored cases, measures nothing
    refit = json.loads(capsys.readouterr().out)
    assert refit["n_models"] == 12 and refit["rmspe_fitted"] == pytest.approx(out["rmspe_fitted"])
    assert main(["validate-table", str(work), "--samples", "4", *args, "--rounds", "2", "--drift", "3"]) == 0
    report = json.loads((work / "validation.json").read_text())
    assert report["calibrated"] and report["statistic"] == "p10" and report["n_models"] == 4
    # each model's fastest round is its measured latency; the median of its rounds is kept beside it
    assert report["rounds"] == {"n": 2, "combine": "min"} and 0 <= report["vs_median_of_rounds"]["within_10pct"] <= 1
    assert all(c["measured_ms"] <= c["measured_median_ms"] for c in report["cases"])
    # noise figures beside the accuracy: two halves of the timing rounds, and calibration models timed again
    assert report["repeatability"]["n_models"] == 4 and 0 <= report["repeatability"]["within_5pct"] <= 1
    assert report["drift"]["n_models"] == 3 and report["drift"]["rmspe"] >= 0 and report["drift"]["calibrated_at"] == stored["measured_at"]
    assert stored["repeatability"] is None and stored["warnings"] == []  # one timing pass: nothing to compare it with
    assert 0 <= report["cpu_steal"] < 1 and 0 <= stored["cpu_steal"] < 1  # the hypervisor's share of the CPU during each run (Linux)
    # the calibration's cases gave the table its reference models; checking and adapting it here re-times them
    ref = json.loads((work / "reference.json").read_text())
    assert 2 <= len(ref["models"]) <= 10 and all(m["model_options"] == {"widths": TINY_RESNET["widths"]} and m["measured_ms"] > 0 for m in ref["models"])
    assert main(["check-table", str(work), "--adapt", "--rounds", "2", "--min-runs", "10", "--min-time", "0", "--quiet"]) == 0
    shown = capsys.readouterr().out
    assert "reference models in" in shown and "verdict:" in shown and "adaptation " in shown and "stored at" in shown
    key = next((work / "adaptations").glob("*.json")).stem
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"default_keep": 0.5}))
    assert main(["predict", "--table", str(work), "--policy", str(policy), *model, "--adapt", "require"]) == 0
    assert json.loads(capsys.readouterr().out)["adaptation"] == key
    assert main(["validate-table", str(work), "--samples", "3", *args, "--rounds", "2", "--drift", "0", "--adapt", "require"]) == 0
    adapted = json.loads((work / "adaptations" / f"{key}-validation.json").read_text())
    assert adapted["adaptation"] == key and adapted["unadapted"]["n_models"] == 3 and json.loads((work / "validation.json").read_text()) == report
    capsys.readouterr()
    assert main(["calibrate-table", str(work), "--samples", "3", *args]) == 2
    assert "--samples 3 is too few" in capsys.readouterr().err
    assert main(["profile", "--device", "cpu-tiny", "--out", str(work), *model, "--passes", "0", "--quiet"]) == 2
    assert "passes=0 must be 1 or more" in capsys.readouterr().err


def test_table_commands_take_a_narrower_space_with_keep_choices(tmp_path, capsys):
    """--keep-choices 1.0: a precision-only table (no pruned kernels), its random policies cut nothing, meta.json says so."""
    from hwsearch.cli import main
    from tests.conftest import TINY_RESNET

    model = ["--model", "resnet20", "--model-option", f"widths={json.dumps(TINY_RESNET['widths'])}"]
    quick = ["--warmup", "1", "--min-runs", "3", "--min-time", "0", "--quiet", "--passes", "1"]
    full, narrow = tmp_path / "full", tmp_path / "narrow"
    assert main(["profile", "--device", "t", "--out", str(full), *model, *quick]) == 0
    every = json.loads(capsys.readouterr().out)["kernels"]
    assert main(["profile", "--device", "t", "--out", str(narrow), *model, *quick, "--keep-choices", "1.0"]) == 0
    assert 0 < json.loads(capsys.readouterr().out)["kernels"] < every / 4
    meta = json.loads((narrow / "meta.json").read_text())
    assert meta["keep_choices"] == [1.0] and "keep_choices" not in json.loads((full / "meta.json").read_text())
    assert main(["validate-table", str(narrow), "--samples", "3", *model, "--keep-choices", "1", "--rounds", "1", "--min-runs", "5", "--min-time", "0", "--drift", "0"]) == 0
    capsys.readouterr()
    report = json.loads((narrow / "validation.json").read_text())
    assert len(report["cases"]) == 3 and all(c["coverage"] == 1.0 for c in report["cases"])  # a pruned policy would need kernels the table lacks
    assert report["worst"] and all(set(w["policy"].get("keep", {}).values()) <= {1.0} for w in report["worst"])
    for bad, says in (("0.5,x", "is not a comma-separated list of numbers"), ("0", "Keep ratio --keep-choices=0.0 is outside (0, 1]"), (",", "--keep-choices is empty")):
        assert main(["profile", "--device", "t", "--out", str(tmp_path / "bad"), *model, "--keep-choices", bad]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_timing_rounds_combine_by_their_fastest_or_their_median():
    from hwsearch.latency.cases import check_combine, repeat_error

    rounds = [1.0, 1.5, 1.1, 1.0]  # the second round met a slow spell
    assert repeat_error(rounds, "min") == pytest.approx(0.0)  # fastest even round vs fastest odd round
    assert repeat_error(rounds, "median") == pytest.approx(1.05 / 1.25 - 1)
    assert repeat_error([1.0], "min") is None
    with pytest.raises(HwsearchError, match="combine='mean' is unknown; use one of min, median"):
        check_combine("mean")


def test_steal_fraction_reads_the_hypervisors_share_from_proc_stat(monkeypatch):
    from hwsearch.latency import cases as v

    readings = iter([(100, 1000), (150, 2000)])
    monkeypatch.setattr(v, "cpu_times", lambda: next(readings))
    assert v.steal_since(v.cpu_times()) == pytest.approx(0.05)  # 50 of 1000 ticks went to other guests
    assert v.steal_since(None) is None
    monkeypatch.undo()
    steal, total = v.cpu_times()
    assert 0 <= steal <= total


def test_validation_names_a_disturbed_machine_and_the_fix():
    from hwsearch.latency.cases import noise_warnings

    calm = {"repeatability": {"n_models": 200, "within_10pct": 0.99}, "drift": {"n_models": 30, "mean_change": 0.02}, "cpu_steal": 0.0}
    assert noise_warnings(calm) == []
    busy = {"repeatability": {"n_models": 210, "within_10pct": 0.29}, "drift": {"n_models": 30, "mean_change": 0.34, "calibrated_at": "2026-11-22T00:00:56+0000"}, "cpu_steal": 0.002}
    rep, drift = noise_warnings(busy)
    assert "more than 10% for 71% of models" in rep and "idle machine" in rep
    assert "+34%" in drift and "2026-11-22T00:00:56" in drift and "calibrate and validate again" in drift
