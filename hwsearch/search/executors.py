"""Executors run :class:`~hwsearch.search.evaluate.Evaluator` calls: in-process or on Ray actors.

Both expose ``capacity`` (trials in flight at once), ``submit(number, policy)``, ``next_done()``
(blocks until one submitted trial finishes and returns its :class:`TrialResult`) and ``close()``.

Local Ray (``ray_address = ""``): the driver starts a private Ray instance bound to 127.0.0.1,
without the dashboard and with usage stats off, in a short private (0700) temporary directory it
owns (``/tmp/hwray-XXXX``) and removes at the end. If the driver dies (even by SIGKILL) a watcher
process ends that instance's processes and removes the dir; a start-up sweep removes what a
watcher could not (see :mod:`hwsearch.search.cleanup`). A worker process that dies fails its
trial; Ray restarts the actor (``max_restarts=-1``) and the search goes on.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from hwsearch.errors import HwsearchError, error_line
from hwsearch.runtime.remote import is_loopback, join_cluster, keep_ray_on_loopback  # noqa: F401 - is_loopback: re-exported (tests, callers)
from hwsearch.search import cleanup
from hwsearch.search.evaluate import Evaluator, TrialResult

_GUARDS: dict[str, Any] = {}  # local Ray temp dir -> its watcher process


class LocalExecutor:
    """``workers = 0``: evaluate in the driver process, one trial at a time (debugging, tests)."""

    capacity = 1

    def __init__(self, config: Mapping[str, Any], threads: int | None = None) -> None:
        self.evaluator = Evaluator(config, threads=threads)
        self.pending: deque[tuple[int, dict]] = deque()

    def submit(self, number: int, policy: dict) -> None:
        self.pending.append((number, policy))

    def next_done(self) -> TrialResult:
        number, policy = self.pending.popleft()
        return self.evaluator.evaluate(number, policy)

    def close(self) -> None:
        self.evaluator.close()


def start_local_ray(num_cpus: int) -> str:
    """Start a private loopback-only Ray instance; return its temp dir (removed by :func:`stop_ray`).

    Ray resolves a node IP of 127.0.0.1 to the host's external address (and its servers then listen
    on all interfaces) unless it believes clustering is off; turning that off keeps every Ray
    server and every connection on 127.0.0.1. The temp dir is private (Ray makes it 0777) and
    watched: if this process dies, the watcher ends the instance's processes and removes it.
    """
    import ray

    keep_ray_on_loopback()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    temp_dir = cleanup.make_private_dir("hwray-", "/tmp")  # short: Ray's unix sockets live here
    _GUARDS[temp_dir] = cleanup.start_guard(temp_dir)
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=temp_dir, log_to_driver=False, logging_level="error", configure_logging=True)
    except BaseException:
        stop_ray(temp_dir)
        raise
    os.chmod(temp_dir, 0o700)
    return temp_dir


def stop_ray(temp_dir: str | None) -> None:
    """Shut Ray down; for a local instance also end what is left of it (Ray's agents) and remove its dir."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if temp_dir:
        cleanup.reap(temp_dir)
        cleanup.stop_guard(_GUARDS.pop(temp_dir, None))


class RayExecutor:
    """``workers >= 1``: one Ray actor per worker, each keeping its Evaluator loaded between trials."""

    def __init__(self, config: Mapping[str, Any], workers: int, address: str = "") -> None:
        import ray

        self.ray = ray
        self.temp_dir = None
        if address:
            join_cluster(address)  # hwsearch.runtime.remote: a loopback address stays on loopback
        else:
            self.temp_dir = start_local_ray(workers)
        actor_cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)(Evaluator)
        self.actors = [actor_cls.remote(dict(config), 1, self.temp_dir) for _ in range(workers)]
        self.capacity = workers
        self.idle: deque[int] = deque(range(workers))
        self.running: dict[Any, tuple[int, int]] = {}  # ObjectRef -> (actor index, trial number)
        try:  # surface a worker that cannot start (bad table, bad task) before any trial is asked
            self.ray.get([a.pid.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            self.close()
            raise HwsearchError(f"The search workers could not start: {error_line(str(exc)).rstrip('.')}; fix that (workers = 0 shows the whole traceback in-process).") from None

    def submit(self, number: int, policy: dict) -> None:
        actor = self.idle.popleft()
        ref = self.actors[actor].evaluate.remote(number, policy)
        self.running[ref] = (actor, number)

    def next_done(self) -> TrialResult:
        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        actor, number = self.running.pop(ready[0])
        try:
            result = self.ray.get(ready[0])
        except self.ray.exceptions.RayError as exc:  # the worker process died: Ray restarts the actor
            result = TrialResult(number, worker=f"actor{actor}", error=f"Worker died while evaluating trial {number}: {type(exc).__name__}: {error_line(str(exc))}", interrupted=True)
            self._await_restart(actor)
        self.idle.append(actor)
        return result

    def _await_restart(self, actor: int, timeout_s: float = 300.0) -> None:
        """Block until Ray has restarted a dead actor (its __init__ reloads the baseline)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.ray.get(self.actors[actor].pid.remote(), timeout=timeout_s)
                return
            except self.ray.exceptions.ActorUnavailableError:
                time.sleep(0.5)
            except self.ray.exceptions.RayError as exc:
                raise HwsearchError(f"Search worker {actor} died and could not be restarted ({type(exc).__name__}: {error_line(str(exc))}); check memory and the worker logs, then run the same command again to resume.") from None
        raise HwsearchError(f"Search worker {actor} did not come back within {timeout_s:.0f}s after dying; run the same command again to resume.")

    def close(self) -> None:
        try:  # each Evaluator removes its scratch dir (on a cluster node nothing else would)
            self.ray.get([a.close.remote() for a in self.actors], timeout=30)
        except Exception:  # noqa: BLE001 - a dead or busy actor: the next sweep on its node removes its dir
            pass
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        stop_ray(self.temp_dir) if self.temp_dir else self.ray.shutdown()


def make_executor(config: Mapping[str, Any], workers: int, address: str = ""):
    """LocalExecutor for ``workers = 0``, else a RayExecutor with that many actors; first removes
    what dead drivers left in the temp dir (:func:`hwsearch.search.cleanup.sweep`)."""
    for root in dict.fromkeys((tempfile.gettempdir(), "/tmp")):
        cleanup.sweep(root)
    if workers == 0:
        return LocalExecutor(config)
    return RayExecutor(config, workers, address)
