"""Products of symmetries in one spec (``d4*swap``, ``rotate:step=30*translate:max=2``): the orbit on the product grid.

An element of ``A*B`` is the row ``[a, b]`` (A's parameters, then B's) and acts as ``T_a(T_b x)``:
the rightmost factor acts first, as in function composition. Elements are laid out on the product
grid, the first factor outermost: element ``i * E_B + j`` is ``(a_i, b_j)``; ``grid_shape`` holds
``(E_A, E_B, ...)`` and ``factors`` the factor symmetries, so plots can draw a heatmap over the grid.

When the factors act on different aspects of the input (space and frame order, rotation and point
order, ...) their actions commute and the product is the direct product group: ``compose`` and
``inverse`` work factor by factor. When they do not commute (``rotate*translate``: a rotated shift
is not the same shift), the set of elements is still a well-defined orbit and every sweep
operation works (``apply``, ``round_trip``, which undoes the factors in reverse order, and the
output actions), but ``compose``/``inverse`` raise SymmetryError: the product of two such elements
is generally not on the grid.

Shapes: E elements, D parameters per element (the sum over factors), B batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import SymmetryError
from .base import MAX_ELEMENTS, Symmetry

# Pairs of aspects whose actions do not commute although they differ (a rotation moves a shift).
_NON_COMMUTING = {frozenset({"rotation", "position"})}


def aspects(sym: Symmetry) -> frozenset[str]:
    """What part of the input a symmetry changes, as its class declares it (``ASPECTS``: space for image
    geometry, frames for frame order, rotation / position / order for point clouds); a product changes
    the union of its factors'. A symmetry that declares nothing changes only its own ``other:NAME``."""
    factors = getattr(sym, "factors", None)
    if factors is not None:
        return frozenset().union(*(aspects(f) for f in factors))
    return sym.ASPECTS or frozenset({f"other:{sym.name}"})


def commute(a: Symmetry, b: Symmetry) -> bool:
    """True when every element of ``a`` commutes with every element of ``b`` (their aspects are disjoint
    and not a known non-commuting pair)."""
    sa, sb = aspects(a), aspects(b)
    if sa & sb:
        return False
    return not any(frozenset({x, y}) in _NON_COMMUTING for x in sa for y in sb)


class ProductSymmetry(Symmetry):
    """The orbit of ``factors[0] * factors[1] * ...`` on the product grid (see the module docstring)."""

    def __init__(self, factors: list[Symmetry], written: list[str] | None = None) -> None:
        """``written``: each factor's spec as the user typed it; the product's spec keeps them when two
        factors are of one kind (``flip:axis=h*flip:axis=v``), where the canonical specs, which drop
        defaults, would read ambiguously (``flip*flip:axis=v``)."""
        if len(factors) < 2:
            raise SymmetryError("Expected at least two factors in a product spec, got one, do write e.g. d4*swap")
        domains = {f.domain for f in factors}
        if len(domains) > 1:
            listing = ", ".join(f"{f.spec} ({f.domain})" for f in factors)
            raise SymmetryError(
                f"Expected factors acting on the same kind of input in a product, got {listing}, do combine symmetries of one domain"
            )
        self.factors = list(factors)
        names = [f.name for f in factors]
        self.written = "*".join(written) if written and len(set(names)) < len(names) else None
        self.commuting = all(commute(a, b) for i, a in enumerate(factors) for b in factors[i + 1 :])
        self._build()

    def _build(self) -> None:
        factors = self.factors
        sizes = [f.n_elements for f in factors]
        total = 1
        for s in sizes:
            total *= s
        if total > MAX_ELEMENTS:
            raise SymmetryError(
                f"Expected at most {MAX_ELEMENTS} group elements in a product, got {total} ({' x '.join(map(str, sizes))}), "
                "do use coarser factors"
            )
        grids = torch.meshgrid(*[torch.arange(s) for s in sizes], indexing="ij")  # first factor outermost
        idx = [g.reshape(-1) for g in grids]
        elements = torch.cat([f.elements.to(torch.float64)[i] for f, i in zip(factors, idx)], dim=1)
        ident = 0
        for f, s in zip(factors, sizes):
            ident = ident * s + f.identity_index
        names: list[str] = []
        for f in factors:
            names.extend(f.param_names)
        if len(set(names)) != len(names):
            names = [f"{f.name}.{p}" for f in factors for p in f.param_names]
        units = tuple(u for f in factors for u in f.units)
        labels = [" | ".join(f.labels[int(i[k])] for f, i in zip(factors, idx)) for k in range(total)]
        one_each = len(factors) == 2 and all(len(f.param_names) == 1 for f in factors)
        Symmetry.__init__(
            self,
            name="*".join(f.name for f in factors),
            spec=self.written or "*".join(f.spec for f in factors),
            exact=all(f.exact for f in factors),
            domain=factors[0].domain,
            param_names=tuple(names),
            units=units,
            layout="grid2d" if one_each else "finite",
            elements=elements,
            identity_index=ident,
            labels=labels,
        )
        self.grid_shape = tuple(sizes)
        self._widths = [len(f.param_names) for f in factors]

    # ---- helpers ---------------------------------------------------------------------------------------

    def split(self, elements: Tensor) -> list[Tensor]:
        """(E, D) -> one (E, D_i) block of parameters per factor."""
        return list(torch.split(elements, self._widths, dim=1))

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Every factor's check (which may bind it to the data, like permute); the grid is rebuilt after."""
        for f in self.factors:
            f.check_input(sample_shape)
        self._build()  # cheap; keeps the grid in step with factors that drew their elements for the data
        self.notes = [note for f in self.factors for note in f.notes]

    # ---- action ----------------------------------------------------------------------------------------

    def apply(self, x: Tensor, elements: Tensor) -> Tensor:
        """x (E, B, ...), elements (E, D) -> T_a(T_b(... x)): the last factor acts first."""
        parts = self.split(elements)
        for f, el in zip(reversed(self.factors), reversed(parts)):
            x = f.apply(x, el)
        return x

    def mask(self, x: Tensor, elements: Tensor) -> Tensor | None:
        """(E, 1, H, W) bool: content valid after every factor (earlier factors' masks carried through
        the later factors' actions); None when no factor loses content."""
        parts = self.split(elements)
        out: Tensor | None = None
        for f, el in zip(reversed(self.factors), reversed(parts)):
            if out is not None:
                out = f.apply(out.to(torch.float64).unsqueeze(1), el).squeeze(1) > 1 - 1e-9
            m = f.mask(x, el)
            if m is not None:
                out = m if out is None else out & m
        return out

    def round_trip(self, x: Tensor, elements: Tensor) -> Tensor:
        """Undo T_a(T_b x) factor by factor in reverse order: T_b^-1(T_a^-1(T_a(T_b x)))."""
        y = self.act(x, elements)
        for f, el in zip(self.factors, self.split(elements)):
            y = f.apply(y, f.inverse(el))
        return y

    def _need_commuting(self, what: str) -> None:
        if not self.commuting:
            raise SymmetryError(
                f"Expected factors that commute for the group {what} of '{self.spec}', got factors acting on the same "
                "aspect of the input (their product is not on the grid), do use the orbit as a grid only (scans work) "
                "or combine symmetries that commute (e.g. d4*swap)"
            )

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """Factor by factor (direct product); SymmetryError for factors that do not commute."""
        self._need_commuting("product (compose)")
        return torch.cat([f.compose(x, y) for f, x, y in zip(self.factors, self.split(a), self.split(b))], dim=1)

    def inverse(self, a: Tensor) -> Tensor:
        """Factor by factor (direct product); SymmetryError for factors that do not commute."""
        self._need_commuting("inverse")
        return torch.cat([f.inverse(x) for f, x in zip(self.factors, self.split(a))], dim=1)

    def words(self, elements: Tensor) -> list[list[tuple[str, int]]]:
        """The factors' words, the last factor's first (it acts first)."""
        per_factor = [f.words(el) for f, el in zip(self.factors, self.split(elements))]
        return [[w for fw in reversed(ws) for w in fw] for ws in zip(*per_factor)]

    def tangents(self, x: Tensor) -> list[tuple[str, Tensor, str]]:
        """The generators of every continuous factor (names prefixed with the factor when they clash)."""
        out = []
        for f in self.factors:
            out.extend(f.tangents(x))
        names = [t[0] for t in out]
        if len(set(names)) != len(names):
            out = [(f"{f.name}.{t[0]}", t[1], t[2]) for f in self.factors for t in f.tangents(x)]
        return out

    def describe(self) -> dict:
        d = super().describe()
        d["grid_shape"] = list(self.grid_shape)
        d["factors"] = [f.describe() for f in self.factors]
        return d


def parse_product(spec: str, seed: int | None = None) -> ProductSymmetry:
    """``"d4*swap"`` -> ProductSymmetry([D4(), Swap()]); each factor is an ordinary spec."""
    from .catalogue import parse_symmetry

    parts = [p.strip() for p in spec.split("*")]
    if any(not p for p in parts):
        raise SymmetryError(
            f"Expected a symmetry spec on both sides of every '*' in {spec!r}, got an empty factor, do write e.g. d4*swap"
        )
    return ProductSymmetry([parse_symmetry(p, seed=seed) for p in parts], written=parts)
