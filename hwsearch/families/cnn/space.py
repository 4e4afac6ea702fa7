"""The CNN family's search space: channel groups that remove several channels at a time, and the groups left out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hwsearch.space import GroupInfo, SearchSpace, round_channels


@dataclass(frozen=True)
class CNNSpace(SearchSpace):
    """A :class:`~hwsearch.space.SearchSpace` whose groups may remove channels in sets (``divisors``).

    A group through a grouped conv with G conv groups removes G channels at a time (one per conv
    group); a GhostNet-style group whose concatenated inputs are coupled removes its coupled pairs
    together. Such a group keeps a multiple of lcm(``channel_multiple``, its divisor) channels (all
    of them when that is not below its size). ``notes``: one line per group left out of the space
    (a structure that cannot be pruned safely), printed by ``hwsearch space``.
    """

    divisors: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = ()

    def divisor(self, group: GroupInfo) -> int:
        return dict(self.divisors).get(group.name, 1)

    def kept_channels(self, group: GroupInfo, ratio: float) -> int:
        """Channels a group keeps at ``ratio``: the base rule (:func:`~hwsearch.space.round_channels`) with lcm(channel multiple, divisor)."""
        return round_channels(group.channels, ratio, math.lcm(self.channel_multiple, self.divisor(group)))

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        for g, info in zip(d["groups"], self.groups):
            g["divisor"] = self.divisor(info)
        return d | {"notes": list(self.notes)}
