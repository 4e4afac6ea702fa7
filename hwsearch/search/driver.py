"""The search driver: ask Optuna for trials, evaluate their policies on workers, tell the results.

As many trials are in flight as the executor has workers. A session ends when the study holds
``n_trials`` COMPLETE trials; FAIL trials (evaluation raised, worker died, driver died) do not count,
so their budget is asked again. Neither do PRUNED duplicates: a policy the sampler proposes again
is answered by the trial that evaluated it (``duplicate_of``), never evaluated twice (see
:mod:`hwsearch.search.study`). Results files are rewritten every few seconds and at the end.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwsearch import context
from hwsearch.config import ExperimentConfig
from hwsearch.errors import HwsearchError
from hwsearch.results import TrialRecord, pareto_records, record_from_trial, write_results
from hwsearch.search.evaluate import TrialResult
from hwsearch.search.executors import make_executor
from hwsearch.search.labels import label_study, trial_attrs
from hwsearch.search.rundir import StartGuard, check_tables, private_dir, run_files, run_log
from hwsearch.search.study import RunLock, check_resume, completed_policies, constraint_values, fail_stale_trials, make_sampler, open_study, policy_key, requeue_interrupted
from hwsearch.search.summary import read_dense, write_dense

WRITE_EVERY_S = 10.0
MAX_DUPLICATES_IN_A_ROW = 200  # proposals of already-evaluated policies before the space counts as used up
log = logging.getLogger("hwsearch.search")  # also written to runs/NAME/search.log while a session runs (rundir.run_log)


@dataclass(frozen=True)
class SearchStats:
    """How one driver session spent its time (seconds) and what it did."""

    run_dir: str
    completed: int
    failed: int
    pareto_size: int
    session_completed: int
    session_failed: int
    stale_failed: int
    wall_s: float
    startup_s: float
    eval_wait_s: float
    driver_s: float
    shutdown_s: float
    workers: int
    session_duplicates: int = 0
    study: str = ""
    already_complete: bool = False  # the run held n_trials completed trials when the session started: nothing was done

    @property
    def driver_share(self) -> float:
        """Share of the session's wall time spent outside evaluation (startup and shutdown included).

        ``driver_s`` alone is the ask/tell/storage/results time of the loop itself."""
        return (self.wall_s - self.eval_wait_s) / self.wall_s if self.wall_s else 0.0


@dataclass
class _Loop:
    """Mutable bookkeeping for one session (not a record: it changes as trials finish)."""

    records: dict[int, TrialRecord]
    target: int
    seen: dict[str, int] = field(default_factory=dict)  # policy key -> the COMPLETE trial that evaluated it
    in_flight: dict[int, tuple[Any, dict]] = field(default_factory=dict)
    done: int = 0
    failed: int = 0
    duplicates: int = 0
    duplicates_in_a_row: int = 0
    eval_wait: float = 0.0
    last_error: str = ""

    @property
    def completed(self) -> int:
        return sum(r.state == "COMPLETE" for r in self.records.values())


def objective_values(cfg: ExperimentConfig, result: TrialResult) -> list[float]:
    values = [float(result.accuracy)] + [float(result.latency_ms[d]) for d in cfg.device_names]
    return values + ([float(result.size_bytes)] if "size_bytes" in cfg.objectives else [])


def tell(study, cfg: ExperimentConfig, trial, policy: dict, result: TrialResult) -> TrialRecord:
    """Store the result's attributes on the trial and finish it (COMPLETE, or FAIL with the error)."""
    from optuna.trial import TrialState

    attrs = {"policy": policy, "latency_ms": dict(result.latency_ms), "coverage": dict(result.coverage), "params": result.params,
             "macs": result.macs, "size_bytes": result.size_bytes, "eval_seconds": round(result.eval_seconds, 3), "worker": result.worker}
    if result.error is None and any(d not in result.latency_ms for d in cfg.device_names):
        result = TrialResult(result.number, error=f"No latency prediction for devices {sorted(set(cfg.device_names) - set(result.latency_ms))}.")
    if result.error is not None:
        attrs["error"] = result.error
    if result.interrupted:
        attrs["interrupted"] = True
    for key, value in trial_attrs(attrs, cfg.budgets, cfg.space.precisions).items():  # + flat sortable ones (search/labels.py)
        trial.set_user_attr(key, value)
    if result.error is None:
        for key, value in constraint_values(result.latency_ms, cfg.budgets).items():
            trial.set_constraint(key, value)
        frozen = study.tell(trial, objective_values(cfg, result))
    else:
        frozen = study.tell(trial, state=TrialState.FAIL)
    return record_from_trial(frozen, cfg.budgets)


def _fill(study, space, executor, loop: _Loop) -> None:
    while len(loop.in_flight) < executor.capacity and loop.completed + len(loop.in_flight) < loop.target:
        trial = study.ask()
        # An enqueued trial (warm start) fixes every parameter, so Optuna never calls the sampler's
        # sample_relative for it, and NSGA-II would leave it out of its generations: no warm start
        # could ever be a parent. Asking for the relative parameters registers it (cached; cheap).
        trial.relative_params  # noqa: B018
        policy = space.suggest(trial).to_dict()
        note = getattr(study.sampler, "note", None)  # the guided sampler's word on this trial (profile probe or proposal)
        if callable(note) and (said := note(trial.number)):
            trial.set_user_attr("guided", said)
        key = policy_key(space, policy)
        earlier = loop.seen.get(key, next((n for n, (_, p) in loop.in_flight.items() if policy_key(space, p) == key), None))
        if earlier is not None:
            _tell_duplicate(study, trial, policy, earlier, loop)
            continue
        loop.duplicates_in_a_row = 0
        executor.submit(trial.number, policy)
        loop.in_flight[trial.number] = (trial, policy)


def _tell_duplicate(study, trial, policy: dict, earlier: int, loop: _Loop) -> None:
    """A policy already evaluated (or being evaluated) by trial ``earlier``: PRUNED, not evaluated again."""
    from optuna.trial import TrialState

    trial.set_user_attr("policy", policy)
    trial.set_user_attr("duplicate_of", earlier)
    record = record_from_trial(study.tell(trial, state=TrialState.PRUNED), {})
    loop.records[record.number] = record
    loop.duplicates += 1
    loop.duplicates_in_a_row += 1
    if loop.duplicates_in_a_row >= MAX_DUPLICATES_IN_A_ROW:
        raise HwsearchError(f"The sampler proposed {loop.duplicates_in_a_row} already-evaluated policies in a row after {len(loop.seen)} different ones: "
                            f"the space has (almost) no new policy left for n_trials={loop.target}; lower n_trials or widen the space (space.keep_choices, space.precisions).")


def _abandon(study, loop: _Loop, why: str) -> None:
    from optuna.trial import TrialState

    for trial, _ in loop.in_flight.values():
        trial.set_user_attr("error", why)
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
    loop.in_flight.clear()


def run_loop(study, cfg: ExperimentConfig, space, executor, loop: _Loop, run_dir: Path, bar=None,
             on_failed: Callable[[Any], None] | None = None) -> None:
    """Keep ``executor.capacity`` trials in flight until ``loop.target`` trials are COMPLETE."""
    last_write = time.monotonic()
    try:
        while True:
            _fill(study, space, executor, loop)
            if not loop.in_flight:
                return
            t0 = time.perf_counter()
            result = executor.next_done()
            loop.eval_wait += time.perf_counter() - t0
            trial, policy = loop.in_flight.pop(result.number)
            record = tell(study, cfg, trial, policy, result)
            loop.records[record.number] = record
            loop.done += 1
            _log_trial(record, loop)
            if record.state == "COMPLETE":
                loop.seen.setdefault(policy_key(space, policy), record.number)
            else:
                loop.failed += 1
                loop.last_error = record.error
                if on_failed:
                    on_failed(trial)
                if result.interrupted:  # a warm start its worker died under is asked again
                    requeue_interrupted(study)
                if loop.failed >= cfg.failure_limit:
                    raise HwsearchError(f"{loop.failed} trials failed in this session (max_failures={cfg.failure_limit}); the last error was: {record.error.splitlines()[0] if record.error else '?'} Fix the cause or raise max_failures.")
            if bar is not None:
                bar.n = loop.completed
                extra = study.sampler.status() if callable(getattr(study.sampler, "status", None)) else {}  # guided: its profile's progress
                bar.set_postfix(failed=sum(r.state == "FAIL" for r in loop.records.values()),
                                pareto=len(pareto_records(list(loop.records.values()), cfg.objective_names)), refresh=False, **extra)
                bar.refresh()
            if time.monotonic() - last_write > WRITE_EVERY_S:
                write_results(run_dir, sorted(loop.records.values(), key=lambda r: r.number), cfg.objective_names)
                last_write = time.monotonic()
    finally:
        _abandon(study, loop, "The search stopped while this trial was running; its budget is re-asked on resume.")


def _log_trial(record: TrialRecord, loop: _Loop) -> None:
    if record.state == "COMPLETE":
        latency = ", ".join(f"{d} {ms:.4g} ms" for d, ms in record.latency_ms.items())
        log.info("trial %d complete: score %.4f, %s, %s params (%d of %d complete)", record.number, record.accuracy, latency, record.params, loop.completed, loop.target)
    else:
        log.error("trial %d failed (%d of %d complete): %s", record.number, loop.completed, loop.target, record.error)


def _progress(cfg: ExperimentConfig, loop: _Loop, label: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=loop.target, initial=loop.completed, desc=label, unit="trial", file=sys.stderr, dynamic_ncols=True, disable=not enabled)


def run_search(cfg: ExperimentConfig, run_dir: str | Path | None = None, *, study_name: str | None = None, sampler: Any = None,
               space_override: Callable[[Any], Any] | None = None, prepare: Callable[[Any, Any], None] | None = None,
               on_failed: Callable[[Any, Any], None] | None = None, progress: bool = True) -> SearchStats:
    """Run (or resume) the search described by ``cfg`` in ``run_dir`` (default ``cfg.output_dir``).

    A run that already holds ``cfg.n_trials`` completed trials is not touched beyond its result files:
    nothing is trained, loaded or evaluated, and the stats say ``already_complete``."""
    start = time.perf_counter()
    cfg = context.resolve(cfg)
    run_dir = Path(run_dir or cfg.output_dir)
    check_tables(cfg)  # a damaged table is a one-line error before the run directory is touched
    with run_files(run_dir), RunLock(private_dir(run_dir)), StartGuard(run_dir) as guard, run_log(run_dir):  # 0700/0600; a failed start pins nothing
        study = open_study(cfg, run_dir, study_name or cfg.name, None)  # first: a storage holding another run's study is an error
        check_resume(cfg, run_dir)
        # reseeded per session: a resumed session does not replay the first session's proposals
        guided = (sampler or cfg.sampler) == "guided"  # built below, once the model and its tables are loaded
        study.sampler = make_sampler(cfg, "random" if guided else sampler, len(study.trials)) if sampler is None or isinstance(sampler, str) else sampler
        label_study(study, cfg)  # metric names, config and devices for optuna-dashboard
        stale = fail_stale_trials(study, run_dir)
        if _complete(study) >= cfg.n_trials:
            guard.started = True
            return _already_complete(cfg, run_dir, study, stale, start)
        requeue_interrupted(study)  # warm starts a dead driver or worker interrupted
        if prepare:  # warm starts checked against the model's space (untrained weights) before the baseline is trained
            prepare(study, _space(context.from_config(cfg, random_init=True), space_override))
        ctx = context.from_config(cfg, verbose=True)  # trains the baseline once, before any worker
        space = _space(ctx, space_override)
        loop = _Loop({t.number: record_from_trial(t, cfg.budgets) for t in study.get_trials(deepcopy=False)}, cfg.n_trials, completed_policies(study, space))
        # tables checked (and adapted) on this machine before any worker predicts; then the dense model's reference
        adapted = {d.name: context.ensure_adaptation(d, progress, cfg.ray_address) for d in cfg.devices}
        (run_dir / "adaptation.json").write_text(json.dumps(adapted, indent=1, sort_keys=True) + "\n")
        dense = write_dense(run_dir, ctx)
        if guided:
            study.sampler = make_sampler(cfg, "guided", len(study.trials), {"space": space, "predictors": ctx.predictors(), "dense_score": dense["score"], "run_dir": run_dir})
        executor = make_executor(cfg.to_dict(), cfg.workers, cfg.ray_address)
        guard.started = True
        startup = time.perf_counter() - start
        bar = _progress(cfg, loop, cfg.name, progress)
        try:
            run_loop(study, cfg, space, executor, loop, run_dir, bar, (lambda t: on_failed(study, t)) if on_failed else None)
        finally:
            bar.close()
            t_close = time.perf_counter()
            executor.close()
            shutdown = time.perf_counter() - t_close
            records = sorted(loop.records.values(), key=lambda r: r.number)
            front = write_results(run_dir, records, cfg.objective_names)
        wall = time.perf_counter() - start
        stats = SearchStats(str(run_dir), loop.completed, sum(r.state == "FAIL" for r in records), len(front), loop.done - loop.failed,
                            loop.failed, len(stale), wall, startup, loop.eval_wait, wall - startup - shutdown - loop.eval_wait, shutdown, cfg.workers,
                            loop.duplicates, study.study_name)
        return _record_session(run_dir, stats)


def _space(ctx, override: Callable[[Any], Any] | None):
    return override(ctx.space) if override else ctx.space


def _complete(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _already_complete(cfg: ExperimentConfig, run_dir: Path, study, stale: list[int], start: float) -> SearchStats:
    """A finished run: its result files rewritten from the study; nothing trained or evaluated (a run
    from before ``dense.json`` existed gets it from the cached baseline)."""
    records = [record_from_trial(t, cfg.budgets) for t in study.get_trials(deepcopy=False)]
    front = write_results(run_dir, records, cfg.objective_names)
    if read_dense(run_dir) is None:
        write_dense(run_dir, context.from_config(cfg))
    wall = time.perf_counter() - start
    log.info("already complete (%d trials); nothing to do", _complete(study))
    stats = SearchStats(str(run_dir), _complete(study), sum(r.state == "FAIL" for r in records), len(front), 0, 0, len(stale), wall, wall, 0.0, 0.0, 0.0,
                        cfg.workers, 0, study.study_name, already_complete=True)
    return _record_session(run_dir, stats)


def _record_session(run_dir: Path, stats: SearchStats) -> SearchStats:
    """The session's timings appended to ``run_dir/sessions.jsonl`` (and the log)."""
    record = asdict(stats) | {"driver_share": stats.driver_share, "finished_at": time.time()}
    with open(run_dir / "sessions.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    log.info("session finished: %s", json.dumps(record))
    return stats
