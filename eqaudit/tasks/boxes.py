"""The boxes task: one box and optional class scores per input, declared as one output (B, 4 + K); the box moves with the image.

Layout: columns 0..3 are the box (x1, y1, x2, y2) in input pixels (edges: x in [0, W], y in
[0, H], x right, y down), columns 4.. the K class scores (logits, or probabilities when every row
is non-negative and sums to 1; K = 0 means no classes). S_g moves the reference box with the
input's spatial action (eqaudit.symmetries.outputs.box_action: mapped corners, their hull, clipped
to the frame) and leaves the class scores alone.

Metrics per (element, sample): ``iou`` of the box on the transformed input with the moved
reference box, ``box_error`` = 1 - iou (the main metric, in [0, 1]), ``center_error`` (pixels);
with K >= 2 classes ``flipped`` (predicted class differs from the reference's), ``confidence``
(the top class probability) and, with labels, ``correct``.

``--reference label`` compares with the data's true boxes moved by S_g: targets (B, 4) boxes, or
(B, 4 + K) boxes with class scores. The reference class (for ``flipped``) is the targets' top score
when they have K columns of scores, else the label y when the data has labels, else f(x)'s class.

Shapes: E elements, B batch, K classes, H x W input pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, ModelRunError
from ..metrics import box_center_error, box_iou, looks_like_probabilities, summarize_orbit, to_probabilities
from ..symmetries.outputs import box_action
from .base import Task, check_target_shape
from .dense import expand, input_hw


class BoxesTask(Task):
    """One box (+ class scores) per input (see the module docstring)."""

    name = "boxes"
    main_metric = "box_error"
    label_metrics = frozenset({"accuracy", "worst_case_accuracy"})
    supports_targets = True

    def __init__(self) -> None:
        self.kind = "logits"

    def check_output(self, out: Tensor, x: Tensor) -> None:
        if out.ndim != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 4 or out.shape[1] == 5:
            raise ModelRunError(
                f"Expected box outputs of shape (B, 4 + K) (x1, y1, x2, y2 in pixels, then K >= 2 class scores or none) "
                f"for a batch of {x.shape[0]} with --task boxes, got {tuple(out.shape)}; pick another output with --output-name."
            )
        if x.ndim != 4:
            raise ModelRunError(f"Expected image inputs (B, C, H, W) with --task boxes, got {tuple(x.shape)}.")

    def setup(self, first: Tensor, output_kind: str) -> str:
        if first.shape[1] < 6:
            self.kind = "none"
        else:
            cls = first[:, 4:]
            self.kind = output_kind if output_kind != "auto" else ("probabilities" if looks_like_probabilities(cls) else "logits")
        return f"boxes+{self.kind}" if self.kind != "none" else "boxes"

    def convert(self, out: Tensor) -> Tensor:
        out = out.double()
        if out.shape[-1] < 6:
            return out
        return torch.cat([out[..., :4], to_probabilities(out[..., 4:], self.kind)], -1)

    def class_scores(self, out: Tensor) -> Tensor | None:
        return out[..., 4:] if out.shape[-1] >= 6 else None

    def compare(self, ref, out, sym, elements, x, y, ref_class=None, mask=None):
        e = out.shape[0]
        target = box_action(sym, expand(ref[..., :4], e), elements, input_hw(x))
        iou = box_iou(out[..., :4], target)
        values = {"iou": iou, "box_error": 1.0 - iou, "center_error": box_center_error(out[..., :4], target)}
        if out.shape[-1] >= 6:
            p = out[..., 4:]
            pred = p.argmax(-1)
            rc = ref_class if ref_class is not None else ref[..., 4:].argmax(-1)
            values["flipped"] = pred != rc.unsqueeze(0)
            values["confidence"] = p.amax(-1)
            values["pred"] = pred
            if y is not None:
                values["correct"] = pred == y.unsqueeze(0)
        return values

    def label_reference(self, y, ref, targets=None):
        """True boxes (B, 4) or boxes with class scores (B, 4 + K); the class part comes from the targets,
        else one-hot labels y, else f(x) (see the module docstring)."""
        if targets is None:
            return super().label_reference(y, ref, targets)
        k = int(ref.shape[-1]) - 4
        t = targets.to(device=ref.device, dtype=torch.float64)
        if t.ndim == 2 and t.shape[-1] == 4 and t.shape[0] == ref.shape[0]:
            if k < 2:
                return t, None
            if y is None:
                return torch.cat([t, ref[..., 4:].to(torch.float64)], -1), None
            if int(y.max()) >= k:
                raise DataError(f"Expected labels y in 0..{k - 1} (the model scores {k} classes), got {int(y.max())}, "
                                "do check the data file or the model output.")
            return torch.cat([t, torch.nn.functional.one_hot(y, k).to(t)], -1), y
        check_target_shape(t, ref, self.name, f"(N, 4) boxes or (N, {4 + k}) boxes with class scores")
        return t, (t[..., 4:].argmax(-1) if k >= 2 else None)

    def canonical(self, out, sym, elements, x, mask=None):
        boxes = box_action(sym, out[..., :4], elements, input_hw(x), inverse=True)
        return torch.cat([boxes, out[..., 4:].to(torch.float64)], -1), None

    def floor_keys(self) -> dict[str, str]:
        return {"box_error": "floor", "flipped": "floor_flipped"}

    def null(self, ref_a: Tensor, ref_b: Tensor) -> Tensor:
        return 1.0 - box_iou(ref_a[..., :4], ref_b[..., :4])

    def summarize(self, table: dict[str, np.ndarray], identity_index: int):
        summary, elements = summarize_orbit(
            table, identity_index, self.main_metric,
            means=[("iou", "iou"), ("box_error", "box_error"), ("center_error", "center_error"), ("flip_rate", "flipped"),
                   ("confidence", "confidence"), ("accuracy", "correct")],
        )
        if "correct" in table:
            summary["worst_case_accuracy"] = float(table["correct"].all(1).mean())
        return summary, elements
