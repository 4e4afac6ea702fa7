"""Structured pruning of CNNs through Torch-Pruning's dependency graph (with the encoder's block
pruner, the only users of torch_pruning).

Analysis (which channels are coupled: :func:`analyse`, with :mod:`.groups` for grouped convs and
coupled concatenations) is kept apart from policy (how many channels each group keeps, decided by
the caller) and from the importance criterion (:data:`IMPORTANCES`), following Torch-Pruning's own
split. A group that cannot be cut consistently is left out of the space with a note; a cut that
still fails is a :class:`~hwsearch.errors.HwsearchError` naming the group, never Torch-Pruning's
traceback.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.families.cnn.groups import GroupPlan, plan_group
from hwsearch.options import IMPORTANCES
from hwsearch.runtime.onnx_export import LAYER_TYPES
from hwsearch.space import GroupInfo


@dataclass(frozen=True)
class Analysis:
    """The prunable groups (module order), the channels each removes at a time, and the groups left out."""

    groups: tuple[GroupInfo, ...]
    divisors: dict[str, int]
    notes: tuple[str, ...]


def _graph(model: nn.Module, example_input: torch.Tensor):
    import torch_pruning as tp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
        except Exception as exc:  # torch-pruning's tracer on a model it cannot follow
            raise HwsearchError(f"torch-pruning cannot trace this model ({type(exc).__name__}: {_first_line(exc)}); channel pruning needs a model it can trace.") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _plans(model: nn.Module, dg, output_layers: list[nn.Module]) -> list[GroupPlan]:
    """Every group with a conv/linear output in it, named stably after its first member in module order."""
    names = {m: n for n, m in model.named_modules()}
    rank = {n: i for i, n in enumerate(names.values())}
    plans = []
    for group in dg.get_all_groups(ignored_layers=output_layers, root_module_types=LAYER_TYPES):
        members = sorted(
            {names[dep.target.module] for dep, _ in group if isinstance(dep.target.module, LAYER_TYPES) and dg.is_out_channel_pruning_fn(dep.handler)},
            key=rank.__getitem__,
        )
        if members:
            plans.append(plan_group(dg, GroupInfo(members[0], len(group[0].idxs), tuple(members)), group))
    return sorted(plans, key=lambda p: rank[p.info.name])


def _probe(model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, tuple[int, ...]]:
    """The last conv/linear layer a forward pass runs (the output layer, never pruned) and the output's shape."""
    last: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: last.append(mod)) for m in model.modules() if isinstance(m, LAYER_TYPES)]
    try:
        with torch.no_grad():
            shape = tuple(model.eval()(example_input).shape)
    finally:
        for h in hooks:
            h.remove()
    return last[-1], shape


def analyse(model: nn.Module, example_input: torch.Tensor) -> Analysis:
    """The model's prunable channel groups (the output layer is never pruned).

    Groups that cannot be cut consistently are left out with a note saying why; so are groups
    through a grouped conv or an index-remapping op (cat, split, slice) whose trial cut,
    on a copy of the model, fails."""
    output, _ = _probe(model, example_input)
    plans = _plans(model, _graph(model, example_input), [output])
    failed = _trial(model, example_input, [p for p in plans if p.reason is None and p.remapped])
    plans = [dataclasses.replace(p, reason=f"a trial cut failed ({failed[p.info.name]})") if p.info.name in failed else p for p in plans]
    ok = [p for p in plans if p.reason is None]
    return Analysis(tuple(p.info for p in ok), {p.info.name: p.divisor for p in ok}, tuple(p.note for p in plans if p.reason is not None))


def dependency_groups(model: nn.Module, example_input: torch.Tensor) -> list[GroupInfo]:
    """The model's prunable channel groups (see :func:`analyse` for the divisors and the groups left out)."""
    return list(analyse(model, example_input).groups)


def _trial(model: nn.Module, example_input: torch.Tensor, plans: list[GroupPlan]) -> dict[str, str]:
    """Cut half of every group's channel classes in a copy and run it; on failure, find the groups to blame one by one."""
    half = {p.info.name: p.divisor * max(1, len(p.classes) // 2) for p in plans}

    def fails(keep: Mapping[str, int]) -> str | None:
        trial = copy.deepcopy(model).eval()
        try:
            prune_in_place(trial, example_input, keep)
        except HwsearchError as exc:
            return _first_line(exc)
        return None

    if not plans or fails(half) is None:
        return {}
    out = {}
    for p in plans:
        why = fails({p.info.name: half[p.info.name]})
        if why is not None:
            out[p.info.name] = why
    return out


def _importance(kind: str) -> Callable:
    import torch_pruning as tp

    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise HwsearchError(f"Importance criterion {kind!r} is unknown; use one of {', '.join(IMPORTANCES)}.")


def _scores(scorer: Callable, plan: GroupPlan) -> torch.Tensor | None:
    try:
        return scorer(plan.group)
    except Exception:  # torch-pruning's criterion on a layer it does not model: the caller falls back or reports the group
        return None


def _drop(plan: GroupPlan, n_keep: int, scorer: Callable) -> list[int]:
    """The root channels to remove so that ``n_keep`` stay: whole classes, the least important first."""
    if n_keep % plan.divisor or n_keep <= 0:
        raise HwsearchError(f"Group {plan.info.name!r} cannot keep {n_keep} of its {plan.info.channels} channels: it removes {plan.divisor} at a time "
                            f"(a grouped conv or coupled concatenation), so keep a positive multiple of {plan.divisor}.")
    scores = _scores(scorer, plan) if scorer is not None else None
    if scores is None:  # the criterion does not apply to this group: fall back to magnitude
        scores = _scores(_importance("l1"), plan)
    if scores is None or len(scores) != plan.info.channels:
        raise HwsearchError(f"The importance of group {plan.info.name!r} could not be computed; leave the group at keep 1.0.")
    per_class = torch.stack([scores[list(c)].sum() for c in plan.classes])
    kept = set(torch.argsort(per_class, descending=True)[: n_keep // plan.divisor].tolist())
    return sorted(i for k, c in enumerate(plan.classes) if k not in kept for i in c)


def _cut(dg, plan: GroupPlan, drop: list[int]) -> None:
    """Remove ``drop`` (root channels) of one group through the dependency graph; errors name the group."""
    root = plan.group[0].dep
    name = plan.info.name
    try:
        group = dg.get_pruning_group(root.target.module, root.handler, drop)
        cut = {i for item in group if item.dep.target is root.target and item.dep.handler == root.handler for i in item.idxs}
        if cut != set(drop):
            raise HwsearchError(f"Cutting group {name!r} would remove {len(cut)} channels of {name!r} instead of {len(drop)}; leave the group at keep 1.0.")
        group.prune()
    except HwsearchError:
        raise
    except Exception as exc:
        raise HwsearchError(f"torch-pruning failed to cut group {name!r} ({type(exc).__name__}: {_first_line(exc)}); leave the group at keep 1.0.") from None


def prune_in_place(
    model: nn.Module,
    example_input: torch.Tensor,
    keep_channels: Mapping[str, int],
    importance: str = "l1",
    calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Physically remove channels so that group ``name`` keeps ``keep_channels[name]`` channels.

    ``calibration`` (inputs, labels) supplies the gradients a data-driven criterion (taylor) needs.
    Groups that cannot be cut consistently are never cut; the pruned model is checked to run.
    """
    scorer = _importance(importance)
    output, expected = _probe(model, example_input)
    dg = _graph(model, example_input)
    plans = {p.info.name: p for p in _plans(model, dg, [output])}
    if importance == "taylor":
        if calibration is None:
            raise HwsearchError("Importance 'taylor' needs calibration data; pass task data or use importance 'l1'.")
        model.zero_grad()
        F.cross_entropy(model.train()(calibration[0]), calibration[1]).backward()
        model.eval()
    todo = []
    for name, n_keep in keep_channels.items():
        plan = plans.get(name)
        if plan is None or n_keep >= plan.info.channels:
            continue
        if plan.reason is not None:
            raise HwsearchError(f"Group {name!r} cannot be pruned: {plan.reason}; leave it at keep 1.0.")
        todo.append((plan, _drop(plan, n_keep, scorer)))
    for plan, drop in todo:
        _cut(dg, plan, drop)
    model.zero_grad(set_to_none=True)
    _check_runs(model, example_input, expected, [p.info.name for p, _ in todo])


def _check_runs(model: nn.Module, example_input: torch.Tensor, expected: tuple[int, ...], cut: list[str]) -> None:
    try:
        with torch.no_grad():
            shape = tuple(model.eval()(example_input).shape)
    except Exception as exc:
        raise HwsearchError(f"The model no longer runs after cutting groups {', '.join(map(repr, cut))} ({type(exc).__name__}: {_first_line(exc)}); leave them at keep 1.0.") from None
    if shape != expected:
        raise HwsearchError(f"Cutting groups {', '.join(map(repr, cut))} changed the model's output shape from {expected} to {shape}; leave them at keep 1.0.")
