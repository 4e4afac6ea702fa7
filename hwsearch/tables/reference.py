"""A table's reference models: ``reference.json`` beside ``table.csv``.

Up to ten whole models (task, model, policy) chosen from the calibration's measured cases so that
together they exercise every class family of the table (dense fp32, mostly int8, mixed and pruned,
each model of the table), with the latency measured for each when the table was calibrated on the
machine that built it (``measured_ms``; null for a table whose calibration kept no cases) and the
table's calibrated prediction at that time (``predicted_ms``). ``hwsearch check-table`` re-times
them on another machine: how far that machine is from the builder, per class family, and the
data a few-shot adaptation (:mod:`hwsearch.tables.adaptation`) is fitted on. File I/O and the
choice of models; nothing here measures.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.tables.table import table_hash

REFERENCE_FILE = "reference.json"
SCHEMA = 1
MAX_MODELS = 10


def select(shares: Sequence[Mapping[str, float]], models: Sequence[str], n: int = MAX_MODELS) -> list[int]:
    """Indices of up to ``n`` cases that spread over the class-family shares of predicted time:
    first, per model, its most fp32 case and its least fp32 case, then the case farthest from
    those chosen (farthest-point order), so a few models still see every family."""
    fams = sorted({f for s in shares for f in s})
    vec = [[s.get(f, 0.0) for f in fams] for s in shares]
    chosen: list[int] = []
    for m in dict.fromkeys(models):
        mine = [i for i, name in enumerate(models) if name == m]
        for pick in (max(mine, key=lambda i: shares[i].get("fp32", 0.0)), min(mine, key=lambda i: shares[i].get("fp32", 0.0))):
            if pick not in chosen and len(chosen) < n:
                chosen.append(pick)

    def dist(i: int) -> float:
        return min(sum((a - b) ** 2 for a, b in zip(vec[i], vec[j])) + (0.0 if models[i] == models[j] else 0.05) for j in chosen) if chosen else 1.0

    while len(chosen) < min(n, len(shares)):
        chosen.append(max((i for i in range(len(shares)) if i not in chosen), key=dist))
    return chosen


def write(table_dir: str | Path, models: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> Path:
    """Write ``reference.json`` (atomically): ``models`` each {task, model, policy, measured_ms, predicted_ms}."""
    path = Path(table_dir) / REFERENCE_FILE
    data = {"schema": SCHEMA, "table_sha256": table_hash(table_dir), **dict(record), "models": [dict(m) for m in models]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load(table_dir: str | Path) -> dict[str, Any] | None:
    """The table's reference.json (None when it has none); a corrupt file is a one-line error."""
    path = Path(table_dir) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        models = data["models"]
        for m in models:
            if not (isinstance(m["task"], str) and isinstance(m["model"], str) and isinstance(m["policy"], Mapping)):
                raise TypeError("task, model and policy must be text, text and a mapping")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise HwsearchError(f"Reference models file {str(path)!r} is corrupt ({type(exc).__name__}: {exc}); "
                            f"re-create it with `hwsearch calibrate-table {table_dir} --refit --model ...`.") from None
    if not models:
        raise HwsearchError(f"Reference models file {str(path)!r} lists no models; re-create it with `hwsearch calibrate-table {table_dir} --refit --model ...`.")
    return data
