"""Symmetries acting on images x (B, C, H, W): rot90, rot180, flip, d4, translate (exact) and rotate, scale (resampled).

Conventions every caller can rely on:

- Rows go down (y down), columns go right. A positive angle, and rot90 k=1, is counter-clockwise as
  displayed: exactly ``torch.rot90(img, k=1, dims=(-2, -1))``. ``flip:axis=h`` mirrors left-right
  (flips W), ``flip:axis=v`` mirrors top-bottom (flips H). ``translate`` shifts content by dx pixels to
  the right and dy pixels down, like ``torch.roll(img, (dy, dx), dims=(-2, -1))``.
- Exact actions (rot90, flip, d4, translate, and rotate at multiples of 90 degrees, scale at 1) are
  pixel permutations: one ``torch.gather`` with an (E, H*W) source index, cached per
  (H, W, device, elements). Their results are bit-identical to the torch reference ops.
- Resampled actions (rotate, scale) use bilinear ``grid_sample`` on an s-times supersampled output
  grid (s = 2 for rotate; for scale s = ceil(1 / min zoom), between 2 and 4) followed by an s x s area
  average (``avg_pool2d``): a box pre-filter that keeps downscaling from aliasing and never
  overshoots the input range (unlike bicubic). Padding is zero; ``mask`` marks output pixels all of
  whose sub-samples lie inside the hull of source pixel centres, so no padding is blended in.
- Any H x W. On non-square images the quarter turns change the shape, so ``check_input`` binds
  rot90 to its shape-keeping subgroup {0°, 180°} (C2) and d4 to {r0, r2, r0·f, r2·f} (identity, half
  turn and the two mirrors), keeping the name the user asked for and recording a note, unless the
  model takes the transposed shape too: the caller asks ``other_input_shape()``, tries the model on
  it once and calls ``use_both_shapes(accepted)``; accepted, the full group runs, an odd number of
  quarter turns maps (.., H, W) to (.., W, H) (``transposes``; one call holds elements of one shape
  only, which the sweep's chunk plan ensures) and dense outputs are turned back the same way; rotate
  resamples its ±90° rows (with the validity mask) instead of permuting them. ``rot180`` is the half
  turn alone, exact on any H x W.
- 1-D signals are images with one row, (B, C, 1, L) (see eqaudit.layouts): translate shifts along L
  (its default axis=both becomes axis=x), ``flip:axis=h`` is time reversal and scale is a pure time
  stretch (the sampling row stays on the signal); the 2-D actions (rot90, rot180, d4, rotate,
  ``flip:axis=v``) refuse signals in ``check_input``.
- ``vector_matrix(elements)`` -> (E, 2, 2): how a displacement (u right, v down) attached to the
  image turns under each element (for flow-field outputs).

Shapes: E elements, D parameters per element, B batch, C channels, H rows, W columns.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import ClassVar

from typing import TYPE_CHECKING

from .._lazy import LazyModule

torch = LazyModule("torch", globals())  # loaded on first use: the catalogue alone needs no torch
F = LazyModule("torch.nn.functional", globals(), "F")

if TYPE_CHECKING:
    from torch import Tensor

from ..errors import SymmetryError
from .base import MAX_ELEMENTS, ParamSpec, Symmetry, wrap_degrees
from .catalogue import register

_ANGLE_TOL = 1e-9  # degrees: angles this close to a multiple of 90 take the exact path
_LOG_TOL = 1e-12  # log2 zoom this close to 0 is the identity
_CACHE_SIZE = 16

# cos and sin of k * 90 degrees, exactly (tuples: no torch at import)
_COS90 = (1, 0, -1, 0)
_SIN90 = (0, 1, 0, -1)


def _doubled_coords(h: int, w: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates relative to the image centre, doubled so they are integers:
    V (H, W) = 2i - (H - 1) (down), U (H, W) = 2j - (W - 1) (right)."""
    v = (2 * torch.arange(h, dtype=torch.int64) - (h - 1)).view(h, 1).expand(h, w)
    u = (2 * torch.arange(w, dtype=torch.int64) - (w - 1)).view(1, w).expand(h, w)
    return v, u


def _turned_hw(k: Tensor, h: int, w: int) -> tuple[int, int]:
    """The output (rows, columns) of rot90^k on H x W: (W, H) when every k is odd and H != W, else (H, W);
    ValueError for a mix of both shapes in one call (callers split elements by ``transposes``)."""
    odd = k % 2 == 1
    if h == w or not bool(odd.any()):
        return h, w
    if not bool(odd.all()):
        raise ValueError(f"Expected elements of one output shape per call on {h}x{w} images, got even and odd quarter turns "
                         "together; split them by Symmetry.transposes")
    return w, h


def _dihedral_source(k: Tensor, f: Tensor, flip_axis: str, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Source pixel (row, col), each (E, H_out, W_out) int64, of every output pixel of rot90^k o flip^f
    (flip first) on H x W inputs; the output is W x H when the turns are odd on non-square inputs.

    k (E,) int64 in 0..3, f (E,) bool. Output pixel p shows input pixel flip(R_k^-1 p); with doubled
    centred coordinates R_k^-1 maps (U, V) to (c U - s V, s U + c V), c, s = cos, sin of k * 90 deg,
    which is torch.rot90's convention (k=1: out[i, j] = in[j, W-1-i]).
    """
    v, u = _doubled_coords(*_turned_hw(k, h, w))
    c = torch.tensor(_COS90, dtype=torch.int64, device=k.device)[k].view(-1, 1, 1)
    s = torch.tensor(_SIN90, dtype=torch.int64, device=k.device)[k].view(-1, 1, 1)
    us = c * u - s * v
    vs = s * u + c * v
    flip = f.view(-1, 1, 1)
    if flip_axis == "h":
        us = torch.where(flip, -us, us)
    else:
        vs = torch.where(flip, -vs, vs)
    return (vs + (h - 1)) // 2, (us + (w - 1)) // 2


def _square_message(spec: str, h: int, w: int) -> str:
    return (
        f"Expected square images (H == W) for symmetry '{spec}', got H={h}, W={w}, "
        "do crop or pad the images to a square, or use flip, translate or scale instead"
    )


def _fmt(v: float) -> str:
    return f"{v:g}"


class ImageSymmetry(Symmetry):
    """Base of the image symmetries: the cached permutation (gather) machinery and shape checks.

    Subclasses set the class attributes the catalogue reads (NAME, DESCRIPTION, PARAMS, EXACT,
    LAYOUTS; see Symmetry) and implement ``_source_pixels`` for the elements they compute exactly.
    ``PLANAR`` symmetries need 2-D images and refuse 1-D signals (H == 1).
    """

    DOMAIN = "image"
    ASPECTS: ClassVar[frozenset[str]] = frozenset({"space"})
    PLANAR: ClassVar[bool] = False  # needs 2-D images: refused on 1-D signals (H == 1)

    def __init__(
        self,
        values: dict[str, object],
        *,
        param_names: tuple[str, ...],
        units: tuple[str, ...],
        layout: str,
        elements: Tensor,
        labels: list[str],
    ) -> None:
        self._setup(values, param_names=param_names, units=units, layout=layout, elements=elements, labels=labels)
        self._built = (self.elements, list(labels))  # the elements as constructed, before check_input binds them
        self._index_cache: OrderedDict[tuple, tuple[Tensor, Tensor | None]] = OrderedDict()

    # ---- input checks -------------------------------------------------------------------------------

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Require (C, H, W) samples (H > 1 for PLANAR symmetries); clears ``notes``, which subclasses
        that bind themselves to the data (rot90, d4, rotate, translate) then fill."""
        super().check_input(sample_shape)
        c, h, w = (int(d) for d in sample_shape[-3:])
        self.notes = []
        if w in (1, 3, 4) and c == h and c > 4:  # (H, W, C) rows: the channels came last
            raise SymmetryError(
                f"Expected images as (N, C, H, W) for '{self.spec}', got samples of shape {tuple(sample_shape)}, which look "
                f"channels-last (H, W, C); do pass --layout NHWC if the model takes channels-last input, or transpose "
                f"the data to (N, C, H, W), e.g. x.transpose(0, 3, 1, 2)"
            )
        if self.PLANAR and h == 1:
            raise SymmetryError(
                f"Expected 2-D images for '{self.spec}', got samples of shape {tuple(sample_shape)} (a 1-D signal: one row), "
                f"do pick another symmetry: {self.name} acts on 2-D images; on 1-D signals use translate, flip or scale"
            )

    def _bind(self, keep: Tensor | None, note: str | None = None) -> None:
        """Rebind to the rows of the constructed elements where ``keep`` (E0,) bool is True (all of
        them when None), keeping ``labels`` and ``identity_index`` in step; record ``note`` if given."""
        elements, labels = self._built
        if keep is not None:
            rows = keep.nonzero().squeeze(1)
            elements, labels = elements[rows], [labels[i] for i in rows.tolist()]
        identity = self.identity_element(elements.shape[1])
        self.elements, self.labels = elements, labels
        self.identity_index = int((elements == identity).all(dim=1).nonzero()[0, 0])
        if note:
            self.notes.append(note)

    @staticmethod
    def _check_x(x: Tensor, elements: Tensor) -> None:
        if x.dim() != 5 or elements.dim() != 2 or x.shape[0] != elements.shape[0]:
            raise ValueError(
                f"Expected x (E, B, C, H, W) and elements (E, D) with the same E, got {tuple(x.shape)} and {tuple(elements.shape)}"
            )

    # ---- exact actions: one gather with a cached (E, H*W) source index -----------------------------------

    def _source_pixels(self, elements: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        """Source (row, col) of each output pixel, each (E, H', W') int64 (H' x W' = ``_out_hw``), for
        elements (E, D) float64 on the CPU; may point outside the frame (the pixel is then zero and masked out)."""
        raise NotImplementedError

    def _out_hw(self, elements: Tensor, h: int, w: int) -> tuple[int, int]:
        """(rows, columns) of the action's output on H x W inputs: the same unless quarter turns transpose it."""
        return h, w

    def _gather_index(self, elements: Tensor, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor | None]:
        """-> index (E, H*W) int64 and validity (E, H*W) bool (None when every source is in the frame)."""
        el = elements.detach().to("cpu", torch.float64).contiguous()
        key = (h, w, str(device), tuple(el.shape), el.numpy().tobytes())
        hit = self._index_cache.get(key)
        if hit is not None:
            self._index_cache.move_to_end(key)
            return hit
        # normal (not inference-mode) tensors, so autograd callers (jvp) can reuse the cache
        with torch.inference_mode(False):
            el = torch.from_numpy(el.numpy().copy())
            si, sj = self._source_pixels(el, h, w)
            valid = (si >= 0) & (si < h) & (sj >= 0) & (sj < w)
            index = (si.clamp(0, h - 1) * w + sj.clamp(0, w - 1)).reshape(-1, h * w).to(device)
            flat_valid = None if bool(valid.all()) else valid.reshape(-1, h * w).to(device)
        self._index_cache[key] = (index, flat_valid)
        if len(self._index_cache) > _CACHE_SIZE:
            self._index_cache.popitem(last=False)
        return index, flat_valid

    def _permute(self, x: Tensor, elements: Tensor) -> Tensor:
        """x (E, B, C, H, W) -> (E, B, C, H', W') (``_out_hw``: H, W unless transposed) by one gather;
        pixels whose source is outside are 0."""
        e, b, c, h, w = x.shape
        index, valid = self._gather_index(elements, h, w, x.device)
        flat = x.reshape(e, b, c, h * w)
        out = torch.gather(flat, 3, index.view(e, 1, 1, h * w).expand(e, b, c, h * w))
        if valid is not None:
            out = out.masked_fill(~valid.view(e, 1, 1, h * w), 0)
        return out.reshape(e, b, c, *self._out_hw(elements, h, w))

    def apply(self, x: Tensor, elements: Tensor) -> Tensor:
        """x (E, B, C, H, W), elements (E, D) -> (E, B, C, H, W): the exact actions are one gather by the
        cached source index (zeros where the source is outside the frame); resampled ones override this."""
        self._check_x(x, elements)
        return self._permute(x, elements)

    def _permutation_mask(self, x: Tensor, elements: Tensor) -> Tensor | None:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        _, valid = self._gather_index(elements, h, w, x.device)
        return None if valid is None else valid.view(-1, 1, *self._out_hw(elements, h, w)).clone()

    def vector_matrix(self, elements: Tensor) -> Tensor:
        """(E, D) -> (E, 2, 2) float64: the linear map that a displacement (u right, v down) attached to
        the image undergoes, i.e. v_out(p) = M v_in(T^-1 p). Identity for pure shifts."""
        return torch.linalg.inv(self._source_linear(elements.to(torch.float64)))

    def _source_linear(self, elements: Tensor) -> Tensor:
        """(E, D) -> (E, 2, 2): linear part of the output -> source coordinate map on (u, v)."""
        return torch.eye(2, dtype=torch.float64, device=elements.device).expand(elements.shape[0], 2, 2).clone()

    # ---- how the action carries over to outputs (read by eqaudit.symmetries.outputs) -------------------------

    def map_action(self, maps: Tensor, elements: Tensor, input_hw: tuple[int, int]) -> Tensor:
        """Dense output maps (E, B, C, H', W') moved like the input: the same action at the output's
        resolution (every image action here works in normalised coordinates; shifts are rescaled)."""
        return self.apply(maps, self._at_resolution(elements, input_hw, (int(maps.shape[-2]), int(maps.shape[-1]))))

    def map_mask(self, elements: Tensor, out_hw: tuple[int, int], input_hw: tuple[int, int], device) -> Tensor | None:
        """(E, 1, H', W') bool validity of ``map_action``'s output (False where content left the frame), or None."""
        probe = torch.zeros(1, 1, *out_hw, dtype=torch.float64, device=device)
        m = self.mask(probe, self._at_resolution(elements, input_hw, out_hw))
        return None if m is None else m.to(device)

    def _at_resolution(self, elements: Tensor, input_hw: tuple[int, int], out_hw: tuple[int, int]) -> Tensor:
        """The elements as they act on maps of ``out_hw`` pixels: unchanged unless they carry pixel lengths."""
        return elements

    def box_affine(self, elements: Tensor) -> tuple[Tensor, Tensor]:
        """(E, D) -> A (E, 2, 2), t (E, 2): image point p (centred pixel coordinates) -> A p + t."""
        return self.vector_matrix(elements).to(torch.float64), torch.zeros(elements.shape[0], 2, dtype=torch.float64)


def _dihedral_linear(k: Tensor, f: Tensor, flip_axis: str) -> Tensor:
    c = torch.tensor(_COS90, dtype=torch.float64, device=k.device)[k]
    s = torch.tensor(_SIN90, dtype=torch.float64, device=k.device)[k]
    m = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (E, 2, 2)
    sign = torch.where(f, -1.0, 1.0).to(torch.float64)
    row = 0 if flip_axis == "h" else 1
    m[:, row, :] = m[:, row, :] * sign.view(-1, 1)
    return m


# ---------------------------------------------------------------------------------------------------------
# exact symmetries


class _ShapeBound:
    """Quarter turns on the data's shape (rot90, d4): all elements on square images; on H x W with H != W
    the shape-keeping subgroup (``SUBGROUP``) with a note, or, once ``use_both_shapes(True)`` says the
    model takes W x H input too, the full group in two shape groups (``transposes``: odd quarter turns)."""

    SUBGROUP: ClassVar[str]
    _shape: tuple[int, int, int] | None = None  # (C, H, W) of the data, set by check_input
    _both = False  # the full group on a non-square shape
    _shape_note: str | None = None

    def _quarters(self, elements: Tensor) -> Tensor:
        """(E, D) -> quarter turns k (E,) int64 in 0..3."""
        raise NotImplementedError

    def _subgroup_note(self, h: int, w: int) -> str:
        return f"{self.name} on {h}x{w} images: the quarter turns change the shape; measured on the shape-keeping subgroup {self.SUBGROUP}"

    def _bind_to_shape(self, sample_shape: tuple[int, ...]) -> None:
        c, h, w = (int(d) for d in sample_shape[-3:])
        self._shape, self._both, self._shape_note = (c, h, w), False, None
        if h == w:
            self._bind(None)
        else:
            self._shape_note = self._subgroup_note(h, w)
            self._bind(self._quarters(self._built[0]) % 2 == 0, self._shape_note)

    def other_input_shape(self) -> tuple[int, ...] | None:
        if self._shape is None or self._shape[1] == self._shape[2]:
            return None
        c, h, w = self._shape
        return (c, w, h)

    def gate_labels(self) -> list[str] | None:
        return list(self._built[1]) if self.other_input_shape() is not None else self.labels

    def use_both_shapes(self, accepted: bool) -> None:
        if self.other_input_shape() is None:
            return
        _, h, w = self._shape
        self.notes = [n for n in self.notes if n != self._shape_note]
        if accepted:
            self._bind(None)
            odd = (self._quarters(self.elements) % 2 == 1).tolist()
            kept = ", ".join(lab for lab, o in zip(self.labels, odd) if not o)
            turned = ", ".join(lab for lab, o in zip(self.labels, odd) if o)
            self._shape_note = (f"{self.name} on {h}x{w} images: the model also takes {w}x{h} input, so the full group is "
                                f"measured, in two shape groups ({h}x{w}: {kept}; {w}x{h}: {turned})")
        else:
            self._bind(self._quarters(self._built[0]) % 2 == 0)
            self._shape_note = self._subgroup_note(h, w)
        self._both = accepted
        self.notes.append(self._shape_note)

    def transposes(self, elements: Tensor) -> Tensor:
        if self._shape is None or self._shape[1] == self._shape[2]:
            return torch.zeros(int(elements.shape[0]), dtype=torch.bool, device=elements.device)
        return self._quarters(elements) % 2 == 1

    def _out_hw(self, elements: Tensor, h: int, w: int) -> tuple[int, int]:
        return _turned_hw(self._quarters(elements), h, w)

    def _check_turns(self, k: Tensor, h: int, w: int) -> None:
        """SymmetryError for odd quarter turns of a non-square image unless the full group was accepted."""
        if h != w and not self._both and bool((k % 2 == 1).any()):
            raise SymmetryError(_square_message(self.spec, h, w))


class _Turns(ImageSymmetry):
    """The cyclic groups of turns by multiples of 90 degrees: element row (t,) is t turns of ``STEP``
    quarter turns each, t in 0..ORDER-1 (rot90: 4 turns of 90 degrees; rot180: 2 of 180)."""

    ORDER: ClassVar[int]
    STEP: ClassVar[int]
    PARAM: ClassVar[str]
    LABELS: ClassVar[tuple[str, ...]]
    PLANAR = True
    LAYOUTS = ("NCHW", "NHWC")

    def __init__(self, **params) -> None:
        super().__init__(
            self._values(params),
            param_names=(self.PARAM,),
            units=("",),
            layout="finite",
            elements=torch.arange(self.ORDER, dtype=torch.float64).view(-1, 1),
            labels=list(self.LABELS),
        )

    def _turns(self, elements: Tensor) -> Tensor:
        """(E, D) -> number of turns t (E,) int64 in 0..ORDER-1."""
        return torch.remainder(elements[:, 0].round().to(torch.int64), self.ORDER)

    def _k(self, elements: Tensor) -> Tensor:
        """(E, D) -> quarter turns k (E,) int64 in 0..3."""
        return self.STEP * self._turns(elements)

    def _source_pixels(self, elements: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        k = self._k(elements)
        if h != w and bool((k % 2 == 1).any()) and not getattr(self, "_both", False):
            raise SymmetryError(_square_message(self.spec, h, w))
        return _dihedral_source(k, torch.zeros_like(k, dtype=torch.bool), "h", h, w)

    def _out_hw(self, elements: Tensor, h: int, w: int) -> tuple[int, int]:
        return _turned_hw(self._k(elements), h, w)

    def _source_linear(self, elements: Tensor) -> Tensor:
        k = self._k(elements)
        return _dihedral_linear(k, torch.zeros_like(k, dtype=torch.bool), "h")

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.remainder(a + b, self.ORDER)

    def inverse(self, a: Tensor) -> Tensor:
        return torch.remainder(-a, self.ORDER)

    def words(self, elements: Tensor) -> list[list[tuple[str, int]]]:
        return [[(self.NAME, t)] for t in self._turns(elements).tolist()]


@register
class Rot90(_ShapeBound, _Turns):
    """C4: rotations by k * 90 degrees counter-clockwise as displayed (torch.rot90, dims=(-2, -1))."""

    NAME = "rot90"
    DESCRIPTION = (
        "Rotations by multiples of 90 degrees (C4, 4 elements), counter-clockwise as displayed; "
        "exact pixel permutation. Non-square images: the shape-keeping subgroup {0°, 180°}, with a note."
    )
    ORDER, STEP, PARAM, LABELS = 4, 1, "k", ("0°", "90°", "180°", "270°")
    SUBGROUP = "{0°, 180°}"

    def _quarters(self, elements: Tensor) -> Tensor:
        return self._k(elements)

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Also bind to the data's shape: all of C4 on square images, {0°, 180°} (C2) otherwise, with a note
        (the full group once ``use_both_shapes(True)``)."""
        super().check_input(sample_shape)
        self._bind_to_shape(sample_shape)


@register
class Rot180(_Turns):
    """C2: the half turn, on any H x W (torch.rot90 with k=2); elements hold the number of half turns (0 or 1)."""

    NAME = "rot180"
    DESCRIPTION = "The half turn (C2, 2 elements): rotation by 180 degrees; exact pixel permutation on any H x W."
    ORDER, STEP, PARAM, LABELS = 2, 2, "half_turns", ("0°", "180°")


@register
class Flip(ImageSymmetry):
    """Z2: identity and one mirror (h: left-right, flips W; v: top-bottom, flips H)."""

    NAME = "flip"
    DESCRIPTION = (
        "Mirror image (Z2, 2 elements): axis=h mirrors left-right (flips W; time reversal on 1-D signals), "
        "axis=v top-bottom (flips H); exact."
    )
    PARAMS = (
        ParamSpec(
            "axis", str, "h", "h = mirror left-right (flip the W axis), v = mirror top-bottom (flip the H axis)", ("h", "v")
        ),
    )

    def __init__(self, **params) -> None:
        values = self._values(params)
        self.axis = str(values["axis"])
        super().__init__(
            values,
            param_names=("f",),
            units=("",),
            layout="finite",
            elements=torch.tensor([[0.0], [1.0]]),
            labels=["id", f"flip-{self.axis}"],
        )

    @staticmethod
    def _f(elements: Tensor) -> Tensor:
        return torch.remainder(elements[:, 0].round().to(torch.int64), 2) == 1

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """On 1-D signals (H == 1) axis=h is time reversal; axis=v (top-bottom) is refused."""
        super().check_input(sample_shape)
        if self.axis == "v" and int(sample_shape[-2]) == 1:
            raise SymmetryError(
                f"Expected 2-D images for '{self.spec}', got samples of shape {tuple(sample_shape)} (a 1-D signal: one row), "
                "do use flip (axis=h, time reversal): flip:axis=v acts on 2-D images; on 1-D signals use translate, flip or scale"
            )

    def _source_pixels(self, elements: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        f = self._f(elements)
        return _dihedral_source(torch.zeros_like(f, dtype=torch.int64), f, self.axis, h, w)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.remainder(a + b, 2)

    def inverse(self, a: Tensor) -> Tensor:
        return a.clone()

    def words(self, elements: Tensor) -> list[list[tuple[str, int]]]:
        return [[("flip", int(f))] for f in self._f(elements).tolist()]

    def _source_linear(self, elements: Tensor) -> Tensor:
        f = self._f(elements)
        return _dihedral_linear(torch.zeros_like(f, dtype=torch.int64), f, self.axis)


@register
class D4(_ShapeBound, ImageSymmetry):
    """The dihedral group of the square: (k, f) = rot90^k o flip_h^f (the flip acts first)."""

    NAME = "d4"
    DESCRIPTION = (
        "Dihedral group of the square (8 elements): rot90^k after an optional left-right flip; exact. Non-square "
        "images: the shape-keeping subgroup {r0, r2, r0·f, r2·f} (half turn and both mirrors), with a note."
    )
    PLANAR = True
    LAYOUTS = ("NCHW", "NHWC")

    def __init__(self, **params) -> None:
        k = torch.arange(8, dtype=torch.float64) % 4
        f = (torch.arange(8) >= 4).to(torch.float64)
        super().__init__(
            self._values(params),
            param_names=("k", "f"),
            units=("", ""),
            layout="finite",
            elements=torch.stack([k, f], dim=1),
            labels=[f"r{i}" for i in range(4)] + [f"r{i}·f" for i in range(4)],
        )

    @staticmethod
    def _kf(elements: Tensor) -> tuple[Tensor, Tensor]:
        k = torch.remainder(elements[:, 0].round().to(torch.int64), 4)
        f = torch.remainder(elements[:, 1].round().to(torch.int64), 2) == 1
        return k, f

    SUBGROUP = "{r0, r2, r0·f, r2·f} (identity, half turn, left-right and top-bottom mirrors)"

    def _quarters(self, elements: Tensor) -> Tensor:
        return self._kf(elements)[0]

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Also bind to the data's shape: all of D4 on square images, otherwise the four elements that
        keep the shape (identity, half turn, left-right and top-bottom mirrors), with a note (the full
        group once ``use_both_shapes(True)``)."""
        super().check_input(sample_shape)
        self._bind_to_shape(sample_shape)

    def _source_pixels(self, elements: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        k, f = self._kf(elements)
        self._check_turns(k, h, w)
        return _dihedral_source(k, f, "h", h, w)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """(k1, f1)(k2, f2) = (k1 + (-1)^f1 k2 mod 4, f1 xor f2)."""
        sign = 1.0 - 2.0 * torch.remainder(a[:, 1].round(), 2)
        k = torch.remainder(a[:, 0] + sign * b[:, 0], 4)
        f = torch.remainder(a[:, 1] + b[:, 1], 2)
        return torch.stack([k, f], dim=1)

    def inverse(self, a: Tensor) -> Tensor:
        """(k, 0)^-1 = (-k, 0); every (k, 1) is a reflection, its own inverse."""
        f = torch.remainder(a[:, 1].round(), 2)
        k = torch.where(f == 1, torch.remainder(a[:, 0], 4), torch.remainder(-a[:, 0], 4))
        return torch.stack([k, f], dim=1)

    def words(self, elements: Tensor) -> list[list[tuple[str, int]]]:
        k, f = self._kf(elements)
        return [[("flip", int(b)), ("rot90", a)] for a, b in zip(k.tolist(), f.tolist())]

    def _source_linear(self, elements: Tensor) -> Tensor:
        k, f = self._kf(elements)
        return _dihedral_linear(k, f, "h")


@register
class Translate(ImageSymmetry):
    """Integer shifts (dx right, dy down) on the grid {-max..max} x {-max..max} in steps of ``step``.

    ``max`` is checked against the size of each axis it shifts (W for axis=x, H for axis=y, both for
    axis=both). On 1-D signals (H == 1, stored as (C, 1, L)) the default axis=both shifts the one
    spatial axis only: ``check_input`` binds the elements to (dx, 0) rows with a "line" layout, exactly
    as axis=x; axis=y is refused there.
    """

    NAME = "translate"
    DESCRIPTION = (
        "Integer pixel shifts on a 2-D grid (dx right, dy down); mode=circular wraps around (torch.roll), "
        "mode=zero fills with zeros and masks them out; exact. On 1-D signals the default shifts the signal axis."
    )
    PARAMS = (
        ParamSpec("max", int, 2, "largest shift in pixels along each axis"),
        ParamSpec("step", int, 1, "grid spacing in pixels (shifts are multiples of step, 0 included)"),
        ParamSpec(
            "mode", str, "circular", "circular: content wraps around; zero: zeros enter and are masked", ("circular", "zero")
        ),
        ParamSpec("axis", str, "both", "both: the 2-D grid; x or y: shifts along one axis only (a 1-D orbit)", ("both", "x", "y")),
    )

    def __init__(self, **params) -> None:
        values = self._values(params)
        self.max_shift, self.step, self.mode = int(values["max"]), int(values["step"]), str(values["mode"])
        self.axis = str(values["axis"])
        if self.step <= 0:
            raise self._error("step >= 1", f"step={self.step}", "pass a positive step, e.g. translate:step=1")
        if self.max_shift < self.step:
            raise self._error(
                "max >= step >= 1", f"max={self.max_shift}, step={self.step}", "pass e.g. translate:max=2 (shifts of -2..2 pixels)"
            )
        n = self.max_shift // self.step
        side = (n * 2 + 1) ** (2 if self.axis == "both" else 1)
        self._check_count(side, "shifts", "use a larger step or a smaller max")
        elements, labels, layout = self._shift_grid(self.axis)
        super().__init__(values, param_names=("dx", "dy"), units=("px", "px"), layout=layout, elements=elements, labels=labels)

    def _shift_grid(self, axis: str) -> tuple[Tensor, list[str], str]:
        """The shifts along ``axis`` (both, x or y): elements (E, 2) as (dx, dy) rows, labels, plot layout."""
        n = self.max_shift // self.step
        vals = torch.arange(-n, n + 1, dtype=torch.float64) * self.step
        if axis == "both":
            dy, dx = torch.meshgrid(vals, vals, indexing="ij")  # sweep order: dy outer, dx inner (row-major)
        else:  # one axis: elements stay (dx, dy) rows, the other coordinate 0; plots and extent use the varying one
            zeros = torch.zeros_like(vals)
            dx, dy = (vals, zeros) if axis == "x" else (zeros, vals)
        elements = torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=1)
        labels = [
            f"dx={int(a)} dy={int(b)}" if axis == "both" else (f"dx={int(a)}" if axis == "x" else f"dy={int(b)}")
            for a, b in elements.tolist()
        ]
        return elements, labels, "grid2d" if axis == "both" else "line"

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Bind the shifts to the data (on 1-D signals axis=both shifts the signal axis only) and require
        the largest shift to be smaller than every axis it shifts: W for x, H for y."""
        super().check_input(sample_shape)
        h, w = int(sample_shape[-2]), int(sample_shape[-1])
        signal = h == 1
        if signal and self.axis == "y":
            raise SymmetryError(
                f"Expected a shift along the signal for '{self.spec}', got samples of shape {tuple(sample_shape)} "
                "(a 1-D signal: one row, nothing to shift along y), do use translate or translate:axis=x"
            )
        axis = "x" if signal else self.axis
        elements, labels, layout = self._shift_grid(axis)
        self._built = (elements, labels)
        self.layout = layout
        self._bind(None)
        for name, size, shifted in (("W", w, axis in ("both", "x")), ("H", h, axis in ("both", "y"))):
            if shifted and self.max_shift >= size:
                raise SymmetryError(
                    f"Expected translate max below the image size along {'x (width' if name == 'W' else 'y (height'} "
                    f"{name}={size}) for '{self.spec}', got max={self.max_shift} for {h}x{w} images, do pass max <= {size - 1} "
                    f"(e.g. translate:max={max(1, size // 8)})"
                )

    def _source_pixels(self, elements: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        d = elements.round().to(torch.int64)
        dx, dy = d[:, 0].view(-1, 1, 1), d[:, 1].view(-1, 1, 1)
        rows = torch.arange(h, dtype=torch.int64).view(1, h, 1) - dy
        cols = torch.arange(w, dtype=torch.int64).view(1, 1, w) - dx
        rows, cols = rows.expand(-1, h, w), cols.expand(-1, h, w)
        if self.mode == "circular":
            rows, cols = torch.remainder(rows, h), torch.remainder(cols, w)
        return rows, cols

    def mask(self, x: Tensor, elements: Tensor) -> Tensor | None:
        """(E, 1, H, W) bool, True where the shifted image holds real content (mode=zero); None for circular."""
        if self.mode == "circular":
            return None
        mask = self._permutation_mask(x, elements)
        if mask is None:
            mask = torch.ones(elements.shape[0], 1, *x.shape[-2:], dtype=torch.bool, device=x.device)
        return mask

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def inverse(self, a: Tensor) -> Tensor:
        return -a

    def _at_resolution(self, elements: Tensor, input_hw: tuple[int, int], out_hw: tuple[int, int]) -> Tensor:
        """Shifts (E, 2) in input pixels -> the same shifts in output pixels (W'/W, H'/H); whole pixels only."""
        (h, w), (ho, wo) = input_hw, out_hw
        if (h, w) == (ho, wo):
            return elements
        scale = torch.tensor([wo / w, ho / h], dtype=torch.float64, device=elements.device)
        scaled = elements.to(torch.float64) * scale
        off = ((scaled - scaled.round()).abs() > 1e-9).any(1)
        if bool(off.any()):
            bad = elements[off][0].tolist()
            raise SymmetryError(
                f"Expected shifts that are whole pixels at the output resolution for '{self.spec}' ({h}x{w} input, {ho}x{wo} "
                f"output), got a shift of dx={bad[0]:g}, dy={bad[1]:g} input pixels = {bad[0] * wo / w:g}, {bad[1] * ho / h:g} "
                f"output pixels, do use translate:step={math.ceil(max(w / wo, h / ho))} (a multiple of the output stride)"
            )
        return scaled.round()

    def box_affine(self, elements: Tensor) -> tuple[Tensor, Tensor]:
        """Shifts move every point by (dx, dy): A = I, t = (dx, dy)."""
        e = elements.shape[0]
        return torch.eye(2, dtype=torch.float64).expand(e, 2, 2), elements[:, :2].to(torch.float64)

    def tangents(self, x: Tensor) -> list[tuple[str, Tensor, str]]:
        """Shifts right (dx) and down (dy) by one pixel per unit t, as band-limited (Fourier)
        derivatives of the image with circular boundary: v = -d x / d column, -d x / d row (dx
        only on 1-D signals, H == 1)."""
        dx = ("dx", -spectral_derivative(x, -1), "px")
        return [dx] if int(x.shape[-2]) == 1 else [dx, ("dy", -spectral_derivative(x, -2), "px")]


def spectral_derivative(x: Tensor, dim: int) -> Tensor:
    """Derivative of a periodic signal along ``dim`` (per sample step) by FFT, in float64; the Nyquist
    component of an even length is dropped (its derivative is not real)."""
    n = x.shape[dim]
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=x.device)
    if n % 2 == 0:
        k[n // 2] = 0.0
    shape = [1] * x.ndim
    shape[dim] = n
    factor = (2j * math.pi / n) * k.view(shape)
    return torch.fft.ifft(torch.fft.fft(x.to(torch.float64), dim=dim) * factor, dim=dim).real


# ---------------------------------------------------------------------------------------------------------
# resampled symmetries


class _Resampled(ImageSymmetry):
    """Shared pipeline of rotate and scale: exact rows by gather, the others by one supersampled
    bilinear grid_sample + area average, merged into one output."""

    EXACT = False
    supersample: int = 2

    def _exact_rows(self, elements: Tensor, h: int, w: int) -> Tensor:
        """(E, D) -> (E,) bool: rows computed exactly by permutation on H x W images."""
        raise NotImplementedError

    def _theta(self, elements: Tensor, h: int, w: int) -> Tensor:
        """(E, D) -> (E, 2, 3) float64 affine map from output to source in affine_grid's normalised coordinates."""
        raise NotImplementedError

    def _grid(self, elements: Tensor, h: int, w: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """(E, sH, sW, 2) source positions of the s x s sub-samples of every output pixel.

        On a 1-D signal (H == 1) every sub-sample reads the signal's own row (y = 0), so nothing is
        blended with the zero padding above and below it: scale is then a pure time stretch."""
        s = self.supersample
        theta = self._theta(elements.to(device=device, dtype=torch.float64), h, w).to(dtype)
        grid = F.affine_grid(theta, [theta.shape[0], 1, s * h, s * w], align_corners=False)
        if h == 1:
            grid = torch.stack([grid[..., 0], torch.zeros_like(grid[..., 1])], dim=-1)
        return grid

    def _plan(self, elements: Tensor, h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple:
        """(exact rows (E,) bool on the CPU, their indices, the resampled rows' indices, the resampled
        rows' grid) for ``apply``: computed once per distinct chunk of elements and image size, then
        cached (the sweep applies the same chunks to every batch). Elements that need gradients are
        not cached."""
        if elements.requires_grad:
            return self._make_plan(elements, h, w, dtype, device)
        el = elements.detach().to("cpu", torch.float64).contiguous()
        key = ("plan", h, w, str(device), str(dtype), tuple(el.shape), el.numpy().tobytes())
        hit = self._index_cache.get(key)
        if hit is not None:
            self._index_cache.move_to_end(key)
            return hit
        with torch.inference_mode(False):  # normal tensors, so autograd callers can reuse the plan
            plan = self._make_plan(torch.from_numpy(el.numpy().copy()), h, w, dtype, device)
        self._index_cache[key] = plan
        if len(self._index_cache) > _CACHE_SIZE:
            self._index_cache.popitem(last=False)
        return plan

    def _make_plan(self, elements: Tensor, h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple:
        exact = self._exact_rows(elements, h, w).cpu()
        ex = exact.nonzero().squeeze(1)
        rs = (~exact).nonzero().squeeze(1)
        grid = self._grid(elements[rs.to(elements.device)], h, w, dtype, device) if len(rs) else None
        order = torch.argsort(torch.cat([ex, rs])).to(device)
        return exact, ex.to(device), rs.to(device), grid, order

    def resample(self, x: Tensor, elements: Tensor, grid: Tensor | None = None) -> Tensor:
        """x (E, B, C, H, W) -> (E, B, C, H, W) by one grid_sample over all elements (B x C folded into
        channels), with no exact short-cut: smooth in the element parameters, e.g. for derivatives
        at the identity (``apply`` computes the identity exactly, by an integer index). ``grid``: the
        elements' sampling grid when already known (``_plan``)."""
        e, b, c, h, w = x.shape
        work = x if x.is_floating_point() else x.to(torch.float32)
        if grid is None or grid.dtype != work.dtype:
            grid = self._grid(elements, h, w, work.dtype, x.device)
        y = F.grid_sample(work.reshape(e, b * c, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.supersample > 1:
            y = F.avg_pool2d(y, self.supersample)
        y = y.reshape(e, b, c, h, w)
        return y if x.is_floating_point() else y.round().to(x.dtype)

    def apply(self, x: Tensor, elements: Tensor) -> Tensor:
        """x (E, B, C, H, W), elements (E, D) -> (E, B, C, H, W): one gather for the exact rows (the
        identity included, so it returns x unchanged), one grid_sample for the rest."""
        self._check_x(x, elements)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        work_dtype = x.dtype if x.is_floating_point() else torch.float32
        exact, ex, rs, grid, order = self._plan(elements, h, w, work_dtype, x.device)
        if len(rs) == 0:
            return self._permute(x, elements)
        if len(ex) == 0:
            return self.resample(x, elements, grid)
        parts = torch.cat(
            [
                self._permute(x.index_select(0, ex), elements[ex.to(elements.device)]),
                self.resample(x.index_select(0, rs), elements[rs.to(elements.device)], grid),
            ]
        )
        # out of place (autograd- and torch.func-friendly): back to the callers' row order
        return parts.index_select(0, order)

    # the step of the central difference that gives the action's tangent; bilinear sampling is
    # piecewise linear and at t = 0 no sub-sample sits on a pixel boundary, so this is exact to O(h^2)
    tangent_step: float = 1e-4
    tangent_unit: str = ""
    tangent_scale: float = 1.0  # t units per element-parameter unit (e.g. radians per degree)

    def tangents(self, x: Tensor) -> list[tuple[str, Tensor, str]]:
        """d/dt of ``resample`` at the identity, by a float64 central difference (see tangent_step)."""
        h = self.tangent_step
        el = torch.tensor([[h], [-h]], dtype=torch.float64, device=x.device)
        y = self.resample(x.to(torch.float64).unsqueeze(0).expand(2, *x.shape), el)
        return [(self.param_names[0], (y[0] - y[1]) / (2 * h * self.tangent_scale), self.tangent_unit)]

    def mask(self, x: Tensor, elements: Tensor) -> Tensor:
        """(E, 1, H, W) bool: True where every sub-sample's source lies inside the hull of source
        pixel centres (no zero padding blended in); all True for exactly computed rows."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        grid = self._grid(elements, h, w, torch.float64, x.device)
        eps = 1e-9
        inside = (grid[..., 0].abs() <= 1 - 1 / w + eps) & (grid[..., 1].abs() <= 1 - 1 / h + eps)
        inside = F.avg_pool2d(inside.to(torch.float64).unsqueeze(1), self.supersample) > 1 - 1e-6
        exact = self._exact_rows(elements, h, w).to(x.device).view(-1, 1, 1, 1)
        return inside | exact


@register
class Rotate(_Resampled):
    """SO(2) sampled on a grid of angles (degrees, counter-clockwise as displayed) about the image centre.

    Works on any H x W: the resampling map is a rotation in pixel units (``_theta`` carries the H/W
    aspect factors) and the mask keeps the pixels whose sub-samples all come from inside the
    rectangular frame. Multiples of 180 degrees are always exact permutations; ±90 degrees are exact
    only on square images. On non-square images a quarter turn cannot keep the shape, so those rows
    are resampled like any other angle (the overlap of the turned frame, masked), and ``check_input``
    records a note saying so. The elements stay the same on every shape.
    """

    NAME = "rotate"
    DESCRIPTION = (
        "Rotation by arbitrary angles (deg, counter-clockwise as displayed): multiples of step in [min, max] "
        "plus 0/90/180/-90; multiples of 90 exact (180 only, on non-square images), others resampled "
        "(2x supersampled bilinear, masked)."
    )
    PARAMS = (
        ParamSpec("step", float, 15.0, "angle spacing in degrees (angles are multiples of step)"),
        ParamSpec("min", float, -180.0, "smallest angle in degrees"),
        ParamSpec("max", float, 180.0, "largest angle in degrees"),
    )
    PLANAR = True
    LAYOUTS = ("NCHW", "NHWC")
    supersample = 2
    tangent_unit = "rad"
    tangent_scale = math.pi / 180.0  # elements are degrees, the derivative is reported per radian

    def __init__(self, **params) -> None:
        values = self._values(params)
        step_, lo, hi = float(values["step"]), float(values["min"]), float(values["max"])
        if step_ <= 0:
            raise self._error("step > 0", f"step={_fmt(step_)}", "pass a positive step in degrees, e.g. rotate:step=15")
        if hi < lo:
            raise self._error("min <= max", f"min={_fmt(lo)}, max={_fmt(hi)}", "swap them, e.g. rotate:min=-45,max=45")
        n_lo, n_hi = math.ceil(lo / step_ - 1e-9), math.floor(hi / step_ + 1e-9)
        self._check_count(n_hi - n_lo + 1, "angles", "use a larger step")
        angles = [i * step_ for i in range(n_lo, n_hi + 1)]
        angles += [a for a in (90.0, 180.0, -90.0) if lo <= a <= hi]
        if lo <= -180.0:
            angles.append(180.0)
        angles.append(0.0)  # the identity, always (the reference of every audit)
        a = wrap_degrees(torch.tensor(angles, dtype=torch.float64))
        a = torch.unique(torch.round(a * 1e9) / 1e9)  # sorted, float noise of i * step removed
        super().__init__(
            values,
            param_names=("angle",),
            units=("deg",),
            layout="polar",
            elements=a.view(-1, 1),
            labels=[f"{_fmt(v)}°" for v in a.tolist()],
        )

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """On non-square images, note that the quarter turns are resampled (masked), not permuted."""
        super().check_input(sample_shape)
        h, w = int(sample_shape[-2]), int(sample_shape[-1])
        q = self.elements[:, 0] / 90.0
        quarter = ((q - q.round()).abs() * 90.0 <= _ANGLE_TOL) & (torch.remainder(q.round(), 2) == 1)  # odd multiples of 90
        if h != w and bool(quarter.any()):
            self.notes.append(
                f"{self.name} on {h}x{w} images: the quarter turns (±90°) change the shape; they are resampled "
                "inside the overlap of the turned frame (masked) instead of permuted exactly"
            )

    def _exact_rows(self, elements: Tensor, h: int, w: int) -> Tensor:
        """Multiples of 90 degrees on square images, of 180 degrees otherwise."""
        period = 90.0 if h == w else 180.0
        q = elements[:, 0].to(torch.float64) / period
        return (q - q.round()).abs() * period <= _ANGLE_TOL

    def _source_pixels(self, elements: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        k = torch.remainder((elements[:, 0] / 90.0).round().to(torch.int64), 4)
        if h != w and bool((k % 2 == 1).any()):
            raise SymmetryError(_square_message(self.spec, h, w))
        return _dihedral_source(k, torch.zeros_like(k, dtype=torch.bool), "h", h, w)

    def _theta(self, elements: Tensor, h: int, w: int) -> Tensor:
        rad = torch.deg2rad(elements[:, 0])
        c, s = torch.cos(rad), torch.sin(rad)
        theta = torch.zeros(elements.shape[0], 2, 3, dtype=torch.float64, device=elements.device)
        # source (U, V) = (c U - s V, s U + c V) in pixels; normalised x = U / W, y = V / H
        theta[:, 0, 0], theta[:, 0, 1] = c, -s * h / w
        theta[:, 1, 0], theta[:, 1, 1] = s * w / h, c
        return theta

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return wrap_degrees(a + b)

    def inverse(self, a: Tensor) -> Tensor:
        return wrap_degrees(-a)

    def _source_linear(self, elements: Tensor) -> Tensor:
        rad = torch.deg2rad(elements[:, 0])
        c, s = torch.cos(rad), torch.sin(rad)
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


@register
class Scale(_Resampled):
    """Isotropic zoom about the image centre, by factors on a log grid; elements hold log2 of the factor."""

    NAME = "scale"
    DESCRIPTION = (
        "Zoom about the image centre by log-spaced factors in [min, max] plus 1 (>1 enlarges); resampled "
        "(supersampled bilinear with area averaging against aliasing), masked. On 1-D signals a time stretch."
    )
    PARAMS = (
        ParamSpec("min", float, 0.5, "smallest zoom factor (> 0; < 1 shrinks the content)"),
        ParamSpec("max", float, 2.0, "largest zoom factor"),
        ParamSpec("steps", int, 9, "number of log-spaced factors from min to max (1.0 is added if missing)"),
    )

    tangent_unit = "log2"

    def __init__(self, **params) -> None:
        values = self._values(params)
        lo, hi, n = float(values["min"]), float(values["max"]), int(values["steps"])
        if lo <= 0:
            raise self._error("min > 0", f"min={_fmt(lo)}", "pass a positive zoom factor, e.g. scale:min=0.5")
        if hi < lo:
            raise self._error("min <= max", f"min={_fmt(lo)}, max={_fmt(hi)}", "swap them, e.g. scale:min=0.5,max=2")
        limit = f"1 <= steps <= {MAX_ELEMENTS} with 1.0 among the factors ({MAX_ELEMENTS - 1} without)"
        if n < 1 or n > MAX_ELEMENTS:
            raise self._error(limit, f"steps={n}", "pass e.g. scale:steps=9")
        # enough sub-samples that the smallest zoom reads every source pixel (2..4 per axis)
        self.supersample = min(4, max(2, math.ceil(1.0 / lo - 1e-9)))
        logs = torch.linspace(math.log2(lo), math.log2(hi), n, dtype=torch.float64)
        logs = torch.unique(torch.round(torch.cat([logs, torch.zeros(1, dtype=torch.float64)]) * 1e12) / 1e12)
        if logs.numel() > MAX_ELEMENTS:  # 1.0 (the identity) was added
            raise self._error(limit, f"steps={n} (1.0 added: {logs.numel()} factors)", f"pass steps={MAX_ELEMENTS - 1} or fewer")
        super().__init__(
            values,
            param_names=("log2_scale",),
            units=("log2",),
            layout="line",
            elements=logs.view(-1, 1),
            labels=[f"×{2.0 ** v:.3g}" for v in logs.tolist()],
        )

    def _exact_rows(self, elements: Tensor, h: int, w: int) -> Tensor:
        return elements[:, 0].abs() <= _LOG_TOL

    def _source_pixels(self, elements: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        e = elements.shape[0]
        rows = torch.arange(h, dtype=torch.int64).view(1, h, 1).expand(e, h, w)
        cols = torch.arange(w, dtype=torch.int64).view(1, 1, w).expand(e, h, w)
        return rows, cols

    def _theta(self, elements: Tensor, h: int, w: int) -> Tensor:
        inv = torch.exp2(-elements[:, 0])
        theta = torch.zeros(elements.shape[0], 2, 3, dtype=torch.float64, device=elements.device)
        theta[:, 0, 0], theta[:, 1, 1] = inv, inv
        return theta

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def inverse(self, a: Tensor) -> Tensor:
        return -a

    def _source_linear(self, elements: Tensor) -> Tensor:
        inv = torch.exp2(-elements[:, 0].to(torch.float64))
        return inv.view(-1, 1, 1) * torch.eye(2, dtype=torch.float64, device=elements.device)

