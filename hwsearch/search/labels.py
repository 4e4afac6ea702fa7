"""A run's study in hwsearch's terms, for optuna-dashboard and any other Optuna reader.

- **Metric names**: ``study.set_metric_names(cfg.objective_names)``, in the objectives' order
  (``accuracy`` maximised, ``latency_ms:<device>`` per device and ``size_bytes`` minimised), so
  optuna-dashboard labels the axes with them instead of "Objective 0 / Objective 1".
- **Study user attributes** (:func:`study_attrs`): ``config`` (the resolved config as JSON text),
  ``devices`` (comma-separated), ``task``, ``model``, ``sampler``, ``n_trials``, ``objectives``,
  and per device ``table:<device>`` and ``budget_ms:<device>``.
- **Flat trial attributes** (:func:`trial_attrs`) beside the dict ones the driver has always set
  (``policy``, ``latency_ms``, ``coverage``): one number per key, so optuna-dashboard can sort on
  them: ``latency_ms:<device>``, ``coverage:<device>``, ``budget_ms:<device>`` and
  ``slack_ms:<device>`` (budget minus latency, >= 0 is within budget) per budgeted device,
  ``share:<precision>`` (the share of precision layers in each of the space's precisions) and
  ``keep_mean`` (mean keep ratio over channel groups). Attributes whose value is None are not set
  (one None makes a column unsortable in optuna-dashboard).
- **Winner notes** (:func:`note_winners`): a Markdown note per exported winner, written with
  optuna-dashboard's ``save_note`` when optuna-dashboard is installed (an optional dependency).

Warm starts are the enqueued trials (:func:`warm_start_numbers`). Only public Optuna APIs are used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from hwsearch.config import ExperimentConfig


def study_attrs(cfg: ExperimentConfig) -> dict[str, Any]:
    """The study user attributes describing the run (JSON-serialisable scalars only)."""
    out: dict[str, Any] = {"config": json.dumps(cfg.to_dict(), sort_keys=True), "devices": ",".join(cfg.device_names), "task": cfg.task,
                           "model": cfg.model, "sampler": cfg.sampler, "n_trials": cfg.n_trials, "objectives": ",".join(cfg.objective_names)}
    for d in cfg.devices:
        out[f"table:{d.name}"] = d.table
        if d.budget_ms is not None:
            out[f"budget_ms:{d.name}"] = d.budget_ms
    return out


def label_study(study, cfg: ExperimentConfig) -> None:
    """Set the metric names and the study user attributes (each session: non-identity keys may change)."""
    if study.metric_names != list(cfg.objective_names):
        import warnings

        from optuna.exceptions import ExperimentalWarning

        with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use; optuna-dashboard reads it
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names(list(cfg.objective_names))
    have = study.user_attrs
    for key, value in study_attrs(cfg).items():
        if have.get(key) != value:
            study.set_user_attr(key, value)


def policy_shares(policy: Mapping[str, Any], precisions: Sequence[str]) -> dict[str, float]:
    """``share:<precision>`` for each of ``precisions`` and ``keep_mean`` of a policy dict."""
    layers = list((policy.get("precision") or {}).values())
    default = str(policy.get("default_precision", "fp32"))
    out = {f"share:{p}": (layers.count(p) / len(layers) if layers else float(p == default)) for p in precisions}
    keeps = [float(v) for v in (policy.get("keep") or {}).values()]
    out["keep_mean"] = sum(keeps) / len(keeps) if keeps else float(policy.get("default_keep", 1.0))
    return out


def trial_attrs(attrs: Mapping[str, Any], budgets: Mapping[str, float], precisions: Sequence[str]) -> dict[str, Any]:
    """The user attributes to store for a finished trial: ``attrs`` without None values, plus the flat ones."""
    out = {k: v for k, v in attrs.items() if v is not None}
    latency = attrs.get("latency_ms") or {}
    for dev, ms in sorted(latency.items()):
        out[f"latency_ms:{dev}"] = float(ms)
    for dev, cov in sorted((attrs.get("coverage") or {}).items()):
        out[f"coverage:{dev}"] = float(cov)
    for dev, budget in sorted(budgets.items()):
        out[f"budget_ms:{dev}"] = float(budget)
        if dev in latency:
            out[f"slack_ms:{dev}"] = float(budget) - float(latency[dev])
    if attrs.get("policy"):
        out |= policy_shares(attrs["policy"], precisions)
    return out


def is_warm_start(trial) -> bool:
    """Whether a FrozenTrial was enqueued (a warm start, or one asked again) rather than sampled."""
    return bool(trial.user_attrs.get("warm_start")) or "requeued_from" in trial.user_attrs or "fixed_params" in trial.system_attrs


def warm_start_numbers(study) -> set[int]:
    """Numbers of the study's enqueued trials (Optuna records ``enqueue_trial``'s parameters as the
    trial's ``fixed_params`` system attribute)."""
    return {t.number for t in study.get_trials(deepcopy=False) if is_warm_start(t)}


def note_winners(storage, study_name: str, notes: Mapping[int, str]) -> bool:
    """Attach ``notes[trial_number]`` (Markdown) to each trial as its optuna-dashboard note.

    ``storage`` is a storage URL or an Optuna storage. Returns False (and writes nothing) when
    optuna-dashboard is not installed; notes are stored by it in the study's system attributes.
    """
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return False
    import optuna

    store = optuna.storages.get_storage(storage)
    # RandomSampler: its before_trial (run when a Trial handle is made) writes nothing to the finished trial
    study = optuna.load_study(study_name=study_name, storage=store, sampler=optuna.samplers.RandomSampler())
    study_id = store.get_study_id_from_name(study_name)
    for number, body in sorted(notes.items()):
        trial_id = store.get_trial_id_from_study_id_trial_number(study_id, int(number))
        save_note(optuna.trial.Trial(study, trial_id), body)
    return True
