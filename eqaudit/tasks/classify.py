"""The classify task: outputs (B, K) logits or probabilities are invariant; flips and probability shifts are measured."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ModelRunError
from ..metrics import classify_per_sample, looks_like_probabilities, prob_tv, summarize_classify, to_probabilities
from .base import Task


class ClassifyTask(Task):
    """Invariant classifier outputs. References: ``identity`` compares p(g.x) with p(x); ``label`` with
    the one-hot label (prob_tv = 1 - p_y, ``flipped`` = wrong class); ``consensus`` with the orbit's
    mean probabilities, ``flipped`` against the orbit's majority vote."""

    name = "classify"
    main_metric = "prob_tv"
    label_metrics = frozenset({"accuracy", "clean_accuracy", "worst_case_accuracy", "true_class_prob"})
    supports_labels = True

    def __init__(self) -> None:
        self.kind = "logits"

    def check_output(self, out: Tensor, x: Tensor) -> None:
        if out.ndim != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 2:
            raise ModelRunError(
                f"Expected classifier outputs of shape (B, K) with K >= 2 for a batch of {x.shape[0]}, got {tuple(out.shape)}; "
                "pick another output with --output-name, or set --task for non-classifier outputs."
            )

    def setup(self, first: Tensor, output_kind: str) -> str:
        self.kind = output_kind if output_kind != "auto" else ("probabilities" if looks_like_probabilities(first) else "logits")
        return self.kind

    def convert(self, out: Tensor) -> Tensor:
        return to_probabilities(out, self.kind)

    def compare(self, ref, out, sym, elements, x, y, ref_class=None):
        values = classify_per_sample(ref, out, y)
        if ref_class is not None:
            values["flipped"] = values["pred"] != ref_class.unsqueeze(0)
        return values

    def floor_keys(self) -> dict[str, str]:
        return {"prob_tv": "floor", "flipped": "floor_flipped"}

    def null(self, ref_a: Tensor, ref_b: Tensor) -> Tensor:
        return prob_tv(ref_a, ref_b)

    def summarize(self, table: dict[str, np.ndarray], identity_index: int):
        return summarize_classify(table, identity_index)

    def label_reference(self, y: Tensor, ref: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return torch.nn.functional.one_hot(y, ref.shape[-1]).to(ref), y

    def class_scores(self, out: Tensor) -> Tensor:
        return out
