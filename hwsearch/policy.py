"""Policy: how much of each channel group to keep and which precision each layer runs in.

A policy is plain data. Its JSON form is
``{"keep": {group: ratio}, "precision": {layer: "fp32"|"fp16"|"int8"|"int8d"},
"default_keep": 1.0, "default_precision": "fp32", "quant": {...}}`` with every key optional, so ``{}`` is the
uncompressed baseline. Policies cross process boundaries; models never do.

Precisions: ``fp32``; ``fp16`` (weights stored in float16); ``int8`` (ONNX Runtime static QDQ,
calibrated); ``int8d`` (dynamic int8: per-channel int8 weights, activations quantized at run time,
ORT's dynamic quantized MatMul kernels; linear / MatMul / Gemm layers only). Which layer can take
which precision is the search space's business (:meth:`hwsearch.space.SearchSpace.can_take`).
``quant`` holds the model-level settings of static int8 (:class:`QuantRecipe`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError

PRECISIONS = ("fp32", "fp16", "int8", "int8d")
LINEAR_ONLY = ("int8d",)  # precisions only linear / MatMul / Gemm layers can take
_KEYS = ("keep", "precision", "default_keep", "default_precision", "quant")
ACTIVATION_TYPES = ("uint8", "int8")  # static int8 activations: U8S8 or S8S8 (weights are always int8)
CALIBRATIONS = ("minmax", "percentile", "entropy")


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


def _check_choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise HwsearchError(f"Quantization setting {where}={value!r} is unknown; use one of {', '.join(allowed)}.")
    return str(value)


@dataclass(frozen=True)
class QuantRecipe:
    """Model-level settings of static int8 (``quant`` in a policy's JSON; every key optional).

    ``activation_type``: ``uint8`` (U8S8, the default) or ``int8`` (S8S8); ``calibration``:
    ``minmax`` (default), ``percentile`` (at ``percentile``, default 99.999) or ``entropy``;
    ``calib_samples``: calibration samples (None: the run's ``compress.calib_samples``);
    ``preprocess``: ORT's ``quant_pre_process`` (shape inference and graph optimisation) first.
    int8d and fp16 layers ignore them."""

    activation_type: str = "uint8"
    calibration: str = "minmax"
    percentile: float = 99.999
    calib_samples: int | None = None
    preprocess: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantRecipe:
        if not isinstance(data, Mapping):
            raise HwsearchError(f"Policy 'quant' must be a JSON object such as {{\"calibration\": \"percentile\"}}, got {type(data).__name__}.")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise HwsearchError(f"Quantization setting {unknown[0]!r} is unknown; allowed settings are {', '.join(f.name for f in fields(cls))}.")
        pct, n, pre = data.get("percentile", 99.999), data.get("calib_samples"), data.get("preprocess", False)
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 50.0 < float(pct) <= 100.0:
            raise HwsearchError(f"Quantization setting percentile={pct!r} must be a number in (50, 100], e.g. 99.99.")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise HwsearchError(f"Quantization setting calib_samples={n!r} must be a positive integer such as 256 (or null for the run's compress.calib_samples).")
        if not isinstance(pre, bool):
            raise HwsearchError(f"Quantization setting preprocess={pre!r} must be true or false.")
        return cls(_check_choice(data.get("activation_type", "uint8"), ACTIVATION_TYPES, "activation_type"),
                   _check_choice(data.get("calibration", "minmax"), CALIBRATIONS, "calibration"), float(pct), n, pre)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def checked_values(cls, key: str, values: Sequence[Any]) -> tuple[Any, ...]:
        """``values`` of setting ``key`` as the recipe stores them, each checked, duplicates dropped (the choices of a search dimension)."""
        return tuple(dict.fromkeys(getattr(cls.from_dict({key: v}), key) for v in values))


@dataclass(frozen=True)
class Policy:
    """Per-group keep ratios and per-layer precisions, with defaults for everything unnamed."""

    keep: Mapping[str, float] = field(default_factory=dict)
    precision: Mapping[str, str] = field(default_factory=dict)
    default_keep: float = 1.0
    default_precision: str = "fp32"
    quant: QuantRecipe = QuantRecipe()

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
            quant=QuantRecipe.from_dict(data.get("quant") or {}),
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
        """The JSON form; ``quant`` only when it differs from the defaults (so older policies keep their form)."""
        out = {
            "keep": dict(sorted(self.keep.items())),
            "precision": dict(sorted(self.precision.items())),
            "default_keep": self.default_keep,
            "default_precision": self.default_precision,
        }
        return out | ({"quant": self.quant.to_dict()} if self.quant != QuantRecipe() else {})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def keep_for(self, group: str) -> float:
        return self.keep.get(group, self.default_keep)

    def precision_for(self, layer: str) -> str:
        return self.precision.get(layer, self.default_precision)
