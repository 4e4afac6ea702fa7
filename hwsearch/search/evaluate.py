"""The worker side: an :class:`Evaluator` keeps task, baseline, space and latency predictors loaded
and turns a policy (plain dict) into a :class:`TrialResult` (plain data).

It is used directly for ``workers = 0`` and wrapped as a Ray actor otherwise. Any exception raised
while evaluating a policy becomes a result with ``error`` set; the driver records a FAIL trial.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hwsearch.compress import CompressOptions
from hwsearch.config import ExperimentConfig, parse_config
from hwsearch.policy import Policy

# The latency predictor factory, ``module:function`` (see hwsearch.latency.predict.load_predictor).
PREDICTOR_ENV = "HWSEARCH_PREDICTOR"
DEFAULT_PREDICTOR = "hwsearch.latency.predict:load_predictor"


@dataclass(frozen=True)
class TrialResult:
    """What one evaluated policy produced; ``error`` is set (and the numbers empty) on failure."""

    number: int
    accuracy: float | None = None
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    coverage: Mapping[str, float] = field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    size_bytes: int | None = None
    eval_seconds: float = 0.0
    worker: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_context(cfg: ExperimentConfig, verbose: bool = False):
    """(task, baseline, space) for a config: the baseline is trained and cached if absent."""
    from hwsearch.tasks import get_task

    task = get_task(cfg.task, **dict(cfg.task_options))
    baseline = task.load_baseline(cfg.model, dict(cfg.model_options), cfg.train_config(task.train_config), verbose=verbose)
    space = task.search_space(baseline.model, keep_choices=cfg.space.keep_choices, precisions=cfg.space.precisions,
                              channel_multiple=cfg.space.channel_multiple)
    return task, baseline, space


def load_predictors(cfg: ExperimentConfig, task, model, space) -> dict[str, Any]:
    """One latency predictor per configured device, keyed by the config's device name.

    ``$HWSEARCH_PREDICTOR`` replaces the task's own predictor (``Task.load_predictor``).
    """
    from hwsearch.tasks.base import import_object

    if os.environ.get(PREDICTOR_ENV):
        factory = import_object(os.environ[PREDICTOR_ENV], "Latency predictor")
        return {d.name: factory(d.table, task, model, space, strict=False) for d in cfg.devices}
    return {d.name: task.load_predictor(d.table, model, space, strict=False) for d in cfg.devices}


def build_candidate(task, model, policy: Policy, space, out_path: Path, options: CompressOptions):
    """One candidate, realised the task's way (``Task.build_candidate``; the CNN pipeline by default)."""
    return task.build_candidate(model, policy, space, out_path, options)


def format_error(exc: BaseException) -> str:
    """``Type: message`` plus the innermost frames of the traceback (kept short for storage)."""
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = f"{type(exc).__name__}: {exc}\n" + "".join(frames[-3:])
    return text[-4000:]


class Evaluator:
    """Evaluates policies for one experiment; built from the config's plain-dict form."""

    def __init__(self, config: Mapping[str, Any], threads: int | None = 1) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.cfg = parse_config(config, str(config.get("name", "run")), Path.cwd())
        self.task, self.baseline, self.space = load_context(self.cfg)
        self.predictors = load_predictors(self.cfg, self.task, self.baseline.model, self.space)
        c = self.cfg.compress
        self.options = CompressOptions(importance=c.importance, finetune_steps=c.finetune_steps, finetune_lr=c.finetune_lr,
                                       distill=c.distill, bn_recalib_batches=c.bn_recalib_batches, calib_samples=c.calib_samples, eval_split="val")
        self.tmp = Path(tempfile.mkdtemp(prefix="hwsearch-eval-"))

    def pid(self) -> int:
        return os.getpid()

    def predict(self, policy: Policy) -> tuple[dict[str, float], dict[str, float]]:
        latency, coverage = {}, {}
        for name, predictor in self.predictors.items():
            pred = predictor.predict(policy)
            latency[name], coverage[name] = float(pred.latency_ms), float(pred.coverage)
        return latency, coverage

    def evaluate(self, number: int, policy: Mapping[str, Any]) -> TrialResult:
        start = time.perf_counter()
        out = self.tmp / f"trial{number}.onnx"
        try:
            pol = self.space.validate(Policy.from_dict(policy))
            latency, coverage = self.predict(pol)
            cand = build_candidate(self.task, self.baseline.model, pol, self.space, out, self.options)
            return TrialResult(number, cand.accuracy, latency, coverage, cand.params, cand.macs, cand.size_bytes,
                               time.perf_counter() - start, str(os.getpid()))
        except Exception as exc:  # noqa: BLE001 - failures are data: the driver records a FAIL trial
            return TrialResult(number, eval_seconds=time.perf_counter() - start, worker=str(os.getpid()), error=format_error(exc))
        finally:
            for p in self.tmp.glob(f"trial{number}*"):
                p.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
