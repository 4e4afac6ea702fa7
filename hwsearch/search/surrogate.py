"""The guided sampler's accuracy model: additive in the cost of single choices, plus a correction
learned from completed trials.

A policy's features (each in [0, 1]):

- per channel group ``g``: ``cut:g`` = (1 - keep) / (1 - the smallest keep choice), and ``cut2:g`` its
  square (a cut's cost may grow faster than linearly);
- per layer and precision other than fp32: ``int8:layer`` (say) = 1 when the layer runs in it;
- per model-level quantization value other than a dimension's first: ``quant:key=value``;
- global terms for what single choices miss (many cuts together cost more than their sum):
  ``cut:mean`` and its square ``cut:mean2``, and per precision ``int8:share`` (the share of layers in it).

The model predicts a policy's score drop from the dense model as ``features @ coef`` (at least 0).
``coef`` is ridge regression on the completed trials, with every single-choice coefficient at
least 0 (a trial scoring above the dense model is validation noise, not a gain to chase), pulled
towards the *prior* of the sensitivity profile (each probe's measured drop shared among the
features it set, in proportion to their values) with weight :data:`PRIOR_WEIGHT` per coefficient,
and only lightly (:data:`GLOBAL_WEIGHT`) towards zero for the global terms, which may take either
sign, so the completed trials teach it the interactions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwsearch.policy import Policy
from hwsearch.space import SearchSpace

PRIOR_WEIGHT = 1.0  # pull of a per-choice coefficient towards its profiled value (as much as one trial's squared error)
GLOBAL_WEIGHT = 0.01  # pull of the global (interaction) coefficients towards 0
DROP_CAP = 0.5  # drops beyond this are clipped: a collapsed model says little about near-dense ones


@dataclass(frozen=True)
class Features:
    """The feature layout of one search space (see the module docstring)."""

    groups: tuple[str, ...]
    kmin: float
    choices: tuple[tuple[str, str], ...]  # (layer, precision) pairs other than fp32 that the space offers
    precisions: tuple[str, ...]  # precisions other than fp32 with at least one layer
    quant: tuple[tuple[str, Any], ...]  # (setting, value) pairs other than each dimension's first

    @classmethod
    def of(cls, space: SearchSpace) -> Features:
        choices = tuple((layer, p) for layer in space.layers for p in space.choices(layer) if p != "fp32")
        precisions = tuple(dict.fromkeys(p for _, p in choices))
        quant = tuple((key, v) for key, values in space.quant_choices for v in values[1:])
        return cls(space.group_names, min(space.keep_choices), choices, precisions, quant)

    @property
    def names(self) -> list[str]:
        return ([f"cut:{g}" for g in self.groups] + [f"cut2:{g}" for g in self.groups] + [f"{p}:{layer}" for layer, p in self.choices]
                + [f"quant:{k}={v}" for k, v in self.quant] + ["cut:mean", "cut:mean2"] + [f"{p}:share" for p in self.precisions])

    @property
    def n_local(self) -> int:
        """Features of single choices (the rest are the global terms)."""
        return 2 * len(self.groups) + len(self.choices) + len(self.quant)

    def cut(self, keep: float) -> float:
        return 0.0 if self.kmin >= 1.0 else min(1.0, max(0.0, (1.0 - keep) / (1.0 - self.kmin)))

    def vector(self, policy: Policy) -> np.ndarray:
        u = np.array([self.cut(policy.keep_for(g)) for g in self.groups], dtype=float)
        q = np.array([policy.precision_for(layer) == p for layer, p in self.choices], dtype=float)
        quant = [float(getattr(policy.quant, k) == v) for k, v in self.quant]
        mean = float(u.mean()) if len(u) else 0.0
        share = [float(q[[p == pp for _, pp in self.choices]].mean()) for p in self.precisions]
        return np.concatenate([u, u**2, q, quant, [mean, mean**2], share])

    def matrix(self, policies: Iterable[Policy]) -> np.ndarray:
        rows = [self.vector(p) for p in policies]
        return np.array(rows) if rows else np.zeros((0, len(self.names)))

    def weights(self) -> np.ndarray:
        w = np.full(len(self.names), PRIOR_WEIGHT)
        w[self.n_local:] = GLOBAL_WEIGHT
        return w


def profile_prior(features: Features, probes: Sequence[tuple[Policy, float]]) -> np.ndarray:
    """Per-choice coefficients from probes: each probe's drop (clipped at 0) shared among the
    single-choice features it set, in proportion to their values, scaled so that the prior predicts
    the probe's drop exactly (``features @ prior == drop`` for a probe alone)."""
    prior = np.zeros(len(features.names))
    for policy, drop in probes:
        local = features.vector(policy)[: features.n_local]
        total = float(local @ local)
        if total > 0:
            prior[: features.n_local] += max(0.0, min(DROP_CAP, drop)) * local / total
    return prior


@dataclass(frozen=True)
class Surrogate:
    """A fitted model: predicted score = dense score - features @ coef."""

    features: Features
    dense_score: float
    coef: np.ndarray
    trials: int  # completed trials it was fitted on

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted scores, at most the dense model's."""
        return self.dense_score - np.maximum(0.0, np.atleast_2d(x) @ self.coef)

    def predict_policy(self, policy: Policy) -> float:
        return float(self.predict(self.features.vector(policy))[0])

    def top_costs(self, n: int = 12) -> dict[str, float]:
        """The ``n`` single-choice features with the largest coefficients (the most costly choices)."""
        local = self.coef[: self.features.n_local]
        order = np.argsort(-local)[:n]
        names = self.features.names
        return {names[i]: round(float(local[i]), 5) for i in order}


def fit(features: Features, policies: Sequence[Policy], scores: Sequence[float], dense_score: float, prior: np.ndarray) -> Surrogate:
    """Ridge regression of the score drops of ``policies`` on their features, pulled towards ``prior``, every
    single-choice coefficient bounded below by 0 (see the module docstring)."""
    from scipy.optimize import lsq_linear

    x = features.matrix(policies)
    y = np.clip(dense_score - np.asarray(scores, dtype=float), -DROP_CAP, DROP_CAP)
    root = np.sqrt(features.weights())
    a = np.vstack([x, np.diag(root)])
    b = np.concatenate([y, root * prior])
    lower = np.zeros(len(features.names))
    lower[features.n_local:] = -np.inf  # the global terms may correct either way
    coef = lsq_linear(a, b, bounds=(lower, np.inf)).x
    return Surrogate(features, float(dense_score), coef, len(policies))
