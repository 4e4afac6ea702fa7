"""SearchSpace: the choices a policy can make for one model (a model family derives it from the model)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.policy import LINEAR_ONLY, PRECISIONS, Policy, QuantRecipe, check_precision

DEFAULT_KEEP_CHOICES = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
_QUANT_FIELDS = tuple(f.name for f in dataclasses.fields(QuantRecipe))


@dataclass(frozen=True)
class GroupInfo:
    """A set of coupled output channels that must be pruned together."""

    name: str  # the first member layer, in module order
    channels: int
    layers: tuple[str, ...]  # layers whose outputs (or depthwise channels) are cut


def round_channels(channels: int, ratio: float, multiple: int) -> int:
    """Channels kept of ``channels`` at ``ratio``: rounded to ``multiple``, at least one multiple; all of
    them at ratio 1 (a group of 40 channels in multiples of 16 is not cut to 32 unasked)."""
    if channels <= multiple or ratio >= 1.0:
        return channels
    return int(min(channels, max(multiple, round(ratio * channels / multiple) * multiple)))


@dataclass(frozen=True)
class SearchSpace:
    """Channel groups with their keep choices, and layers with their precision choices."""

    groups: tuple[GroupInfo, ...]
    layers: tuple[str, ...]
    keep_choices: tuple[float, ...] = DEFAULT_KEEP_CHOICES
    precisions: tuple[str, ...] = PRECISIONS
    channel_multiple: int = 8
    # layer -> the precisions its layer type can take (a layer not listed can take any): a conv cannot take int8d
    layer_precisions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # model-level quantization settings the search chooses (QuantRecipe field -> choices); () = the policy default
    quant_choices: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @classmethod
    def build(cls, groups: Sequence[GroupInfo], layers: Sequence[str], keep_choices: Sequence[float] = DEFAULT_KEEP_CHOICES,
              precisions: Sequence[str] = PRECISIONS, channel_multiple: int = 8, layer_precisions: Mapping[str, Sequence[str]] | None = None,
              **extra: Any) -> SearchSpace:
        """A space with its choices checked (keep ratios in (0, 1], known precisions, a positive channel
        multiple, every layer left at least one precision it can take)."""
        if channel_multiple < 1:
            raise HwsearchError(f"channel_multiple={channel_multiple} must be a positive integer such as 8.")
        policy = Policy.from_dict({"keep": {f"choice{i}": k for i, k in enumerate(keep_choices)}, "precision": {p: p for p in precisions}})
        can = tuple((layer, tuple(check_precision(p, f"layer_precisions[{layer!r}]") for p in ps)) for layer, ps in (layer_precisions or {}).items())
        space = cls(tuple(groups), tuple(dict.fromkeys(layers)), tuple(sorted(set(policy.keep.values()))), tuple(policy.precision.values()),
                    channel_multiple, can, **extra)
        for layer in space.layers:
            if not space.choices(layer):
                raise HwsearchError(f"space.precisions {list(space.precisions)} leaves layer {layer!r} nothing to run in (it can take {', '.join(space.can_take(layer))}); add one of those to space.precisions.")
        return space

    def with_quant_choices(self, choices: Mapping[str, Sequence[Any]]) -> SearchSpace:
        """This space with model-level quantization settings as search dimensions, e.g.
        ``{"activation_type": ["uint8", "int8"], "calibration": ["minmax", "percentile"]}`` (each value checked)."""
        checked = []
        for key, values in choices.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise HwsearchError(f"Quantization choices for {key!r} must be a non-empty list, e.g. [\"minmax\", \"percentile\"]; got {values!r}.")
            checked.append((str(key), QuantRecipe.checked_values(key, values)))
        return dataclasses.replace(self, quant_choices=tuple(checked))

    def can_take(self, layer: str) -> tuple[str, ...]:
        """The precisions ``layer``'s type can run in (whether or not the space offers them)."""
        return dict(self.layer_precisions).get(layer, PRECISIONS)

    def choices(self, layer: str) -> tuple[str, ...]:
        """The precisions the search offers ``layer``: those of ``precisions`` its type can take."""
        can = self.can_take(layer)
        return tuple(p for p in self.precisions if p in can)

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    def kept_channels(self, group: GroupInfo, ratio: float) -> int:
        """Channels a group keeps at ``ratio``: rounded to the channel multiple (:func:`round_channels`)."""
        return round_channels(group.channels, ratio, self.channel_multiple)

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
        for layer in self.layers:
            prec, can = policy.precision_for(layer), self.can_take(layer)
            if prec not in can:
                why = f" ({prec} runs only linear/MatMul/Gemm layers)" if prec in LINEAR_ONLY else ""
                raise HwsearchError(f"Policy precision {prec!r} is not available for layer {layer!r}{why}; that layer can take {', '.join(can)}.")
        return policy

    def suggest(self, trial: Any) -> Policy:
        """Ask an Optuna trial (or ``optuna.trial.FixedTrial``) for one choice per group and layer."""
        keep = {g.name: float(trial.suggest_categorical(f"keep:{g.name}", list(self.keep_choices))) for g in self.groups}
        precision = {name: str(trial.suggest_categorical(f"precision:{name}", list(self.choices(name)))) for name in self.layers}
        quant = {key: trial.suggest_categorical(f"quant:{key}", list(values)) for key, values in self.quant_choices}
        return Policy(keep=keep, precision=precision, quant=QuantRecipe.from_dict(quant))

    def default_recipe(self) -> QuantRecipe:
        """The static-int8 recipe of a policy that names none: each quantization setting's default where the space
        offers it, else the setting's first choice."""
        default = QuantRecipe()
        return QuantRecipe.from_dict({key: getattr(default, key) if getattr(default, key) in values else values[0] for key, values in self.quant_choices})

    def uniform(self, keep: float, precision: str) -> Policy:
        """A sweep's point: ``keep`` on every group, ``precision`` on every layer that can take it (the others their
        first choice, e.g. a conv for int8d), the default recipe."""
        return Policy(keep={g: keep for g in self.group_names},
                      precision={layer: precision if precision in self.choices(layer) else self.choices(layer)[0] for layer in self.layers},
                      quant=self.default_recipe())

    def identity(self, policy: Policy) -> tuple:
        """What makes two policies build the same model: every group's keep ratio (rounded to 6 digits) and every
        layer's precision with the defaults folded in, and the static-int8 recipe."""
        return (tuple(round(policy.keep_for(g), 6) for g in self.group_names), tuple(policy.precision_for(layer) for layer in self.layers),
                tuple(getattr(policy.quant, name) for name in _QUANT_FIELDS))

    def params(self, policy: Policy, where: str) -> dict[str, Any]:
        """Optuna parameters that make :meth:`suggest` return ``policy``; every choice must be in the space
        (else an error naming ``where``, the choice and the space's choices)."""
        self.validate(policy)
        params: dict[str, Any] = {}
        for g in self.group_names:
            ratio = policy.keep_for(g)
            if ratio not in self.keep_choices:
                raise HwsearchError(f"{where}: keep {ratio} for group {g!r} is not one of space.keep_choices {list(self.keep_choices)}; use one of those ratios.")
            params[f"keep:{g}"] = ratio
        for layer in self.layers:
            prec = policy.precision_for(layer)
            if prec not in self.precisions:
                raise HwsearchError(f"{where}: precision {prec!r} for layer {layer!r} is not one of space.precisions {list(self.precisions)}; add it to space.precisions or change the policy.")
            params[f"precision:{layer}"] = prec
        for key, values in self.quant_choices:
            value = getattr(policy.quant, key)
            if value not in values:
                raise HwsearchError(f"{where}: quantization setting {key}={value!r} is not one of the space's choices {list(values)}; change the policy or the choices.")
            params[f"quant:{key}"] = value
        return params

    def policy_from_params(self, params: Mapping[str, Any]) -> Policy | None:
        """The policy of a trial's parameters (the inverse of :meth:`params`), or None when some are missing."""
        names = [f"keep:{g}" for g in self.group_names] + [f"precision:{layer}" for layer in self.layers] + [f"quant:{key}" for key, _ in self.quant_choices]
        if any(name not in params for name in names):
            return None
        return Policy(keep={g: float(params[f"keep:{g}"]) for g in self.group_names}, precision={layer: str(params[f"precision:{layer}"]) for layer in self.layers},
                      quant=QuantRecipe.from_dict({key: params[f"quant:{key}"] for key, _ in self.quant_choices}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [asdict(g) | {"layers": list(g.layers)} for g in self.groups],
            "layers": list(self.layers),
            "keep_choices": list(self.keep_choices),
            "precisions": list(self.precisions),
            "layer_precisions": {layer: list(self.choices(layer)) for layer in self.layers},  # what the search offers each layer
            "layer_can_take": {layer: list(self.can_take(layer)) for layer in self.layers},  # what its type could run in (space.precisions widens the offer)
            "quant_choices": {key: list(values) for key, values in self.quant_choices},
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
