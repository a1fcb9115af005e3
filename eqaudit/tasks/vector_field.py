"""The vector-field task: flow fields (B, 2, H', W') move with the grid and every vector turns (u along x, v down the rows).

Channel 0 is the component along the width (x, right), channel 1 along the height (y, down the
rows), in pixels. S_g moves the field's grid like the input (``dense``) and multiplies every vector
by ``vector_matrix`` (rotation/reflection for rot90, flip, d4 and rotate, 2^s for scale, identity
for shifts, -1 for ``swap``, the time reversal of two-frame inputs). Metrics per (element,
sample), inside the validity mask, in float64: ``equivariance_error`` (main), ``max_abs_error``
and ``epe`` (mean end-point error, in the field's units). ``--reference label`` compares with the
data's true flows (B, 2, H', W') moved and turned by S_g like f(x): ``epe`` is then the end-point error
against the truth on each element of the orbit.

Shapes: E elements, B batch, H x W input pixels, H' x W' output pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ModelRunError
from ..metrics import endpoint_error, equivariance_error, max_abs_error, summarize_orbit
from ..symmetries import Symmetry
from ..symmetries.outputs import field_action, vector_matrix
from .base import Task
from .dense import DenseTask, expand, find_generator, input_hw, map_tangent


class VectorFieldTask(DenseTask):
    """2-D vector fields on the image grid: equivariant with vectors rotated (see the module docstring)."""

    name = "vector-field"
    main_metric = "equivariance_error"

    def check_output(self, out: Tensor, x: Tensor) -> None:
        super().check_output(out, x)
        if out.shape[1] != 2:
            raise ModelRunError(
                f"Expected vector fields of shape (B, 2, H, W) (u along x, v along y) with --task {self.name}, got "
                f"{tuple(out.shape)}; pick another output with --output-name or use --task dense."
            )

    def setup(self, first: Tensor, output_kind: str) -> str:
        return "vector-field"

    def label_reference(self, y, ref, targets=None):
        return Task.label_reference(self, y, ref, targets)  # true flows of the output's shape; no class maps

    def move(self, ref, sym, elements, x, *, inverse=False):
        return field_action(sym, ref, elements, input_hw(x), inverse=inverse)

    def compare(self, ref, out, sym, elements, x, y, ref_class=None, mask=None):
        e = out.shape[0]
        target = self.move(expand(ref, e), sym, elements, x)
        mask = self.valid(out, sym, elements, x)
        return {
            "equivariance_error": equivariance_error(out, target, mask),
            "max_abs_error": max_abs_error(out, target, mask),
            "epe": endpoint_error(out, target, mask),
        }

    def summarize(self, table: dict[str, np.ndarray], identity_index: int):
        return summarize_orbit(
            table,
            identity_index,
            self.main_metric,
            means=[("equivariance_error", "equivariance_error"), ("epe", "epe")],
            maxima=[("max_abs_error", "max_abs_error")],
        )

    def output_tangent(self, sym: Symmetry, name: str, ref: Tensor) -> Tensor:
        """d/dt [M_t ref(T_t^-1 p)] at t = 0: the grid's motion plus dM/dt applied to every vector."""
        hw = getattr(self, "_hw", (int(ref.shape[-2]), int(ref.shape[-1])))
        spatial = map_tangent(sym, name, ref, hw)
        f = find_generator(sym, name)
        if f is None:
            return spatial
        local = name.split(".")[-1]
        if local not in f.param_names or len(f.param_names) != 1:
            return spatial  # shifts: the vectors do not turn
        h = 1e-4
        el = torch.tensor([[h], [-h]], dtype=torch.float64)
        m = vector_matrix(f, el)
        dm = (m[0] - m[1]) / (2 * h * getattr(f, "tangent_scale", 1.0))  # per unit of the generator (rad, log2)
        return spatial + torch.einsum("ij,bjhw->bihw", dm.to(ref.device), ref.to(torch.float64))
