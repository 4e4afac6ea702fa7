"""Shared fixtures: the digits task and small, quickly trained baselines (cached per test session)."""

from __future__ import annotations

import os

import pytest
import torch

from hwsearch.context import Context
from hwsearch.families import Baseline, get_family
from hwsearch.options import CompressOptions, TrainConfig
from hwsearch.tasks import get_task

TINY_RESNET = {"widths": [16, 32, 64]}
TINY_MBV2 = {"width_mult": 0.5}
TINY_VGG = {"cfg": [16, "M", 32, "M", 64]}
TINY_TRAIN = TrainConfig(epochs=4, batch_size=64, lr=0.05)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Baselines trained by tests go to a session cache, never to the user's ~/.cache."""
    path = os.environ.get("HWSEARCH_TEST_CACHE") or str(tmp_path_factory.mktemp("hwcache"))
    old = os.environ.get("HWSEARCH_CACHE")
    os.environ["HWSEARCH_CACHE"] = path
    os.environ.setdefault("HWSEARCH_ADAPT", "off")  # searches don't time tables on the test machine (tests of adaptation set their mode)
    torch.set_num_threads(2)
    yield path
    if old is None:
        os.environ.pop("HWSEARCH_CACHE", None)
    else:
        os.environ["HWSEARCH_CACHE"] = old


def cnn_baseline(task, name: str, options: dict, train: TrainConfig = TINY_TRAIN) -> Baseline:
    return get_family("cnn").load_baseline(task, name, options, train, verbose=False)


def cnn_context(task, baseline: Baseline, options: CompressOptions = CompressOptions(), space=None, **space_args) -> Context:
    """A Context over a test baseline (``space``: reuse one; else built with ``space_args``)."""
    family = get_family("cnn")
    space = space or family.search_space(baseline.model, task, **space_args)
    return Context(task, family, baseline, space, options)


@pytest.fixture(scope="session")
def digits():
    return get_task("digits")


@pytest.fixture(scope="session")
def tiny_resnet(digits) -> Baseline:
    """resnet20 at widths 16/32/64, 4 epochs: about 97% test accuracy, trained in seconds."""
    return cnn_baseline(digits, "resnet20", TINY_RESNET)


@pytest.fixture(scope="session")
def tiny_mbv2(digits) -> Baseline:
    return cnn_baseline(digits, "mobilenetv2", TINY_MBV2)


@pytest.fixture(scope="session")
def tiny_vgg(digits) -> Baseline:
    return cnn_baseline(digits, "vgg", TINY_VGG)
