"""The points task: 3-vector outputs, one per input (B, 3) or one per point (B, P, 3), rotate with the cloud.

S_g multiplies every output vector by the element's 3x3 matrix (rotations, and the point reflection
of o3) and, for per-point outputs, reorders the rows like the input's points (permute). Shifts
(translate3d) do not act on the outputs: they are treated as vectors (displacements, normals,
forces, centred coordinates), not as positions. Metrics per (element, sample), in float64:
``equivariance_error`` (main) and ``max_abs_error``. ``--reference label`` compares with the data's
true vectors (B, 3) or (B, P, 3), rotated (and permuted) by S_g like f(x).

Declared output types (``--output``) pick a form: ``vector`` (B, 3), ``vector-per-point`` (B, P, 3),
``pseudovector`` (B, 3) or (B, P, 3), multiplied by det(R) as well (angular momenta, torques, normals
of oriented surfaces: a reflection flips them), and ``scalar-per-point`` (B, P) or (B, P, 1), whose
rows are only reordered with the points (per-atom energies, charges).

Molecules and particles (eqaudit.inputs: padded systems with a ``mask``): ``forces`` are per-point
vectors with two physical metrics besides, ``rms_error`` (root mean square over the real points of
the vector difference, in the data's units, e.g. eV/A) and ``relative_error`` (norm of the difference
over the norm of the reference, real points only); ``positions`` are per-point positions (next
positions of a trajectory predictor) moved like the input points, shifts included: x[perm] @ M^T + t;
``tensor2`` is one rank-2 tensor per input (B, 3, 3) (stress, polarisability) moved as M T M^T;
``pseudoscalar`` one scalar per input (B,) or (B, 1) multiplied by det(M). With the batch's point mask
(``mask`` (B, P), passed by the sweep with every chunk) per-point outputs are permuted among the real points only and
their padded rows are left out of every metric.

Shapes: E elements, B batch, P points.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ModelRunError
from ..metrics import equivariance_error, max_abs_error, relative_error, rms_error, summarize_orbit
from ..symmetries import Symmetry
from ..symmetries.outputs import affine_shift, linear_part, parity, point_action, row_action
from .base import Task
from .dense import expand, find_generator


class PointsTask(Task):
    """Equivariant 3-vector outputs of point-cloud models (see the module docstring)."""

    name = "points"
    main_metric = "equivariance_error"
    supports_targets = True

    FORMS = {"any": "(B, 3) or (B, P, 3)", "vector": "(B, 3)", "vector-per-point": "(B, P, 3)",
             "scalar-per-point": "(B, P) or (B, P, 1)", "positions": "(B, P, 3)", "tensor2": "(B, 3, 3)",
             "pseudoscalar": "(B,) or (B, 1)"}

    def __init__(self, form: str = "any", pseudo: bool = False, physical: bool = False) -> None:
        self.form = form
        self.pseudo = pseudo
        self.physical = physical  # forces, positions: rms_error and relative_error in the data's units

    def check_output(self, out: Tensor, x: Tensor) -> None:
        per_point_ok = not (x.ndim == 3 and out.ndim >= 2 and out.shape[1] != x.shape[1])
        if self.form == "scalar-per-point":
            ok = out.ndim == 2 or (out.ndim == 3 and out.shape[-1] == 1)
        elif self.form == "tensor2":
            ok, per_point_ok = out.ndim == 3 and tuple(out.shape[1:]) == (3, 3), True
        elif self.form == "pseudoscalar":
            ok, per_point_ok = out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1), True
        elif self.form == "positions":
            ok = out.ndim == 3 and out.shape[-1] == 3
        else:
            ok = out.shape[-1] == 3 and {"any": (2, 3), "vector": (2,), "vector-per-point": (3,)}[self.form].__contains__(out.ndim)
            per_point_ok = per_point_ok or out.ndim == 2
        if not (ok and per_point_ok and out.shape[0] == x.shape[0]):
            raise ModelRunError(
                f"Expected point outputs of shape {self.FORMS[self.form]} (P = the input's points) for a batch of "
                f"{tuple(x.shape)} ({self.form if self.form != 'any' else '--task points'}), got {tuple(out.shape)}; "
                "pick another output with --output-name or declare its type with --output."
            )

    def setup(self, first: Tensor, output_kind: str) -> str:
        named = {"scalar-per-point": "per-point scalars", "positions": "per-point positions", "tensor2": "rank-2 tensors",
                 "pseudoscalar": "pseudoscalars"}
        if self.form in named:
            return named[self.form]
        kind = "per-point vectors" if first.ndim == 3 else "vectors"
        return kind.replace("vectors", "pseudovectors") if self.pseudo else kind

    def _act(self, sym, out: Tensor, elements: Tensor, inverse: bool = False, mask: Tensor | None = None) -> Tensor:
        """S_g (or S_g^-1) of outputs (E, B, ...) in float64 (``mask`` (B, P): the batch's point mask or None)."""
        if self.form == "scalar-per-point":
            return row_action(sym, out.to(torch.float64), elements, inverse=inverse, mask=mask)
        if self.form == "tensor2":
            m = linear_part(sym, elements, inverse=inverse).to(out.device)
            return torch.einsum("eij,ebjk,elk->ebil", m, out.to(torch.float64), m)
        if self.form == "pseudoscalar":
            return out.to(torch.float64) * parity(sym, elements).view(-1, *([1] * (out.dim() - 1))).to(out.device)
        moved = point_action(sym, out, elements, inverse=inverse, mask=mask)
        if self.form == "positions":
            moved = moved + affine_shift(sym, elements, inverse=inverse).to(out.device).view(-1, 1, 1, 3)
        if self.pseudo:  # det(R) is its own inverse
            moved = moved * parity(sym, elements).view(-1, *([1] * (moved.dim() - 1))).to(moved)
        return moved

    def _mask(self, mask: Tensor | None, out: Tensor) -> Tensor | None:
        """The batch's point mask (B, P) as (1, B, P, 1...) for per-point outputs (E, B, P, ...), else None."""
        per_point = self.form in ("scalar-per-point", "vector-per-point", "positions") or (self.form == "any" and out.dim() == 4)
        if mask is None or not per_point or out.dim() < 3 or out.shape[2] != mask.shape[1]:
            return None
        return mask.to(out.device).view(1, *mask.shape, *([1] * (out.dim() - 3)))

    def compare(self, ref, out, sym, elements, x, y, ref_class=None, mask=None):
        target = self._act(sym, expand(ref, out.shape[0]), elements, mask=mask)
        keep = self._mask(mask, out)
        values = {"equivariance_error": equivariance_error(out, target, keep), "max_abs_error": max_abs_error(out, target, keep)}
        if self.physical:
            values["rms_error"] = rms_error(out, target, keep)
            values["relative_error"] = relative_error(out, target, keep)
        return values

    def point_errors(self, ref, out, sym, elements, mask=None):
        if out.dim() != 4 or out.shape[-1] != 3 or self.form not in ("any", "vector-per-point", "positions"):
            return None
        err = (out.to(torch.float64) - self._act(sym, expand(ref, out.shape[0]), elements, mask=mask)).norm(dim=-1)
        keep = self._mask(mask, out)
        return "", err if keep is None else err * keep[..., 0].to(err)

    def canonical(self, out, sym, elements, x, mask=None):
        return self._act(sym, out, elements, inverse=True, mask=mask), None

    def null(self, ref_a: Tensor, ref_b: Tensor) -> Tensor:
        return equivariance_error(ref_a.unsqueeze(0), ref_b.unsqueeze(0))[0]

    def summarize(self, table: dict[str, np.ndarray], identity_index: int):
        return summarize_orbit(
            table, identity_index, self.main_metric,
            means=[("equivariance_error", "equivariance_error"), ("rms_error", "rms_error"), ("relative_error", "relative_error")],
            maxima=[("max_abs_error", "max_abs_error")],
        )

    def output_tangent(self, sym: Symmetry, name: str, ref: Tensor) -> Tensor:
        """d/dt of the output action along generator ``name``: ref @ G^T for rotations (G T + T G^T for
        rank-2 tensors), 0 for shifts, except for positions, which a shift along axis i moves by e_i;
        0 for per-point scalars and pseudoscalars (continuous moves are proper rotations)."""
        f = find_generator(sym, name)
        zero = torch.zeros_like(ref, dtype=torch.float64)
        if self.form in ("scalar-per-point", "pseudoscalar") or f is None:
            return zero
        short = name.split(".")[-1]
        if self.form == "positions" and short in ("dx", "dy", "dz") and getattr(f, "point_shift", None) is not None:
            zero[..., ("dx", "dy", "dz").index(short)] = 1.0
            return zero
        gen = getattr(f, "generator_matrix", None)
        g = gen(short) if gen is not None else None
        if g is None:
            return zero
        g = g.to(device=ref.device, dtype=torch.float64)
        if self.form == "tensor2":
            t = ref.to(torch.float64)
            return g @ t + t @ g.T
        return ref.to(torch.float64) @ g.T
