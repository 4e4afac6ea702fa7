import numpy as np
import pytest
import torch

from hwsearch import onnx_io
from hwsearch.compress import CompressOptions, build_candidate, compress
from hwsearch.compress.stats import count_macs, count_params
from hwsearch.errors import HwsearchError
from hwsearch.policy import Policy
from hwsearch.space import SearchSpace
from hwsearch.tasks.train import torch_logits


def _space(baseline, task):
    return SearchSpace.from_model(baseline.model, task.example_input())


def test_empty_policy_matches_torch_baseline(tiny_resnet, digits, tmp_path):
    space = _space(tiny_resnet, digits)
    res = build_candidate(digits, tiny_resnet.model, Policy(), space, tmp_path / "m.onnx", CompressOptions(eval_split="test"))
    test = digits.split("test")
    ort_out = onnx_io.run(onnx_io.session(res.onnx_path), test.x)
    torch_out = torch_logits(tiny_resnet.model, test)
    assert np.abs(ort_out - torch_out).max() <= 1e-4
    assert res.accuracy == pytest.approx(tiny_resnet.test_accuracy)
    assert res.params == count_params(tiny_resnet.model) and res.precision_counts["int8"] == 0


@pytest.mark.parametrize("model_name", ["resnet20", "mobilenetv2"])
def test_half_keep_quarters_params_and_macs(model_name, digits):
    model = digits.build_model(model_name).eval()  # default widths: every group halves exactly
    x = digits.example_input()
    before = [p.clone() for p in model.parameters()]
    pruned = compress(model, {"default_keep": 0.5}, x)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "input model was mutated"
    p_ratio = count_params(pruned) / count_params(model)
    m_ratio = count_macs(pruned, x) / count_macs(model, x)
    # dense conv/linear cost scales by 1/2 * 1/2 (depthwise convs only by 1/2; the first conv's input
    # and the classifier's output are not pruned), so the totals land a little above a quarter
    assert 0.22 < p_ratio < 0.3 and 0.22 < m_ratio < 0.31, (p_ratio, m_ratio)
    space = SearchSpace.from_model(model, x)
    expected = {layer: space.kept_channels(g, 0.5) for g in space.groups for layer in g.layers}
    convs = {n: m for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert set(expected) == set(convs)
    assert all(convs[n].out_channels == expected[n] for n in convs)
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.weight.shape[0] == m.out_channels for m in convs)
    assert pruned(x).shape == (1, 10)


@pytest.mark.parametrize("importance", ["bn_scale", "taylor"])
def test_data_driven_importance_prunes_the_same_shapes(importance, tiny_resnet, digits):
    x = digits.example_input()
    train = digits.split("train")
    calib = (torch.from_numpy(train.x[:32]), torch.from_numpy(train.y[:32]))
    a = compress(tiny_resnet.model, {"default_keep": 0.5}, x)
    b = compress(tiny_resnet.model, {"default_keep": 0.5}, x, importance=importance, calibration=calib)
    assert count_params(a) == count_params(b)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_unknown_importance_is_an_error():
    with pytest.raises(HwsearchError, match="'fisher' is unknown"):
        CompressOptions(importance="fisher")


def test_whole_model_int8_quantizes_every_layer_and_keeps_accuracy(tiny_resnet, digits, tmp_path):
    space = _space(tiny_resnet, digits)
    opts = CompressOptions(eval_split="test")
    fp32 = build_candidate(digits, tiny_resnet.model, Policy(), space, tmp_path / "fp32.onnx", opts)
    int8 = build_candidate(digits, tiny_resnet.model, Policy(default_precision="int8"), space, tmp_path / "int8.onnx", opts)
    assert onnx_io.count_quantized_kernels(int8.onnx_path) == len(space.layers)
    assert onnx_io.count_quantized_kernels(fp32.onnx_path) == 0
    assert fp32.accuracy - int8.accuracy <= 0.01
    assert int8.size_bytes < 0.4 * fp32.size_bytes


@pytest.mark.parametrize("k", [0, 1, 3])
def test_quantizing_k_layers_gives_exactly_k_quantized_kernels(k, tiny_resnet, digits, tmp_path):
    space = _space(tiny_resnet, digits)
    convs = [name for name in space.layers if name != "fc"][::4][:k]
    policy = Policy(precision={name: "int8" for name in convs})
    res = build_candidate(digits, tiny_resnet.model, policy, space, tmp_path / "k.onnx")
    assert res.precision_counts["int8"] == k
    assert onnx_io.count_quantized_kernels(res.onnx_path) == k


def test_fp16_layers_store_half_precision_weights(tiny_resnet, digits, tmp_path):
    space = _space(tiny_resnet, digits)
    opts = CompressOptions(eval_split="test")
    fp32 = build_candidate(digits, tiny_resnet.model, Policy(), space, tmp_path / "a.onnx", opts)
    fp16 = build_candidate(digits, tiny_resnet.model, Policy(default_precision="fp16"), space, tmp_path / "b.onnx", opts)
    assert fp16.precision_counts["fp16"] == len(space.layers)
    assert fp16.size_bytes < 0.6 * fp32.size_bytes
    assert abs(fp16.accuracy - fp32.accuracy) <= 0.01


def test_finetune_recovers_accuracy_after_pruning(tiny_resnet, digits, tmp_path):
    space = _space(tiny_resnet, digits)
    policy = Policy(default_keep=0.5)
    raw = build_candidate(digits, tiny_resnet.model, policy, space, tmp_path / "raw.onnx")
    tuned = build_candidate(digits, tiny_resnet.model, policy, space, tmp_path / "ft.onnx", CompressOptions(finetune_steps=40, bn_recalib_batches=4))
    assert tuned.accuracy > raw.accuracy + 0.05 and tuned.accuracy > 0.85


def test_fp32_layer_between_int8_layers_stays_fp32(tiny_vgg, digits, tmp_path):
    """ORT would quantize a float conv sandwiched between quantized tensors; our sessions do not."""
    space = _space(tiny_vgg, digits)
    first, middle, last = space.layers[:3]
    res = build_candidate(digits, tiny_vgg.model, Policy(precision={first: "int8", last: "int8"}), space, tmp_path / "s.onnx")
    assert res.precision_counts == {"int8": 2, "fp16": 0, "fp32": len(space.layers) - 2}
    assert onnx_io.count_quantized_kernels(res.onnx_path) == 2


def test_fp16_works_on_untrained_models_with_shared_initializers(digits, tmp_path):
    model = digits.build_model("vgg", cfg=[8, "M", 8]).eval()  # identical fresh BN folds share initializers
    space = SearchSpace.from_model(model, digits.example_input())
    res = build_candidate(digits, model, Policy(default_precision="fp16"), space, tmp_path / "h.onnx")
    assert res.precision_counts["fp16"] == len(space.layers)
    out = onnx_io.run(onnx_io.session(res.onnx_path), digits.split("val").x[:8])
    assert np.isfinite(out).all()


def test_int8_fuses_on_untrained_models_with_shared_initializers(digits, tmp_path):
    """The exporter merges equal tensors (fresh BN folds give all-zero biases); every int8 conv must
    still run as one quantized kernel, not as dequantize + float conv."""
    import onnx

    model = digits.build_model("resnet20", widths=[16, 32, 64]).eval()
    space = SearchSpace.from_model(model, digits.example_input())
    path = onnx_io.export(model, digits.example_input(), tmp_path / "fp32.onnx")
    graph = onnx.load(str(path)).graph
    assert not [n for n in graph.node if n.op_type == "Identity"]
    consumers = [name for n in graph.node for name in n.input if name in {i.name for i in graph.initializer}]
    assert len(consumers) == len(set(consumers))  # no initializer feeds two inputs
    int8 = [name for name in space.layers if name != "fc"][1::2]
    res = build_candidate(digits, model, Policy(precision={name: "int8" for name in int8}), space, tmp_path / "q.onnx")
    assert onnx_io.count_quantized_kernels(res.onnx_path) == len(int8)
