"""The winners table: each Pareto winner (and each exported trial) with its figures and files.

Measured latency, test score, recovery and file paths come from the export (``export/<trial>/manifest.json``,
read through :func:`export_view`, which reads the grouped manifest and the older flat one alike);
a winner not exported yet shows its predicted latency and validation score only (``source`` says
which). Speedups are against the dense fp32 model on the same basis (measured when both were
measured, else predicted).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwsearch.dashboard.reference import DensePoint


@dataclass(frozen=True)
class ExportView:
    """What the dashboard reads of one manifest.json."""

    trial: int
    ok: bool
    predicted_ms: Mapping[str, float | None]
    measured_ms: Mapping[str, float | None]
    test_score: float | None
    val_score: float | None
    file: str  # relative to the run directory
    dense_measured_ms: Mapping[str, float | None] = field(default_factory=dict)
    dense_test_score: float | None = None
    metric: str = "accuracy"
    recovery: Mapping[str, Any] | None = None  # the manifest's recovery group (None: shipped with the search's weights)

    def recovery_text(self) -> str:
        """``recovered, 1000 steps: val 0.7770 -> 0.9510, test ...`` ("" when not recovered)."""
        r = self.recovery
        if not r:
            return ""
        before, after = r.get("before") or {}, r.get("after") or {}

        def pair(split: str) -> str:
            b, a = before.get(f"{split}_{self.metric}"), after.get(f"{split}_{self.metric}")
            return f"{split} " + ("n/a" if b is None or a is None else f"{b:.4f} → {a:.4f}")

        return f"{r.get('kept')}, {r.get('steps')} steps: {pair('validation')}, {pair('test')}"


@dataclass(frozen=True)
class WinnerRow:
    trial: int | None  # None: the dense fp32 reference row
    warm_start: bool
    val_score: float | None
    test_score: float | None
    predicted_ms: Mapping[str, float | None]
    measured_ms: Mapping[str, float | None]
    speedup: Mapping[str, float | None]
    speedup_basis: Mapping[str, str]
    params: int | None
    size_bytes: int | None
    file: str  # "" until exported
    ok: bool | None  # the export's verdict (None: not exported)
    source: str  # "export" or "predicted"
    recommended: tuple[str, ...] = ()  # devices export/index.json recommends this winner for
    recovery: str = ""  # how export's recovery changed the shipped file's scores ("" when not recovered)


def export_view(m: Mapping[str, Any], folder: str) -> ExportView:
    """Read a manifest dict: grouped (schema 2: model/scores/latency/...) or flat (schema 1)."""
    trial, ok = int(m["trial"]), bool(m.get("ok"))
    if isinstance(m.get("latency"), dict) and isinstance(m.get("scores"), dict):
        lat, scores = m["latency"], m["scores"]
        metric = scores.get("metric", "accuracy")
        file = (m.get("model") or {}).get("file") or ""
        return ExportView(trial, ok, {d: v.get("predicted_ms") for d, v in lat.items()}, {d: v.get("measured_ms") for d, v in lat.items()},
                          scores.get(f"test_{metric}"), scores.get(f"validation_{metric}"), f"{folder}/{file}" if file else "",
                          {d: v.get("dense_measured_ms") for d, v in lat.items()}, scores.get(f"dense_test_{metric}"), str(metric),
                          m.get("recovery") if isinstance(m.get("recovery"), dict) else None)
    file = m.get("onnx_path") or ""
    return ExportView(trial, ok, dict(m.get("predicted_latency_ms") or {}), dict(m.get("measured_latency_ms") or {}),
                      m.get("test_accuracy"), m.get("accuracy"), f"{folder}/{file}" if file else "")


def read_exports(run_dir: Path) -> tuple[ExportView, ...]:
    """Every readable ``export/*/manifest.json`` of the run, by trial (an unreadable one is skipped)."""
    out = []
    for path in sorted((run_dir / "export").glob("*/manifest.json")):
        try:
            out.append(export_view(json.loads(path.read_text()), f"export/{path.parent.name}"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return tuple(sorted(out, key=lambda e: e.trial))


def read_index(run_dir: Path) -> dict[str, Any]:
    """``export/index.json`` as a dict ({} when there is none or it cannot be read)."""
    try:
        index = json.loads((run_dir / "export" / "index.json").read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def recommended(index: Mapping[str, Any]) -> dict[int, tuple[str, ...]]:
    """Trial -> the devices the index recommends it for."""
    out: dict[int, list[str]] = {}
    for dev, pick in (index.get("recommended") or {}).items():
        if isinstance(pick, dict) and pick.get("trial") is not None:
            out.setdefault(int(pick["trial"]), []).append(str(dev))
    return {t: tuple(d) for t, d in out.items()}


def dense_row(index: Mapping[str, Any], devices: Sequence[str], dense: Mapping[str, DensePoint | None], metric: str) -> WinnerRow | None:
    """The dense fp32 model as a row: the export's (measured, test score, file) when the index has it, else the dense trial's predictions."""
    ref = index.get("dense") if isinstance(index.get("dense"), dict) else None
    points = {d: p for d, p in dense.items() if p is not None}
    if ref is None and not points:
        return None
    lat = (ref or {}).get("latency") or {}
    pred = {d: (lat.get(d) or {}).get("predicted_ms", points[d].latency_ms if d in points else None) for d in devices}
    meas = {d: (lat.get(d) or {}).get("measured_ms") for d in devices}
    val = (ref or {}).get(f"validation_{metric}", next((p.score for p in points.values()), None))
    file = f"export/{ref['model']}" if ref and ref.get("model") else ""
    return WinnerRow(None, False, val, (ref or {}).get(f"test_{metric}"), pred, meas, {d: 1.0 for d in devices}, {d: "" for d in devices},
                     (ref or {}).get("params"), (ref or {}).get("size_bytes"), file, True if ref else None, "export" if ref else "predicted")


def _speedup(dense: DensePoint | None, dense_measured: float | None, predicted: float | None, measured: float | None) -> tuple[float | None, str]:
    if dense_measured and measured:
        return dense_measured / measured, "measured"
    if dense is not None and predicted:
        return dense.latency_ms / predicted, "predicted"
    return None, ""


def winner_rows(pareto: Sequence[Mapping[str, Any]], exports: Sequence[ExportView], devices: Sequence[str],
                dense: Mapping[str, DensePoint | None], warm: set[int], trials: Mapping[int, Any], index: Mapping[str, Any] | None = None) -> tuple[WinnerRow, ...]:
    """One row per Pareto winner and per exported trial, by trial number (``index``: export/index.json's recommendations)."""
    picks = recommended(index or {})
    by_trial = {e.trial: e for e in exports}
    entries = {int(e["trial"]): e for e in pareto}
    rows = []
    for n in sorted(set(entries) | set(by_trial)):
        entry, exp, t = entries.get(n, {}), by_trial.get(n), trials.get(n)
        pred = {d: (exp.predicted_ms.get(d) if exp and exp.predicted_ms.get(d) is not None else (entry.get("latency_ms") or {}).get(d)) for d in devices}
        meas = {d: exp.measured_ms.get(d) if exp else None for d in devices}
        sp = {d: _speedup(dense.get(d), exp.dense_measured_ms.get(d) if exp else None, pred[d], meas[d]) for d in devices}
        val = entry.get("accuracy", t.accuracy if t is not None else None)
        rows.append(WinnerRow(n, n in warm, val if val is not None else (exp.val_score if exp else None), exp.test_score if exp else None, pred, meas,
                              {d: v[0] for d, v in sp.items()}, {d: v[1] for d, v in sp.items()}, entry.get("params", t.params if t else None),
                              entry.get("size_bytes", t.size_bytes if t else None), exp.file if exp else "", exp.ok if exp else None,
                              "export" if exp else "predicted", picks.get(n, ()), exp.recovery_text() if exp else ""))
    return tuple(rows)
