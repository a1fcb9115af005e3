"""Tasks: how each kind of model output transforms along an orbit and which metrics it gets (``--task``)."""

from __future__ import annotations

import difflib
from typing import Callable

from ..errors import ConfigError
from .base import Task
from .boxes import BoxesTask
from .classify import ClassifyTask
from .dense import DenseTask
from .points import PointsTask
from .vector_field import VectorFieldTask

TASKS: dict[str, Callable[[], Task]] = {
    "classify": ClassifyTask,
    "dense": DenseTask,
    "vector-field": VectorFieldTask,
    "points": PointsTask,
    "boxes": BoxesTask,
}


def register_task(name: str, factory: Callable[[], Task]) -> None:
    TASKS[name] = factory


def get_task(name: str) -> Task:
    """A fresh Task for ``--task NAME``."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid tasks: {', '.join(TASKS)}"
        raise ConfigError(f"Unknown --task {name!r}; {hint}")
    return TASKS[name]()


__all__ = ["Task", "ClassifyTask", "DenseTask", "VectorFieldTask", "PointsTask", "BoxesTask", "get_task", "register_task", "TASKS"]
