"""Classifier-like outputs: invariant (B, K) logits or probabilities, classes permuted by the group (label-perm), and invariant scalars.

What is compared (float64): a converted output packs the probabilities p and the raw scores side by
side, (..., 2K) = [p | raw], so every reference (identity, label, consensus) and the null work on one
tensor. S_g is the identity for invariant outputs and, for ``label-perm`` outputs, the permutation
P_g of the classes composed from one permutation per generator (``eqaudit.symmetries.outputs.label_map``):
the prediction for g.x is P_g p(x), and the true class of g.x is P_g y.

Metrics per (element, sample): ``prob_tv`` (main) and ``flipped`` on p, ``correct`` and
``true_class_prob`` with labels, ``logit_error`` (the equivariance error of the centred log-scores,
which reads float noise for an exactly invariant model where a saturated softmax hides differences),
and ``equivariance_error`` / ``max_abs_error`` on the raw output (not against labels, which have no
raw scores). An ``invariant`` output that is not a (B, K >= 2) score table (an energy (B,) or (B, 1),
an embedding (B, ...)) is compared raw only: ``equivariance_error`` (main) and ``max_abs_error``.

Shapes: E elements, B batch, K classes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ModelRunError
from ..metrics import (
    EPS,
    centred_logits,
    classify_per_sample,
    equivariance_error,
    looks_like_probabilities,
    max_abs_error,
    prob_tv,
    summarize_classify,
    summarize_orbit,
    to_probabilities,
)
from ..symmetries.outputs import label_map, permute_classes
from .base import Task


class ClassifyTask(Task):
    """Classifier outputs (see the module docstring). ``perms`` (generator -> permutation of the K
    classes) makes the classes move with the group; ``scalars_ok`` lets an invariant output that is
    not a score table be measured raw (the ``invariant`` output type; ``--task classify`` refuses it)."""

    name = "classify"
    main_metric = "prob_tv"
    label_metrics = frozenset({"accuracy", "clean_accuracy", "worst_case_accuracy", "true_class_prob"})
    supports_labels = True

    def __init__(self, perms: dict[str, list[int]] | None = None, scalars_ok: bool = False) -> None:
        self.kind = "logits"
        self.perms = {g: torch.tensor(p, dtype=torch.int64) for g, p in (perms or {}).items()}
        self.scalars_ok = scalars_ok
        self.raw_only = False
        self.reference = "identity"
        self._maps: dict[tuple, Tensor] = {}  # (symmetry, elements, inverse) -> class maps, built once per chunk shape

    # ---- set-up ----------------------------------------------------------------------------------------

    def check_reference(self, reference, has_labels, has_targets=False, targets_key="targets"):
        super().check_reference(reference, has_labels, has_targets, targets_key)
        self.reference = reference

    def check_output(self, out: Tensor, x: Tensor) -> None:
        if out.shape[0] != x.shape[0]:
            raise ModelRunError(f"Expected one output row per input (a batch of {x.shape[0]}), got {tuple(out.shape)}.")
        table = out.ndim == 2 and out.shape[1] >= 2
        if not table and not self.scalars_ok:
            raise ModelRunError(
                f"Expected classifier outputs of shape (B, K) with K >= 2 for a batch of {x.shape[0]}, got {tuple(out.shape)}; "
                "pick another output with --output-name, declare it (--output binary for one logit, --output invariant for "
                "a scalar), or set --task for non-classifier outputs."
            )
        if self.perms:
            if not table:
                raise ModelRunError(f"Expected (B, K) class scores for a label-perm output, got {tuple(out.shape)}.")
            k = int(out.shape[1])
            for gen, p in self.perms.items():
                if len(p) != k:
                    raise ModelRunError(
                        f"Expected a permutation of the model's {k} classes for generator {gen!r} of the label-perm output, "
                        f"got {len(p)} entries, do list one target class per class, e.g. {gen}={','.join(map(str, range(k)))}"
                    )

    def setup(self, first: Tensor, output_kind: str) -> str:
        if first.ndim != 2 or first.shape[1] < 2:
            self.raw_only = True
            self.main_metric = "equivariance_error"
            self.kind = "raw"
            return "raw"
        self.kind = output_kind if output_kind != "auto" else ("probabilities" if looks_like_probabilities(first) else "logits")
        return self.kind

    # ---- representation --------------------------------------------------------------------------------

    def convert(self, out: Tensor) -> Tensor:
        """Raw (B, K) or (E, B, K) -> [p | raw] (..., 2K) float64; raw-only outputs stay raw, in float64."""
        if self.raw_only:
            return out.double()
        return torch.cat([to_probabilities(out, self.kind), out.double()], -1)

    def lie_view(self, converted: Tensor) -> Tensor:
        """The part a Lie derivative differentiates: the probabilities (raw values for raw-only outputs)."""
        return converted if self.raw_only else converted[..., : converted.shape[-1] // 2]

    def _split(self, t: Tensor) -> tuple[Tensor, Tensor]:
        k = t.shape[-1] // 2
        return t[..., :k], t[..., k:]

    def _class_map(self, sym, elements: Tensor, inverse: bool = False) -> Tensor | None:
        """(E, K) class maps of ``elements``; composed from the words once per distinct chunk, then cached
        (the sweep asks again for every batch)."""
        if not self.perms:
            return None
        key = (id(sym), sym.spec, inverse, str(elements.device), elements.detach().cpu().numpy().tobytes())
        hit = self._maps.get(key)
        if hit is None:
            hit = self._maps[key] = label_map(sym, elements, self.perms, inverse=inverse)
        return hit

    def _move(self, t: Tensor, to: Tensor | None, e: int) -> Tensor:
        """Class tensors (B, K) / (E, B, K), or packed (..., 2K), moved by the class maps ``to`` (E, K);
        None leaves them in place (expanded to E elements)."""
        if to is None:
            return t if t.dim() == 3 else t.unsqueeze(0).expand(e, *t.shape)
        if t.shape[-1] == 2 * to.shape[1]:
            return torch.cat([permute_classes(part, to) for part in self._split(t)], -1)
        return permute_classes(t, to)

    # ---- comparison ------------------------------------------------------------------------------------

    def compare(self, ref, out, sym, elements, x, y, ref_class=None, mask=None):
        e = out.shape[0]
        if self.raw_only:
            target = ref.unsqueeze(0).expand(e, *ref.shape)
            return {"equivariance_error": equivariance_error(out, target), "max_abs_error": max_abs_error(out, target)}
        to = self._class_map(sym, elements)
        p_ref, raw_ref = self._split(ref)
        p, raw = self._split(out)
        p_target = self._move(p_ref, to, e) if to is not None else p_ref
        y_target = None if y is None else (y.unsqueeze(0) if to is None else torch.gather(to, 1, y.view(1, -1).expand(e, -1)))
        values = classify_per_sample(p_target, p, y_target)
        if ref_class is not None:
            rc = ref_class.unsqueeze(0) if to is None else torch.gather(to, 1, ref_class.view(1, -1).expand(e, -1))
            values["flipped"] = values["pred"] != rc
        if self.reference != "label":
            # invariant outputs: the reference's side is computed once per sample (B, K) and broadcast over
            # the elements (same numbers as comparing with it expanded to (E, B, K), a fraction of the work)
            raw_target = raw_ref.unsqueeze(0) if to is None else self._move(raw_ref, to, e)
            values["logit_error"] = _relative_error(centred_logits(raw, self.kind), centred_logits(raw_target, self.kind))
            diff = raw - raw_target
            values["equivariance_error"] = _relative_error(raw, raw_target, diff)
            values["max_abs_error"] = diff.abs().amax(dim=-1)
        return values

    def floor_keys(self) -> dict[str, str]:
        if self.raw_only:
            return {"equivariance_error": "floor"}
        return {"prob_tv": "floor", "flipped": "floor_flipped"}

    def null(self, ref_a: Tensor, ref_b: Tensor) -> Tensor:
        if self.raw_only:
            return equivariance_error(ref_a.unsqueeze(0), ref_b.unsqueeze(0))[0]
        return prob_tv(self._split(ref_a)[0], self._split(ref_b)[0])

    def summarize(self, table: dict[str, np.ndarray], identity_index: int):
        if self.raw_only:
            return summarize_orbit(table, identity_index, "equivariance_error",
                                   means=[("equivariance_error", "equivariance_error")], maxima=[("max_abs_error", "max_abs_error")])
        return summarize_classify(table, identity_index)

    # ---- references ------------------------------------------------------------------------------------

    def label_reference(self, y: Tensor, ref: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor]:
        k = ref.shape[-1] // 2
        onehot = torch.nn.functional.one_hot(y, k).to(ref)
        return torch.cat([onehot, torch.zeros_like(onehot)], -1), y

    def canonical(self, out, sym, elements, x, mask=None):
        to = self._class_map(sym, elements, inverse=True)
        return (out if to is None else self._move(out, to, out.shape[0])), None

    def class_scores(self, out: Tensor) -> Tensor | None:
        return None if self.raw_only else self._split(out)[0]


def _relative_error(a: Tensor, b: Tensor, diff: Tensor | None = None) -> Tensor:
    """``metrics.equivariance_error`` of (E, B, K) scores a against b (E, B, K) or (1, B, K) broadcast
    over the elements, without a mask: ||a - b|| / (||a|| + ||b|| + EPS) -> (E, B)."""
    d = (a - b) if diff is None else diff
    return d.norm(dim=-1) / (a.norm(dim=-1) + b.norm(dim=-1) + EPS)
