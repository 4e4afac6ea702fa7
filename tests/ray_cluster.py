"""A two-node Ray cluster on 127.0.0.1 for tests, in its own process (``tests/ray_cluster_proc.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


@contextmanager
def loopback_cluster(work: Path, resources: dict | None = None) -> Iterator[tuple[subprocess.Popen, dict]]:
    """Start the cluster (``resources`` on its second node), yield (its process, the info it wrote to
    ``work/cluster.json``) once it runs, as a user's driver would join it; stop it by PID afterwards."""
    info_path = work / "cluster.json"
    args = [sys.executable, str(HERE / "ray_cluster_proc.py"), str(info_path)] + ([json.dumps(resources)] if resources else [])
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not info_path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert info_path.exists(), "the cluster did not start"
        info = json.loads(info_path.read_text())
        assert info["address"].startswith("127.0.0.1:")
        # the user sets nothing: hwsearch must keep a loopback address on loopback by itself
        os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = True
        yield proc, info
    finally:
        try:
            proc.stdin.write("quit\n")
            proc.stdin.close()
            proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the cluster process's own group, started here
                proc.wait()
