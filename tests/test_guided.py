"""Sampler ``guided``: the sensitivity profile's probes, the surrogate, the greedy path, and whole searches
(real tiny resnet20, real table, in-process) that end with exactly n_trials different policies, resumed too."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from hwsearch.config import load_config
from hwsearch.policy import Policy
from hwsearch.search import run_search
from hwsearch.search.guided import BASE_ATTR, BASE_TOL, GuidedSampler, plan_probes, probe_keep, rank_correlation
from hwsearch.search.study import policy_key, storage_url
from hwsearch.search.surrogate import Features, fit, profile_prior
from hwsearch.space import GroupInfo, SearchSpace
from tests.search_helpers import write_config


def _space(n_groups: int = 12, n_layers: int = 22, precisions=("fp32", "int8")) -> SearchSpace:
    groups = [GroupInfo(f"g{i}", 32, (f"g{i}",)) for i in range(n_groups)]
    return SearchSpace.build(groups, [f"l{i}" for i in range(n_layers)], keep_choices=(0.25, 0.5, 0.75, 1.0), precisions=precisions)


def _members(probes, kind: str) -> list[str]:
    out = []
    for p in probes:
        out += [g for g, k in p.policy.keep.items() if k < 1] if kind == "cut" else [layer for layer, v in p.policy.precision.items() if v == kind]
    return out


def test_probes_cover_every_group_and_layer_once_within_the_budget_share() -> None:
    space = _space()
    probes = plan_probes(space, 40)  # 12 groups + 22 layers do not fit in 30% of 40 trials: blocks
    assert len(probes) == 12
    assert sorted(_members(probes, "cut")) == sorted(space.group_names) and sorted(_members(probes, "int8")) == sorted(space.layers)
    assert len(_members(probes, "cut")) == 12 and sum(bool(p.policy.keep) for p in probes) == 8  # cuts get 2/3 of the probes
    assert all(k == 0.5 for p in probes for k in p.policy.keep.values())  # the probe keep: mid-range, not the smallest
    assert [p.on_base for p in probes] == [False] * 4 + [True] * 8  # precisions first, then the cuts (on the cut base)
    single = plan_probes(space, 200)  # room for one probe per group and per layer
    assert len(single) == 34 and all(len(p.policy.keep) + len(p.policy.precision) == 1 for p in single)
    three = plan_probes(_space(4, 6, ("fp32", "int8", "fp16")), 10)  # a kind per precision, each at least one probe
    assert len(three) == 3 and sorted(_members(three, "fp16")) == sorted(f"l{i}" for i in range(6))


def test_the_probe_keep_is_the_choice_nearest_the_middle_of_the_range() -> None:
    def keep(*choices):
        return probe_keep(SearchSpace.build([GroupInfo("g", 32, ("g",))], ["l"], keep_choices=choices, precisions=("fp32",)))

    assert keep(0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0) == 0.625
    assert keep(0.5, 0.625, 0.75, 0.875, 1.0) == 0.75
    assert keep(0.25, 0.5, 0.75, 1.0) == 0.5  # a tie: the deeper cut
    assert keep(0.5, 1.0) == 0.5 and keep(1.0) == 1.0


def test_surrogate_recovers_additive_costs_and_names_the_costliest_choice() -> None:
    space = _space(6, 8)
    feats = Features.of(space)
    rng = np.random.default_rng(0)
    truth = {f"cut:g{i}": 0.01 * (i + 1) for i in range(6)} | {"cut:g5": 0.2} | {f"int8:l{i}": 0.002 for i in range(8)}
    coef = np.array([truth.get(n, 0.0) for n in feats.names])
    pols = [Policy(keep={g: float(rng.choice(space.keep_choices)) for g in space.group_names},
                   precision={layer: str(rng.choice(space.precisions)) for layer in space.layers}) for _ in range(60)]
    scores = [0.95 - float(feats.vector(p) @ coef) for p in pols]
    model = fit(feats, pols, scores, 0.95, np.zeros(len(feats.names)))
    pred = model.predict(feats.matrix(pols))
    assert np.corrcoef(pred, scores)[0, 1] > 0.99
    assert next(iter(model.top_costs(1))) in ("cut:g5", "cut2:g5")
    assert model.predict_policy(Policy()) == pytest.approx(0.95)


def test_a_block_probe_shares_its_drop_among_the_choices_it_made() -> None:
    space = _space(6, 4)
    feats = Features.of(space)
    prior = profile_prior(feats, [(Policy(keep={"g0": 0.25, "g1": 0.25, "g2": 0.25}), 0.3), (Policy(precision={"l0": "int8", "l1": "int8"}), 0.02),
                                  (Policy(precision={"l3": "int8"}), -0.01)])  # a probe that gained counts as free
    named = dict(zip(feats.names, prior))
    assert named["cut:g0"] == pytest.approx(0.05) and named["cut2:g2"] == pytest.approx(0.05) and named["cut:g3"] == 0
    assert named["int8:l0"] == pytest.approx(0.01) and named["int8:l3"] == 0 and named["cut:mean"] == 0
    half = Policy(keep={"g0": 0.625, "g1": 0.625})  # features of 0.5 (and 0.25 squared): the prior still predicts the probe's drop
    assert feats.vector(half) @ profile_prior(feats, [(half, 0.04)]) == pytest.approx(0.04)


class _AdditiveLatency:
    """Latency test double for the path logic: each group costs its keep x 1 ms, each layer 0.5 ms (0.2 in int8)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def predict(self, policy: Policy):
        ms = sum(policy.keep_for(g) for g in self.space.group_names) + sum(0.2 if policy.precision_for(layer) == "int8" else 0.5 for layer in self.space.layers)
        return SimpleNamespace(latency_ms=ms)


def test_greedy_path_takes_free_choices_first_and_ends_fully_compressed() -> None:
    space = _space(3, 2)
    feats = Features.of(space)
    sampler = GuidedSampler(space, {"dev": _AdditiveLatency(space)}, n_trials=20)
    coef = np.zeros(len(feats.names))
    coef[feats.names.index("cut:g0")] = 0.5  # cutting g0 is costly, everything else is free
    path = sampler._greedy_path(fit(feats, [], [], 0.9, coef))
    lat = [sampler.latency(p) for p in path]
    assert all(b < a for a, b in zip(lat, lat[1:]))
    assert path[-1].keep_for("g0") == 0.25 and all(path[-1].precision_for(layer) == "int8" for layer in space.layers)
    first_g0 = next(i for i, p in enumerate(path) if p.keep_for("g0") < 1)
    assert first_g0 == len(path) - 3  # g0's three steps down come last


def test_rank_correlation() -> None:
    assert rank_correlation([(1, 1), (2, 2)]) is None
    assert rank_correlation([(1, 3), (2, 2), (3, 1)]) == -1.0


@pytest.fixture
def _tiny(tiny_resnet) -> None:
    """Train (or load) the tiny resnet20 the configs name."""


def _study(cfg):
    return optuna.load_study(study_name=cfg.name, storage=storage_url(Path(cfg.output_dir)))


def test_guided_search_profiles_then_proposes_and_resumes_without_repeats(tmp_path: Path, _tiny) -> None:
    from hwsearch.search.baselines import warm_start

    path = write_config(tmp_path, "g", n_trials=9, sampler="guided", warm_start=[1.0],
                        space={"keep_choices": [0.25, 0.5, 0.75, 1.0], "precisions": ["fp32", "int8"]})
    cfg = load_config(path)
    stats = run_search(cfg, prepare=warm_start(cfg), progress=False)
    study = _study(cfg)
    trials = study.trials
    assert stats.completed == 9 and [t.state.name for t in trials] == ["COMPLETE"] * 9
    run = Path(cfg.output_dir)
    report = json.loads((run / "guided.json").read_text())
    planned = report["profile"]["planned"]
    assert planned == 3 and report["profile"]["done"] == planned  # 30% of 9 trials: two cut blocks and all layers in int8 ...
    phases = [t.user_attrs.get("guided", {}).get("phase") for t in trials]
    assert phases == [None, None, "profile", "profile"] + ["proposal"] * 5  # ... which the int8 warm start already measured
    int8_drop = trials[0].values[0] - trials[1].values[0]  # the warm starts: dense fp32, all int8
    base = study.user_attrs[BASE_ATTR]
    assert base == ("int8" if int8_drop <= BASE_TOL else "fp32") and report["profile"]["cut_base"] == base
    for t in trials[2:4]:  # the cut probes: half the groups each at the probe keep, every layer in the cut base
        policy = Policy.from_dict(t.user_attrs["policy"])
        assert set(policy.keep.values()) - {1.0} == {0.5} and set(policy.precision.values()) - {"fp32"} == {base} - {"fp32"}
    for t in trials[4:]:  # proposals carry their predictions; the table's is the trial's latency
        note = t.user_attrs["guided"]
        assert note["predicted_latency_ms"] == pytest.approx(t.user_attrs["latency_ms"]["cpu-1t"], rel=1e-4) and 0 <= note["predicted_score"] <= 1.5
    assert report["surrogate"]["trials"] >= 4 and "spearman_predicted_vs_measured" in report["proposals"]
    resumed = run_search(load_config(path, ["n_trials=12"]), prepare=warm_start(cfg), progress=False)
    study = _study(cfg)
    space = _space_of(cfg)
    keys = [policy_key(space, t.user_attrs["policy"]) for t in study.trials if t.state.name == "COMPLETE"]
    assert resumed.completed == 12 and len(keys) == 12 and len(set(keys)) == 12 and resumed.session_duplicates == 0
    assert [t.user_attrs["guided"]["phase"] for t in study.trials[9:]] == ["proposal"] * 3  # the profile is reused, not run again
    assert all(space.policy_from_params(t.params) == Policy.from_dict(t.user_attrs["policy"]) for t in study.trials)


def test_guided_proposals_stay_within_a_latency_budget(tmp_path: Path, _tiny) -> None:
    cfg = load_config(write_config(tmp_path, "b", n_trials=7, sampler="guided", warm_start=[], budget_ms=0.55))
    run_search(cfg, progress=False)
    proposals = [t for t in _study(cfg).trials if t.user_attrs.get("guided", {}).get("phase") == "proposal"]
    assert proposals and all(t.user_attrs["latency_ms"]["cpu-1t"] <= 0.55 for t in proposals)


def _space_of(cfg):
    from hwsearch import context

    return context.from_config(context.resolve(cfg), random_init=True).space


def _cuts(policy: Policy) -> dict[str, float]:
    return {g: k for g, k in policy.keep.items() if k < 1.0}


def _layers(policy: Policy) -> dict[str, str]:
    return {layer: p for layer, p in policy.precision.items() if p != "fp32"}


def _completed(space: SearchSpace, policy: Policy, score: float, ms: float) -> optuna.trial.FrozenTrial:
    params = space.params(policy, "test")
    choices = {"keep": list(space.keep_choices), "precision": list(space.precisions)} | {f"quant:{key}": list(values) for key, values in space.quant_choices}
    dists = {k: optuna.distributions.CategoricalDistribution(choices[k] if k.startswith("quant:") else choices[k.split(":")[0]]) for k in params}
    return optuna.trial.create_trial(params=params, distributions=dists, values=[score, ms], user_attrs={"policy": policy.to_dict(), "latency_ms": {"dev": ms}})


@pytest.mark.parametrize("int8_drop", [0.0, 0.03])
def test_cuts_are_probed_on_a_free_whole_model_precision_and_its_block_probes_are_skipped(int8_drop: float, tmp_path: Path) -> None:
    space = _space(4, 6)
    sampler = GuidedSampler(space, {"dev": _AdditiveLatency(space)}, n_trials=20, dense_score=0.9, run_dir=tmp_path)  # 6 probes: 2 int8 blocks, 4 cut blocks
    study = optuna.create_study(directions=["maximize", "minimize"])
    dense, int8 = Policy(), Policy(precision={layer: "int8" for layer in space.layers})
    for policy, score in ((dense, 0.9), (int8, 0.9 - int8_drop)):  # the warm starts
        study.add_trial(_completed(space, policy, score, sampler.latency(policy)))
    proposed = space.policy_from_params(sampler._propose(study, 99))
    if int8_drop == 0.0:  # int8 is free: no int8 block probe; the first cut probe keeps every layer in int8
        assert study.user_attrs[BASE_ATTR] == "int8" and _cuts(proposed) == {"g0": 0.5} and _layers(proposed) == {layer: "int8" for layer in space.layers}
        assert sampler.status() == {"profile": "2/6"}
        report = json.loads((tmp_path / "guided.json").read_text())["profile"]
        assert [bool(p.get("skipped")) for p in report["probes"]] == [True, True, False, False, False, False] and report["cut_base"] == "int8"
    else:  # int8 costs: its block probes run first (from fp32), and the base is not decided until they are out
        assert BASE_ATTR not in study.user_attrs and not _cuts(proposed) and _layers(proposed) == {layer: "int8" for layer in space.layers[:3]}
        for half in (proposed, Policy(precision={layer: "int8" for layer in space.layers[3:]})):
            study.add_trial(_completed(space, half, 0.9 - int8_drop / 2, sampler.latency(half)))
        cut = space.policy_from_params(sampler._propose(study, 99))
        assert study.user_attrs[BASE_ATTR] == "fp32" and _cuts(cut) == {"g0": 0.5} and not _layers(cut)


def test_proposals_cut_at_most_one_keep_choice_deeper_than_any_completed_trial() -> None:
    groups = [GroupInfo(f"g{i}", 32, (f"g{i}",)) for i in range(4)]
    space = SearchSpace.build(groups, [f"l{i}" for i in range(6)], keep_choices=(0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0), precisions=("fp32", "int8"))
    sampler = GuidedSampler(space, {"dev": _AdditiveLatency(space)}, n_trials=40, dense_score=0.9)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for policy in (Policy(), Policy(precision={layer: "int8" for layer in space.layers})):
        study.add_trial(_completed(space, policy, 0.9, sampler.latency(policy)))
    ks = list(space.keep_choices)
    deepest = dict.fromkeys(space.group_names, 1.0)
    for n in range(16):  # 4 cut probes at 0.625, then proposals: every cut is cheap, so a deeper one is always predicted better
        policy = space.policy_from_params(sampler._propose(study, 99))
        if sampler.note(99)["phase"] == "proposal":
            assert all(ks.index(policy.keep_for(g)) >= ks.index(deepest[g]) - 1 for g in space.group_names), (n, policy.keep, deepest)
        deepest = {g: min(k, policy.keep_for(g)) for g, k in deepest.items()}
        study.add_trial(_completed(space, policy, 0.9 - 0.001 * sum(1 - k for k in policy.keep.values()), sampler.latency(policy)))
    assert min(deepest.values()) == 0.25  # yet it got to the bottom, a step at a time


def test_the_sampler_finds_the_uniform_warm_starts_when_the_default_recipe_is_not_the_first_choice() -> None:
    from hwsearch.search.baselines import uniform_params

    space = _space(4, 6).with_quant_choices({"activation_type": ["int8", "uint8"]})  # the default (uint8) listed second
    sampler = GuidedSampler(space, {"dev": _AdditiveLatency(space)}, n_trials=20, dense_score=0.9)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for precision in ("fp32", "int8"):  # the warm starts, as baselines.warm_start enqueues them
        policy = space.policy_from_params(uniform_params(space, 1.0, precision))
        assert policy.quant.activation_type == "uint8"
        study.add_trial(_completed(space, policy, 0.9, sampler.latency(policy)))
    first = space.policy_from_params(sampler._propose(study, 99))
    assert study.user_attrs[BASE_ATTR] == "int8" and _cuts(first) == {"g0": 0.5} and first.quant.activation_type == "uint8"
