"""Resolve a ``module:callable`` or ``path/to/file.py:callable`` model factory with the standard library."""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
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


def factory_origin(spec: str, search_dirs: list[Path]) -> Path | None:
    """The file (or package folder) that importing ``spec`` would run from ``search_dirs`` or, for the
    ``file.py:callable`` form, from the current directory; None when it comes from the installed
    environment (sys.path). Nothing is imported to find out."""
    mod_part = spec.rsplit(":", 1)[0] if ":" in spec else spec
    if not mod_part:
        return None
    if mod_part.endswith(".py") or "/" in mod_part or "\\" in mod_part:
        candidates = [Path(mod_part)] if Path(mod_part).is_absolute() else [d / mod_part for d in search_dirs] + [Path(mod_part)]
        return next((c.resolve() for c in candidates if c.is_file()), None)
    top = mod_part.split(".")[0]
    if not top.isidentifier():
        return None  # not importable at all: resolve_factory says so
    found = importlib.machinery.PathFinder.find_spec(top, [str(d) for d in search_dirs])
    if found is None:
        return None
    if found.origin and found.origin not in ("namespace", "built-in", "frozen"):
        return Path(found.origin).resolve()
    locations = list(found.submodule_search_locations or [])
    return Path(locations[0]).resolve() if locations else None


def check_vouched(spec: str, search_dirs: list[Path], *, origin: str, project: Path | None) -> None:
    """Refuse a factory named by a file that came with the model (a sidecar or --config) when the code
    it would import lies outside the current project (see README, "Trust"); ModelLoadError, exit 3."""
    path = factory_origin(spec, search_dirs)
    if path is None or (project is not None and path.is_relative_to(Path(project).resolve())):
        return
    where = (f"outside the current project {str(project)!r}" if project is not None
             else "outside any project (no pyproject.toml at or above the current directory)")
    raise ModelLoadError(
        f"Model factory {spec!r} from {origin} would import and run {str(path)!r}, code that came with the model "
        f"and lies {where}; pass --trust (or set EQAUDIT_TRUST=1) if you vouch for it, or name the factory yourself with --model-factory."
    )


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
