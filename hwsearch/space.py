"""SearchSpace: the choices a policy can make for one model (a model family derives it from the model)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.policy import PRECISIONS, Policy

DEFAULT_KEEP_CHOICES = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)


@dataclass(frozen=True)
class GroupInfo:
    """A set of coupled output channels that must be pruned together."""

    name: str  # the first member layer, in module order
    channels: int
    layers: tuple[str, ...]  # layers whose outputs (or depthwise channels) are cut


@dataclass(frozen=True)
class SearchSpace:
    """Channel groups with their keep choices, and layers with their precision choices."""

    groups: tuple[GroupInfo, ...]
    layers: tuple[str, ...]
    keep_choices: tuple[float, ...] = DEFAULT_KEEP_CHOICES
    precisions: tuple[str, ...] = PRECISIONS
    channel_multiple: int = 8

    @classmethod
    def build(cls, groups: Sequence[GroupInfo], layers: Sequence[str], keep_choices: Sequence[float] = DEFAULT_KEEP_CHOICES,
              precisions: Sequence[str] = PRECISIONS, channel_multiple: int = 8, **extra: Any) -> SearchSpace:
        """A space with its choices checked (keep ratios in (0, 1], known precisions, a positive channel multiple)."""
        if channel_multiple < 1:
            raise HwsearchError(f"channel_multiple={channel_multiple} must be a positive integer such as 8.")
        policy = Policy.from_dict({"keep": {f"choice{i}": k for i, k in enumerate(keep_choices)}, "precision": {p: p for p in precisions}})
        return cls(tuple(groups), tuple(dict.fromkeys(layers)), tuple(sorted(set(policy.keep.values()))), tuple(policy.precision.values()),
                   channel_multiple, **extra)

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    def kept_channels(self, group: GroupInfo, ratio: float) -> int:
        """Channels a group keeps at ``ratio``: rounded to the channel multiple, at least one multiple."""
        m = self.channel_multiple
        if group.channels <= m:
            return group.channels
        return int(min(group.channels, max(m, round(ratio * group.channels / m) * m)))

    def keep_channels(self, policy: Policy) -> dict[str, int]:
        self.validate(policy)
        return {g.name: self.kept_channels(g, policy.keep_for(g.name)) for g in self.groups}

    def validate(self, policy: Policy) -> Policy:
        """Raise if the policy names a group or layer this model does not have."""
        for name in policy.keep:
            if name not in self.group_names:
                raise HwsearchError(f"Policy keep group {name!r} does not exist in this model; run `hwsearch space` to list groups (e.g. {self.group_names[0]!r}).")
        for name in policy.precision:
            if name not in self.layers:
                raise HwsearchError(f"Policy precision layer {name!r} does not exist in this model; run `hwsearch space` to list layers (e.g. {self.layers[0]!r}).")
        return policy

    def suggest(self, trial: Any) -> Policy:
        """Ask an Optuna trial (or ``optuna.trial.FixedTrial``) for one choice per group and layer."""
        keep = {g.name: float(trial.suggest_categorical(f"keep:{g.name}", list(self.keep_choices))) for g in self.groups}
        precision = {name: str(trial.suggest_categorical(f"precision:{name}", list(self.precisions))) for name in self.layers}
        return Policy(keep=keep, precision=precision)

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [asdict(g) | {"layers": list(g.layers)} for g in self.groups],
            "layers": list(self.layers),
            "keep_choices": list(self.keep_choices),
            "precisions": list(self.precisions),
            "channel_multiple": self.channel_multiple,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


@dataclass(frozen=True)
class TransformerSpace(SearchSpace):
    """A transformer's space: ``layer<i>.attn`` groups count attention heads, ``layer<i>.ffn`` groups FFN neurons.

    Heads are kept in whole heads (at least one); neurons in multiples of ``channel_multiple``.
    The precision layers are the same names: each covers the block's linear layers.
    """

    head_groups: frozenset[str] = frozenset()

    def kept_channels(self, group: GroupInfo, ratio: float) -> int:
        if group.name in self.head_groups:
            return int(min(group.channels, max(1, round(ratio * group.channels))))
        return super().kept_channels(group, ratio)
