"""``export/index.json``: every exported winner of a run, ranked per device, with a recommended pick.

The index is computed from the manifests in ``runs/NAME/export/*/manifest.json`` (and the dense
reference in ``export/dense/reference.json``), so it always describes the files that are there.
Paths in it are relative to the ``export`` folder.

The recommended pick per device, among the winners that passed their checks (``ok``), on the
device's latency (measured when every such winner was re-measured on it, else predicted):

- with a ``budget_ms``: the best validation score among the winners within the budget (ties: the
  faster); when none is within it, the fastest winner, and the reason says so;
- without one: the fastest winner whose validation score is within ``tolerance`` (default 0.01,
  absolute) of the best validation score.

The choice uses the validation split, as the search did; the test score is reported, never chosen on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.export import targets
from hwsearch.export.manifest import Manifest, score_key

INDEX_VERSION = 1
TOLERANCE = 0.01


def _entry(m: Manifest) -> dict[str, Any]:
    folder = str(m.trial)
    latency = {d: {k: v.get(k) for k in ("measured_ms", "predicted_ms", "speedup_vs_dense", "speedup_basis", "budget_ms")} for d, v in m.latency.items()}
    return {"trial": m.trial, "ok": m.ok, "model": f"{folder}/{m.model['file']}", "manifest": f"{folder}/manifest.json",
            score_key("test", m.metric): m.test_score, score_key("val", m.metric): m.validation_score,
            "params": m.model["params"], "size_bytes": m.model["size_bytes"], "precision_counts": m.model["precision_counts"],
            "latency": latency, "flags": list(m.flags), "warning_count": len(m.warnings), "recovery": _recovery(m)}


def _recovery(m: Manifest) -> dict[str, Any] | None:
    """The recovery's outcome in brief (None: shipped with the search's weights)."""
    r = m.recovery
    if not r:
        return None
    return {"kept": r.get("kept"), "steps": r.get("steps"), "before": r.get("before"), "after": r.get("after")}


def read_manifests(export_dir: Path) -> tuple[list[Manifest], list[dict[str, str]]]:
    """The readable manifests under ``export_dir`` (by trial) and, for the others, why they were left out."""
    found, skipped = [], []
    for path in sorted(export_dir.glob("*/manifest.json")):
        try:
            found.append(Manifest.load(path))
        except HwsearchError as exc:
            skipped.append({"manifest": f"{path.parent.name}/manifest.json", "reason": str(exc)})
    return sorted(found, key=lambda m: m.trial), skipped


def _latency_basis(entries: Sequence[Mapping[str, Any]], device: str) -> str:
    measured = all(e["latency"].get(device, {}).get("measured_ms") is not None for e in entries)
    return "measured_ms" if measured else "predicted_ms"


def recommend(entries: Sequence[Mapping[str, Any]], device: str, budget_ms: float | None, tolerance: float, val_key: str) -> dict[str, Any] | None:
    """The recommended entry for ``device`` by the module's rule, with the reason (None: no winner passed its checks)."""
    ok = [e for e in entries if e["ok"] and e.get(val_key) is not None]
    basis = _latency_basis(ok, device)
    ok = [e for e in ok if e["latency"].get(device, {}).get(basis) is not None]
    if not ok:
        return None

    def lat(e: Mapping[str, Any]) -> float:
        return float(e["latency"][device][basis])

    if budget_ms is not None:
        within = [e for e in ok if lat(e) <= budget_ms]
        if within:
            pick = min(within, key=lambda e: (-e[val_key], lat(e), e["trial"]))
            reason = f"the best {val_key} among the {len(within)} winner(s) within budget_ms {budget_ms} ({basis})"
        else:
            pick = min(ok, key=lambda e: (lat(e), e["trial"]))
            reason = f"no exported winner meets budget_ms {budget_ms} ({basis}); the fastest is recommended"
    else:
        best = max(e[val_key] for e in ok)
        eligible = [e for e in ok if e[val_key] >= best - tolerance - 1e-12]
        pick = min(eligible, key=lambda e: (lat(e), -e[val_key], e["trial"]))
        reason = f"the fastest winner ({basis}) whose {val_key} is within {tolerance} of the best ({best:.4f})"
    return {"trial": pick["trial"], "model": pick["model"], "manifest": pick["manifest"], "latency_basis": basis, "reason": reason}


def _ranking(entries: Sequence[Mapping[str, Any]], device: str, val_key: str) -> dict[str, list[int]]:
    basis = _latency_basis(entries, device)
    timed = [e for e in entries if e["latency"].get(device, {}).get(basis) is not None]
    return {"latency_basis": basis, "by_latency": [e["trial"] for e in sorted(timed, key=lambda e: (e["latency"][device][basis], e["trial"]))],
            "by_score": [e["trial"] for e in sorted(entries, key=lambda e: (-(e.get(val_key) if e.get(val_key) is not None else -1.0), e["trial"]))]}


def _dense(export_dir: Path, metric: str) -> dict[str, Any] | None:
    """The dense reference (``export/dense/reference.json``) with its scores named like the winners'."""
    path = export_dir / "dense" / "reference.json"
    try:
        ref = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(ref, dict):
        return None
    devices = sorted(set(ref.get("measured_ms") or {}) | set(ref.get("predicted_ms") or {}))
    return {"model": ref.get("file"), **{score_key(s, metric): (ref.get("scores") or {}).get(s) for s in ("test", "val")},
            "params": ref.get("params"), "size_bytes": ref.get("size_bytes"),
            "latency": {d: {"measured_ms": (ref.get("measured_ms") or {}).get(d), "predicted_ms": (ref.get("predicted_ms") or {}).get(d)} for d in devices}}


def build_index(run_dir: str | Path, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """The index of ``run_dir/export`` (plain JSON data); raises when nothing there can be read."""
    export_dir = Path(run_dir) / "export"
    manifests, skipped = read_manifests(export_dir)
    if not manifests:
        raise HwsearchError(f"Export folder {str(export_dir)!r} holds no readable manifest.json; run `hwsearch export {run_dir}` first.")
    metric = manifests[0].metric
    val_key = score_key("val", metric)
    entries = [_entry(m) for m in manifests]
    devices = {d: v.get("budget_ms") for d, v in manifests[-1].latency.items()}
    return {"schema_version": INDEX_VERSION, "run": manifests[0].run, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "metric": metric, "score_keys": {"test": score_key("test", metric), "validation": val_key},
            "devices": {d: {"budget_ms": b} for d, b in devices.items()},
            "rule": {"tolerance": tolerance, "chosen_on": "validation score and latency (measured when every ok winner was re-measured on the device, else predicted)",
                     "with_budget": "best validation score within budget_ms (ties: faster); none within: the fastest",
                     "without_budget": "the fastest winner whose validation score is within tolerance of the best"},
            "recommended": {d: recommend(entries, d, b, tolerance, val_key) for d, b in devices.items()},
            "ranking": {d: _ranking(entries, d, val_key) for d in devices},
            "dense": _dense(export_dir, metric), "targets": _targets(export_dir, entries), "winners": entries, "skipped": skipped}


def _targets(export_dir: Path, entries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The speedup targets' picks (``export/targets.json``) with each pick's speedup in the final measurement."""
    record = targets.load(export_dir)
    if not record:
        return None
    device = record.get("device")
    final = {e["trial"]: e["latency"].get(device, {}).get("speedup_vs_dense") for e in entries}
    return targets.summary(record, final)


def winner_notes(index: Mapping[str, Any]) -> dict[int, str]:
    """One Markdown note per exported winner (for optuna-dashboard): scores, latency per device, files, recommendation."""
    tk, vk = index["score_keys"]["test"], index["score_keys"]["validation"]
    notes = {}
    for e in index["winners"]:
        lines = [f"**Exported winner** ({'ok' if e['ok'] else 'FAILED its checks'}): `export/{e['model']}`, manifest `export/{e['manifest']}`",
                 f"- {tk} {_cell(e.get(tk), '.4f')}, {vk} {_cell(e.get(vk), '.4f')}; params {e['params']}, {e['size_bytes']} B"]
        for dev, lat in e["latency"].items():
            speed = "" if lat.get("speedup_vs_dense") is None else f", {lat['speedup_vs_dense']:.2f}x vs dense fp32 ({lat.get('speedup_basis')})"
            rec = (index.get("recommended") or {}).get(dev)
            pick = " **recommended for this device**" if rec and rec["trial"] == e["trial"] else ""
            lines.append(f"- {dev}: measured {_cell(lat.get('measured_ms'), '.4f')} ms, predicted {_cell(lat.get('predicted_ms'), '.4f')} ms{speed}{pick}")
        notes[int(e["trial"])] = "\n".join(lines)
    return notes


def write_index(run_dir: str | Path, tolerance: float = TOLERANCE) -> Path:
    """Build the index and write it to ``run_dir/export/index.json``."""
    path = Path(run_dir) / "export" / "index.json"
    path.write_text(json.dumps(build_index(run_dir, tolerance), indent=2) + "\n")
    return path


def load_index(run_dir: str | Path) -> dict[str, Any] | None:
    """``run_dir/export/index.json`` as written by :func:`write_index` (None when the run has no index yet)."""
    path = Path(run_dir) / "export" / "index.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HwsearchError(f"Export index {str(path)!r} is not valid JSON ({exc.msg}); run `hwsearch export {run_dir}` again to rewrite it.") from None


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _dense_line(dense: Mapping[str, Any], tk: str, vk: str) -> str:
    lat = ", ".join(f"{d} {_cell(v.get('measured_ms'), '.4f')} ms measured" for d, v in (dense.get("latency") or {}).items())
    return (f"dense fp32 ({dense.get('model')}): {tk} {_cell(dense.get(tk), '.4f')}, {vk} {_cell(dense.get(vk), '.4f')}, "
            f"params {dense.get('params')}, {dense.get('size_bytes')} B; {lat}")


def format_index(index: Mapping[str, Any]) -> list[str]:
    """The index as a table per device (fastest first; ``*`` marks the recommended pick), for the terminal."""
    tk, vk = index["score_keys"]["test"], index["score_keys"]["validation"]
    by_trial = {e["trial"]: e for e in index["winners"]}
    lines = [f"run {index['run']}: {len(by_trial)} exported winner(s), ranked per device ({index['metric']}; paths relative to export/)"]
    if index.get("dense"):
        lines.append(_dense_line(index["dense"], tk, vk))
    header = f"  {'':1} {'trial':>5} {tk:>14} {vk:>20} {'measured_ms':>11} {'predicted_ms':>12} {'speedup':>7} {'params':>8} {'size_bytes':>10}  checks  model"
    for dev, info in index["devices"].items():
        rec = index["recommended"].get(dev)
        budget = f" (budget {info['budget_ms']} ms)" if info.get("budget_ms") is not None else ""
        lines.append(f"device {dev}{budget}: " + (f"recommended trial {rec['trial']} -> {rec['model']}: {rec['reason']}" if rec else "no winner passed its checks, nothing recommended"))
        lines.append(header)
        ranked = index["ranking"][dev]["by_latency"]
        for trial in ranked + [t for t in by_trial if t not in ranked]:
            e, lat = by_trial[trial], by_trial[trial]["latency"].get(dev, {})
            mark = "*" if rec and rec["trial"] == trial else ""
            speed = "-" if lat.get("speedup_vs_dense") is None else f"{lat['speedup_vs_dense']:.2f}x"
            lines.append(f"  {mark:1} {trial:>5} {_cell(e.get(tk), '.4f'):>14} {_cell(e.get(vk), '.4f'):>20} {_cell(lat.get('measured_ms'), '.4f'):>11} "
                         f"{_cell(lat.get('predicted_ms'), '.4f'):>12} {speed:>7} {e['params']:>8} {e['size_bytes']:>10}  {'ok' if e['ok'] else 'FAILED':6}  {e['model']}")
    lines += _target_lines(index.get("targets"), by_trial, vk)
    lines += [f"left out {s['manifest']}: {s['reason']}" for s in index.get("skipped") or []]
    return lines


def _target_lines(section: Mapping[str, Any] | None, by_trial: Mapping[int, Mapping[str, Any]], vk: str) -> list[str]:
    if not section:
        return []
    lines = [f"speedup targets on {section['device']} (measured vs dense fp32; picked before recovery, final = this export's measurement):"]
    for p in section["picks"]:
        if p.get("trial") is None:
            lines.append(f"  {p['target']:>6}: no pick: {p['reason']}")
            continue
        e = by_trial.get(p["trial"], {})
        rec = e.get("recovery") or {}
        final = "-" if p.get("final_speedup") is None else f"{p['final_speedup']:.2f}x"
        recovered = f", {rec['kept']} after {rec['steps']} recovery steps" if rec else ""
        lines.append(f"  {p['target']:>6}: trial {p['trial']} picked at {p['speedup']:.2f}x (final {final}), {vk} {_cell(e.get(vk), '.4f')}{recovered} -> {p['model']}")
    return lines
