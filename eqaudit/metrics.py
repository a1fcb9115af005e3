"""Metric maths as pure tensor functions over (reference, transformed) outputs, per sample and element.

Shapes: E elements, B samples, K classes. Everything is computed in float64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

PROB_TOL = 1e-4

# Direction of every summary metric: +1 higher is better, -1 lower is better (used by gates and compare).
DIRECTION: dict[str, int] = {
    "flip_rate": -1,
    "prob_tv": -1,
    "floor": -1,
    "floor_flip_rate": -1,
    "equivariance_error": -1,
    "max_abs_error": -1,
    "accuracy": +1,
    "clean_accuracy": +1,
    "worst_case_accuracy": +1,
    "true_class_prob": +1,
    "level": +1,
    "level_ci_low": +1,
    "level_ci_high": +1,
}



def looks_like_probabilities(out: Tensor) -> bool:
    """True when every row of (B, K) is non-negative and sums to 1 (within PROB_TOL)."""
    out = out.double()
    return bool((out >= -PROB_TOL).all() and ((out.sum(-1) - 1).abs() <= PROB_TOL).all())


def to_probabilities(out: Tensor, kind: str) -> Tensor:
    """(..., K) logits or probabilities -> float64 probabilities."""
    out = out.double()
    if kind == "probabilities":
        return out.clamp_min(0) / out.clamp_min(0).sum(-1, keepdim=True).clamp_min(1e-300)
    return torch.softmax(out, dim=-1)


def prob_tv(p: Tensor, q: Tensor) -> Tensor:
    """Total-variation distance between probability rows: (..., K), (..., K) -> (...), in [0, 1]."""
    return 0.5 * (p - q).abs().sum(-1)


def classify_per_sample(p_ref: Tensor, p: Tensor, y: Tensor | None) -> dict[str, Tensor]:
    """Per-(element, sample) classifier metrics.

    p_ref (B, K) reference probabilities, p (E, B, K) probabilities of the transformed inputs,
    y (B,) labels or None. Returns (E, B) tensors: prob_tv (half L1 distance), flipped (argmax
    differs from the reference's), pred (argmax), and with labels correct and true_class_prob.
    """
    pred = p.argmax(-1)
    out = {
        "prob_tv": prob_tv(p, p_ref.unsqueeze(0)),
        "flipped": pred != p_ref.argmax(-1).unsqueeze(0),
        "pred": pred,
    }
    if y is not None:
        out["correct"] = pred == y.unsqueeze(0)
        out["true_class_prob"] = p.gather(-1, y.view(1, -1, 1).expand(p.shape[0], -1, 1)).squeeze(-1)
    return out


def _non_identity(arr: np.ndarray, identity_index: int) -> np.ndarray:
    return np.delete(arr, identity_index, axis=1) if arr.shape[1] > 1 else arr


def summarize_classify(table: dict[str, np.ndarray], identity_index: int) -> tuple[dict, list[dict]]:
    """Summary over non-identity elements and the per-element means, from (N, E) per-sample arrays."""
    summary: dict[str, float | None] = {}
    per_element: dict[str, np.ndarray] = {}
    for name, key in [("flip_rate", "flipped"), ("prob_tv", "prob_tv"), ("accuracy", "correct"),
                      ("true_class_prob", "true_class_prob"), ("floor", "floor"), ("floor_flip_rate", "floor_flipped")]:
        if key in table:
            vals = table[key].astype(np.float64)
            per_element[name] = vals.mean(0)
            summary[name] = float(_non_identity(vals, identity_index).mean())
    if "correct" in table:
        summary["worst_case_accuracy"] = float(table["correct"].all(1).mean())
        summary["clean_accuracy"] = float(table["correct"][:, identity_index].mean())
    if "floor" not in table:
        # exact action: the floor is the identity element evaluated through the same pipeline
        summary["floor"] = float(table["prob_tv"][:, identity_index].astype(np.float64).mean())
    elements = [{k: float(v[e]) for k, v in per_element.items()} for e in range(next(iter(table.values())).shape[1])]
    if "floor" in table:
        resolved = resolved_above_floor(table["prob_tv"], table["floor"])
        for e, r in enumerate(resolved):
            elements[e]["resolved"] = bool(r)
        summary["unresolved_elements"] = int((~_non_identity(resolved[None], identity_index)).sum())
    return summary, elements


def resolved_above_floor(err: np.ndarray, floor: np.ndarray, z: float = 2.0) -> np.ndarray:
    """Per element: is the error clearly above the floor? err, floor (N, E) -> (E,) bool.

    Paired test over samples: mean(err - floor) > z standard errors (and > 0)."""
    d = err.astype(np.float64) - floor.astype(np.float64)
    n = d.shape[0]
    mean = d.mean(0)
    se = d.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return mean > np.maximum(z * se, 1e-12)
