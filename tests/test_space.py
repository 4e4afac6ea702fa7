import optuna
import pytest

from hwsearch.errors import HwsearchError
from hwsearch.families import get_family
from hwsearch.policy import Policy


@pytest.fixture(scope="module")
def resnet_space(tiny_resnet, digits):
    return get_family("cnn").search_space(tiny_resnet.model, digits)


def test_residual_stages_are_coupled_groups(resnet_space):
    sizes = {g.name: len(g.layers) for g in resnet_space.groups}
    # each stage's residual chain (stem/shortcut + every block's conv2) is one group
    assert sizes["stem.0"] == 4 and sizes["layer2.0.conv2"] == 4 and sizes["layer3.0.conv2"] == 4
    # every block's inner conv is its own group
    assert all(sizes[f"layer{s}.{b}.conv1"] == 1 for s in (1, 2, 3) for b in range(3))
    assert "fc" in resnet_space.layers and "fc" not in resnet_space.group_names


def test_depthwise_convs_are_pruned_with_their_producer(tiny_mbv2, digits):
    space = get_family("cnn").search_space(tiny_mbv2.model, digits)
    dw = dict(tiny_mbv2.model.named_modules())
    coupled = [g for g in space.groups if any(dw[name].groups > 1 for name in g.layers)]
    assert coupled and all(len(g.layers) >= 2 for g in coupled)


def test_keep_ratio_rounds_to_channel_multiple(resnet_space):
    group = next(g for g in resnet_space.groups if g.channels == 64)
    assert resnet_space.kept_channels(group, 0.5) == 32
    assert resnet_space.kept_channels(group, 0.3) == 16  # 19.2 -> 16
    assert resnet_space.kept_channels(group, 0.01) == 8  # never below one multiple
    assert resnet_space.kept_channels(group, 1.0) == 64


def test_suggest_works_with_fixed_trial(resnet_space):
    params = {f"keep:{g}": 0.5 for g in resnet_space.group_names}
    params |= {f"precision:{layer}": "int8" for layer in resnet_space.layers}
    policy = resnet_space.suggest(optuna.trial.FixedTrial(params))
    assert set(policy.keep) == set(resnet_space.group_names) and set(policy.keep.values()) == {0.5}
    assert set(policy.precision.values()) == {"int8"}


def test_suggest_works_with_a_study(resnet_space):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    policy = resnet_space.suggest(study.ask())
    assert all(v in resnet_space.keep_choices for v in policy.keep.values())


def test_unknown_group_or_layer_is_an_error(resnet_space):
    with pytest.raises(HwsearchError, match="keep group 'nope' does not exist"):
        resnet_space.validate(Policy.from_dict({"keep": {"nope": 0.5}}))
    with pytest.raises(HwsearchError, match="precision layer 'layerX' does not exist"):
        resnet_space.validate(Policy.from_dict({"precision": {"layerX": "int8"}}))


def test_space_json_has_the_documented_keys(resnet_space):
    d = resnet_space.to_dict()
    assert {"groups", "layers", "keep_choices", "precisions"} <= set(d)
    assert d["precisions"] == ["fp32", "fp16", "int8"] and d["keep_choices"][-1] == 1.0
