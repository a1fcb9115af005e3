"""Representation equivariance (Lenc & Vedaldi 2015): per group element g, the ridge map M_g with phi(g.x) ~ M_g phi(x), fitted on one split and scored on another.

For embeddings Z = phi(X) (N, D) and, per element g, Z_g = phi(g.X) (N, D), the fitted map minimises
||Z_g - Z M_g^T||^2 + lam ||M_g||^2 on a seeded fit split. Every element shares the fit split's
inputs, so one SVD Z_fit = U S V^T serves them all: M_g^T = V diag(s / (s^2 + lam)) U^T Z_g,fit.
lam is chosen on the fit split alone (an inner 80/20 split, from a grid scaled by the mean squared
singular value), then the map is refitted on the whole fit split. On the held-out split:

- ``equivariance_error`` = ||Z_g - Z M_g^T|| / ||Z_g - mean Z_g|| (relative RMS residual: 0 when the
  representation is linearly equivariant, about 1 when the map explains nothing);
- ``invariance_error`` = ||Z_g - Z|| / ||Z_g - mean Z_g|| (M_g = I: an invariant embedding);
- ``null``: the equivariance error of a map fitted between unrelated inputs (Z paired with a seeded
  permutation of Z_g), and ``level`` = clip(1 - error / null, 0, 1);
- ``rank`` (singular values of M_g above 1e-6 of the largest) and ``condition`` (largest over smallest);
- for finite groups, the representation defect ||M_g M_h - M_gh|| / ||M_gh|| over every pair whose
  product is among the elements (do the fitted maps form a representation of the group?).

This module holds the measurement on in-memory embeddings; ``scan --output embedding`` is not wired yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError

LAMBDA_GRID = tuple(10.0**k for k in range(-10, 3))  # times the mean squared singular value of the fit inputs
RANK_TOL = 1e-6


@dataclass
class EmbeddingFit:
    """Per element (E,): held-out errors, the null, level, rank and condition; the maps (E, D, D)."""

    maps: Tensor
    equivariance_error: np.ndarray
    invariance_error: np.ndarray
    null: float
    level: np.ndarray
    rank: np.ndarray
    condition: np.ndarray
    lam: float


def _split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    if n < 4:
        raise ConfigError(f"Expected at least 4 samples to fit and test embedding maps, got {n}, do pass more data")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    k = min(max(2, int(round(fraction * n))), n - 2)
    return perm[:k].sort().values, perm[k:].sort().values


def _ridge(z: Tensor, zg: Tensor, lam: float) -> Tensor:
    """z (n, D), zg (E, n, D) -> M (E, D, D) minimising ||zg - z M^T||^2 + lam ||M||^2, one SVD for all E."""
    u, s, vh = torch.linalg.svd(z, full_matrices=False)
    shrink = s / (s**2 + lam)
    mt = vh.T @ (shrink.unsqueeze(-1) * (u.T @ zg))  # (E, D, D) = M^T
    return mt.transpose(-1, -2)


def _relative(residual: Tensor, target: Tensor) -> Tensor:
    """(E, n, D) residuals -> (E,) RMS residual over the spread of ``target`` about its mean."""
    spread = (target - target.mean(-2, keepdim=True)).pow(2).sum((-2, -1)).clamp_min(1e-300)
    return (residual.pow(2).sum((-2, -1)) / spread).sqrt()


def _choose_lambda(z: Tensor, zg: Tensor, seed: int) -> float:
    """The grid value with the smallest mean inner-validation error, on the fit split only."""
    inner, val = _split(z.shape[0], 0.8, seed + 1)
    scale = float(torch.linalg.svdvals(z[inner]).pow(2).mean()) or 1.0
    best, best_err = LAMBDA_GRID[0] * scale, float("inf")
    for lam in LAMBDA_GRID:
        m = _ridge(z[inner], zg[:, inner], lam * scale)
        err = float(_relative(zg[:, val] - z[val] @ m.transpose(-1, -2), zg[:, val]).mean())
        if err < best_err - 1e-12:
            best, best_err = lam * scale, err
    return best


def fit_maps(z: Tensor, zg: Tensor, *, seed: int = 0, fit_fraction: float = 0.5) -> EmbeddingFit:
    """z (N, D) embeddings of the inputs, zg (E, N, D) of each element's transformed inputs."""
    if z.ndim != 2 or zg.ndim != 3 or zg.shape[1:] != z.shape:
        raise ConfigError(f"Expected embeddings (N, D) and transformed embeddings (E, N, D), got {tuple(z.shape)} and "
                          f"{tuple(zg.shape)}, do flatten each sample's embedding to one vector")
    z, zg = z.to(torch.float64), zg.to(torch.float64)
    fit, test = _split(z.shape[0], fit_fraction, seed)
    lam = _choose_lambda(z[fit], zg[:, fit], seed)
    maps = _ridge(z[fit], zg[:, fit], lam)
    zt, zgt = z[test], zg[:, test]
    eq = _relative(zgt - zt @ maps.transpose(-1, -2), zgt)
    inv = _relative(zgt - zt, zgt)
    perm = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed + 2))
    shuffled = zg[:, perm]
    null_maps = _ridge(z[fit], shuffled[:, fit], lam)
    null = float(_relative(shuffled[:, test] - zt @ null_maps.transpose(-1, -2), shuffled[:, test]).mean())
    sv = torch.linalg.svdvals(maps)
    top = sv[:, :1].clamp_min(1e-300)
    rank = (sv > RANK_TOL * top).sum(-1)
    cond = sv[:, 0] / sv[:, -1].clamp_min(1e-300)
    level = np.clip(1.0 - eq.numpy() / null, 0.0, 1.0) if null > 0 else np.full(eq.shape, np.nan)
    return EmbeddingFit(maps, eq.numpy(), inv.numpy(), null, level, rank.numpy(), cond.numpy(), lam)


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


def embedding_equivariance(phi, x: Tensor, sym, *, seed: int = 0, fit_fraction: float = 0.5) -> tuple[EmbeddingFit, np.ndarray | None]:
    """Fit and score M_g for every element of ``sym`` on inputs x (N, ...): phi maps a batch to (N, ...)
    embeddings (flattened per sample). Returns the fit and, for groups with ``compose``, the defect."""
    with torch.no_grad():
        z = phi(x).reshape(x.shape[0], -1)
        moved = sym.act(x, sym.elements)  # (E, N, ...)
        zg = phi(moved.reshape(-1, *x.shape[1:])).reshape(moved.shape[0], x.shape[0], -1)
    fit = fit_maps(z, zg, seed=seed, fit_fraction=fit_fraction)
    try:
        defect = representation_defect(fit.maps, sym.elements.to(torch.float64), lambda a, b: sym.compose(a, b).to(torch.float64))
    except NotImplementedError:
        defect = None
    return fit, defect
