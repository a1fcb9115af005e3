"""Modules imported on first attribute use, so that commands which never touch torch never load it."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, MutableMapping


class LazyModule:
    """Stands in for ``import NAME as ALIAS`` at a module's top: the first attribute read imports NAME
    and rebinds ALIAS in that module's namespace to the real module, so later reads cost nothing extra.

    ``torch = LazyModule("torch", globals())`` keeps `eqaudit symmetries` (which only reads class
    attributes of the catalogue) from paying for `import torch`.
    """

    __slots__ = ("_name", "_namespace", "_alias", "_module")

    def __init__(self, name: str, namespace: MutableMapping[str, Any] | None = None, alias: str | None = None) -> None:
        self._name = name
        self._namespace = namespace
        self._alias = alias or name.rpartition(".")[2]
        self._module: ModuleType | None = None

    def load(self) -> ModuleType:
        if self._module is None:
            self._module = importlib.import_module(self._name)
            if self._namespace is not None and self._namespace.get(self._alias) is self:
                self._namespace[self._alias] = self._module
        return self._module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (loaded)' if self._module is not None else ''}>"
