"""The groups of a manifest, built from what export checked and measured (plain JSON data).

Every path a manifest records is relative: the model file to the manifest's folder, the config
and the run directory to it as well, a table to the run directory (or ``builtin:NAME`` for a table
shipped inside the package), so an export folder can be moved or copied as a whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hwsearch.config.builtin import PREFIX as BUILTIN
from hwsearch.config.builtin import display_name
from hwsearch.export.manifest import DenseReference, score_key
from hwsearch.export.winners import Device, RunContext
from hwsearch.runtime.contract import io_signature, ort_session_options
from hwsearch.runtime.quantize import int8_weight_bits
from hwsearch.runtime.session import SessionSettings
from hwsearch.tables.adaptation import machine_fingerprint
from hwsearch.tables.table import file_sha256


def table_ref(table_dir: Path, run_dir: Path) -> str:
    """``builtin:NAME`` for a built-in table (shipped with hwsearch), else its path relative to the run directory."""
    name = display_name(table_dir)
    if name.startswith(BUILTIN):
        return name
    return os.path.relpath(Path(table_dir).resolve(), Path(run_dir).resolve())


def model_group(ctx: RunContext, path: Path, result: Any, quantized_kernels: int | None) -> dict[str, Any]:
    """The file and its I/O contract: what a caller feeds it and what it returns."""
    task = ctx.ctx.task
    try:
        signature = io_signature(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is flagged by the checks; its contract is unknown
        signature = {"inputs": [], "outputs": [], "error": f"{type(exc).__name__}: {exc}"}
    return {"file": path.name, "sha256": file_sha256(path) or "", "size_bytes": path.stat().st_size if path.is_file() else 0,
            "params": result.params, "macs": result.macs, "precision_counts": dict(result.precision_counts), "quantized_kernels": quantized_kernels,
            "int8_weight_bits": int8_weight_bits(path) if result.precision_counts.get("int8") else None,
            "task": ctx.config.task, **signature, "preprocessing": task.preprocessing(), "labels": task.class_names()}


def scores_group(ctx: RunContext, scores: Mapping[str, float | None], search_score: float | None, dense: DenseReference | None) -> dict[str, Any]:
    """Test and validation scores named after the task's metric, the search's record, and the dense model's on the same splits."""
    metric = ctx.ctx.task.metric_name()
    out: dict[str, Any] = {"metric": metric}
    out |= {score_key(split, metric): scores.get(split) for split in ("test", "val")}
    out[f"search_{score_key('val', metric)}"] = search_score
    out |= {f"dense_{score_key(split, metric)}": (dense.scores.get(split) if dense else None) for split in ("test", "val")}
    out["selected_on"] = "validation (the search ranked candidates on the validation split; the test split was never used to choose)"
    return out


def machine(dev: Device, measured_on: Mapping[str, Any]) -> dict[str, Any]:
    """Where a device's latency was re-measured: this machine's CPU and ORT, or the Ray node it was routed to."""
    settings = dev.settings()
    where = dict(measured_on.get(dev.name) or {})
    if where.get("routed"):
        return where | {"threads": settings.threads, "provider": settings.provider}
    return {"host": where.get("host")} | machine_fingerprint(settings.threads, settings.provider)


def _speedup(dense: DenseReference | None, dev: str, measured: float | None, predicted: float | None) -> tuple[float | None, str | None]:
    if dense is None:
        return None, None
    dm, dp = dense.measured_ms.get(dev), dense.predicted_ms.get(dev)
    if dm and measured:
        return round(dm / measured, 4), "measured"
    if dp and predicted:
        return round(dp / predicted, 4), "predicted"
    return None, None


def latency_group(ctx: RunContext, predicted: Mapping[str, float | None], measured: Mapping[str, float | None], p90: Mapping[str, float | None],
                  measured_on: Mapping[str, Any], dense: DenseReference | None) -> dict[str, dict[str, Any]]:
    """Per device: the table's prediction (and the adaptation it applied) beside the re-measured latency, and the speedup vs dense fp32."""
    adaptations = ctx.adaptations()
    shape = list(ctx.ctx.task.input_shape())
    out = {}
    for dev in ctx.devices:
        timing = dev.measure_settings()
        speedup, basis = _speedup(dense, dev.name, measured.get(dev.name), predicted.get(dev.name))
        out[dev.name] = {
            "predicted_ms": predicted.get(dev.name), "table": table_ref(dev.table_dir, ctx.run_dir), "adaptation": adaptations.get(dev.name),
            "measured_ms": measured.get(dev.name), "measured_p90_ms": p90.get(dev.name), "statistic": dev.statistic(),
            "runs": timing.min_runs, "warmup": timing.warmup, "min_time_s": timing.min_time_s, "input_shape": shape,
            "measurement": f"{dev.statistic()} of at least {timing.min_runs} runs (and {timing.min_time_s} s) after {timing.warmup} warm-up runs, batch 1, "
                           f"with runtime.devices[{dev.name!r}]",
            "machine": machine(dev, measured_on), "budget_ms": dev.budget_ms,
            "dense_predicted_ms": dense.predicted_ms.get(dev.name) if dense else None, "dense_measured_ms": dense.measured_ms.get(dev.name) if dense else None,
            "speedup_vs_dense": speedup, "speedup_basis": basis,
        }
    return out


def runtime_group(ctx: RunContext) -> dict[str, Any]:
    """The ONNX Runtime session options, in ORT's names, that reproduce the scores (``scoring``) and each device's latency."""
    return {"scoring": ort_session_options(SessionSettings()), "devices": {d.name: ort_session_options(d.settings()) for d in ctx.devices},
            "note": "SessionOptions attributes (enum members by name: getattr(ort.GraphOptimizationLevel, ...)); providers and disabled_optimizers "
                    "are InferenceSession arguments (disabled_optimizers keeps layers a policy leaves in fp32 from being quantized at load time)"}


def provenance_group(ctx: RunContext, trial: int, versions: Mapping[str, str], conditions: Mapping[str, Any], started: float) -> dict[str, Any]:
    """What produced the file: versions, run, config and tables (relative paths), when, and the measuring conditions."""
    base = ctx.ctx.baseline
    tables = {d.name: {"path": table_ref(d.table_dir, ctx.run_dir), "sha256": file_sha256(d.table_dir / "table.csv"),
                       "version": {k: d.meta[k] for k in ("schema", "date", "runtime_version") if k in d.meta},
                       "meta": {k: d.meta[k] for k in ("device", "cpu_model", "gpu", "runtime", "threads", "provider") if k in d.meta}} for d in ctx.devices}
    return {"hwsearch_version": versions.get("hwsearch"), "run": ctx.name, "trial": trial, "run_dir": "../..", "config": "../../config.json",
            "paths": "run_dir and config are relative to this manifest's folder, table paths to the run directory (builtin:NAME: shipped with hwsearch)",
            "task": ctx.config.task, "task_options": dict(ctx.config.task_options), "base_model": base.model_spec, "model_options": dict(base.model_options),
            "compress_options": ctx.ctx.options.to_dict(), "tables": tables, "versions": dict(versions),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "export_seconds": round(time.perf_counter() - started, 3), "measurement_conditions": dict(conditions)}
