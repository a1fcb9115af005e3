"""Binary outputs: one logit or probability per input, (B,) or (B, 1), read as a decision at 0.5.

A converted output packs the probability s (sigmoid of a logit, or the output itself when it is
already a probability) and the raw value: (..., 2) = [s | raw]. Metrics per (element, sample):
``prob_tv`` = |s(g.x) - s(x)| (main), ``flipped`` (the decision s >= 0.5 changes), ``correct`` and
``true_class_prob`` with 0/1 labels, ``logit_error`` (equivariance error of the logits),
``equivariance_error`` and ``max_abs_error`` of the raw output. The output kind ``auto`` reads the
output as probabilities when every value of the first batch lies in [0, 1], else as logits;
``--output-kind logits`` or ``probabilities`` forces it.

Shapes: E elements, B batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, ModelRunError
from ..metrics import equivariance_error, max_abs_error, summarize_classify
from .base import Task


class BinaryTask(Task):
    """One sigmoid logit or probability per input (see the module docstring)."""

    name = "binary"
    main_metric = "prob_tv"
    label_metrics = frozenset({"accuracy", "clean_accuracy", "worst_case_accuracy", "true_class_prob"})
    supports_labels = True

    def __init__(self) -> None:
        self.kind = "logits"
        self.flat = False  # the model returns (B,) rather than (B, 1)
        self.reference = "identity"

    def check_reference(self, reference, has_labels, has_targets=False, targets_key="targets"):
        super().check_reference(reference, has_labels, has_targets, targets_key)
        self.reference = reference

    def check_output(self, out: Tensor, x: Tensor) -> None:
        if out.shape[0] != x.shape[0] or not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
            raise ModelRunError(
                f"Expected one logit or probability per input, (B,) or (B, 1), for a batch of {x.shape[0]} with a binary "
                f"output, got {tuple(out.shape)}; declare (B, K) class scores as invariant or pick another output."
            )

    def setup(self, first: Tensor, output_kind: str) -> str:
        self.flat = first.ndim == 1
        if output_kind in ("logits", "probabilities"):
            self.kind = output_kind
        else:
            v = first.double()
            self.kind = "probabilities" if bool(((v >= 0) & (v <= 1)).all()) else "logits"
        return self.kind

    def convert(self, out: Tensor) -> Tensor:
        raw = out.double().unsqueeze(-1) if self.flat else out.double()
        s = raw.clamp(0.0, 1.0) if self.kind == "probabilities" else torch.sigmoid(raw)
        return torch.cat([s, raw], -1)

    def lie_view(self, converted: Tensor) -> Tensor:
        return converted[..., :1]

    def _logit(self, t: Tensor) -> Tensor:
        if self.kind == "probabilities":
            p = t[..., :1].clamp(1e-12, 1 - 1e-12)
            return torch.log(p) - torch.log1p(-p)
        return t[..., 1:]

    def compare(self, ref, out, sym, elements, x, y, ref_class=None, mask=None):
        s_ref, s = ref[..., 0].unsqueeze(0), out[..., 0]
        pred = (s >= 0.5).to(torch.int64)
        rc = ref_class.unsqueeze(0) if ref_class is not None else (s_ref >= 0.5).to(torch.int64)
        values = {"prob_tv": (s - s_ref).abs(), "flipped": pred != rc, "pred": pred}
        if y is not None:
            values["correct"] = pred == y.unsqueeze(0)
            values["true_class_prob"] = torch.where(y.unsqueeze(0) == 1, s, 1.0 - s)
        if self.reference != "label":
            target = ref.unsqueeze(0).expand(out.shape[0], *ref.shape)
            values["logit_error"] = equivariance_error(self._logit(out), self._logit(target))
            values["equivariance_error"] = equivariance_error(out[..., 1:], target[..., 1:])
            values["max_abs_error"] = max_abs_error(out[..., 1:], target[..., 1:])
        return values

    def floor_keys(self) -> dict[str, str]:
        return {"prob_tv": "floor", "flipped": "floor_flipped"}

    def null(self, ref_a: Tensor, ref_b: Tensor) -> Tensor:
        return (ref_a[..., 0] - ref_b[..., 0]).abs()

    def summarize(self, table: dict[str, np.ndarray], identity_index: int):
        return summarize_classify(table, identity_index)

    def label_reference(self, y: Tensor, ref: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if int(y.max()) > 1 or int(y.min()) < 0:
            raise DataError(f"Expected labels 0 or 1 for a binary output, got labels from {int(y.min())} to {int(y.max())}, "
                            "do store 0/1 labels or declare the output as class scores.")
        return torch.stack([y.to(ref.dtype), torch.zeros_like(y, dtype=ref.dtype)], -1), y

    def class_scores(self, out: Tensor) -> Tensor:
        s = out[..., :1]
        return torch.cat([1.0 - s, s], -1)
