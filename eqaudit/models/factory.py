"""Resolve a ``module:callable`` or ``path/to/file.py:callable`` model factory with the standard library."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, ModelLoadError


def resolve_factory(spec: str, search_dirs: list[Path]) -> Callable:
    """Import the callable named by ``spec``.

    ``module:callable`` is imported with ``search_dirs`` (the sidecar's folder, the model's folder)
    tried first; ``file.py:callable`` is loaded from that file (relative to the first search dir that
    has it). The callable may be dotted (``module:Class.build``).
    """
    if ":" not in spec:
        raise ConfigError(
            f"Expected --model-factory as module:callable (e.g. mymodels:ResNet), got {spec!r}; add the callable name after ':'."
        )
    mod_part, attr = spec.rsplit(":", 1)
    if not mod_part or not attr:
        raise ConfigError(f"Expected --model-factory as module:callable, got {spec!r}.")
    if mod_part.endswith(".py") or "/" in mod_part or "\\" in mod_part:
        module = _load_file(mod_part, search_dirs)
    else:
        module = _import(mod_part, search_dirs)
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"Model factory {spec!r}: module {mod_part!r} has no attribute {part!r}; check the name after ':'."
            ) from None
    if not callable(obj):
        raise ConfigError(f"Model factory {spec!r} is not callable; name a class or function.")
    return obj


def _load_file(mod_part: str, search_dirs: list[Path]):
    candidates = [Path(mod_part)] if Path(mod_part).is_absolute() else [d / mod_part for d in search_dirs] + [Path(mod_part)]
    for path in candidates:
        if path.is_file():
            name = f"_eqaudit_factory_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                raise ModelLoadError(f"Importing model factory file {str(path)!r} failed: {exc!r}.") from exc
            return module
    raise ConfigError(f"Model factory file {mod_part!r} not found (looked in {', '.join(map(str, candidates))}).")


@contextlib.contextmanager
def importable(folders: list[Path]):
    """Temporarily put ``folders`` first on sys.path (for factories and trusted pickles)."""
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for f in added:
            if f in sys.path:
                sys.path.remove(f)


def _import(mod_part: str, search_dirs: list[Path]):
    try:
        with importable(search_dirs):
            return importlib.import_module(mod_part)
    except ModuleNotFoundError as exc:
        if exc.name and mod_part.startswith(exc.name):
            raise ConfigError(
                f"Model factory module {mod_part!r} not found (searched {', '.join(map(str, search_dirs))} and sys.path); "
                "put it next to the model or on PYTHONPATH."
            ) from None
        raise ModelLoadError(f"Importing model factory module {mod_part!r} failed: {exc!r}.") from exc
    except Exception as exc:
        raise ModelLoadError(f"Importing model factory module {mod_part!r} failed: {exc!r}.") from exc
