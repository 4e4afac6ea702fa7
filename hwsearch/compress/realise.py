"""The one pipeline: a policy realised as a scored ONNX file, in passes.

``prune`` (the family cuts the channels the policy drops) → ``recover`` (the family's BN
recalibration / distilled fine-tune, only when something was pruned) → ``export`` (fp32 ONNX,
nodes named after modules) → ``quantize`` (each precision layer's nodes in its precision: ORT
static int8 QDQ, dynamic int8d, fp16) → ``score`` (the task's metric, computed by running the final file in ONNX
Runtime). The search's workers, ``hwsearch compress``, ``hwsearch export`` and the latency
calibration / validation all call :func:`realise`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from hwsearch.policy import Policy
from hwsearch.runtime.quantize import apply_precisions
from hwsearch.runtime.session import run_feeds, session


class Subject(Protocol):
    """What a policy is realised against (:class:`hwsearch.context.Context` is one)."""

    task: Any  # hwsearch.tasks.Task: data and metric
    family: Any  # hwsearch.families.ModelFamily: mechanics
    baseline: Any  # hwsearch.families.Baseline: the dense model
    space: Any  # hwsearch.space.SearchSpace
    options: Any  # hwsearch.options.CompressOptions


@dataclass(frozen=True)
class Candidate:
    """What one realised policy measures: plain data, safe to send between processes."""

    onnx_path: str
    accuracy: float | None  # the task's score on ``options.eval_split`` (None when not scored)
    params: int
    macs: int
    size_bytes: int
    precision_counts: dict[str, int]  # precision layers per precision
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pruned_anything(space: Any, policy: Policy) -> bool:
    return any(space.kept_channels(g, policy.keep_for(g.name)) < g.channels for g in space.groups)


def compressed_model(ctx: Subject, policy: Policy) -> nn.Module:
    """Passes ``prune`` and ``recover``: the torch model a candidate's ONNX file is exported from."""
    ctx.space.validate(policy)
    model = ctx.family.prune(ctx.baseline.model, policy, ctx.space, ctx.task, ctx.options)
    if pruned_anything(ctx.space, policy):
        model = ctx.family.recover(model, ctx.baseline.model, ctx.task, ctx.options)
    return model.eval()


def export_precisions(ctx: Subject, model: nn.Module, policy: Policy, out_path: Path) -> dict[str, int]:
    """Passes ``export`` and ``quantize``: writes ``out_path``; returns precision layers per precision."""
    fp32_path = out_path.with_name(out_path.stem + ".fp32.onnx")
    ctx.family.export(model, ctx.task, fp32_path)
    try:
        samples = policy.quant.calib_samples or ctx.options.calib_samples  # the policy's recipe, else the run's
        apply_precisions(fp32_path, out_path, ctx.family.precision_nodes(policy, ctx.space), ctx.task.calibration_feeds(samples), recipe=policy.quant)
    finally:
        fp32_path.unlink(missing_ok=True)
    counts = {p: 0 for p in ("int8", "int8d", "fp16", "fp32")}
    for layer in ctx.space.layers:
        counts[policy.precision_for(layer)] += 1
    return counts


def onnx_outputs(task: Any, path: str | Path, split: str):
    """The file's outputs on a split, run in ONNX Runtime (in the split's order)."""
    feeds, order = task.feeds(split)
    out = run_feeds(session(path), feeds)
    return out if order is None else out[order]


def score_onnx(ctx: Subject, path: str | Path, split: str) -> float:
    """Pass ``score``: the task's metric of an ONNX file on a split."""
    return float(ctx.task.score(onnx_outputs(ctx.task, path, split), ctx.task.targets(split, ctx.baseline.model)))


def realise(ctx: Subject, policy: Policy, out_path: str | Path, *, model: nn.Module | None = None, score: bool = True) -> Candidate:
    """Realise ``policy`` as ``out_path`` and score it on ``ctx.options.eval_split``.

    ``model``: the already compressed model (from :func:`compressed_model`) to export instead of
    building it again (export keeps it to check the file against torch); ``score=False`` skips the
    score pass (latency measurements need only the file)."""
    start = time.perf_counter()
    if model is None:
        model = compressed_model(ctx, policy)
    else:
        ctx.space.validate(policy)
    out_path = Path(out_path)
    counts = export_precisions(ctx, model, policy, out_path)
    accuracy = score_onnx(ctx, out_path, ctx.options.eval_split) if score else None
    return Candidate(onnx_path=str(out_path), accuracy=accuracy, params=sum(p.numel() for p in model.parameters()),
                     macs=ctx.family.count_macs(model, ctx.task), size_bytes=out_path.stat().st_size, precision_counts=counts,
                     seconds=time.perf_counter() - start)
