"""Tasks: how each kind of model output transforms along an orbit and which metrics it gets (``--task``)."""

from __future__ import annotations

import difflib
from typing import Callable

from ..errors import ConfigError
from .base import Task
from .classify import ClassifyTask

TASKS: dict[str, Callable[[], Task]] = {"classify": ClassifyTask}


def register_task(name: str, factory: Callable[[], Task]) -> None:
    TASKS[name] = factory


def get_task(name: str) -> Task:
    """A fresh Task for ``--task NAME``."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid tasks: {', '.join(TASKS)}"
        raise ConfigError(f"Unknown --task {name!r}; {hint}")
    return TASKS[name]()


__all__ = ["Task", "ClassifyTask", "get_task", "register_task", "TASKS"]
