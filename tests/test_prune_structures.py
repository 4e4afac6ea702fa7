"""Grouped convolutions (ResNeXt, RegNet) and coupled concatenations (GhostNet) as user models: pruned
per conv group / per coupled pair, or left out of the space with a note; never a torch-pruning traceback.

The models below are user models (``tests.test_prune_structures:<factory>``), built through the same
``family_for`` path a user's ``package.module:function`` takes.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwsearch import context
from hwsearch.cli import main
from hwsearch.compress import realise
from hwsearch.errors import HwsearchError
from hwsearch.families import family_for
from hwsearch.families.cnn.lowering import UnitGraph
from hwsearch.families.cnn.prune import prune_in_place
from hwsearch.families.cnn.stats import count_params
from hwsearch.options import CompressOptions
from hwsearch.policy import Policy
from hwsearch.runtime.session import count_quantized_kernels, run_feeds, session

HERE = "tests.test_prune_structures"
X16 = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
HALF_INT8 = Policy.from_dict({"default_keep": 0.5, "default_precision": "int8"})
QUICK = CompressOptions(finetune_steps=40, bn_recalib_batches=2, calib_samples=64)


def cbr(i: int, o: int, k: int = 3, s: int = 1, g: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class ResNeXtBlock(nn.Module):
    """1×1 → grouped 3×3 (``groups`` conv groups) → 1×1, with a residual (projected when the shape changes)."""

    def __init__(self, c: int, width: int, out: int, groups: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = cbr(c, width, 1), cbr(width, width, 3, stride, groups), cbr(width, out, 1, act=False)
        self.short = nn.Identity() if stride == 1 and c == out else cbr(c, out, 1, stride, act=False)

    def forward(self, x):
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + self.short(x))


class SE(nn.Module):
    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class RegNetBlock(nn.Module):
    """RegNet's X/Y block: 1×1 → 3×3 with a fixed group width → [SE] → 1×1, with a residual."""

    def __init__(self, c: int, out: int, group_width: int, stride: int = 1, se: bool = True) -> None:
        super().__init__()
        self.a, self.b = cbr(c, out, 1), cbr(out, out, 3, stride, out // group_width)
        self.se = SE(out, max(4, c // 4)) if se else nn.Identity()
        self.c = cbr(out, out, 1, act=False)
        self.proj = nn.Identity() if stride == 1 and c == out else cbr(c, out, 1, stride, act=False)

    def forward(self, x):
        return F.relu(self.c(self.se(self.b(self.a(x)))) + self.proj(x))


class Ghost(nn.Module):
    """GhostNet's ghost module: a primary 1×1 conv and a cheap depthwise conv of its output, concatenated and cut to ``out``."""

    def __init__(self, c: int, out: int, ratio: int = 2, act: bool = True) -> None:
        super().__init__()
        init = math.ceil(out / ratio)
        self.out = out
        self.primary, self.cheap = cbr(c, init, 1, act=act), cbr(init, init * (ratio - 1), 3, g=init, act=act)

    def forward(self, x):
        a = self.primary(x)
        return torch.cat([a, self.cheap(a)], 1)[:, : self.out]


class GhostBottleneck(nn.Module):
    """ghost → [depthwise stride 2] → [SE] → ghost (no ReLU), plus the input (through depthwise + 1×1 when the shape changes)."""

    def __init__(self, c: int, mid: int, out: int, stride: int = 1, se: bool = True, ratio: int = 2) -> None:
        super().__init__()
        self.g1 = Ghost(c, mid, ratio)
        self.dw = cbr(mid, mid, 3, stride, mid, act=False) if stride > 1 else nn.Identity()
        self.se = SE(mid, max(4, mid // 4)) if se else nn.Identity()
        self.g2 = Ghost(mid, out, ratio, act=False)
        self.short = nn.Identity() if c == out and stride == 1 else nn.Sequential(cbr(c, c, 3, stride, c, act=False), cbr(c, out, 1, act=False))

    def forward(self, x):
        return self.g2(self.se(self.dw(self.g1(x)))) + self.short(x)


class Net(nn.Module):
    def __init__(self, c_in: int, stem: int, blocks: list[nn.Module], c: int, num_classes: int) -> None:
        super().__init__()
        self.stem, self.blocks, self.fc = cbr(c_in, stem, 3, 2), nn.Sequential(*blocks), nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


class MBConv(nn.Module):
    """EfficientNet's block: 1×1 expand + SiLU, depthwise 3×3 + SiLU, squeeze-excitation (SiLU, sigmoid gate), 1×1 project."""

    def __init__(self, c: int, hidden: int, out: int, stride: int = 1) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.SiLU())
        self.se_r, self.se_e = nn.Conv2d(hidden, max(8, c // 4), 1), nn.Conv2d(max(8, c // 4), hidden, 1)
        self.proj = cbr(hidden, out, 1, act=False)
        self.res = stride == 1 and c == out

    def forward(self, x):
        h = self.dw(self.expand(x))
        h = self.proj(h * torch.sigmoid(self.se_e(F.silu(self.se_r(F.adaptive_avg_pool2d(h, 1))))))
        return x + h if self.res else h


class Effnet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(MBConv(16, 64, 24), MBConv(24, 96, 24), MBConv(24, 96, 32, 2))
        self.head = nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.SiLU())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.head(self.blocks(self.stem(x))), 1), 1))


class Twice(nn.Module):
    """A conv called twice (weights shared across depth) and two convs with equal weights (merged by the exporter)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.a, self.b, self.c = cbr(in_channels, 16, 3, 2), nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        with torch.no_grad():
            self.c.weight.copy_(self.b.weight)
            self.c.bias.copy_(self.b.bias)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.relu(self.b(self.a(x)))
        x = F.relu(self.b(F.relu(self.c(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def effnet(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return Effnet(in_channels, num_classes)


def twice(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return Twice(in_channels, num_classes)


def resnext(in_channels: int = 1, num_classes: int = 10, groups: int = 4) -> nn.Module:
    return Net(in_channels, 16, [ResNeXtBlock(16, 32, 32, groups), ResNeXtBlock(32, 32, 32, groups, 2)], 32, num_classes)


def regnet(in_channels: int = 1, num_classes: int = 10, se: bool = True) -> nn.Module:
    return Net(in_channels, 16, [RegNetBlock(16, 32, 8, se=se), RegNetBlock(32, 32, 8, 2, se=se)], 32, num_classes)


def ghostnet(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return Net(in_channels, 16, [GhostBottleneck(16, 16, 16, se=False), GhostBottleneck(16, 48, 24, 2), GhostBottleneck(24, 48, 24)], 24, num_classes)


def ghost_sliced(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """Odd ghost widths: the concatenation is really sliced (12 + 12 channels cut to 23), which torch-pruning cannot map."""
    return Net(in_channels, 16, [Ghost(16, 23), Ghost(23, 24)], 24, num_classes)


def ghost_ratio3(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """ratio 3: the cheap op is a channel-multiplier depthwise conv (8 → 16, groups 8): one input channel per conv group."""
    return Net(in_channels, 16, [Ghost(16, 24, ratio=3), Ghost(24, 24, ratio=3)], 24, num_classes)


class AvgNet(nn.Module):
    """Average-pool downsampling between convs (DenseNet transitions, ResNet-D shortcuts) and the classifier input
    flattened the common way, ``x.view(x.size(0), -1)`` (a Shape/Gather/Unsqueeze/Concat/Reshape subgraph in ONNX)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.a, self.pool, self.b, self.c = cbr(in_channels, width), nn.AvgPool2d(2), cbr(width, 2 * width), cbr(2 * width, 2 * width, 3, 2)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.c(self.b(self.pool(self.a(x)))), 1)
        return self.fc(x.view(x.size(0), -1))


class Shuffled(nn.Module):
    """ShuffleNet's channel shuffle (reshape, transpose, reshape), which the latency lowering does not model."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.a, self.b, self.fc = cbr(in_channels, 16), cbr(16, 16), nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.a(x)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.b(x), 1), 1))


class Halved(nn.Module):
    """A reshape whose target shape is computed with a division (``c // 2``), not a flattening one."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.a, self.fc = cbr(in_channels, 16), nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.a(x), 1)
        n, c = x.shape[:2]
        return self.fc(x.view(n, c // 2, -1).flatten(1))


def halved(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return Halved(in_channels, num_classes)


def avgpooled(in_channels: int = 1, num_classes: int = 10, width: int = 16) -> nn.Module:
    return AvgNet(in_channels, num_classes, width)


def shuffled(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return Shuffled(in_channels, num_classes)


def _user(name: str, **kw):
    return context.build("digits", f"{HERE}:{name}", random_init=True, **kw)


def _convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _grouped(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in _convs(model).items() if 1 < m.groups < m.in_channels}


def test_user_models_belong_to_the_cnn_family():
    assert all(family_for(f"{HERE}:{name}").name == "cnn" for name in ("resnext", "regnet", "ghostnet"))


@pytest.mark.parametrize("name, groups", [("resnext", 4), ("resnext8", 8), ("regnet", 4)])
def test_grouped_convs_lose_the_same_channels_in_every_conv_group(name, groups):
    ctx = _user("resnext", model_options={"groups": 8}) if name == "resnext8" else _user(name)
    model, space = ctx.baseline.model, ctx.space
    grouped = _grouped(model)
    assert grouped and all(m.groups == groups for m in grouped.values())
    # the groups that feed a grouped conv or come out of one remove one channel per conv group at a time
    touching = [g for g in space.groups if any(layer in grouped for layer in g.layers) or space.divisor(g) > 1]
    assert touching and all(space.divisor(g) == groups for g in touching)
    assert all(space.kept_channels(g, r) % math.lcm(8, groups) == 0 for g in touching for r in space.keep_choices)
    pruned = ctx.family.prune(model, Policy.from_dict({"default_keep": 0.5}), space, ctx.task, ctx.options)
    for n, conv in _grouped(pruned).items():
        before = grouped[n]
        assert conv.groups == groups and conv.in_channels % groups == 0 and conv.out_channels % groups == 0
        assert (conv.in_channels, conv.out_channels) == (before.in_channels // 2, before.out_channels // 2)
        assert conv.weight.shape == (conv.out_channels, conv.in_channels // groups, 3, 3)
        _assert_cut_per_conv_group(before, conv)
    assert count_params(pruned) < 0.4 * count_params(model)
    assert pruned(ctx.task.example_input()).shape == (1, 10)


def _assert_cut_per_conv_group(before: nn.Conv2d, after: nn.Conv2d) -> None:
    """Every kept 3×3 kernel comes from the same conv group, and every conv group kept the same input positions."""
    origin = {before.weight[o, c].detach().numpy().tobytes(): (o, c) for o in range(before.out_channels) for c in range(before.weight.shape[1])}
    out_per, new_out_per = before.out_channels // before.groups, after.out_channels // after.groups
    columns: dict[int, set[int]] = {}
    for r in range(after.out_channels):
        for c in range(after.weight.shape[1]):
            o, c0 = origin[after.weight[r, c].detach().numpy().tobytes()]
            assert o // out_per == r // new_out_per, "a kernel moved to another conv group"
            columns.setdefault(c, set()).add(c0)
    assert all(len(v) == 1 for v in columns.values()), "conv groups kept different input positions"


def _silence(model: nn.Module, channels: dict[str, list[int]]) -> None:
    """Make the given output channels of each conv+BN exactly zero (BN scale and shift 0) and least important by BN scale."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            bn.running_mean.uniform_(-0.1, 0.1)
        for conv, idx in channels.items():
            bn = modules[conv.rsplit(".", 1)[0] + ".1"]
            bn.weight[idx] = 0.0
            bn.bias[idx] = 0.0


def _by_group(width: int, groups: int, per_group: int) -> list[int]:
    """The first ``per_group`` channels of every conv group of a ``width``-channel grouped tensor."""
    step = width // groups
    return [g * step + p for g in range(groups) for p in range(per_group)]


SILENCED = {
    # a grouped conv's input: conv1's output channels at the same positions of every conv group of conv2
    "resnext-input": ("resnext", "blocks.0.conv1.0", 16, {"blocks.0.conv1.0": _by_group(32, 4, 4)}),
    # a grouped conv's output (and the 1×1 after it)
    "resnext-output": ("resnext", "blocks.0.conv2.0", 16, {"blocks.0.conv2.0": _by_group(32, 4, 4)}),
    # RegNet: the grouped conv's output is coupled to the SE's excitation and the next 1×1
    "regnet-se": ("regnet", "blocks.1.b.0", 16, {"blocks.1.b.0": _by_group(32, 4, 4)}),
    # GhostNet: the stem feeds a residual add with cat([primary, cheap(primary)]): stem channels j and 8 + j go together
    # (and the next block's depthwise shortcut follows them)
    "ghost-pairs": ("ghostnet", "stem.0", 8, {"stem.0": [0, 1, 2, 3, 8, 9, 10, 11], "blocks.0.g2.primary.0": [0, 1, 2, 3], "blocks.0.g2.cheap.0": [0, 1, 2, 3],
                                               "blocks.1.short.0.0": [0, 1, 2, 3, 8, 9, 10, 11]}),
}


@pytest.mark.parametrize("case", list(SILENCED))
def test_cutting_silent_channels_leaves_the_outputs_unchanged(case):
    """Channels that are exactly zero are the ones cut (by BN scale); if the cut removed the wrong weights of
    a grouped conv or of a coupled concatenation, the outputs would change."""
    name, group, keep, silent = SILENCED[case]
    model = globals()[name]().eval()
    _silence(model, silent)
    with torch.no_grad():
        reference = model(X16)
    before = {n: c.out_channels for n, c in _convs(model).items()}
    prune_in_place(model, X16[:1], {group: keep}, importance="bn_scale")
    after = {n: c.out_channels for n, c in _convs(model).items()}
    assert {n: before[n] - after[n] for n in silent} == {n: len(idx) for n, idx in silent.items()}
    with torch.no_grad():
        assert torch.allclose(model(X16), reference, atol=1e-5)


def test_ghost_concatenation_inputs_are_cut_in_pairs():
    ctx = _user("ghostnet")
    space = ctx.space
    assert not space.notes
    divisors = {g.name: space.divisor(g) for g in space.groups}
    assert divisors["stem.0"] == 2  # the residual add couples stem j with the concatenation's j and 8 + j
    pruned = ctx.family.prune(ctx.baseline.model, Policy.from_dict({"default_keep": 0.5}), space, ctx.task, ctx.options)
    for n, conv in _convs(pruned).items():
        if n.endswith("cheap.0"):  # still depthwise over its primary, which kept as many channels
            primary = _convs(pruned)[n.replace("cheap", "primary")]
            assert conv.groups == conv.in_channels == conv.out_channels == primary.out_channels
    assert count_params(pruned) < 0.5 * count_params(ctx.baseline.model)
    assert pruned(ctx.task.example_input()).shape == (1, 10)


@pytest.mark.parametrize("name, left_out, needle", [
    ("ghost_sliced", "blocks.0.primary.0", "torch.cat"),
    ("ghost_ratio3", "blocks.0.primary.0", "one input channel per conv group"),
])
def test_unsafe_structures_are_left_out_with_a_note(name, left_out, needle, capsys):
    ctx = _user(name)
    assert left_out not in ctx.space.group_names
    notes = [n for n in ctx.space.notes if repr(left_out) in n]
    assert len(notes) == 1 and needle in notes[0] and "\n" not in notes[0]
    # the rest of the model still prunes, and the left-out group keeps its channels
    pruned = ctx.family.prune(ctx.baseline.model, Policy.from_dict({"default_keep": 0.5}), ctx.space, ctx.task, ctx.options)
    assert _convs(pruned)[left_out].out_channels == _convs(ctx.baseline.model)[left_out].out_channels
    assert count_params(pruned) < count_params(ctx.baseline.model)
    assert pruned(ctx.task.example_input()).shape == (1, 10)
    with pytest.raises(HwsearchError, match="cannot be pruned"):
        prune_in_place(copy.deepcopy(ctx.baseline.model), ctx.task.example_input(), {left_out: 4})
    assert main(["space", "--model", f"{HERE}:{name}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert any(repr(left_out) in n and needle in n for n in printed["notes"])


def test_a_keep_count_that_splits_a_conv_group_is_a_one_line_error():
    ctx = _user("resnext")
    with pytest.raises(HwsearchError, match="removes 4 at a time") as err:
        prune_in_place(ctx.baseline.model, ctx.task.example_input(), {"blocks.0.conv1.0": 18})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["resnext", "regnet", "ghostnet"])
def test_half_keep_int8_compresses_end_to_end(name, tmp_path):
    ctx = context.build("digits", f"{HERE}:{name}", train={"epochs": 6}, options=QUICK)
    res = realise(ctx, HALF_INT8, tmp_path / "m.onnx")
    dense = count_params(ctx.baseline.model)
    assert res.params < 0.5 * dense, (res.params, dense)
    assert res.precision_counts["int8"] == len(ctx.space.layers) and count_quantized_kernels(res.onnx_path) > 0
    test = ctx.task.split("test")
    out = run_feeds(session(res.onnx_path), [{"input": test.x}])
    assert out.shape == (len(test.y), 10) and np.isfinite(out).all()
    # ten digit classes (chance 0.1); these few-epoch toy baselines score 0.68-0.90, and half of every group
    # (stem included) with 40 recovery steps keeps 0.41-0.80 (measured)
    assert res.accuracy > 0.3, res.accuracy


@pytest.mark.parametrize("name, needle", [("shuffled", "'Transpose'"), ("halved", "computes a Reshape's target shape")])
def test_latency_lowering_says_in_one_line_what_it_cannot_model(name, needle):
    ctx = _user(name)
    with pytest.raises(HwsearchError, match=needle) as err:
        UnitGraph.from_model(ctx.baseline.model, ctx.task.example_input(), ctx.space, 8)
    assert "\n" not in str(err.value)


def test_a_module_called_twice_and_merged_equal_weights_export_predict_and_quantize(tmp_path):
    """The exporter names each conv call after its module (both calls of ``b``), and an equal weight it merged is unshared."""
    import onnx

    from hwsearch.runtime.onnx_export import export, layer_calls

    ctx = _user("twice")
    model, x = ctx.baseline.model, ctx.task.example_input()
    assert layer_calls(model, x) == ["a.0", "b", "c", "b", "fc"] and ctx.space.layers == ("a.0", "b", "c", "fc")
    path = export(model, x[:1], tmp_path / "m.onnx")
    assert [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Gemm")] == ["a.0", "b", "c", "b#2", "fc"]
    graph = UnitGraph.from_model(model, x, ctx.space, 8)
    assert [u.name for u in graph.units if u.kind == "conv"] == ["a.0", "b", "c", "b"]
    res = realise(ctx, Policy.from_dict({"precision": {"b": "int8"}}), tmp_path / "q.onnx", score=False)
    assert count_quantized_kernels(res.onnx_path) == 2  # both calls of b run as QLinearConv
