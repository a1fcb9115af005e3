"""Tasks: how each kind of model output transforms along an orbit and which metrics it gets (``--task``)."""

from __future__ import annotations

import difflib
from typing import Callable

from ..errors import ConfigError
from .base import Task
from .binary import BinaryTask
from .boxes import BoxesTask
from .classify import ClassifyTask
from .dense import DenseTask
from .points import PointsTask
from .vector_field import VectorFieldTask

TASKS: dict[str, Callable[[], Task]] = {
    "classify": ClassifyTask,
    "binary": BinaryTask,
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


def task_for(task: str, outputs: list[str] | None = None) -> tuple[Task, list[str | None] | None]:
    """The Task for a scan and the declared output names: ``--output`` declarations when given (one Task,
    or a MultiOutputTask for several), else ``--task``. The names are None without declarations."""
    if not outputs:
        return get_task(task), None
    from .declared import parse_output
    from .multi import MultiOutputTask

    decls = [parse_output(t) for t in outputs]
    if len(decls) == 1:
        return decls[0].task(), [decls[0].name]
    if any(d.type == "embedding" for d in decls):
        raise ConfigError(f"Expected --output embedding alone, got {len(decls)} --output declarations, do audit the embedding in its own scan.")
    names = [d.name or f"output{i}" for i, d in enumerate(decls)]
    if len(set(names)) != len(names):
        raise ConfigError(f"Expected a different name for every --output, got {names}, do name them NAME=TYPE.")
    return MultiOutputTask([(n, d.task()) for n, d in zip(names, decls)]), [d.name for d in decls]


__all__ = ["Task", "ClassifyTask", "BinaryTask", "task_for", "DenseTask", "VectorFieldTask", "PointsTask", "BoxesTask", "get_task", "register_task", "TASKS"]
