"""What the dashboard says about the run itself: dates, sessions, config, table versions, warm starts.

Dates and warm starts come from the run's Optuna study (``study.db``): the first trial's start,
the last trial's completion, and the enqueued trials (:func:`hwsearch.search.labels.warm_start_numbers`);
a study.db that cannot be read leaves them empty (the rest of the page comes from the trials table).
Table versions come from each device table's ``meta.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_KEYS = ("task", "model", "objectives", "sampler", "n_trials", "seed", "population_size", "workers", "warm_start")
TABLE_FIELDS = ("device", "date", "cpu_model", "runtime", "runtime_version", "threads", "table_rows")


@dataclass(frozen=True)
class TableInfo:
    """One device's latency table: where it is and which version (``sha256`` is table.csv's, shortened)."""

    device: str
    path: str
    fields: Mapping[str, Any]
    sha256: str
    statistic: str
    adaptation: str


@dataclass(frozen=True)
class RunInfo:
    name: str
    started: str  # ISO 8601, UTC, seconds ("" when the study has no dated trial)
    finished: str
    sessions: int
    config: Mapping[str, Any]  # the saved config.json
    summary: tuple[tuple[str, str], ...]  # the config keys shown first, as text
    tables: tuple[TableInfo, ...]
    warm_starts: tuple[int, ...]


def study_facts(run_dir: Path) -> tuple[str, str, tuple[int, ...]]:
    """(first start, last completion, warm-start trial numbers) of the run's study; empty when there is none."""
    db = run_dir / "study.db"
    if not db.is_file():
        return "", "", ()
    import optuna

    from hwsearch.search.labels import warm_start_numbers
    from hwsearch.search.study import storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=None, storage=storage_url(run_dir))
    except Exception:  # noqa: BLE001 - an unreadable study.db costs the page its dates and warm-start marks, not the page
        return "", "", ()
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    iso = lambda d: d.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if d else ""  # noqa: E731
    return iso(min(starts, default=None)), iso(max(ends, default=None)), tuple(sorted(warm_start_numbers(study)))


def table_info(device: str, spec: Mapping[str, Any], adaptations: Mapping[str, Any]) -> TableInfo:
    """The version figures of one device's table (what its meta.json records)."""
    from hwsearch.config.builtin import display_name, resolve_table
    from hwsearch.errors import HwsearchError
    from hwsearch.tables.table import read_meta

    path = str(spec.get("table", ""))
    try:
        folder = resolve_table(path)  # config.json names a built-in table builtin:NAME
        path, meta = display_name(folder), read_meta(folder)
    except (OSError, HwsearchError):
        meta = {}
    measurement = meta.get("measurement") or {}
    adapted = adaptations.get(device) or {}
    adaptation = f"{adapted.get('adaptation')} ({adapted.get('created', '')})" if adapted.get("adaptation") else "none"
    return TableInfo(device, path, {k: meta[k] for k in TABLE_FIELDS if k in meta}, str(meta.get("table_sha256", ""))[:12],
                     str(measurement.get("statistic", "")), adaptation)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def config_summary(cfg: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    rows = [(k, _text(cfg[k])) for k in CONFIG_KEYS if k in cfg]
    for name, spec in (cfg.get("devices") or {}).items():
        budget = (spec or {}).get("budget_ms")
        rows.append((f"devices.{name}", f"budget {budget} ms" if budget is not None else "no budget"))
    space = cfg.get("space") or {}
    rows += [(f"space.{k}", _text(v)) for k, v in space.items()]
    rows += [(f"compress.{k}", _text(v)) for k, v in (cfg.get("compress") or {}).items()]
    return tuple(rows)


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_info(run_dir: Path, cfg: Mapping[str, Any]) -> RunInfo:
    started, finished, warm = study_facts(run_dir)
    sessions = (run_dir / "sessions.jsonl").read_text().count("\n") if (run_dir / "sessions.jsonl").is_file() else 0
    adaptations = _json_file(run_dir / "adaptation.json") or {}
    tables = tuple(table_info(d, spec or {}, adaptations) for d, spec in (cfg.get("devices") or {}).items())
    return RunInfo(str(cfg.get("name") or run_dir.name), started, finished, sessions, dict(cfg), config_summary(cfg), tables, warm)
