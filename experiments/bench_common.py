"""Shared helpers of the benchmark scripts: the measurement lock, machine/library provenance, CSV I/O.

Every latency *measurement* in experiments/bench_*.py runs inside :func:`measure_lock`, an exclusive
``fcntl.flock`` on /tmp/hwsearch-measure.lock, so that timings taken by different processes on this
machine never overlap. Searches and builds do not take it.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_PATH = os.environ.get("HWSEARCH_MEASURE_LOCK", "/tmp/hwsearch-measure.lock")
RESULTS = Path("experiments/results")


@contextmanager
def measure_lock() -> Iterator[None]:
    """Hold the machine-wide measurement lock for the duration of the block."""
    from hwsearch.runtime.timing import measuring

    with measuring(LOCK_PATH):
        yield


def measure(path: str | Path, threads: int, runs: int = 200, min_time_s: float = 0.3, warmup: int = 30):
    """Batch-1 ORT CPU latency of an ONNX file at ``threads`` (p10, median and p90 in microseconds of
    >= ``runs`` runs after ``warmup``), under the lock.

    Returns (:class:`hwsearch.runtime.timing.Timing`, seconds spent measuring once the lock was held)."""
    from hwsearch.runtime.session import SessionSettings
    from hwsearch.runtime.timing import MeasureSettings, time_model

    with measure_lock():
        t0 = time.perf_counter()
        timing = time_model(path, SessionSettings(threads=threads), MeasureSettings(warmup=warmup, min_runs=runs, min_time_s=min_time_s))
        return timing, time.perf_counter() - t0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Provenance recorded beside every result: CPU, cores, OS, library versions, date."""
    from importlib.metadata import PackageNotFoundError, version

    libs = {}
    for name in ("torch", "onnxruntime", "onnx", "optuna", "torch-pruning", "ray", "numpy"):
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            libs[name] = "absent"
    from hwsearch.runtime.cpu import cpu_info

    flags = cpu_info()[1]
    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "int8_isa": int8_isa(flags), "os": platform.platform(), "python": platform.python_version(),
            "libraries": libs, "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def int8_isa(flags: Sequence[str]) -> str:
    """The instructions ORT's int8 kernels get here, in a few words: the CPU model string alone ("AMD EPYC") hides it."""
    from hwsearch.runtime.cpu import VNNI_FLAGS

    vnni = [f for f in VNNI_FLAGS if f in flags]
    if vnni:
        return " + ".join(vnni)
    return "avx512, no VNNI" if "avx512bw" in flags else "avx2, no VNNI" if "avx2" in flags else "no AVX2"


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
