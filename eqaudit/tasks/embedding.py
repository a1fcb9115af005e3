"""Embedding outputs (``--output embedding``): fit the map M_g with phi(g.x) ~ M_g phi(x) per element and score it on held-out samples.

Any output (B, ...) is read as one embedding of D = prod(...) numbers per sample. The fit itself is a
per-element reduction over the whole sweep (eqaudit.embedding): the sweep feeds every chunk of the
orbit into the task's ``accumulator`` (running sums, mergeable across shards), and ``finish`` fits and
scores the maps once the symmetry is done. What the sweep's per-sample table holds is the per-sample
``change`` of the embedding along the orbit, ||phi(g.x) - phi(x)|| / (||phi(g.x)|| + ||phi(x)|| + eps)
(M_g = I, the normalisation of DESIGN.md's equivariance error): it ranks the worst samples and draws
the sample map, and its round trip is the floor of resampled actions.

Summary keys (non-identity elements; per-element values in ``per_element``): ``equivariance_error``
(held-out relative RMS residual of the fitted map, mean), ``max_equivariance_error`` and
``worst_element`` (the worst element), ``invariance_error`` (M_g = I, same normalisation), ``rank``
(smallest), ``condition`` (largest), ``representation_defect`` (largest ||M_g M_h - M_gh|| / ||M_gh||
over pairs whose product is an element; None when there are none), ``null`` (the same error for a
map fitted between unrelated inputs: the sweep's null pairs), ``level`` = clip(1 - error / null, 0, 1)
(no bootstrap CI: the error comes from sums, not per-sample values), ``fit_samples``, ``test_samples``,
``embedding_dim``, and ``change`` with its ``floor``. Only the identity reference is supported.

Shapes: E elements, B batch, D embedding size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .. import embedding as emb
from ..errors import ConfigError, ModelRunError
from ..metrics import summarize_orbit
from ..symmetries import Symmetry
from .base import Task

MAX_STORED_MAPS = 64  # maps with D up to this are kept in the orbit table (the report's heatmaps)


class EmbeddingTask(Task):
    """One embedding per input (see the module docstring)."""

    name = "embedding"
    main_metric = "change"
    reduces = True  # the level comes from ``finish``, not from the per-sample table

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None
        self.seed = 0

    def check_reference(self, reference, has_labels, has_targets=False, targets_key="targets"):
        super().check_reference(reference, has_labels, has_targets, targets_key)
        if reference != "identity":
            raise ConfigError(f"Expected --reference identity for --output embedding, got {reference!r}: the fitted map "
                              "relates each input's embedding to its transformed one, do drop --reference.")

    def check_output(self, out, x: Tensor) -> None:
        if not isinstance(out, Tensor) or out.ndim < 1 or out.shape[0] != x.shape[0] or not out.is_floating_point():
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ModelRunError(f"Expected one float embedding per input, (B, ...) with B = {x.shape[0]}, for --output embedding, "
                                f"got {got}; do pick the embedding output (--output NAME=embedding).")

    def setup(self, first: Tensor, output_kind: str) -> str:
        self.shape = tuple(first.shape[1:])
        return "embedding"

    @property
    def dim(self) -> int:
        return math.prod(self.shape or ())

    def convert(self, out: Tensor) -> Tensor:
        c = out.double()
        lead = c.dim() - len(self.shape or ())
        return c.reshape(*c.shape[:lead], -1)

    def compare(self, ref, out, sym, elements, x, y, ref_class=None, mask=None):
        diff = (out - ref.unsqueeze(0)).norm(dim=-1)
        scale = out.norm(dim=-1) + ref.norm(dim=-1).unsqueeze(0) + 1e-12
        return {"change": diff / scale}

    def null(self, ref_a: Tensor, ref_b: Tensor) -> Tensor:
        """Per held-out pair, the squared relative residual of a map fitted between unrelated inputs."""
        return torch.from_numpy(emb.null_errors(ref_a, ref_b, self.seed))

    def summarize(self, table: dict[str, np.ndarray], identity_index: int):
        return summarize_orbit(table, identity_index, "change", means=[("change", "change")])

    # ---- the per-element reduction --------------------------------------------------------------------

    def accumulator(self, sym: Symmetry, n: int, seed: int, device) -> emb.EmbeddingSums:
        """Fresh running sums for one symmetry over ``n`` selected samples, split by ``seed``."""
        self.seed = seed
        return emb.EmbeddingSums(emb.split_parts(n, seed), sym.n_elements, self.dim, device)

    def finish(self, sums: emb.EmbeddingSums, sym: Symmetry, summary: dict, per_element: list[dict],
               null: np.ndarray | None) -> dict[str, np.ndarray]:
        """Fit and score the maps; add the summary and per-element keys; return arrays for the orbit table."""
        null_rms = emb.null_level(null)
        fit = emb.fit_from_sums(sums, null_rms)
        defect = emb.symmetry_defect(fit.maps, sym)
        ident = sym.identity_index
        others = np.array([e for e in range(len(per_element)) if e != ident] or [ident])
        eq = fit.equivariance_error
        for e, row in enumerate(per_element):
            row.update(equivariance_error=float(eq[e]), invariance_error=float(fit.invariance_error[e]), level=float(fit.level[e]),
                       rank=int(fit.rank[e]), condition=float(fit.condition[e]))
            if defect is not None:
                row["representation_defect"] = float(np.nanmax(defect[e])) if not np.isnan(defect[e]).all() else None
        worst = int(others[np.nanargmax(eq[others])]) if not np.isnan(eq[others]).all() else ident
        summary.update(
            equivariance_error=float(np.nanmean(eq[others])),
            max_equivariance_error=float(np.nanmax(eq[others])) if not np.isnan(eq[others]).all() else None,
            worst_element=sym.labels[worst] if worst < len(sym.labels) else str(worst),
            invariance_error=float(np.nanmean(fit.invariance_error[others])),
            rank=int(fit.rank[others].min()),
            condition=float(fit.condition[others].max()),
            representation_defect=float(np.nanmax(defect)) if defect is not None else None,
            fit_samples=fit.n_fit, test_samples=fit.n_test, embedding_dim=self.dim, null=null_rms,
        )
        if null_rms is None or not null_rms > emb.NULL_MIN:
            why = "fewer than 8 null pairs" if null_rms is None else f"null {null_rms:.3g}: the embedding barely depends on the input"
            summary.update(level=None, level_status="undetermined", level_reason=why)
            for row in per_element:
                row["level"] = None
        else:
            summary.update(level=float(np.clip(1.0 - summary["equivariance_error"] / null_rms, 0.0, 1.0)), level_status="ok")
        summary.update(level_ci=None, level_ci_low=None, level_ci_high=None)
        arrays = {"embedding_singular_values": fit.singular_values.astype(np.float32),
                  "embedding_error": np.stack([eq, fit.invariance_error]).astype(np.float64),
                  "embedding_lambda": fit.lam.astype(np.float64)}
        if self.dim <= MAX_STORED_MAPS:
            arrays["embedding_maps"] = fit.maps.numpy().astype(np.float32)
        if defect is not None:
            arrays["embedding_defect"] = defect.astype(np.float64)
        return arrays
