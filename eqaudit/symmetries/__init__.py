"""Symmetries: groups whose elements are rows of a tensor, their actions on inputs, and the catalogue.

``parse_symmetry("rotate:step=30")`` builds one from a spec; ``catalogue_entries()`` lists them all.
Errors are ``eqaudit.errors.SymmetryError`` (exit code 2).
"""

from .base import ParamSpec, Symmetry
from .catalogue import (
    CatalogueEntry,
    catalogue_entries,
    format_spec,
    get_entry,
    parse_symmetry,
    register,
    symmetry_names,
)
from . import images  # noqa: E402,F401  (registers the image symmetries)
from .images import D4, Flip, ImageSymmetry, Rot90, Rot180, Rotate, Scale, Translate

__all__ = [
    "CatalogueEntry",
    "D4",
    "Flip",
    "ImageSymmetry",
    "ParamSpec",
    "Rot90",
    "Rot180",
    "Rotate",
    "Scale",
    "Symmetry",
    "Translate",
    "catalogue_entries",
    "format_spec",
    "get_entry",
    "parse_symmetry",
    "register",
    "symmetry_names",
]
