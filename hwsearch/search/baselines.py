"""Baseline searches in the same harness (driver, workers, budgets) as the main run.

- ``uniform``: one keep ratio everywhere, each with fp32 and with int8 everywhere; one trial per
  (ratio, precision), enqueued in order, so ``n_trials = len(keep_choices) * 2``.
- ``random``: Optuna's RandomSampler over the same space with the same ``n_trials`` and seed.
- ``ort-default``: ONNX Runtime's one-line whole-model quantization defaults, scored and measured
  beside the dense model (:mod:`hwsearch.search.ort_default`; no search).

Each is stored in ``runs/NAME/baselines/KIND/`` (study ``NAME-KIND``) with the same files as a main run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hwsearch.config import ExperimentConfig, derive
from hwsearch.errors import HwsearchError
from hwsearch.policy import Policy
from hwsearch.search.driver import SearchStats, run_search

BASELINES = ("uniform", "random", "ort-default")
UNIFORM_PRECISIONS = ("fp32", "int8")
OFFERED_UNIFORM = ("int8d",)  # swept (and warm-started) too when the space offers it: ORT's dynamic int8 default is uniform int8d


def uniform_precisions(offered: tuple[str, ...] = ()) -> tuple[str, ...]:
    return UNIFORM_PRECISIONS + tuple(p for p in OFFERED_UNIFORM if p in offered)


def uniform_points(keep_choices: tuple[float, ...], offered: tuple[str, ...] = ()) -> list[tuple[float, str]]:
    """The sweep, smallest model first: (keep ratio, precision applied to every layer that can take it)."""
    return [(ratio, prec) for ratio in sorted(keep_choices) for prec in uniform_precisions(offered)]


def uniform_params(space, ratio: float, precision: str) -> dict[str, Any]:
    """Optuna parameters that make ``space.suggest`` return the uniform policy (:meth:`~hwsearch.space.SearchSpace.uniform`)."""
    return space.params(space.uniform(ratio, precision), f"uniform point (keep {ratio:g}, {precision})")


def _with_uniform_precisions(space):
    return dataclasses.replace(space, precisions=tuple(dict.fromkeys(space.precisions + UNIFORM_PRECISIONS)))


def enqueue_uniform(study, space, points: list[tuple[float, str]]) -> None:
    """Enqueue every uniform point that is neither COMPLETE nor already waiting (first run and resumes)."""
    from optuna.trial import TrialState

    have = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    have |= {tuple(sorted(t.system_attrs.get("fixed_params", {}).items())) for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    for ratio, prec in points:
        params = uniform_params(space, ratio, prec)
        if tuple(sorted(params.items())) not in have:
            study.enqueue_trial(params)


def _requeue(study, trial) -> None:
    """A failed sweep point is asked again (the sweep has no sampler to fall back on)."""
    study.enqueue_trial(dict(trial.params))


def layerwise_policies(space, entries) -> list[tuple[str, Policy]]:
    """One change at a time from the dense fp32 model: a precision entry puts each precision layer
    that can take it alone in it, a keep-ratio entry prunes each group alone to it (entries in order, layers in the
    space's order); each with a label such as ``"int8 layer1.ffn"``."""
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out += [(f"{entry} {layer}", Policy(precision={layer: entry})) for layer in space.layers if entry in space.choices(layer)]
        else:
            out += [(f"keep {entry} {g}", Policy(keep={g: float(entry)})) for g in space.group_names]
    return out


def warm_start(cfg: ExperimentConfig) -> Callable[[Any, Any], None]:
    """The main run's first trials: uniform policies at ``cfg.warm_start`` ratios, in fp32 and int8 (and int8d when offered),
    then ``cfg.warm_start_policies`` in order, then the one-at-a-time ``cfg.warm_start_layerwise`` ones."""
    def prepare(study, space) -> None:
        if len(study.trials) == 0:  # a fresh study only: a resumed run keeps what it has
            precs = [p for p in uniform_precisions(space.precisions) if p in space.precisions]
            params = [space.params(Policy.from_dict(p), f"warm_start_policies[{i}]") for i, p in enumerate(cfg.warm_start_policies)]
            params += [space.params(p, f"warm_start_layerwise ({label})") for label, p in layerwise_policies(space, cfg.warm_start_layerwise)]
            enqueue_uniform(study, space, [(r, p) for r in cfg.warm_start for p in precs])
            for p in params:
                study.enqueue_trial(p)
    return prepare


def baseline_dir(cfg: ExperimentConfig, kind: str) -> Path:
    return Path(cfg.output_dir) / "baselines" / kind


def run_baseline(cfg: ExperimentConfig, kind: str, progress: bool = True) -> SearchStats:
    """Run (or resume) the ``uniform`` or ``random`` baseline beside the main run, or measure the
    ``ort-default`` one (:mod:`hwsearch.search.ort_default`)."""
    if kind not in BASELINES:
        raise HwsearchError(f"Baseline {kind!r} is unknown; use one of {', '.join(BASELINES)}.")
    if kind == "ort-default":
        from hwsearch.search.ort_default import run_ort_default

        return run_ort_default(cfg, progress=progress)
    if kind == "random":
        bcfg = derive(cfg, sampler="random")
        return run_search(bcfg, baseline_dir(cfg, kind), study_name=f"{cfg.name}-random", sampler="random", progress=progress)
    points = uniform_points(cfg.space.keep_choices, cfg.space.precisions)
    bcfg = derive(cfg, sampler="random", n_trials=len(points))
    return run_search(bcfg, baseline_dir(cfg, kind), study_name=f"{cfg.name}-uniform", sampler="random",
                      space_override=_with_uniform_precisions, prepare=lambda study, space: enqueue_uniform(study, space, points),
                      on_failed=_requeue, progress=progress)
