"""Sampler ``guided``: real evaluations only where a cheap accuracy model and the exact latency table
point at the front.

1. **Sensitivity profile.** Probes change one kind of choice: first a block of consecutive layers
   in one precision (from the dense fp32 model), then a block of consecutive channel groups cut to
   the *probe keep* (:func:`probe_keep`: the keep choice nearest the middle of the range, where
   the front's useful cuts are, rather than the smallest, where models collapse). The cuts are
   probed on the *cut base*: the fastest whole-model precision measured within
   :data:`BASE_TOL` of the dense score (int8 for CNNs; fp32 when none is), decided when the first
   cut probe is due and stored with the study, so every cut probe is itself a candidate for the
   front. One probe per group / layer when the budget allows; at most :data:`PROFILE_SHARE` of
   ``n_trials``, so the profile is part of the trial budget. A precision probe is skipped when the
   whole model in that precision (a warm start) was measured within :data:`BASE_TOL`. Probes are
   ordinary trials of the study: stored with it, shown on the dashboard and reused on resume.
2. **Surrogate** (:mod:`hwsearch.search.surrogate`): additive in the probes' costs plus a ridge
   correction, refitted on every completed trial before each proposal.
3. **Proposals.** A greedy path from the dense model (each step the choice with the most latency
   saved per predicted score lost), the uniform policies (every keep choice in each whole-model
   precision: what a sweep would try), random mutations of all of these and of the measured front,
   none cutting a group more than one keep choice deeper than a completed trial did (a trust
   region: the explored depth grows a step at a time), every one predicted by the surrogate and
   every device's latency table; of the predicted Pareto fronts, the candidate with the largest
   predicted hypervolume gain over the measured front (in-flight proposals counted at their
   predictions), summed over the devices with each device's reference box normalised to 1, is
   sent for real evaluation. With a latency budget, only candidates predicted within it count
   and the budget is the reference latency, so proposals hug it.

The sampler reads the study (completed trials' ``policy`` and values; running and waiting trials'
parameters) and never proposes a policy any trial has already had. It writes ``guided.json`` in
the run directory: the probes and their measured costs, the surrogate's largest costs, and its
rank correlation (Spearman) between predicted and measured score on the proposals it had not seen.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from hwsearch.policy import Policy, QuantRecipe
from hwsearch.results import hypervolume, pareto_front
from hwsearch.search.surrogate import Features, Surrogate, fit, profile_prior
from hwsearch.space import SearchSpace

PROFILE_SHARE = 0.3  # at most this share of n_trials is spent on probes
GROUP_WEIGHT = 2.0  # probes are shared between cuts (this weight) and each precision (weight 1)
MUTATIONS = 250  # random candidates per proposal, besides the greedy path
HV_SPAN = 0.10  # hypervolume reference: dense score minus this, the dense (or budget) latency
EPS_DROP = 1e-4
REPORT = "guided.json"
PLAN_ATTR = "guided_profile"  # study user attribute: the probes planned (names and policies)
BASE_ATTR = "guided_cut_base"  # study user attribute: the precision the cut probes run in, once decided
BASE_TOL = 0.01  # a whole-model precision is the cut base when it loses at most this much score (the benchmarks' "<= 1 point")


@dataclass(frozen=True)
class Probe:
    """``policy``: what the probe changes; ``on_base``: a cut probe, run with every layer in the cut base."""

    name: str
    policy: Policy
    on_base: bool = False


def _blocks(items: list[str], n: int) -> list[list[str]]:
    return [list(b) for b in np.array_split(np.array(items, dtype=object), max(1, min(n, len(items)))) if len(b)]


def probe_keep(space: SearchSpace) -> float:
    """The keep choice the cut probes use: of those below 1, the nearest to the middle between the smallest and 1
    (the deeper one on a tie); 1.0 when the space cuts nothing."""
    below = sorted(k for k in space.keep_choices if k < 1.0)
    if not below:
        return 1.0
    middle = (below[0] + 1.0) / 2
    return min(below, key=lambda k: (abs(k - middle), k))


def plan_probes(space: SearchSpace, n_trials: int) -> list[Probe]:
    """The sensitivity profile's probes (see the module docstring), in order: precisions, then cuts."""
    kprobe = probe_keep(space)
    kinds: dict[str, list[str]] = {}
    for p in space.precisions:
        if p != "fp32" and any(p in space.choices(layer) for layer in space.layers):
            kinds[p] = [layer for layer in space.layers if p in space.choices(layer)]
    if kprobe < 1.0 and space.groups:
        kinds["cut"] = list(space.group_names)
    cap = max(len(kinds), round(PROFILE_SHARE * n_trials))
    weight = {k: GROUP_WEIGHT if k == "cut" else 1.0 for k in kinds}
    count = {k: min(len(v), max(1, math.floor(cap * weight[k] / sum(weight.values())))) for k, v in kinds.items()}
    for k in sorted(kinds, key=lambda k: -weight[k]):  # what rounding left over goes to the kinds with room
        spare = cap - sum(count.values())
        count[k] += max(0, min(spare, len(kinds[k]) - count[k]))
    base = space.default_recipe()
    probes = []
    for kind, members in kinds.items():
        for block in _blocks(members, count[kind]):
            label = block[0] if len(block) == 1 else f"{block[0]}..{block[-1]} ({len(block)})"
            if kind == "cut":
                probes.append(Probe(f"keep {kprobe:g}: {label}", Policy(keep={g: kprobe for g in block}, quant=base), on_base=True))
            else:
                probes.append(Probe(f"{kind}: {label}", Policy(precision={layer: kind for layer in block}, quant=base)))
    return probes


def rank_correlation(pairs: list[tuple[float, float]]) -> float | None:
    """Spearman correlation of (predicted, measured) pairs; None for fewer than 3 or constant values."""
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr([p for p, _ in pairs], [m for _, m in pairs]).statistic
    return None if rho is None or math.isnan(rho) else round(float(rho), 4)


class GuidedSampler(optuna.samplers.BaseSampler):
    """An Optuna sampler; see the module docstring (the driver imports this module only for ``sampler = "guided"``).

    ``predictors``: device -> latency predictor (``.predict(policy).latency_ms``); ``budgets``: device
    -> budget_ms; ``dense_score``: the dense model's score (None: the dense trial's, else the best)."""

    def __init__(self, space: SearchSpace, predictors: Mapping[str, Any], n_trials: int, seed: int = 0, budgets: Mapping[str, float] | None = None,
                 dense_score: float | None = None, run_dir: str | Path | None = None) -> None:
        self.space, self.predictors, self.budgets = space, dict(predictors), dict(budgets or {})
        self.device = next((d for d in self.predictors if d in self.budgets), next(iter(self.predictors)))
        self.features = Features.of(space)
        self.probes = plan_probes(space, n_trials)
        self.dense_score, self.run_dir = dense_score, Path(run_dir) if run_dir else None
        self.rng = np.random.default_rng(seed)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._proposals: dict[int, dict[str, Any]] = {}
        self._notes: dict[int, dict[str, Any]] = {}
        self._latency: dict[tuple[str, tuple], float] = {}
        self._deltas: dict[tuple[str, str, Any], float] | None = None
        self._sweep: list[Policy] | None = None
        self.proposal_s = 0.0
        self._choices = {layer: space.choices(layer) for layer in space.layers}
        # what a mutation may change (fixed by the space)
        self._dims = ([("keep", g) for g in space.group_names if len(space.keep_choices) > 1] + [("precision", layer) for layer in space.layers if len(self._choices[layer]) > 1]
                      + [("quant", key) for key, values in space.quant_choices if len(values) > 1])
        self._pairs: list[tuple[float, float]] = []
        self._profile_done = 0
        self._base: str | None = None
        self._free: set[str] = set()

    # ------------------------------------------------------------------ the Optuna sampler interface
    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def sample_independent(self, study, trial, param_name: str, param_distribution) -> Any:
        if trial.number not in self._proposals:
            t0 = time.perf_counter()
            self._proposals[trial.number] = self._propose(study, trial.number)
            self.proposal_s += time.perf_counter() - t0
        value = self._proposals[trial.number].get(param_name)
        if value is not None and value in getattr(param_distribution, "choices", ()):
            return value
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    def status(self) -> dict[str, str]:
        """For the progress bar: probes of the sensitivity profile completed of those planned."""
        return {"profile": f"{self._profile_done}/{len(self.probes)}"}

    def note(self, number: int) -> dict[str, Any] | None:
        """What the sampler said about trial ``number`` (stored as its ``guided`` user attribute)."""
        return self._notes.get(number)

    # ------------------------------------------------------------------ proposals
    def key(self, policy: Policy) -> tuple:
        """A policy's identity (:meth:`~hwsearch.space.SearchSpace.identity`, as :func:`~hwsearch.search.study.policy_key` without its JSON)."""
        return self.space.identity(policy)

    def latency(self, policy: Policy, device: str | None = None) -> float:
        device = device or self.device
        key = (device, self.key(policy))
        if key not in self._latency:
            self._latency[key] = float(self.predictors[device].predict(policy).latency_ms)
        return self._latency[key]

    def _propose(self, study, number: int) -> dict[str, Any]:
        self._keep_plan(study)
        done, tried, pending, self._pairs = self._read(study, number)
        dense = self._dense(done)
        whole = {p: self._measured_whole_drop(p, done, dense) for p in self.space.precisions if p != "fp32"}
        free = self._free = {p for p, drop in whole.items() if drop is not None and drop <= BASE_TOL}
        base = study.user_attrs.get(BASE_ATTR)
        if base is None and all(p.on_base or self._skipped(p, free) or self.key(p.policy) in tried for p in self.probes):
            base = self._decide_base(study, done, dense)  # the precision probes are out: the cut probes are due
        self._base = base
        probes = [(p, self._probe_policy(p, base)) for p in self.probes]
        results = [(p, pol, None if pol is None else (done.get(self.key(pol)) or (None, None))[1]) for p, pol in probes]
        self._profile_done = sum(r is not None or self._skipped(p, free) for p, _, r in results)
        for probe, policy, _ in results:
            if policy is not None and self.key(policy) not in tried and not self._skipped(probe, free):
                self._notes[number] = {"phase": "profile", "probe": probe.name}
                self._report(results, None, done, dense)
                return self.space.params(policy, f"guided probe {probe.name!r}")
        base_drop = self._base_drop(base, done, dense)
        prior = profile_prior(self.features, [(p.policy, dense - r[0] - (base_drop if p.on_base else 0.0)) for p, _, r in results if r is not None])
        if not done:
            return {}
        surrogate = fit(self.features, [pol for pol, _ in done.values()], [score for _, (score, _) in done.values()], dense, prior)
        choice = self._select(surrogate, done, tried, pending, dense)
        self._report(results, surrogate, done, dense)
        if choice is None:
            return {}
        policy, score, lat, n = choice
        self._notes[number] = {"phase": "proposal", "predicted_score": round(score, 6), "predicted_latency_ms": round(lat, 6), "candidates": n}
        return self.space.params(policy, "guided proposal")

    def _probe_policy(self, probe: Probe, base: str | None) -> Policy | None:
        """The policy a probe evaluates (None: a cut probe whose base is not decided yet)."""
        if not probe.on_base:
            return probe.policy
        if base is None:
            return None
        return Policy(keep=dict(probe.policy.keep), precision=self.space.uniform(1.0, base).precision, quant=probe.policy.quant)

    def _decide_base(self, study, done, dense: float) -> str:
        """The cut base (see the module docstring): the fastest whole-model precision whose drop is within
        :data:`BASE_TOL`, from its measured trial or else the sum of its completed block probes; stored with the study."""
        best, best_ms = "fp32", self.latency(Policy())
        for p in self.space.precisions:
            drop, ms = self._whole_drop(p, done, dense), self.latency(self.space.uniform(1.0, p))
            if p != "fp32" and drop is not None and drop <= BASE_TOL and ms < best_ms:
                best, best_ms = p, ms
        study.set_user_attr(BASE_ATTR, best)
        return best

    @staticmethod
    def _skipped(probe: Probe, free: set[str]) -> bool:
        """A precision probe is not run when the whole model in its precision was measured within BASE_TOL: its blocks are taken as free."""
        return not probe.on_base and bool(probe.policy.precision) and set(probe.policy.precision.values()) <= free

    def _measured_whole_drop(self, precision: str, done, dense: float) -> float | None:
        measured = done.get(self.key(self.space.uniform(1.0, precision)))
        return None if measured is None else dense - measured[1][0]

    def _whole_drop(self, precision: str, done, dense: float) -> float | None:
        measured = self._measured_whole_drop(precision, done, dense)
        if measured is not None:
            return measured
        blocks = [p for p in self.probes if not p.on_base and set(p.policy.precision.values()) == {precision}]
        results = [done.get(self.key(p.policy)) for p in blocks]
        if not blocks or any(r is None for r in results):
            return None
        return sum(max(0.0, dense - r[1][0]) for r in results)

    def _base_drop(self, base: str | None, done, dense: float) -> float:
        """What the cut base alone loses (subtracted from the cut probes' drops; 0 for fp32 or when unknown)."""
        if base in (None, "fp32"):
            return 0.0
        return max(0.0, self._whole_drop(base, done, dense) or 0.0)

    def _keep_plan(self, study) -> None:
        """The profile planned by the run's first guided session (a study attribute), so a resumed session with
        another ``n_trials`` measures the same probes instead of re-blocking them."""
        saved = study.user_attrs.get(PLAN_ATTR)
        if saved is None:
            study.set_user_attr(PLAN_ATTR, [{"name": p.name, "policy": p.policy.to_dict(), "on_base": p.on_base} for p in self.probes])
        elif [p.name for p in self.probes] != [e["name"] for e in saved]:
            self.probes = [Probe(e["name"], Policy.from_dict(e["policy"]), bool(e.get("on_base"))) for e in saved]

    def _read(self, study, number: int):
        """key -> (policy, (score, latency_ms)) of the COMPLETE trials; the keys every trial has had; the in-flight
        proposals' (policy, predicted score); (predicted, measured score) of the completed proposals."""
        from optuna.trial import TrialState

        done: dict[tuple, tuple[Policy, tuple[float, float]]] = {}
        tried: set[tuple] = set()
        pending: list[tuple[Policy, float]] = []
        pairs: list[tuple[float, float]] = []
        for t in study.get_trials(deepcopy=False):
            if t.number == number or (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")):
                continue  # an interrupted trial (its driver or worker died) may be proposed again: it was not the policy's fault
            if "policy" in t.user_attrs:
                policy = Policy.from_dict(t.user_attrs["policy"])
            else:
                policy = self.space.policy_from_params(t.params if t.state != TrialState.WAITING else t.system_attrs.get("fixed_params", {}))
            if policy is None:
                continue
            key = self.key(policy)
            tried.add(key)
            note = t.user_attrs.get("guided") or self._notes.get(t.number) or {}
            if t.state == TrialState.COMPLETE and t.values and self.device in (t.user_attrs.get("latency_ms") or {}):
                done.setdefault(key, (policy, (float(t.values[0]), float(t.user_attrs["latency_ms"][self.device]))))
                if "predicted_score" in note:
                    pairs.append((float(note["predicted_score"]), float(t.values[0])))
            elif t.state in (TrialState.RUNNING, TrialState.WAITING) and "predicted_score" in note:
                pending.append((policy, float(note["predicted_score"])))
        return done, tried, pending, pairs

    def _dense(self, done: Mapping[tuple, tuple[Policy, tuple[float, float]]]) -> float:
        if self.dense_score is not None:
            return float(self.dense_score)
        own = done.get(self.key(Policy()))
        return own[1][0] if own else max((v[1][0] for v in done.values()), default=1.0)

    def _select(self, surrogate: Surrogate, done, tried: set[tuple], pending: list[tuple[Policy, float]], dense: float):
        """(policy, predicted score, predicted latency on the main device, candidates) with the largest predicted
        hypervolume gain, summed over the devices (each normalised by its reference box)."""
        entries = list(done.values())
        bases = [entries[i][0] for i in pareto_front([e[1] for e in entries])]
        cands = self._candidates(surrogate, bases, tried)
        ks = sorted(self.space.keep_choices)
        deepest = {g: min((ks.index(p.keep_for(g)) for p, _ in entries if p.keep_for(g) in ks), default=len(ks) - 1) for g in self.space.group_names}
        trusted = [c for c in cands if self._trusted(c, deepest, ks)]
        if any(self._feasible(c) for c in trusted):  # else (a budget beyond the region) the whole candidate set
            cands = trusted
        if not cands:
            return None
        scores = surrogate.predict(self.features.matrix(cands)).tolist()
        lats = {d: [self.latency(c, d) for c in cands] for d in self.predictors}
        keep = sorted({i for d in self.predictors for i in pareto_front(list(zip(scores, lats[d])))})
        keep = [i for i in keep if self._feasible(cands[i])]
        if not keep:
            return None
        gains = dict.fromkeys(keep, 0.0)
        for d in self.predictors:
            ref = (dense - HV_SPAN, min(self.latency(Policy(), d), self.budgets.get(d, math.inf)))
            measured = [(score, self.latency(policy, d)) for policy, (score, _) in entries] + [(score, self.latency(policy, d)) for policy, score in pending]
            base, norm = hypervolume(measured, ref), HV_SPAN * ref[1]
            for i in keep:
                gains[i] += (hypervolume(measured + [(scores[i], lats[d][i])], ref) - base) / norm
        best = max(keep, key=lambda i: (gains[i], scores[i]))
        if gains[best] <= 0:  # nothing predicted to improve the front: the most accurate predicted point not yet tried
            best = max(keep, key=lambda i: scores[i])
        return cands[best], scores[best], lats[self.device][best], len(cands)

    def _feasible(self, policy: Policy) -> bool:
        return all(self.latency(policy, d) <= budget for d, budget in self.budgets.items() if d in self.predictors)

    def _candidates(self, surrogate: Surrogate, bases: list[Policy], tried: set[tuple]) -> list[Policy]:
        """The greedy path, the uniform policies, and mutations of these and of ``bases``, without policies already tried."""
        path = self._greedy_path(surrogate) + self._uniform()
        pool = path + bases
        out: dict[tuple, Policy] = {}
        for policy in path + [self._mutate(pool[int(self.rng.integers(len(pool)))]) for _ in range(MUTATIONS if pool else 0)]:
            key = self.key(policy)
            if key not in tried:
                out.setdefault(key, policy)
        return list(out.values())

    def _trusted(self, policy: Policy, deepest: Mapping[str, int], ks: list[float]) -> bool:
        """No group cut more than one keep choice deeper than any completed trial cut it: the surrogate's cost of a
        depth nothing measured is an extrapolation, so the explored depth grows one step at a time (unless no
        candidate in the region meets the latency budget)."""
        return all(ks.index(policy.keep_for(g)) >= deepest[g] - 1 for g in self.space.group_names if policy.keep_for(g) in ks)

    def _uniform(self) -> list[Policy]:
        """Every keep choice in each whole-model precision (a uniform sweep's policies)."""
        if self._sweep is None:
            self._sweep = [self.space.uniform(k, p) for k in self.space.keep_choices for p in self.space.precisions]
        return self._sweep

    def _mutate(self, policy: Policy) -> Policy:
        keep, precision = {g: policy.keep_for(g) for g in self.space.group_names}, {layer: policy.precision_for(layer) for layer in self.space.layers}
        quant, dims = policy.quant.to_dict(), self._dims
        for _ in range(int(self.rng.integers(1, 4)) if dims else 0):
            kind, name = dims[int(self.rng.integers(len(dims)))]
            if kind == "keep":
                keep[name] = float(self.rng.choice([k for k in self.space.keep_choices if k != keep[name]]))
            elif kind == "precision":
                precision[name] = str(self.rng.choice([p for p in self._choices[name] if p != precision[name]]))
            else:
                values = dict(self.space.quant_choices)[name]
                quant[name] = values[int(self.rng.integers(len(values)))]
        return Policy(keep=keep, precision=precision, quant=QuantRecipe.from_dict(quant))

    def _single_deltas(self) -> dict[tuple[str, str, Any], float]:
        """Latency change (ms) of each single choice made alone on the dense model (the greedy path's estimate)."""
        if self._deltas is None:
            base = self.latency(Policy())
            deltas = {("keep", g, k): self.latency(Policy(keep={g: k})) - base for g in self.space.group_names for k in self.space.keep_choices}
            deltas |= {("precision", layer, p): self.latency(Policy(precision={layer: p})) - base for layer in self.space.layers for p in self._choices[layer]}
            self._deltas = deltas
        return self._deltas

    def _greedy_path(self, surrogate: Surrogate) -> list[Policy]:
        """From the dense model, repeatedly the move (a group one keep choice down, an fp32 layer to
        another precision) with the most estimated latency saved per predicted score lost."""
        deltas, feats, coef = self._single_deltas(), self.features, surrogate.coef
        ks = sorted(self.space.keep_choices)
        n_groups, n_local = len(feats.groups), feats.n_local
        idx = {g: len(ks) - 1 for g in feats.groups}
        u = np.zeros(n_groups)
        qpos = {c: 2 * n_groups + i for i, c in enumerate(feats.choices)}
        share_pos = {p: n_local + 2 + i for i, p in enumerate(feats.precisions)}
        per_prec = {p: sum(pp == p for _, pp in feats.choices) for p in feats.precisions}
        precision = {layer: "fp32" for layer in self.space.layers}
        path, base = [], self.space.default_recipe()
        while True:
            best, best_ratio = None, 0.0
            mean = float(u.mean()) if n_groups else 0.0
            for i, g in enumerate(feats.groups):
                if idx[g] == 0:
                    continue
                k_old, k_new = ks[idx[g]], ks[idx[g] - 1]
                saved = deltas[("keep", g, k_old)] - deltas[("keep", g, k_new)]
                u_new = feats.cut(k_new)
                m_new = mean + (u_new - u[i]) / n_groups
                cost = coef[i] * (u_new - u[i]) + coef[n_groups + i] * (u_new**2 - u[i] ** 2) + coef[n_local] * (m_new - mean) + coef[n_local + 1] * (m_new**2 - mean**2)
                ratio = saved / max(cost, EPS_DROP)
                if saved > 0 and ratio > best_ratio:
                    best, best_ratio = ("keep", i, g), ratio
            for (layer, p), pos in qpos.items():
                if precision[layer] != "fp32":
                    continue
                saved = -deltas[("precision", layer, p)]
                cost = coef[pos] + coef[share_pos[p]] / per_prec[p]
                ratio = saved / max(cost, EPS_DROP)
                if saved > 0 and ratio > best_ratio:
                    best, best_ratio = ("precision", layer, p), ratio
            if best is None:
                return path
            if best[0] == "keep":
                _, i, g = best
                idx[g] -= 1
                u[i] = feats.cut(ks[idx[g]])
            else:
                precision[best[1]] = best[2]
            path.append(Policy(keep={g: ks[j] for g, j in idx.items()}, precision=dict(precision), quant=base))

    # ------------------------------------------------------------------ the report
    def _report(self, probes, surrogate: Surrogate | None, done, dense: float) -> None:
        if self.run_dir is None:
            return
        out = {"sampler": "guided", "device": self.device, "dense_score": dense, "proposal_s": round(self.proposal_s, 3),
               "profile": {"planned": len(probes), "done": self._profile_done, "probe_keep": probe_keep(self.space), "cut_base": self._base,
                           "probes": [{"name": p.name, "score": None if r is None else r[0], "drop": None if r is None else round(dense - r[0], 6)}
                                      | ({"skipped": "the whole model in this precision was measured within BASE_TOL"} if self._skipped(p, self._free) else {})
                                      for p, _, r in probes]}}
        if surrogate is not None:
            out["surrogate"] = {"trials": surrogate.trials, "largest_costs": surrogate.top_costs()}
        out["proposals"] = {"completed": len(self._pairs), "spearman_predicted_vs_measured": rank_correlation(self._pairs)}
        (self.run_dir / REPORT).write_text(json.dumps(out, indent=1) + "\n")
