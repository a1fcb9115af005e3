"""Symmetries acting on volumes x (B, C, D, H, W): rot90-3d (the 24 rotations of the cube) and flip3d (axis mirrors); exact.

Conventions:

- Voxel coordinates are (x, y, z) = (column, row, slice): x along W (right), y along H (down), z
  along D (deeper slices). An element is a signed permutation matrix M acting on these coordinates,
  centred on the volume: output voxel p shows input voxel M^-1 p, so ``apply`` is one gather with a
  cached (E, D*H*W) source index, bit-identical to the matching ``torch.rot90`` / ``torch.flip``.
- ``rot90-3d``: the 24 proper rotations of the cube (det M = +1), labelled by axis and angle
  (``x90`` is a right-handed quarter turn about x; ``xyz120`` a third of a turn about the diagonal
  (1, 1, 1); ``x-y180`` a half turn about (1, -1, 0)). Elements hold the index r into ``cube()``.
- ``flip3d``: the mirrors of the chosen axes (``axis=x``, ``y``, ``z`` or ``all`` for the 8 elements
  of Z2^3, point inversion included); elements hold one 0/1 flag per axis (fx, fy, fz).
- Non-cubic volumes: elements that would change the shape are dropped in ``check_input`` (the
  shape-keeping subgroup, with a note), as rot90 does on rectangular images.
- 3-vector outputs (E, B, 3) or per-point (E, B, P, 3) in (x, y, z) order turn by M (``vectors``), so
  ``--output vector`` / ``pseudovector`` work on volumes; dense volume maps move like the input
  (``map_action`` on (E, B, C, D', H', W') maps of any resolution).

Shapes: E elements, B batch, C channels, D slices, H rows, W columns.
"""

from __future__ import annotations

import functools
import itertools
from collections import OrderedDict
from typing import TYPE_CHECKING, ClassVar

from .._lazy import LazyModule

torch = LazyModule("torch", globals())  # loaded on first use: the catalogue alone needs no torch

if TYPE_CHECKING:
    from torch import Tensor

from ..errors import SymmetryError
from .base import ParamSpec, Symmetry
from .catalogue import register

_CACHE_SIZE = 16
_AXIS_NAMES = "xyz"


def _signed_permutations(det: int | None) -> Tensor:
    """(K, 3, 3) int64 signed permutation matrices (with determinant ``det``, or all 48), identity first."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = torch.zeros(3, 3, dtype=torch.int64)
            for i, j in enumerate(perm):
                m[i, j] = signs[i]
            if det is None or int(round(float(torch.linalg.det(m.double())))) == det:
                mats.append(m)
    return torch.stack(mats)




def _axis_text(v: Tensor) -> str:
    """An integer axis vector with entries in {-1, 0, 1} -> ``x``, ``-y``, ``xy``, ``x-yz``."""
    return "".join(("-" if int(c) < 0 else "") + _AXIS_NAMES[i] for i, c in enumerate(v.tolist()) if int(c) != 0)


def _rotation_label(m: Tensor) -> str:
    """Axis-angle label of a cube rotation: the axis with its first non-zero entry positive and the
    right-handed angle about it in degrees (90, 120, 180, 240 or 270)."""
    md = m.to(torch.float64)
    if bool((m == torch.eye(3, dtype=torch.int64)).all()):
        return "id"
    vals, vecs = torch.linalg.eig(md)
    axis = vecs[:, (vals - 1).abs().argmin()].real
    axis = axis / axis.abs().max()
    axis = torch.where(axis.abs() < 1e-6, torch.zeros_like(axis), axis.sign())
    if float(axis[axis != 0][0]) < 0:
        axis = -axis
    cos = (float(md.trace()) - 1) / 2
    n = axis / axis.norm()
    # sin from the antisymmetric part: (M - M^T) = 2 sin(theta) [n]_x
    sin = float((md[2, 1] - md[1, 2]) * n[0] + (md[0, 2] - md[2, 0]) * n[1] + (md[1, 0] - md[0, 1]) * n[2]) / 2
    angle = round(float(torch.rad2deg(torch.atan2(torch.tensor(sin), torch.tensor(cos))))) % 360
    return f"{_axis_text(axis)}{angle}"


def _cube_in_reading_order() -> Tensor:
    """The 24 rotations ordered for reading: identity, quarter and half turns about x, y, z, the half
    turns about the six edge axes, then the thirds about the four diagonals."""
    mats = _signed_permutations(+1)
    labels = [_rotation_label(m) for m in mats]

    def key(i: int) -> tuple:
        text = labels[i].rstrip("0123456789")
        return (sum(c in _AXIS_NAMES for c in text), text.replace("-", "~"), int(labels[i][len(text):] or 0))

    return mats[sorted(range(len(mats)), key=key)]


@functools.cache
def cube() -> Tensor:
    """(24, 3, 3) int64: the rotations of the cube acting on (x, y, z), the identity first (built on first use)."""
    return _cube_in_reading_order()


class VolumeSymmetry(Symmetry):
    """Base of the volume symmetries: elements are signed permutations of (x, y, z), acting by one gather."""

    DOMAIN = "volume"
    ASPECTS: ClassVar[frozenset[str]] = frozenset({"space"})

    def __init__(self, values: dict[str, object], *, param_names: tuple[str, ...], elements: Tensor, labels: list[str]) -> None:
        self._setup(values, param_names=param_names, units=("",) * len(param_names), layout="finite", elements=elements,
                    labels=labels, identity_index=0)
        self._built = (self.elements, list(labels))
        self._index_cache: OrderedDict[tuple, Tensor] = OrderedDict()

    def matrices(self, elements: Tensor) -> Tensor:
        """(E, D) -> (E, 3, 3) int64: the signed permutation each element applies to (x, y, z)."""
        raise NotImplementedError

    def _element_of(self, mats: Tensor) -> Tensor:
        """(E, 3, 3) int64 matrices -> (E, D) element rows (the inverse of ``matrices``)."""
        raise NotImplementedError

    # ---- binding to the data ------------------------------------------------------------------------------

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Require (C, D, H, W) volumes; on non-cubic ones keep the elements that keep the shape, with a note."""
        shape = tuple(int(s) for s in sample_shape)
        if len(shape) != 4:
            raise SymmetryError(
                f"Expected volumes of shape (C, D, H, W) for symmetry '{self.spec}', got one sample of shape {shape}, "
                "do pass (N, C, D, H, W) data (--layout NDHWC for channels-last volumes) or pick a symmetry for this "
                "kind of data (see `eqaudit symmetries`)"
            )
        self.notes = []
        elements, labels = self._built
        sizes = torch.tensor([shape[3], shape[2], shape[1]])  # along x, y, z
        m = self.matrices(elements).abs()  # output axis i takes input axis j where m[i, j] = 1
        keep = ((m * sizes.view(1, 1, 3)).sum(-1) == sizes.view(1, 3)).all(-1)
        if bool(keep.all()):
            self.elements, self.labels = elements, labels
            return
        rows = keep.nonzero().squeeze(1)
        self.elements, self.labels = elements[rows], [labels[i] for i in rows.tolist()]
        self.identity_index = 0
        self.notes.append(
            f"{self.name} on {shape[1]}x{shape[2]}x{shape[3]} volumes: {int((~keep).sum())} of {len(keep)} elements change "
            f"the shape; measured on the shape-keeping subgroup of {len(rows)}"
        )

    # ---- the action ---------------------------------------------------------------------------------------

    def _source_index(self, elements: Tensor, dhw: tuple[int, int, int], device: torch.device) -> Tensor:
        """(E, D*H*W) int64 source voxel of every output voxel, cached per (shape, device, elements)."""
        el = elements.detach().to("cpu", torch.float64).contiguous()
        key = (dhw, str(device), tuple(el.shape), el.numpy().tobytes())
        hit = self._index_cache.get(key)
        if hit is not None:
            self._index_cache.move_to_end(key)
            return hit
        with torch.inference_mode(False):
            d, h, w = dhw
            sizes = torch.tensor([w, h, d], dtype=torch.int64)
            z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.int64) for n in (d, h, w)), indexing="ij")
            p = torch.stack([x, y, z], -1).reshape(-1, 3) * 2 - (sizes - 1)  # doubled centred coordinates (V, 3)
            mats = self.matrices(torch.from_numpy(el.numpy().copy()))
            src = torch.einsum("eji,vj->evi", mats, p)  # M^-1 p = M^T p
            src = (src + (sizes - 1)) // 2
            if bool(((src < 0) | (src >= sizes)).any()):
                raise SymmetryError(
                    f"Expected elements of '{self.spec}' that keep the volume's shape {d}x{h}x{w}, got one that does not, "
                    "do report this: check_input should have bound the shape-keeping subgroup"
                )
            index = ((src[..., 2] * h + src[..., 1]) * w + src[..., 0]).to(device)
        self._index_cache[key] = index
        if len(self._index_cache) > _CACHE_SIZE:
            self._index_cache.popitem(last=False)
        return index

    def apply(self, x: Tensor, elements: Tensor) -> Tensor:
        """x (E, B, C, D, H, W), elements (E, P) -> (E, B, C, D, H, W) by one gather."""
        if x.dim() != 6 or elements.dim() != 2 or x.shape[0] != elements.shape[0]:
            raise ValueError(f"Expected x (E, B, C, D, H, W) and elements (E, P) with the same E, got {tuple(x.shape)} and {tuple(elements.shape)}")
        e, b, c, d, h, w = x.shape
        index = self._source_index(elements, (d, h, w), x.device)
        out = torch.gather(x.reshape(e, b, c, d * h * w), 3, index.view(e, 1, 1, -1).expand(e, b, c, d * h * w))
        return out.reshape(e, b, c, d, h, w)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return self._element_of(self.matrices(a) @ self.matrices(b)).to(a)

    def inverse(self, a: Tensor) -> Tensor:
        return self._element_of(self.matrices(a).transpose(1, 2)).to(a)

    # ---- how the action carries over to outputs -----------------------------------------------------------

    def vectors(self, out: Tensor, elements: Tensor) -> Tensor:
        """3-vector outputs (E, B, 3) or per-point (E, B, P, 3) in (x, y, z) order -> M v (float64)."""
        m = self.matrices(elements).to(device=out.device, dtype=torch.float64)
        if out.dim() == 4:
            return torch.einsum("eij,ebpj->ebpi", m, out.to(torch.float64))
        return torch.einsum("eij,ebj->ebi", m, out.to(torch.float64))

    def map_action(self, maps: Tensor, elements: Tensor, input_hw) -> Tensor:
        """Dense volume maps (E, B, C, D', H', W') move like the input (any resolution: the action is centred)."""
        return self.apply(maps, elements)


def _lookup(table: Tensor, mats: Tensor, what: str) -> Tensor:
    """Index of each (3, 3) matrix of ``mats`` in ``table`` (K, 3, 3)."""
    hit = (mats.unsqueeze(1) == table.unsqueeze(0)).flatten(2).all(-1)  # (E, K)
    if not bool(hit.any(1).all()):
        raise SymmetryError(f"Expected elements of {what}, got a matrix outside it, do pass rows made by the symmetry itself")
    return hit.to(torch.int64).argmax(1)


@register
class Rot90_3D(VolumeSymmetry):
    """The rotation group of the cube (24 elements) acting on volumes."""

    NAME = "rot90-3d"
    DESCRIPTION = (
        "The 24 rotations of the cube on volumes (N, C, D, H, W): quarter turns about x, y, z and their products; "
        "exact voxel permutation. Non-cubic volumes: the shape-keeping subgroup, with a note."
    )

    def __init__(self, **params) -> None:
        super().__init__(
            self._values(params),
            param_names=("r",),
            elements=torch.arange(len(cube()), dtype=torch.float64).view(-1, 1),
            labels=[_rotation_label(m) for m in cube()],
        )

    def matrices(self, elements: Tensor) -> Tensor:
        r = torch.remainder(elements[:, 0].detach().cpu().round().to(torch.int64), len(cube()))
        return cube()[r]

    def _element_of(self, mats: Tensor) -> Tensor:
        return _lookup(cube(), mats.cpu(), "the rotations of the cube").to(torch.float64).view(-1, 1)


@register
class Flip3D(VolumeSymmetry):
    """Mirrors of volume axes: Z2 for one axis, Z2^3 (8 elements, point inversion included) for all."""

    NAME = "flip3d"
    DESCRIPTION = (
        "Mirrors of volumes (N, C, D, H, W): axis=x flips W, y flips H, z flips D (2 elements each); "
        "axis=all every combination (8 elements, point inversion included); exact."
    )
    PARAMS = (ParamSpec("axis", str, "all", "x, y or z: mirror that axis; all: every combination of the three", ("x", "y", "z", "all")),)

    def __init__(self, **params) -> None:
        values = self._values(params)
        self.axis = str(values["axis"])
        if self.axis == "all":
            flags = torch.tensor(list(itertools.product((0, 1), repeat=3)), dtype=torch.float64).flip(1)  # fx fastest
        else:
            flags = torch.zeros(2, 3, dtype=torch.float64)
            flags[1, _AXIS_NAMES.index(self.axis)] = 1
        labels = ["id" if not f.any() else "flip-" + "".join(a for a, v in zip(_AXIS_NAMES, f.tolist()) if v) for f in flags]
        super().__init__(values, param_names=("fx", "fy", "fz"), elements=flags, labels=labels)

    def matrices(self, elements: Tensor) -> Tensor:
        f = torch.remainder(elements.detach().cpu().round().to(torch.int64), 2)
        return torch.diag_embed(1 - 2 * f)

    def _element_of(self, mats: Tensor) -> Tensor:
        d = torch.diagonal(mats.cpu(), dim1=1, dim2=2)
        off = mats.cpu() - torch.diag_embed(d)
        if bool(off.any()) or bool((d.abs() != 1).any()):
            raise SymmetryError("Expected axis mirrors for 'flip3d', got a matrix that is not diagonal, do pass rows made by the symmetry itself")
        return ((1 - d) // 2).to(torch.float64)

    def words(self, elements: Tensor) -> list[list[tuple[str, int]]]:
        """One axis: the element as a power of the mirror ``flip`` (so ``label-perm:flip=...`` composes)."""
        if self.axis == "all":
            return super().words(elements)
        i = _AXIS_NAMES.index(self.axis)
        return [[("flip", int(v))] for v in torch.remainder(elements[:, i].round().to(torch.int64), 2).tolist()]
