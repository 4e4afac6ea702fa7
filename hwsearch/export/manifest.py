"""``manifest.json``: what ships with one exported winner (the record, its file I/O)."""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """What ships with one exported winner (``manifest.json``)."""

    run: str
    trial: int
    policy: dict[str, Any]
    onnx_path: str
    onnx_sha256: str
    accuracy: float | None
    accuracy_split: str
    test_accuracy: float | None
    search_accuracy: float | None
    predicted_latency_ms: dict[str, float | None]
    measured_latency_ms: dict[str, float | None]
    measured_latency_p90_ms: dict[str, float | None]
    params: int
    macs: int
    size_bytes: int
    precision_counts: dict[str, int]
    quantized_kernels: int | None
    checker_ok: bool
    checker_error: str | None
    parity_ok: bool
    parity: dict[str, Any]
    ok: bool
    flags: list[str]
    warnings: list[str]
    tables: dict[str, dict[str, Any]]
    session_options: dict[str, dict[str, Any]]
    accuracy_session_options: dict[str, Any]
    task: str
    model: str
    model_options: dict[str, Any]
    compress_options: dict[str, Any]
    versions: dict[str, str]
    created: str
    export_seconds: float
    measurement_conditions: dict[str, Any] = field(default_factory=dict)  # load average, CPU steal, adaptation per device while re-measuring
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise HwsearchError(f"Manifest {str(path)!r} cannot be read ({exc}); export the winner again with `hwsearch export`.") from None
        required = {k for k, f in cls.__dataclass_fields__.items() if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise HwsearchError(f"Manifest {str(path)!r} lacks {', '.join(missing)}; export the winner again with `hwsearch export`.")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


