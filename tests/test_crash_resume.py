"""Nothing lost, nothing left behind, nothing evaluated twice: a killed driver's processes and temp
dirs, interrupted warm starts, resumed sessions and a run's name (issue 20, items 1-4)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwsearch.cli import main
from hwsearch.config import load_config
from hwsearch.search import run_search
from hwsearch.search.baselines import warm_start
from hwsearch.search.cleanup import OWNER_FILE, make_private_dir, owner_alive, session_pids, sweep
from hwsearch.search.study import open_study, policy_key
from tests.search_helpers import write_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _tiny_baseline(tiny_resnet) -> None:
    """Train (or load) the tiny resnet20 the configs name once, before any search starts."""


def _study(run_dir: Path, name: str = "exp"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}")


def _keys(study, space) -> list[str]:
    from optuna.trial import TrialState

    return [policy_key(space, t.user_attrs["policy"]) for t in study.get_trials(states=(TrialState.COMPLETE,))]


def _space(cfg):
    from hwsearch import context

    return context.from_config(context.resolve(cfg)).space


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- item 1: temp dirs are private, record their owner, and a start-up sweep removes a dead owner's ---------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sweep_removes_only_dirs_of_dead_owners_and_ends_their_processes(tmp_path: Path) -> None:
    mine = Path(make_private_dir("hwray-", str(tmp_path)))
    assert mine.stat().st_mode & 0o777 == 0o700 and json.loads((mine / OWNER_FILE).read_text())["pid"] == os.getpid()
    assert owner_alive(mine) is True
    dead = Path(make_private_dir("hwray-", str(tmp_path)))
    (dead / OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "start": 1}))
    dead_eval = Path(make_private_dir("hwsearch-eval-", str(tmp_path)))
    (dead_eval / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "start": -1}))  # our PID, another start time: a reused PID
    no_owner = tmp_path / "hwray-foreign"
    no_owner.mkdir()
    other_name = tmp_path / "other-dir"
    other_name.mkdir()
    (other_name / OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "start": 1}))
    # a process the dead driver "started": it holds a file open inside the dead dir (cwd)
    leftover = subprocess.Popen(["sleep", "300"], cwd=dead)
    bystander = subprocess.Popen(["sleep", "300"], cwd=no_owner)
    try:
        assert session_pids(dead) == [leftover.pid]
        removed = sweep(str(tmp_path))
        assert sorted(removed) == sorted([str(dead), str(dead_eval)])
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None  # a dir without our owner record is never touched, nor its processes
        assert mine.is_dir() and no_owner.is_dir() and other_name.is_dir() and not dead.exists() and not dead_eval.exists()
    finally:
        bystander.kill()
        bystander.wait()
        leftover.kill()
        leftover.wait()


@pytest.mark.ray
def test_local_ray_dir_is_private_and_nothing_is_left_after_stop() -> None:
    from hwsearch.search.executors import _GUARDS, start_local_ray, stop_ray

    temp_dir = start_local_ray(1)
    guard = _GUARDS[temp_dir]
    try:
        assert Path(temp_dir).stat().st_mode & 0o777 == 0o700 and owner_alive(Path(temp_dir)) is True
        pids = session_pids(temp_dir)
        assert len(pids) >= 3  # gcs, raylet, agents ... (their output goes into the dir)
        assert guard.poll() is None
    finally:
        stop_ray(temp_dir)
    assert not Path(temp_dir).exists() and guard.poll() == 0
    assert not [p for p in pids if _alive(p)]


# --- item 1 + 2 + 3: SIGKILLed drivers (workers = 2) ---------------------------------------------------------------------------

def _states(db: Path) -> list[tuple[int, str]]:
    if not db.is_file():
        return []
    try:
        # read-write (only SELECTs): after a SIGKILL mid-write the hot journal must be rolled back before reading, which a read-only connection refuses
        with sqlite3.connect(db, timeout=30) as con:
            return con.execute("select number, state from trials order by number").fetchall()
    except sqlite3.OperationalError:
        return []


def _session_dir(driver_pid: int) -> Path | None:
    for path in Path("/tmp").glob("hwray-*"):
        try:
            if json.loads((path / OWNER_FILE).read_text())["pid"] == driver_pid:
                return path
        except (OSError, ValueError, KeyError):
            continue
    return None


def _evaluating(ray_dir: Path | None) -> bool:
    """Whether a worker of that local Ray is evaluating a trial now."""
    for pid in session_pids(ray_dir) if ray_dir else []:
        try:
            if b"ray::Evaluator.evaluate" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _kill_once(cmd: list[str], db: Path, rng: random.Random) -> tuple[list[int], Path]:
    """Start a driver, SIGKILL it at a random point while trials run; return its session's PIDs and Ray dir."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    before = sum(s == "COMPLETE" for _, s in _states(db))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not _evaluating(_session_dir(proc.pid)):
        time.sleep(0.1)
    time.sleep(rng.uniform(0.0, 2.0))
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    ray_dir = _session_dir(proc.pid)
    assert ray_dir is not None and ray_dir.stat().st_mode & 0o777 == 0o700
    pids = session_pids(ray_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert sum(s == "COMPLETE" for _, s in _states(db)) >= before
    return pids, ray_dir


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "guided"])
def test_sigkilled_drivers_leave_nothing_behind_and_resume_completes_every_warm_start_once(tmp_path: Path, sampler: str) -> None:
    kills = int(os.environ.get("HWSEARCH_TEST_KILLS", "2"))  # the acceptance probe: HWSEARCH_TEST_KILLS=20
    n_trials = max(6, 4 * kills)  # sessions complete trials before each kill; the run must still be unfinished at the last one
    path = write_config(tmp_path, "exp", n_trials=n_trials, workers=2, warm_start=[1.0, 0.5], sampler=sampler)
    cfg = load_config(path)
    run_dir = Path(cfg.output_dir)
    db = run_dir / "study.db"
    cmd = [sys.executable, "-m", "hwsearch", "search", str(path), "--quiet"]
    rng = random.Random(20)
    for _ in range(kills):
        pids, ray_dir = _kill_once(cmd, db, rng)
        deadline = time.monotonic() + 30  # Ray workers notice their raylet is gone on their own; on a busy 2-core CI machine that took over 10 s
        while time.monotonic() < deadline and (ray_dir.exists() or any(_alive(p) for p in pids)):
            time.sleep(0.2)
        assert not [p for p in pids if _alive(p)], "processes of the killed driver still run"
        assert not ray_dir.exists()
    assert any(s == "FAIL" for _, s in _states(db))  # trials were interrupted ...
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400 + 20 * n_trials)
    assert done.returncode == 0, done.stderr[-2000:]
    study = _study(run_dir)
    space = _space(cfg)
    keys = _keys(study, space)
    assert len(keys) == n_trials and len(set(keys)) == n_trials  # exactly n_trials, no policy completed (or evaluated) twice
    warm = [space.params(policy, "warm") for policy in _uniform_policies(space, [1.0, 0.5])]
    complete_params = [t.params for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert all(p in complete_params for p in warm)  # ... and every warm start still completed
    import pandas as pd

    table = pd.read_csv(run_dir / "trials.csv")
    assert list(table.number) == [t.number for t in study.trials] and list(table.state) == [t.state.name for t in study.trials]
    assert not [p for p in Path("/tmp").glob("hwray-*") if owner_alive(p) is False]


def _uniform_policies(space, ratios):
    from hwsearch.policy import Policy

    return [Policy(default_keep=r) for r in ratios]


# --- item 2: an interrupted warm start is enqueued again ------------------------------------------------------------------------

def test_warm_start_interrupted_by_a_dead_driver_is_enqueued_again(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "exp", n_trials=3, warm_start=[0.5, 0.25], sampler="random"))
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True)
    from hwsearch.search.study import make_sampler

    study = open_study(cfg, run_dir, cfg.name, make_sampler(cfg))
    space = _space(cfg)
    warm_start(cfg)(study, space)  # what the first session enqueues ...
    running = study.ask()  # ... and the trial its driver was evaluating when it was SIGKILLed (left RUNNING)
    space.suggest(running)
    interrupted = dict(running.params)
    assert running.params == space.params(_uniform_policies(space, [0.5])[0], "warm")
    stats = run_search(cfg, prepare=warm_start(cfg), progress=False)
    assert stats.completed == 3 and stats.stale_failed == 1
    study = _study(run_dir)
    assert study.trials[0].state.name == "FAIL" and study.trials[0].user_attrs["interrupted"] is True
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert interrupted in [t.params for t in complete]  # the warm start ran after all
    assert complete[0].user_attrs.get("requeued_from") is None and any(t.user_attrs.get("requeued_from") == 0 for t in complete)


# --- item 3: no policy evaluated twice; resumed sessions do not replay the seeded sampler ---------------------------------------

def test_resumed_session_does_not_replay_the_sampler_and_never_reevaluates(tmp_path: Path) -> None:
    path = write_config(tmp_path, "exp", n_trials=2, warm_start=[], sampler="random")
    cfg = load_config(path)
    first = run_search(cfg, progress=False)
    assert first.completed == 2
    resumed = run_search(load_config(path, ["n_trials=4"]), progress=False)
    study = _study(Path(cfg.output_dir))
    keys = _keys(study, _space(cfg))
    assert resumed.completed == 4 and len(keys) == 4 and len(set(keys)) == 4
    assert resumed.session_duplicates == 0  # reseeded: the second session's proposals are new ones


def test_a_policy_proposed_again_is_answered_by_its_first_trial_not_evaluated(tmp_path: Path) -> None:
    from hwsearch.policy import Policy

    cfg = load_config(write_config(tmp_path, "exp", n_trials=3, warm_start=[], sampler="random"))

    def prepare(study, space) -> None:  # the same policy twice: the second is a duplicate
        explicit = Policy(keep={g: 0.5 for g in space.group_names}, precision={name: "fp32" for name in space.layers})
        assert policy_key(space, explicit.to_dict()) == policy_key(space, {"default_keep": 0.5000000001})  # defaults folded in, rounded
        assert policy_key(space, explicit.to_dict()) != policy_key(space, {"default_keep": 0.25})
        study.enqueue_trial(space.params(Policy(default_keep=0.5), "a"))
        study.enqueue_trial(space.params(explicit, "b"))

    stats = run_search(cfg, prepare=prepare, progress=False)
    study = _study(Path(cfg.output_dir))
    states = [t.state.name for t in study.trials]
    assert states[:2] == ["COMPLETE", "PRUNED"] and study.trials[1].user_attrs["duplicate_of"] == 0
    assert stats.completed == 3 and states.count("COMPLETE") == 3 and stats.session_duplicates == 1
    keys = _keys(study, _space(cfg))
    assert len(set(keys)) == 3
    import pandas as pd

    table = pd.read_csv(Path(cfg.output_dir) / "trials.csv")
    assert list(table.state) == states  # the results files hold the study as it is
    assert 1 not in [p["trial"] for p in json.loads((Path(cfg.output_dir) / "pareto.json").read_text())]


# --- item 4: a run's name is part of its identity ------------------------------------------------------------------------------

def test_a_different_name_on_an_existing_run_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    path = write_config(tmp_path, "exp", n_trials=1, warm_start=[])
    assert main(["search", str(path), "--quiet"]) == 0
    run_dir = Path(load_config(path).output_dir)
    files = {name: (run_dir / name).read_bytes() for name in ("trials.csv", "pareto.json", "config.json", "study.db")}
    capsys.readouterr()
    assert main(["search", str(path), "--quiet", "--set", "name=other"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'exp'" in err and "'other'" in err and "output_dir" in err
    assert {name: (run_dir / name).read_bytes() for name in files} == files  # nothing replaced, no second study
    (run_dir / "config.json").unlink()  # even without the saved config, the storage knows the run's name
    assert main(["search", str(path), "--quiet", "--set", "name=other"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'exp'" in err and "'other'" in err
    import optuna

    assert optuna.get_all_study_names(f"sqlite:///{run_dir / 'study.db'}") == ["exp"]
