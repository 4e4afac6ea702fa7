"""A table adapted to the machine it runs on: ``adaptations/<key>.json`` beside ``table.csv``.

A table describes the machine that built it; the next machine of the same kind runs the same
kernels 10-15% faster or slower, and a machine of another kind shifts some kernel classes more
than others (an int8 kernel on a CPU with AMX against one without). ``hwsearch check-table
--adapt`` re-times the table's reference models here (:mod:`hwsearch.tables.reference`) and fits

    adapted_us = base · fixed_us + intercept_us + Σ_family scale[family] · P_family

where ``P_family`` is the calibrated prediction's share of one *class family* (the kernel classes of
one precision: ``fp32``, ``fp16``, ``int8``, and ``other`` for layout and quantize kernels, see
:func:`class_family`), ``fixed_us`` the call overhead plus the calibration's intercept, and
``base`` the machine's overall speed against the table (the least-squares single scale). Each
family's scale is pulled toward ``base`` and the intercept toward 0 by a ridge prior, so a family
the reference models barely exercise keeps the table's calibration times the machine's speed.

An adaptation is keyed by a *machine fingerprint*: CPU model and SIMD flags, cores, runtime
version, provider and threads (what decides which kernels ORT runs and how fast). The predictor
applies the one whose fingerprint equals this machine's; one made elsewhere is not applied (a
warning names both). The file also records the reference models' times measured here (the
machine's speed signature), the table and calibration it was fitted on, and its fit figures.
Adaptations are written beside the table, or under ``$HWSEARCH_CACHE/adaptations/`` (default
``~/.cache/hwsearch``) when the table folder is read-only or is an installed built-in table. Pure functions and file I/O: nothing here measures.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwsearch.config.builtin import is_packaged
from hwsearch.config.records import ADAPT_MODES as MODES
from hwsearch.errors import HwsearchError
from hwsearch.runtime.cpu import cpu_info
from hwsearch.runtime.session import runtime_version
from hwsearch.tables.table import file_sha256, table_hash

SCHEMA = 1
ADAPT_DIR = "adaptations"
VALIDATION_SUFFIX = "-validation.json"  # adaptations/<key>-validation.json: validate-table with that adaptation applied
FAMILIES = ("fp32", "fp16", "int8")  # precision tokens of kernel class names; anything else is "other"
RIDGE_FAMILY = 0.02  # pull of each family's scale toward the machine's overall scale (relative-error units)
RIDGE_INTERCEPT = 0.1  # pull of the intercept toward 0, per median reference model's time
ADAPT_ENV = "HWSEARCH_ADAPT"  # default mode for devices whose config does not set `adapt`


def class_family(cls: str) -> str:
    """The class family of a kernel class: its precision token (``conv-int8-k1`` -> ``int8``), else ``other``."""
    return next((t for t in cls.split("-") if t in FAMILIES), "other")


def default_mode(mode: str | None = None) -> str:
    """``mode``, else ``$HWSEARCH_ADAPT``, else ``auto``; an unknown name is a one-line error."""
    value = mode or os.environ.get(ADAPT_ENV) or "auto"
    if value not in MODES:
        where = "adapt" if mode else f"${ADAPT_ENV}"
        raise HwsearchError(f"{where}={value!r} is unknown; use one of {', '.join(MODES)} (auto: check and adapt when no adaptation matches this machine).")
    return value


def machine_fingerprint(threads: int, provider: str = "CPUExecutionProvider") -> dict[str, Any]:
    """What decides which kernels ORT runs here and how fast (the speed signature is recorded beside it, not in it)."""
    model, flags = cpu_info()
    return {"cpu_model": model, "isa_flags": flags, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "runtime_version": runtime_version(), "provider": provider, "threads": int(threads)}


def fingerprint_key(fp: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(fp), sort_keys=True).encode()).hexdigest()[:16]


def describe(fp: Mapping[str, Any]) -> str:
    return f"{fp.get('cpu_model')} ({fp.get('cores')} cores, {len(fp.get('isa_flags') or [])} SIMD flags), ORT {fp.get('runtime_version')}, {fp.get('threads')} thread(s)"


def calibration_hash(table_dir: str | Path) -> str | None:
    return file_sha256(Path(table_dir) / "calibration.json")


@dataclass(frozen=True)
class Adaptation:
    """Fitted machine offsets: ``base`` and ``scale`` per class family, ``intercept_us``; ``info`` holds the record."""

    key: str
    fingerprint: Mapping[str, Any]
    base: float
    scale: Mapping[str, float]
    intercept_us: float
    info: Mapping[str, Any] = field(default_factory=dict)

    def family_scale(self, cls: str) -> float:
        return float(self.scale.get(class_family(cls), self.base))

    def fixed_us(self, fixed_us: float) -> float:
        """The adapted call overhead + calibration intercept."""
        return self.base * fixed_us + self.intercept_us

    def apply(self, terms: Mapping[str, float], fixed_us: float) -> float:
        """Adapted µs of a model whose calibrated prediction is ``fixed_us`` + Σ ``terms`` (µs per class family)."""
        return self.fixed_us(fixed_us) + sum(self.scale.get(f, self.base) * v for f, v in terms.items())

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "key": self.key, "fingerprint": dict(self.fingerprint), "base": self.base, "scale": dict(self.scale),
                "intercept_us": self.intercept_us, **self.info}


Row = tuple  # (terms: {family: calibrated µs}, fixed_us, measured_us)


def _plain(row: Row) -> float:
    terms, fixed, _ = row
    return fixed + sum(terms.values())


def fit(rows: Sequence[Row]) -> tuple[float, dict[str, float], float]:
    """(base, scale per family, intercept_us) minimising the squared relative error of the adapted
    prediction over ``rows``, each family's scale pulled toward ``base`` and the intercept toward 0."""
    if not rows:
        raise HwsearchError("No reference models were measured, so nothing can be adapted; add reference models to the table (hwsearch calibrate-table).")
    ratio = np.array([_plain(r) / r[2] for r in rows])
    base = float(ratio.sum() / (ratio * ratio).sum())  # argmin Σ (base · plain / measured - 1)²
    fams = sorted({f for terms, _, _ in rows for f in terms})
    meas = np.array([r[2] for r in rows])
    a = np.array([[1.0] + [terms.get(f, 0.0) for f in fams] for terms, _, _ in rows]) / meas[:, None]
    b = np.array([(m - base * fixed) / m for (_, fixed, _), m in zip(rows, meas)])
    n = len(fams)
    reg_a, reg_b = np.zeros((1 + n, 1 + n)), np.zeros(1 + n)
    reg_a[0, 0] = np.sqrt(RIDGE_INTERCEPT) / float(np.median(meas))
    for i in range(n):
        reg_a[1 + i, 1 + i] = np.sqrt(RIDGE_FAMILY)
        reg_b[1 + i] = np.sqrt(RIDGE_FAMILY) * base
    from scipy.optimize import lsq_linear

    lower = np.full(1 + n, -np.inf)
    lower[1:] = 0.0
    coef = lsq_linear(np.vstack([a, reg_a]), np.concatenate([b, reg_b]), bounds=(lower, np.inf)).x
    return base, dict(zip(fams, map(float, coef[1:]))), float(coef[0])


def errors(pred: Sequence[float], meas: Sequence[float]) -> list[float]:
    return [p / m - 1.0 for p, m in zip(pred, meas)]


def leave_one_out(rows: Sequence[Row]) -> list[float]:
    """Relative error of each row predicted by an adaptation fitted without it (the figure to trust with ten models)."""
    out = []
    for i, row in enumerate(rows):
        rest = [r for j, r in enumerate(rows) if j != i]
        if not rest:
            return []
        base, scale, icpt = fit(rest)
        out.append(Adaptation("", {}, base, scale, icpt).apply(row[0], row[1]) / row[2] - 1.0)
    return out


# ---- files -----------------------------------------------------------------------------------


def cache_root() -> Path:
    return Path(os.environ.get("HWSEARCH_CACHE") or Path.home() / ".cache" / "hwsearch")


def folders(table_dir: str | Path) -> list[Path]:
    """Where a table's adaptations live: beside the table, then the user cache (read-only tables).
    An installed built-in table (inside the package) is never written: only the user cache."""
    cache = cache_root() / ADAPT_DIR / (table_hash(table_dir) or "none")[:16]
    return [cache] if is_packaged(table_dir) else [Path(table_dir) / ADAPT_DIR, cache]


def _read(path: Path) -> Adaptation:
    try:
        data = json.loads(path.read_text())
        return Adaptation(str(data["key"]), dict(data["fingerprint"]), float(data["base"]), {str(k): float(v) for k, v in data["scale"].items()},
                          float(data["intercept_us"]), {k: v for k, v in data.items() if k not in ("schema", "key", "fingerprint", "base", "scale", "intercept_us")})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HwsearchError(f"Adaptation file {str(path)!r} is corrupt ({type(exc).__name__}: {exc}); delete it and run `hwsearch check-table {path.parent.parent} --adapt` again.") from None


def load_all(table_dir: str | Path) -> list[Adaptation]:
    """Every adaptation stored for the table (corrupt file: a one-line error)."""
    out = []
    for folder in folders(table_dir):
        if folder.is_dir():
            out += [_read(p) for p in sorted(folder.glob("*.json")) if not p.name.endswith(VALIDATION_SUFFIX)]
    return out


def save(table_dir: str | Path, adaptation: Adaptation) -> Path:
    """Write ``adaptation`` beside the table (or in the user cache when that folder is read-only), atomically."""
    text = json.dumps(adaptation.to_dict(), indent=1, sort_keys=True) + "\n"
    last: OSError | None = None
    for folder in folders(table_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            path = folder / f"{adaptation.key}.json"
            os.replace(tmp, path)
            return path
        except OSError as exc:
            last = exc
    raise HwsearchError(f"Cannot write the adaptation for {str(table_dir)!r} ({last}); make the table folder or $HWSEARCH_CACHE writable.")


def path_of(table_dir: str | Path, key: str) -> Path | None:
    return next((f / f"{key}.json" for f in folders(table_dir) if (f / f"{key}.json").is_file()), None)


def validation_path(table_dir: str | Path, key: str) -> Path | None:
    """Where the validation of adaptation ``key`` on this machine goes (beside the adaptation; None if it is not stored)."""
    stored = path_of(table_dir, key)
    return stored.with_name(f"{key}{VALIDATION_SUFFIX}") if stored else None


@dataclass(frozen=True)
class Match:
    """The adaptation that applies here (None: none does) and why the others were not applied."""

    adaptation: Adaptation | None
    fingerprint: Mapping[str, Any]
    rejected: tuple[str, ...] = ()


def find(table_dir: str | Path, threads: int, provider: str, calibrated: bool) -> Match:
    """The stored adaptation fitted for this machine, this table.csv and this calibration."""
    here = machine_fingerprint(threads, provider)
    key, table_sha, cal_sha = fingerprint_key(here), table_hash(table_dir), calibration_hash(table_dir) if calibrated else None
    rejected = []
    for a in load_all(table_dir):
        if a.key != key or dict(a.fingerprint) != here:
            rejected.append(f"adaptation {a.key} was made on {describe(a.fingerprint)}, this machine is {describe(here)}")
        elif a.info.get("table_sha256") != table_sha or a.info.get("calibration_sha256") != cal_sha:
            rejected.append(f"adaptation {a.key} was fitted on another table.csv or calibration.json (re-run `hwsearch check-table {table_dir} --adapt`)")
        else:
            return Match(a, here, tuple(rejected))
    return Match(None, here, tuple(rejected))
