"""Symmetries acting on point clouds x (B, P, 3): so3, o3, rotate-z, permute and translate3d, all exact in float64.

Conventions:

- A point cloud is (B, P, 3) with one point per row; a group element acts as x -> x[perm] @ M^T + t
  (rows reordered, then each point mapped by the 3x3 matrix M, then shifted by t). Every point
  symmetry here exposes these three parts (``point_permutation``, ``point_matrix``,
  ``point_shift``), which is how tasks move outputs along with the inputs (eqaudit.symmetries.outputs).
- Rotations are stored as unit quaternions (w, x, y, z) in float64, canonical sign (first non-zero
  component positive); ``quaternion_matrix`` turns them into (E, 3, 3) rotation matrices and
  ``rotation_vectors`` into axis * angle (radians), for axis-angle plots (layout ``"axis-angle"``).
- ``so3`` holds deterministic grids (the 24 rotations of the cube, the 60 of the icosahedron, both
  from the binary polyhedral groups as exact quaternions) and/or Haar-random rotations from a seeded
  generator (normalised 4-D Gaussians, which are uniform on the 3-sphere, hence Haar on SO(3); the
  test suite checks the angle and axis distributions). ``o3`` adds the point reflection -I.
- ``permute`` draws random permutations of the P points. P comes from the data: with ``points=0``
  (default) the permutations are drawn when ``check_input`` sees the sample shape (the scan calls
  it before the sweep), so elements are (E, P) rows of point indices.

Shapes: E elements, D parameters per element, B batch, P points.
"""

from __future__ import annotations

import itertools
import math

from typing import TYPE_CHECKING

from .._lazy import LazyModule

torch = LazyModule("torch", globals())  # loaded on first use: the catalogue alone needs no torch

if TYPE_CHECKING:
    from torch import Tensor

from ..errors import SymmetryError
from .base import MAX_ELEMENTS, ParamSpec, Symmetry, wrap_degrees
from .catalogue import register

_SNAP = 1e-12  # matrix entries this close to an integer are snapped (quarter turns exactly signed permutations)
PHI = (1.0 + math.sqrt(5.0)) / 2.0


# ---------------------------------------------------------------------------------------------------------
# quaternions


def quaternion_canonical(q: Tensor) -> Tensor:
    """(E, 4) -> (E, 4): unit quaternions with the sign fixed (first component above 1e-12 in size positive)."""
    q = q / q.norm(dim=1, keepdim=True)
    big = q.abs() > 1e-12
    first = torch.argmax(big.to(torch.int64), dim=1)  # first non-negligible component
    sign = torch.sign(q.gather(1, first.view(-1, 1)))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return q * sign


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product row by row: (E, 4), (E, 4) -> (E, 4); the rotation 'b, then a'."""
    aw, ax, ay, az = a.unbind(1)
    bw, bx, by, bz = b.unbind(1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=1,
    )


def quaternion_matrix(q: Tensor) -> Tensor:
    """(E, 4) unit quaternions (w, x, y, z) -> (E, 3, 3) float64 rotation matrices (entries within
    1e-12 of an integer snapped to it, so quarter turns are exact signed permutations)."""
    q = q.to(torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    m = torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        dim=-2,
    )
    r = m.round()
    return torch.where((m - r).abs() < _SNAP, r, m)


def rotation_vectors(q: Tensor) -> Tensor:
    """(E, 4) unit quaternions -> (E, 3) rotation vectors: unit axis times angle in radians, angle in [0, pi]."""
    q = quaternion_canonical(q.to(torch.float64))
    w = q[:, 0].clamp(-1.0, 1.0)
    v = q[:, 1:]
    s = v.norm(dim=1)
    angle = 2.0 * torch.atan2(s, w)
    axis = torch.where(s.view(-1, 1) > 0, v / s.clamp_min(1e-300).view(-1, 1), torch.zeros_like(v))
    return axis * angle.view(-1, 1)


def haar_quaternions(n: int, seed: int) -> Tensor:
    """(n, 4) Haar-random rotations: normalised standard Gaussian 4-vectors (uniform on S^3), seeded."""
    g = torch.Generator().manual_seed(int(seed))
    q = torch.randn(n, 4, dtype=torch.float64, generator=g)
    return quaternion_canonical(q)


def _signed_permutations(base: tuple[float, ...], even_only: bool) -> Tensor:
    """All (even, if asked) permutations of ``base`` with every sign pattern on non-zero entries."""
    rows = set()
    for perm in itertools.permutations(range(4)):
        if even_only:
            inversions = sum(1 for i in range(4) for j in range(i + 1, 4) if perm[i] > perm[j])
            if inversions % 2:
                continue
        vals = [base[p] for p in perm]
        for signs in itertools.product((1.0, -1.0), repeat=4):
            rows.add(tuple(s * v for s, v in zip(signs, vals)))
    return torch.tensor(sorted(rows), dtype=torch.float64)


def _unique_rotations(q: Tensor) -> Tensor:
    """Canonical quaternions, duplicates (q and -q) removed, identity first, then a fixed order."""
    q = quaternion_canonical(q)
    key = torch.round(q * 1e9) / 1e9
    _, idx = torch.unique(key, dim=0, return_inverse=True)
    first = torch.full((int(idx.max()) + 1,), q.shape[0], dtype=torch.int64)
    first = first.scatter_reduce(0, idx, torch.arange(q.shape[0]), reduce="amin")
    q = q[first.sort().values]
    ident = (q[:, 0] > 1 - 1e-12)
    return torch.cat([q[ident], q[~ident]])


def octahedral_quaternions() -> Tensor:
    """(24, 4): the rotation group of the cube, from the 48 elements of the binary octahedral group."""
    r = 1.0 / math.sqrt(2.0)
    q = torch.cat(
        [
            _signed_permutations((1.0, 0.0, 0.0, 0.0), False),
            _signed_permutations((0.5, 0.5, 0.5, 0.5), False),
            _signed_permutations((r, r, 0.0, 0.0), False),
        ]
    )
    out = _unique_rotations(q)
    assert out.shape[0] == 24
    return out


def icosahedral_quaternions() -> Tensor:
    """(60, 4): the rotation group of the icosahedron, from the 120 unit icosians (binary icosahedral group)."""
    q = torch.cat(
        [
            _signed_permutations((1.0, 0.0, 0.0, 0.0), False),
            _signed_permutations((0.5, 0.5, 0.5, 0.5), False),
            _signed_permutations((0.0, 0.5, PHI / 2.0, 1.0 / (2.0 * PHI)), True),
        ]
    )
    out = _unique_rotations(q)
    assert out.shape[0] == 60
    return out


def _axis_label(q: Tensor) -> list[str]:
    rv = rotation_vectors(q)
    angle = rv.norm(dim=1)
    out = []
    for a, v in zip(angle.tolist(), rv.tolist()):
        if a < 1e-12:
            out.append("id")
        else:
            ax = [round(c / a, 2) + 0.0 for c in v]  # + 0.0: no "-0.00"
            out.append(f"{math.degrees(a):.0f}° ({ax[0]:+.2f},{ax[1]:+.2f},{ax[2]:+.2f})")
    return out


def _axis_matrix(angle_rad: Tensor, axis: str) -> Tensor:
    """(E,) angles -> (E, 3, 3) rotations about the x, y or z axis (right-handed)."""
    c, s = torch.cos(angle_rad), torch.sin(angle_rad)
    # exact values at multiples of 90 degrees
    q = angle_rad / (math.pi / 2)
    quarter = (q - q.round()).abs() < 1e-12
    k = torch.remainder(q.round().to(torch.int64), 4)
    c = torch.where(quarter, torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)[k], c)
    s = torch.where(quarter, torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)[k], s)
    one = torch.ones_like(c)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    m = torch.zeros(c.shape[0], 3, 3, dtype=torch.float64)
    n = 3 - i - j
    m[:, n, n] = one
    m[:, i, i], m[:, i, j] = c, -s
    m[:, j, i], m[:, j, j] = s, c
    return m


# ---------------------------------------------------------------------------------------------------------
# base


class PointSymmetry(Symmetry):
    """Base of the point-cloud symmetries: x (E, B, P, 3) -> x[perm] @ M^T + t, in float64.

    Subclasses set the catalogue attributes (NAME, DESCRIPTION, PARAMS, EXACT; see Symmetry), build
    their elements with ``_setup`` and implement any of ``point_matrix``, ``point_permutation``,
    ``point_shift`` that is not the identity.
    """

    DOMAIN = "points"

    # ---- the three parts of the action ------------------------------------------------------------------

    def point_matrix(self, elements: Tensor) -> Tensor:
        """(E, D) -> (E, 3, 3) float64: the linear map every point (and every 3-vector output) undergoes."""
        return torch.eye(3, dtype=torch.float64, device=elements.device).expand(elements.shape[0], 3, 3).clone()

    def point_permutation(self, elements: Tensor) -> Tensor | None:
        """(E, D) -> (E, P) int64 source row of each output row (out[i] = x[perm[i]]), or None (order kept)."""
        return None

    def point_shift(self, elements: Tensor) -> Tensor | None:
        """(E, D) -> (E, 3) float64 shift added to every point after the linear map, or None."""
        return None

    def apply(self, x: Tensor, elements: Tensor) -> Tensor:
        """x (E, B, P, 3), elements (E, D) -> (E, B, P, 3): rows gathered, @ M^T, + t, computed in float64."""
        if x.dim() != 4 or x.shape[-1] != 3 or elements.dim() != 2 or x.shape[0] != elements.shape[0]:
            raise ValueError(
                f"Expected x (E, B, P, 3) and elements (E, D) with the same E, got {tuple(x.shape)} and {tuple(elements.shape)}"
            )
        e, b, p, _ = x.shape
        perm = self.point_permutation(elements)
        if perm is not None:
            if perm.shape[1] != p:
                raise SymmetryError(
                    f"Expected point clouds of {perm.shape[1]} points for '{self.spec}' (its permutations were drawn "
                    f"for that many), got {p}, do let the scan bind it (check_input) or pass {self.NAME}:points={p}"
                )
            x = torch.gather(x, 2, perm.to(x.device).view(e, 1, p, 1).expand(e, b, p, 3))
        work = x.to(torch.float64)
        m = self.point_matrix(elements).to(device=x.device)
        out = torch.einsum("eij,ebpj->ebpi", m, work)
        t = self.point_shift(elements)
        if t is not None:
            out = out + t.to(x.device).view(e, 1, 1, 3)
        return out.to(x.dtype) if x.is_floating_point() else out.round().to(x.dtype)

    def vectors(self, out: Tensor, elements: Tensor) -> Tensor:
        """The action on 3-vector outputs (E, B, 3) or per-point vectors (E, B, P, 3): rows reordered
        (per-point outputs only), then @ M^T; shifts do not act on vectors."""
        m = self.point_matrix(elements).to(out.device)
        if out.dim() == 4:
            perm = self.point_permutation(elements)
            if perm is not None:
                e, b, p, c = out.shape
                out = torch.gather(out, 2, perm.to(out.device).view(e, 1, p, 1).expand(e, b, p, c))
            return torch.einsum("eij,ebpj->ebpi", m, out.to(torch.float64))
        return torch.einsum("eij,ebj->ebi", m, out.to(torch.float64))


class _RotationGroup(PointSymmetry):
    """so3 and o3: quaternion elements (plus a point-reflection flag for o3)."""

    ASPECTS = frozenset({"rotation"})

    LAYOUT = "axis-angle"
    COPIES = 1  # elements per rotation (o3: with and without the point reflection)
    PARAMS = (
        ParamSpec("n", int, 64, "number of Haar-random rotations (seeded) added to the grid"),
        ParamSpec(
            "grid",
            str,
            "none",
            "deterministic rotations included: none (identity only), octahedral (24), icosahedral (60)",
            ("none", "octahedral", "icosahedral"),
        ),
        ParamSpec("seed", int, 0, "seed of the Haar-random rotations"),
    )

    def _rotations(self, values: dict) -> Tensor:
        n, grid, seed = int(values["n"]), str(values["grid"]), int(values["seed"])
        if n < 0:
            raise self._error("n >= 0", f"n={n}", f"pass a number of random rotations, e.g. {self.NAME}:n=64")
        if grid == "octahedral":
            base = octahedral_quaternions()
        elif grid == "icosahedral":
            base = icosahedral_quaternions()
        else:
            base = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
        limit = MAX_ELEMENTS // self.COPIES - base.shape[0]  # the grid (or the identity) and n, COPIES times
        if n > limit:
            raise self._error(f"n <= {limit} (at most {MAX_ELEMENTS} elements with grid={grid})", f"n={n}",
                              f"ask for fewer, e.g. {self.NAME}:n=64")
        if n == 0 and grid == "none":
            raise self._error(
                "at least one rotation besides the identity", "n=0, grid=none", f"pass e.g. {self.NAME}:n=64 or {self.NAME}:grid=octahedral"
            )
        return torch.cat([base, haar_quaternions(n, seed)]) if n else base

    @staticmethod
    def _q(elements: Tensor) -> Tensor:
        return elements[:, :4]

    def point_matrix(self, elements: Tensor) -> Tensor:
        return quaternion_matrix(self._q(elements).to(torch.float64))

    def tangents(self, x: Tensor) -> list[tuple[str, Tensor, str]]:
        """The three infinitesimal rotations about x, y and z: v = x @ L_i^T (per radian)."""
        xd = x.to(torch.float64)
        out = []
        for name, gen in zip(("rx", "ry", "rz"), _generators()):
            out.append((name, xd @ gen.to(x.device).T, "rad"))
        return out

    def generator_matrix(self, name: str) -> Tensor | None:
        """(3, 3) generator of the one-parameter subgroup ``name`` (rx, ry, rz), for output tangents."""
        return dict(zip(("rx", "ry", "rz"), _generators())).get(name)


def _generators() -> tuple[Tensor, Tensor, Tensor]:
    """so(3) generators L_x, L_y, L_z (d/dt of the rotation by t radians about each axis at t = 0)."""
    lx = torch.tensor([[0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)
    ly = torch.tensor([[0, 0, 1], [0, 0, 0], [-1, 0, 0]], dtype=torch.float64)
    lz = torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)
    return lx, ly, lz


@register
class SO3(_RotationGroup):
    """3-D rotations: a deterministic polyhedral grid and/or seeded Haar-random samples, as quaternions."""

    NAME = "so3"
    DESCRIPTION = (
        "3-D rotations of point clouds (P, 3): the identity, a deterministic grid (octahedral 24, icosahedral 60) "
        "and n seeded Haar-random rotations; exact (float64 matrices)."
    )

    def __init__(self, **params) -> None:
        values = self._values(params)
        q = self._rotations(values)
        self._setup(values, param_names=("qw", "qx", "qy", "qz"), units=("", "", "", ""), layout=self.LAYOUT,
                    elements=q, labels=_axis_label(q), identity_index=0)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return quaternion_canonical(quaternion_multiply(a, b))

    def inverse(self, a: Tensor) -> Tensor:
        return quaternion_canonical(a * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=a.dtype, device=a.device))


@register
class O3(_RotationGroup):
    """Rotations and rotoreflections: so3's rotations, each also followed by the point reflection -I."""

    NAME = "o3"
    COPIES = 2
    DESCRIPTION = (
        "3-D rotations and reflections of point clouds: so3's elements, each with and without the point "
        "reflection x -> -x (det -1); exact (float64 matrices)."
    )

    def __init__(self, **params) -> None:
        values = self._values(params)
        q = self._rotations(values)
        e = q.shape[0]
        flags = torch.cat([torch.zeros(e, 1), torch.ones(e, 1)]).to(torch.float64)
        elements = torch.cat([torch.cat([q, q]), flags], dim=1)
        labels = _axis_label(q)
        labels = labels + [("-I" if s == "id" else f"-I·{s}") for s in labels]
        self._setup(values, param_names=("qw", "qx", "qy", "qz", "inv"), units=("", "", "", "", ""), layout=self.LAYOUT,
                    elements=elements, labels=labels, identity_index=0)

    @staticmethod
    def _flag(elements: Tensor) -> Tensor:
        return torch.remainder(elements[:, 4].round(), 2)

    def point_matrix(self, elements: Tensor) -> Tensor:
        m = quaternion_matrix(self._q(elements).to(torch.float64))
        sign = 1.0 - 2.0 * self._flag(elements).to(torch.float64)
        return m * sign.view(-1, 1, 1)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        q = quaternion_canonical(quaternion_multiply(a[:, :4], b[:, :4]))
        return torch.cat([q, torch.remainder(self._flag(a) + self._flag(b), 2).view(-1, 1)], dim=1)

    def inverse(self, a: Tensor) -> Tensor:
        q = quaternion_canonical(a[:, :4] * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=a.dtype, device=a.device))
        return torch.cat([q, self._flag(a).view(-1, 1)], dim=1)


@register
class RotateZ(PointSymmetry):
    """Rotations about one coordinate axis (default z) on a grid of angles: a 1-D orbit (polar plot)."""

    ASPECTS = frozenset({"rotation"})

    NAME = "rotate-z"
    DESCRIPTION = (
        "Rotations of point clouds about one axis (default z, right-handed) by multiples of step degrees "
        "in (-180, 180]; a 1-D orbit drawn as a polar plot; exact (float64 matrices)."
    )
    PARAMS = (
        ParamSpec("step", float, 15.0, "angle spacing in degrees"),
        ParamSpec("axis", str, "z", "the rotation axis", ("x", "y", "z")),
    )

    def __init__(self, **params) -> None:
        values = self._values(params)
        step_ = float(values["step"])
        self.axis = str(values["axis"])
        if step_ <= 0 or step_ > 180:
            raise self._error("0 < step <= 180", f"step={step_:g}", "pass an angle step in degrees, e.g. rotate-z:step=15")
        n = math.floor(180.0 / step_ + 1e-9)
        self._check_count(2 * n + 1, "angles", "use a larger step")
        angles = torch.tensor([i * step_ for i in range(-n, n + 1)] + [180.0], dtype=torch.float64)
        a = torch.unique(torch.round(wrap_degrees(angles) * 1e9) / 1e9)
        self._setup(values, param_names=("angle",), units=("deg",), layout="polar", elements=a.view(-1, 1),
                    labels=[f"{v:g}°" for v in a.tolist()])

    def point_matrix(self, elements: Tensor) -> Tensor:
        return _axis_matrix(torch.deg2rad(elements[:, 0].to(torch.float64).cpu()), self.axis).to(elements.device)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return wrap_degrees(a + b)

    def inverse(self, a: Tensor) -> Tensor:
        return wrap_degrees(-a)

    def tangents(self, x: Tensor) -> list[tuple[str, Tensor, str]]:
        gen = self.generator_matrix("angle").to(x.device)
        return [("angle", x.to(torch.float64) @ gen.T, "rad")]

    def generator_matrix(self, name: str) -> Tensor | None:
        if name != "angle":
            return None
        return dict(zip(("x", "y", "z"), _generators()))[self.axis]


@register
class Permute(PointSymmetry):
    """Random permutations of the points of a cloud (seeded); the identity first."""

    ASPECTS = frozenset({"order"})

    NAME = "permute"
    DESCRIPTION = (
        "Random permutations of the P points of each cloud (seeded; identity included); elements are the "
        "permuted point indices, drawn for the data's P unless points= is given; exact."
    )
    PARAMS = (
        ParamSpec("n", int, 16, "number of random permutations besides the identity"),
        ParamSpec("seed", int, 0, "seed of the permutations"),
        ParamSpec("points", int, 0, "points per cloud P (0: take it from the data)"),
    )

    def __init__(self, **params) -> None:
        values = self._values(params)
        self.n, self.seed, self.points = int(values["n"]), int(values["seed"]), int(values["points"])
        if self.n < 1 or self.n > MAX_ELEMENTS:
            raise self._error(f"1 <= n <= {MAX_ELEMENTS}", f"n={self.n}", "pass e.g. permute:n=16")
        if self.points < 0 or self.points == 1:
            raise self._error("points = 0 (from the data) or >= 2", f"points={self.points}", "drop points= or pass e.g. permute:points=1024")
        self.bound = self.points > 0
        self._build(values, self.points if self.bound else 2)

    def _build(self, values: dict, p: int) -> None:
        g = torch.Generator().manual_seed(self.seed)
        keys = torch.rand(self.n, p, generator=g, dtype=torch.float64)
        perms = torch.cat([torch.arange(p).view(1, p), torch.argsort(keys, dim=1)]).to(torch.float64)
        labels = ["id"] + [f"perm {i + 1}" for i in range(self.n)]
        # the identity can be drawn again for tiny P: keep the rows distinct
        _, first = _first_unique(perms)
        perms, labels = perms[first], [labels[i] for i in first.tolist()]
        self._setup(values, param_names=tuple(f"p{i}" for i in range(p)), units=("",) * p, layout="finite",
                    elements=perms, labels=labels, identity_index=0)

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Require (P, 3) clouds; draw the permutations for this P when points=0 (binds the symmetry)."""
        super().check_input(sample_shape)
        p = int(sample_shape[0])
        if self.bound and p != self.points:
            raise SymmetryError(
                f"Expected point clouds of {self.points} points for '{self.spec}', got {p}, do drop points= "
                f"(permutations are then drawn for the data) or pass permute:points={p}"
            )
        if p < 2:
            raise SymmetryError(f"Expected at least 2 points per cloud for '{self.spec}', got {p}, do use another symmetry")
        if not self.bound or self.elements.shape[1] != p:
            self._build(self.params, p)

    def point_permutation(self, elements: Tensor) -> Tensor:
        return elements.round().to(torch.int64)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """'b, then a': out = x[pb][pa] = x[pb[pa]]."""
        return torch.gather(b, 1, a.round().to(torch.int64))

    def inverse(self, a: Tensor) -> Tensor:
        return torch.argsort(a, dim=1).to(a.dtype)


def _first_unique(rows: Tensor) -> tuple[Tensor, Tensor]:
    _, idx = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((int(idx.max()) + 1,), rows.shape[0], dtype=torch.int64)
    first = first.scatter_reduce(0, idx, torch.arange(rows.shape[0]), reduce="amin")
    return rows, first.sort().values


@register
class Translate3D(PointSymmetry):
    """Shifts of the whole cloud on a 3-D grid {-max..max}^3 (steps values per axis, 0 included)."""

    ASPECTS = frozenset({"position"})

    NAME = "translate3d"
    DESCRIPTION = (
        "Shifts of point clouds by (dx, dy, dz) on a grid of steps values per axis in [-max, max] "
        "(steps odd, so 0 is included); exact up to float rounding."
    )
    PARAMS = (
        ParamSpec("max", float, 1.0, "largest shift along each axis, in the data's units"),
        ParamSpec("steps", int, 3, "grid values per axis (odd)"),
    )

    def __init__(self, **params) -> None:
        values = self._values(params)
        m, s = float(values["max"]), int(values["steps"])
        if m <= 0:
            raise self._error("max > 0", f"max={m:g}", "pass e.g. translate3d:max=0.5")
        if s < 3 or s % 2 == 0:
            raise self._error("an odd steps >= 3", f"steps={s}", "pass e.g. translate3d:steps=3")
        self._check_count(s**3, "shifts", "use fewer steps")
        vals = torch.linspace(-m, m, s, dtype=torch.float64)
        vals[s // 2] = 0.0
        dz, dy, dx = torch.meshgrid(vals, vals, vals, indexing="ij")
        el = torch.stack([dx.reshape(-1), dy.reshape(-1), dz.reshape(-1)], dim=1)
        self._setup(values, param_names=("dx", "dy", "dz"), units=("", "", ""), layout="finite", elements=el,
                    labels=[f"({a:g},{b:g},{c:g})" for a, b, c in el.tolist()])

    def point_shift(self, elements: Tensor) -> Tensor:
        return elements.to(torch.float64)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def inverse(self, a: Tensor) -> Tensor:
        return -a

    def tangents(self, x: Tensor) -> list[tuple[str, Tensor, str]]:
        xd = x.to(torch.float64)
        out = []
        for i, name in enumerate(("dx", "dy", "dz")):
            v = torch.zeros_like(xd)
            v[..., i] = 1.0
            out.append((name, v, "unit"))
        return out


@register
class E3(PointSymmetry):
    """The Euclidean group with relabelling, O(3) x| R^3 x S_P: seeded random elements x -> M x[perm] + t.

    A product spec ``o3*translate3d*permute`` walks the full grid but is not a group on it (a rotated
    shift is another shift), so it cannot compose or invert; ``e3`` is the group itself: each element
    is a rotation (unit quaternion), a point-reflection flag, a shift and a permutation of the P
    points, and ``compose``/``inverse`` are the semidirect-product laws:
    (M_a, t_a, p_a)(M_b, t_b, p_b) = (M_a M_b, M_a t_b + t_a, p_b[p_a]), inverse (M^-1, -M^-1 t, argsort p).
    Layout ``axis-angle``: the report draws the rotation part on the axis-angle discs (reflected
    elements on their own discs); labels read ``rotation + (dx,dy,dz) · perm k``.
    """

    ASPECTS = frozenset({"rotation", "position", "order"})

    NAME = "e3"
    DESCRIPTION = (
        "Rotations, reflections, shifts and point permutations together (O(3) x translations x S_P): the identity "
        "and n seeded random elements x -> M x[perm] + t (shifts uniform in [-max, max]^3, half of them reflected); "
        "the permutations are drawn for the data's P; exact (float64)."
    )
    LAYOUT = "axis-angle"
    PARAMS = (
        ParamSpec("n", int, 32, "number of random elements besides the identity"),
        ParamSpec("max", float, 1.0, "largest shift along each axis, in the data's units"),
        ParamSpec("seed", int, 0, "seed of the random elements"),
        ParamSpec("points", int, 0, "points per cloud P (0: take it from the data)"),
    )

    def __init__(self, **params) -> None:
        values = self._values(params)
        self.n, self.max, self.seed, self.points = int(values["n"]), float(values["max"]), int(values["seed"]), int(values["points"])
        if self.n < 1 or self.n > MAX_ELEMENTS:
            raise self._error(f"1 <= n <= {MAX_ELEMENTS}", f"n={self.n}", "pass e.g. e3:n=32")
        if self.max < 0:
            raise self._error("max >= 0", f"max={self.max:g}", "pass e.g. e3:max=1")
        if self.points < 0 or self.points == 1:
            raise self._error("points = 0 (from the data) or >= 2", f"points={self.points}", "drop points= or pass e.g. e3:points=8")
        self.bound = self.points > 0
        self._build(values, self.points if self.bound else 2)

    def _build(self, values: dict, p: int) -> None:
        g = torch.Generator().manual_seed(self.seed)
        q = quaternion_canonical(torch.randn(self.n, 4, dtype=torch.float64, generator=g))
        flag = (torch.rand(self.n, 1, generator=g, dtype=torch.float64) < 0.5).to(torch.float64)
        shift = (2.0 * torch.rand(self.n, 3, generator=g, dtype=torch.float64) - 1.0) * self.max
        perm = torch.argsort(torch.rand(self.n, p, generator=g, dtype=torch.float64), dim=1).to(torch.float64)
        ident = torch.cat([torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64),
                           torch.arange(p, dtype=torch.float64).view(1, p)], 1)
        elements = torch.cat([ident, torch.cat([q, flag, shift, perm], 1)])
        rot = _axis_label(elements[:, :4])
        labels = ["id"] + [
            ("-I·" if f else "") + r + " + (" + ",".join(f"{v:.2g}" for v in t) + f") · perm {i + 1}"
            for i, (r, f, t) in enumerate(zip(rot[1:], flag[:, 0].tolist(), shift.tolist()))
        ]
        self._setup(values, param_names=("qw", "qx", "qy", "qz", "inv", "dx", "dy", "dz", *(f"p{i}" for i in range(p))),
                    units=("",) * (8 + p), layout=self.LAYOUT, elements=elements, labels=labels, identity_index=0)

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Require (P, 3) clouds; draw the permutations for this P when points=0 (binds the symmetry)."""
        super().check_input(sample_shape)
        p = int(sample_shape[0])
        if self.bound and p != self.points:
            raise SymmetryError(f"Expected point clouds of {self.points} points for '{self.spec}', got {p}, do drop points= "
                                f"(permutations are then drawn for the data) or pass e3:points={p}")
        if p < 2:
            raise SymmetryError(f"Expected at least 2 points per cloud for '{self.spec}', got {p}, do use so3 or o3")
        if self.elements.shape[1] != 8 + p:
            self._build(self.params, p)

    @staticmethod
    def _flag(elements: Tensor) -> Tensor:
        return torch.remainder(elements[:, 4].round(), 2)

    def point_matrix(self, elements: Tensor) -> Tensor:
        m = quaternion_matrix(elements[:, :4].to(torch.float64))
        return m * (1.0 - 2.0 * self._flag(elements).to(torch.float64)).view(-1, 1, 1)

    def point_shift(self, elements: Tensor) -> Tensor:
        return elements[:, 5:8].to(torch.float64)

    def point_permutation(self, elements: Tensor) -> Tensor:
        return elements[:, 8:].round().to(torch.int64)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """'b, then a': (M_a M_b, M_a t_b + t_a, p_b[p_a])."""
        q = quaternion_canonical(quaternion_multiply(a[:, :4], b[:, :4]))
        flag = torch.remainder(self._flag(a) + self._flag(b), 2).view(-1, 1)
        t = torch.einsum("eij,ej->ei", self.point_matrix(a), self.point_shift(b)) + self.point_shift(a)
        perm = torch.gather(b[:, 8:], 1, self.point_permutation(a))
        return torch.cat([q, flag, t, perm], 1)

    def inverse(self, a: Tensor) -> Tensor:
        """(M^-1, -M^-1 t, argsort p)."""
        q = quaternion_canonical(a[:, :4] * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=a.dtype, device=a.device))
        m_inv = self.point_matrix(a).transpose(1, 2)  # orthogonal
        t = -torch.einsum("eij,ej->ei", m_inv, self.point_shift(a))
        perm = torch.argsort(a[:, 8:], dim=1).to(a.dtype)
        return torch.cat([q, self._flag(a).view(-1, 1), t, perm], 1)
