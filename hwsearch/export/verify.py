"""Ship winners: rebuild each from the base model and its stored policy, export, verify, measure.

For every chosen trial of ``runs/NAME`` this writes ``runs/NAME/export/<trial>/model.onnx`` and
``manifest.json``. The ONNX file is built by the same pipeline the search scored it with
(:func:`hwsearch.compress.realise`), then checked three ways: ``onnx.checker`` (full
check), parity against the torch model it was exported from on the validation split (the task
judges it: for classification fp32 max abs logit difference <= 1e-4, int8/fp16 top-1 agreement
>= 99%), and latency re-measured on
this machine (or, for a device with ``ray_resources``, on its Ray node) with each device table's session settings, compared with the table's prediction.
A winner that fails a check is written with ``ok: false`` and its reasons in ``flags``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hwsearch.compress.realise import compressed_model, onnx_outputs, realise, score_onnx
from hwsearch.context import ensure_adaptation
from hwsearch.errors import HwsearchError
from hwsearch.export.manifest import Manifest
from hwsearch.export.winners import Device, RunContext, Winner, load_run, select_winners, versions
from hwsearch.latency.cases import cpu_times, loadavg, steal_since
from hwsearch.policy import Policy
from hwsearch.runtime.remote import Router
from hwsearch.runtime.session import SessionSettings, available_providers, check_model, count_quantized_kernels
from hwsearch.runtime.timing import time_model
from hwsearch.tables.table import file_sha256
from hwsearch.tasks.base import torch_outputs

LATENCY_WARN_FLOOR = 0.05  # |measured / predicted - 1| above max(3 x the table's validation rmspe, this) is reported as a warning
REBUILD_THREADS = 1  # torch threads of the search's workers (hwsearch.search.evaluate.Evaluator)
ACCURACY_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Parity:
    """Exported ONNX vs the torch model it came from, on ``samples`` inputs of ``split``."""

    ok: bool
    metric: str  # the task's: "max_abs_diff" (fp32), "top1_agreement" or "mean_cosine" (quantized)
    value: float | None
    threshold: float
    split: str
    samples: int
    error: str | None = None


def check_parity(ctx, path: str | Path, torch_model, quantized: bool, split: str = "val") -> Parity:
    """The ONNX file's outputs vs ``torch_model``'s on ``split``, judged by the task (never raises: failures are data)."""
    task = ctx.task
    try:
        got = onnx_outputs(task, path, split)
        ref = torch_outputs(torch_model, *task.feeds(split))
        agree = task.agreement(got, ref, quantized)
    except Exception as exc:  # noqa: BLE001
        metric, threshold = task.parity_rule(quantized)
        return Parity(False, metric, None, threshold, split, len(task.split(split)), f"{type(exc).__name__}: {exc}")
    return Parity(bool(agree.ok), agree.metric, agree.value, agree.threshold, split, agree.samples)


def measure_devices(devices: Sequence[Device], path: Path, feed: dict[str, np.ndarray] | None = None, ray_address: str = "",
                    measured_on: dict[str, Any] | None = None) -> tuple[dict, dict, list[str]]:
    """Latency per device with each table's settings and statistic (p10 or median), and p90; devices this machine cannot run are None.
    A device with ``ray_resources`` is timed on the node of the Ray cluster at ``ray_address`` that has them
    (:mod:`hwsearch.runtime.remote`); ``measured_on`` (if given) receives where each device was timed."""
    value: dict[str, float | None] = {}
    p90: dict[str, float | None] = {}
    notes: list[str] = []
    for dev in devices:
        settings = dev.settings()
        if dev.ray_resources:
            router = Router(dev.name, dev.ray_resources, ray_address)
            try:
                t = router(path, settings, dev.measure_settings(), feed)
                value[dev.name], p90[dev.name] = t.value(dev.statistic()) / 1e3, t.p90_us / 1e3
            except HwsearchError as exc:  # failures are data: the winner is written, its latency not re-measured
                value[dev.name] = p90[dev.name] = None
                notes.append(f"device {dev.name!r}: latency not re-measured on its Ray node: {exc}")
            finally:
                router.close()
            if measured_on is not None:
                measured_on[dev.name] = router.where()
            continue
        if measured_on is not None:
            measured_on[dev.name] = {"routed": False, "host": socket.gethostname()}
        if settings.provider not in available_providers():
            value[dev.name] = p90[dev.name] = None
            notes.append(f"device {dev.name!r}: provider {settings.provider} is not available here, latency not re-measured")
            continue
        timing = dev.measure_settings()
        t = time_model(path, settings, timing, feed)
        value[dev.name], p90[dev.name] = t.value(timing.statistic) / 1e3, t.p90_us / 1e3
    return value, p90, notes


def warn_tolerance(rmspe: float | None) -> float:
    """How far a measured latency may stray from its prediction before export warns: max(3 × the table's validation RMSPE, 5%)."""
    return max(3.0 * (rmspe or 0.0), LATENCY_WARN_FLOOR)


def latency_warnings(predicted: dict[str, float | None], measured: dict[str, float | None], rmspe: dict[str, float | None] | None = None) -> list[str]:
    out = []
    for dev, m in measured.items():
        p = predicted.get(dev)
        tol = warn_tolerance((rmspe or {}).get(dev))
        if m is not None and p and abs(m / p - 1.0) > tol:
            out.append(f"device {dev!r}: measured {m:.4f} ms is {100 * (m / p - 1):+.0f}% off the predicted {p:.4f} ms (beyond ±{tol:.0%}, 3x the table's validation rmspe); "
                       f"check the table on this machine: `hwsearch check-table TABLE`")
    return out


def _score(ctx, path: Path, split_name: str) -> float | None:
    try:
        return score_onnx(ctx, path, split_name)
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
    """Rebuild the winner's torch model and its ONNX file; returns (torch model, Candidate)."""
    import torch

    policy = Policy.from_dict(winner.policy)
    threads = torch.get_num_threads()
    torch.set_num_threads(REBUILD_THREADS)  # as the search's workers: the fine-tune then repeats the search's arithmetic
    try:
        model = compressed_model(ctx.ctx, policy)
        result = realise(ctx.ctx, policy, out_dir / "model.onnx", model=model)
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
    task, options = ctx.ctx.task, ctx.ctx.options
    shape = task.input_shape()
    checker_error = check_model(path)
    quantized = result.precision_counts.get("int8", 0) + result.precision_counts.get("fp16", 0) > 0
    parity = check_parity(ctx.ctx, path, model, quantized)
    flags = _flags(checker_error, parity)
    runs = parity.value is not None  # the file loads and runs in ORT
    load_before, cpu_before = loadavg(), cpu_times()
    measured_on: dict[str, Any] = {}
    if runs:
        median, p90, notes = measure_devices(ctx.devices, path, task.latency_feed(), ctx.config.ray_address, measured_on)
    else:
        median, p90, notes = {d.name: None for d in ctx.devices}, {d.name: None for d in ctx.devices}, ["latency not measured: the file does not run in ONNX Runtime"]
    conditions = {"load_average": {"before": load_before, "after": loadavg()}, "cpu_steal": steal_since(cpu_before), "adaptation": ctx.adaptations(), "measured_on": measured_on,
                  "what": "while re-measuring: 1-minute load average, share of CPU time the hypervisor gave to other guests, the table adaptation each prediction applied, where each device was re-measured (here, or its Ray node)"}
    predicted, pred_notes = ctx.predict(winner)
    accuracy = result.accuracy if runs else None  # realise scored the file on options.eval_split
    return Manifest(
        run=ctx.name, trial=winner.trial, policy=Policy.from_dict(winner.policy).to_dict(), onnx_path=path.name, onnx_sha256=file_sha256(path) or "",
        accuracy=accuracy, accuracy_split=options.eval_split,
        test_accuracy=_score(ctx.ctx, path, "test") if runs else None, search_accuracy=winner.search_accuracy,
        predicted_latency_ms=predicted, measured_latency_ms=median, measured_latency_p90_ms=p90,
        params=result.params, macs=result.macs, size_bytes=path.stat().st_size if path.is_file() else 0,
        precision_counts=dict(result.precision_counts), quantized_kernels=_quantized_kernels(path) if runs else None,
        checker_ok=checker_error is None, checker_error=checker_error, parity_ok=parity.ok, parity=dict(parity.__dict__),
        ok=not flags, flags=flags, warnings=notes + pred_notes + latency_warnings(predicted, median, ctx.validation_rmspe()) + accuracy_warnings(accuracy, winner.search_accuracy),
        tables={d.name: d.provenance() for d in ctx.devices}, measurement_conditions=conditions,
        session_options={d.name: d.session_record(shape) for d in ctx.devices},
        accuracy_session_options=SessionSettings().to_dict() | {"inter_op_num_threads": 1},
        task=ctx.config.task, model=ctx.ctx.baseline.model_spec, model_options=dict(ctx.ctx.baseline.model_options),
        compress_options=options.to_dict(), versions=versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), export_seconds=round(time.perf_counter() - started, 3),
    )


def _quantized_kernels(path: Path) -> int | None:
    try:
        return count_quantized_kernels(path)
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


def export_run(run_dir: str | Path, trials: list[int] | None = None, pareto: bool = True, study_name: str | None = None, progress: bool = False) -> list[Manifest]:
    """Export the Pareto front (``pareto=True``, from pareto.json) and/or the listed trial numbers of ``run_dir``.

    Each winner is written to ``run_dir/export/<trial>/`` (model.onnx, manifest.json). Returns one
    manifest per winner, flagged ones included (``manifest.ok`` is False, reasons in ``flags``);
    raises :class:`HwsearchError` only for problems a user must fix (no such run, no pareto.json,
    unknown trial). ``study_name`` (for ``trials``) defaults to the run's name.
    """
    root = logging.getLogger()
    if not any(isinstance(f, _QuantizerHints) for f in root.filters):
        root.addFilter(_QuantizerHints())
    ctx = load_run(run_dir, study_name)
    for spec in ctx.config.devices:  # the tables checked (and adapted) on this machine before predicting
        ensure_adaptation(spec, progress, ctx.config.ray_address)
    return [export_winner(ctx, w) for w in select_winners(ctx, trials, pareto)]
