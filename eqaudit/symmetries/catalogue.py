"""The symmetry catalogue: a registry of named symmetries, their parameters, and the spec-string parser.

A spec is ``NAME[:key=value[,key=value...]]`` (whitespace around names, keys and values is ignored;
names, keys and choice values are case-insensitive), e.g. ``rot90``, ``flip:axis=v``,
``translate:max=4,mode=zero``, ``scale:min=0.5,max=2,steps=9``.

Symmetries of any domain join the catalogue with :func:`register`, either as a class decorator
(the class carries ``NAME``, ``DESCRIPTION``, ``PARAMS``, ``EXACT``, ``DOMAIN``) or as a call with a
factory; the parser only reads the registry. Modules listed in ``BUILTIN_MODULES`` are imported the
first time the catalogue is read, so their ``@register`` lines run.
"""

from __future__ import annotations

import difflib
import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..errors import SymmetryError
from .base import ParamSpec, Symmetry

BUILTIN_MODULES: tuple[str, ...] = ("eqaudit.symmetries.images", "eqaudit.symmetries.frames", "eqaudit.symmetries.points",
                                   "eqaudit.symmetries.volumes")
"""Modules whose import registers the built-in symmetries (a new domain adds its module here)."""

DEFAULT_LAYOUTS: dict[str, tuple[str, ...]] = {"image": ("NCHW", "NHWC", "NCL", "NLC"), "points": ("NPD",), "volume": ("NCDHW", "NDHWC")}
"""Input layouts (``--layout``, see eqaudit.layouts) a symmetry of each domain acts on, unless its class says
otherwise with a ``LAYOUTS`` attribute (rot90, say, needs 2-D images: NCHW and NHWC only)."""


@dataclass(frozen=True)
class CatalogueEntry:
    """One named symmetry: how to build it (``factory(**params)``) and what the catalogue prints about it."""

    name: str
    factory: Callable[..., Symmetry]
    description: str
    params: tuple[ParamSpec, ...]
    exact: bool
    domain: str
    layouts: tuple[str, ...] = ()

    def defaults(self) -> dict[str, object]:
        return {p.name: p.default for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``eqaudit symmetries``: name, domain, layouts, exact, description and parameters."""
        return {
            "name": self.name,
            "domain": self.domain,
            "layouts": list(self.layouts),
            "exact": self.exact,
            "description": self.description,
            "params": [
                {
                    "name": p.name,
                    "type": p.kind.__name__,
                    "default": p.default,
                    "help": p.help,
                    "choices": list(p.choices),
                }
                for p in self.params
            ],
        }


_REGISTRY: dict[str, CatalogueEntry] = {}
_loaded = False


def register(
    cls: type | None = None,
    *,
    name: str | None = None,
    factory: Callable[..., Symmetry] | None = None,
    description: str | None = None,
    params: Sequence[ParamSpec] | None = None,
    exact: bool | None = None,
    domain: str | None = None,
    layouts: Sequence[str] | None = None,
    replace: bool = False,
):
    """Add a symmetry to the catalogue.

    As a decorator, ``@register`` (or ``@register(...)`` with overrides) on a Symmetry subclass whose
    class attributes ``NAME``, ``DESCRIPTION``, ``PARAMS``, ``EXACT``, ``DOMAIN`` and optionally
    ``LAYOUTS`` describe it; the class is called with every parameter as a keyword argument. As a call,
    ``register(name=..., factory=..., description=..., params=..., exact=..., domain=...)`` registers
    any factory. Without ``layouts`` the domain's ``DEFAULT_LAYOUTS`` apply. Registering a taken name raises ValueError unless ``replace=True``.
    """

    def add(target: type | None) -> Any:
        dom = domain if domain is not None else getattr(target, "DOMAIN")
        lay = layouts if layouts is not None else getattr(target, "LAYOUTS", None)
        entry = CatalogueEntry(
            name=(name if name is not None else getattr(target, "NAME")).strip().lower(),
            factory=factory if factory is not None else target,
            description=description if description is not None else getattr(target, "DESCRIPTION", ""),
            params=tuple(params if params is not None else getattr(target, "PARAMS", ())),
            exact=bool(exact if exact is not None else getattr(target, "EXACT")),
            domain=dom,
            layouts=tuple(lay if lay is not None else DEFAULT_LAYOUTS.get(dom, ())),
        )
        if entry.name in _REGISTRY and not replace and _REGISTRY[entry.name].factory is not entry.factory:
            raise ValueError(f"symmetry {entry.name!r} is already registered; pass replace=True to override it")
        _REGISTRY[entry.name] = entry
        return target if target is not None else entry

    if cls is not None:
        return add(cls)
    if factory is not None:
        return add(None)
    return add


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def catalogue_entries() -> list[CatalogueEntry]:
    """Every registered symmetry, in registration order (images first), for ``eqaudit symmetries``."""
    _load_builtins()
    return list(_REGISTRY.values())


def symmetry_names() -> list[str]:
    """Registered names, in registration order."""
    return [e.name for e in catalogue_entries()]


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def get_entry(name: str) -> CatalogueEntry:
    """The catalogue entry called ``name`` (case-insensitive); SymmetryError with a suggestion if unknown."""
    _load_builtins()
    key = name.strip().lower()
    if key not in _REGISTRY:
        names = sorted(_REGISTRY)
        raise SymmetryError(
            f"Unknown symmetry {name!r}: expected one of {', '.join(names)}, got {name!r}.{_did_you_mean(key, names)}"
            " Run `eqaudit symmetries` to list them with their parameters."
        )
    return _REGISTRY[key]


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"rotate: step=15, max=90"`` -> ``("rotate", {"step": "15", "max": "90"})``, checking the grammar only."""
    if not isinstance(spec, str) or not spec.strip():
        raise SymmetryError(
            f"Expected a symmetry spec NAME[:key=value,...], got {spec!r}, do pass e.g. rot90 or rotate:step=15 "
            "(see `eqaudit symmetries`)"
        )
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if not name:
        raise SymmetryError(f"Expected a symmetry name before ':' in {spec!r}, got none, do write e.g. rotate:step=15")
    values: dict[str, str] = {}
    for item in rest.split(","):
        if not item.strip():
            continue  # tolerate "rotate:" and trailing commas
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not key or not value:
            raise SymmetryError(
                f"Expected key=value in symmetry spec {spec!r}, got {item.strip()!r}, "
                f"do write parameters as {name}:key=value[,key=value] (e.g. rotate:step=15)"
            )
        if key in values:
            raise SymmetryError(f"Expected each parameter once in {spec!r}, got {key!r} twice, do keep one of them")
        values[key] = value
    return name, values


def coerce_param(symmetry: str, param: ParamSpec, value: object) -> object:
    """Convert ``value`` (a spec string or a Python value) to ``param.kind`` and check its choices."""
    where = f"{symmetry}:{param.name}"
    example = f"{symmetry}:{param.name}={format_value(param.default)}"
    if param.kind is int:
        out: object = None
        if isinstance(value, bool):
            out = None
        elif isinstance(value, int):
            out = value
        elif isinstance(value, float) and value.is_integer():
            out = int(value)
        elif isinstance(value, str):
            try:
                out = int(value.strip())
            except ValueError:
                try:
                    f = float(value)
                    out = int(f) if f.is_integer() else None
                except ValueError:
                    out = None
        if out is None:
            raise SymmetryError(f"Expected an integer for {where}, got {value!r}, do write e.g. {example}")
        return out
    if param.kind is float:
        out_f: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out_f = float(value)
        elif isinstance(value, str):
            try:
                out_f = float(value.strip())
            except ValueError:
                out_f = None
        if out_f is None or not math.isfinite(out_f):
            raise SymmetryError(f"Expected a finite number for {where}, got {value!r}, do write e.g. {example}")
        return out_f
    if param.kind is bool:
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise SymmetryError(f"Expected true or false for {where}, got {value!r}, do write e.g. {example}")
    text = str(value).strip()
    if param.choices:
        text = text.lower()
        if text not in param.choices:
            close = difflib.get_close_matches(text, list(param.choices), n=1, cutoff=0.5)
            pick = close[0] if close else param.choices[0]
            raise SymmetryError(
                f"Expected one of {', '.join(param.choices)} for {where}, got {value!r}, do write e.g. {where}={pick}"
            )
    return text


def resolve_params(symmetry: str, params: Sequence[ParamSpec], given: Mapping[str, object]) -> dict[str, object]:
    """Check names and types of ``given`` against ``params`` and fill in defaults: -> {name: typed value}."""
    known = {p.name: p for p in params}
    for key in given:
        if key not in known:
            valid = (
                f"expected one of {', '.join(known)}" if known else f"'{symmetry}' takes no parameters"
            )
            raise SymmetryError(
                f"Unknown parameter {key!r} for symmetry '{symmetry}': {valid}, got {key!r}."
                f"{_did_you_mean(key, list(known))} Run `eqaudit symmetries` for the parameters and defaults."
            )
    return {p.name: coerce_param(symmetry, p, given[p.name]) if p.name in given else p.default for p in params}


def format_value(value: object) -> str:
    """Shortest spec text for a parameter value: 15.0 -> "15", 0.7 -> "0.7", "h" -> "h"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def format_spec(name: str, params: Sequence[ParamSpec], values: Mapping[str, object]) -> str:
    """Canonical spec: the name, then ``key=value`` for each parameter that differs from its default,
    in declaration order (``"rotate:step=30"``; just ``"rot90"`` when all are defaults)."""
    parts = [f"{p.name}={format_value(values[p.name])}" for p in params if p.name in values and values[p.name] != p.default]
    return f"{name}:{','.join(parts)}" if parts else name


def parse_symmetry(spec: str | Symmetry, seed: int | None = None) -> Symmetry:
    """Build the symmetry a spec string names (a Symmetry passes through unchanged).

    ``seed`` (the run's ``--seed``) seeds symmetries that sample random elements (so3, permute, ...)
    unless the spec sets its own ``seed=``. Raises SymmetryError (exit code 2) for an unknown name
    (with the closest match), an unknown parameter (listing the valid ones) or a bad value
    ("Expected ..., got ..., do ...").
    """
    if isinstance(spec, Symmetry):
        return spec
    if isinstance(spec, str) and "*" in spec:  # a product, e.g. d4*swap (eqaudit.symmetries.product)
        from .product import parse_product

        return parse_product(spec, seed=seed)
    name, raw = split_spec(spec)
    entry = get_entry(name)
    if seed is not None and "seed" not in raw and any(p.name == "seed" for p in entry.params):
        raw = {**raw, "seed": str(seed)}
    values = resolve_params(entry.name, entry.params, raw)
    return entry.factory(**values)
