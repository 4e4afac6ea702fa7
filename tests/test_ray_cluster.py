"""A search on a real Ray cluster started apart from the driver: two nodes on 127.0.0.1 in their own
process (tests/ray_cluster_proc.py), joined through ``ray_address`` with nothing set by the user."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from hwsearch.config import load_config
from hwsearch.search import run_search
from hwsearch.search.executors import is_loopback
from tests.ray_cluster import loopback_cluster
from tests.search_helpers import write_config
from tests.test_ray_loopback import _is_loopback, _listening

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _tiny_baseline(tiny_resnet) -> None:
    """Train (or load) the tiny resnet20 before the search (the workers load it from the cache)."""


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _under(pid: int, ancestor: int) -> bool:
    try:
        while pid > 1:
            if pid == ancestor:
                return True
            pid = _parent(pid)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _evaluators(ancestor: int, evaluating: bool = False) -> dict[int, int]:
    """Ray worker processes hosting an Evaluator under ``ancestor``: PID -> their raylet's PID."""
    needle = b"ray::Evaluator.evaluate" if evaluating else b"ray::Evaluator"
    out = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "cmdline").read_bytes() and _under(int(entry.name), ancestor):
                out[int(entry.name)] = _parent(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def test_loopback_addresses_are_recognised() -> None:
    assert is_loopback("127.0.0.1:6379") and is_loopback("localhost:1") and is_loopback("ray://127.0.0.1:10001") and is_loopback("[::1]:6379")
    assert not is_loopback("10.0.0.5:6379") and not is_loopback("head.example:6379")


@pytest.mark.ray
@pytest.mark.slow
def test_search_on_a_two_node_loopback_cluster_survives_losing_a_node(tmp_path: Path) -> None:
    info_path = tmp_path / "cluster.json"
    before = _listening()
    with loopback_cluster(tmp_path) as (cluster, info):
        cfg = load_config(write_config(tmp_path, "clu", n_trials=5, workers=2, ray_address=info["address"], warm_start=[], sampler="random",
                                       compress={"finetune_steps": 30, "bn_recalib_batches": 1, "calib_samples": 32}))
        seen: dict[int, int] = {}
        lost: list[int] = []

        def watch() -> None:  # record where trials run; once a trial completed, lose the second node while it evaluates one
            end = time.monotonic() + 400
            while time.monotonic() < end and not (lost and len(seen) >= 3):
                seen.update(_evaluators(cluster.pid))
                victims = [p for p, raylet in _evaluators(cluster.pid, evaluating=True).items() if raylet == info["raylets"]["second"]]
                if victims and not lost and _completed(Path(cfg.output_dir)) >= 1:
                    lost.extend(victims)
                    cluster.stdin.write("lose-second\n")
                    cluster.stdin.flush()
                time.sleep(0.05)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        stats = run_search(cfg, progress=False)
        thread.join(timeout=5)
        assert lost, "no trial was seen evaluating on the second node"
        import optuna

        study = optuna.load_study(study_name="clu", storage=f"sqlite:///{Path(cfg.output_dir) / 'study.db'}")
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        failed = [t for t in study.trials if t.state.name == "FAIL"]
        assert stats.completed == 5 and len(complete) == 5
        assert failed and all(t.user_attrs["error"].startswith("Worker died") for t in failed)
        # only trials that were on the lost node failed: at most one per actor seen evaluating there (an actor can finish
        # its trial between the /proc read that named it and the node's end, so fewer may fail, never more)
        assert 1 <= len(failed) <= len(lost)
        workers = {int(t.user_attrs["worker"]) for t in complete}
        raylets = set(info["raylets"].values()) | set(json.loads(info_path.read_text())["raylets"].values())
        assert workers <= set(seen) and set(seen.values()) <= raylets and len({seen[w] for w in workers}) >= 2  # in the cluster's workers, on its nodes
        # the driver is gone from the cluster: its actors are ended, the cluster itself runs on
        deadline = time.monotonic() + 30
        while _evaluators(cluster.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _evaluators(cluster.pid)
        assert cluster.poll() is None
        info = json.loads(info_path.read_text())
        assert all(Path(f"/proc/{pid}").exists() for pid in info["raylets"].values()) and "second" not in info["raylets"]
        new = _listening() - before
        assert new and [a for a in new if not _is_loopback(a[0])] == []  # nothing of the cluster or the driver beyond loopback


def _completed(run_dir: Path) -> int:
    import sqlite3

    db = run_dir / "study.db"
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
