"""Kernel keys: one record per operator (or fused block) a device really executes.

What a kernel *is* belongs to a model family's lowering (a CNN's fused NCHWc conv, a transformer's
whole attention block); this record is only its key. Key text (one line, ``;``-separated,
stable): ``op;precision;layout;CxHxW;co=..;k=..;s=..;g=..;act;sum``, for example
``conv;fp32;nchwc;32x16x16;co=64;k=3;s=2;g=1;relu;-``. ``act`` is ``-``, ``relu`` (the field is then
``False`` / ``True``, as in every table before the other activations) or an activation's name
(:data:`ACTIVATIONS`, the field is that name). Lowerings work on the plain tuple of the
same fields in the same order (:meth:`Kernel.fields`), which is what a table is looked up by.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

ACTIVATIONS = ("hswish", "hsigmoid", "sigmoid", "silu")  # besides relu (True) and none (False)
_KEY = re.compile(r"^(\w+);(fp32|int8d|int8);(\w+|-);(\d+)x(\d+)x(\d+);co=(\d+);k=(\d+);s=(\d+);g=(\d+);(relu|hswish|hsigmoid|sigmoid|silu|-);(sum|-)$")


def act_name(act: bool | str) -> str:
    """The key text of an activation field: ``-`` (none), ``relu`` (True) or the activation's name."""
    return act if isinstance(act, str) else "relu" if act else "-"


@functools.total_ordering
@dataclass(frozen=True)
class Kernel:
    """One executed kernel: operator, executed precision, layout, input shape (C, H, W) and attributes."""

    op: str
    precision: str  # what really executes: fp32, int8 (static) or int8d (dynamic); fp16 layers run as fp32 on ORT's CPU provider
    layout: str  # nchwc, nchw, nhwc or - (not spatial)
    c: int
    h: int
    w: int
    co: int = 0
    k: int = 0
    s: int = 1
    g: int = 1
    act: bool | str = False  # False, True (ReLU / ReLU6) or one of ACTIVATIONS
    sum: bool = False

    def __lt__(self, other: Kernel) -> bool:  # kernels sort by their key fields, the activation by its key text
        return self._order() < other._order()

    def _order(self) -> tuple:
        return (*self.fields()[:10], act_name(self.act), self.sum)

    @property
    def key(self) -> str:
        return (f"{self.op};{self.precision};{self.layout};{self.c}x{self.h}x{self.w};co={self.co};k={self.k};s={self.s};g={self.g};"
                f"{act_name(self.act)};{'sum' if self.sum else '-'}")

    @classmethod
    def parse(cls, key: str) -> Kernel:
        m = _KEY.match(key.strip())
        if not m:
            raise ValueError(f"Kernel key {key!r} is malformed; expected e.g. 'conv;fp32;nchwc;32x16x16;co=64;k=3;s=2;g=1;relu;-'.")
        op, prec, lay, c, h, w, co, k, s, g, act, sm = m.groups()
        return cls(op, prec, lay, int(c), int(h), int(w), int(co), int(k), int(s), int(g), act if act in ACTIVATIONS else act == "relu", sm == "sum")

    def fields(self) -> tuple:
        """The kernel as the plain tuple lowerings produce: (op, precision, layout, c, h, w, co, k, s, g, act, sum)."""
        return (self.op, self.precision, self.layout, self.c, self.h, self.w, self.co, self.k, self.s, self.g, self.act, self.sum)
