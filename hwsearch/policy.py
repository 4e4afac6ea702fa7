"""Policy: how much of each channel group to keep and which precision each layer runs in.

A policy is plain data. Its JSON form is
``{"keep": {group: ratio}, "precision": {layer: "fp32"|"fp16"|"int8"},
"default_keep": 1.0, "default_precision": "fp32"}`` with every key optional, so ``{}`` is the
uncompressed baseline. Policies cross process boundaries; models never do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError

PRECISIONS = ("fp32", "fp16", "int8")
_KEYS = ("keep", "precision", "default_keep", "default_precision")


def check_keep_ratio(value: Any, where: str) -> float:
    """Return ``value`` as a float in (0, 1], or raise an error naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HwsearchError(f"Keep ratio {where}={value!r} is not a number; use a fraction in (0, 1], e.g. 0.5.")
    if not 0.0 < float(value) <= 1.0:
        raise HwsearchError(f"Keep ratio {where}={value!r} is outside (0, 1]; use a fraction such as 0.5 (1.0 keeps every channel).")
    return float(value)


def check_precision(value: Any, where: str) -> str:
    """Return ``value`` if it is a known precision, or raise an error naming ``where``."""
    if value not in PRECISIONS:
        raise HwsearchError(f"Precision {where}={value!r} is unknown; use one of {', '.join(PRECISIONS)}.")
    return str(value)


@dataclass(frozen=True)
class Policy:
    """Per-group keep ratios and per-layer precisions, with defaults for everything unnamed."""

    keep: Mapping[str, float] = field(default_factory=dict)
    precision: Mapping[str, str] = field(default_factory=dict)
    default_keep: float = 1.0
    default_precision: str = "fp32"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        if not isinstance(data, Mapping):
            raise HwsearchError(f"A policy must be a JSON object, got {type(data).__name__}; use {{}} for the baseline.")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise HwsearchError(f"Policy key {unknown[0]!r} is unknown; allowed keys are {', '.join(_KEYS)}.")
        keep = data.get("keep", {}) or {}
        precision = data.get("precision", {}) or {}
        if not isinstance(keep, Mapping) or not isinstance(precision, Mapping):
            raise HwsearchError("Policy 'keep' and 'precision' must be JSON objects mapping names to values.")
        return cls(
            keep={str(k): check_keep_ratio(v, f"keep[{k!r}]") for k, v in keep.items()},
            precision={str(k): check_precision(v, f"precision[{k!r}]") for k, v in precision.items()},
            default_keep=check_keep_ratio(data.get("default_keep", 1.0), "default_keep"),
            default_precision=check_precision(data.get("default_precision", "fp32"), "default_precision"),
        )

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        p = Path(path)
        if not p.is_file():
            raise HwsearchError(f"Policy file {str(p)!r} does not exist; pass a JSON file such as {{\"default_keep\": 0.5}}.")
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise HwsearchError(f"Policy file {str(p)!r} is not a JSON text file (not UTF-8); pass a JSON file such as {{\"default_keep\": 0.5}}.") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HwsearchError(f"Policy file {str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); fix the file.") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keep": dict(sorted(self.keep.items())),
            "precision": dict(sorted(self.precision.items())),
            "default_keep": self.default_keep,
            "default_precision": self.default_precision,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def keep_for(self, group: str) -> float:
        return self.keep.get(group, self.default_keep)

    def precision_for(self, layer: str) -> str:
        return self.precision.get(layer, self.default_precision)
