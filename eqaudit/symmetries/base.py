"""The Symmetry interface: a group whose elements are rows of a tensor, and its action on inputs.

Shapes use fixed letters: E group elements, D parameters per element, B batch, C channels, H, W pixels.
Every action is batched over elements *and* samples in one tensor operation (a gather, roll or
grid_sample), never a Python loop over samples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Mapping

from typing import TYPE_CHECKING

from .._lazy import LazyModule

torch = LazyModule("torch", globals())  # loaded on first use: the catalogue alone needs no torch

if TYPE_CHECKING:
    from torch import Tensor

from ..errors import SymmetryError

MAX_ELEMENTS = 100_000  # the most group elements one symmetry (or product) may have; every limit message derives from it


def wrap_degrees(a: Tensor) -> Tensor:
    """Angles in degrees -> the same angles in (-180, 180]."""
    w = torch.remainder(a + 180.0, 360.0) - 180.0
    return torch.where(w <= -180.0, w + 360.0, w)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter a symmetry accepts in its spec string (``NAME:key=value``)."""

    name: str
    kind: type  # int, float or str
    default: object
    help: str
    choices: tuple[str, ...] = ()


@dataclass
class Symmetry(ABC):
    """A sampled group acting on inputs.

    Attributes set by each subclass:
      name          catalogue name, e.g. ``"rotate"``
      spec          canonical spec string with every parameter that differs from its default,
                    e.g. ``"rotate:step=15"``
      exact         True when the action is a permutation/sign change of the input (no resampling)
      domain        ``"image"`` (B, C, H, W) or ``"points"`` (B, P, 3)
      param_names   names of the D element parameters, e.g. ``("angle",)`` or ``("dx", "dy")``
      units         unit of each parameter for plots, e.g. ``("deg",)``, ``("px", "px")``, ``("log2",)``,
                    ``("",)`` for discrete indices
      layout        how plots lay the orbit out: ``"polar"`` (one angle), ``"line"`` (one non-angular
                    parameter), ``"grid2d"`` (two parameters on a grid), ``"finite"`` (a small finite group)
      elements      (E, D) float64 tensor of sampled elements in sweep order
      identity_index  row of ``elements`` that is the identity
      labels        E short human-readable labels, e.g. ``"90°"``, ``"dx=1 dy=-2"``, ``"r1·flip"``
      notes         human-readable remarks that ``check_input`` records when it binds the symmetry to
                    the data, e.g. that rot90 on non-square images runs on its shape-keeping subgroup
    """

    NAME: ClassVar[str]
    """Catalogue name (``@register`` on the class reads NAME, DESCRIPTION, PARAMS, EXACT, DOMAIN, LAYOUTS)."""
    DESCRIPTION: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[ParamSpec, ...]] = ()
    """The spec's parameters, declared once: names, types, defaults, choices. A subclass's ``__init__``
    takes them as ``**params`` and reads them typed and complete from ``self._values(params)``."""
    EXACT: ClassVar[bool] = True
    DOMAIN: ClassVar[str]
    LAYOUTS: ClassVar[tuple[str, ...] | None] = None  # input layouts it acts on; None: its domain's (eqaudit.symmetries.catalogue)
    ASPECTS: ClassVar[frozenset[str]] = frozenset()
    """What part of the input the action changes (eqaudit.symmetries.product reads it to know which
    factors commute): ``space``, ``frames``, ``rotation``, ``position``, ``order``, ... Empty: only itself."""

    name: str
    spec: str
    exact: bool
    domain: str
    param_names: tuple[str, ...]
    units: tuple[str, ...]
    layout: str
    elements: Tensor
    identity_index: int
    labels: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # ---- the scaffolding every catalogue class shares --------------------------------------------------------

    @classmethod
    def _values(cls, given: Mapping[str, object]) -> dict[str, object]:
        """The spec's parameters checked against PARAMS (names, types, choices) with defaults filled in."""
        from .catalogue import resolve_params

        return resolve_params(cls.NAME, cls.PARAMS, given)

    def _error(self, expected: str, got: str, do: str) -> SymmetryError:
        return SymmetryError(f"Expected {expected} for '{self.NAME}', got {got}, do {do}")

    def _check_count(self, n: int, what: str, do: str) -> None:
        """Refuse a parameter choice that would give more than MAX_ELEMENTS ``what`` (angles, shifts, ...)."""
        if n > MAX_ELEMENTS:
            raise self._error(f"at most {MAX_ELEMENTS} {what}", str(n), do)

    def _setup(self, values: dict[str, object], *, param_names: tuple[str, ...], units: tuple[str, ...], layout: str,
               elements: Tensor, labels: list[str], identity_index: int | None = None) -> None:
        """Initialise a catalogue symmetry from its class attributes (name, canonical spec, exact, domain),
        its parsed parameter ``values`` and its elements (E, D), stored as float64. ``identity_index``:
        the identity's row, or None to find the one row equal to ``identity_element``."""
        elements = elements.to(torch.float64).reshape(-1, len(param_names))
        if elements.shape[0] > MAX_ELEMENTS:
            raise self._error(f"at most {MAX_ELEMENTS} group elements", str(elements.shape[0]),
                              "ask for fewer (a larger step, a smaller range or a smaller n)")
        if identity_index is None:
            hits = (elements == self.identity_element(elements.shape[1])).all(dim=1).nonzero()
            assert len(hits) == 1, f"{self.NAME}: the sampled elements must hold the identity once"
            identity_index = int(hits[0, 0])
        from .catalogue import format_spec

        Symmetry.__init__(
            self,
            name=self.NAME,
            spec=format_spec(self.NAME, self.PARAMS, values),
            exact=self.EXACT,
            domain=self.DOMAIN,
            param_names=tuple(param_names),
            units=tuple(units),
            layout=layout,
            elements=elements,
            identity_index=identity_index,
            labels=list(labels),
        )
        self.params = values

    def identity_element(self, d: int) -> Tensor:
        """The identity as a (D,) float64 row (zeros unless a subclass says otherwise)."""
        return torch.zeros(d, dtype=torch.float64)

    @property
    def n_elements(self) -> int:
        return int(self.elements.shape[0])

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Raise SymmetryError when this symmetry cannot act on one sample of ``sample_shape`` (no batch axis).

        The default checks the domain's rank: (C, H, W) for ``"image"``, (P, 3) for ``"points"``; other
        domains accept anything. Subclasses add their own conditions (shifts smaller than the image, 2-D
        images rather than 1-D signals) and should call ``super().check_input(sample_shape)`` first. A
        subclass may also bind itself to the data here (draw or restrict its elements, keeping
        ``identity_index`` and ``labels`` in step) and say so in ``notes``.
        """
        shape = tuple(int(s) for s in sample_shape)
        if self.domain == "image" and len(shape) == 2:
            raise SymmetryError(
                f"Expected images of shape (C, H, W) for symmetry '{self.spec}', got one sample of shape {shape}, "
                "do pass --layout NCL (or NLC) if these are 1-D signals (N, C, L), reshape flat inputs with --input-shape "
                "CxHxW, or pick a symmetry for this kind of data (see `eqaudit symmetries`)"
            )
        if self.domain == "image" and len(shape) != 3:
            raise SymmetryError(
                f"Expected images of shape (C, H, W) for symmetry '{self.spec}', got one sample of shape {shape}, "
                "do reshape flat inputs with --input-shape CxHxW (e.g. --input-shape 1x28x28) or pick a symmetry "
                "for this kind of data (see `eqaudit symmetries`)"
            )
        if self.domain == "points" and (len(shape) != 2 or shape[-1] != 3):
            raise SymmetryError(
                f"Expected point clouds of shape (P, 3) for symmetry '{self.spec}', got one sample of shape {shape}, "
                "do pass (N, P, 3) data or pick a symmetry for this kind of data (see `eqaudit symmetries`)"
            )

    @abstractmethod
    def apply(self, x: Tensor, elements: Tensor) -> Tensor:
        """Paired action, the primitive every subclass implements: x (E, B, ...) and elements (E, D)
        -> (E, B, ...), where row e of ``elements`` acts on block ``x[e]``.

        The result has x's dtype and device; elements may be any rows (not only sampled ones), so
        compositions and inverses can be applied too. One batched tensor op, no Python loop over
        samples or elements.
        """

    def act(self, x: Tensor, elements: Tensor) -> Tensor:
        """Apply each element to every input: x (B, ...) and elements (E, D) -> (E, B, ...)."""
        e = int(elements.shape[0])
        return self.apply(x.unsqueeze(0).expand(e, *x.shape), elements)

    def mask(self, x: Tensor, elements: Tensor) -> Tensor | None:
        """Validity mask of act(x, elements) for x (B, C, H, W): (E, 1, H, W) bool, True where the transformed input
        holds real content (not padding or resampled from outside the frame). None: all valid."""
        return None

    @abstractmethod
    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """Group product, row by row: (E, D), (E, D) -> (E, D), the element 'apply b, then a'."""

    @abstractmethod
    def inverse(self, a: Tensor) -> Tensor:
        """Group inverse, row by row: (E, D) -> (E, D)."""

    def round_trip(self, x: Tensor, elements: Tensor) -> Tensor:
        """T_{g^-1}(T_g x) for each element: x (B, ...) -> (E, B, ...).

        For exact actions this equals x (up to float noise); for resampled actions it is the input
        that the measured floor is computed from.
        """
        return self.apply(self.act(x, elements), self.inverse(elements))

    # ---- elements that change the input's shape (quarter turns of non-square images) -------------------

    def transposes(self, elements: Tensor) -> Tensor:
        """(E, D) -> (E,) bool: True where the element swaps the input's last two axes (a quarter turn of a
        non-square image). One model call only holds elements of one value (the sweep's chunk plan)."""
        return torch.zeros(int(elements.shape[0]), dtype=torch.bool, device=elements.device)

    def other_input_shape(self) -> tuple[int, ...] | None:
        """The other sample shape the full group needs, when ``check_input`` bound this symmetry to a
        shape-keeping subgroup (rot90, d4 on H != W: (C, W, H)); None otherwise."""
        return None

    def gate_labels(self) -> list[str] | None:
        """The element labels a gate may name before a model has run: the bound orbit's, or every
        constructed element's while the orbit may still widen to the full group (``use_both_shapes``)."""
        return getattr(self, "labels", None)

    def use_both_shapes(self, accepted: bool) -> None:
        """Bind to the full group (the model ``accepted`` ``other_input_shape()``) or to the shape-keeping
        subgroup, with the matching note; a no-op for symmetries that keep the shape."""

    def words(self, elements: Tensor) -> list[list[tuple[str, int]]]:
        """Each element of (E, D) as a word in named generators, the first letter applied first:
        ``[(generator, power), ...]`` (e.g. d4's (k=1, f=1) is ``[("flip", 1), ("rot90", 1)]``). Output
        representations given per generator (``label-perm:rot90=...``) are composed along it. Finite
        groups implement it; the default raises SymmetryError."""
        raise SymmetryError(
            f"Expected a finite group generated by named elements (rot90, rot180, flip, d4, swap and their products) "
            f"for an output declared per generator, got '{self.spec}', do declare that output as invariant or pick one of those symmetries"
        )

    def tangents(self, x: Tensor) -> list[tuple[str, Tensor, str]]:
        """Generators of a continuous symmetry acting on x (B, ...): a list of (name, v, unit) with
        v (B, ...) = d/dt T_{exp(t X)} x at t = 0 in float64, ``unit`` the unit of t as a Lie
        derivative reports it ("rad", "px", "log2"). Empty for finite groups (no Lie derivative)."""
        return []

    def describe(self) -> dict:
        """JSON-ready description used by the result: name, spec, exact, parameters, units, layout, notes."""
        return {
            "name": self.name,
            "spec": self.spec,
            "exact": self.exact,
            "domain": self.domain,
            "param_names": list(self.param_names),
            "units": list(self.units),
            "layout": self.layout,
            "identity_index": self.identity_index,
            "notes": list(self.notes),
        }
