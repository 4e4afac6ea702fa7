"""``manifest.json``: what ships with one exported winner (the record, grouped, and its file I/O).

Groups (field reference in the README, "Deploying an exported model"): ``model`` (the file and its
I/O contract: input/output names, dtypes, shapes with a symbolic batch, preprocessing, labels),
``scores`` (test and validation named after the task's metric, beside the dense model's),
``latency`` (per device: predicted and measured, with statistic, machine and speedup vs dense),
``runtime`` (ONNX Runtime session options in ORT's own names), ``policy``, ``checks``
(onnx.checker, parity) and ``provenance`` (versions, run, trial, relative config and table paths);
``recovery`` (``hwsearch export --recover-steps``: the distillation and the scores before and
after it) is null for a winner shipped with the search's weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError

SCHEMA_VERSION = 2
SPLIT_NAMES = {"val": "validation", "test": "test"}  # a split's name in score keys: validation_accuracy, test_accuracy
GROUPS = ("model", "scores", "latency", "runtime", "policy", "checks", "provenance")
OPTIONAL = frozenset({"recovery"})  # absent from manifests written before recovery existed
REEXPORT = "export the winner again with `hwsearch export`"


def score_key(split: str, metric: str) -> str:
    """``test_accuracy``, ``validation_fidelity_cosine``: a split's score named after the task's metric."""
    return f"{SPLIT_NAMES.get(split, split)}_{metric}"


@dataclass(frozen=True)
class DenseReference:
    """The dense fp32 model, exported and measured like the winners in the same export (what a speedup is against)."""

    scores: dict[str, float | None]  # split ("val", "test") -> the task's score of the dense ONNX file
    predicted_ms: dict[str, float | None]
    measured_ms: dict[str, float | None]
    params: int
    macs: int
    size_bytes: int
    file: str  # relative to the export folder


@dataclass(frozen=True)
class Manifest:
    """What ships with one exported winner (``manifest.json``): identity and verdict, then the groups."""

    run: str
    trial: int
    ok: bool
    flags: list[str]
    warnings: list[str]
    model: dict[str, Any]
    scores: dict[str, Any]
    latency: dict[str, dict[str, Any]]
    runtime: dict[str, Any]
    policy: dict[str, Any]
    checks: dict[str, Any]
    provenance: dict[str, Any]
    schema_version: int = SCHEMA_VERSION
    recovery: dict[str, Any] | None = None  # hwsearch export --recover-steps: before/after scores, steps, time, teacher (None: not recovered)

    # --- the figures readers use most -----------------------------------------------------------
    @property
    def metric(self) -> str:
        return str(self.scores["metric"])

    @property
    def test_score(self) -> float | None:
        return self.scores.get(score_key("test", self.metric))

    @property
    def validation_score(self) -> float | None:
        return self.scores.get(score_key("val", self.metric))

    @property
    def measured_latency_ms(self) -> dict[str, float | None]:
        return {d: v.get("measured_ms") for d, v in self.latency.items()}

    @property
    def predicted_latency_ms(self) -> dict[str, float | None]:
        return {d: v.get("predicted_ms") for d, v in self.latency.items()}

    @property
    def parity(self) -> dict[str, Any]:
        return self.checks["parity"]

    # --- file I/O -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        head = {"schema_version": self.schema_version, "run": self.run, "trial": self.trial, "ok": self.ok, "flags": self.flags, "warnings": self.warnings}
        return head | {g: getattr(self, g) for g in GROUPS} | {"recovery": self.recovery}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise HwsearchError(f"Manifest {str(path)!r} cannot be read ({exc}); {REEXPORT}.") from None
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            found = data.get("schema_version", "none") if isinstance(data, dict) else "none"
            raise HwsearchError(f"Manifest {str(path)!r} has schema version {found}, this hwsearch reads {SCHEMA_VERSION}; {REEXPORT}.")
        missing = sorted(set(cls.__dataclass_fields__) - set(data) - OPTIONAL)
        if missing:
            raise HwsearchError(f"Manifest {str(path)!r} lacks {', '.join(missing)}; {REEXPORT}.")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
