"""Structured pruning of CNNs through Torch-Pruning's dependency graph (with the encoder's block
pruner, the only users of torch_pruning).

Analysis (which channels are coupled: :func:`dependency_groups`) is kept apart from policy (how
many channels each group keeps, decided by the caller) and from the importance criterion
(:data:`IMPORTANCES`), following Torch-Pruning's own split.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.options import IMPORTANCES
from hwsearch.runtime.onnx_export import LAYER_TYPES, layer_order
from hwsearch.space import GroupInfo


def _graph(model: nn.Module, example_input: torch.Tensor):
    import torch_pruning as tp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)


def _groups(model: nn.Module, dg, output_layers: list[nn.Module]):
    """Yield (GroupInfo, torch-pruning group) for every prunable group, named stably."""
    names = {m: n for n, m in model.named_modules()}
    rank = {n: i for i, n in enumerate(names.values())}
    for group in dg.get_all_groups(ignored_layers=output_layers, root_module_types=LAYER_TYPES):
        members = sorted(
            {names[dep.target.module] for dep, _ in group if isinstance(dep.target.module, LAYER_TYPES) and dg.is_out_channel_pruning_fn(dep.handler)},
            key=rank.__getitem__,
        )
        if not members:
            continue
        yield GroupInfo(members[0], len(group[0].idxs), tuple(members)), group


def dependency_groups(model: nn.Module, example_input: torch.Tensor) -> list[GroupInfo]:
    """The model's prunable channel groups (the output layer is never pruned)."""
    order = layer_order(model, example_input)
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
    order = layer_order(model, example_input)
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
