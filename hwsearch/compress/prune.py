"""Structured pruning mechanics. The only module that imports torch_pruning.

Analysis (which channels are coupled: :func:`dependency_groups`) is kept apart from policy (how
many channels each group keeps, decided by the caller) and from the importance criterion
(:data:`IMPORTANCES`), following Torch-Pruning's own split.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hwsearch.errors import HwsearchError

IMPORTANCES = ("l1", "bn_scale", "taylor")
ROOT_TYPES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class GroupInfo:
    """A set of coupled output channels that must be pruned together."""

    name: str  # the first member layer, in module order
    channels: int
    layers: tuple[str, ...]  # conv/linear layers whose outputs (or depthwise channels) are cut


def execution_order(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> list[str]:
    """Names of the conv/linear modules in the order a forward pass runs them (a tuple input is unpacked)."""
    names = {m: n for n, m in model.named_modules()}
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(names[mod])) for m in model.modules() if isinstance(m, ROOT_TYPES)]
    try:
        with torch.no_grad():
            model.eval()(*example_input) if isinstance(example_input, tuple) else model.eval()(example_input)
    finally:
        for h in hooks:
            h.remove()
    return order


def _graph(model: nn.Module, example_input: torch.Tensor):
    import torch_pruning as tp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)


def _groups(model: nn.Module, dg, output_layers: list[nn.Module]):
    """Yield (GroupInfo, torch-pruning group) for every prunable group, named stably."""
    names = {m: n for n, m in model.named_modules()}
    rank = {n: i for i, n in enumerate(names.values())}
    for group in dg.get_all_groups(ignored_layers=output_layers, root_module_types=ROOT_TYPES):
        members = sorted(
            {names[dep.target.module] for dep, _ in group if isinstance(dep.target.module, ROOT_TYPES) and dg.is_out_channel_pruning_fn(dep.handler)},
            key=rank.__getitem__,
        )
        if not members:
            continue
        yield GroupInfo(members[0], len(group[0].idxs), tuple(members)), group


def dependency_groups(model: nn.Module, example_input: torch.Tensor) -> list[GroupInfo]:
    """The model's prunable channel groups (the output layer is never pruned)."""
    order = execution_order(model, example_input)
    modules = dict(model.named_modules())
    dg = _graph(model, example_input)
    rank = {n: i for i, n in enumerate(modules)}
    return sorted((info for info, _ in _groups(model, dg, [modules[order[-1]]])), key=lambda g: rank[g.name])


def _importance(kind: str) -> Callable:
    import torch_pruning as tp

    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise HwsearchError(f"Importance criterion {kind!r} is unknown; use one of {', '.join(IMPORTANCES)}.")


def prune_in_place(
    model: nn.Module,
    example_input: torch.Tensor,
    keep_channels: Mapping[str, int],
    importance: str = "l1",
    calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Physically remove channels so that group ``name`` keeps ``keep_channels[name]`` channels.

    ``calibration`` (inputs, labels) supplies the gradients a data-driven criterion (taylor) needs.
    """
    scorer = _importance(importance)
    order = execution_order(model, example_input)
    modules = dict(model.named_modules())
    dg = _graph(model, example_input)
    if importance == "taylor":
        if calibration is None:
            raise HwsearchError("Importance 'taylor' needs calibration data; pass task data or use importance 'l1'.")
        model.zero_grad()
        F.cross_entropy(model.train()(calibration[0]), calibration[1]).backward()
        model.eval()
    plan = []
    for info, group in _groups(model, dg, [modules[order[-1]]]):
        n_keep = keep_channels.get(info.name, info.channels)
        if n_keep >= info.channels:
            continue
        scores = scorer(group)
        if scores is None:  # the criterion does not apply to this group: fall back to magnitude
            scores = _importance("l1")(group)
        keep = set(torch.argsort(scores, descending=True)[:n_keep].tolist())
        drop = [i for i in range(info.channels) if i not in keep]
        plan.append((group[0].dep.target.module, group[0].dep.handler, drop))
    for module, handler, drop in plan:
        dg.get_pruning_group(module, handler, drop).prune()
    model.zero_grad(set_to_none=True)


def _linear_score(layers_out: list[nn.Linear], layers_in: list[nn.Linear], unit: int) -> torch.Tensor:
    """L1 magnitude per unit of ``unit`` consecutive channels: rows of ``layers_out`` + columns of ``layers_in``."""
    score = sum(lin.weight.detach().abs().sum(1) for lin in layers_out) + sum(lin.weight.detach().abs().sum(0) for lin in layers_in)
    return score.reshape(-1, unit).sum(1)


def prune_transformer_in_place(blocks: list[tuple[list[nn.Linear], list[nn.Linear], int, int]]) -> None:
    """Physically remove attention heads / FFN neurons with torch-pruning's linear-layer pruners.

    Each block is ``(producers, consumers, unit, n_keep)``: the output channels of ``producers``
    (q, k, v projections; the FFN up projection) and the matching input channels of ``consumers``
    (the attention output projection; the FFN down projection) are cut together, ``unit`` channels
    at a time (one head = ``head_dim`` channels, one neuron = 1), keeping the ``n_keep`` units of
    largest L1 magnitude. The hidden size is untouched.
    """
    import torch_pruning as tp

    for producers, consumers, unit, n_keep in blocks:
        n_units = producers[0].out_features // unit
        if not 1 <= n_keep <= n_units:
            raise HwsearchError(f"Cannot keep {n_keep} of {n_units} units in a transformer block; keep between 1 and {n_units}.")
        if n_keep == n_units:
            continue
        keep = set(torch.argsort(_linear_score(producers, consumers, unit), descending=True)[:n_keep].tolist())
        drop = [u * unit + j for u in range(n_units) if u not in keep for j in range(unit)]
        for lin in producers:
            tp.prune_linear_out_channels(lin, drop)
        for lin in consumers:
            tp.prune_linear_in_channels(lin, drop)
