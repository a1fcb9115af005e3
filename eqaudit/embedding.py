"""Representation equivariance (Lenc & Vedaldi 2015): per group element g, the ridge map M_g with phi(g.x) ~ M_g phi(x), fitted on one split and scored on another, from running sums.

Every sample belongs to one of three parts, chosen by a seeded permutation of its selection position
(``split_parts``): the fit split (half the samples) is cut into an inner fit part (80 %) and a
validation part (20 %); the other half is held out. Per part p the sums

    XX_p = sum_i x_i x_i^T (D, D),   XY_p[g] = sum_i x_i y_{g,i}^T (E, D, D),
    YS_p[g] = sum_i y_{g,i} (E, D),  YY_p[g] = sum_i ||y_{g,i}||^2 (E,),   n_p

(x = phi(x_i), y_g = phi(g.x_i), both flattened to D numbers) are all the fit needs (``EmbeddingSums``),
so memory is flat in the number of samples and the answer does not depend on how samples are
batched. With W = M_g^T (y ~ x W), the ridge map is W = (XX + lam I)^-1 XY and the squared residual
on a part is YY - 2 <W, XY> + <W, XX W>. Per element, lam is chosen on the fit split alone (maps
fitted on the inner part for each value of LAMBDA_GRID times the mean eigenvalue of its XX, scored on
the validation part; one eigendecomposition serves every value and element), then the map is refitted
on the whole fit split. On the held-out part:

- ``equivariance_error`` = ||Y_g - X M_g^T|| / ||Y_g - mean Y_g|| (relative RMS residual: 0 when the
  representation is linearly equivariant, about 1 when the map explains nothing);
- ``invariance_error`` = ||Y_g - X|| / ||Y_g - mean Y_g|| (M_g = I: an invariant embedding);
- ``null``: the same error for a map fitted between unrelated inputs, phi(x_b) ~ M phi(x_a) over
  seeded pairs of different samples (``null_errors``; the scan uses its null pairs), and
  ``level`` = clip(1 - error / null, 0, 1);
- ``rank`` (singular values of M_g above RANK_TOL of the largest) and ``condition`` (largest over smallest);
- for groups whose products of elements are elements, the representation defect
  ||M_g M_h - M_gh|| / ||M_gh|| (do the fitted maps form a representation of the group?).

The residual is computed from sums, so a map that fits exactly reads about sqrt(float64 eps) ~ 1e-8
rather than 0: far below the float32 noise of a model's outputs.

Sharded sweeps (torchrun): every rank feeds the samples it measures into its own ``EmbeddingSums``
(the parts come from the global selection position, so a sample lands in the same part on any rank);
the sums are then added across ranks (``merge``, or an all-reduce SUM of every tensor of ``state()``)
before ``fit_from_sums`` runs once. Sums are float64 on the device the outputs are on.

Shapes: N samples, E elements, D embedding size, B batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError

LAMBDA_GRID = tuple(10.0**k for k in range(-10, 3))  # times the mean eigenvalue of the inner part's X^T X
RANK_TOL = 1e-6
FIT_FRACTION = 0.5
INNER_FRACTION = 0.8
MIN_SAMPLES = 8
NULL_MIN = 1e-6  # a null at or below this: the embedding barely depends on the input (no level)
MAX_SUM_BYTES = 4 * 2**30  # the running sums (3 parts x E x D x D float64) must fit in this


def split_parts(n: int, seed: int, fit_fraction: float = FIT_FRACTION) -> np.ndarray:
    """(N,) int64 part of each selection position: 0 inner fit, 1 validation (both the fit split), 2 held out."""
    if n < MIN_SAMPLES:
        raise ConfigError(f"Expected at least {MIN_SAMPLES} samples to fit and test embedding maps, got {n}, do pass more data "
                          "(or a larger --limit)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7)).numpy()
    n_fit = min(max(4, int(round(fit_fraction * n))), n - 2)
    n_inner = min(max(2, int(round(INNER_FRACTION * n_fit))), n_fit - 2)
    parts = np.full(n, 2, dtype=np.int64)
    parts[perm[:n_inner]] = 0
    parts[perm[n_inner:n_fit]] = 1
    return parts


def check_size(n_elements: int, dim: int) -> None:
    """ConfigError when the running sums of E maps of D x D would not fit in MAX_SUM_BYTES."""
    need = 3 * n_elements * dim * dim * 8
    if need > MAX_SUM_BYTES:
        raise ConfigError(f"Expected an embedding small enough for {n_elements} maps of D x D (at most {MAX_SUM_BYTES >> 30} GiB of sums), "
                          f"got D = {dim} ({need / 2**30:.1f} GiB), do declare a smaller output or layer, or a symmetry with fewer elements")


class EmbeddingSums:
    """The running sums of one symmetry's fit (see the module docstring): mergeable by addition."""

    KEYS = ("xx", "xy", "ys", "yy", "count")

    def __init__(self, parts: np.ndarray, n_elements: int, dim: int, device: torch.device | str = "cpu") -> None:
        check_size(n_elements, dim)
        self.parts = torch.as_tensor(parts, dtype=torch.int64)
        self.xx = torch.zeros(3, dim, dim, dtype=torch.float64, device=device)
        self.xy = torch.zeros(3, n_elements, dim, dim, dtype=torch.float64, device=device)
        self.ys = torch.zeros(3, n_elements, dim, dtype=torch.float64, device=device)
        self.yy = torch.zeros(3, n_elements, dtype=torch.float64, device=device)
        self.count = torch.zeros(3, dtype=torch.float64, device=device)

    def add(self, pos: np.ndarray, sl: slice, x: Tensor, y: Tensor) -> None:
        """One chunk: pos (B,) selection positions, sl the chunk's elements, x (B, D) phi(x), y (E_c, B, D)
        phi(g.x). The x sums are added with the chunk that starts at element 0 (once per batch)."""
        x = x.reshape(x.shape[0], -1).to(self.xx)
        y = y.reshape(y.shape[0], y.shape[1], -1).to(self.xx)
        w = torch.nn.functional.one_hot(self.parts[torch.as_tensor(pos, dtype=torch.int64)], 3).to(self.xx).T  # (3, B)
        wx = w.unsqueeze(-1) * x  # (3, B, D)
        if sl.start == 0:
            self.xx += wx.transpose(1, 2) @ x
            self.count += w.sum(1)
        self.xy[:, sl] += torch.einsum("pbd,ebf->pedf", wx, y)
        self.ys[:, sl] += torch.einsum("pb,ebd->ped", w, y)
        self.yy[:, sl] += w @ y.pow(2).sum(-1).T

    def state(self) -> dict[str, Tensor]:
        """The sums by name (for an all-reduce across ranks)."""
        return {k: getattr(self, k) for k in self.KEYS}

    def merge(self, other: EmbeddingSums) -> None:
        """Add another shard's sums (same parts, elements and D)."""
        for k in self.KEYS:
            getattr(self, k).add_(getattr(other, k).to(getattr(self, k)))


@dataclass
class EmbeddingFit:
    """Per element (E,): held-out errors, level, rank, condition, the chosen regulariser; the maps (E, D, D),
    their singular values (E, D), the null (relative RMS) and the split sizes."""

    maps: Tensor
    equivariance_error: np.ndarray
    invariance_error: np.ndarray
    null: float
    level: np.ndarray
    rank: np.ndarray
    condition: np.ndarray
    lam: np.ndarray
    singular_values: np.ndarray
    n_fit: int = 0
    n_test: int = 0
    null_values: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _spread(ys: Tensor, yy: Tensor, n: Tensor) -> Tensor:
    """sum ||y - mean y||^2 from the sums (E, D), (E,) and the count."""
    return (yy - ys.pow(2).sum(-1) / n.clamp_min(1)).clamp_min(0)


def _residual(w: Tensor, xx: Tensor, xy: Tensor, yy: Tensor) -> Tensor:
    """sum ||y - x W||^2 for maps W (E, D, D) from the sums XX (D, D), XY (E, D, D), YY (E,)."""
    return (yy - 2 * (w * xy).sum((-2, -1)) + (w * (xx @ w)).sum((-2, -1))).clamp_min(0)


def _relative(res: Tensor, spread: Tensor) -> Tensor:
    return torch.where(spread > 0, (res / spread.clamp_min(1e-300)).sqrt(), torch.full_like(res, float("nan")))


def _choose_lambda(s: EmbeddingSums) -> Tensor:
    """(E,) per element the grid value with the smallest validation error of the map fitted on the inner part."""
    xx_a, xy_a, xx_v, xy_v, yy_v = s.xx[0], s.xy[0], s.xx[1], s.xy[1], s.yy[1]
    ev, q = torch.linalg.eigh(xx_a)
    ev = ev.clamp_min(0)
    scale = float(ev.mean()) or 1.0
    b = q.T @ xy_a  # (E, D, D): W = Q diag(1/(ev + lam)) B
    cross = (b * (q.T @ xy_v)).sum(-1)  # (E, D): <W, XY_v> = cross @ w
    quad = (q.T @ xx_v @ q) * (b @ b.transpose(-1, -2))  # (E, D, D): <W, XX_v W> = w^T quad w
    lams = torch.tensor(LAMBDA_GRID, dtype=torch.float64, device=ev.device) * scale
    w = 1.0 / (ev.unsqueeze(0) + lams.unsqueeze(1))  # (L, D)
    res = yy_v.unsqueeze(0) - 2 * w @ cross.T + torch.einsum("li,eik,lk->le", w, quad, w)  # (L, E)
    return lams[res.argmin(0)]


def _fit(xx: Tensor, xy: Tensor, lam: Tensor) -> Tensor:
    """W (E, D, D) = (XX + lam_e I)^-1 XY_e, one eigendecomposition for every element."""
    ev, q = torch.linalg.eigh(xx)
    w = 1.0 / (ev.clamp_min(0).unsqueeze(0) + lam.unsqueeze(1))  # (E, D)
    return q @ (w.unsqueeze(-1) * (q.T @ xy))


def fit_from_sums(s: EmbeddingSums, null: float | None = None) -> EmbeddingFit:
    """Choose lam, fit the maps on the fit split and score them on the held-out part. ``null``: the
    relative RMS error of a map between unrelated inputs (the level reads against it; None: no level)."""
    if float(s.count.min()) < 1:
        raise ConfigError(f"Expected samples in every part of the embedding split, got {s.count.tolist()}, do pass more data")
    lam = _choose_lambda(s)
    w = _fit(s.xx[0] + s.xx[1], s.xy[0] + s.xy[1], lam)
    xx_t, xy_t, yy_t = s.xx[2], s.xy[2], s.yy[2]
    spread = _spread(s.ys[2], yy_t, s.count[2])
    eq = _relative(_residual(w, xx_t, xy_t, yy_t), spread)
    eye = torch.eye(xx_t.shape[0], dtype=torch.float64, device=xx_t.device)
    inv = _relative(_residual(eye.expand_as(w), xx_t, xy_t, yy_t), spread)
    maps = w.transpose(-1, -2).cpu()
    sv = torch.linalg.svdvals(maps)
    rank = (sv > RANK_TOL * sv[:, :1].clamp_min(1e-300)).sum(-1)
    cond = sv[:, 0] / sv[:, -1].clamp_min(1e-300)
    eq_np = eq.cpu().numpy()
    level = np.clip(1.0 - eq_np / null, 0.0, 1.0) if null is not None and null > 0 else np.full(eq_np.shape, np.nan)
    return EmbeddingFit(maps, eq_np, inv.cpu().numpy(), float(null) if null is not None else float("nan"), level,
                        rank.numpy(), cond.numpy(), lam.cpu().numpy(), sv.numpy(), int(s.count[:2].sum()), int(s.count[2]))


def null_errors(a: Tensor, b: Tensor, seed: int = 0) -> np.ndarray:
    """Per held-out pair, the squared residual of phi(x_b) ~ M phi(x_a) fitted (as above) over pairs of
    different inputs a, b (M, D), relative to the mean spread: their mean is the null's squared relative
    RMS error (``null_level``). Empty when there are too few pairs."""
    a, b = a.reshape(a.shape[0], -1).to(torch.float64), b.reshape(b.shape[0], -1).to(torch.float64)
    if a.shape[0] < MIN_SAMPLES:
        return np.zeros(0)
    parts = split_parts(a.shape[0], seed + 2)
    s = EmbeddingSums(parts, 1, a.shape[1], a.device)
    s.add(np.arange(a.shape[0]), slice(0, 1), a, b.unsqueeze(0))
    lam = _choose_lambda(s)
    w = _fit(s.xx[0] + s.xx[1], s.xy[0] + s.xy[1], lam)[0]
    test = torch.as_tensor(parts == 2, device=a.device)
    bt, at = b[test], a[test]
    mean_spread = float((bt - bt.mean(0)).pow(2).sum()) / max(1, bt.shape[0])
    if mean_spread <= 0:
        return np.zeros(0)
    return ((bt - at @ w).pow(2).sum(-1) / mean_spread).cpu().numpy()


def null_level(values: np.ndarray | None) -> float | None:
    """The null's relative RMS error from ``null_errors``' values (None without any)."""
    if values is None or len(values) == 0:
        return None
    return float(np.sqrt(np.mean(values)))


def fit_maps(z: Tensor, zg: Tensor, *, seed: int = 0) -> EmbeddingFit:
    """In memory: z (N, D) embeddings of the inputs, zg (E, N, D) of each element's transformed inputs;
    the null from seeded pairs of different samples (the scan's ``null_pairs``)."""
    from .sweep import null_pairs

    if z.ndim != 2 or zg.ndim != 3 or zg.shape[1:] != z.shape:
        raise ConfigError(f"Expected embeddings (N, D) and transformed embeddings (E, N, D), got {tuple(z.shape)} and "
                          f"{tuple(zg.shape)}, do flatten each sample's embedding to one vector")
    s = EmbeddingSums(split_parts(z.shape[0], seed), zg.shape[0], z.shape[1], z.device)
    s.add(np.arange(z.shape[0]), slice(0, zg.shape[0]), z, zg)
    pa, pb = null_pairs(z.shape[0], seed)
    values = null_errors(z[torch.as_tensor(pa)], z[torch.as_tensor(pb)], seed)
    fit = fit_from_sums(s, null_level(values))
    fit.null_values = values
    return fit


def representation_defect(maps: Tensor, elements: Tensor, compose) -> np.ndarray:
    """(E, E) relative defect ||M_g M_h - M_gh|| / ||M_gh|| for rows g, columns h whose product
    ``compose(g, h)`` is among ``elements`` (NaN where it is not)."""
    e = elements.shape[0]
    gi = torch.arange(e).repeat_interleave(e)
    hi = torch.arange(e).repeat(e)
    prod = compose(elements[gi], elements[hi])
    match = (prod.unsqueeze(1) - elements.unsqueeze(0)).abs().reshape(e * e, e, -1).amax(-1) < 1e-9
    found = match.any(1)
    idx = match.to(torch.int64).argmax(1)
    lhs = maps[gi] @ maps[hi]
    target = maps[idx]
    rel = (lhs - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1).clamp_min(1e-300)
    out = torch.where(found, rel, torch.full_like(rel, float("nan")))
    return out.reshape(e, e).numpy()


def symmetry_defect(maps: Tensor, sym) -> np.ndarray | None:
    """``representation_defect`` over ``sym``'s elements with its compose; None when it has no usable product."""
    el = sym.elements.detach().cpu().to(torch.float64)
    try:
        defect = representation_defect(maps.to(torch.float64), el, lambda a, b: sym.compose(a, b).to(torch.float64))
    except (NotImplementedError, RuntimeError):
        return None
    return None if np.isnan(defect).all() else defect


def embedding_equivariance(phi, x: Tensor, sym, *, seed: int = 0) -> tuple[EmbeddingFit, np.ndarray | None]:
    """Fit and score M_g for every element of ``sym`` on inputs x (N, ...): phi maps a batch to (N, ...)
    embeddings (flattened per sample). Returns the fit and, for groups with products among the
    elements, the defect."""
    with torch.no_grad():
        z = phi(x).reshape(x.shape[0], -1)
        moved = sym.act(x, sym.elements)  # (E, N, ...)
        zg = phi(moved.reshape(-1, *x.shape[1:])).reshape(moved.shape[0], x.shape[0], -1)
    fit = fit_maps(z, zg, seed=seed)
    return fit, symmetry_defect(fit.maps, sym)
