"""The one timing loop: a model file's batch-1 latency under fixed ORT session settings.

After ``warmup`` runs the file is run until ``min_runs`` runs and ``min_time_s`` have passed; the
10th percentile, median and 90th percentile are kept, in microseconds. Kernels (``hwsearch
profile``), whole models (calibration, validation, export's re-measure) and ``hwsearch compress``
are all timed here. :func:`measuring` holds an exclusive lock so that measurements of different
processes on one machine never overlap.
"""

from __future__ import annotations

import contextlib
import fcntl
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwsearch.errors import HwsearchError
from hwsearch.runtime.session import SessionSettings, random_feed, session

STATISTICS = ("p10", "median")  # what a latency figure is: the 10th percentile or the median of the runs


@dataclass(frozen=True)
class MeasureSettings:
    """The timing loop's settings, and which ``statistic`` a figure reports."""

    warmup: int = 10
    min_runs: int = 40
    min_time_s: float = 0.03
    statistic: str = "p10"  # a table's column predictions sum: p10 or median of the repeated runs
    passes: int = 1  # profile: shuffled passes over the kernel list; each kernel keeps its fastest pass

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise HwsearchError(f"Timing statistic {self.statistic!r} is unknown; use one of {', '.join(STATISTICS)}.")
        if self.passes < 1:
            raise HwsearchError(f"passes={self.passes} must be 1 or more (3 keeps a VM's slow spells out of the table).")


@dataclass(frozen=True)
class Timing:
    """Repeated-run timing of one model file, in microseconds."""

    p10_us: float
    median_us: float
    p90_us: float
    runs: int

    def value(self, statistic: str) -> float:
        """The figure of ``statistic`` (``p10`` or ``median``), in microseconds."""
        return self.p10_us if statistic == "p10" else self.median_us


def time_model(path: str | Path, settings: SessionSettings, timing: MeasureSettings, feed: dict[str, np.ndarray] | None = None) -> Timing:
    """p10, median and p90 microseconds of one model file (inputs random, or ``feed``; after warm-up)."""
    sess = session(path, settings)
    feed = feed or random_feed(sess.get_inputs())
    for _ in range(timing.warmup):
        sess.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < timing.min_runs or time.perf_counter() - start < timing.min_time_s:
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    return Timing(times[int(0.1 * (len(times) - 1))], statistics.median(times), times[int(0.9 * (len(times) - 1))], len(times))


@contextlib.contextmanager
def measuring(lock_path: str | None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (if given) while timing, so that measurements of
    different processes on one machine never overlap."""
    if not lock_path:
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _empty_model():
    """The per-call overhead reference: one trivial node on a one-element tensor."""
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "kernel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("com.microsoft.nchwc", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def measure_overhead(settings: SessionSettings, timing: MeasureSettings) -> float:
    """Microseconds of one call of an empty model (``timing.statistic``): the fixed per-call cost every model pays."""
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(_empty_model(), f"{tmp}/empty.onnx")
        return min(time_model(f"{tmp}/empty.onnx", settings, MeasureSettings(timing.warmup, 200, 0.05)).value(timing.statistic) for _ in range(3))
