import pickle
import sys
import textwrap

import numpy as np
import pytest
import torch

from hwsearch.errors import HwsearchError
from hwsearch.families import get_family
from hwsearch.tasks import Task, get_task

CNN = get_family("cnn")


def test_digits_splits_are_fixed_stratified_and_disjoint(digits):
    sizes = {name: len(digits.split(name)) for name in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797 and sizes["train"] > sizes["val"] > 0
    again = get_task("digits")
    for name in sizes:
        assert np.array_equal(digits.split(name).y, again.split(name).y)
    for name in sizes:  # stratified: every class in every split, in near-equal shares
        counts = np.bincount(digits.split(name).y, minlength=10)
        assert counts.min() >= 0.8 * counts.max()
    assert digits.split("train").x.shape[1:] == (1, 32, 32)


def test_baseline_is_cached_and_reused(digits, tiny_resnet):
    from tests.conftest import TINY_RESNET, cnn_baseline

    assert tiny_resnet.checkpoint.is_file() and tiny_resnet.test_accuracy > 0.9
    again = cnn_baseline(digits, "resnet20", TINY_RESNET)
    assert again.checkpoint == tiny_resnet.checkpoint and again.test_accuracy == tiny_resnet.test_accuracy
    for a, b in zip(again.model.state_dict().values(), tiny_resnet.model.state_dict().values()):
        assert torch.equal(a, b)


def _write_cifar(root, n=20, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        with (root / name).open("wb") as fh:
            pickle.dump(d, fh)


def test_cifar10_reads_the_python_batch_format(tmp_path):
    _write_cifar(tmp_path / "cifar")
    task = get_task("cifar10", data_dir=str(tmp_path / "cifar"))
    assert len(task.split("train")) + len(task.split("val")) == 100 and len(task.split("test")) == 20
    assert task.split("test").x.shape == (20, 3, 32, 32) and task.split("test").x.dtype == np.float32
    model = CNN.build_model("vgg", task, {"cfg": [8, "M", 16]})
    assert model(torch.from_numpy(task.split("test").x[:2])).shape == (2, 10)


def test_cifar10_missing_or_malformed_directory_is_one_line_error(tmp_path):
    with pytest.raises(HwsearchError, match="does not exist; pass --data-dir"):
        get_task("cifar10", data_dir=str(tmp_path / "absent"))
    _write_cifar(tmp_path / "partial")
    (tmp_path / "partial" / "data_batch_3").unlink()
    with pytest.raises(HwsearchError, match="lacks data_batch_3"):
        get_task("cifar10", data_dir=str(tmp_path / "partial"))
    _write_cifar(tmp_path / "bad")
    (tmp_path / "bad" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(HwsearchError, match="malformed") as err:
        get_task("cifar10", data_dir=str(tmp_path / "bad"))
    assert "\n" not in str(err.value)


def test_unknown_task_and_model_are_errors(digits):
    with pytest.raises(HwsearchError, match="Task 'imagenet' is unknown; use one of digits, cifar10"):
        get_task("imagenet")
    with pytest.raises(HwsearchError, match="Model 'resnet50' is unknown"):
        CNN.build_model("resnet50", digits, {})


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent('''
        import torch
        from hwsearch.tasks.digits import make_task

        def tiny(in_channels, num_classes, width=8):
            return torch.nn.Sequential(
                torch.nn.Conv2d(in_channels, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, num_classes))

        def small_digits():
            return make_task(size=16)

        def not_a_model(in_channels, num_classes):
            return 42
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_models"
    sys.modules.pop("my_models", None)


def test_user_model_and_task_from_import_paths(user_module, digits):
    model = CNN.build_model(f"{user_module}:tiny", digits, {"width": 16})
    assert model(digits.example_input(2)).shape == (2, 10)
    task = get_task(f"{user_module}:small_digits")
    assert isinstance(task, Task) and task.split("val").x.shape[-1] == 16


def test_user_code_errors_say_what_to_fix(user_module, digits):
    with pytest.raises(HwsearchError, match="not a torch.nn.Module"):
        CNN.build_model(f"{user_module}:not_a_model", digits, {})
    with pytest.raises(HwsearchError, match="has no attribute 'nope'"):
        CNN.build_model(f"{user_module}:nope", digits, {})
    with pytest.raises(HwsearchError, match="cannot be imported"):
        get_task("no_such_module_xyz:make")


def test_digits_size_option_sets_the_input_shape():
    task = get_task("digits", size=16)
    assert task.input_shape() == (1, 1, 16, 16) and task.split("val").x.shape[1:] == (1, 16, 16)
    with pytest.raises(HwsearchError, match="size=4 is not allowed"):
        get_task("digits", size=4)
