"""The scaffolding every catalogue symmetry shares lives in eqaudit.symmetries.base: parameters declared
once (PARAMS) and parsed by the base class, one element limit, one identity lookup, one angle wrap."""

from __future__ import annotations

import pytest
import torch

from eqaudit.errors import SymmetryError
from eqaudit.symmetries import catalogue_entries, parse_symmetry
from eqaudit.symmetries.base import MAX_ELEMENTS, Symmetry, wrap_degrees
from eqaudit.symmetries.images import ImageSymmetry

ENTRIES = [e for e in catalogue_entries() if isinstance(e.factory, type) and issubclass(e.factory, Symmetry)]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_parameters_are_declared_once_and_parsed_by_the_base(entry):
    """A class built with no arguments takes PARAMS' defaults (its spec is its bare name), the defaults
    given explicitly build the same group, and an undeclared parameter is refused, naming the declared ones."""
    cls = entry.factory
    bare = cls()
    assert bare.spec == entry.name and bare.name == entry.name
    assert bare.params == entry.defaults()
    assert (bare.exact, bare.domain) == (entry.exact, entry.domain)
    explicit = cls(**entry.defaults())
    assert explicit.spec == bare.spec and torch.equal(explicit.elements, bare.elements)
    identity = bare.elements[bare.identity_index].expand_as(bare.elements)
    assert torch.allclose(bare.compose(bare.elements, identity), bare.elements, atol=1e-12)  # identity_index is the identity
    with pytest.raises(SymmetryError, match=f"Unknown parameter 'bogus' for symmetry '{entry.name}'"):
        cls(bogus=1)


def test_the_base_finds_the_identity_and_refuses_too_many_elements():
    class Shifts(ImageSymmetry):  # a toy: n shifts along x, the identity somewhere in the middle
        NAME = "toy-shifts"

        def __init__(self, n: int) -> None:
            dx = torch.arange(n, dtype=torch.float64) - n // 2
            super().__init__({}, param_names=("dx", "dy"), units=("px", "px"), layout="line",
                             elements=torch.stack([dx, torch.zeros_like(dx)], 1), labels=[str(int(v)) for v in dx])

        def compose(self, a, b):
            return a + b

        def inverse(self, a):
            return -a

    small = Shifts(5)
    assert small.identity_index == 2 and small.spec == "toy-shifts" and small.elements.dtype == torch.float64
    with pytest.raises(SymmetryError, match=rf"Expected at most {MAX_ELEMENTS} group elements for 'toy-shifts', got {MAX_ELEMENTS + 1}, do"):
        Shifts(MAX_ELEMENTS + 1)


@pytest.mark.parametrize("spec", ["rotate:step=0.0017", "rotate-z:step=0.0017", "translate:max=50000,axis=x", "translate3d:steps=47"])
def test_element_counts_are_checked_against_the_one_limit(spec):
    with pytest.raises(SymmetryError, match=rf"Expected at most {MAX_ELEMENTS} (angles|shifts) for"):
        parse_symmetry(spec)


def test_wrap_degrees_lands_in_the_half_open_circle():
    a = torch.tensor([-540.0, -180.0, -179.5, 0.0, 180.0, 190.0, 360.0, 540.0, 725.0], dtype=torch.float64)
    w = wrap_degrees(a)
    assert bool(((w > -180.0) & (w <= 180.0)).all())
    assert torch.allclose(torch.remainder(w - a, 360.0), torch.zeros_like(a))
    assert w.tolist() == [180.0, 180.0, -179.5, 0.0, 180.0, -170.0, 0.0, 180.0, 5.0]
