"""Products of symmetries (``A*B``): the grid, the action, round trips, and which products are groups."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from eqaudit.errors import SymmetryError
from eqaudit.symmetries import parse_symmetry
from eqaudit.symmetries.product import ProductSymmetry, commute


def test_d4_times_swap_is_the_16_element_grid():
    sym = parse_symmetry("d4*swap")
    assert isinstance(sym, ProductSymmetry)
    assert sym.n_elements == 16 and sym.grid_shape == (8, 2) and sym.exact
    assert sym.param_names == ("k", "f", "s") and sym.spec == "d4*swap" and sym.name == "d4*swap"
    d4 = parse_symmetry("d4")
    # first factor outermost: element i * 2 + j is (d4 element i, swap element j)
    assert_close(sym.elements[:, :2], d4.elements.repeat_interleave(2, 0), rtol=0, atol=0)
    assert sym.elements[:, 2].tolist() == [0.0, 1.0] * 8
    assert sym.labels[3] == "r1 | swap"
    assert sym.identity_index == 0 and sym.commuting
    d = sym.describe()
    assert d["grid_shape"] == [8, 2] and [f["spec"] for f in d["factors"]] == ["d4", "swap"]


def test_product_action_is_the_factors_in_turn():
    sym = parse_symmetry("rot90*swap")
    x = torch.randn(3, 4, 6, 6)
    moved = sym.act(x, sym.elements)
    for e, (k, s) in enumerate(sym.elements.long().tolist()):
        expected = torch.rot90(torch.cat([x[:, 2:], x[:, :2]], 1) if s else x, k, dims=(-2, -1))
        assert torch.equal(moved[e], expected)


def test_layout_of_two_one_parameter_factors_is_a_grid():
    sym = parse_symmetry("rotate:step=90*scale:min=0.5,max=2,steps=3")
    assert sym.layout == "grid2d" and sym.param_names == ("angle", "log2_scale") and not sym.exact
    assert parse_symmetry("d4*swap").layout == "finite"


def test_non_commuting_product_is_an_orbit_with_exact_round_trips_but_no_group_law():
    sym = parse_symmetry("rotate:step=30*translate:max=2")
    assert not sym.commuting and sym.n_elements == 12 * 25  # angles -150..180 in steps of 30, x 25 shifts
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    el = sym.elements[[0, 40, 100]]
    rot, tr = sym.factors
    direct = rot.apply(tr.act(x, el[:, 1:]), el[:, :1])
    assert_close(sym.act(x, el), direct, rtol=0, atol=0)  # the shift acts first, then the rotation
    # round trip undoes the rotation first, then the shift: exactly x for quarter turns
    quarter = sym.elements[(sym.elements[:, 0] == 90) & (sym.elements[:, 1] == 1) & (sym.elements[:, 2] == -2)]
    assert_close(sym.round_trip(x, quarter)[0], x, rtol=0, atol=0)
    with pytest.raises(SymmetryError, match=r"Expected factors that commute"):
        sym.compose(el, el)
    with pytest.raises(SymmetryError, match=r"Expected factors that commute"):
        sym.inverse(el)


def test_commutation_table():
    p = parse_symmetry
    assert commute(p("d4"), p("swap")) and commute(p("so3"), p("permute")) and commute(p("translate3d"), p("permute"))
    assert not commute(p("rot90"), p("translate")) and not commute(p("so3"), p("translate3d"))
    assert not commute(p("flip"), p("rot90"))


def test_product_binds_permute_to_the_data():
    sym = parse_symmetry("so3:n=2*permute:n=3")
    sym.check_input((11, 3))
    assert sym.n_elements == 3 * 4 and sym.elements.shape[1] == 4 + 11
    x = torch.randn(2, 11, 3, dtype=torch.float64)
    moved = sym.act(x, sym.elements)
    assert moved.shape == (12, 2, 11, 3)


def test_three_factors_and_mask_of_a_resampled_product():
    sym = parse_symmetry("rot90*flip*swap")
    assert sym.n_elements == 16 and sym.grid_shape == (4, 2, 2)
    x = torch.randn(1, 2, 8, 8)
    assert sym.mask(x, sym.elements) is None
    zoom = parse_symmetry("scale:min=0.5,max=1,steps=2*swap")
    m = zoom.mask(x, zoom.elements)
    assert m.shape == (4, 1, 8, 8)
    shrunk = [i for i, row in enumerate(zoom.elements.tolist()) if row[0] == -1.0]
    assert all(int(m[i].sum()) == 16 for i in shrunk) and bool(m[zoom.identity_index].all())


@pytest.mark.parametrize("spec, pattern", [("d4*", r"both sides of every '\*'"), ("*swap", r"both sides"), ("d4*rot45", r"Unknown symmetry 'rot45'")])
def test_product_spec_errors(spec, pattern):
    with pytest.raises(SymmetryError, match=pattern) as err:
        parse_symmetry(spec)
    assert err.value.exit_code == 2
