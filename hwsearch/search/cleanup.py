"""What a driver leaves in the system temp dir, and how it goes away even when the driver is SIGKILLed.

A driver owns two kinds of private (0700) temp dirs, each recording its owner in ``owner.json``
(``pid`` and the process start time, so a reused PID is not mistaken for the owner):

- ``hwray-*``: the local Ray instance's temp dir (sockets, logs, session files). Every process of
  that instance has its output redirected into it, which is how its processes are found;
- ``hwsearch-eval-*``: an Evaluator's scratch dir for ONNX files (inside the ``hwray-*`` dir under
  local Ray, so it goes with it).

Ray kills its own head processes when the driver dies (``PR_SET_PDEATHSIG``), but the raylet's
children (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``, workers) notice the raylet's death
and then hang on exit. So :func:`start_guard` starts a small watcher process (this file run as a
script, standard library only) that waits for the driver's pipe to close; when it closes with the
Ray dir still there (the driver died without cleaning up), it SIGKILLs that instance's processes
by PID and removes the dir. :func:`sweep` is the same clean-up at start-up, for dirs whose owner
died and whose watcher did not run (killed with it, machine rebooted): it only touches dirs named
by the patterns above, owned by this user, with an ``owner.json`` whose process is gone, and only
processes of this user that hold a file open inside such a dir.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFIXES = ("hwray-", "hwsearch-eval-")
OWNER_FILE = "owner.json"


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot; /proc/PID/stat field 22), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[19])  # a zombie is dead: it only waits to be reaped


def make_private_dir(prefix: str, parent: str | None = None) -> str:
    """A new 0700 temp dir recording this process as its owner."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(path, 0o700)
    Path(path, OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid())}))
    return path


def owner_alive(path: Path) -> bool | None:
    """True/False whether the recorded owner still runs; None if the dir records no owner (not ours)."""
    try:
        owner = json.loads((path / OWNER_FILE).read_text())
        pid, start = int(owner["pid"]), owner["start"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return _start_time(pid) == start


def session_pids(path: str | Path) -> list[int]:
    """PIDs of this user's processes (not this one) with a file open (or cwd) inside ``path``."""
    top = os.path.realpath(path)
    root = top + os.sep
    me, uid, out = os.getpid(), os.getuid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            links = [os.readlink(entry / "cwd")] + [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(link == top or link.startswith(root) for link in links):
            out.append(int(entry.name))
    return out


def reap(path: str | Path, wait_s: float = 5.0) -> list[int]:
    """SIGKILL the processes of ``path``'s session (by PID), wait until they are gone, remove ``path``."""
    killed = session_pids(path)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(_start_time(p) is not None for p in killed):
        time.sleep(0.05)
    shutil.rmtree(path, ignore_errors=True)
    return killed


def sweep(temp_root: str | None = None) -> list[str]:
    """Remove what dead drivers and evaluators left in ``temp_root`` (default: the system temp dir).

    Only dirs named ``hwray-*`` / ``hwsearch-eval-*``, owned by this user, whose ``owner.json``
    names a process that is gone; their processes are ended first. Returns the dirs removed.
    """
    root = Path(temp_root or tempfile.gettempdir())
    removed = []
    try:
        entries = [p for p in root.iterdir() if p.name.startswith(PREFIXES)]
    except OSError:
        return removed
    for path in entries:
        try:
            if not path.is_dir() or path.is_symlink() or path.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if owner_alive(path) is False:
            reap(path)
            removed.append(str(path))
    return removed


def start_guard(path: str) -> subprocess.Popen:
    """Start the watcher of ``path`` (see the module docstring); close its stdin (or die) to fire it."""
    return subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), path], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True, cwd="/")


def stop_guard(guard: subprocess.Popen | None) -> None:
    """The driver cleaned up itself: let the watcher see EOF and exit (it finds nothing left to do)."""
    if guard is None:
        return
    try:
        guard.stdin.close()
        guard.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        guard.kill()
        guard.wait()


def _wake(*_: object) -> None:
    raise InterruptedError


def _guard_main(path: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver, which then cleans up itself
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _wake)  # asked to stop: clean up now
    try:
        sys.stdin.buffer.read()  # returns at EOF: the driver closed the pipe or died
    except (OSError, InterruptedError):
        pass
    if os.path.isdir(path):
        reap(path)


if __name__ == "__main__":
    _guard_main(sys.argv[1])
