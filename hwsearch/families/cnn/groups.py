"""Which channels of a Torch-Pruning group go together, and which groups cannot be pruned safely.

Torch-Pruning's dependency graph couples layers through residual adds, depthwise convs and
concatenations, but two structures need more than its merged groups say:

* a **grouped conv** (``1 < groups < in_channels``, ResNeXt / RegNet) keeps its ``groups``: each
  conv group must lose the same channels, so the group's channels are removed in sets of one
  position per conv group (``groups`` channels at a time, the way Torch-Pruning's ``MetaPruner``
  repeats its indices per channel group); the conv that feeds it and the layers it feeds follow;
* **coupled concatenation inputs** (GhostNet's ``cat([x, cheap(x)])`` with a depthwise ``cheap``,
  inside a residual) map several of the group's root channels onto one channel of a member layer;
  those root channels go together (cut one alone and Torch-Pruning's closure cuts its partners too,
  down to empty layers).

:func:`plan_group` finds those sets (*classes* of root channels) from the group's dependency
closure before Torch-Pruning merges it, and returns a reason instead where the group cannot be cut
consistently: classes of unequal sizes, a concatenation or index Torch-Pruning cannot map, a
grouped conv fed by several groups, or a single class (nothing could be kept). Such a group is
left out of the search space with a one-line note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from hwsearch.space import GroupInfo


@dataclass(frozen=True)
class GroupPlan:
    """One prunable group: its record, the classes of root channels removed together, or why it is left out."""

    info: GroupInfo
    group: Any  # the torch-pruning Group (full indices)
    classes: tuple[tuple[int, ...], ...] = ()
    reason: str | None = None  # set when the group cannot be pruned safely
    remapped: bool = False  # its channels pass a grouped conv or an op that remaps indices (cat, split, slice)

    @property
    def divisor(self) -> int:
        """Channels removed at a time (the size of every class)."""
        return len(self.classes[0]) if self.classes else 1

    @property
    def note(self) -> str:
        return f"group {self.info.name!r} ({', '.join(self.info.layers)}) left out of the search space: {self.reason}"


class _Unsafe(Exception):
    pass


def _closure(group) -> list[tuple[Any, list]]:
    """The group's (dependency, [(idx, root_idx), ...]) items before Torch-Pruning merges them.

    The same traversal as ``DependencyGraph.get_pruning_group``, keeping every path: a member
    reached from two root channels lists the index under both."""
    from torch_pruning import _helpers

    root = group[0].dep
    items = [(root, [_helpers._HybridIndex(idx=i, root_idx=i) for i in range(len(group[0].idxs))])]
    seen = {(root.target, root.handler): {tuple(items[0][1])}}
    stack, visited = list(items), set()
    while stack:
        dep, idxs = stack.pop()
        visited.add(dep.target)
        for new in dep.target.dependencies:
            if not new.is_triggered_by(dep.handler):
                continue
            mapped = idxs
            for mapping in new.index_mapping:
                if mapping is not None:
                    mapped = mapping(mapped)
            if not mapped:
                continue
            known = seen.setdefault((new.target, new.handler), set())
            if new.target in visited and tuple(mapped) in known:
                continue
            known.add(tuple(mapped))
            items.append((new, mapped))
            stack.append((new, mapped))
    return items


def _layer_dim(dg, dep) -> tuple[int | None, int]:
    """(channels of the dimension a dependency cuts, channels per conv group there, 0 if not a grouped conv) for a layer; (None, 0) for an op."""
    module = dep.target.module
    if not isinstance(module, nn.Module) or type(module).__module__.startswith("torch_pruning"):
        return None, 0
    out = dg.is_out_channel_pruning_fn(dep.handler)
    dim = dg.get_out_channels(module) if out else dg.get_in_channels(module)
    if not isinstance(module, nn.Conv2d) or module.groups == 1 or dim is None:
        return dim, 0
    name = dg._module2name.get(module, type(module).__name__)
    if module.groups == module.out_channels and module.in_channels != module.out_channels:
        raise _Unsafe(f"conv {name!r} has groups == out_channels ({module.groups}) but {module.in_channels} input channels, which torch-pruning would cut as a depthwise conv")
    if module.groups == module.in_channels == module.out_channels:  # depthwise: cut with its input, one channel at a time
        return dim, 0
    if dim == module.groups:  # a channel-multiplier depthwise conv's input: one channel per conv group
        raise _Unsafe(f"conv {name!r} has one input channel per conv group (groups={module.groups}), so its input channels cannot be removed without removing whole conv groups")
    return dim, dim // module.groups


def _check_concats(items) -> None:
    from torch_pruning import ops

    for dep, _ in items:
        node = dep.target
        if node.type in (ops.OPTYPE.CONCAT, ops.OPTYPE.SPLIT) and getattr(node.module, "offsets", None) is None:
            kind = "torch.cat" if node.type == ops.OPTYPE.CONCAT else "torch.split"
            raise _Unsafe(f"torch-pruning cannot map the channels of a {kind} in it (it could not infer the sizes of its parts, e.g. a concatenation that is sliced afterwards)")


def _remapped(items) -> bool:
    from torch_pruning import ops

    remap = (ops.OPTYPE.CONCAT, ops.OPTYPE.SPLIT, ops.OPTYPE.SLICE, ops.OPTYPE.UNBIND, ops.OPTYPE.EXPAND)
    return any(dep.target.type in remap or dep.target.type == ops.OPTYPE.CONV and dep.target.module.groups > 1 for dep, _ in items)


def channel_classes(dg, group, items: list | None = None) -> tuple[tuple[int, ...], ...]:
    """The classes of root channels that must be removed together (raises :class:`_Unsafe` with the reason)."""
    items = _closure(group) if items is None else items
    _check_concats(items)
    n = len(group[0].idxs)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple, int] = {}
    covered: dict[tuple, set[int]] = {}
    for dep, idxs in items:
        dim, chunk = _layer_dim(dg, dep)
        for h in idxs:
            if h.root_idx is None or not 0 <= h.root_idx < n or (dim is not None and not 0 <= h.idx < dim):
                raise _Unsafe(f"torch-pruning maps its channels outside layer {dep.target.name!r}")
            if chunk:
                covered.setdefault((dep.target, dep.handler, dim), set()).add(h.idx)
            key = (dep.target, dep.handler, h.idx % chunk if chunk else h.idx)
            a, b = find(owner.setdefault(key, h.root_idx)), find(h.root_idx)
            parent[max(a, b)] = min(a, b)
    for (node, _, dim), idxs in covered.items():
        if len(idxs) != dim:
            raise _Unsafe(f"grouped conv {node.name!r} (groups={node.module.groups}) gets {len(idxs)} of its {dim} channels from this group and the rest from others, so its conv groups cannot lose the same channels")
    classes: dict[int, list[int]] = {}
    for i in range(n):
        classes.setdefault(find(i), []).append(i)
    out = tuple(tuple(c) for c in classes.values())
    sizes = sorted({len(c) for c in out})
    if len(sizes) > 1:
        raise _Unsafe(f"its channels are coupled in sets of unequal sizes ({', '.join(map(str, sizes))}), e.g. through a concatenation of coupled inputs")
    if len(out) == 1:
        raise _Unsafe(f"all its {n} channels are coupled into one set (e.g. a grouped conv with one channel per conv group), so none can be removed")
    return out


def plan_group(dg, info: GroupInfo, group) -> GroupPlan:
    items = _closure(group)
    try:
        return GroupPlan(info, group, channel_classes(dg, group, items), remapped=_remapped(items))
    except _Unsafe as exc:
        return GroupPlan(info, group, reason=str(exc), remapped=True)
