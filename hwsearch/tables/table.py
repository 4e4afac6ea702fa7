"""Latency tables on disk: ``table.csv`` (one measured kernel a row) + ``meta.json`` (provenance).

table.csv columns: ``key,op,precision,layout,c,h,w,co,k,s,g,act,sum,p10_us,median_us,p90_us,runs``
(times in microseconds, per-call overhead already subtracted; schema-1 tables lack ``p10_us``).
meta.json: ``schema``, ``device``, ``cpu_model``, ``isa_flags``, ``runtime``, ``runtime_version``,
``threads``, ``nchwc_block``, ``call_overhead_us``, ``date``, ``measurement`` (warmup, min_runs,
min_time_s, statistic), ``models``. ``measurement.statistic`` names the column predictions use:
``p10`` (the 10th percentile of the repeated runs: what the kernel costs when nothing else
interrupts it, and steady when other processes share the cores) or ``median``;
``measurement.model_statistic`` (default: the same) names what whole models are timed by, i.e.
what a prediction estimates.
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.runtime.session import runtime_version
from hwsearch.runtime.timing import STATISTICS
from hwsearch.tables.kernels import Kernel

SCHEMA = 2
SCHEMAS = (1, 2)
COLUMNS = ("key", "op", "precision", "layout", "c", "h", "w", "co", "k", "s", "g", "act", "sum", "p10_us", "median_us", "p90_us", "runs")
COLUMNS_V1 = tuple(c for c in COLUMNS if c != "p10_us")
META_KEYS = ("schema", "device", "cpu_model", "isa_flags", "runtime", "runtime_version", "threads", "nchwc_block", "call_overhead_us", "date", "measurement")


def cpu_info() -> tuple[str, list[str]]:
    """CPU model name and the SIMD flags that decide ORT's kernels (from /proc/cpuinfo where present)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "sse4", "fma", "amx", "vnni")))
                break
    except OSError:
        pass
    return model, flags


def row_for(kernel: Kernel, p10_us: float, median_us: float, p90_us: float, runs: int) -> dict[str, Any]:
    return {"key": kernel.key, "op": kernel.op, "precision": kernel.precision, "layout": kernel.layout, "c": kernel.c, "h": kernel.h, "w": kernel.w,
            "co": kernel.co, "k": kernel.k, "s": kernel.s, "g": kernel.g, "act": int(kernel.act), "sum": int(kernel.sum),
            "p10_us": round(p10_us, 3), "median_us": round(median_us, 3), "p90_us": round(p90_us, 3), "runs": runs}


def statistic(meta: dict[str, Any]) -> str:
    """The per-kernel statistic predictions use (``p10`` or ``median``; schema-1 tables: median)."""
    stat = (meta.get("measurement") or {}).get("statistic", "median")
    return stat if stat in STATISTICS else "median"


def model_statistic(meta: dict[str, Any]) -> str:
    """What a prediction estimates: the statistic whole models are timed by when calibrating,
    validating and re-measuring winners (``measurement.model_statistic``; tables without it: the
    kernel statistic). A table may sum kernel medians to predict a model's p10: with two threads a
    kernel's p10 is its luckiest hand-off between threads, which a whole model of fifty kernels
    never gets every time."""
    stat = (meta.get("measurement") or {}).get("model_statistic") or statistic(meta)
    return stat if stat in STATISTICS else "median"


@dataclass(frozen=True)
class Table:
    """A loaded, checked table: kernel -> microseconds (the meta's statistic), plus its provenance."""

    path: Path
    meta: dict[str, Any]
    us: dict[Kernel, float]

    @property
    def device(self) -> str:
        return str(self.meta["device"])

    @property
    def call_overhead_us(self) -> float:
        return float(self.meta["call_overhead_us"])


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return []
        if tuple(reader.fieldnames) not in (COLUMNS, COLUMNS_V1):
            raise HwsearchError(f"Table {str(path)!r} has columns {reader.fieldnames}, expected {list(COLUMNS)}; re-run `hwsearch profile` into a new folder.")
        return list(reader)


def load_table(table_dir: str | Path, warn_provenance: bool = True) -> Table:
    """Load and check ``table_dir`` (schema, units, provenance); warn if measured on another CPU or runtime."""
    d = Path(table_dir)
    meta_path, csv_path = d / "meta.json", d / "table.csv"
    if not meta_path.is_file() or not csv_path.is_file():
        raise HwsearchError(f"Latency table {str(d)!r} needs table.csv and meta.json; run `hwsearch profile --device NAME` to create it.")
    meta = json.loads(meta_path.read_text())
    missing = [k for k in META_KEYS if k not in meta]
    if missing or meta.get("schema") not in SCHEMAS:
        raise HwsearchError(f"Latency table {str(d)!r} meta.json lacks {missing or 'schema ' + str(SCHEMA)}; re-run `hwsearch profile` with this version.")
    if not isinstance(meta["call_overhead_us"], (int, float)) or not 0 <= meta["call_overhead_us"] < 1e5:
        raise HwsearchError(f"Latency table {str(d)!r} has call_overhead_us={meta['call_overhead_us']!r}; it must be microseconds (0..1e5).")
    column = statistic(meta) + "_us"
    times: dict[Kernel, float] = {}
    for i, row in enumerate(read_rows(csv_path)):
        kernel = Kernel.parse(row["key"])
        value, med = float(row.get(column) or row["median_us"]), float(row["median_us"])
        if not 0.0 <= value < 1e6 or not value <= med * 1.001 + 1e-3 or float(row["p90_us"]) < med * 0.999:
            raise HwsearchError(f"Latency table {str(csv_path)!r} row {i + 2} ({row['key']}) has {column}={value}, median_us={med}, p90_us={row['p90_us']}; "
                                "times must be microseconds with p10 <= median <= p90.")
        times[kernel] = value
    if warn_provenance:
        check_provenance(meta, str(d))
    return Table(d, meta, times)


def check_provenance(meta: dict[str, Any], where: str) -> None:
    cpu, _ = cpu_info()
    here = {"cpu_model": cpu, "runtime_version": runtime_version()}
    for key, value in here.items():
        if meta.get(key) != value:
            warnings.warn(f"Latency table {where!r} was measured with {key}={meta.get(key)!r} but this machine has {key}={value!r}; predictions may not match this machine.", stacklevel=3)


def file_sha256(path: Path) -> str | None:
    """Hex SHA-256 of a file's bytes, or None when the file does not exist."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def table_hash(table_dir: str | Path) -> str | None:
    """The content hash of a table's table.csv, which a calibration.json names to say what it was fitted on."""
    return file_sha256(Path(table_dir) / "table.csv")


def write_rows(path: Path, rows: list[dict]) -> None:
    """table.csv rewritten whole (via a temporary file, so a kill never leaves half a table)."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in COLUMNS})
    tmp.replace(path)
