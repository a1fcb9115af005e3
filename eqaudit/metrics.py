"""Metric maths as pure tensor functions over (reference, transformed) outputs, per sample and element.

Shapes: E elements, B samples, K classes. Everything is computed in float64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .levels import non_identity  # noqa: F401  (numpy-only: the report reads it without torch)
from .metricspec import DIRECTION  # noqa: F401  (declared once in the metric registry; re-exported)

PROB_TOL = 1e-4


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

    p_ref (B, K) reference probabilities, or (E, B, K) when the reference differs per element (the
    classes are permuted by the group, ``label-perm`` outputs), p (E, B, K) probabilities of the
    transformed inputs, y (B,) or (E, B) labels (the true class of each transformed input) or None.
    Returns (E, B) tensors: prob_tv (half L1 distance), flipped (argmax differs from the reference's),
    pred (argmax), and with labels correct and true_class_prob.
    """
    if p_ref.dim() < p.dim():
        p_ref = p_ref.unsqueeze(0)
    pred = p.argmax(-1)
    out = {
        "prob_tv": prob_tv(p, p_ref),
        "flipped": pred != p_ref.argmax(-1),
        "pred": pred,
    }
    if y is not None:
        y = torch.broadcast_to(y, pred.shape)
        out["correct"] = pred == y
        out["true_class_prob"] = p.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return out


def centred_logits(out: Tensor, kind: str) -> Tensor:
    """(..., K) logits or probabilities -> float64 log-scores with their mean over classes removed (the
    softmax is blind to a common shift, so centring makes equal predictions equal vectors)."""
    z = out.double()
    if kind == "probabilities":
        z = torch.log(z.clamp_min(1e-300))
    return z - z.mean(-1, keepdim=True)


def summarize_classify(table: dict[str, np.ndarray], identity_index: int) -> tuple[dict, list[dict]]:
    """Classifier summary: the orbit means (summarize_orbit) plus worst-case and clean accuracy."""
    summary, elements = summarize_orbit(
        table, identity_index, "prob_tv",
        means=[("flip_rate", "flipped"), ("prob_tv", "prob_tv"), ("accuracy", "correct"),
               ("true_class_prob", "true_class_prob"), ("floor_flip_rate", "floor_flipped"),
               ("logit_error", "logit_error"), ("equivariance_error", "equivariance_error")],
        maxima=[("max_abs_error", "max_abs_error")],
    )
    if "correct" in table:
        summary["worst_case_accuracy"] = float(table["correct"].all(1).mean())
        summary["clean_accuracy"] = float(table["correct"][:, identity_index].mean())
    return summary, elements


RESOLVE_MIN = 1e-6  # an error this close to the floor is float noise (as levels.SEPARATION_MIN for null vs floor)


def resolved_above_floor(err: np.ndarray, floor: np.ndarray, z: float = 2.0) -> np.ndarray:
    """Per element: is the error clearly above the floor? err, floor (N, E) -> (E,) bool.

    Paired test over samples: mean(err - floor) > z standard errors and > RESOLVE_MIN, so the exact
    elements of a resampled orbit (rotate by 90 degrees: error and round trip both float noise) are
    not resolved on a difference of 1e-9 that happens to be consistent."""
    d = err.astype(np.float64) - floor.astype(np.float64)
    n = d.shape[0]
    mean = d.mean(0)
    se = d.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return mean > np.maximum(z * se, RESOLVE_MIN)


# ---- equivariant outputs (dense maps, vector fields, points, boxes) ----------------------------------------
# Every function takes a (outputs on transformed inputs) and b (the reference moved by the symmetry),
# both (E, B, ...) and compared in float64, plus an optional validity mask broadcastable to them
# (e.g. (E, 1, 1, H, W) for maps); it returns (E, B). An empty mask counts as no error.

EPS = 1e-12



def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], t.shape[1], -1)


def _masked(a: Tensor, b: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    a, b = a.to(torch.float64), b.to(torch.float64)
    if mask is None:
        return a, b, None
    m = torch.broadcast_to(mask.to(torch.bool), a.shape)
    return a * m, b * m, m


def equivariance_error(a: Tensor, b: Tensor, mask: Tensor | None = None, eps: float = EPS) -> Tensor:
    """||a - b|| / (||a|| + ||b|| + eps) per (element, sample) over everything after the first two
    axes, inside ``mask``: (E, B, ...) x 2 -> (E, B) in [0, 1] (0 = equal; 1 = opposite or one is zero)."""
    a, b, _ = _masked(a, b, mask)
    d = _flat(a - b).norm(dim=-1)
    return d / (_flat(a).norm(dim=-1) + _flat(b).norm(dim=-1) + eps)


def max_abs_error(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """max |a - b| per (element, sample) inside ``mask``: (E, B, ...) x 2 -> (E, B)."""
    a, b, _ = _masked(a, b, mask)
    return _flat((a - b).abs()).amax(dim=-1)


def rms_error(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """Root mean square over points of the vector difference |a_p - b_p|, in the outputs' units (e.g.
    eV/A for forces): a, b (E, B, P, ...), mask broadcastable to (E, B, P, 1...) -> (E, B)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    sq = (a - b).pow(2).reshape(*a.shape[:3], -1).sum(-1)  # (E, B, P)
    if mask is None:
        return sq.mean(-1).sqrt()
    m = torch.broadcast_to(mask.to(torch.bool), a.shape).reshape(*a.shape[:3], -1).any(-1).to(torch.float64)
    return ((sq * m).sum(-1) / m.sum(-1).clamp_min(1.0)).sqrt()


def relative_error(a: Tensor, b: Tensor, mask: Tensor | None = None, eps: float = EPS) -> Tensor:
    """||a - b|| / (||b|| + eps) inside ``mask``, b the reference: (E, B, ...) x 2 -> (E, B)."""
    a, b, _ = _masked(a, b, mask)
    return _flat(a - b).norm(dim=-1) / (_flat(b).norm(dim=-1) + eps)


def channel_argmax(a: Tensor) -> Tensor:
    """argmax over the channel axis 2 of (E, B, C, H, W) maps -> (E, B, H, W): the channels are moved last
    first, since a reduction over a strided middle axis is many times slower (same result)."""
    return a.movedim(2, -1).contiguous().argmax(-1)


def pixel_flip_rate(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """Share of valid pixels whose argmax over channels differs: a, b (E, B, C, H, W), mask
    broadcastable to (E, B, 1, H, W) -> (E, B) in [0, 1]."""
    return _label_flip_rate(channel_argmax(a), channel_argmax(b), _pixel_mask(a, mask))


def mean_iou(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over classes present in either argmax map of the intersection over union of the two maps
    (inside ``mask``): a, b (E, B, C, H, W) -> (E, B) in [0, 1]; 1 when no valid pixel."""
    return _label_iou(channel_argmax(a), channel_argmax(b), int(a.shape[2]), _pixel_mask(a, mask))


def class_map_metrics(a: Tensor, b: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(pixel_flip_rate, mean_iou) of the same maps, each map's channel argmax taken once (same numbers)."""
    la, lb, m = channel_argmax(a), channel_argmax(b), _pixel_mask(a, mask)
    return _label_flip_rate(la, lb, m), _label_iou(la, lb, int(a.shape[2]), m)


def map_errors(a: Tensor, b: Tensor, mask: Tensor | None = None, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """(equivariance_error, max_abs_error) of the same maps from one float64 difference (same numbers)."""
    a, b, _ = _masked(a, b, mask)
    d = a - b
    return _flat(d).norm(dim=-1) / (_flat(a).norm(dim=-1) + _flat(b).norm(dim=-1) + eps), _flat(d.abs()).amax(dim=-1)


def _pixel_mask(a: Tensor, mask: Tensor | None) -> Tensor | None:
    """A map validity mask broadcastable to (E, B, 1, H, W) -> bool (E, B, H, W), or None."""
    if mask is None:
        return None
    return torch.broadcast_to(mask.to(torch.bool), (*a.shape[:2], 1, *a.shape[3:])).squeeze(2)


def _label_flip_rate(la: Tensor, lb: Tensor, m: Tensor | None) -> Tensor:
    flip = (la != lb).to(torch.float64)  # (E, B, H, W)
    if m is None:
        return _flat(flip).mean(-1)
    m = m.to(torch.float64)
    return _flat(flip * m).sum(-1) / _flat(m).sum(-1).clamp_min(1.0)


def _label_iou(la: Tensor, lb: Tensor, k: int, m: Tensor | None) -> Tensor:
    """Mean IoU of class maps la, lb (E, B, H, W) over K classes, inside bool mask m: pixels counted per
    (element, sample, class) with one bincount each (no (E, B, H, W, K) one-hot), integers as before."""
    e, b = la.shape[:2]
    n = e * b * k  # bins (element, sample, class); bin n collects the pixels outside the mask
    group = (torch.arange(e * b, device=la.device) * k).reshape(e, b, *([1] * (la.dim() - 2)))
    ia, same = la + group, la == lb
    ib = lb + group
    if m is not None:
        ia, ib = ia.masked_fill(~m, n), ib.masked_fill(~m, n)
    both = ia.masked_fill(~same, n)  # valid pixels where both maps say the same class
    counts = torch.bincount(torch.cat([ia.reshape(-1), ib.reshape(-1) + (n + 1), both.reshape(-1) + 2 * (n + 1)]),
                            minlength=3 * (n + 1)).reshape(3, n + 1)[:, :n]
    inter = counts[2].reshape(e, b, k).to(torch.float64)
    union = (counts[0] + counts[1] - counts[2]).reshape(e, b, k).to(torch.float64)
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1.0), torch.zeros_like(inter))
    cnt = present.sum(-1)
    return torch.where(cnt > 0, iou.sum(-1) / cnt.clamp_min(1), torch.ones_like(iou[..., 0]))


def endpoint_error(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean end-point error (L2 norm of the vector difference, in the fields' units, e.g. pixels) over
    valid pixels: a, b (E, B, 2, H, W), mask broadcastable to (E, B, 1, H, W) -> (E, B)."""
    d = (a.to(torch.float64) - b.to(torch.float64)).norm(dim=2)  # (E, B, H, W)
    if mask is None:
        return _flat(d).mean(-1)
    m = torch.broadcast_to(mask.to(torch.bool), (*a.shape[:2], 1, *a.shape[3:])).squeeze(2).to(torch.float64)
    return _flat(d * m).sum(-1) / _flat(m).sum(-1).clamp_min(1.0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of (x1, y1, x2, y2) boxes: (..., 4) x 2 -> (...) in [0, 1]; boxes are
    sorted corner-wise first, and two empty boxes count as IoU 1 when they coincide."""
    a, b = _sorted_box(a.to(torch.float64)), _sorted_box(b.to(torch.float64))
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_min(0)
    inter = iw * ih
    area = lambda t: (t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    same = (a - b).abs().amax(-1) <= 1e-9
    return torch.where(union > 0, inter / union.clamp_min(1e-300), same.to(torch.float64))


def _sorted_box(t: Tensor) -> Tensor:
    return torch.stack(
        [torch.minimum(t[..., 0], t[..., 2]), torch.minimum(t[..., 1], t[..., 3]), torch.maximum(t[..., 0], t[..., 2]),
         torch.maximum(t[..., 1], t[..., 3])], -1)


def box_center_error(a: Tensor, b: Tensor) -> Tensor:
    """Distance between box centres, in pixels: (..., 4) x 2 -> (...)."""
    ca = torch.stack([(a[..., 0] + a[..., 2]) / 2, (a[..., 1] + a[..., 3]) / 2], -1).to(torch.float64)
    cb = torch.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2], -1).to(torch.float64)
    return (ca - cb).norm(dim=-1)


def summarize_orbit(
    table: dict[str, np.ndarray],
    identity_index: int,
    main: str,
    means: list[tuple[str, str]],
    maxima: list[tuple[str, str]] = (),
) -> tuple[dict, list[dict]]:
    """Summary over non-identity elements and per-element values from (N, E) per-sample arrays.

    ``means`` (summary name, table key) are averaged, ``maxima`` maximised (exactness claims).
    ``floor``: the round trip's ``main`` metric where it was measured (table key ``floor``, resampled
    actions or non-identity references), else the identity element's ``main`` value (exact actions);
    where the table names the floor's seeded subset (``floor_rows``), floors are read on those rows
    only, and the summary adds ``floor_samples`` (its size) and ``floor_se`` (the standard error of
    the per-sample floor).
    Elements whose error is not clearly above the floor are flagged ``resolved: False`` where a floor
    table exists, and counted in ``unresolved_elements``.
    """
    summary: dict[str, float | None] = {}
    n_el = table[main].shape[1]
    elements: list[dict] = [{} for _ in range(n_el)]
    rows = table.get("floor_rows")  # the seeded subset the floor was measured on (eqaudit.sweep), or None: every sample
    reductions = [(name, key, np.mean) for name, key in [*means, ("floor", "floor")]]
    reductions += [(name, key, np.max) for name, key in maxima]
    for name, key, reduce in reductions:
        if key in table:
            vals = table[key].astype(np.float64)
            if rows is not None and key.startswith("floor"):
                vals = vals[rows]
            summary[name] = float(reduce(non_identity(vals, identity_index)))
            for e, v in enumerate(reduce(vals, axis=0).tolist()):
                elements[e][name] = v
    if "floor" in table:
        err, floor = table[main], table["floor"]
        if rows is not None:
            err, floor = err[rows], floor[rows]
        resolved = resolved_above_floor(err, floor)
        for e, r in enumerate(resolved):
            elements[e]["resolved"] = bool(r)
        summary["unresolved_elements"] = int((~non_identity(resolved[None], identity_index)).sum())
        per_sample = non_identity(floor.astype(np.float64), identity_index).mean(1)
    else:
        col = table[main][:, identity_index].astype(np.float64)
        per_sample = col if rows is None else col[rows]
        summary["floor"] = float(per_sample.mean())
    if rows is not None:
        summary["floor_samples"] = int(len(rows))
        summary["floor_se"] = float(per_sample.std(ddof=1) / np.sqrt(len(per_sample))) if len(per_sample) > 1 else 0.0
    return summary, elements
