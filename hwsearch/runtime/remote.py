"""Measurement routed to the device: a model file timed by :func:`~hwsearch.runtime.timing.time_model`
on the Ray node that carries a device's custom resources (a board running a Ray worker).

A device whose config names ``ray_resources`` (``{"edge-board" = 1}``) is measured by a
:class:`Router`: the driver joins the cluster at ``ray_address`` (a loopback address stays on
loopback, see :func:`join_cluster`), ships the ONNX file's bytes, the session settings and the
timing loop's settings as plain data to a Ray task that asks for those resources, and gets the
:class:`~hwsearch.runtime.timing.Timing` back as plain numbers, with where it ran (node id, PID,
host). A router waits for each measurement before it sends the next (one at a time per device);
a node that offers exactly the amount a device asks for also runs the measurements of several
drivers one after the other. Devices without resources are timed in this process (:func:`timer_for`).
Ray's joining rules live here too, so that the search's executors and every measuring command join
a cluster the same way.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hwsearch.errors import HwsearchError, error_line
from hwsearch.runtime.session import SessionSettings, available_providers
from hwsearch.runtime.timing import MeasureSettings, Timing, time_model

Timer = Callable[..., Timing]  # time_model's signature: (path, settings, timing, feed=None) -> Timing


def is_loopback(address: str) -> bool:
    """Whether a Ray address (``HOST:PORT``, ``ray://HOST:PORT``) names this machine's loopback interface."""
    import ipaddress

    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keep_ray_on_loopback() -> None:
    """Ray (2.x) resolves 127.0.0.1 to the host's external address unless it believes clustering is
    off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``); set it, also in an already imported ray."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def join_cluster(address: str) -> None:
    """``ray.init`` on the cluster at ``address`` (usage stats off; a loopback address joined on loopback)."""
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    loopback = {"_node_ip_address": "127.0.0.1"} if is_loopback(address) else {}
    if loopback:  # else Ray rewrites 127.0.0.1 to the host's address and the join times out
        keep_ray_on_loopback()
    try:
        ray.init(address=address, log_to_driver=False, logging_level="error", **loopback)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise HwsearchError(f"Cannot join the Ray cluster at ray_address={address!r} ({error_line(str(exc))}); start it with `ray start --head` or set ray_address = \"\".") from None


def _time_file(data: bytes, name: str, settings: dict[str, Any], timing: dict[str, Any], feed: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """Runs on the device's node: write the file to a private temp dir, time it, return plain data."""
    import ray

    sess = SessionSettings(**settings)
    if sess.provider not in available_providers():
        raise HwsearchError(f"Provider {sess.provider} is not available on node {socket.gethostname()} (it has {', '.join(available_providers())}).")
    with tempfile.TemporaryDirectory(prefix="hwsearch-measure-") as tmp:
        path = Path(tmp) / (Path(name).name or "model.onnx")
        path.write_bytes(data)
        result = time_model(path, sess, MeasureSettings(**timing), feed)
    return {"timing": asdict(result), "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "ppid": os.getppid(), "host": socket.gethostname()}


class Router:
    """Times model files on the Ray node that has ``resources``, one file at a time; ``placements``
    records where each ran. Joins ``address`` on first use unless Ray is already initialised, and
    :meth:`close` leaves the cluster again only if it joined it."""

    def __init__(self, device: str, resources: Mapping[str, float], address: str) -> None:
        self.device, self.resources, self.address = device, {str(k): float(v) for k, v in resources.items()}, address
        self.placements: list[dict[str, Any]] = []
        self._joined = False
        self._task = None

    def _connect(self):
        import ray

        if self._task is not None:
            return self._task
        if not ray.is_initialized():
            if not self.address:
                raise HwsearchError(f"Device {self.device!r} names ray_resources {self.resources} but no Ray cluster is given; set ray_address (or --ray-address) to the cluster whose node has them.")
            join_cluster(self.address)
            self._joined = True
        have = ray.cluster_resources()
        short = {k: v for k, v in self.resources.items() if have.get(k, 0.0) < v}
        if short:
            self.close()
            raise HwsearchError(f"Device {self.device!r}: no node of the Ray cluster at {self.address or 'this Ray instance'} has resources {short} (the cluster has "
                                f"{ {k: v for k, v in have.items() if not k.startswith('node:')} }); start the board's worker with "
                                f"`ray start --address=HEAD:PORT --resources='{{\"{next(iter(short))}\": {next(iter(short.values())):g}}}'` or fix devices.{self.device}.ray_resources.")
        self._task = ray.remote(_time_file).options(num_cpus=0, resources=self.resources, max_retries=0)
        return self._task

    def __call__(self, path: str | Path, settings: SessionSettings, timing: MeasureSettings, feed: dict[str, np.ndarray] | None = None) -> Timing:
        import ray

        task = self._connect()
        ref = task.remote(Path(path).read_bytes(), Path(path).name, settings.to_dict(), asdict(timing), feed)
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as exc:
            raise HwsearchError(f"Device {self.device!r}: timing {Path(path).name} on the Ray node with resources {self.resources} failed ({type(exc).__name__}: "
                                f"{error_line(str(exc))}); check that node (`ray status`) and its worker logs.") from None
        self.placements.append({k: out[k] for k in ("node_id", "pid", "ppid", "host")})  # ppid: the node's raylet
        return Timing(**out["timing"])

    def where(self) -> dict[str, Any]:
        """Where this router's measurements ran (plain data, for reports and manifests)."""
        nodes = sorted({p["node_id"] for p in self.placements})
        return {"routed": True, "resources": dict(self.resources), "address": self.address, "nodes": nodes, "hosts": sorted({p["host"] for p in self.placements}),
                "measurements": len(self.placements)}

    def close(self) -> None:
        import ray

        self._task = None
        if self._joined and ray.is_initialized():
            ray.shutdown()
        self._joined = False


def timer_for(device: str, resources: Mapping[str, float] | None, address: str = "") -> Timer | Router:
    """The timer of a device: a :class:`Router` when it names Ray resources, else :func:`time_model` here."""
    return Router(device, resources, address) if resources else time_model


def close_timer(timer: Any) -> None:
    """Close ``timer`` if it is a :class:`Router` (a local timer holds nothing)."""
    if isinstance(timer, Router):
        timer.close()
