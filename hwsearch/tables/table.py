"""Latency tables on disk: ``table.csv`` (one measured kernel a row) + ``meta.json`` (provenance).

table.csv columns: ``key,op,precision,layout,c,h,w,co,k,s,g,act,sum,p10_us,median_us,p90_us,runs``
(times in microseconds, per-call overhead already subtracted; schema-1 tables lack ``p10_us``).
meta.json: ``schema``, ``device``, ``cpu_model``, ``isa_flags``, ``runtime``, ``runtime_version``,
``threads``, ``nchwc_block``, ``call_overhead_us``, ``date``, ``measurement`` (warmup, min_runs,
min_time_s, statistic), ``models``. ``measurement.statistic`` names the column predictions use:
``p10`` (the 10th percentile of the repeated runs: what the kernel costs when nothing else
interrupts it, and steady when other processes share the cores) or ``median``;
``measurement.model_statistic`` (default: the same) names what whole models are timed by, i.e.
what a prediction estimates. ``table_rows`` and ``table_sha256`` (written with the table) record
table.csv's row count and content hash: :func:`load_table` refuses a table.csv that no longer
matches them (cut short, edited), and parses tables written before them strictly (every row has
every column and its numbers parse), so a damaged table never loads with kernels silently missing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.runtime.cpu import cpu_info
from hwsearch.runtime.session import runtime_version
from hwsearch.runtime.timing import STATISTICS
from hwsearch.tables.kernels import Kernel

SCHEMA = 2
SCHEMAS = (1, 2)
COLUMNS = ("key", "op", "precision", "layout", "c", "h", "w", "co", "k", "s", "g", "act", "sum", "p10_us", "median_us", "p90_us", "runs")
COLUMNS_V1 = tuple(c for c in COLUMNS if c != "p10_us")
META_KEYS = ("schema", "device", "cpu_model", "isa_flags", "runtime", "runtime_version", "threads", "nchwc_block", "call_overhead_us", "date", "measurement")
INT_COLUMNS = ("c", "h", "w", "co", "k", "s", "g", "act", "sum", "runs")
FLOAT_COLUMNS = ("p10_us", "median_us", "p90_us")
REPROFILE = "restore it or re-profile the table with `hwsearch profile` into a new folder"


def row_for(kernel: Kernel, p10_us: float, median_us: float, p90_us: float, runs: int) -> dict[str, Any]:
    return {"key": kernel.key, "op": kernel.op, "precision": kernel.precision, "layout": kernel.layout, "c": kernel.c, "h": kernel.h, "w": kernel.w,
            "co": kernel.co, "k": kernel.k, "s": kernel.s, "g": kernel.g, "act": int(bool(kernel.act)), "sum": int(kernel.sum),
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
    """table.csv's rows as text; a row with a missing or extra column (a file cut short or edited) is an error."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                return []
            if tuple(reader.fieldnames) not in (COLUMNS, COLUMNS_V1):
                raise HwsearchError(f"Table {str(path)!r} has columns {reader.fieldnames}, expected {list(COLUMNS)}; re-run `hwsearch profile` into a new folder.")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise HwsearchError(f"Latency table {str(path)!r} is not a CSV text file ({exc}); {REPROFILE}.") from None
    for i, row in enumerate(rows):
        if None in row or None in row.values():
            n = sum(v is not None for v in row.values()) + len(row.get(None) or [])
            raise HwsearchError(f"Latency table {str(path)!r} row {i + 2} has {n} of {len(reader.fieldnames)} columns; the file was cut short or edited: {REPROFILE}.")
    return rows


def _parsed(path: Path, i: int, row: dict[str, str]) -> tuple[Kernel, dict[str, float]]:
    """One row's kernel and numbers, or an error naming the row and the value that does not parse."""
    try:
        kernel = Kernel.parse(row["key"])
    except ValueError:
        raise HwsearchError(f"Latency table {str(path)!r} row {i + 2} has the malformed kernel key {row['key']!r}; {REPROFILE}.") from None
    numbers: dict[str, float] = {}
    for col in INT_COLUMNS + FLOAT_COLUMNS:
        if col not in row:
            continue
        try:
            numbers[col] = float(int(row[col])) if col in INT_COLUMNS else float(row[col])
        except ValueError:
            raise HwsearchError(f"Latency table {str(path)!r} row {i + 2} ({row['key']}) has {col}={row[col]!r}, which is not a number; {REPROFILE}.") from None
        if numbers[col] != numbers[col] or abs(numbers[col]) == float("inf"):
            raise HwsearchError(f"Latency table {str(path)!r} row {i + 2} ({row['key']}) has {col}={row[col]!r}, which is not a finite number; {REPROFILE}.")
    return kernel, numbers


def read_meta(table_dir: str | Path) -> dict[str, Any]:
    """A table's meta.json as a dict, or a one-line error when it is not a JSON object."""
    path = Path(table_dir) / "meta.json"
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = f"{exc.msg}, line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise HwsearchError(f"Latency table metadata {str(path)!r} is not valid JSON ({why}); {REPROFILE}.") from None
    if not isinstance(meta, dict):
        raise HwsearchError(f"Latency table metadata {str(path)!r} holds a JSON {type(meta).__name__}, not an object; {REPROFILE}.")
    return meta


def content_fields(csv_path: Path) -> dict[str, Any]:
    """What meta.json records about table.csv so that a cut or edited file is caught on load."""
    return {"table_rows": len(read_rows(csv_path)), "table_sha256": file_sha256(csv_path)}


def write_meta(table_dir: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``meta`` as the table's meta.json with table.csv's ``table_rows`` and ``table_sha256``
    (via a temporary file, so a kill never leaves half a file); returns what was written."""
    d = Path(table_dir)
    meta = {**meta, **content_fields(d / "table.csv")}
    tmp = d / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(d / "meta.json")
    return meta


def _check_whole(csv_path: Path, meta: dict[str, Any], n_rows: int | None = None) -> None:
    """table.csv against meta.json's ``table_sha256`` (before parsing) and ``table_rows`` (after)."""
    want_sha, want_rows = meta.get("table_sha256"), meta.get("table_rows")
    if n_rows is None and want_sha is not None and file_sha256(csv_path) != want_sha:
        raise HwsearchError(f"Latency table {str(csv_path)!r} does not match its meta.json (which records {want_rows} rows with sha256 {str(want_sha)[:12]}…): "
                            f"the file was cut short or edited; {REPROFILE}.")
    if n_rows is not None and want_rows is not None and n_rows != want_rows:
        raise HwsearchError(f"Latency table {str(csv_path)!r} has {n_rows} rows but its meta.json records {want_rows}; {REPROFILE}.")


def load_table(table_dir: str | Path, warn_provenance: bool = True) -> Table:
    """Load and check ``table_dir`` whole (row count and hash, schema, units, provenance); warn if
    measured on another CPU or runtime."""
    d = Path(table_dir)
    meta_path, csv_path = d / "meta.json", d / "table.csv"
    if not meta_path.is_file() or not csv_path.is_file():
        raise HwsearchError(f"Latency table {str(d)!r} needs table.csv and meta.json; run `hwsearch profile --device NAME` to create it.")
    meta = read_meta(d)
    _check_whole(csv_path, meta)
    missing = [k for k in META_KEYS if k not in meta]
    if missing or meta.get("schema") not in SCHEMAS:
        raise HwsearchError(f"Latency table {str(d)!r} meta.json lacks {missing or 'schema ' + str(SCHEMA)}; re-run `hwsearch profile` with this version.")
    if not isinstance(meta["call_overhead_us"], (int, float)) or not 0 <= meta["call_overhead_us"] < 1e5:
        raise HwsearchError(f"Latency table {str(d)!r} has call_overhead_us={meta['call_overhead_us']!r}; it must be microseconds (0..1e5).")
    column = statistic(meta) + "_us"
    times: dict[Kernel, float] = {}
    rows = read_rows(csv_path)
    for i, row in enumerate(rows):
        kernel, numbers = _parsed(csv_path, i, row)
        value, med = numbers.get(column, numbers["median_us"]), numbers["median_us"]
        if not 0.0 <= value < 1e6 or not value <= med * 1.001 + 1e-3 or numbers["p90_us"] < med * 0.999:
            raise HwsearchError(f"Latency table {str(csv_path)!r} row {i + 2} ({row['key']}) has {column}={value}, median_us={med}, p90_us={row['p90_us']}; "
                                "times must be microseconds with p10 <= median <= p90.")
        times[kernel] = value
    _check_whole(csv_path, meta, len(rows))
    if warn_provenance:
        check_provenance(meta, str(d))
    return Table(d, meta, times)


def check_provenance(meta: dict[str, Any], where: str, stacklevel: int = 3) -> None:
    cpu, _ = cpu_info()
    here = {"cpu_model": cpu, "runtime_version": runtime_version()}
    for key, value in here.items():
        if meta.get(key) != value:
            warnings.warn(f"Latency table {where!r} was measured with {key}={meta.get(key)!r} but this machine has {key}={value!r}; predictions may not match this machine "
                          f"(check it here: `hwsearch check-table {where} --adapt`).", stacklevel=stacklevel)


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
