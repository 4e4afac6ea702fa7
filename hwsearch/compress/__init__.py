"""compress(model, policy): prune by policy, recover, export, set precisions, score on the ONNX file.

:func:`compress` returns the pruned torch model (its input is never mutated);
:func:`recovered_model` adds recovery (BN recalibration, fine-tune);
:func:`build_candidate` runs the whole pipeline for one policy and returns plain data.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwsearch import onnx_io
from hwsearch.compress.finetune import finetune, recalibrate_bn
from hwsearch.compress.prune import IMPORTANCES, prune_in_place
from hwsearch.compress.quantize import apply_precisions
from hwsearch.compress.stats import count_macs, count_params
from hwsearch.errors import HwsearchError
from hwsearch.policy import Policy
from hwsearch.space import SearchSpace
from hwsearch.tasks.base import Task


@dataclass(frozen=True)
class CompressOptions:
    """How a policy is realised: importance criterion and the recovery / calibration budgets."""

    importance: str = "l1"
    finetune_steps: int = 0
    finetune_lr: float = 0.01
    distill: bool = True  # fine-tune toward the baseline's predictions as well as the labels
    bn_recalib_batches: int = 0
    calib_samples: int = 256  # training samples used to calibrate int8 activations
    eval_split: str = "val"

    def __post_init__(self) -> None:
        if self.importance not in IMPORTANCES:
            raise HwsearchError(f"Importance criterion {self.importance!r} is unknown; use one of {', '.join(IMPORTANCES)}.")
        for name in ("finetune_steps", "bn_recalib_batches", "calib_samples"):
            if int(getattr(self, name)) < 0:
                raise HwsearchError(f"{name}={getattr(self, name)!r} is negative; use 0 or more.")
        if self.eval_split not in ("train", "val", "test"):
            raise HwsearchError(f"eval_split={self.eval_split!r} is unknown; use val or test.")


def compress(model: nn.Module, policy: Policy | dict, example_input: torch.Tensor, space: SearchSpace | None = None,
             importance: str = "l1", calibration: tuple[torch.Tensor, torch.Tensor] | None = None) -> nn.Module:
    """Return a copy of ``model`` with the channels ``policy`` drops physically removed."""
    policy = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
    pruned = copy.deepcopy(model).eval()
    space = space or SearchSpace.from_model(pruned, example_input)
    prune_in_place(pruned, example_input, space.keep_channels(policy), importance=importance, calibration=calibration)
    return pruned


@dataclass(frozen=True)
class CandidateResult:
    """What one realised policy measures: plain data, safe to send between processes."""

    onnx_path: str
    accuracy: float
    params: int
    macs: int
    size_bytes: int
    precision_counts: dict[str, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recovered_model(task: Task, baseline: nn.Module, policy: Policy, space: SearchSpace,
                    opts: CompressOptions = CompressOptions()) -> nn.Module:
    """Prune by ``policy`` and recover (BN recalibration, fine-tune): the torch model a candidate's ONNX comes from."""
    space.validate(policy)
    train = task.split("train")
    calibration = (torch.from_numpy(train.x[:64]), torch.from_numpy(train.y[:64]))
    model = compress(baseline, policy, task.example_input(), space, opts.importance, calibration)
    pruned_any = any(space.kept_channels(g, policy.keep_for(g.name)) < g.channels for g in space.groups)
    if pruned_any:
        recalibrate_bn(model, task, opts.bn_recalib_batches)
        finetune(model, task, opts.finetune_steps, opts.finetune_lr, teacher=baseline if opts.distill else None)
    return model.eval()


def build_candidate(task: Task, baseline: nn.Module, policy: Policy, space: SearchSpace, out_path: str | Path,
                    opts: CompressOptions = CompressOptions(), *, model: nn.Module | None = None) -> CandidateResult:
    """Prune, recover, export, apply precisions, then score the final ONNX file in ONNX Runtime.

    ``model``: the already pruned and recovered model (from :func:`recovered_model`) to export
    instead of building it again; export uses it to check the ONNX file against torch.
    """
    start = time.perf_counter()
    space.validate(policy)
    x = task.example_input()
    train = task.split("train")
    calib_n = max(1, min(opts.calib_samples, len(train)))
    if model is None:
        model = recovered_model(task, baseline, policy, space, opts)
    out_path = Path(out_path)
    fp32_path = out_path.with_name(out_path.stem + ".fp32.onnx")
    onnx_io.export(model, x, fp32_path)
    precision = {layer: policy.precision_for(layer) for layer in space.layers}
    counts = apply_precisions(fp32_path, out_path, precision, train.x[:calib_n])
    fp32_path.unlink()
    split = task.split(opts.eval_split)
    logits = onnx_io.run(onnx_io.session(out_path), split.x)
    return CandidateResult(
        onnx_path=str(out_path), accuracy=task.score(logits, split.y), params=count_params(model), macs=count_macs(model, x),
        size_bytes=out_path.stat().st_size, precision_counts=counts, seconds=time.perf_counter() - start,
    )
