"""User extension points named ``package.module:attribute`` (tasks, models, latency predictors).

An import path is code: importing it runs that module, and hwsearch then calls what it names.
Configs and command lines that name one are trusted input (see the README's "Security" section).
What it names must be a factory of your own: a Python function or class defined outside the
standard library, so that a value such as ``os:system`` or ``subprocess:run`` is refused before
anything is called.
"""

from __future__ import annotations

import importlib
import inspect
import sys
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
    obj = getattr(module, attr)
    check_factory(spec, what, obj)
    return obj


def _stdlib(module: str) -> bool:
    top = module.split(".", 1)[0]
    return top in sys.stdlib_module_names or top in sys.builtin_module_names


def check_factory(spec: str, what: str, obj: Any) -> None:
    """Refuse an import path that does not name a user's factory (before it is ever called)."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        raise HwsearchError(f"{what} {spec!r} names a {type(obj).__name__}, not a Python function or class; an import path is code that hwsearch calls, "
                            "so it must name a factory in your own module, e.g. my_models:make_model.")
    if _stdlib(getattr(obj, "__module__", None) or ""):
        raise HwsearchError(f"{what} {spec!r} names {obj.__module__}.{obj.__qualname__} from the Python standard library; an import path is code "
                            "that hwsearch calls, so it must name a factory in your own module, e.g. my_models:make_model.")
