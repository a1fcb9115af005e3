"""The dense task: per-pixel output maps (B, C, H', W') move with the input's spatial action (segmentation, heatmaps).

S_g moves the reference map with the same spatial action as the input, at the output's resolution
(eqaudit.symmetries.outputs.map_action: shifts scaled by W'/W, H'/H and whole output pixels only).
Metrics per (element, sample), inside the validity mask of the moved map, in float64:
``equivariance_error`` (relative L2 error in [0, 1], the main metric), ``max_abs_error``, and for
C >= 2 channels (class scores per pixel) ``pixel_flip`` (share of pixels whose argmax changes) and
``mean_iou`` (mean IoU of the two argmax maps over the classes present).

``--reference label`` compares f(T_g x) with S_g(target), the data's ground-truth maps moved like
f(x). Targets have the output's shape (B, C, H', W'), or, for C >= 2 class-score outputs, are integer
class maps (B, H', W') or (B, 1, H', W') with values 0..C-1, which are one-hot encoded: then
``pixel_flip_rate`` is the pixel error rate against the moved truth and ``mean_iou`` the usual
segmentation mean IoU, while ``equivariance_error`` compares the raw scores with the one-hot map
(meaningful for probability outputs; for logits read pixel_flip_rate and mean_iou).

Shapes: E elements, B batch, C channels, H x W input pixels, H' x W' output pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, ModelRunError
from ..metrics import class_map_metrics, equivariance_error, map_errors, summarize_orbit
from ..symmetries import Symmetry
from ..symmetries.outputs import map_action, map_mask
from ..symmetries.product import ProductSymmetry
from .base import Task, check_target_shape


def input_hw(x: Tensor) -> tuple[int, int]:
    """(H, W) of image inputs x (B, C, H, W)."""
    return int(x.shape[-2]), int(x.shape[-1])


def expand(ref: Tensor, e: int) -> Tensor:
    """(B, ...) -> (E, B, ...) view."""
    return ref.unsqueeze(0).expand(e, *ref.shape)


def find_generator(sym: Symmetry, name: str) -> Symmetry | None:
    """The (factor) symmetry whose ``tangents`` include the generator ``name`` (products: a factor)."""
    if isinstance(sym, ProductSymmetry):
        for f in sym.factors:
            if name.startswith(f"{f.name}."):
                return find_generator(f, name[len(f.name) + 1 :])
        for f in sym.factors:
            hit = find_generator(f, name)
            if hit is not None:
                return hit
        return None
    return sym if name in _tangent_names(sym) else None


def _tangent_names(sym: Symmetry) -> set[str]:
    probe = torch.zeros(1, 2, 4, 4, dtype=torch.float64) if sym.domain == "image" else torch.zeros(1, 4, 3, dtype=torch.float64)
    try:
        return {t[0] for t in sym.tangents(probe)}
    except Exception:  # a symmetry whose tangents need other inputs
        return set()


def map_tangent(sym: Symmetry, name: str, maps: Tensor, hw: tuple[int, int]) -> Tensor:
    """d/dt of the spatial action on maps (B, C, H', W') along generator ``name`` (shifts scaled to H', W')."""
    f = find_generator(sym, name)
    local = name.split(".")[-1]
    if f is None:
        return torch.zeros_like(maps, dtype=torch.float64)
    found = {t[0]: t[1] for t in f.tangents(maps.to(torch.float64))}
    v = found.get(local)
    if v is None:
        return torch.zeros_like(maps, dtype=torch.float64)
    if local == "dx":
        v = v * (maps.shape[-1] / hw[1])
    elif local == "dy":
        v = v * (maps.shape[-2] / hw[0])
    return v.to(torch.float64)


class DenseTask(Task):
    """Dense per-pixel maps: equivariant to the spatial action (see the module docstring)."""

    name = "dense"
    main_metric = "equivariance_error"
    supports_targets = True

    def check_output(self, out: Tensor, x: Tensor) -> None:
        if out.ndim != 4 or out.shape[0] != x.shape[0]:
            raise ModelRunError(
                f"Expected dense outputs of shape (B, C, H, W) for a batch of {x.shape[0]} with --task {self.name}, "
                f"got {tuple(out.shape)}; pick another output with --output-name or another --task."
            )
        if x.ndim != 4:
            raise ModelRunError(
                f"Expected image inputs (B, C, H, W) with --task {self.name}, got {tuple(x.shape)}; "
                "reshape flat inputs with --input-shape."
            )
        self._hw = input_hw(x)  # for output_tangent, which sees outputs only

    def setup(self, first: Tensor, output_kind: str) -> str:
        return "maps"

    # S_g and its mask -------------------------------------------------------------------------------------

    def move(self, ref: Tensor, sym: Symmetry, elements: Tensor, x: Tensor, *, inverse: bool = False) -> Tensor:
        """S_g ref (or S_g^-1) for each element: ref (E, B, C, H', W') -> (E, B, C, H', W')."""
        return map_action(sym, ref, elements, input_hw(x), inverse=inverse)

    def valid(self, out: Tensor, sym: Symmetry, elements: Tensor, x: Tensor, *, inverse: bool = False) -> Tensor | None:
        """(E, 1, 1, H', W') validity of the moved map, or None."""
        m = map_mask(sym, elements, (int(out.shape[-2]), int(out.shape[-1])), input_hw(x), inverse=inverse, device=out.device)
        return None if m is None else m.unsqueeze(1)

    def compare(self, ref, out, sym, elements, x, y, ref_class=None, mask=None):
        e = out.shape[0]
        target = self.move(expand(ref, e), sym, elements, x)
        mask = self.valid(out, sym, elements, x)
        err, worst = map_errors(out, target, mask)
        values = {"equivariance_error": err, "max_abs_error": worst}
        if out.shape[2] >= 2:
            values["pixel_flip"], values["mean_iou"] = class_map_metrics(out, target, mask)
        return values

    def label_reference(self, y, ref, targets=None):
        """Ground-truth maps of the output's shape, or integer class maps (B, H', W') / (B, 1, H', W') one-hot
        encoded over the C >= 2 output channels (see the module docstring)."""
        if targets is None:
            return super().label_reference(y, ref, targets)
        b, c, h, w = ref.shape
        t = targets.to(device=ref.device, dtype=torch.float64)
        if c >= 2 and tuple(t.shape) in ((b, h, w), (b, 1, h, w)):
            t = t.reshape(b, h, w)
            if bool(((t != t.round()) | (t < 0) | (t > c - 1)).any()):
                bad = t[(t != t.round()) | (t < 0) | (t > c - 1)][0].item()
                raise DataError(
                    f"Expected class-map targets with whole class indices 0..{c - 1} (the model has {c} output channels), "
                    f"got {bad:g}, do store the true class of each output pixel (or maps of shape (N, {c}, {h}, {w}))."
                )
            onehot = torch.nn.functional.one_hot(t.long(), c).permute(0, 3, 1, 2)
            return onehot.to(torch.float64), None
        check_target_shape(t, ref, self.name, f"(N, {c}, {h}, {w}) like the output" + (f" or class maps (N, {h}, {w})" if c >= 2 else ""))
        return t, None

    def canonical(self, out, sym, elements, x, mask=None):
        back = self.move(out, sym, elements, x, inverse=True)
        return back, self.valid(out, sym, elements, x, inverse=True)

    def null(self, ref_a: Tensor, ref_b: Tensor) -> Tensor:
        return equivariance_error(ref_a.unsqueeze(0), ref_b.unsqueeze(0))[0]

    def summarize(self, table: dict[str, np.ndarray], identity_index: int):
        return summarize_orbit(
            table,
            identity_index,
            self.main_metric,
            means=[("equivariance_error", "equivariance_error"), ("pixel_flip_rate", "pixel_flip"), ("mean_iou", "mean_iou")],
            maxima=[("max_abs_error", "max_abs_error")],
        )

    def output_tangent(self, sym: Symmetry, name: str, ref: Tensor) -> Tensor:
        """d/dt S_t f(x) at t = 0 along generator ``name``, for the Lie derivative (eqaudit.lie)."""
        hw = getattr(self, "_hw", (int(ref.shape[-2]), int(ref.shape[-1])))
        return map_tangent(sym, name, ref, hw)
