"""The contracts: :class:`FamilyContract` (a model family's mechanics, checked end to end in ONNX
Runtime) and :class:`PredictorContract` (a latency predictor over a table). Subclass, provide the
``ctx`` fixture (a :class:`hwsearch.context.Context`; for predictors also ``predictor``), run pytest.
"""

from __future__ import annotations

import collections
import logging
import math

import numpy as np
import pytest

from hwsearch.compress import compressed_model, realise
from hwsearch.compress.realise import onnx_outputs
from hwsearch.errors import HwsearchError
from hwsearch.options import CompressOptions
from hwsearch.policy import Policy
from hwsearch.runtime.session import QUANTIZED_OPS, optimized_op_types
from hwsearch.tasks.base import torch_outputs

NO_RECOVERY = CompressOptions(finetune_steps=0, bn_recalib_batches=0, calib_samples=32)


_REALISED: dict[tuple[int, str], object] = {}  # (baseline id, policy JSON) -> Candidate: each policy is realised once per model


class FamilyContract:
    """What every model family guarantees (the ``ctx`` fixture gives a Context over a small model)."""

    @pytest.fixture
    def ctx(self):  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    @pytest.fixture
    def realised(self, tmp_path_factory):
        """``realised(ctx, policy)``: the policy's ONNX file (no recovery, not scored), built once per model and policy."""
        def build(ctx, policy: Policy):
            key = (id(ctx.baseline), policy.to_json())
            if key not in _REALISED:
                self.quiet()
                _REALISED[key] = realise(ctx.with_options(**NO_RECOVERY.to_dict()), policy, tmp_path_factory.mktemp("contract") / "model.onnx", score=False)
            return _REALISED[key]
        return build

    def ort_op_counts(self, ctx, kernels: list[tuple]) -> collections.Counter:
        """ORT op types (after optimisation) the lowering's ``kernels`` stand for; override to check the
        lowering against ORT's optimised graph (the default checks only the quantized kernels)."""
        return collections.Counter()

    def quiet(self) -> None:
        logging.getLogger().setLevel(logging.ERROR)  # the ORT quantizer's pre-processing hints

    def test_empty_policy_is_the_baseline_on_onnx(self, ctx, realised):
        cand = realised(ctx, Policy())
        got = onnx_outputs(ctx.task, cand.onnx_path, "val")
        ref = torch_outputs(ctx.baseline.model, *ctx.task.feeds("val"))
        assert got.shape == ref.shape
        assert float(np.abs(got - ref).max()) <= 1e-4
        assert cand.params == sum(p.numel() for p in ctx.baseline.model.parameters())

    def test_keep_ratio_cuts_channels_as_the_space_says(self, ctx):
        ctx = ctx.with_options(**NO_RECOVERY.to_dict())
        group = next(g for g in ctx.space.groups if ctx.space.kept_channels(g, 0.5) < g.channels)
        policy = Policy(keep={group.name: 0.5})
        model = compressed_model(ctx, policy)
        again = ctx.family.search_space(model, ctx.task, ctx.space.keep_choices, ctx.space.precisions, ctx.space.channel_multiple)
        channels = {g.name: g.channels for g in again.groups}
        assert channels[group.name] == ctx.space.kept_channels(group, 0.5)
        assert all(channels[g.name] == g.channels for g in ctx.space.groups if g.name != group.name)
        assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in ctx.baseline.model.parameters())
        assert sum(p.numel() for p in ctx.baseline.model.parameters()) == sum(p.numel() for p in ctx.family.build_model(
            ctx.baseline.model_spec, ctx.task, ctx.baseline.model_options).parameters())  # the input was not mutated

    @pytest.mark.parametrize("k", [0, 2])
    def test_k_int8_layers_give_exactly_their_quantized_kernels(self, ctx, k, realised):
        policy = Policy(precision={layer: "int8" for layer in ctx.space.layers[:k]})
        cand = realised(ctx, policy)
        ops = collections.Counter(optimized_op_types(cand.onnx_path))
        nodes = ctx.family.precision_nodes(policy, ctx.space)
        assert sum(ops[op] for op in QUANTIZED_OPS) == sum(p == "int8" for p in nodes.values())
        assert cand.precision_counts["int8"] == k

    def lowering(self, ctx):
        """The family's lowering of ``ctx``'s model (override with ``ctx.predictor(TABLE).lowering`` to check it)."""
        return None

    def test_lowering_matches_orts_optimised_graph(self, ctx, realised):
        lowering = self.lowering(ctx)
        if lowering is None:
            pytest.skip("this family's contract subclass gives no lowering to check")
        for policy in [Policy(), Policy(default_keep=0.5), Policy(precision={layer: "int8" for layer in ctx.space.layers[:2]})]:
            expected = self.ort_op_counts(ctx, lowering.kernels(policy))
            cand = realised(ctx, policy)
            ops = collections.Counter(optimized_op_types(cand.onnx_path))
            assert {op: ops[op] for op in expected} == dict(expected), f"policy {policy.to_dict()}"

    def test_bad_policy_is_a_one_line_error(self, ctx, tmp_path):
        with pytest.raises(HwsearchError, match="does not exist") as err:
            realise(ctx, Policy(keep={"no.such.group": 0.5}), tmp_path / "bad.onnx", score=False)
        assert "\n" not in str(err.value)


class PredictorContract:
    """What every latency predictor guarantees (fixtures: ``ctx`` and ``predictor`` over a shipped table)."""

    @pytest.fixture
    def ctx(self):  # pragma: no cover
        raise NotImplementedError

    @pytest.fixture
    def predictor(self, ctx):  # pragma: no cover
        raise NotImplementedError

    def policies(self, ctx) -> list[Policy]:
        return [Policy(), Policy(default_keep=0.5), Policy(default_precision="int8"), Policy(default_keep=0.25, default_precision="int8")]

    def test_predictions_are_positive_finite_and_repeatable(self, ctx, predictor):
        for policy in self.policies(ctx):
            a, b = predictor.predict(policy), predictor.predict(policy)
            assert a == b
            assert math.isfinite(a.latency_ms) and a.latency_ms > 0
            assert 0.0 <= a.coverage <= 1.0

    def test_pruning_is_predicted_faster(self, ctx, predictor):
        assert predictor.predict(Policy(default_keep=0.25)).latency_ms < predictor.predict(Policy()).latency_ms

    def test_uncalibrated_prediction_is_overhead_plus_kernels(self, ctx, predictor):
        raw = type(predictor)(predictor.table, predictor.lowering, predictor.space, predictor.strict, None)
        for policy in self.policies(ctx):
            total = raw.table.call_overhead_us + sum(raw.kernel_us(t) for t in raw.kernel_tuples(policy))
            assert raw.predict(policy).latency_ms == pytest.approx(total / 1e3, rel=1e-12)

    def test_unknown_group_is_a_one_line_error(self, ctx, predictor):
        with pytest.raises(HwsearchError, match="does not exist"):
            predictor.predict(Policy(keep={"no.such.group": 0.5}))

    def test_calibration_names_only_the_lowerings_classes(self, ctx, predictor):
        if predictor.calibration is None:
            pytest.skip("uncalibrated table")
        classes = {predictor.lowering.kernel_class(t) for p in self.policies(ctx) for t in predictor.kernel_tuples(p)}
        assert set(predictor.calibration.scale) & classes, "the calibration's classes never match this lowering's kernels"
