"""Time reversal of two-frame inputs x (B, 2C, H, W): ``swap`` exchanges the frames (and negates velocities).

A two-frame input stacks frame 1 in channels [0, C) and frame 2 in [C, 2C), as particle-image
velocimetry (PIV) and optical-flow models take them. ``swap`` has two elements, s = 0 (identity) and
s = 1 (frames exchanged). Its action on outputs: dense maps are unchanged, and vectors (flow
fields) are negated (``vector_matrix`` is -I for s = 1), which is what time reversal does to a
velocity. Combine it with spatial symmetries in a product spec, e.g. ``d4*swap`` (16 elements).

Shapes: E elements, B batch, C channels per frame, H rows, W columns.
"""

from __future__ import annotations

from typing import ClassVar

from typing import TYPE_CHECKING

from .._lazy import LazyModule

torch = LazyModule("torch", globals())  # loaded on first use: the catalogue alone needs no torch

if TYPE_CHECKING:
    from torch import Tensor

from ..errors import SymmetryError
from .base import Symmetry
from .catalogue import register


@register
class Swap(Symmetry):
    """Z2 time reversal: frames 1 and 2 of a (B, 2C, H, W) input exchanged; velocities negated."""

    NAME = "swap"
    DESCRIPTION = (
        "Time reversal of two-frame inputs (B, 2C, H, W): frames [0, C) and [C, 2C) swapped (2 elements); "
        "vector-field outputs are negated; exact."
    )
    DOMAIN = "image"
    ASPECTS: ClassVar[frozenset[str]] = frozenset({"frames"})

    def __init__(self, **params) -> None:
        self._setup(self._values(params), param_names=("s",), units=("",), layout="finite",
                    elements=torch.tensor([[0.0], [1.0]], dtype=torch.float64), labels=["id", "swap"], identity_index=0)

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Require (2C, H, W) samples: an even number of channels, two frames of C channels each."""
        super().check_input(sample_shape)
        c = int(sample_shape[0])
        if c % 2:
            raise SymmetryError(
                f"Expected two-frame inputs (2C, H, W) with an even channel count for symmetry 'swap', got {c} channels, "
                "do stack both frames along the channels (frame 1 first)"
            )

    @staticmethod
    def _s(elements: Tensor) -> Tensor:
        return torch.remainder(elements[:, 0].round().to(torch.int64), 2) == 1

    def apply(self, x: Tensor, elements: Tensor) -> Tensor:
        """x (E, B, 2C, H, W), elements (E, 1) holding s -> (E, B, 2C, H, W): one channel gather.
        Single-channel tensors (validity masks carried through a product's factors) are returned unchanged."""
        if x.dim() != 5 or elements.dim() != 2 or x.shape[0] != elements.shape[0]:
            raise ValueError(
                f"Expected x (E, B, 2C, H, W) and elements (E, D) with the same E, got {tuple(x.shape)} and {tuple(elements.shape)}"
            )
        e, b, c2, h, w = x.shape
        if c2 == 1:
            return x.clone()  # one channel (a validity mask, a single map): no frames to exchange
        if c2 % 2:
            raise SymmetryError(f"Expected an even number of channels (two frames) for 'swap', got {c2}, do stack both frames")
        c = c2 // 2
        base = torch.arange(c2, device=x.device)
        swapped = torch.remainder(base + c, c2)
        idx = torch.where(self._s(elements).to(x.device).view(e, 1), swapped.view(1, c2), base.view(1, c2))  # (E, 2C)
        return torch.gather(x, 2, idx.view(e, 1, c2, 1, 1).expand(e, b, c2, h, w))

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.remainder(a + b, 2)

    def inverse(self, a: Tensor) -> Tensor:
        return a.clone()

    def words(self, elements: Tensor) -> list[list[tuple[str, int]]]:
        return [[("swap", int(s))] for s in self._s(elements).tolist()]

    def vector_matrix(self, elements: Tensor) -> Tensor:
        """(E, 1) -> (E, 2, 2): -I where the frames are swapped (velocities reverse), I otherwise."""
        sign = torch.where(self._s(elements), -1.0, 1.0).to(torch.float64)
        return sign.view(-1, 1, 1) * torch.eye(2, dtype=torch.float64, device=elements.device)

    def map_action(self, maps: Tensor, elements: Tensor, input_hw: tuple[int, int]) -> Tensor:
        """Dense output maps (E, B, C, H', W') are unchanged by time reversal."""
        return maps

    def box_affine(self, elements: Tensor) -> tuple[Tensor, Tensor]:
        """Boxes do not move under time reversal: A = I, t = 0."""
        e = elements.shape[0]
        return torch.eye(2, dtype=torch.float64).expand(e, 2, 2), torch.zeros(e, 2, dtype=torch.float64)
