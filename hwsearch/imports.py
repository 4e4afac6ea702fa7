"""User extension points named ``package.module:attribute`` (tasks, models, latency predictors).

An import path is code: importing it runs that module. Configs and command lines that name one
are trusted input (see the README's security notes).
"""

from __future__ import annotations

import importlib
from typing import Any

from hwsearch.errors import HwsearchError


def import_object(spec: str, what: str) -> Any:
    """Import ``package.module:attribute`` or raise an error saying the expected form."""
    if ":" not in spec:
        raise HwsearchError(f"{what} {spec!r} is not a built-in name and not of the form package.module:function; fix the name or give the import path.")
    mod_name, attr = spec.split(":", 1)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise HwsearchError(f"{what} {spec!r}: module {mod_name!r} cannot be imported ({exc}); put it on PYTHONPATH or install it.") from None
    if not hasattr(module, attr):
        raise HwsearchError(f"{what} {spec!r}: module {mod_name!r} has no attribute {attr!r}; check the function name.")
    return getattr(module, attr)
