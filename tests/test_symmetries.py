"""Tests of the symmetry catalogue: group laws over every entry, known answers, masks and spec parsing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from eqaudit.errors import SymmetryError
from eqaudit.symmetries import Symmetry, catalogue_entries, parse_symmetry, register
from eqaudit.symmetries.catalogue import CatalogueEntry, format_spec, get_entry

EXTRA_SPECS = [
    "translate:mode=zero",
    "translate:max=3,step=2",
    "flip:axis=v",
    "rotate:step=30",
    "rotate:step=40,min=-90,max=90",
    "scale:min=0.7,max=1.4,steps=5",
    # point clouds, two-frame inputs and products (issue 4)
    "so3:n=0,grid=octahedral",
    "so3:n=0,grid=icosahedral",
    "o3:n=3,grid=octahedral",
    "rotate-z:step=45,axis=x",
    "permute:n=5,seed=3",
    "translate3d:max=0.5,steps=5",
    "d4*swap",
    "flip:axis=v*swap",
    "rotate:step=45*swap",
    "so3:n=4*permute:n=3",
    "permute:n=2*translate3d",
    # molecules (issue 14): the Euclidean group with relabelling, and a product with it
    "e3:n=5,max=0.5,seed=2",
]
EXACT_TOL = {"image": 0.0, "points": 1e-12, "volume": 0.0}  # float64 matrix products round; pixel permutations do not
POINTS = 7
ALL_SPECS = [e.name for e in catalogue_entries()] + EXTRA_SPECS
RESAMPLED_TOL = 0.06  # bilinear + area average on the smooth test image (amplitude 1) differs by ~0.03
H = 24


def exact0(actual, expected):
    assert_close(actual, expected, rtol=0, atol=0)


def random_input(sym: Symmetry, b: int = 3) -> torch.Tensor:
    """Random float64 batch in the symmetry's domain: images (B, C, H, W), points (B, P, 3) or volumes (B, C, D, H, W)."""
    g = torch.Generator().manual_seed(0)
    if sym.domain == "image":
        return torch.randn(b, 2, H, H, dtype=torch.float64, generator=g)
    if sym.domain == "points":
        return torch.randn(b, POINTS, 3, dtype=torch.float64, generator=g)
    if sym.domain == "volume":
        return torch.randn(b, 2, 5, 5, 5, dtype=torch.float64, generator=g)
    pytest.skip(f"no sample input for domain {sym.domain!r} in this file")


def make(spec: str) -> Symmetry:
    """parse_symmetry, then bound to this file's sample shape (permute draws its permutations for P points)."""
    sym = parse_symmetry(spec)
    if sym.domain == "points":
        sym.check_input((POINTS, 3))
    return sym


def smooth_images(b: int = 2, c: int = 2, size: int = 32) -> torch.Tensor:
    """(B, C, H, W) float64 sum of low-frequency plane waves (wavelength >= 12 px), amplitude <= 1."""
    g = torch.Generator().manual_seed(1)
    i = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(i, i, indexing="ij")
    out = torch.zeros(b, c, size, size, dtype=torch.float64)
    for _ in range(4):
        kx, ky = ((torch.rand(2, generator=g, dtype=torch.float64) * 2 - 1) * 2 * math.pi / 12).tolist()
        phase = torch.rand(b, c, 1, 1, generator=g, dtype=torch.float64) * 2 * math.pi
        out += torch.cos(kx * xx + ky * yy + phase)
    return out / 4


def law_input(sym: Symmetry, b: int = 2) -> torch.Tensor:
    return smooth_images(b) if sym.domain == "image" and not sym.exact else random_input(sym, b)


def carry_mask(sym: Symmetry, m: torch.Tensor | None, elements: torch.Tensor) -> torch.Tensor | None:
    """Transport a validity mask (E, 1, H, W) through the action (the mask of content already valid)."""
    if m is None:
        return None
    moved = sym.apply(m.to(torch.float64).unsqueeze(1), elements).squeeze(1)
    return moved > 1 - 1e-9


def both(*masks):
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out


def erode(m: torch.Tensor, r: int) -> torch.Tensor:
    return -F.max_pool2d(-m.to(torch.float64), 2 * r + 1, 1, r) > 0.5


def max_diff(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor | None, erode_px: int = 0) -> float:
    """max |a - b| over (E, B, ...) inside the mask (E, 1, H, W), eroded by ``erode_px`` pixels."""
    d = (a - b).abs()
    if m is not None:
        if erode_px:
            m = erode(m, erode_px)
        assert m.any(), "the comparison region is empty"
        d = d * m.unsqueeze(1)
    return float(d.max())


# ---- catalogue-wide group laws ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_elements_labels_identity(spec):
    sym = make(spec)
    e = sym.n_elements
    assert sym.elements.dtype == torch.float64 and sym.elements.dim() == 2
    assert sym.elements.shape[1] == len(sym.param_names) == len(sym.units)
    assert len(sym.labels) == e and all(isinstance(s, str) and s for s in sym.labels)
    assert sym.layout in ("polar", "line", "grid2d", "finite", "axis-angle")
    ident = sym.elements[sym.identity_index : sym.identity_index + 1]
    # the identity row composes neutrally and is its own inverse
    assert_close(sym.compose(ident.expand(e, -1), sym.elements), sym.elements, rtol=0, atol=1e-12)
    assert_close(sym.compose(sym.elements, ident.expand(e, -1)), sym.elements, rtol=0, atol=1e-12)
    assert_close(sym.inverse(ident), ident, rtol=0, atol=0)
    assert len({tuple(r) for r in sym.elements.tolist()}) == e, "elements must be distinct"


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_identity_leaves_input_unchanged(spec):
    sym = make(spec)
    x = random_input(sym)
    ident = sym.elements[sym.identity_index : sym.identity_index + 1]
    exact0(sym.act(x, ident)[0], x)
    exact0(sym.act(x, sym.elements)[sym.identity_index], x)  # also inside a full batch
    m = sym.mask(x, ident)
    assert m is None or bool(m.all())


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_composition_law(spec):
    """act(g, act(h, x)) == act(compose(g, h), x): exactly for exact actions (inside the mask where
    content is lost), within a tolerance in the mask's interior for resampled ones."""
    sym = make(spec)
    x = law_input(sym)
    g = sym.elements
    h = g.roll(1, 0)
    gh = sym.compose(g, h)
    two = sym.apply(sym.act(x, h), g)
    one = sym.act(x, gh)
    m = both(sym.mask(x, g), carry_mask(sym, sym.mask(x, h), g), sym.mask(x, gh))
    if sym.exact:
        assert max_diff(two, one, m) <= EXACT_TOL[sym.domain]
    else:
        assert max_diff(two, one, m, erode_px=1) < RESAMPLED_TOL


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_inverse_law(spec):
    sym = make(spec)
    g = sym.elements
    e = sym.n_elements
    ident = sym.elements[sym.identity_index].expand(e, -1)
    assert_close(sym.compose(g, sym.inverse(g)), ident, rtol=0, atol=1e-9)
    assert_close(sym.compose(sym.inverse(g), g), ident, rtol=0, atol=1e-9)
    x = law_input(sym)
    back = sym.round_trip(x, g)
    ref = x.unsqueeze(0).expand_as(back)
    m_g = sym.mask(x, g)
    m = both(m_g, carry_mask(sym, m_g, sym.inverse(g)), sym.mask(x, sym.inverse(g)))
    if sym.exact:
        assert max_diff(back, ref, m) <= EXACT_TOL[sym.domain]
    else:
        assert max_diff(back, ref, m, erode_px=1) < RESAMPLED_TOL


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_batched_apply_equals_one_at_a_time(spec):
    sym = make(spec)
    x = random_input(sym)
    batched = sym.act(x, sym.elements)
    assert batched.shape == (sym.n_elements, *x.shape) and batched.dtype == x.dtype
    for e in range(sym.n_elements):  # the loop is in the test only
        assert_close(batched[e], sym.act(x, sym.elements[e : e + 1])[0], rtol=1e-12, atol=1e-12)
    # paired apply: row e of the elements acts on block e
    xs = torch.stack([x.roll(e, 0) for e in range(sym.n_elements)])
    paired = sym.apply(xs, sym.elements)
    for e in range(sym.n_elements):
        assert_close(paired[e], sym.act(x.roll(e, 0), sym.elements[e : e + 1])[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_mask_shape(spec):
    sym = make(spec)
    x = random_input(sym)
    m = sym.mask(x, sym.elements)
    if m is not None:
        assert m.shape == (sym.n_elements, 1, *x.shape[-2:]) and m.dtype == torch.bool


def test_float32_and_integer_inputs_keep_dtype():
    x = torch.rand(2, 1, 16, 16)
    for spec in ("rot90", "rotate:step=30", "scale", "translate:mode=zero"):
        sym = parse_symmetry(spec)
        assert sym.act(x, sym.elements).dtype == torch.float32
        xi = (x * 255).to(torch.uint8)
        assert sym.act(xi, sym.elements).dtype == torch.uint8


def test_cache_built_in_inference_mode_serves_autograd_later():
    sym = parse_symmetry("rotate:step=30")
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    with torch.inference_mode():
        first = sym.act(x, sym.elements)
    xr = x.clone().requires_grad_(True)
    out = sym.act(xr, sym.elements)  # reuses the index cached above
    exact0(out.detach(), first)
    out.sum().backward()
    assert xr.grad is not None and xr.grad.shape == x.shape


def test_resample_is_smooth_in_the_angle():
    """resample (no exact short-cut) is differentiable in the angle; at 0 its derivative matches the
    rotation generator: d/dt x(S_t p) = (-v d/du + u d/dv) x."""
    sym = parse_symmetry("rotate")
    size = 32
    i = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    v, u = torch.meshgrid(i, i, indexing="ij")
    k = 2 * math.pi / 16
    x = torch.sin(k * u + 0.5 * k * v).view(1, 1, size, size)
    t = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    out = sym.resample(x.unsqueeze(0), t)
    (grad,) = torch.autograd.grad(out[0, 0, 0, 16, 20], t)
    du, dv = k * math.cos(k * u[16, 20] + 0.5 * k * v[16, 20]), 0.5 * k * math.cos(k * u[16, 20] + 0.5 * k * v[16, 20])
    expected = (-v[16, 20] * du + u[16, 20] * dv) * math.pi / 180  # per degree
    assert abs(float(grad) - float(expected)) < 0.1 * abs(float(expected)) + 1e-4


# ---- known answers: exact actions ------------------------------------------------------------------------


def test_rot90_matches_torch_rot90():
    sym = parse_symmetry("rot90")
    x = random_input(sym)
    out = sym.act(x, sym.elements)
    for k in range(4):
        exact0(out[k], torch.rot90(x, k, dims=(-2, -1)))


def test_rot90_k1_is_counter_clockwise_as_displayed():
    img = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    img[0, 0, 0, 2] = 1.0  # top-right corner
    out = parse_symmetry("rot90").act(img, torch.tensor([[1.0]]))[0, 0, 0]
    assert out[0, 0] == 1.0  # moved to the top-left: counter-clockwise as displayed


def test_rotate_multiples_of_90_equal_rot90_exactly():
    rot = parse_symmetry("rotate")
    x = random_input(rot)
    out = rot.act(x, torch.tensor([[0.0], [90.0], [180.0], [-90.0], [270.0], [-180.0], [450.0]]))
    for i, k in enumerate([0, 1, 2, 3, 3, 2, 1]):
        exact0(out[i], torch.rot90(x, k, dims=(-2, -1)))
    m = rot.mask(x, torch.tensor([[90.0], [180.0]]))
    assert bool(m.all())


def test_resampled_path_agrees_with_exact_path():
    """Just off 90 degrees (resampled) must be close to exactly 90 (gather): same orientation convention."""
    rot = parse_symmetry("rotate")
    x = smooth_images()
    near = rot.act(x, torch.tensor([[90.0 + 1e-6], [-90.0 - 1e-6]]))
    exact = torch.stack([torch.rot90(x, 1, dims=(-2, -1)), torch.rot90(x, -1, dims=(-2, -1))])
    assert max_diff(near, exact, rot.mask(x, torch.tensor([[90.0 + 1e-6], [-90.0 - 1e-6]]))) < 0.02
    sc = parse_symmetry("scale")
    near1 = sc.act(x, torch.tensor([[1e-7]]))
    assert max_diff(near1, x.unsqueeze(0), sc.mask(x, torch.tensor([[1e-7]]))) < 0.02


def test_angle_grid():
    sym = parse_symmetry("rotate")
    angles = sym.elements[:, 0].tolist()
    assert angles == sorted(angles) and len(angles) == 24
    assert min(angles) > -180 and max(angles) == 180
    assert {0.0, 90.0, -90.0, 180.0} <= set(angles)
    odd = parse_symmetry("rotate:step=40").elements[:, 0].tolist()
    assert {0.0, 40.0, -40.0, 90.0, -90.0, 180.0} <= set(odd) and 120.0 in odd
    narrow = parse_symmetry("rotate:step=10,min=-30,max=30").elements[:, 0].tolist()
    assert narrow == [-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0]
    # the identity is always included, even outside [min, max]
    assert 0.0 in parse_symmetry("rotate:step=10,min=20,max=40").elements[:, 0].tolist()
    assert parse_symmetry("rotate:step=0.1,min=89,max=91").elements[:, 0].tolist().count(90.0) == 1
    # compose and inverse stay in (-180, 180]
    a = torch.tensor([[180.0], [-170.0], [90.0]], dtype=torch.float64)
    assert sym.inverse(a)[:, 0].tolist() == [180.0, 170.0, -90.0]
    assert sym.compose(a, a)[:, 0].tolist() == [0.0, 20.0, 180.0]


def test_scale_grid():
    sym = parse_symmetry("scale")
    f = torch.exp2(sym.elements[:, 0])
    assert_close(f, torch.logspace(-1, 1, 9, base=2, dtype=torch.float64))
    assert sym.elements[sym.identity_index, 0] == 0.0
    assert sym.param_names == ("log2_scale",) and sym.units == ("log2",) and sym.layout == "line"
    other = parse_symmetry("scale:min=0.7,max=1.4,steps=5")
    assert other.n_elements == 6 and 0.0 in other.elements[:, 0].tolist()


def test_d4_contains_rot90_and_flip():
    d4, rot, flip = parse_symmetry("d4"), parse_symmetry("rot90"), parse_symmetry("flip")
    x = random_input(d4)
    out = d4.act(x, d4.elements)
    exact0(out[:4], rot.act(x, rot.elements))
    exact0(out[4], flip.act(x, torch.tensor([[1.0]]))[0])
    # (k, 1) = rot90^k after the flip
    for k in range(4):
        exact0(out[4 + k], torch.rot90(torch.flip(x, dims=(-1,)), k, dims=(-2, -1)))
    assert d4.labels[:4] == ["r0", "r1", "r2", "r3"] and d4.labels[5] == "r1·f"


def test_d4_composition_table_is_a_group():
    d4 = parse_symmetry("d4")
    g = d4.elements
    a = g.repeat_interleave(8, 0)
    b = g.repeat(8, 1)
    prod = d4.compose(a, b)
    table = (prod.unsqueeze(1) == g.unsqueeze(0)).all(-1).to(torch.int64).argmax(1).view(8, 8)
    for row in table:  # Latin square: each product is an element, each row a permutation
        assert sorted(row.tolist()) == list(range(8))
    assert not torch.equal(table, table.T)  # D4 is not abelian
    # the action is a homomorphism on every pair
    x = random_input(d4, b=1)
    exact0(d4.apply(d4.act(x, b), a), d4.act(x, prod))


def test_flip_axes_and_twice_identity():
    x = random_input(parse_symmetry("flip"))
    h, v = parse_symmetry("flip:axis=h"), parse_symmetry("flip:axis=v")
    one = torch.tensor([[1.0]])
    exact0(h.act(x, one)[0], torch.flip(x, dims=(-1,)))
    exact0(v.act(x, one)[0], torch.flip(x, dims=(-2,)))
    exact0(h.apply(h.act(x, one), one)[0], x)
    assert v.labels == ["id", "flip-v"] and h.labels == ["id", "flip-h"]


def test_translate_circular_is_roll():
    sym = parse_symmetry("translate")
    x = random_input(sym)
    out = sym.act(x, sym.elements)
    for e, (dx, dy) in enumerate(sym.elements.round().to(torch.int64).tolist()):
        exact0(out[e], torch.roll(x, shifts=(dy, dx), dims=(-2, -1)))
    there = sym.act(x, torch.tensor([[2.0, -1.0]]))
    exact0(sym.apply(there, torch.tensor([[-2.0, 1.0]]))[0], x)
    assert sym.mask(x, sym.elements) is None
    assert sym.layout == "grid2d" and sym.units == ("px", "px") and sym.param_names == ("dx", "dy")
    assert sym.n_elements == 25 and sym.labels[sym.identity_index] == "dx=0 dy=0"


def test_translate_zero_fill_and_mask():
    sym = parse_symmetry("translate:mode=zero,max=3")
    x = torch.rand(2, 1, 10, 10, dtype=torch.float64) + 1.0  # strictly positive content
    el = torch.tensor([[2.0, 0.0], [-1.0, 2.0], [0.0, -3.0]])
    out = sym.act(x, el)
    m = sym.mask(x, el)
    assert m.shape == (3, 1, 10, 10)
    # dx=2: two zero columns on the left
    assert (~m[0, 0]).all(0).sum() == 2 and (~m[0, 0, :, :2]).all() and m[0, 0, :, 2:].all()
    # dx=-1, dy=2: one column on the right and two rows on top
    assert (~m[1, 0, :, -1]).all() and (~m[1, 0, :2, :]).all() and m[1, 0, 2:, :-1].all()
    assert int((~m[1]).sum()) == 10 + 2 * 10 - 2
    # dy=-3: three rows at the bottom
    assert (~m[2, 0, -3:, :]).all() and m[2, 0, :-3, :].all()
    # zero exactly where the mask says, the shifted content elsewhere
    assert bool(((out != 0) == m.unsqueeze(1)).all())
    exact0(out[0][..., 2:], x[..., :-2])


# ---- known answers: resampled actions --------------------------------------------------------------------


def _blob(size: int, cu: float, cv: float, sigma: float = 2.0) -> torch.Tensor:
    """(1, 1, S, S) gaussian centred at (cu right, cv down) pixels from the image centre."""
    i = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    v, u = torch.meshgrid(i, i, indexing="ij")
    return torch.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * sigma**2)).view(1, 1, size, size)


def _centre_of_mass(img: torch.Tensor) -> tuple[float, float]:
    size = img.shape[-1]
    i = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    v, u = torch.meshgrid(i, i, indexing="ij")
    total = img.sum()
    return float((img * u).sum() / total), float((img * v).sum() / total)


@pytest.mark.parametrize("angle", [30.0, -45.0, 120.0])
def test_rotate_moves_centre_of_mass_counter_clockwise(angle):
    rot = parse_symmetry("rotate")
    x = _blob(33, 7.0, 0.0)  # to the right of the centre
    out = rot.act(x, torch.tensor([[angle]]))[0, 0, 0]
    u, v = _centre_of_mass(out)
    t = math.radians(angle)
    # counter-clockwise as displayed, rows down: right of centre moves up for positive angles
    assert abs(u - 7 * math.cos(t)) < 0.05 and abs(v + 7 * math.sin(t)) < 0.05
    assert abs(out.sum() - x.sum()) / x.sum() < 1e-3  # no mass lost: the blob stays in the frame


def test_rotate_matches_analytic_rotation_of_a_plane_wave():
    """Known answer: cos(k . p) rotated by t is cos((R k) . p); compare inside the mask."""
    size, kx, ky = 32, 2 * math.pi / 14, 2 * math.pi / 20
    i = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    v, u = torch.meshgrid(i, i, indexing="ij")
    x = torch.cos(kx * u + ky * v).view(1, 1, size, size)
    rot = parse_symmetry("rotate")
    el = torch.tensor([[30.0]])
    out = rot.act(x, el)[0, 0, 0]
    t = math.radians(30.0)
    # output(p) = input(S p) with S (u, v) = (c u - s v, s u + c v)
    su, sv = math.cos(t) * u - math.sin(t) * v, math.sin(t) * u + math.cos(t) * v
    expected = torch.cos(kx * su + ky * sv)
    m = rot.mask(x, el)[0, 0]
    assert 0.5 < m.to(torch.float64).mean() < 1.0
    assert float(((out - expected).abs() * m).max()) < 0.05
    assert float(((out - expected).abs() * m).max()) > 0  # it did resample
    assert float((out * ~m).abs().max()) < 1.0  # the corners fade into the zero padding


def test_scale_zooms_about_the_centre():
    sc = parse_symmetry("scale")
    x = _blob(33, 4.0, -2.0, sigma=1.5)
    out = sc.act(x, torch.tensor([[1.0], [-1.0]]))  # x2 and x0.5
    u, v = _centre_of_mass(out[0, 0, 0])
    assert abs(u - 8.0) < 0.1 and abs(v + 4.0) < 0.1
    u, v = _centre_of_mass(out[1, 0, 0])
    assert abs(u - 2.0) < 0.1 and abs(v + 1.0) < 0.1
    # area: the total mass scales with the zoom squared
    assert abs(float(out[0].sum() / x.sum()) - 4.0) < 0.05
    assert abs(float(out[1].sum() / x.sum()) - 0.25) < 0.01


def test_resampled_mask_marks_out_of_frame_pixels():
    rot = parse_symmetry("rotate")
    x = torch.ones(1, 1, 32, 32, dtype=torch.float64)
    el = torch.tensor([[45.0]])
    out, m = rot.act(x, el)[0, 0, 0], rot.mask(x, el)[0, 0]
    assert not m[0, 0] and not m[-1, -1] and m[16, 16]  # corners come from outside the frame
    assert_close(out[m], torch.ones_like(out[m]))  # inside: exactly the constant, no padding blended in
    assert out[~m].max() < 1.0
    sc = parse_symmetry("scale")
    ms = sc.mask(x, torch.tensor([[-1.0], [1.0]]))
    assert int(ms[0].sum()) == 16 * 16 and bool(ms[1].all())  # x0.5 fills the middle 16x16 only


def test_vector_matrix_matches_the_pixel_action():
    """For linear actions, M maps each pixel's source coordinates back to its own: M S(p) = p."""
    size = 5
    i = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    v, u = torch.meshgrid(i, i, indexing="ij")
    coords = torch.stack([u, v]).unsqueeze(0)  # (1, 2, H, W): channel 0 = u (right), 1 = v (down)
    for spec in ("rot90", "flip", "flip:axis=v", "d4"):
        sym = parse_symmetry(spec)
        src = sym.act(coords, sym.elements)[:, 0]  # (E, 2, H, W): source coordinates S(p)
        mapped = torch.einsum("eij,ejhw->eihw", sym.vector_matrix(sym.elements), src)
        exact0(mapped, coords.expand_as(mapped))
    rot = parse_symmetry("rotate")
    assert_close(rot.vector_matrix(torch.tensor([[90.0]])), torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]], dtype=torch.float64))
    assert_close(
        parse_symmetry("scale").vector_matrix(torch.tensor([[1.0]])), 2 * torch.eye(2, dtype=torch.float64).unsqueeze(0)
    )


# ---- input checks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, kept, labels",
    [("rot90", [[0.0], [2.0]], ["0°", "180°"]), ("d4", [[0, 0], [2, 0], [0, 1], [2, 1]], ["r0", "r2", "r0·f", "r2·f"])],
)
def test_non_square_images_bind_the_shape_keeping_subgroup(spec, kept, labels):
    """rot90 and d4 on H != W run on the subgroup that keeps the shape, with a note; square images
    get the whole group back (check_input rebinds from the constructed elements every time)."""
    sym = parse_symmetry(spec)
    full = sym.elements.clone()
    sym.check_input((3, 16, 20))
    assert sym.spec == spec and sym.name == spec
    assert sym.elements.tolist() == kept and sym.labels == labels
    assert sym.identity_index == 0 and sym.describe()["identity_index"] == 0
    assert len(sym.notes) == 1 and "16x20" in sym.notes[0] and "subgroup" in sym.notes[0]
    assert sym.describe()["notes"] == sym.notes
    sym.check_input((3, 16, 16))
    assert torch.equal(sym.elements, full) and sym.notes == []


RECT = (2, 3, 6, 10)  # (B, C, H, W), H != W


def _laws_exact(sym: Symmetry, x: torch.Tensor) -> None:
    """Identity, inverse and composition laws, bit-exact, for an exact symmetry bound to x's shape."""
    g = sym.elements
    e = sym.n_elements
    ident = g[sym.identity_index].expand(e, -1)
    exact0(sym.act(x, g)[sym.identity_index], x)
    exact0(sym.compose(g, sym.inverse(g)), ident)
    exact0(sym.round_trip(x, g), x.unsqueeze(0).expand(e, *x.shape))
    for shift in range(e):  # every pair (g_i, g_{i+shift})
        h = g.roll(shift, 0)
        exact0(sym.apply(sym.act(x, h), g), sym.act(x, sym.compose(g, h)))


@pytest.mark.parametrize("spec", ["rot180", "rot90", "d4"])
def test_group_laws_on_rectangular_images(spec):
    x = torch.randn(*RECT, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sym = parse_symmetry(spec)
    sym.check_input(RECT[1:])
    _laws_exact(sym, x)
    # the subgroup is closed: every product is one of its elements
    rows = {tuple(r) for r in sym.elements.tolist()}
    g = sym.elements
    for shift in range(sym.n_elements):
        assert {tuple(r) for r in sym.compose(g, g.roll(shift, 0)).tolist()} <= rows


def test_rot180_matches_torch_on_any_shape_and_turns_vectors_by_minus_identity():
    sym = parse_symmetry("rot180")
    assert sym.labels == ["0°", "180°"] and sym.identity_index == 0 and sym.exact
    for shape in [(2, 3, 6, 10), (1, 1, 7, 5), (2, 2, 8, 8)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        sym.check_input(shape[1:])
        exact0(sym.act(x, sym.elements)[1], torch.rot90(x, 2, dims=(-2, -1)))
        exact0(sym.act(x, sym.elements)[0], x)
    assert sym.notes == []
    exact0(sym.vector_matrix(sym.elements)[1], -torch.eye(2, dtype=torch.float64))
    exact0(sym.compose(sym.elements[1:], sym.elements[1:]), sym.elements[:1])


def test_rot90_and_d4_subgroups_are_bit_identical_to_torch_references():
    x = torch.randn(*RECT, generator=torch.Generator().manual_seed(4))
    rot = parse_symmetry("rot90")
    rot.check_input(RECT[1:])
    out = rot.act(x, rot.elements)
    exact0(out[1], torch.rot90(x, 2, dims=(-2, -1)))
    d4 = parse_symmetry("d4")
    d4.check_input(RECT[1:])
    out = d4.act(x, d4.elements)
    refs = [x, torch.rot90(x, 2, dims=(-2, -1)), torch.flip(x, dims=(-1,)), torch.flip(x, dims=(-2,))]
    for e, ref in enumerate(refs):
        exact0(out[e], ref)
    # the mirrors turn displacements like the full group's do
    exact0(d4.vector_matrix(d4.elements)[3], torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64))


def test_rotate_on_rectangular_images_resamples_the_quarter_turns_with_a_correct_mask():
    """On H != W the ±90° rows are resampled (no exact permutation exists); their mask covers the
    overlap of the turned frame, and the round trip is close to the input inside it."""
    size = (1, 1, 12, 20)
    sym = parse_symmetry("rotate:step=90")
    sym.check_input(size[1:])
    assert any("quarter turns" in n for n in sym.notes)
    x = smooth_images(1, 1, 32)[..., 2:14, 6:26]  # smooth content, 12 x 20
    angles = sym.elements[:, 0].tolist()
    out = sym.act(x, sym.elements)
    m = sym.mask(x, sym.elements)
    i90, i180 = angles.index(90.0), angles.index(180.0)
    exact0(out[i180], torch.rot90(x, 2, dims=(-2, -1)))  # the half turn stays exact
    assert bool(m[i180].all()) and bool(m[sym.identity_index].all())
    # the quarter turn keeps the rows of the centred 12 x 12 square (columns 4..15), masks the rest
    mq = m[i90, 0]
    assert bool(mq[:, :3].any()) is False and bool(mq[:, 17:].any()) is False
    assert bool(mq[1:-1, 5:15].all())
    # inside the mask it is the exact quarter turn of the central square (smooth content: close)
    centre = x[..., :, 4:16]
    ref = torch.rot90(centre, 1, dims=(-2, -1))
    assert max_diff(out[i90][..., 4:16].unsqueeze(0), ref.unsqueeze(0), mq[:, 4:16].view(1, 1, 12, 12), erode_px=1) < RESAMPLED_TOL
    # round trip (the floor's input) is close to x where it stayed valid
    back = sym.round_trip(x, sym.elements)
    mb = both(m, carry_mask(sym, m, sym.inverse(sym.elements)), sym.mask(x, sym.inverse(sym.elements)))
    assert max_diff(back, x.unsqueeze(0).expand_as(back), mb, erode_px=1) < RESAMPLED_TOL
    sym.check_input((1, 12, 12))
    assert sym.notes == []


SIGNAL = (2, 3, 1, 16)  # (B, C, 1, L): 1-D signals as one-row images


@pytest.mark.parametrize("spec", ["flip", "translate:max=3", "translate:max=4,mode=zero", "translate:axis=x,max=2"])
def test_group_laws_on_signals(spec):
    x = torch.randn(*SIGNAL, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    sym = parse_symmetry(spec)
    sym.check_input(SIGNAL[1:])
    g = sym.elements
    assert bool((g[:, 1] == 0).all()) if sym.name == "translate" else True  # shifts along the signal only
    if sym.name == "translate" and sym.mode == "zero":
        m = sym.mask(x, g)
        back = sym.round_trip(x, g)
        mb = both(m, carry_mask(sym, m, sym.inverse(g)), sym.mask(x, sym.inverse(g)))
        assert max_diff(back, x.unsqueeze(0).expand_as(back), mb) == 0
        for shift in range(sym.n_elements):
            h = g.roll(shift, 0)
            mm = both(sym.mask(x, g), carry_mask(sym, sym.mask(x, h), g), sym.mask(x, sym.compose(g, h)))
            assert max_diff(sym.apply(sym.act(x, h), g), sym.act(x, sym.compose(g, h)), mm) == 0
    else:
        _laws_exact(sym, x)


def test_signal_actions_match_torch_references():
    x = torch.randn(*SIGNAL, generator=torch.Generator().manual_seed(6))
    flip = parse_symmetry("flip")
    flip.check_input(SIGNAL[1:])
    exact0(flip.act(x, flip.elements)[1], torch.flip(x, dims=(-1,)))  # time reversal
    tr = parse_symmetry("translate:max=3")
    tr.check_input(SIGNAL[1:])
    assert tr.layout == "line" and tr.labels[tr.identity_index] == "dx=0" and tr.n_elements == 7
    for e, (dx, dy) in enumerate(tr.elements.tolist()):
        assert dy == 0
        exact0(tr.act(x, tr.elements)[e], torch.roll(x, int(dx), dims=-1))
    assert [t[0] for t in tr.tangents(x.double())] == ["dx"]
    tr.check_input((3, 8, 8))  # an image again: the 2-D grid comes back
    assert tr.n_elements == 49 and tr.layout == "grid2d"


def test_scale_on_signals_is_a_pure_time_stretch():
    """H == 1: the sampling row stays on the signal, so a constant signal stays constant where valid
    (nothing blended with padding above or below) and the round trip of a smooth signal is close."""
    sym = parse_symmetry("scale:min=0.5,max=2,steps=5")
    sym.check_input((1, 1, 64))
    ones = torch.ones(1, 1, 1, 64, dtype=torch.float64)
    out = sym.act(ones, sym.elements)
    m = sym.mask(ones, sym.elements)
    assert bool(m.any(dim=-1).all())
    assert max_diff(out, torch.ones_like(out), m) < 1e-12
    t = torch.linspace(0, 2 * math.pi, 64, dtype=torch.float64)
    x = (torch.sin(t) + 0.5 * torch.cos(2 * t)).view(1, 1, 1, 64)
    back = sym.round_trip(x, sym.elements)
    mb = both(m, carry_mask(sym, m, sym.inverse(sym.elements)), sym.mask(x, sym.inverse(sym.elements)))
    assert max_diff(back, x.unsqueeze(0).expand_as(back), mb, erode_px=1) < 0.05
    # zoom 2 about the centre: out[j] = x at (j - c) / 2 + c, c = 31.5 (linear content: exact interpolation)
    ramp = torch.arange(64, dtype=torch.float64).view(1, 1, 1, 64)
    z2 = sym.act(ramp, torch.tensor([[1.0]], dtype=torch.float64))[0, 0, 0, 0]
    j = torch.arange(20, 44, dtype=torch.float64)
    assert_close(z2[20:44], (j - 31.5) / 2 + 31.5, rtol=0, atol=1e-9)


@pytest.mark.parametrize("spec", ["rot90", "rot180", "d4", "rotate", "flip:axis=v"])
def test_two_dimensional_actions_refuse_signals(spec):
    sym = parse_symmetry(spec)
    with pytest.raises(SymmetryError, match=r"acts on 2-D images; on 1-D signals use translate, flip or scale") as err:
        sym.check_input((3, 1, 16))
    assert err.value.exit_code == 2


def test_translate_checks_max_against_the_axis_it_shifts():
    parse_symmetry("translate:axis=x,max=20").check_input((1, 6, 24))
    with pytest.raises(SymmetryError, match=r"along y \(height H=6\).*max=20.*6x24.*max <= 5"):
        parse_symmetry("translate:axis=y,max=20").check_input((1, 6, 24))
    with pytest.raises(SymmetryError, match=r"H=6"):
        parse_symmetry("translate:max=20").check_input((1, 6, 24))
    parse_symmetry("translate:axis=y,max=5").check_input((1, 6, 24))
    with pytest.raises(SymmetryError, match=r"along x \(width W=6\)"):
        parse_symmetry("translate:axis=x,max=6").check_input((1, 24, 6))
    # a 1-D signal: the default axis shifts the signal; max is checked against L, not the single row
    parse_symmetry("translate:max=60").check_input((1, 1, 512))
    with pytest.raises(SymmetryError, match=r"1-D signal.*do use translate or translate:axis=x"):
        parse_symmetry("translate:axis=y").check_input((1, 1, 512))


def test_check_input_rank_and_shift_size():
    for spec in ("flip", "translate", "scale"):
        parse_symmetry(spec).check_input((1, 16, 20))
        with pytest.raises(SymmetryError, match=r"Expected images of shape \(C, H, W\).*got.*\(784,\).*--input-shape"):
            parse_symmetry(spec).check_input((784,))
    with pytest.raises(SymmetryError, match=r"translate max below the image size.*max=8.*8x8"):
        parse_symmetry("translate:max=8").check_input((1, 8, 8))


# ---- spec parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, canonical",
    [
        ("rot90", "rot90"),
        ("  ROT90  ", "rot90"),
        ("rot90:", "rot90"),
        ("flip", "flip"),
        ("flip:axis=h", "flip"),
        ("flip:axis=V", "flip:axis=v"),
        ("d4", "d4"),
        ("translate:max=4,mode=circular", "translate:max=4"),
        ("translate: mode = zero , max = 3", "translate:max=3,mode=zero"),
        ("translate:max=4.0,step=2", "translate:max=4,step=2"),
        ("rotate:step=15", "rotate"),
        ("rotate:step=30", "rotate:step=30"),
        (" rotate : max = 90 , step = 7.5 ", "rotate:step=7.5,max=90"),
        ("scale:min=0.5,max=2,steps=9", "scale"),
        ("scale:steps=5,min=0.7,max=1.4", "scale:min=0.7,max=1.4,steps=5"),
    ],
)
def test_spec_round_trip(spec, canonical):
    sym = parse_symmetry(spec)
    assert sym.spec == canonical
    again = parse_symmetry(sym.spec)
    assert again.spec == canonical
    assert torch.equal(again.elements, sym.elements)
    assert sym.describe()["spec"] == canonical and sym.describe()["name"] == sym.name


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("rot45", r"Unknown symmetry 'rot45'.*rot90, rot90-3d, rotate.*Did you mean 'rot90'"),
        ("rotat:step=5", r"Unknown symmetry 'rotat'.*Did you mean 'rotate'"),
        ("", r"Expected a symmetry spec"),
        (":step=3", r"Expected a symmetry name"),
        ("rotate:stepp=5", r"Unknown parameter 'stepp' for symmetry 'rotate': expected one of step, min, max.*Did you mean 'step'"),
        ("rot90:k=1", r"Unknown parameter 'k'.*'rot90' takes no parameters"),
        ("rotate:step", r"Expected key=value.*got 'step'"),
        ("rotate:step=5,step=6", r"Expected each parameter once.*'step' twice"),
        ("translate:max=2.5", r"Expected an integer for translate:max, got '2.5', do write e.g. translate:max=2"),
        ("translate:max=two", r"Expected an integer for translate:max"),
        ("translate:mode=wrap", r"Expected one of circular, zero for translate:mode, got 'wrap', do"),
        ("translate:step=0", r"Expected max >= step >= 1|Expected step >= 1.*got step=0, do"),
        ("translate:max=1,step=2", r"Expected max >= step >= 1.*got max=1, step=2, do"),
        ("rotate:step=-15", r"Expected step > 0 for 'rotate', got step=-15, do"),
        ("rotate:step=nan", r"Expected a finite number for rotate:step"),
        ("rotate:min=90,max=-90", r"Expected min <= max for 'rotate', got min=90, max=-90, do"),
        ("scale:min=0", r"Expected min > 0 for 'scale', got min=0, do"),
        ("scale:min=2,max=1", r"Expected min <= max for 'scale'"),
        ("scale:steps=0", r"Expected 1 <= steps"),
        ("flip:axis=x", r"Expected one of h, v for flip:axis, got 'x', do write e.g. flip:axis=h"),
        ("rotate:step=0.00001", r"Expected at most 100000 angles"),
    ],
)
def test_spec_errors(spec, pattern):
    with pytest.raises(SymmetryError, match=pattern) as err:
        parse_symmetry(spec)
    assert err.value.exit_code == 2


def test_direct_construction_is_validated_too():
    from eqaudit.symmetries import Rotate, Translate

    assert Rotate(step=30).spec == "rotate:step=30"
    with pytest.raises(SymmetryError, match="Expected an integer"):
        Translate(max="x")


# ---- the registry ----------------------------------------------------------------------------------------


def test_catalogue_entries_describe_every_image_symmetry():
    entries = {e.name: e for e in catalogue_entries()}
    assert {"rot90", "flip", "d4", "translate", "rotate", "scale"} <= set(entries)
    for name in ("rot90", "flip", "d4", "translate", "rotate", "scale"):
        e = entries[name]
        assert e.domain == "image" and e.description
        sym = parse_symmetry(name)
        assert sym.exact == e.exact and sym.name == name and sym.domain == e.domain
        d = e.to_dict()
        assert d["name"] == name and all(p["help"] for p in d["params"])
    assert not entries["rotate"].exact and not entries["scale"].exact and entries["translate"].exact
    assert [p.name for p in entries["translate"].params] == ["max", "step", "mode", "axis"]
    assert entries["translate"].defaults() == {"max": 2, "step": 1, "mode": "circular", "axis": "both"}
    assert entries["flip"].to_dict()["params"][0]["choices"] == ["h", "v"]


def test_register_adds_entries_without_touching_the_parser():
    flip = get_entry("flip")
    entry = register(
        name="test-mirror",
        factory=lambda axis: parse_symmetry(f"flip:axis={axis}"),
        description="a test alias of flip",
        params=flip.params,
        exact=True,
        domain="image",
    )
    try:
        assert isinstance(entry, CatalogueEntry)
        assert parse_symmetry("test-mirror:axis=v").spec == "flip:axis=v"
        assert "test-mirror" in [e.name for e in catalogue_entries()]
        with pytest.raises(ValueError, match="already registered"):
            register(name="test-mirror", factory=lambda: None, description="", params=(), exact=True, domain="image")
    finally:
        from eqaudit.symmetries import catalogue

        catalogue._REGISTRY.pop("test-mirror", None)
    assert format_spec("x", flip.params, {"axis": "v"}) == "x:axis=v"


def test_run_seed_reaches_sampled_symmetries_unless_the_spec_sets_one():
    a, b, c = (parse_symmetry("so3:n=4", seed=s) for s in (3, 3, 4))
    assert torch.equal(a.elements, b.elements) and not torch.equal(a.elements, c.elements)
    assert a.spec == "so3:n=4,seed=3"
    assert parse_symmetry("so3:n=4,seed=9", seed=3).spec == "so3:n=4,seed=9"
    assert parse_symmetry("rot90", seed=5).spec == "rot90"  # no seed parameter: untouched
    prod = parse_symmetry("so3:n=2*permute:n=3", seed=7)
    assert "seed=7" in prod.spec


def test_channels_last_images_get_a_transpose_hint():
    with pytest.raises(SymmetryError, match="channels-last.*--layout NHWC"):
        parse_symmetry("rot90").check_input((32, 32, 3))
    parse_symmetry("rot90").check_input((3, 32, 32))  # (C, H, W) passes
