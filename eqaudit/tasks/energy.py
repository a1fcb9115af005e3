"""The energy output: one invariant scalar per system (B,) or (B, 1), with its error per atom.

Every group element should leave the energy of a molecule or particle system unchanged (rotations,
reflections, shifts, relabelling the atoms). Metrics per (element, sample), in float64:
``equivariance_error`` (main: |E_g - E| / (|E_g| + |E| + eps)), ``abs_error`` (|E_g - E| in the data's
units, e.g. eV) and ``error_per_atom`` (abs_error divided by the number of real atoms: the mask's
count for padded systems, else the points per sample P, else 1).

Shapes: E elements, B batch, P points.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ModelRunError
from ..metrics import equivariance_error, summarize_orbit
from .base import Task
from .dense import expand


class EnergyTask(Task):
    """Invariant scalar per system (see the module docstring)."""

    name = "energy"
    main_metric = "equivariance_error"
    supports_targets = True

    def check_output(self, out: Tensor, x: Tensor) -> None:
        if not (out.shape[0] == x.shape[0] and (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1))):
            raise ModelRunError(
                f"Expected one energy per system, (B,) or (B, 1), for a batch of {tuple(x.shape)}, got {tuple(out.shape)}; "
                "declare per-atom energies as --output scalar-per-point, or pick another output."
            )

    def setup(self, first: Tensor, output_kind: str) -> str:
        return "energies"

    def label_reference(self, y, ref: Tensor, targets: Tensor | None = None):
        """The data's true energies as the reference: (N, 1) rows (one per system), matched to f(x)'s (B,) or (B, 1)."""
        if targets is not None and targets.numel() == ref.numel():
            targets = targets.reshape(ref.shape)
        return super().label_reference(y, ref, targets)

    @staticmethod
    def atoms(mask: Tensor | None, x: Tensor, b: int) -> Tensor:
        """(B,) float64 number of real atoms per sample (``mask`` (B, P): the batch's point mask, or None)."""
        if mask is not None and mask.shape[0] == b:
            return mask.sum(1).to(torch.float64)
        p = x.shape[1] if x.dim() == 3 else 1
        return torch.full((b,), float(p), dtype=torch.float64)

    def compare(self, ref, out, sym, elements, x, y, ref_class=None, mask=None):
        e, b = out.shape[:2]
        out = out.to(torch.float64).reshape(e, b, 1)
        target = expand(ref.to(torch.float64).reshape(b, 1), e)
        diff = (out - target).abs()[..., 0]
        n = self.atoms(mask, x, b).to(out.device)
        return {"equivariance_error": equivariance_error(out, target), "max_abs_error": diff,
                "abs_error": diff, "error_per_atom": diff / n.view(1, -1)}

    def null(self, ref_a: Tensor, ref_b: Tensor) -> Tensor:
        m = ref_a.shape[0]
        return equivariance_error(ref_a.to(torch.float64).reshape(1, m, 1), ref_b.to(torch.float64).reshape(1, m, 1))[0]

    def summarize(self, table: dict[str, np.ndarray], identity_index: int):
        return summarize_orbit(
            table, identity_index, self.main_metric,
            means=[("equivariance_error", "equivariance_error"), ("abs_error", "abs_error"), ("error_per_atom", "error_per_atom")],
            maxima=[("max_abs_error", "max_abs_error")],
        )

    def output_tangent(self, sym, name: str, ref: Tensor) -> Tensor:
        """Energies do not move: the output tangent is zero."""
        return torch.zeros_like(ref, dtype=torch.float64)
