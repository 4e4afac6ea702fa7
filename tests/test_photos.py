"""Task imagenet-photos: photo discovery, photo-disjoint splits, views, normalisation, fidelity metrics, options."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.tasks.base import Task
from hwsearch.tasks.photos import NORMALIZATIONS, PhotosTask, fidelity, find_photos, foolbox_data, make_task, normalise

try:
    foolbox_data()
    HAVE_PHOTOS = True
except HwsearchError:
    HAVE_PHOTOS = False
pytestmark = pytest.mark.skipif(not HAVE_PHOTOS, reason="the foolbox wheel's ImageNet photos are not installed (pip install --no-deps foolbox==3.3.4)")

SMALL = {"size": 64, "views_per_photo": 3}


@pytest.fixture(scope="module")
def task() -> PhotosTask:
    return make_task(**SMALL)


def test_task_record(task):
    assert isinstance(task, Task)
    assert (task.name, task.in_channels, task.num_classes, task.input_size) == ("imagenet-photos", 3, 1000, (64, 64))
    assert task.families == ("edge",) and task.default_model == "mobilenetv2_imagenet"
    assert task.normalize == "imagenet" and task.metric_name() == "fidelity_kl"
    assert make_task(objective="top5").metric_name() == "fidelity_top5"
    assert task.input_shape() == (1, 3, 64, 64)


def test_photos_found_and_labeled_from_file_names():
    photos = find_photos()
    labeled = [p for p in photos if p.label >= 0]
    assert len(labeled) == 20
    for p in labeled:
        assert p.source == "foolbox" and p.label == int(re.fullmatch(r"imagenet_\d+_(\d+)\.jpg", p.path.name).group(1))
    assert any(p.id == "sklearn/china.jpg" for p in photos) and any(p.id == "sklearn/flower.jpg" for p in photos)
    assert all(p.label == -1 for p in photos if p.source != "foolbox")


def test_splits_are_photo_disjoint_and_sized(task):
    ids = {s: {p.id for p in task.photos(s)} for s in ("train", "val", "test")}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert len(ids["train"] | ids["val"] | ids["test"]) == len(find_photos())
    assert len(ids["val"]) == len(ids["test"]) == 8
    assert {p.id for p in find_photos() if p.label < 0} <= ids["train"]
    for name in ("train", "val", "test"):
        s = task.split(name)
        assert s.x.shape == (len(ids[name]) * 3, 3, 64, 64) and s.x.dtype == np.float32 and s.y.dtype == np.int64
    for name in ("val", "test"):  # val / test are labeled photos only, labels from the file names
        y = task.split(name).y
        assert ((y >= 0) & (y < 1000)).all()
        assert list(y[:8]) == [p.label for p in task.photos(name)]
    assert (task.split("train").y == -1).any() and (task.split("train").y >= 0).any()
    split_rec = json.loads(json.dumps(task.preprocessing()))["split"]
    assert {k: set(v) for k, v in split_rec["photos"].items()} == ids
    assert split_rec["sizes"]["val"] == {"photos": 8, "inputs": 24}


def test_splits_are_deterministic_and_seeded(task):
    again = make_task(**SMALL)
    for name in ("train", "val", "test"):
        assert np.array_equal(task.split(name).x, again.split(name).x) and np.array_equal(task.split(name).y, again.split(name).y)
    other = make_task(**SMALL, seed=1)
    assert {p.id for p in other.photos("val")} != {p.id for p in task.photos("val")}
    assert task.fingerprint() == again.fingerprint() != other.fingerprint()


def test_views_eval_view_flip_and_crops(task):
    x = task.split("val").x
    n = len(task.photos("val"))
    assert np.array_equal(x[n : 2 * n], x[:n][..., ::-1])  # view 1 mirrors the eval view
    assert not np.allclose(x[2 * n :], x[:n])  # view 2 is a random crop


def test_normalisation_of_known_pixels():
    px = np.zeros((1, 2, 2, 3), np.uint8)
    px[0, 0, 0] = (255, 0, 128)
    x = normalise(px, "imagenet")
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225], rtol=1e-5)
    np.testing.assert_allclose(normalise(px, "tf")[0, :, 0, 0], [1.0, -127 / 128, 1 / 128], rtol=1e-6)
    assert set(NORMALIZATIONS) == {"imagenet", "tf"}
    tf = make_task(**SMALL, normalize="tf")
    assert tf.normalize == "tf" and tf.split("val").x.min() >= -127 / 128 - 1e-6 and tf.split("val").x.max() <= 1 + 1e-6


def test_metrics_identical_and_perturbed():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((40, 1000)).astype(np.float32) * 4
    task = make_task(**SMALL)
    m = task.metrics(dense, dense)
    assert m == {"kl": 0.0, "top1": 1.0, "top5": 1.0}
    assert task.score(dense, dense) == 1.0
    permuted = dense[:, rng.permutation(1000)]
    worse = task.metrics(permuted, dense)
    assert worse["kl"] > 1.0 and worse["top1"] < 0.1 and worse["top5"] < 0.2
    assert task.score(permuted, dense) < 0.5
    assert make_task(**SMALL, objective="top1").score(permuted, dense) == worse["top1"] < make_task(**SMALL, objective="top1").score(dense, dense)
    noisy = dense + rng.standard_normal(dense.shape).astype(np.float32) * 0.5
    assert worse["kl"] > task.metrics(noisy, dense)["kl"] > 0
    with pytest.raises(HwsearchError, match="shape"):
        fidelity(dense[:, :10], dense)


def test_targets_accuracy_and_parity_with_a_tiny_classifier(task):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1000))
    dense = task.targets("val", model)
    assert dense.shape == (len(task.split("val")), 1000) and task.targets("val", model) is dense  # cached per split
    assert task.score(dense, dense) == 1.0
    labels = task.split("val").y
    acc = task.metrics(dense, dense, labels)["accuracy"]
    assert acc == float((dense.argmax(1) == labels).mean())
    onehot = np.eye(1000, dtype=np.float32)[labels]
    assert task.accuracy(onehot, labels) == 1.0
    with pytest.raises(HwsearchError, match="no ImageNet labels"):
        task.accuracy(dense, -np.ones(len(dense), np.int64))
    assert task.agreement(dense + 5e-4, dense, quantized=False).ok and not task.agreement(dense + 0.1, dense, quantized=False).ok
    assert task.agreement(dense, dense, quantized=True).ok and not task.agreement(dense[:, ::-1].copy(), dense, quantized=True).ok


@pytest.mark.parametrize(("options", "match"), [
    ({"colour": 1}, "unknown.*allowed options are size, views_per_photo"),
    ({"objective": "cosine"}, "objective='cosine' is unknown.*kl, top1, top5"),
    ({"normalize": "caffe"}, "normalize='caffe' is unknown.*imagenet, tf"),
    ({"size": 8}, "size=8 is not allowed.*32..1024"),
    ({"size": "224"}, "size='224' is not allowed"),
    ({"views_per_photo": 0}, "views_per_photo=0"),
    ({"photo_dir": "/nonexistent/photos"}, "photo_dir='/nonexistent/photos' is not a directory"),
])
def test_bad_options_are_one_line_errors(options, match):
    with pytest.raises(HwsearchError, match=match) as info:
        make_task(**options)
    assert "\n" not in str(info.value)


def test_photo_dir_adds_unlabeled_training_photos(tmp_path, task):
    from PIL import Image

    Image.fromarray(np.full((80, 120, 3), 200, np.uint8)).save(tmp_path / "mine.png")
    (tmp_path / "notes.txt").write_text("not a photo")
    mine = make_task(**SMALL, photo_dir=str(tmp_path))
    assert "photo_dir/mine.png" in {p.id for p in mine.photos("train")}
    assert len(mine.split("train")) == len(task.split("train")) + 3
    assert [p.id for p in mine.photos("val")] == [p.id for p in task.photos("val")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HwsearchError, match="holds no .jpg"):
        make_task(photo_dir=str(empty))


def test_missing_foolbox_photos_name_the_install(monkeypatch):
    import importlib.metadata

    from hwsearch.tasks import photos

    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(photos, "package_dir", lambda name: None)
    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)
    with pytest.raises(HwsearchError, match=re.escape("pip install --no-deps foolbox==3.3.4")):
        make_task()
