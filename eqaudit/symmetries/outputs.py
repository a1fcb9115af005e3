"""How group elements act on model outputs (the S_g of DESIGN.md): dense maps, vector fields, boxes and 3-D vectors.

Equivariant tasks (eqaudit.tasks) call these functions; each dispatches on the symmetry:

- ``map_action`` moves dense output maps (E, B, C, H', W') with the same spatial action as the
  input, at the output's resolution: image symmetries act through their own ``apply`` (rot90,
  flip, d4, rotate and scale work in normalised coordinates, so any resolution works; rot90 needs
  square maps), shifts are scaled by W'/W and H'/H and must stay whole pixels (SymmetryError
  otherwise), ``swap`` leaves maps unchanged (``map_action`` method), products act factor by factor.
  ``map_mask`` is the matching validity mask (E, 1, H', W'): pixels whose content came from outside
  the frame (zero-fill shifts, resampled corners) are False.
- ``vector_matrix`` (E, 2, 2) is how a 2-D vector (u along x/right, v along y/down) attached to the
  image turns: rotation/reflection for dihedral and rotate, 2^s I for scale, I for shifts, -I for
  ``swap`` (time reversal). ``field_action`` = vector_matrix applied to every vector of
  ``map_action``'s output: v_out(p) = M v_in(T^-1 p).
- ``box_affine`` gives the affine map of image points (centred pixel coordinates) and
  ``box_action`` moves (x1, y1, x2, y2) boxes in input pixels: the four corners are mapped and the
  axis-aligned hull is taken (exact for shifts, flips and quarter turns; the hull of the rotated box
  for other angles), then clipped to the frame (content shifted out of the frame is gone).
- ``point_action`` turns 3-vector outputs (E, B, 3) or per-point outputs (E, B, P, 3): rows are
  reordered by permutations and vectors multiplied by the rotation/reflection; shifts do not act
  on vectors. With the batch's point mask passed (``mask``, padded systems), permutations reorder the
  real points of each sample only (``sample_permutation``).

Every function takes ``inverse=True`` for S_g^-1 (mapping outputs back to the canonical frame, for
the consensus reference); for products the factors' inverses are applied in reverse order, so this
works even where the product's own ``inverse`` is undefined (factors that do not commute).

Shapes: E elements, B batch, C channels, H' x W' output pixels, P points, D parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import SymmetryError
from .base import Symmetry
from .product import ProductSymmetry


def _steps(sym: Symmetry, elements: Tensor, inverse: bool) -> list[tuple[Symmetry, Tensor]]:
    """The (factor, elements) actions in the order they are applied: right to left for S_g, and for
    S_g^-1 the factors' inverses left to right."""
    if isinstance(sym, ProductSymmetry):
        pairs = list(zip(sym.factors, sym.split(elements)))
        out: list[tuple[Symmetry, Tensor]] = []
        if inverse:
            for f, el in pairs:
                out.extend(_steps(f, el, True))
        else:
            for f, el in reversed(pairs):
                out.extend(_steps(f, el, False))
        return out
    return [(sym, sym.inverse(elements) if inverse else elements)]


def _not_for(sym: Symmetry, what: str) -> SymmetryError:
    return SymmetryError(
        f"Expected a symmetry that acts on {what}, got '{sym.spec}' ({sym.domain} domain), do pick an image "
        "symmetry (see `eqaudit symmetries`) or another --task"
    )


def map_action(sym: Symmetry, maps: Tensor, elements: Tensor, input_hw: tuple[int, int], *, inverse: bool = False) -> Tensor:
    """Dense maps (E, B, C, H', W') -> the same maps moved by each element (or its inverse): each
    factor's own ``map_action``."""
    for f, el in _steps(sym, elements, inverse):
        own = getattr(f, "map_action", None)
        if own is None:
            raise _not_for(f, "dense (B, C, H, W) output maps")
        maps = own(maps, el, input_hw)
    return maps


def map_mask(sym: Symmetry, elements: Tensor, out_hw: tuple[int, int], input_hw: tuple[int, int], *, inverse: bool = False,
             device: torch.device | str = "cpu") -> Tensor | None:
    """(E, 1, H', W') bool validity of ``map_action``'s output (False where content left the frame), or None.
    A factor without ``map_mask`` loses no pixels (``swap`` acts on channels only)."""
    out: Tensor | None = None
    for f, el in _steps(sym, elements, inverse):
        if getattr(f, "map_action", None) is None:
            raise _not_for(f, "dense (B, C, H, W) output maps")
        fn = getattr(f, "map_mask", None)
        if fn is None:
            continue
        if out is not None:  # carry what was already invalid through this factor's motion
            moved = f.map_action(out.to(torch.float64).unsqueeze(1), el, input_hw)
            out = moved.squeeze(1) > 1 - 1e-9
        m = fn(el, out_hw, input_hw, device)
        if m is not None:
            out = m if out is None else out & m
    return out


def vector_matrix(sym: Symmetry, elements: Tensor, *, inverse: bool = False) -> Tensor:
    """(E, D) -> (E, 2, 2) float64: how a vector (u right, v down) attached to the image turns."""
    m = torch.eye(2, dtype=torch.float64, device=elements.device).expand(elements.shape[0], 2, 2)
    for f, el in _steps(sym, elements, inverse):
        fn = getattr(f, "vector_matrix", None)
        if fn is None:
            raise _not_for(f, "2-D vector fields")
        m = fn(el).to(device=elements.device, dtype=torch.float64) @ m
    return m


def field_action(sym: Symmetry, fields: Tensor, elements: Tensor, input_hw: tuple[int, int], *, inverse: bool = False) -> Tensor:
    """Vector fields (E, B, 2, H', W') -> moved by each element: M_g applied to every vector of the moved map."""
    for f, el in _steps(sym, elements, inverse):
        moved = map_action(f, fields, el, input_hw)
        fn = getattr(f, "vector_matrix", None)
        if fn is None:
            raise _not_for(f, "2-D vector fields")
        m = fn(el).to(device=fields.device, dtype=torch.float64)
        fields = torch.einsum("eij,ebjhw->ebihw", m, moved.to(torch.float64))
    return fields


def box_affine(sym: Symmetry, elements: Tensor, *, inverse: bool = False) -> tuple[Tensor, Tensor]:
    """(E, D) -> A (E, 2, 2), t (E, 2): image point p (centred pixel coordinates, x right, y down) -> A p + t,
    composed from each factor's own ``box_affine``."""
    e = elements.shape[0]
    a = torch.eye(2, dtype=torch.float64).expand(e, 2, 2).clone()
    t = torch.zeros(e, 2, dtype=torch.float64)
    for f, el in _steps(sym, elements, inverse):
        fn = getattr(f, "box_affine", None)
        if fn is None:
            raise _not_for(f, "boxes")
        a_f, t_f = fn(el.detach().to("cpu", torch.float64))
        a = a_f @ a
        t = torch.einsum("eij,ej->ei", a_f, t) + t_f
    return a, t


def box_action(sym: Symmetry, boxes: Tensor, elements: Tensor, input_hw: tuple[int, int], *, inverse: bool = False) -> Tensor:
    """Boxes (E, B, 4) as (x1, y1, x2, y2) in input pixels (edges: 0..W, 0..H) -> the moved boxes:
    mapped corners, their axis-aligned hull, clipped to the frame."""
    h, w = input_hw
    a, t = box_affine(sym, elements, inverse=inverse)
    a, t = a.to(boxes.device), t.to(boxes.device)
    b = boxes.to(torch.float64)
    x1, y1, x2, y2 = b.unbind(-1)
    cx = torch.stack([x1, x2, x2, x1], -1) - w / 2.0  # (E, B, 4) corners
    cy = torch.stack([y1, y1, y2, y2], -1) - h / 2.0
    nx = a[:, 0, 0].view(-1, 1, 1) * cx + a[:, 0, 1].view(-1, 1, 1) * cy + t[:, 0].view(-1, 1, 1) + w / 2.0
    ny = a[:, 1, 0].view(-1, 1, 1) * cx + a[:, 1, 1].view(-1, 1, 1) * cy + t[:, 1].view(-1, 1, 1) + h / 2.0
    out = torch.stack([nx.amin(-1).clamp(0, w), ny.amin(-1).clamp(0, h), nx.amax(-1).clamp(0, w), ny.amax(-1).clamp(0, h)], -1)
    return out


def point_action(sym: Symmetry, out: Tensor, elements: Tensor, *, inverse: bool = False, mask: Tensor | None = None) -> Tensor:
    """3-vector outputs (E, B, 3) or per-point outputs (E, B, P, 3) -> rotated (and rows permuted; with the
    batch's point mask (B, P), only the real points' rows, per sample: ``sample_permutation``)."""
    if out.dim() == 4 and mask is not None and point_permutation(sym, elements) is not None:
        m = linear_part(sym, elements, inverse=inverse).to(out.device)
        return torch.einsum("eij,ebpj->ebpi", m, row_action(sym, out, elements, inverse=inverse, mask=mask).to(torch.float64))
    for f, el in _steps(sym, elements, inverse):
        fn = getattr(f, "vectors", None)
        if fn is None:
            raise _not_for(f, "3-D vector outputs (point clouds)")
        out = fn(out, el)
    return out.to(torch.float64)


def _letter(gen: str, power: int, perms: dict[str, Tensor], label: str) -> tuple[str | None, int]:
    """A word's letter -> (declared generator, power), or (None, 0) when it leaves the classes alone."""
    if gen in perms:
        return gen, power
    if gen == "rot180" and "rot90" in perms:
        return "rot90", 2 * power
    if gen == "rot90" and "rot180" in perms:
        if power % 2:
            raise SymmetryError(
                f"Expected a class permutation for the quarter turn of element {label}, got one for rot180 only, "
                "do declare rot90=... as well (or audit with rot180)"
            )
        return "rot180", power // 2
    return None, 0


def _label(sym: Symmetry, row: Tensor) -> str:
    """The label of element ``row`` (D,) among ``sym``'s sampled elements (a chunk's rows need not start at 0)."""
    hits = (sym.elements.to(row) == row).all(1).nonzero()
    return sym.labels[int(hits[0, 0])] if len(hits) and int(hits[0, 0]) < len(sym.labels) else str(row.tolist())


def label_map(sym: Symmetry, elements: Tensor, perms: dict[str, Tensor], *, inverse: bool = False) -> Tensor:
    """(E, D) -> (E, K) int64: the class that class i becomes under each element (or its inverse), from
    one permutation of the K classes per named generator (``perms[gen][i]`` = image of class i),
    composed along each element's word (``Symmetry.words``, first letter first). A generator without a
    declaration leaves the classes alone; ``rot180`` is read as ``rot90`` squared and back when only
    one of them is declared. Bookkeeping over the E words of a finite group, not a per-sample loop."""
    n_classes = len(next(iter(perms.values())))
    ident = torch.arange(n_classes, dtype=torch.int64)
    rows = []
    rows_cpu = elements.detach().cpu()
    for e, word in enumerate(sym.words(rows_cpu)):
        c = ident.clone()
        for gen, power in word:
            name, times = _letter(gen, power, perms, _label(sym, rows_cpu[e]))
            for _ in range(times if name is not None else 0):
                c = perms[name][c]
        rows.append(c)
    to = torch.stack(rows) if rows else ident.view(0, n_classes)
    if inverse:
        to = torch.argsort(to, dim=1)
    return to.to(elements.device)


def permute_classes(scores: Tensor, to: Tensor) -> Tensor:
    """Move class scores (B, K) or (E, B, K) by the class maps ``to`` (E, K): out[e, b, to[e, i]] = scores[b, i]."""
    e, k = to.shape
    if scores.dim() == 2:
        scores = scores.unsqueeze(0).expand(e, *scores.shape)
    src = torch.argsort(to, dim=1)  # the class that lands on each slot
    return torch.gather(scores, -1, src.view(e, 1, k).expand(e, scores.shape[1], k))


def parity(sym: Symmetry, elements: Tensor) -> Tensor:
    """(E, D) -> (E,) float64: det of the 3x3 map each element applies to 3-vectors (-1 for reflections),
    read off the action on the unit vectors, so any symmetry with a vector action works."""
    e = elements.shape[0]
    basis = torch.eye(3, dtype=torch.float64, device=elements.device).expand(e, 3, 3)  # (E, B=3, 3)
    return torch.linalg.det(point_action(sym, basis, elements))


def point_permutation(sym: Symmetry, elements: Tensor) -> Tensor | None:
    """(E, D) -> (E, P) int64 source point of each output point of ``sym``'s action (out[i] = x[perm[i]]),
    composed over a product's factors in the order they act; None when no factor reorders points."""
    total: Tensor | None = None
    for f, el in _steps(sym, elements, False):
        fn = getattr(f, "point_permutation", None)
        perm = fn(el) if fn is not None else None
        if perm is not None:
            total = perm if total is None else torch.gather(total, 1, perm.to(total.device))
    return total


def row_action(sym: Symmetry, out: Tensor, elements: Tensor, *, inverse: bool = False, mask: Tensor | None = None) -> Tensor:
    """Per-point outputs (E, B, P, ...) -> rows reordered like the input's points (``sample_permutation``:
    ``point_permutation``, restricted per sample to the real points of the batch's ``mask`` (B, P));
    rotations and shifts leave per-point scalars alone. The inverse is the inverse permutation."""
    perm = sample_permutation(sym, elements, mask)
    if perm is None:
        return out
    if inverse:
        perm = torch.argsort(perm, dim=-1)
    e, b, p = out.shape[:3]
    idx = perm.to(out.device).view(e, perm.shape[1], p, *([1] * (out.dim() - 3)))
    return torch.gather(out, 2, idx.expand(e, b, p, *out.shape[3:]))


def linear_part(sym: Symmetry, elements: Tensor, *, inverse: bool = False) -> Tensor:
    """(E, D) -> (E, 3, 3) float64: the 3x3 map each element (or its inverse) applies to 3-vectors, read
    off the action on the unit vectors (rotation/reflection composed over a product's factors)."""
    e = elements.shape[0]
    basis = torch.eye(3, dtype=torch.float64, device=elements.device).expand(e, 3, 3)  # (E, B=3, 3): row b = e_b
    cols = basis
    for f, el in _steps(sym, elements, inverse):
        fn = getattr(f, "vectors", None)
        if fn is None:
            raise _not_for(f, "3-D vector outputs (point clouds)")
        cols = fn(cols, el)
    return cols.transpose(1, 2).to(torch.float64)  # row b of cols is M e_b, a column of M


def affine_shift(sym: Symmetry, elements: Tensor, *, inverse: bool = False) -> Tensor:
    """(E, D) -> (E, 3) float64: where each element (or its inverse) sends the origin, i.e. the shift t
    of the affine map x -> M x + t of point positions, composed over a product's factors."""
    t = torch.zeros(elements.shape[0], 3, dtype=torch.float64, device=elements.device)
    for f, el in _steps(sym, elements, inverse):
        mat, shift = getattr(f, "point_matrix", None), getattr(f, "point_shift", None)
        if mat is None:
            raise _not_for(f, "point positions")
        t = torch.einsum("eij,ej->ei", mat(el).to(t), t)
        s = shift(el) if shift is not None else None
        if s is not None:
            t = t + s.to(t)
    return t


# ---- padded systems: the point mask ---------------------------------------------------------------------
# Data of systems with different numbers of points (molecules of different sizes) is padded to P
# points with a mask (B, P) (True: a real point). The group acts on the real points only: a
# permutation reorders the real points of each sample among themselves (padded rows keep their
# place), and every metric leaves the padded rows out. The mask is part of the batch: the sweep
# passes the batch's mask to eqaudit.inputs.orbit (inside the input dict) and to the tasks' compare
# (``mask=``), which pass it on to the output actions here, so the input action and the output
# actions agree sample by sample and no state is kept on the symmetry.


def restrict_permutation(perm: Tensor, mask: Tensor) -> Tensor:
    """Permutations (E, P) restricted to the real points of each sample: mask (B, P) -> (E, B, P).

    For each sample the real points are taken in the order ``perm`` visits them and placed in the real
    slots in ascending order; padded slots keep their own point. With every point real this is
    ``perm`` itself. One sort per call, batched over elements and samples."""
    e, p = perm.shape
    b = mask.shape[0]
    mask = mask.to(device=perm.device, dtype=torch.bool)
    src = perm.view(e, 1, p).expand(e, b, p)
    real_src = torch.gather(mask.view(1, b, p).expand(e, b, p), 2, src)
    order = torch.argsort((~real_src).to(torch.int8), dim=2, stable=True)  # real sources first, in perm's order
    slots = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real slots first, ascending
    out = torch.empty_like(src)
    out.scatter_(2, slots.view(1, b, p).expand(e, b, p), torch.gather(src, 2, order))
    own = torch.arange(p, device=perm.device).view(1, 1, p).expand(e, b, p)
    return torch.where(mask.view(1, b, p), out, own)


def sample_permutation(sym: Symmetry, elements: Tensor, mask: Tensor | None = None) -> Tensor | None:
    """(E, D) -> (E, B, P) int64 source point of each output point per sample of the batch's point
    ``mask`` (B, P) bool, else (E, 1, P) (the same for every sample); None when no factor reorders points."""
    perm = point_permutation(sym, elements)
    if perm is None:
        return None
    if mask is None:
        return perm.unsqueeze(1)
    return restrict_permutation(perm, mask)
