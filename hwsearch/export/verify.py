"""Check and measure an exported winner, and describe it in its manifest.

The ONNX file (built by :mod:`hwsearch.export.ship` with the same pipeline the search scored it
with, :func:`hwsearch.compress.realise`) is checked three ways: ``onnx.checker`` (full check),
parity against the torch model it was exported from on the validation split (the task judges it:
for classification fp32 max abs logit difference <= 1e-4, int8/fp16 top-1 agreement >= 99%), and
latency re-measured on this machine (or, for a device with ``ray_resources``, on its Ray node)
with each device table's session settings, compared with the table's prediction. It is scored on
the validation and test splits. A winner that fails a check is written with ``ok: false`` and its
reasons in ``flags``.
"""

from __future__ import annotations

import socket
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwsearch.compress.realise import onnx_outputs, score_onnx
from hwsearch.errors import HwsearchError
from hwsearch.export.describe import latency_group, model_group, provenance_group, runtime_group, scores_group
from hwsearch.export.manifest import DenseReference, Manifest
from hwsearch.export.winners import Device, RunContext, Winner, versions
from hwsearch.latency.cases import cpu_times, loadavg, steal_since
from hwsearch.policy import Policy
from hwsearch.runtime.remote import Router
from hwsearch.runtime.session import available_providers, check_model, count_quantized_kernels
from hwsearch.runtime.timing import time_model
from hwsearch.tasks.base import torch_outputs

LATENCY_WARN_FLOOR = 0.05  # |measured / predicted - 1| above max(3 x the table's validation rmspe, this) is reported as a warning
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
        v, p, n, where = interleaved([dev], {"file": path}, feed)  # this machine: the one local timing loop, one file
        value |= v["file"]
        p90 |= p["file"]
        notes += n["file"]
        if measured_on is not None:
            measured_on |= where
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


def accuracy_warnings(accuracy: float | None, search_accuracy: float | None) -> list[str]:
    if accuracy is None or search_accuracy is None or abs(accuracy - search_accuracy) <= ACCURACY_TOLERANCE:
        return []
    return [f"the exported file scores {accuracy:.4f}, the search recorded {search_accuracy:.4f} for this policy (rebuild not bit-identical; the manifest's figure is the exported file's)"]


@dataclass(frozen=True)
class Measured:
    """One file's re-measured latency per device (None where not measured), and the conditions of the measuring pass."""

    value: dict[str, float | None]
    p90: dict[str, float | None]
    notes: list[str]
    conditions: dict[str, Any]
    measured_on: dict[str, Any]


def interleaved(devices: Sequence[Device], paths: Mapping[Hashable, Path], feed: dict[str, np.ndarray] | None, rounds: int = 1,
                ray_address: str = "", anchor: Hashable | None = None) -> tuple[dict, dict, dict, dict[str, Any]]:
    """Every file on every device, in ``rounds`` rounds with the files interleaved within a round; each file keeps the
    round with its fastest statistic (and that round's p90), so drift over the pass touches every file alike.
    ``anchor`` (the file every speedup divides, e.g. the dense model) is timed at the start and at the end of each
    round, so one slow stretch of the machine cannot inflate every speedup of the pass.
    A device with ``ray_resources`` is timed once per file on its Ray node. Returns (value, p90, notes) per file, in ms,
    and where each device was measured."""
    value: dict = {k: {} for k in paths}
    p90: dict = {k: {} for k in paths}
    notes: dict = {k: [] for k in paths}
    where: dict[str, Any] = {}
    for dev in devices:
        if dev.ray_resources:
            for k, path in paths.items():
                v, p, n = measure_devices([dev], path, feed, ray_address, where)
                value[k] |= v
                p90[k] |= p
                notes[k] += n
            continue
        where[dev.name] = {"routed": False, "host": socket.gethostname()}
        settings, timing = dev.settings(), dev.measure_settings()
        if settings.provider not in available_providers():
            for k in paths:
                value[k][dev.name] = p90[k][dev.name] = None
                notes[k].append(f"device {dev.name!r}: provider {settings.provider} is not available here, latency not re-measured")
            continue
        best: dict = {}
        order = list(paths) + ([anchor] if anchor in paths and len(paths) > 1 else [])
        for _ in range(max(1, rounds)):
            for k in order:
                path = paths[k]
                t = time_model(path, settings, timing, feed)
                ms = t.value(timing.statistic) / 1e3
                if k not in best or ms < best[k][0]:
                    best[k] = (ms, t.p90_us / 1e3)
        for k in paths:
            value[k][dev.name], p90[k][dev.name] = best[k]
    return value, p90, notes, where


def measure_files(ctx: RunContext, paths: Mapping[Hashable, Path | None], rounds: int = 1) -> dict[Hashable, Measured]:
    """Re-measure files on every device of the run in one interleaved pass (``rounds`` rounds; the first file, the dense
    reference in an export, is the anchor timed at both ends of each round); a None path (a file that does not run in
    ONNX Runtime) is not measured and says so."""
    load_before, cpu_before = loadavg(), cpu_times()
    runnable = {k: p for k, p in paths.items() if p is not None}
    value, p90, notes, where = interleaved(ctx.devices, runnable, ctx.ctx.task.latency_feed(), rounds, ctx.config.ray_address, anchor=next(iter(runnable), None))
    conditions = {"load_average": {"before": load_before, "after": loadavg()}, "cpu_steal": steal_since(cpu_before), "adaptation": ctx.adaptations(),
                  "measured_on": where, "rounds": max(1, rounds), "files_in_pass": len(runnable),
                  "what": "while re-measuring: 1-minute load average, share of CPU time the hypervisor gave to other guests, the table adaptation each prediction applied, "
                          "where each device was re-measured (here, or its Ray node), and the pass: every file of this export timed in `rounds` interleaved rounds, "
                          "each keeping its fastest round"}
    out = {}
    for k in paths:
        if k in runnable:
            out[k] = Measured(value[k], p90[k], notes[k], conditions, where)
        else:
            none = {d.name: None for d in ctx.devices}
            out[k] = Measured(none, dict(none), ["latency not measured: the file does not run in ONNX Runtime"], conditions, where)
    return out


def split_scores(ctx: RunContext, path: Path, eval_score: float | None = None) -> dict[str, float | None]:
    """The task's score of the file on the validation and test splits (``eval_score``: realise's score on ``options.eval_split``, if it ran)."""
    eval_split = ctx.ctx.options.eval_split
    return {split: eval_score if split == eval_split and eval_score is not None else _score(ctx.ctx, path, split) for split in ("val", "test")}


@dataclass(frozen=True)
class Checked:
    """An exported file checked against the torch model it came from and scored (before its latency is measured)."""

    winner: Winner
    result: Any  # hwsearch.compress.realise.Candidate
    checker_error: str | None
    parity: Parity
    scores: dict[str, float | None]  # split ("val", "test") -> the task's score of the file
    quantized_kernels: int | None
    started: float

    @property
    def path(self) -> Path:
        return Path(self.result.onnx_path)

    @property
    def runs(self) -> bool:
        """Whether the file loads and runs in ONNX Runtime."""
        return self.parity.value is not None


def check_winner(ctx: RunContext, winner: Winner, model, result, started: float) -> Checked:
    """onnx.checker, parity against ``model`` and the validation and test scores of an exported file."""
    path = Path(result.onnx_path)
    checker_error = check_model(path)
    quantized = sum(result.precision_counts.get(p, 0) for p in ("int8", "int8d", "fp16")) > 0
    parity = check_parity(ctx.ctx, path, model, quantized)
    runs = parity.value is not None
    scores = split_scores(ctx, path, result.accuracy) if runs else {"val": None, "test": None}  # realise scored options.eval_split
    return Checked(winner, result, checker_error, parity, scores, _quantized_kernels(path) if runs else None, started)


def describe_winner(ctx: RunContext, checked: Checked, measured: Measured, dense: DenseReference | None = None,
                    recovery: dict[str, Any] | None = None) -> Manifest:
    """The manifest (not yet saved) of a checked, measured file; ``dense``: the dense reference measured in the same pass."""
    winner, result, path = checked.winner, checked.result, checked.path
    flags = _flags(checked.checker_error, checked.parity)
    predicted, pred_notes = ctx.predict(winner)
    accuracy = checked.scores.get(ctx.ctx.options.eval_split) if checked.runs else None
    search_check = accuracy_warnings(accuracy, winner.search_accuracy) if not (recovery and recovery.get("kept") == "recovered") else []
    warnings = measured.notes + pred_notes + latency_warnings(predicted, measured.value, ctx.validation_rmspe()) + search_check
    return Manifest(
        run=ctx.name, trial=winner.trial, ok=not flags, flags=flags, warnings=warnings,
        model=model_group(ctx, path, result, checked.quantized_kernels),
        scores=scores_group(ctx, checked.scores, winner.search_accuracy, dense),
        latency=latency_group(ctx, predicted, measured.value, measured.p90, measured.measured_on, dense),
        runtime=runtime_group(ctx), policy=Policy.from_dict(winner.policy).to_dict(),
        checks={"onnx_checker": {"ok": checked.checker_error is None, "error": checked.checker_error}, "parity": dict(checked.parity.__dict__)},
        provenance=provenance_group(ctx, winner.trial, versions(), measured.conditions, checked.started),
        recovery=recovery,
    )


def verify_winner(ctx: RunContext, winner: Winner, model, result, started: float, dense: DenseReference | None = None) -> Manifest:
    """Check, measure (alone, one round) and describe one exported file."""
    checked = check_winner(ctx, winner, model, result, started)
    measured = measure_files(ctx, {"file": checked.path if checked.runs else None})["file"]
    return describe_winner(ctx, checked, measured, dense)


def _quantized_kernels(path: Path) -> int | None:
    try:
        return count_quantized_kernels(path)
    except Exception:  # noqa: BLE001
        return None
