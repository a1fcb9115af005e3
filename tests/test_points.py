"""Point-cloud symmetries: Haar uniformity of so3 samples, the polyhedral grids, matrix laws, permute binding, time reversal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from eqaudit.errors import SymmetryError
from eqaudit.symmetries import parse_symmetry
from eqaudit.symmetries.points import (
    haar_quaternions,
    icosahedral_quaternions,
    octahedral_quaternions,
    quaternion_matrix,
    rotation_vectors,
)


def ks_statistic(samples: np.ndarray, cdf) -> float:
    """One-sample Kolmogorov-Smirnov statistic of ``samples`` against the distribution function ``cdf``."""
    x = np.sort(samples)
    n = len(x)
    f = cdf(x)
    return float(max((np.arange(1, n + 1) / n - f).max(), (f - np.arange(n) / n).max()))


def angle_cdf(t: np.ndarray) -> np.ndarray:
    """Distribution of the rotation angle of a Haar-random rotation: density (1 - cos t) / pi on [0, pi]."""
    return (t - np.sin(t)) / np.pi


N_HAAR = 20000
KS_CRIT = 1.63 / math.sqrt(N_HAAR)  # 1 % level


def test_haar_samples_have_the_haar_angle_and_axis_distributions():
    q = haar_quaternions(N_HAAR, seed=0)
    rv = rotation_vectors(q).numpy()
    angle = np.linalg.norm(rv, axis=1)
    assert ks_statistic(angle, angle_cdf) < KS_CRIT
    # the rotation axis is uniform on the sphere, and so is the image of any fixed vector
    axis = rv / angle[:, None]
    assert ks_statistic(axis[:, 2], lambda z: (z + 1) / 2) < KS_CRIT
    moved = (quaternion_matrix(q) @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)).numpy()
    for c in range(3):
        assert ks_statistic(moved[:, c], lambda z: (z + 1) / 2) < KS_CRIT
    # and a sampler that is uniform in the angle (a common mistake) fails the same test
    g = np.random.default_rng(0)
    assert ks_statistic(g.uniform(0, np.pi, N_HAAR), angle_cdf) > 5 * KS_CRIT


def test_haar_samples_are_seeded():
    assert torch.equal(haar_quaternions(5, 3), haar_quaternions(5, 3))
    assert not torch.equal(haar_quaternions(5, 3), haar_quaternions(5, 4))
    a, b = parse_symmetry("so3:n=5,seed=1"), parse_symmetry("so3:n=5,seed=1")
    assert torch.equal(a.elements, b.elements) and a.spec == "so3:n=5,seed=1"


@pytest.mark.parametrize("make, order", [(octahedral_quaternions, 24), (icosahedral_quaternions, 60)])
def test_polyhedral_grids_are_closed_groups_of_rotations(make, order):
    m = quaternion_matrix(make())
    assert m.shape == (order, 3, 3)
    assert_close(m @ m.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(order, 3, 3), rtol=0, atol=1e-12)
    assert_close(torch.linalg.det(m), torch.ones(order, dtype=torch.float64), rtol=0, atol=1e-12)
    flat = m.reshape(order, 9)
    products = (m.unsqueeze(1) @ m.unsqueeze(0)).reshape(-1, 9)
    dist = (products.unsqueeze(1) - flat.unsqueeze(0)).abs().amax(-1)  # (order^2, order)
    assert float(dist.min(1).values.max()) < 1e-12  # every product is in the set
    assert float((flat.unsqueeze(1) - flat.unsqueeze(0)).abs().amax(-1).add(torch.eye(order) * 9).min()) > 0.1  # distinct


def test_cube_rotations_are_exact_signed_permutations_and_leave_a_cube_invariant():
    sym = parse_symmetry("so3:n=0,grid=octahedral")
    m = sym.point_matrix(sym.elements)
    assert torch.equal(m, m.round())
    corners = torch.tensor([[a, b, c] for a in (-1.0, 1.0) for b in (-1.0, 1.0) for c in (-1.0, 1.0)], dtype=torch.float64)
    moved = sym.act(corners.unsqueeze(0), sym.elements)[:, 0]  # (24, 8, 3)
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert all(key(moved[e]) == key(corners) for e in range(24))


def test_so3_compose_is_the_matrix_product_and_inverse_the_transpose():
    sym = parse_symmetry("so3:n=30,grid=icosahedral")
    a, b = sym.elements, sym.elements.roll(7, 0)
    ma, mb = sym.point_matrix(a), sym.point_matrix(b)
    assert_close(sym.point_matrix(sym.compose(a, b)), ma @ mb, rtol=0, atol=1e-12)
    assert_close(sym.point_matrix(sym.inverse(a)), ma.transpose(1, 2), rtol=0, atol=1e-12)


def test_o3_holds_reflections_and_rotate_z_keeps_the_axis():
    o3 = parse_symmetry("o3:n=5")
    det = torch.linalg.det(o3.point_matrix(o3.elements))
    assert sorted(set(det.round().tolist())) == [-1.0, 1.0] and int((det < 0).sum()) == o3.n_elements // 2
    rz = parse_symmetry("rotate-z:step=90")
    assert [e[0] for e in rz.elements.tolist()] == [-90.0, 0.0, 90.0, 180.0]
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    moved = rz.act(x, rz.elements)
    assert_close(moved[..., 2], x[..., 2].expand(4, -1, -1), rtol=0, atol=0)
    quarter = moved[rz.elements[:, 0].tolist().index(90.0)]
    assert_close(quarter[..., 0], -x[..., 1], rtol=0, atol=0)  # x-axis -> y-axis, counter-clockwise about +z
    assert_close(quarter[..., 1], x[..., 0], rtol=0, atol=0)


def test_permute_binds_to_the_data_and_checks_fixed_sizes():
    sym = parse_symmetry("permute:n=4")
    sym.check_input((9, 3))
    assert sym.elements.shape == (5, 9)
    assert all(sorted(r) == list(range(9)) for r in sym.elements.long().tolist())
    x = torch.randn(2, 9, 3)
    moved = sym.act(x, sym.elements)
    for e, perm in enumerate(sym.elements.long()):
        assert torch.equal(moved[e], x[:, perm])
    fixed = parse_symmetry("permute:n=4,points=9")
    assert fixed.elements.shape == (5, 9)
    with pytest.raises(SymmetryError, match=r"Expected point clouds of 9 points.*got 7.*permute:points=7"):
        fixed.check_input((7, 3))
    with pytest.raises(SymmetryError, match=r"drawn for that many"):
        parse_symmetry("permute:n=2,points=4").act(torch.zeros(1, 5, 3), torch.arange(4.0).view(1, 4))


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("so3:n=0", r"Expected at least one rotation besides the identity for 'so3'"),
        ("so3:grid=cube", r"Expected one of none, octahedral, icosahedral for so3:grid"),
        ("rotate-z:step=0", r"Expected 0 < step <= 180"),
        ("translate3d:steps=4", r"Expected an odd steps >= 3"),
        ("permute:n=0", r"Expected 1 <= n"),
        ("so3:n=3*rot90", r"Expected factors acting on the same kind of input"),
    ],
)
def test_point_spec_errors(spec, pattern):
    with pytest.raises(SymmetryError, match=pattern):
        parse_symmetry(spec)


def test_points_need_point_clouds():
    with pytest.raises(SymmetryError, match=r"Expected point clouds of shape \(P, 3\)"):
        parse_symmetry("so3").check_input((1, 8, 8))
    with pytest.raises(SymmetryError, match=r"even channel count"):
        parse_symmetry("swap").check_input((3, 8, 8))


def test_swap_exchanges_frames_and_its_vectors_reverse():
    sym = parse_symmetry("swap")
    x = torch.arange(2 * 2 * 3 * 3, dtype=torch.float32).view(1, 4, 3, 3)  # C = 2 per frame
    moved = sym.act(x, sym.elements)
    assert torch.equal(moved[0], x)
    assert torch.equal(moved[1], torch.cat([x[:, 2:], x[:, :2]], 1))
    assert_close(sym.vector_matrix(sym.elements)[1], -torch.eye(2, dtype=torch.float64))


def test_tangents_of_rotations_are_derivatives_of_the_action():
    sym = parse_symmetry("so3:n=2")
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    h = 1e-6
    for name, v, unit in sym.tangents(x):
        axis = {"rx": 0, "ry": 1, "rz": 2}[name]
        q = torch.zeros(2, 4, dtype=torch.float64)
        q[:, 0] = math.cos(h / 2)
        q[0, 1 + axis], q[1, 1 + axis] = math.sin(h / 2), -math.sin(h / 2)
        moved = sym.act(x, q)
        assert unit == "rad"
        assert_close((moved[0] - moved[1]) / (2 * h), v, rtol=0, atol=1e-8)
