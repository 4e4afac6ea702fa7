"""The search under failure: a Ray worker killed mid-trial, and the driver killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hwsearch.config import load_config
from hwsearch.search import run_search
from tests.search_helpers import write_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _tiny_baseline(tiny_resnet) -> None:
    """Train (or load) the tiny resnet20 the configs name once, before any search starts."""


def _parent(pid: int) -> int:
    stat = (Path("/proc") / str(pid) / "stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends_from_us(pid: int) -> bool:
    me = os.getpid()
    while pid > 1:
        if pid == me:
            return True
        pid = _parent(pid)
    return False


def _evaluating_pids() -> list[int]:
    """This test's Ray worker processes running ``Evaluator.evaluate`` right now (Ray sets the
    process title); the local Ray node is started by this process, so its workers descend from it."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"ray::Evaluator.evaluate" in (entry / "cmdline").read_bytes() and _descends_from_us(int(entry.name)):
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


@pytest.mark.ray
@pytest.mark.slow
def test_worker_killed_mid_trial_fails_that_trial_and_search_completes(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "ray", n_trials=5, workers=2, compress={"finetune_steps": 30, "bn_recalib_batches": 1, "calib_samples": 32}))
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 240
        while not killed and time.monotonic() < deadline:
            pids = _evaluating_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    stats = run_search(cfg, progress=False)
    thread.join(timeout=1)
    assert killed, "no worker was seen evaluating"
    assert stats.completed == 5 and stats.session_failed >= 1
    import pandas as pd

    table = pd.read_csv(Path(cfg.output_dir) / "trials.csv")
    assert (table.state == "COMPLETE").sum() == 5
    assert table[table.state == "FAIL"].error.str.contains("Worker died").any()
    assert not list(Path("/tmp").glob(f"hwray-*/{os.getpid()}"))  # nothing of ours to leak; temp dirs are removed below
    assert not _evaluating_pids()


def _complete(db: Path) -> list[tuple[int, str]]:
    if not db.is_file():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
        try:
            return con.execute("select number, state from trials order by number").fetchall()
        except sqlite3.OperationalError:
            return []


def _params(db: Path) -> dict[int, list]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("select t.number, p.param_name, p.param_value from trials t join trial_params p on p.trial_id = t.trial_id where t.state = 'COMPLETE'").fetchall()
    out: dict[int, list] = {}
    for number, name, value in rows:
        out.setdefault(number, []).append((name, value))
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.slow
def test_driver_sigkilled_mid_run_resumes_to_exactly_n_trials(tmp_path: Path) -> None:
    path = write_config(tmp_path, "kill", n_trials=4)
    db = tmp_path / "runs" / "kill" / "study.db"
    cmd = [sys.executable, "-m", "hwsearch", "search", str(path), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while sum(s == "COMPLETE" for _, s in _complete(db)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _complete(db)
    done_before = _params(db)
    running = [n for n, s in before if s == "RUNNING"]
    assert 2 <= len(done_before) < 4
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-2000:]
    after = _complete(db)
    done_after = _params(db)
    assert sum(s == "COMPLETE" for _, s in after) == 4
    assert {n: done_after[n] for n in done_before} == done_before  # nothing completed was lost or changed
    assert len({n for n, _ in after}) == len(after)  # no duplicated trial numbers
    assert all(s == "FAIL" for n, s in after if n in running)  # in-flight trials of the dead driver failed
    import pandas as pd

    table = pd.read_csv(tmp_path / "runs" / "kill" / "trials.csv")
    assert len(table) == len(after) and (table.state == "COMPLETE").sum() == 4
    assert all("driver stopped" in e for e in table[table.number.isin(running)].error)
