"""What the built-in latency tables are (``hwsearch tables``): one record per table, read from its
``meta.json`` (device, runtime, threads, statistic, models it covers, rows) and ``validation.json``
(how well it predicted whole models on the machine that built it). Where they live and how a
``builtin:NAME`` path resolves is :mod:`hwsearch.config.builtin`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hwsearch.config.builtin import PREFIX, TABLES, table_names
from hwsearch.tables.table import model_statistic, read_meta


@dataclass(frozen=True)
class TableInfo:
    """One built-in table: provenance from meta.json, validation figures (None: not validated)."""

    name: str
    path: str
    device: str
    cpu_model: str
    runtime: str
    runtime_version: str
    provider: str
    threads: int
    statistic: str
    models: tuple[str, ...]
    rows: int | None
    date: str
    calibrated: bool
    validated_models: int | None
    within_10pct: float | None
    rmspe: float | None
    spearman: float | None
    coverage: float | None

    @property
    def ref(self) -> str:
        return PREFIX + self.name

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.ref} | asdict(self) | {"models": list(self.models)}


def _validation(table_dir: Path) -> dict[str, Any]:
    path = table_dir / "validation.json"
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _num(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def info(name: str) -> TableInfo:
    """The record of built-in table ``name`` (a damaged meta.json: a one-line error naming it)."""
    folder = TABLES / name
    meta, val = read_meta(folder), _validation(folder)
    n_val = _num(val, "n_models")
    return TableInfo(
        name=name, path=str(folder.resolve()), device=str(meta.get("device", name)), cpu_model=str(meta.get("cpu_model", "?")),
        runtime=str(meta.get("runtime", "onnxruntime")), runtime_version=str(meta.get("runtime_version", "?")),
        provider=str(meta.get("provider", "CPUExecutionProvider")), threads=int(meta.get("threads", 0)), statistic=model_statistic(meta),
        models=tuple(str(m) for m in meta.get("models") or ()), rows=meta.get("table_rows"), date=str(meta.get("date", "?"))[:10],
        calibrated=(folder / "calibration.json").is_file(), validated_models=None if n_val is None else int(n_val),
        within_10pct=_num(val, "within_10pct"), rmspe=_num(val, "rmspe"), spearman=_num(val, "spearman"), coverage=_num(val, "mean_coverage"),
    )


def all_tables() -> list[TableInfo]:
    """Every built-in table's record, by name."""
    return [info(name) for name in table_names()]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def render(tables: list[TableInfo]) -> str:
    """The plain-text listing of ``hwsearch tables``: one row per table, then what the columns mean."""
    head = ("table", "device", "runtime", "threads", "models covered", "validated", "within ±10%", "rmspe", "coverage", "built")
    rows = [(t.ref, f"{t.cpu_model}", f"{t.runtime} {t.runtime_version}", str(t.threads), ", ".join(t.models) or "-",
             "-" if t.validated_models is None else f"{t.validated_models} models", _pct(t.within_10pct), _pct(t.rmspe), _pct(t.coverage), t.date) for t in tables]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [
        "",
        "validated: random policies of the covered models timed whole on the machine that built the table; within ±10% and rmspe compare",
        "its predictions with those times, coverage is the share of their kernels the table has. Another machine runs faster or slower: a",
        "search checks (and adapts) the table here first; `hwsearch check-table builtin:NAME` does it alone.",
        "Use one in a config as table = \"builtin:NAME\", or start one with `hwsearch init NAME --table builtin:NAME`.",
    ])

