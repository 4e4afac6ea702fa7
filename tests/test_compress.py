import numpy as np
import pytest
import torch

from hwsearch import context
from hwsearch.compress import realise
from hwsearch.errors import HwsearchError
from hwsearch.families import get_family
from hwsearch.families.cnn.stats import count_macs, count_params
from hwsearch.families.cnn.train import torch_logits
from hwsearch.options import CompressOptions
from hwsearch.policy import Policy
from hwsearch.runtime.onnx_export import export
from hwsearch.runtime.session import count_quantized_kernels, run_feeds, session
from tests.conftest import cnn_context

CNN = get_family("cnn")
# the pre-refactor CompressOptions defaults these tests were written against: no recovery, 256 calibration samples
RAW = CompressOptions(finetune_steps=0, bn_recalib_batches=0, calib_samples=256)


def _opts(**changes):
    return CompressOptions(**{**RAW.to_dict(), **changes})


def _ctx(baseline, task, options=RAW):
    return cnn_context(task, baseline, options)


def _untrained(model_name, model_options):
    """A Context over an untrained digits model (what a fresh, never-trained build gives)."""
    return context.build("digits", model_name, model_options=model_options, options=RAW, random_init=True)


def _run(path, x):
    return run_feeds(session(path), [{"input": x}])


def test_empty_policy_matches_torch_baseline(tiny_resnet, digits, tmp_path):
    res = realise(_ctx(tiny_resnet, digits, _opts(eval_split="test")), Policy(), tmp_path / "m.onnx")
    test = digits.split("test")
    ort_out = _run(res.onnx_path, test.x)
    torch_out = torch_logits(tiny_resnet.model, test)
    assert np.abs(ort_out - torch_out).max() <= 1e-4
    assert res.accuracy == pytest.approx(tiny_resnet.test_accuracy)
    assert res.params == count_params(tiny_resnet.model) and res.precision_counts["int8"] == 0


@pytest.mark.parametrize("model_name", ["resnet20", "mobilenetv2"])
def test_half_keep_quarters_params_and_macs(model_name, digits):
    model = CNN.build_model(model_name, digits, {}).eval()  # default widths: every group halves exactly
    x = digits.example_input()
    space = CNN.search_space(model, digits)
    before = [p.clone() for p in model.parameters()]
    pruned = CNN.prune(model, Policy.from_dict({"default_keep": 0.5}), space, digits, RAW)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "input model was mutated"
    p_ratio = count_params(pruned) / count_params(model)
    m_ratio = count_macs(pruned, x) / count_macs(model, x)
    # dense conv/linear cost scales by 1/2 * 1/2 (depthwise convs only by 1/2; the first conv's input
    # and the classifier's output are not pruned), so the totals land a little above a quarter
    assert 0.22 < p_ratio < 0.3 and 0.22 < m_ratio < 0.31, (p_ratio, m_ratio)
    expected = {layer: space.kept_channels(g, 0.5) for g in space.groups for layer in g.layers}
    convs = {n: m for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert set(expected) == set(convs)
    assert all(convs[n].out_channels == expected[n] for n in convs)
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.weight.shape[0] == m.out_channels for m in convs)
    assert pruned(x).shape == (1, 10)


@pytest.mark.parametrize("importance", ["bn_scale", "taylor"])
def test_data_driven_importance_prunes_the_same_shapes(importance, tiny_resnet, digits):
    space = CNN.search_space(tiny_resnet.model, digits)
    policy = Policy.from_dict({"default_keep": 0.5})
    a = CNN.prune(tiny_resnet.model, policy, space, digits, RAW)  # l1: weights only
    b = CNN.prune(tiny_resnet.model, policy, space, digits, _opts(importance=importance))  # scored on training samples
    assert count_params(a) == count_params(b)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_unknown_importance_is_an_error():
    with pytest.raises(HwsearchError, match="'fisher' is unknown"):
        CompressOptions(importance="fisher")


def test_whole_model_int8_quantizes_every_layer_and_keeps_accuracy(tiny_resnet, digits, tmp_path):
    ctx = _ctx(tiny_resnet, digits, _opts(eval_split="test"))
    space = ctx.space
    fp32 = realise(ctx, Policy(), tmp_path / "fp32.onnx")
    int8 = realise(ctx, Policy(default_precision="int8"), tmp_path / "int8.onnx")
    assert count_quantized_kernels(int8.onnx_path) == len(space.layers)
    assert count_quantized_kernels(fp32.onnx_path) == 0
    assert fp32.accuracy - int8.accuracy <= 0.01
    assert int8.size_bytes < 0.4 * fp32.size_bytes


@pytest.mark.parametrize("k", [0, 1, 3])
def test_quantizing_k_layers_gives_exactly_k_quantized_kernels(k, tiny_resnet, digits, tmp_path):
    ctx = _ctx(tiny_resnet, digits)
    convs = [name for name in ctx.space.layers if name != "fc"][::4][:k]
    policy = Policy(precision={name: "int8" for name in convs})
    res = realise(ctx, policy, tmp_path / "k.onnx")
    assert res.precision_counts["int8"] == k
    assert count_quantized_kernels(res.onnx_path) == k


def test_fp16_layers_store_half_precision_weights(tiny_resnet, digits, tmp_path):
    ctx = _ctx(tiny_resnet, digits, _opts(eval_split="test"))
    space = ctx.space
    fp32 = realise(ctx, Policy(), tmp_path / "a.onnx")
    fp16 = realise(ctx, Policy(default_precision="fp16"), tmp_path / "b.onnx")
    assert fp16.precision_counts["fp16"] == len(space.layers)
    assert fp16.size_bytes < 0.6 * fp32.size_bytes
    assert abs(fp16.accuracy - fp32.accuracy) <= 0.01


def test_finetune_recovers_accuracy_after_pruning(tiny_resnet, digits, tmp_path):
    ctx = _ctx(tiny_resnet, digits)
    policy = Policy(default_keep=0.5)
    raw = realise(ctx, policy, tmp_path / "raw.onnx")
    tuned = realise(ctx.with_options(finetune_steps=40, bn_recalib_batches=4), policy, tmp_path / "ft.onnx")
    assert tuned.accuracy > raw.accuracy + 0.05 and tuned.accuracy > 0.85


def test_fp32_layer_between_int8_layers_stays_fp32(tiny_vgg, digits, tmp_path):
    """ORT would quantize a float conv sandwiched between quantized tensors; our sessions do not."""
    ctx = _ctx(tiny_vgg, digits)
    space = ctx.space
    first, middle, last = space.layers[:3]
    res = realise(ctx, Policy(precision={first: "int8", last: "int8"}), tmp_path / "s.onnx")
    assert res.precision_counts == {"int8": 2, "int8d": 0, "fp16": 0, "fp32": len(space.layers) - 2}
    assert count_quantized_kernels(res.onnx_path) == 2


def test_fp16_works_on_untrained_models_with_shared_initializers(digits, tmp_path):
    ctx = _untrained("vgg", {"cfg": [8, "M", 8]})  # identical fresh BN folds share initializers
    res = realise(ctx, Policy(default_precision="fp16"), tmp_path / "h.onnx")
    assert res.precision_counts["fp16"] == len(ctx.space.layers)
    out = _run(res.onnx_path, digits.split("val").x[:8])
    assert np.isfinite(out).all()


def test_int8_fuses_on_untrained_models_with_shared_initializers(digits, tmp_path):
    """The exporter merges equal tensors (fresh BN folds give all-zero biases); every int8 conv must
    still run as one quantized kernel, not as dequantize + float conv."""
    import onnx

    ctx = _untrained("resnet20", {"widths": [16, 32, 64]})
    model, space = ctx.baseline.model, ctx.space
    path = export(model, digits.example_input(), tmp_path / "fp32.onnx")
    graph = onnx.load(str(path)).graph
    assert not [n for n in graph.node if n.op_type == "Identity"]
    consumers = [name for n in graph.node for name in n.input if name in {i.name for i in graph.initializer}]
    assert len(consumers) == len(set(consumers))  # no initializer feeds two inputs
    int8 = [name for name in space.layers if name != "fc"][1::2]
    res = realise(ctx, Policy(precision={name: "int8" for name in int8}), tmp_path / "q.onnx")
    assert count_quantized_kernels(res.onnx_path) == len(int8)


def test_recovery_keeps_batchnorm_statistics_of_the_final_weights(tiny_resnet, digits):
    """Recovery fine-tunes first, then re-estimates BatchNorm running statistics on the fine-tuned
    weights: estimating them again changes nothing (estimated before fine-tuning, they would be
    stale, and the fine-tune's batches would be averaged into them)."""
    from hwsearch.families.cnn.recover import recalibrate_bn

    ctx = _ctx(tiny_resnet, digits).with_options(finetune_steps=5, bn_recalib_batches=2)
    policy = Policy(default_keep=0.5)
    model = CNN.recover(CNN.prune(tiny_resnet.model, policy, ctx.space, digits, ctx.options), tiny_resnet.model, digits, ctx.options)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
    assert all(int(bn.num_batches_tracked) == 2 for bn in bns)
    recalibrate_bn(model, digits, 2)
    for bn, (mean, var) in zip(bns, stats):
        assert torch.allclose(bn.running_mean, mean, atol=1e-6) and torch.allclose(bn.running_var, var, atol=1e-6)


@pytest.mark.parametrize("saturates", [True, False])
def test_int8_weights_use_7_bits_where_that_is_closer_on_a_saturating_cpu(saturates, tiny_resnet, digits, tmp_path, monkeypatch):
    """Without VNNI, ORT's uint8 x int8 kernels add products in int16: there 7- and 8-bit weights are both tried, the closer kept."""
    from hwsearch.runtime.quantize import int8_weight_bits, output_error, quantize_int8

    monkeypatch.setattr("hwsearch.runtime.quantize.int8_saturates", lambda: saturates)
    ctx = _ctx(tiny_resnet, digits)
    src = export(ctx.baseline.model, digits.example_input(), tmp_path / "fp32.onnx")
    calib, feeds = digits.split("train").x[:128], [{"input": digits.split("train").x[:128]}]
    paths = {b: tmp_path / f"q{b}.onnx" for b in (7, 8, None)}
    for bits, path in paths.items():
        assert quantize_int8(src, path, ctx.space.layers, calib, weight_bits=bits) == len(ctx.space.layers)
    assert (int8_weight_bits(paths[7]), int8_weight_bits(paths[8]), int8_weight_bits(src)) == (7, 8, None)
    errors = {b: output_error(src, paths[b], feeds) for b in (7, 8)}
    assert int8_weight_bits(paths[None]) == (min(errors, key=errors.get) if saturates else 8)


@pytest.mark.parametrize(("machine", "flags", "saturates"), [
    ("x86_64", ["avx", "avx2", "fma"], True),  # AVX2 only
    ("x86_64", ["avx2", "avx512bw", "avx512f"], True),  # AVX-512 without VNNI (Skylake-SP)
    ("x86_64", ["avx2", "avx512_vnni", "avx512f"], False),
    ("AMD64", ["avx2", "avx_vnni"], False),
    ("aarch64", [], False),
])
def test_int8_saturation_is_read_from_the_cpu_flags(machine, flags, saturates):
    from hwsearch.runtime.cpu import int8_saturates

    assert int8_saturates(machine, flags) is saturates
