"""Fitted representation maps M_g (Lenc & Vedaldi): known answers for linear equivariant, permuting,
invariant and unstructured embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eqaudit.embedding import embedding_equivariance, fit_maps
from eqaudit.errors import ConfigError
from eqaudit.symmetries import parse_symmetry

S = 8


@pytest.fixture(scope="module")
def images():
    return torch.randn(80, 1, S, S, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _moments(x):
    """First and second image moments about the centre: they turn as a vector and a symmetric tensor."""
    c = torch.arange(S, dtype=torch.float64) - (S - 1) / 2
    u, v = c.view(1, -1), c.view(-1, 1)
    fields = torch.stack([u.expand(S, S), v.expand(S, S), (u * u).expand(S, S), u * v, (v * v).expand(S, S)])
    return torch.einsum("bchw,khw->bk", x, fields)


def _turned_responses(x, w):
    """<rot90^k x, w> for k = 0..3: a quarter turn of x shifts the four channels cyclically."""
    return torch.stack([(torch.rot90(x, k, dims=(-2, -1)) * w).sum((-3, -2, -1)) for k in range(4)], -1)


def test_vector_embedding_fits_at_float_noise_with_nontrivial_maps(images):
    sym = parse_symmetry("rot90")
    fit, defect = embedding_equivariance(_moments, images, sym)
    assert fit.equivariance_error.max() < 1e-6  # float noise of residuals from sums: ~sqrt(eps64)
    eye = torch.eye(5, dtype=torch.float64)
    dist = (fit.maps - eye).flatten(1).norm(dim=1)
    assert dist[sym.identity_index] < 1e-8 and bool((np.delete(dist.numpy(), sym.identity_index) > 1.0).all())
    assert fit.invariance_error[1:].min() > 0.5  # not invariant
    assert np.nanmax(defect) < 1e-8  # M_g M_h = M_gh: a representation of C4
    # the first moments turn as a vector: a quarter turn is a rotation by 90 degrees (M^2 = -1 on them)
    m1 = fit.maps[1][:2, :2]
    assert torch.allclose(m1 @ m1, -torch.eye(2, dtype=torch.float64), atol=1e-8)
    assert (fit.rank == 5).all() and fit.level.min() > 0.99


def test_channel_permutation_under_rot90(images):
    w = torch.randn(1, S, S, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fit, defect = embedding_equivariance(lambda x: _turned_responses(x, w), images, parse_symmetry("rot90"))
    assert fit.equivariance_error.max() < 1e-6 and np.nanmax(defect) < 1e-8
    m = fit.maps[1]
    assert torch.allclose(m, m.round(), atol=1e-6)  # a permutation matrix
    assert torch.equal(m.round().abs().sum(0), torch.ones(4, dtype=torch.float64)) and torch.equal(m.round().sum(1), torch.ones(4, dtype=torch.float64))
    assert not torch.equal(m.round(), torch.eye(4, dtype=torch.float64))


def test_invariant_embedding_gives_identity_maps(images):
    w = torch.randn(2, 1, S, S, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    phi = lambda x: torch.stack([_turned_responses(x, w[i]).sum(-1) for i in range(2)], -1)  # noqa: E731
    fit, _ = embedding_equivariance(phi, images, parse_symmetry("rot90"))
    assert fit.invariance_error.max() < 1e-6 and fit.equivariance_error.max() < 1e-6
    assert torch.allclose(fit.maps, torch.eye(2, dtype=torch.float64).expand(4, 2, 2), atol=1e-6)


def test_random_mlp_embedding_does_not_fit(images):
    g = torch.Generator().manual_seed(3)
    w1, w2 = torch.randn(S * S, 32, generator=g, dtype=torch.float64) / S, torch.randn(32, 6, generator=g, dtype=torch.float64)
    phi = lambda x: torch.tanh(torch.tanh(x.flatten(1) @ w1) @ w2)  # noqa: E731
    sym = parse_symmetry("rot90")
    fit, _ = embedding_equivariance(phi, images, sym)
    others = np.delete(fit.equivariance_error, sym.identity_index)
    assert fit.equivariance_error[sym.identity_index] < 1e-6  # the identity always fits (M = I)
    assert others.min() > 0.5 and fit.null > 0.8
    assert np.delete(fit.level, sym.identity_index).max() < 0.5


def test_maps_are_fitted_per_element(images):
    """The fit is per element: the same maps for rot90 and for the half turn inside rot90."""
    a, _ = embedding_equivariance(_moments, images, parse_symmetry("rot90"))
    b, _ = embedding_equivariance(_moments, images, parse_symmetry("rot180"))
    assert torch.allclose(a.maps[2], b.maps[1], atol=1e-9)


def test_bad_shapes_are_config_errors():
    with pytest.raises(ConfigError, match=r"\(N, D\).*\(E, N, D\)"):
        fit_maps(torch.zeros(10, 3), torch.zeros(2, 10, 4))
    with pytest.raises(ConfigError, match="at least 8 samples"):
        fit_maps(torch.zeros(7, 2), torch.zeros(1, 7, 2))
