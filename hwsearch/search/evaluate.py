"""The worker side: an :class:`Evaluator` keeps a :class:`~hwsearch.context.Context` (task, family,
baseline, space, latency predictors) loaded and turns a policy (plain dict) into a
:class:`TrialResult` (plain data), through :func:`hwsearch.compress.realise`.

It is used directly for ``workers = 0`` and wrapped as a Ray actor otherwise. Any exception raised
while evaluating a policy becomes a result with ``error`` set; the driver records a FAIL trial.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwsearch import context
from hwsearch.compress import realise
from hwsearch.config import parse_config
from hwsearch.policy import Policy
from hwsearch.search import cleanup


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
    interrupted: bool = False  # the error is not the policy's: its worker died (the trial may be asked again)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_error(exc: BaseException) -> str:
    """``Type: message`` plus the innermost frames of the traceback (kept short for storage)."""
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = f"{type(exc).__name__}: {exc}\n" + "".join(frames[-3:])
    return text[-4000:]


class Evaluator:
    """Evaluates policies for one experiment; built from the config's plain-dict form."""

    def __init__(self, config: Mapping[str, Any], threads: int | None = 1, tmp_root: str | None = None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.cfg = parse_config(config, str(config.get("name", "run")), Path.cwd())
        self.ctx = context.from_config(self.cfg)
        self.predictors = self.ctx.predictors()
        if tmp_root is None:  # the system temp dir (e.g. a cluster node's): remove what dead evaluators left there
            cleanup.sweep()
        self.tmp = Path(cleanup.make_private_dir("hwsearch-eval-", tmp_root))  # 0700, records this process as owner

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
            pol = Policy.from_dict(policy)  # realise (and the predictors) check it against the space
            latency, coverage = self.predict(pol)
            cand = realise(self.ctx, pol, out)
            return TrialResult(number, cand.accuracy, latency, coverage, cand.params, cand.macs, cand.size_bytes,
                               time.perf_counter() - start, str(os.getpid()))
        except Exception as exc:  # noqa: BLE001 - failures are data: the driver records a FAIL trial
            return TrialResult(number, eval_seconds=time.perf_counter() - start, worker=str(os.getpid()), error=format_error(exc))
        finally:
            for p in self.tmp.glob(f"trial{number}*"):
                p.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
