"""The Optuna side of a run: storage, sampler, resume bookkeeping, the run-directory lock.

Storage is SQLite: ``runs/NAME/study.db`` opened as ``sqlite:///runs/NAME/study.db`` with study name
``NAME`` (baselines: ``runs/NAME/baselines/KIND/study.db``, study ``NAME-KIND``). The driver is the only
writer; a lock file (``runs/NAME/.lock``, ``flock``) stops a second driver on the same run directory.
Each trial's user attributes: ``policy``, ``latency_ms``, ``coverage``, ``params``, ``macs``,
``size_bytes``, ``eval_seconds``, ``worker``, and ``error`` on failure (with ``interrupted`` when
the trial did not fail by itself: the driver or its worker died, or the search stopped), plus
the flat sortable ones and the study's metric names and attributes of :mod:`hwsearch.search.labels`.

A run never evaluates a policy twice: a policy the sampler proposes again (same
:func:`policy_key`) is told PRUNED with ``duplicate_of`` (the trial that evaluated it) and is
not counted; so a run ends with exactly ``n_trials`` COMPLETE trials of ``n_trials`` different
policies. Each session reseeds the sampler with ``seed + trials so far``, so a resumed session
does not replay the proposals of the first. Enqueued trials (warm starts) that were interrupted
are enqueued again (:func:`requeue_interrupted`) until their policy completes.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hwsearch.config import ExperimentConfig
from hwsearch.errors import HwsearchError

# Keys that define what a run means: resuming with any of them changed is an error.
IDENTITY_KEYS = ("name", "task", "task_options", "model", "model_options", "baseline", "devices", "objectives", "sampler",
                 "seed", "population_size", "compress", "space")


def constraint_values(latency_ms: Mapping[str, float], budgets: Mapping[str, float]) -> dict[str, float]:
    """Latency minus budget per budgeted device, keyed ``latency_ms:<device>`` (<= 0 is feasible).

    The driver stores these with ``Trial.set_constraint`` before telling a COMPLETE trial: Optuna 5's
    replacement for the deprecated sampler ``constraints_func`` (NSGA-II's constrained domination
    and TPE's constraint model read them from the trial).
    """
    return {f"latency_ms:{dev}": float(latency_ms.get(dev, float("inf"))) - budget for dev, budget in sorted(budgets.items())}


def make_sampler(cfg: ExperimentConfig, kind: str | None = None, trials_so_far: int = 0, guide: Mapping[str, Any] | None = None):
    """The configured sampler (``kind`` overrides it: baselines use ``random``), seeded by
    ``cfg.seed + trials_so_far`` (a resumed session must not replay the first session's proposals).

    ``guided`` needs ``guide``: the keyword arguments of :class:`~hwsearch.search.guided.GuidedSampler`
    that come from the loaded model (``space``, ``predictors``, ``dense_score``, ``run_dir``)."""
    import optuna

    kind = kind or cfg.sampler
    seed = cfg.seed + trials_so_far
    if kind == "guided":
        from hwsearch.search.guided import GuidedSampler

        if guide is None:
            raise HwsearchError("Sampler 'guided' is built from the loaded model (its space and latency predictors); pass guide=... (run_search does).")
        return GuidedSampler(n_trials=cfg.n_trials, seed=seed, budgets=cfg.budgets, **guide)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=cfg.effective_population, seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    return optuna.samplers.RandomSampler(seed=seed)


def policy_key(space, policy: Mapping[str, Any]) -> str:
    """A policy's canonical form (:meth:`~hwsearch.space.SearchSpace.identity` as JSON): two policies that
    build the same model have the same key; the static-int8 recipe (``quant``, defaults filled in) is part of it."""
    from hwsearch.policy import Policy

    return json.dumps(space.identity(Policy.from_dict(policy)))


def completed_policies(study, space) -> dict[str, int]:
    """Policy key -> number of the (first) COMPLETE trial that evaluated it."""
    from optuna.trial import TrialState

    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "policy" in t.user_attrs:
            out.setdefault(policy_key(space, t.user_attrs["policy"]), t.number)
    return out


def _interrupted(trial) -> bool:
    error = str(trial.user_attrs.get("error", ""))  # runs stored before the flag existed: our own messages
    return bool(trial.user_attrs.get("interrupted")) or error.startswith(("The driver stopped", "The search stopped", "Worker died"))


def requeue_interrupted(study) -> list[dict[str, Any]]:
    """Enqueue again each enqueued trial (a warm start) that was interrupted and whose parameters
    have no COMPLETE (or PRUNED duplicate) trial and no WAITING one; return the parameters enqueued."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    key = lambda params: tuple(sorted(params.items()))  # noqa: E731
    have = {key(t.params) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    have |= {key(t.system_attrs.get("fixed_params", {})) for t in trials if t.state == TrialState.WAITING}
    out = []
    for t in trials:
        fixed = t.system_attrs.get("fixed_params")
        if t.state == TrialState.FAIL and fixed and _interrupted(t) and key(fixed) not in have:
            study.enqueue_trial(dict(fixed), user_attrs={"requeued_from": t.number})
            have.add(key(fixed))
            out.append(dict(fixed))
    return out


def storage_url(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'study.db').resolve()}"


def open_storage(run_dir: Path):
    """The Optuna storage of ``run_dir/study.db`` (SQLite, 60 s busy timeout)."""
    import optuna

    return optuna.storages.RDBStorage(storage_url(run_dir), engine_kwargs={"connect_args": {"timeout": 60}})


def open_study(cfg: ExperimentConfig, run_dir: Path, study_name: str, sampler):
    """Create or load the study in ``run_dir/study.db``."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    storage = open_storage(run_dir)
    others = [s.study_name for s in storage.get_all_studies() if s.study_name != study_name]
    if others:
        raise HwsearchError(f"Run directory {str(run_dir)!r} holds the study {others[0]!r}, but this search is named {study_name!r}; use a new output_dir for {study_name!r} (or name it {others[0]!r} to resume that run).")
    return optuna.create_study(storage=storage, sampler=sampler, study_name=study_name, directions=list(cfg.directions), load_if_exists=True)


def fail_stale_trials(study, run_dir: Path) -> list[int]:
    """Mark trials left RUNNING by a driver that died as FAIL (``error`` and ``interrupted`` set);
    return their numbers. Public Optuna APIs only: the storage's trial ids and ``study.tell``.

    (Optuna's heartbeat-based ``optuna.storages.fail_stale_trials`` does not fit: ask-and-tell
    trials record no heartbeat, and under the run lock every RUNNING trial is stale at once.)
    """
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not stale:
        return []
    storage = open_storage(run_dir)
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "error", "The driver stopped while this trial was running; its budget was re-asked on resume.")
        storage.set_trial_user_attr(trial_id, "interrupted", True)
        study.tell(t.number, state=TrialState.FAIL)
    return [t.number for t in stale]


def _identity(config: dict, key: str):
    """What of ``config[key]`` defines the experiment: a device's ``ray_resources`` (where it is measured) does not,
    and a built-in table is the same table whether saved by path (older runs) or as ``builtin:NAME``."""
    from hwsearch.config.builtin import display_name

    value = config.get(key)
    if key == "devices" and isinstance(value, dict):
        return {name: {k: (display_name(v) if k == "table" and isinstance(v, str) else v) for k, v in spec.items() if k != "ray_resources"} if isinstance(spec, dict) else spec
                for name, spec in value.items()}
    return value


def check_resume(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Save the resolved config; if the run directory holds another experiment, raise."""
    path = run_dir / "config.json"
    new = cfg.to_dict()
    if path.is_file():
        old = json.loads(path.read_text())
        changed = [k for k in IDENTITY_KEYS if _identity(old, k) != _identity(new, k)]
        if changed:
            key = changed[0]
            raise HwsearchError(f"Run directory {str(run_dir)!r} holds a search with {key}={old.get(key)!r}, but the config now says {key}={new.get(key)!r}; set output_dir to a new directory (or delete the old run) to start over.")
    cfg.save(path)


class RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock`` for the driver's lifetime (released even on SIGKILL)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.handle = None

    def __enter__(self) -> RunLock:
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise HwsearchError(f"Run directory {str(self.path.parent)!r} is in use by another `hwsearch search`; wait for it to finish or use another output_dir.") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
