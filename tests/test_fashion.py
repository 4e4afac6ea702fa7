"""The ``fashion`` task: IDX parsing, seeded stratified splits, inputs, errors, and the real Debian data when installed."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hwsearch.errors import HwsearchError
from hwsearch.tasks.base import Task
from hwsearch.tasks.fashion import CLASSES, DEFAULT_DIR, FILES, IMAGES_MAGIC, LABELS_MAGIC, make_task, read_idx

N_TRAIN, N_TEST = 300, 100
SMALL = {"size": 16, "train_size": 150, "val_size": 50, "test_size": N_TEST}


def _idx_bytes(magic: int, array: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write(path: Path, data: bytes, gz: bool) -> None:
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class-dependent patterns: class c lights row band c, plus noise; pixel (0, 0) is always 255."""
    x = rng.integers(0, 40, (len(labels), 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        x[i, 2 * c + 4 : 2 * c + 7, :] = 200
    x[:, 0, 0] = 255
    return x


def write_fashion(root: Path, gz: bool = True, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {"train_labels": (np.arange(n_train) % 10).astype(np.uint8), "test_labels": (np.arange(n_test) % 10).astype(np.uint8)}
    rng.shuffle(arrays["train_labels"])
    arrays["train_images"] = _images(arrays["train_labels"], rng)
    arrays["test_images"] = _images(arrays["test_labels"], rng)
    for key, stem in FILES.items():
        _write(root / stem, _idx_bytes(IMAGES_MAGIC if key.endswith("images") else LABELS_MAGIC, arrays[key]), gz)
    return arrays


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("fashion")
    return root, write_fashion(root)


@pytest.fixture(scope="module")
def task(fashion_dir):
    return make_task(data_dir=str(fashion_dir[0]), **SMALL)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_parsing_matches_the_arrays_written(tmp_path, gz):
    arrays = write_fashion(tmp_path, gz=gz)
    for key, stem in FILES.items():
        path = tmp_path / (stem + ".gz" if gz else stem)
        got, _ = read_idx(path, IMAGES_MAGIC if key.endswith("images") else LABELS_MAGIC, (28, 28) if key.endswith("images") else ())
        assert got.dtype == np.uint8 and np.array_equal(got, arrays[key])
    t = make_task(data_dir=str(tmp_path), **SMALL)
    assert len(t.split("test")) == N_TEST and np.array_equal(t.split("test").y, arrays["test_labels"])  # full test set: file order


def test_task_fields_and_shapes(task):
    assert isinstance(task, Task) and task.name == "fashion" and task.in_channels == 1 and task.num_classes == 10
    assert task.input_size == (16, 16) and task.families == ("cnn", "edge") and task.default_model == "mobilenetv2_imagenet"
    assert task.train_config.steps == 600 and task.train_config.lr == 0.01 and task.train_config.batch_size == 64
    assert task.normalize == "imagenet" and task.class_names() == list(CLASSES) and task.class_names()[9] == "Ankle boot"
    for name, n in (("train", 150), ("val", 50), ("test", N_TEST)):
        s = task.split(name)
        assert s.x.shape == (n, 1, 16, 16) and s.x.dtype == np.float32 and s.y.dtype == np.int64 and len(s) == n
    with pytest.raises(HwsearchError, match="unknown; use train, val or test"):
        task.split("holdout")


def test_splits_are_disjoint_stratified_deterministic_and_seeded(fashion_dir, task):
    root, arrays = fashion_dir
    train, val = task._indices["train"], task._indices["val"]
    assert len(set(train)) == 150 and len(set(val)) == 50 and not set(train) & set(val)
    for name, n in (("train", 150), ("val", 50)):  # 10 balanced classes: exactly n/10 each
        y = task.split(name).y
        assert np.array_equal(y, arrays["train_labels"][task._indices[name]].astype(np.int64))
        assert np.array_equal(np.bincount(y, minlength=10), np.full(10, n // 10))
    again = make_task(data_dir=str(root), **SMALL)
    for name in ("train", "val", "test"):
        assert np.array_equal(again._indices[name], task._indices[name]) and np.array_equal(again.split(name).x, task.split(name).x)
    other = make_task(data_dir=str(root), **SMALL, seed=1)
    assert not np.array_equal(np.sort(other._indices["val"]), np.sort(val))
    assert other.fingerprint() != task.fingerprint()
    sub = make_task(data_dir=str(root), **{**SMALL, "test_size": 30})
    assert len(sub.split("test")) == 30 and np.array_equal(np.bincount(sub.split("test").y, minlength=10), np.full(10, 3))


def test_normalisation_values(fashion_dir):
    root, arrays = fashion_dir
    opts = {**SMALL, "size": 28}  # no resize: pixel (0, 0) stays 255
    imagenet = make_task(data_dir=str(root), **opts)
    tf = make_task(data_dir=str(root), **opts, normalize="tf")
    assert tf.normalize == "tf"
    np.testing.assert_allclose(imagenet.split("test").x[:, 0, 0, 0], (1 - 0.449) / 0.226, rtol=1e-6)
    assert np.all(tf.split("test").x[:, 0, 0, 0] == 1.0)
    raw = arrays["test_images"].astype(np.float32)
    np.testing.assert_allclose(tf.split("test").x[:, 0], (raw - 127) / 128, atol=1e-5)
    np.testing.assert_allclose(imagenet.split("test").x[:, 0], (raw / 255 - 0.449) / 0.226, atol=1e-5)
    assert tf.fingerprint() != imagenet.fingerprint()
    resized = make_task(data_dir=str(root), **{**SMALL, "size": 56})  # the bilinear resize is torch.nn.functional.interpolate of the [0, 1] image
    ref = torch.nn.functional.interpolate(torch.from_numpy(raw[:, None] / 255), size=(56, 56), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resized.split("test").x, ((ref - 0.449) / 0.226).numpy(), atol=1e-5)


def test_preprocessing_is_json_and_matches_the_splits(task):
    pre = json.loads(json.dumps(task.preprocessing()))
    assert pre["split"]["sizes"] == {"train": 150, "val": 50, "test": N_TEST}
    assert pre["layout"] == "NCHW float32, shape (N, 1, 16, 16), one grayscale channel"
    assert pre["mean"] == [0.449] and pre["std"] == [0.226] and pre["resize"]["mode"] == "bilinear"
    assert set(pre["source"]["files"]) == set(FILES) and pre["split"]["seed"] > 0
    fp = json.loads(json.dumps(task.fingerprint()))
    assert fp["size"] == 16 and fp["sizes"]["val"] == 50 and len(fp["files"]) == 4


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_directory_and_file_errors(tmp_path):
    with pytest.raises(HwsearchError, match="apt-get install dataset-fashion-mnist") as exc:
        make_task(data_dir=str(tmp_path / "absent"), **SMALL)
    assert "data_dir = DIR" in _one_line(exc)
    write_fashion(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(HwsearchError, match="lacks t10k-labels-idx1-ubyte .*apt-get install dataset-fashion-mnist") as exc:
        make_task(data_dir=str(tmp_path / "partial"), **SMALL)
    _one_line(exc)


def test_corrupt_files_are_one_line_errors(tmp_path):
    arrays = write_fashion(tmp_path, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(_idx_bytes(IMAGES_MAGIC, arrays["train_labels"].reshape(-1, 1, 1)))
    with pytest.raises(HwsearchError, match="train-labels-idx1-ubyte.*magic 0x00000803, not 0x00000801") as exc:
        make_task(data_dir=str(tmp_path), **SMALL)
    _one_line(exc)
    labels.write_bytes(_idx_bytes(LABELS_MAGIC, arrays["train_labels"][:-5]))  # count mismatch with the images
    with pytest.raises(HwsearchError, match="300 images but 295 labels") as exc:
        make_task(data_dir=str(tmp_path), **SMALL)
    _one_line(exc)
    labels.write_bytes(_idx_bytes(LABELS_MAGIC, arrays["train_labels"])[:-7])  # truncated payload
    with pytest.raises(HwsearchError, match="declares 300 labels .* holds 293 bytes"):
        make_task(data_dir=str(tmp_path), **SMALL)
    labels.write_bytes(_idx_bytes(LABELS_MAGIC, arrays["train_labels"]))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(IMAGES_MAGIC, arrays["test_images"][:, :27]))
    with pytest.raises(HwsearchError, match=r"shape \(27, 28\), not \(28, 28\)"):
        make_task(data_dir=str(tmp_path), **SMALL)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x1f\x8b not gzip")
    (tmp_path / "t10k-images-idx3-ubyte").rename(tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(HwsearchError, match="cannot be read"):
        make_task(data_dir=str(tmp_path), **SMALL)


@pytest.mark.parametrize(("options", "match"), [
    ({"colour": True}, r"option 'colour' is unknown; use data_dir, size, val_size, train_size, test_size, normalize, seed"),
    ({"size": 15}, r"size=15 is not allowed; use an integer >= 16"),
    ({"size": 32.0}, r"size=32.0 is not allowed"),
    ({"size": True}, r"size=True is not allowed"),
    ({"val_size": 0}, r"val_size=0 is not allowed; use a positive integer"),
    ({"train_size": 59000, "val_size": 2000}, r"train_size=59000 plus val_size=2000 exceed .* 60000"),
    ({"normalize": "torch"}, r"normalize='torch' is unknown; use one of imagenet, tf"),
    ({"seed": -1}, r"seed=-1 is not allowed"),
])
def test_bad_options_are_one_line_errors(fashion_dir, options, match):
    with pytest.raises(HwsearchError, match=match) as exc:
        make_task(data_dir=str(fashion_dir[0]), **{**SMALL, **options})
    _one_line(exc)


def test_sizes_beyond_the_files_are_errors(fashion_dir):
    root = str(fashion_dir[0])
    with pytest.raises(HwsearchError, match="train_size=280 plus val_size=50 exceeds the 300 training images"):
        make_task(data_dir=root, **{**SMALL, "train_size": 280})
    with pytest.raises(HwsearchError, match="test_size=101 exceeds the 100 test images"):
        make_task(data_dir=root, **{**SMALL, "test_size": 101})
    with pytest.raises(HwsearchError, match="cannot be drawn stratified"):
        make_task(data_dir=root, **{**SMALL, "val_size": 5})


def test_context_builds_with_the_colon_task_name(fashion_dir):
    from hwsearch.context import build

    ctx = build("hwsearch.tasks.fashion:make_task", "resnet20", task_options={"data_dir": str(fashion_dir[0]), **SMALL}, random_init=True)
    assert ctx.task.name == "fashion"
    out = ctx.baseline.model(torch.from_numpy(ctx.task.split("val").x[:4]))
    assert out.shape == (4, 10)


@pytest.mark.skipif(not Path(DEFAULT_DIR).is_dir(), reason=f"{DEFAULT_DIR} is absent (apt-get install dataset-fashion-mnist installs it)")
def test_real_debian_dataset_loads():
    t = make_task(train_size=200, val_size=100, size=28)
    assert t.data_dir == DEFAULT_DIR and len(t.split("test")) == 10000 and len(t.split("train")) == 200
    assert set(np.unique(t.split("test").y)) == set(range(10)) and np.array_equal(np.bincount(t.split("val").y, minlength=10), np.full(10, 10))
    assert np.array_equal(np.bincount(t.split("test").y, minlength=10), np.full(10, 1000))


def test_hflip_mirrors_about_half_the_images_and_leaves_cache_keys_of_configs_without_it():
    from hwsearch.families.cnn.train import _key, mirrored
    from hwsearch.options import TrainConfig

    x = torch.arange(64 * 2 * 3, dtype=torch.float32).reshape(64, 1, 2, 3)
    out = mirrored(x, torch.Generator().manual_seed(0))
    flipped = [bool(torch.equal(o, i.flip(-1))) for o, i in zip(out, x, strict=True)]
    assert all(flipped[k] or torch.equal(out[k], x[k]) for k in range(len(x)))
    assert 16 < sum(flipped) < 48  # probability 0.5 per image
    assert torch.equal(out, mirrored(x, torch.Generator().manual_seed(0)))  # seeded

    class _Task:
        def fingerprint(self):
            return "t"

    net = torch.nn.Linear(2, 2)
    assert _key(_Task(), net, "m", {}, TrainConfig(steps=5)) == _key(_Task(), net, "m", {}, TrainConfig(steps=5, hflip=None))
    assert _key(_Task(), net, "m", {}, TrainConfig(steps=5)) != _key(_Task(), net, "m", {}, TrainConfig(steps=5, hflip=True))


def test_task_options_name_what_differs_from_the_defaults_but_not_the_data_path(task):
    """What a latency table's reference models record to rebuild this task elsewhere: the data folder is this machine's."""
    assert task.options() == SMALL
    assert "data_dir" not in task.options()
