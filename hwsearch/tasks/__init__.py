"""Task registry: built-in tasks by name, user tasks by ``package.module:function``."""

from __future__ import annotations

from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.imports import import_object
from hwsearch.tasks.base import Agreement, Split, Task

BUILTIN_TASKS = ("digits", "cifar10", "fashion", "imagenet-photos", "minilm")


def get_task(name: str, **options: Any) -> Task:
    """Build a task by built-in name (``digits``, ``cifar10``, ``fashion``, ``imagenet-photos``, ``minilm``) or ``package.module:function``."""
    if name == "digits":
        from hwsearch.tasks.digits import make_task
    elif name == "cifar10":
        from hwsearch.tasks.cifar10 import make_task
    elif name == "fashion":
        from hwsearch.tasks.fashion import make_task
    elif name == "imagenet-photos":
        from hwsearch.tasks.photos import make_task
    elif name == "minilm":
        from hwsearch.tasks.minilm import make_task
    elif ":" in name:
        make_task = import_object(name, "Task")
    else:
        raise HwsearchError(f"Task {name!r} is unknown; use one of {', '.join(BUILTIN_TASKS)} or package.module:function.")
    task = make_task(**options)
    if not isinstance(task, Task):
        raise HwsearchError(f"Task factory {name!r} returned {type(task).__name__}, not hwsearch.tasks.Task; return a Task instance.")
    return task


__all__ = ["BUILTIN_TASKS", "Agreement", "Split", "Task", "get_task"]
