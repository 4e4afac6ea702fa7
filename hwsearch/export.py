"""Ship winners: rebuild each from the base model and its stored policy, export, verify, measure.

For every chosen trial of ``runs/NAME`` this writes ``runs/NAME/export/<trial>/model.onnx`` and
``manifest.json``. The ONNX file is built by the same pipeline the search scored it with
(:func:`hwsearch.compress.build_candidate`), then checked three ways: ``onnx.checker`` (full
check), parity against the torch model it was exported from (fp32: max abs logit difference
<= 1e-4; int8/fp16: top-1 agreement >= 99% on the validation split), and latency re-measured on
this machine with each device table's session settings, compared with the table's prediction.
A winner that fails a check is written with ``ok: false`` and its reasons in ``flags``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwsearch import onnx_io
from hwsearch.errors import HwsearchError
from hwsearch.export_context import Device, RunContext, Winner, file_sha256, load_context, select_winners, versions
from hwsearch.policy import Policy

FP32_MAX_ABS_DIFF = 1e-4
MIN_TOP1_AGREEMENT = 0.99
LATENCY_WARN_RATIO = 0.30  # |measured / predicted - 1| above this is reported as a warning
SCHEMA_VERSION = 1
REBUILD_THREADS = 1  # torch threads of the search's workers (hwsearch.search.evaluate.Evaluator)
ACCURACY_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Parity:
    """Exported ONNX vs the torch model it came from, on ``samples`` inputs of ``split``."""

    ok: bool
    metric: str  # "max_abs_diff" (fp32) or "top1_agreement" (int8 / fp16)
    value: float | None
    threshold: float
    split: str
    samples: int
    error: str | None = None


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
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise HwsearchError(f"Manifest {str(path)!r} cannot be read ({exc}); export the winner again with `hwsearch export`.") from None
        missing = sorted(set(cls.__dataclass_fields__) - set(data) - {"schema_version"})
        if missing:
            raise HwsearchError(f"Manifest {str(path)!r} lacks {', '.join(missing)}; export the winner again with `hwsearch export`.")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def check_onnx(path: str | Path) -> str | None:
    """Run ``onnx.checker`` with the full check (shape inference included); the error text or None."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - any checker failure is data for the manifest
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
    return None


def check_parity(path: str | Path, torch_model, x: np.ndarray, quantized: bool, split: str = "val") -> Parity:
    """Compare the ONNX file's logits with ``torch_model``'s on ``x`` (never raises: failures are data)."""
    from hwsearch.tasks.train import Split, torch_logits

    metric, threshold = ("top1_agreement", MIN_TOP1_AGREEMENT) if quantized else ("max_abs_diff", FP32_MAX_ABS_DIFF)
    try:
        ort_out = onnx_io.run(onnx_io.session(path), x)
        ref = torch_logits(torch_model, Split(x, np.zeros(len(x), dtype=np.int64)))
        if ort_out.shape != ref.shape:
            raise ValueError(f"output shape {ort_out.shape} differs from torch's {ref.shape}")
    except Exception as exc:  # noqa: BLE001
        return Parity(False, metric, None, threshold, split, len(x), f"{type(exc).__name__}: {exc}")
    if quantized:
        value = float((ort_out.argmax(1) == ref.argmax(1)).mean())
        ok = value >= threshold
    else:
        value = float(np.abs(ort_out - ref).max())
        ok = bool(np.isfinite(value)) and value <= threshold
    return Parity(bool(ok), metric, value, threshold, split, len(x))


def measure_devices(devices: Sequence[Device], path: Path, input_shape: tuple[int, ...], feed: dict[str, np.ndarray] | None = None) -> tuple[dict, dict, list[str]]:
    """Latency per device with each table's settings and statistic (p10 or median), and p90; devices this machine cannot run are None."""
    import onnxruntime as ort

    median: dict[str, float | None] = {}
    p90: dict[str, float | None] = {}
    notes: list[str] = []
    for dev in devices:
        settings = dev.settings()
        if settings.provider not in ort.get_available_providers():
            median[dev.name] = p90[dev.name] = None
            notes.append(f"device {dev.name!r}: provider {settings.provider} is not available here, latency not re-measured")
            continue
        lat = onnx_io.measure_latency(path, input_shape, settings, **dev.measure_options(), feed=feed)
        median[dev.name], p90[dev.name] = lat.value(dev.statistic()), lat.p90_ms
    return median, p90, notes


def latency_warnings(predicted: dict[str, float | None], measured: dict[str, float | None]) -> list[str]:
    out = []
    for dev, m in measured.items():
        p = predicted.get(dev)
        if m is not None and p:
            if abs(m / p - 1.0) > LATENCY_WARN_RATIO:
                out.append(f"device {dev!r}: measured {m:.4f} ms is {100 * (m / p - 1):+.0f}% off the predicted {p:.4f} ms")
    return out


def _score(task, path: Path, split_name: str) -> float | None:
    try:
        return task.score_onnx(path, split_name)
    except Exception:  # noqa: BLE001 - an unloadable file is already flagged by the checks
        return None


def _flags(checker_error: str | None, parity: Parity) -> list[str]:
    flags = [f"onnx.checker failed: {checker_error}"] if checker_error else []
    if not parity.ok:
        shown = "could not be computed" if parity.value is None else f"{parity.value:.6g}"
        limit = f"<= {parity.threshold}" if parity.metric == "max_abs_diff" else f">= {parity.threshold}"
        flags.append(f"parity failed: {parity.metric} {shown} (needs {limit})" + (f"; {parity.error}" if parity.error else ""))
    return flags


def build_winner(ctx: RunContext, winner: Winner, out_dir: Path):
    """Rebuild the winner's torch model and its ONNX file; returns (torch model, CandidateResult)."""
    import torch

    policy = Policy.from_dict(winner.policy)
    threads = torch.get_num_threads()
    torch.set_num_threads(REBUILD_THREADS)  # as the search's workers: the fine-tune then repeats the search's arithmetic
    try:
        model = ctx.task.recovered_model(ctx.baseline.model, policy, ctx.space, ctx.options)
        result = ctx.task.build_candidate(ctx.baseline.model, policy, ctx.space, out_dir / "model.onnx", ctx.options, model=model)
    finally:
        torch.set_num_threads(threads)
    return model, result


def accuracy_warnings(accuracy: float | None, search_accuracy: float | None) -> list[str]:
    if accuracy is None or search_accuracy is None or abs(accuracy - search_accuracy) <= ACCURACY_TOLERANCE:
        return []
    return [f"the exported file scores {accuracy:.4f}, the search recorded {search_accuracy:.4f} for this policy (rebuild not bit-identical; the manifest's figure is the exported file's)"]


def verify_winner(ctx: RunContext, winner: Winner, model, result, started: float) -> Manifest:
    """Check and measure an exported file against ``model``, and return its manifest (not yet saved)."""
    path = Path(result.onnx_path)
    shape = ctx.task.input_shape()
    checker_error = check_onnx(path)
    quantized = result.precision_counts.get("int8", 0) + result.precision_counts.get("fp16", 0) > 0
    parity = ctx.task.parity(path, model, quantized)
    flags = _flags(checker_error, parity)
    runs = parity.value is not None  # the file loads and runs in ORT
    if runs:
        median, p90, notes = measure_devices(ctx.devices, path, shape, ctx.task.latency_feed())
    else:
        median, p90, notes = {d.name: None for d in ctx.devices}, {d.name: None for d in ctx.devices}, ["latency not measured: the file does not run in ONNX Runtime"]
    predicted, pred_notes = ctx.predict(winner)
    accuracy = _score(ctx.task, path, ctx.options.eval_split) if runs else None
    return Manifest(
        run=ctx.name, trial=winner.trial, policy=Policy.from_dict(winner.policy).to_dict(), onnx_path=path.name, onnx_sha256=file_sha256(path) or "",
        accuracy=accuracy, accuracy_split=ctx.options.eval_split,
        test_accuracy=_score(ctx.task, path, "test") if runs else None, search_accuracy=winner.search_accuracy,
        predicted_latency_ms=predicted, measured_latency_ms=median, measured_latency_p90_ms=p90,
        params=result.params, macs=result.macs, size_bytes=path.stat().st_size if path.is_file() else 0,
        precision_counts=dict(result.precision_counts), quantized_kernels=_quantized_kernels(path) if runs else None,
        checker_ok=checker_error is None, checker_error=checker_error, parity_ok=parity.ok, parity=dict(parity.__dict__),
        ok=not flags, flags=flags, warnings=notes + pred_notes + latency_warnings(predicted, median) + accuracy_warnings(accuracy, winner.search_accuracy),
        tables={d.name: d.provenance() for d in ctx.devices},
        session_options={d.name: d.session_record(shape) for d in ctx.devices},
        accuracy_session_options=onnx_io.SessionSettings().to_dict() | {"inter_op_num_threads": 1},
        task=ctx.config.task, model=ctx.baseline.model_spec, model_options=dict(ctx.baseline.model_options),
        compress_options=dict(ctx.options.__dict__), versions=versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), export_seconds=round(time.perf_counter() - started, 3),
    )


def _quantized_kernels(path: Path) -> int | None:
    try:
        return onnx_io.count_quantized_kernels(path)
    except Exception:  # noqa: BLE001
        return None


def export_winner(ctx: RunContext, winner: Winner) -> Manifest:
    """Rebuild, export, verify and measure one winner; writes ``export/<trial>/{model.onnx,manifest.json}``."""
    started = time.perf_counter()
    out_dir = ctx.run_dir / "export" / str(winner.trial)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, result = build_winner(ctx, winner, out_dir)
    manifest = verify_winner(ctx, winner, model, result, started)
    manifest = replace(manifest, export_seconds=round(time.perf_counter() - started, 3))
    manifest.save(out_dir / "manifest.json")
    return manifest


class _QuantizerHints(logging.Filter):
    """ORT's quantizer logs a pre-processing hint on the root logger for every int8 export."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def export_run(run_dir: str | Path, trials: list[int] | None = None, pareto: bool = True, study_name: str | None = None) -> list[Manifest]:
    """Export the Pareto front (``pareto=True``, from pareto.json) and/or the listed trial numbers of ``run_dir``.

    Each winner is written to ``run_dir/export/<trial>/`` (model.onnx, manifest.json). Returns one
    manifest per winner, flagged ones included (``manifest.ok`` is False, reasons in ``flags``);
    raises :class:`HwsearchError` only for problems a user must fix (no such run, no pareto.json,
    unknown trial). ``study_name`` (for ``trials``) defaults to the run's name.
    """
    root = logging.getLogger()
    if not any(isinstance(f, _QuantizerHints) for f in root.filters):
        root.addFilter(_QuantizerHints())
    ctx = load_context(run_dir, study_name)
    return [export_winner(ctx, w) for w in select_winners(ctx, trials, pareto)]
