"""Known answers for the equivariant tasks (dense, vector-field, points, boxes), the references, and the output actions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from typer.testing import CliRunner

import toy_domains
from conftest import dfactory, scan_specs, TESTS, factory, smooth_images
from eqaudit import sweep as sweep_module
from eqaudit.api import scan
from eqaudit.cli import app
from eqaudit.errors import ConfigError, SymmetryError
from eqaudit.symmetries import parse_symmetry
from eqaudit.symmetries.outputs import box_action, field_action, map_action, map_mask, vector_matrix




@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """State dicts of the toy domain models and small datasets (images, two-frame pairs, clouds, canvases)."""
    d = tmp_path_factory.mktemp("domains")
    out = {}
    for name in ["CircularConv", "AsymmetricConv", "PooledConv", "Gradient", "SwappedGradient", "FrameDiffGradient",
                 "FrameSumGradient", "Centre", "Anisotropic", "MeanVector", "DistanceClassifier", "TinyPointNet",
                 "BoxFinder", "MirrorBoxFinder"]:
        path = d / f"{name}.pt"
        torch.save(getattr(toy_domains, name)().state_dict(), path)
        out[name] = path
    out["images"] = d / "images.npz"
    np.savez(out["images"], x=smooth_images(6, seed=2, size=16))  # no labels
    out["pairs"] = d / "pairs.npz"
    np.savez(out["pairs"], x=smooth_images(5, seed=3, size=16, channels=2))
    g = np.random.default_rng(0)
    clouds = g.normal(size=(6, 20, 3)) * np.array([1.0, 0.6, 0.3])
    out["clouds"] = d / "clouds.npz"
    np.savez(out["clouds"], x=clouds.astype(np.float64), y=np.arange(6) % 4)
    canv = np.zeros((6, 1, 20, 20), dtype=np.float32)
    for i in range(6):  # one rectangle per canvas, at least 4 px from the border
        y0, x0 = g.integers(4, 8, 2)
        canv[i, 0, y0 : y0 + 3 + i % 4, x0 : x0 + 6 - i % 3] = 1.0
    out["canvas"] = d / "canvas.npz"
    np.savez(out["canvas"], x=canv, y=np.zeros(6, dtype=np.int64))
    return out


run = scan_specs


# ---- dense ------------------------------------------------------------------------------------------------


def test_symmetric_circular_conv_is_d4_and_shift_equivariant(files, tmp_path):
    res = run(files, tmp_path, "CircularConv", "images", ["d4", "translate:max=3", "rot90*translate:max=1"], "dense")
    for spec, s in res.items():
        assert s.task == "dense" and s.reference == "identity"
        assert s.summary["equivariance_error"] < 1e-5, spec
        assert s.summary["max_abs_error"] < 1e-5, spec
        assert s.summary["pixel_flip_rate"] < 1e-3 and s.summary["mean_iou"] > 0.999, spec
        assert s.summary["floor"] < 1e-6


def test_asymmetric_kernel_is_flagged_under_d4_but_not_under_shifts(files, tmp_path):
    res = run(files, tmp_path, "AsymmetricConv", "images", ["d4", "translate:max=3"], "dense")
    assert res["d4"].summary["equivariance_error"] > 0.05
    assert res["d4"].summary["pixel_flip_rate"] > 0.05
    ident = res["d4"].per_element[res["d4"].identity_index]
    assert ident["equivariance_error"] < 1e-6  # the identity element reads 0
    assert res["translate:max=3"].summary["equivariance_error"] < 1e-5  # still a convolution


def test_dense_outputs_at_half_resolution_scale_shifts(files, tmp_path):
    res = run(files, tmp_path, "PooledConv", "images", ["translate:max=4,step=2", "d4"], "dense")
    assert res["translate:max=4,step=2"].summary["equivariance_error"] < 1e-5
    assert res["d4"].summary["equivariance_error"] < 1e-5
    with pytest.raises(SymmetryError, match=r"whole pixels at the output resolution.*translate:step=2"):
        run(files, tmp_path, "PooledConv", "images", ["translate:max=1"], "dense")


def test_zero_fill_shift_is_compared_inside_the_mask_only(files, tmp_path):
    """Known answer: the per-element error equals a direct masked computation (and not the unmasked one)."""
    s = run(files, tmp_path, "CircularConv", "images", ["translate:mode=zero"], "dense")["translate:mode=zero"]
    x = torch.from_numpy(np.load(files["images"])["x"])
    model = toy_domains.CircularConv()
    e = [tuple(r) for r in s.elements].index((2.0, 1.0))
    with torch.no_grad():
        moved_x = torch.zeros_like(x)
        moved_x[..., 1:, 2:] = x[..., :-1, :-2]
        out, ref = model(moved_x).double(), model(x).double()
    target = torch.zeros_like(ref)
    target[..., 1:, 2:] = ref[..., :-1, :-2]
    m = torch.zeros_like(ref, dtype=torch.bool)
    m[..., 1:, 2:] = True

    def rel(a, b):
        return ((a - b).flatten(1).norm(dim=1) / (a.flatten(1).norm(dim=1) + b.flatten(1).norm(dim=1))).mean().item()

    masked, unmasked = rel(out * m, target * m), rel(out, target)
    assert s.per_element[e]["equivariance_error"] == pytest.approx(masked, rel=1e-5)
    assert unmasked > masked * 1.5 and masked > 1e-3
    assert s.per_element[s.identity_index]["equivariance_error"] < 1e-7


# ---- vector fields ----------------------------------------------------------------------------------------


def test_gradient_is_equivariant_only_with_vectors_rotated(files, tmp_path):
    res = run(files, tmp_path, "Gradient", "images", ["d4", "rot90", "flip:axis=v", "translate:max=2"], "vector-field")
    for spec, s in res.items():
        assert s.summary["equivariance_error"] < 1e-6, spec
        assert s.summary["epe"] < 1e-6, spec
    # the same fields audited as plain maps (vectors not rotated) break under rot90
    plain = run(files, tmp_path, "Gradient", "images", ["rot90"], "dense")
    assert plain["rot90"].summary["equivariance_error"] > 0.3


def test_gradient_with_u_and_v_swapped_is_flagged(files, tmp_path):
    res = run(files, tmp_path, "SwappedGradient", "images", ["d4", "rot90", "translate"], "vector-field")
    assert res["d4"].summary["equivariance_error"] > 0.3
    assert res["rot90"].summary["equivariance_error"] > 0.3
    assert res["rot90"].summary["epe"] > 1e-3
    assert res["translate"].summary["equivariance_error"] < 1e-6  # shifts do not turn vectors


def test_two_frame_flow_with_d4_times_swap(files, tmp_path):
    good = run(files, tmp_path, "FrameDiffGradient", "pairs", ["d4*swap", "swap"], "vector-field")
    assert good["d4*swap"].summary["equivariance_error"] < 1e-6
    assert len(good["d4*swap"].elements) == 16
    bad = run(files, tmp_path, "FrameSumGradient", "pairs", ["d4*swap", "swap"], "vector-field")
    s = bad["d4*swap"]
    # exactly the 8 elements that swap the frames are wrong: frame sums do not reverse in time
    swapped = [row["equivariance_error"] > 0.9 for row in s.per_element]
    assert swapped == [lab.endswith("swap") for lab in s.labels]
    assert bad["swap"].summary["equivariance_error"] > 0.9


def test_rotate_on_vector_fields_measures_a_floor(files, tmp_path):
    res = run(files, tmp_path, "Gradient", "images", ["rotate:step=45"], "vector-field")["rotate:step=45"]
    angles = [e[0] for e in res.elements]
    for a in (90.0, 180.0, -90.0):
        assert res.per_element[angles.index(a)]["equivariance_error"] < 1e-6
    assert res.per_element[angles.index(45.0)]["floor"] > 1e-4


# ---- points -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["so3:n=16,grid=octahedral", "o3:n=8", "permute:n=6", "rotate-z:step=30", "so3:n=4*permute:n=3"])
def test_centring_is_equivariant(files, tmp_path, spec):
    s = run(files, tmp_path, "Centre", "clouds", [spec], "points")[spec]
    # data are read as float32, so float32 rounding (the mean over points summed in another order) is the floor
    assert s.summary["equivariance_error"] < 1e-6 and s.summary["max_abs_error"] < 1e-5


def test_anisotropic_map_is_flagged_under_rotations_only(files, tmp_path):
    res = run(files, tmp_path, "Anisotropic", "clouds", ["so3:n=16", "permute:n=6"], "points")
    assert res["so3:n=16"].summary["equivariance_error"] > 0.05
    assert res["permute:n=6"].summary["equivariance_error"] < 1e-6


def test_one_vector_per_cloud(files, tmp_path):
    res = run(files, tmp_path, "MeanVector", "clouds", ["so3:n=8", "permute:n=4", "translate3d"], "points")
    assert res["so3:n=8"].summary["equivariance_error"] < 1e-6
    assert res["permute:n=4"].summary["equivariance_error"] < 1e-6
    # outputs are vectors: shifting the cloud moves its mean, which the vector action does not follow
    assert res["translate3d"].summary["equivariance_error"] > 0.05


def test_distance_classifier_is_invariant_and_pointnet_is_not(files, tmp_path):
    dist = run(files, tmp_path, "DistanceClassifier", "clouds", ["so3:n=16", "permute:n=6"], "classify")
    assert dist["so3:n=16"].summary["prob_tv"] < 1e-6 and dist["so3:n=16"].summary["flip_rate"] == 0
    assert dist["permute:n=6"].summary["prob_tv"] < 1e-6
    pn = run(files, tmp_path, "TinyPointNet", "clouds", ["so3:n=16", "permute:n=6"], "classify")
    assert pn["so3:n=16"].summary["prob_tv"] > 0.02
    assert pn["permute:n=6"].summary["prob_tv"] < 1e-6


# ---- boxes ------------------------------------------------------------------------------------------------


def test_box_finder_moves_with_shifts_flips_and_quarter_turns(files, tmp_path):
    res = run(files, tmp_path, "BoxFinder", "canvas", ["translate:max=3,mode=zero", "flip", "rot90"], "boxes")
    for spec, s in res.items():
        assert s.summary["iou"] == pytest.approx(1.0, abs=1e-9), spec
        assert s.summary["box_error"] < 1e-9 and s.summary["center_error"] < 1e-9, spec
    assert res["flip"].summary["flip_rate"] == 0
    assert res["rot90"].summary["flip_rate"] > 0  # tall <-> wide: the class is not rot90-invariant
    assert 0.5 < res["flip"].summary["confidence"] <= 1.0
    mirror = run(files, tmp_path, "MirrorBoxFinder", "canvas", ["translate:max=3,mode=zero"], "boxes")
    assert mirror["translate:max=3,mode=zero"].summary["iou"] < 0.8


# ---- references -------------------------------------------------------------------------------------------


def test_consensus_equals_identity_for_an_exactly_invariant_model(files, tmp_path, model_files, data_npz):
    kw = dict(data=str(data_npz), symmetry=["rot90", "rotate:step=90"], model_factory=factory("Rot90Averaged"),
              out=str(tmp_path / "o"), device="cpu")
    ident = scan(model_files["Rot90Averaged"], **kw)
    cons = scan(model_files["Rot90Averaged"], reference="consensus", **kw)
    for a, b in zip(ident.symmetries, cons.symmetries):
        assert b.reference == "consensus" and a.reference == "identity"
        for key in ("prob_tv", "flip_rate", "accuracy", "worst_case_accuracy"):
            assert a.summary[key] == pytest.approx(b.summary[key], abs=1e-6), key
    # equivariant outputs too: the symmetric convolution's consensus is its own output
    dense_i = run(files, tmp_path, "CircularConv", "images", ["d4"], "dense")["d4"]
    dense_c = run(files, tmp_path, "CircularConv", "images", ["d4"], "dense", reference="consensus")["d4"]
    assert dense_c.summary["equivariance_error"] == pytest.approx(dense_i.summary["equivariance_error"], abs=1e-6)
    assert dense_c.summary["equivariance_error"] < 1e-5


def test_consensus_differs_from_identity_and_does_not_depend_on_chunking(files, tmp_path, monkeypatch):
    base = run(files, tmp_path, "AsymmetricConv", "images", ["d4"], "dense")["d4"]
    cons = run(files, tmp_path, "AsymmetricConv", "images", ["d4"], "dense", reference="consensus")["d4"]
    # the identity is now compared with the orbit mean: no longer 0, and the floor still is
    assert cons.per_element[cons.identity_index]["equivariance_error"] > 1e-3
    assert cons.summary["floor"] < 1e-6
    assert cons.summary["equivariance_error"] != pytest.approx(base.summary["equivariance_error"], abs=1e-3)
    small = run(files, tmp_path, "AsymmetricConv", "images", ["d4"], "dense", reference="consensus", batch_size=3)["d4"]
    monkeypatch.setattr(sweep_module, "KEEP_BYTES", 0)  # second pass re-evaluates instead of keeping outputs
    again = run(files, tmp_path, "AsymmetricConv", "images", ["d4"], "dense", reference="consensus", batch_size=3)["d4"]
    for other in (small, again):
        for key in ("equivariance_error", "pixel_flip_rate", "mean_iou", "max_abs_error"):
            assert other.summary[key] == pytest.approx(cons.summary[key], abs=1e-6), key


def test_label_reference_for_classifiers(model_files, data_npz, tmp_path):
    kw = dict(data=str(data_npz), symmetry=["rot90"], model_factory=factory("SmallCNN"), out=str(tmp_path / "o"), device="cpu")
    ident = scan(model_files["SmallCNN"], **kw).symmetries[0]
    lab = scan(model_files["SmallCNN"], reference="label", **kw).symmetries[0]
    assert lab.reference == "label"
    # against the labels, a flip is a wrong answer and the probability shift is 1 - p(true class)
    assert lab.summary["flip_rate"] == pytest.approx(1 - lab.summary["accuracy"], abs=1e-9)
    assert lab.summary["prob_tv"] == pytest.approx(1 - lab.summary["true_class_prob"], abs=1e-6)
    assert lab.summary["accuracy"] == pytest.approx(ident.summary["accuracy"], abs=1e-9)
    assert lab.summary["floor"] < 1e-5  # the floor is still measured against f(x)


def test_label_reference_needs_labels_and_a_task_that_has_them(files, tmp_path):
    with pytest.raises(ConfigError, match="labels"):
        run(files, tmp_path, "CircularConv", "images", ["d4"], "dense", reference="label")
    with pytest.raises(ConfigError, match=r"data without labels"):
        scan(files["AsymmetricConv"], data=str(files["images"]), symmetry=["rot90"], model_factory=dfactory("AsymmetricConv"),
             reference="label", out=str(tmp_path / "o"))


def test_consensus_box_and_majority_vote(files, tmp_path):
    res = run(files, tmp_path, "BoxFinder", "canvas", ["flip", "rot90"], "boxes", reference="consensus")
    assert res["flip"].summary["iou"] == pytest.approx(1.0, abs=1e-9)
    # rot90: two of four views call each shape tall; the vote is 2:2, broken by the mean scores
    assert 0 < res["rot90"].summary["flip_rate"] <= 0.5


# ---- output actions, directly ----------------------------------------------------------------------------


def test_vector_matrix_of_swap_products_and_rot90():
    sym = parse_symmetry("rot90*swap")
    el = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    m = vector_matrix(sym, el)
    up = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)  # right (1, 0) -> up (0, -1), as displayed
    assert_close(m, torch.stack([up, -up, -torch.eye(2, dtype=torch.float64)]))
    field = torch.zeros(1, 1, 2, 5, 5, dtype=torch.float64)
    field[:, :, 0] = 1.0  # pointing right everywhere
    rot = field_action(parse_symmetry("rot90"), field, torch.tensor([[1.0]]), (5, 5))
    assert_close(rot[0, 0, 1], -torch.ones(5, 5, dtype=torch.float64))  # now pointing up (v = -1)
    back = field_action(parse_symmetry("rot90"), rot, torch.tensor([[1.0]]), (5, 5), inverse=True)
    assert_close(back, field)


def test_box_action_known_answers():
    box = torch.tensor([[[1.0, 2.0, 4.0, 3.0]]], dtype=torch.float64)  # x1, y1, x2, y2 in a 10 x 8 (H x W) frame
    hw = (10, 8)
    shift = box_action(parse_symmetry("translate"), box, torch.tensor([[2.0, -1.0]]), hw)
    assert_close(shift[0, 0], torch.tensor([3.0, 1.0, 6.0, 2.0], dtype=torch.float64))
    mirror = box_action(parse_symmetry("flip"), box, torch.tensor([[1.0]]), hw)
    assert_close(mirror[0, 0], torch.tensor([4.0, 2.0, 7.0, 3.0], dtype=torch.float64))
    square = (8, 8)
    img = torch.zeros(1, 1, 1, 8, 8)
    img[..., 2:3, 1:4] = 1.0  # rows 2, cols 1..3 -> box (1, 2, 4, 3)
    rot = parse_symmetry("rot90")
    moved = rot.act(img[0], torch.tensor([[1.0]]))[0, 0, 0]
    rows, cols = moved.nonzero(as_tuple=True)
    expected = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float64)
    assert_close(box_action(rot, box, torch.tensor([[1.0]]), square)[0, 0], expected)
    clipped = box_action(parse_symmetry("translate"), box, torch.tensor([[6.0, 0.0]]), hw)
    assert_close(clipped[0, 0], torch.tensor([7.0, 2.0, 8.0, 3.0], dtype=torch.float64))


def test_map_action_scales_shifts_and_masks_at_the_output_resolution():
    sym = parse_symmetry("translate:max=4,step=2,mode=zero")
    maps = torch.arange(16.0, dtype=torch.float64).view(1, 1, 1, 4, 4)
    moved = map_action(sym, maps, torch.tensor([[2.0, 0.0]]), (8, 8))
    assert_close(moved[0, 0, 0, :, 1:], maps[0, 0, 0, :, :3])  # 2 input px = 1 output px
    mask = map_mask(sym, torch.tensor([[2.0, 0.0]]), (4, 4), (8, 8))
    assert mask.shape == (1, 1, 4, 4) and not mask[0, 0, :, 0].any() and mask[0, 0, :, 1:].all()
    with pytest.raises(SymmetryError, match="whole pixels"):
        map_action(sym, maps, torch.tensor([[1.0, 0.0]]), (8, 8))
    with pytest.raises(SymmetryError, match="Expected a symmetry that acts on dense"):
        map_action(parse_symmetry("so3:n=2"), maps, torch.tensor([[1.0, 0.0, 0.0, 0.0]]), (8, 8))


# ---- CLI ---------------------------------------------------------------------------------------------------


def test_cli_task_and_reference_on_unlabelled_data(files, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["scan", str(files["CircularConv"]), "--data", str(files["images"]), "-s", "d4", "-s", "translate",
                              "--task", "dense", "--reference", "consensus", "--model-factory", dfactory("CircularConv"),
                              "--fail-over", "equivariance_error=1e-4", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    d = json.loads((out / "result.json").read_text())
    assert {s["reference"] for s in d["symmetries"]} == {"consensus"}
    assert {s["task"] for s in d["symmetries"]} == {"dense"}
    assert d["data"]["has_labels"] is False
    assert all(s["summary"]["equivariance_error"] < 1e-5 for s in d["symmetries"])
    bad = runner.invoke(app, ["scan", str(files["AsymmetricConv"]), "--data", str(files["images"]), "-s", "d4", "--task", "dense",
                              "--model-factory", dfactory("AsymmetricConv"), "--fail-over", "equivariance_error=1e-4",
                              "--out", str(out), "--quiet"])
    assert bad.exit_code == 1, bad.output
    typo = runner.invoke(app, ["scan", str(files["Gradient"]), "--data", str(files["images"]), "-s", "d4", "--task", "vector-feld",
                               "--model-factory", dfactory("Gradient"), "--out", str(out), "--quiet"])
    assert typo.exit_code == 2 and "vector-field" in typo.output


# ---- shipped sample models -------------------------------------------------------------------------------


def test_domain_sample_models_scan_unaided_with_their_sidecars(tmp_path):
    samples = TESTS.parent / "sample_models"

    def audit(name, **kw):
        res = scan(samples / f"{name}.pt", out=str(tmp_path / name), device="cpu", **kw)
        return {s.spec: s for s in res.symmetries}

    plain, aug = audit("pointnet", limit=60), audit("pointnet_aug", limit=60)
    assert plain["so3:n=32"].summary["flip_rate"] > 0.4 > 0.1 > aug["so3:n=32"].summary["flip_rate"]
    assert plain["permute:n=8"].summary["prob_tv"] < 1e-6 and aug["permute:n=8"].summary["prob_tv"] < 1e-6
    piv = audit("piv_flow", limit=16)
    assert piv["d4*swap"].task == "vector-field" and len(piv["d4*swap"].elements) == 16
    assert 0.01 < piv["d4*swap"].summary["equivariance_error"] < 0.3
    boxes = audit("box_localiser", limit=60)
    assert boxes["translate:max=4,mode=zero"].task == "boxes"
    assert 0.7 < boxes["translate:max=4,mode=zero"].summary["iou"] < 1.0
    assert boxes["flip"].summary["flip_rate"] < boxes["rot90"].summary["flip_rate"]


def test_class_map_metrics_count_pixels_as_a_plain_loop_does():
    """pixel_flip_rate and mean_iou (one argmax per map, one bincount) equal a per-map numpy count: IoU
    over the classes present in either map inside the mask, 1 for a map with no valid pixel."""
    from eqaudit.metrics import class_map_metrics, equivariance_error, map_errors, max_abs_error, mean_iou, pixel_flip_rate

    g = torch.Generator().manual_seed(5)
    e, b, k, h, w = 2, 3, 5, 6, 7
    a, r = torch.randn(e, b, k, h, w, generator=g), torch.randn(e, b, k, h, w, generator=g)
    a[:, :, 4] -= 10  # class 4 never wins: absent from every map
    r[:, :, 4] -= 10
    r[0, 1] = a[0, 1]  # one identical pair
    mask = torch.rand(e, 1, 1, h, w, generator=g) > 0.3
    mask[1] = False  # an element with no valid pixel
    flip, iou = class_map_metrics(a, r, mask)
    la, lb = a.argmax(2).numpy(), r.argmax(2).numpy()
    m = np.broadcast_to(mask.numpy()[:, :, 0], (e, b, h, w))
    for i in range(e):
        for j in range(b):
            va, vb = la[i, j][m[i, j]], lb[i, j][m[i, j]]
            want_flip = float((va != vb).mean()) if va.size else 0.0
            ious = [np.sum((va == c) & (vb == c)) / np.sum((va == c) | (vb == c)) for c in range(k) if np.any((va == c) | (vb == c))]
            want_iou = float(np.mean(ious)) if ious else 1.0
            assert flip[i, j].item() == pytest.approx(want_flip, abs=1e-15) and iou[i, j].item() == pytest.approx(want_iou, abs=1e-15)
    assert iou[0, 1].item() == 1.0 and flip[0, 1].item() == 0.0 and (iou[1] == 1).all()
    torch.testing.assert_close(flip, pixel_flip_rate(a, r, mask), rtol=0, atol=0)
    torch.testing.assert_close(iou, mean_iou(a, r, mask), rtol=0, atol=0)
    err, worst = map_errors(a, r, mask)
    torch.testing.assert_close(err, equivariance_error(a, r, mask), rtol=0, atol=0)
    torch.testing.assert_close(worst, max_abs_error(a, r, mask), rtol=0, atol=0)
