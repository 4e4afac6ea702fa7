"""Speedup targets: ``hwsearch export RUN --targets 2x,3x,4x [--device NAME]``.

Per target, the most accurate front point (validation score, as the search ranked them; ties: the
faster) whose MEASURED latency on the device is at least that many times faster than the dense
fp32 model measured in the same pass on this machine. A target no point reaches gets no pick and a
sentence saying how close the front came. The picks are saved to ``export/targets.json`` (what
was chosen, on which measurement) and shown in ``export/index.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError

FILE = "targets.json"
_TARGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[xX]?\s*$")


def parse_targets(text: str) -> tuple[float, ...]:
    """``"2x,3x,4.5x"`` (the ``x`` optional) -> (2.0, 3.0, 4.5), each > 1, sorted, each once."""
    out = []
    for part in str(text).split(","):
        m = _TARGET.match(part)
        value = float(m.group(1)) if m else None
        if value is None or value <= 1.0:
            raise HwsearchError(f"Speedup target {part.strip()!r} is not allowed; give speedups over the dense fp32 model above 1, e.g. --targets 2x,3x,4x.")
        out.append(value)
    return tuple(sorted(set(out)))


def label(target: float) -> str:
    return f"{target:g}x"


@dataclass(frozen=True)
class Point:
    """A front point as measured in this export: its validation score and measured speedup over dense fp32."""

    trial: int
    score: float | None
    speedup: float | None
    latency_ms: float | None = None


@dataclass(frozen=True)
class Pick:
    target: float
    trial: int | None  # None: no front point reaches the target
    score: float | None
    speedup: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"target": label(self.target)}


def pick_targets(points: Sequence[Point], targets: Sequence[float], device: str, metric: str) -> list[Pick]:
    """The pick per target (see the module docstring); points without a score or a measured speedup are not eligible."""
    usable = [p for p in points if p.score is not None and p.speedup is not None]
    picks = []
    for target in targets:
        reach = [p for p in usable if p.speedup >= target]
        if reach:
            best = max(reach, key=lambda p: (p.score, p.speedup, -p.trial))
            picks.append(Pick(target, best.trial, best.score, best.speedup,
                              f"the best validation {metric} ({best.score:.4f}) among the {len(reach)} front point(s) measured at least {label(target)} faster than dense fp32 on {device}"))
            continue
        fastest = max(usable, key=lambda p: p.speedup, default=None)
        closest = f"the fastest front point, trial {fastest.trial}, measured {fastest.speedup:.2f}x" if fastest else "no front point was measured"
        picks.append(Pick(target, None, None, None, f"no front point reaches {label(target)} on {device} ({closest}); lower the target, or search a space with "
                                                    "deeper cuts and int8 (space.keep_choices, space.precisions) and export again"))
    return picks


def device_name(devices: Sequence[Any], name: str | None) -> str:
    """The device the targets are measured on: ``name``, or the run's only / first device."""
    names = [d.name for d in devices]
    if name is None:
        return names[0]
    if name not in names:
        raise HwsearchError(f"Device {name!r} is not one of the run's devices ({', '.join(names)}); pass --device with one of them.")
    return name


def save(export_dir: Path, device: str, targets: Sequence[float], picks: Sequence[Pick], points: Sequence[Point], dense_ms: float | None) -> Path:
    path = export_dir / FILE
    record = {"device": device, "targets": [label(t) for t in targets], "dense_measured_ms": dense_ms, "picks": [p.to_dict() for p in picks],
              "points": [asdict(p) for p in points],
              "rule": "per target, the best validation score among front points whose measured latency is at least target times faster than dense fp32 "
                      "(measured in one interleaved pass before any recovery)"}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def load(export_dir: Path) -> dict[str, Any] | None:
    path = export_dir / FILE
    try:
        data = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def summary(record: Mapping[str, Any] | None, final: Mapping[int, float | None]) -> dict[str, Any] | None:
    """The targets section of the index: each pick with its speedup from the final measurement (``final``: trial -> speedup)."""
    if not record:
        return None
    picks = []
    for p in record.get("picks") or []:
        now = final.get(p["trial"]) if p.get("trial") is not None else None
        picks.append(dict(p) | {"final_speedup": now, "model": f"{p['trial']}/model.onnx" if p.get("trial") is not None else None})
    return {"device": record.get("device"), "targets": record.get("targets"), "picks": picks, "rule": record.get("rule")}
