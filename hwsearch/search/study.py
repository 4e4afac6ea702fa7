"""The Optuna side of a run: storage, sampler, resume bookkeeping, the run-directory lock.

Storage is SQLite: ``runs/NAME/study.db`` opened as ``sqlite:///runs/NAME/study.db`` with study name
``NAME`` (baselines: ``runs/NAME/baselines/KIND/study.db``, study ``NAME-KIND``). The driver is the only
writer; a lock file (``runs/NAME/.lock``, ``flock``) stops a second driver on the same run directory.
Each trial's user attributes: ``policy``, ``latency_ms``, ``coverage``, ``params``, ``macs``,
``size_bytes``, ``eval_seconds``, ``worker``, and ``error`` on failure.
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
IDENTITY_KEYS = ("task", "task_options", "model", "model_options", "baseline", "devices", "objectives", "sampler",
                 "seed", "population_size", "compress", "space")


def constraint_values(latency_ms: Mapping[str, float], budgets: Mapping[str, float]) -> dict[str, float]:
    """Latency minus budget per budgeted device, keyed ``latency_ms:<device>`` (<= 0 is feasible).

    The driver stores these with ``Trial.set_constraint`` before telling a COMPLETE trial: Optuna 5's
    replacement for the deprecated sampler ``constraints_func`` (NSGA-II's constrained domination
    and TPE's constraint model read them from the trial).
    """
    return {f"latency_ms:{dev}": float(latency_ms.get(dev, float("inf"))) - budget for dev, budget in sorted(budgets.items())}


def make_sampler(cfg: ExperimentConfig, kind: str | None = None):
    """The configured sampler (``kind`` overrides it: baselines use ``random``), seeded by ``cfg.seed``."""
    import optuna

    kind = kind or cfg.sampler
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=cfg.effective_population, seed=cfg.seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True)
    return optuna.samplers.RandomSampler(seed=cfg.seed)


def storage_url(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'study.db').resolve()}"


def open_study(cfg: ExperimentConfig, run_dir: Path, study_name: str, sampler):
    """Create or load the study in ``run_dir/study.db``."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    storage = optuna.storages.RDBStorage(storage_url(run_dir), engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.create_study(storage=storage, sampler=sampler, study_name=study_name, directions=list(cfg.directions), load_if_exists=True)


def fail_stale_trials(study) -> list[int]:
    """Mark trials left RUNNING by a driver that died as FAIL; return their numbers."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_user_attr(t._trial_id, "error", "The driver stopped while this trial was running; its budget was re-asked on resume.")
        study.tell(t.number, state=TrialState.FAIL)
    return [t.number for t in stale]


def check_resume(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Save the resolved config; if the run directory holds another experiment, raise."""
    path = run_dir / "config.json"
    new = cfg.to_dict()
    if path.is_file():
        old = json.loads(path.read_text())
        changed = [k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
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
