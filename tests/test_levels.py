"""Learned-level estimates: level/CI/status, floor and extent, Lie derivatives and per-layer shares."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import toy_models
from conftest import ROOT, export_onnx, factory
from eqaudit.api import scan
from eqaudit.cli import app

SAMPLES = ROOT / "sample_models"


def _scan(path, data, tmp_path, symmetries, fac=None, **kw):
    if data is not None:  # None: the model's sidecar names data (and task)
        kw["data"] = str(data)
    return scan(path, symmetry=symmetries, model_factory=fac, out=str(tmp_path / "out"), **kw)


def test_level_rises_with_the_invariant_share(tmp_path, data_npz):
    levels = []
    for a in (0.0, 0.5, 0.9, 1.0):
        model = toy_models.MixedRot90()
        model.alpha.fill_(a)
        path = tmp_path / f"mixed{a}.pt"
        torch.save(model.state_dict(), path)
        s = _scan(path, data_npz, tmp_path, ["rot90"], factory("MixedRot90")).symmetries[0].summary
        assert s["level_status"] == "ok"
        lo, hi = s["level_ci"]
        assert lo <= s["level"] <= hi
        levels.append(s["level"])
    assert levels == sorted(levels) and levels[0] < levels[1] < levels[2]
    assert levels[-1] >= 0.99


def test_model_ignoring_its_input_is_undetermined(tmp_path, data_npz):
    path = tmp_path / "const.pt"
    torch.save(toy_models.ConstantModel().state_dict(), path)
    s = _scan(path, data_npz, tmp_path, ["rot90", "rotate:step=45"], factory("ConstantModel"))
    for sym in s.symmetries:
        assert sym.summary["prob_tv"] == 0 and sym.summary["level"] is None
        assert sym.summary["level_status"] == "undetermined" and "barely depend" in sym.summary["level_reason"]


def test_resampled_rotation_of_d4_invariant_model(model_files, data_npz, tmp_path):
    sym = _scan(model_files["D4Averaged"], data_npz, tmp_path, ["rotate:step=45"], factory("D4Averaged")).symmetries[0]
    assert sym.summary["floor"] > 1e-4
    by_angle = {e[0]: row for e, row in zip(sym.elements, sym.per_element)}
    for a in (90.0, 180.0, -90.0):
        assert by_angle[a]["level"] > 0.999, a
    # at 45 degrees the raw error is all interpolation: clearly non-zero, yet not above the floor
    assert by_angle[45.0]["prob_tv"] > 1e-4 and by_angle[45.0]["prob_tv"] <= 2 * by_angle[45.0]["floor"]


def test_extent_of_plain_cnn_is_narrower_than_augmented(tmp_path):
    data = SAMPLES / "digits_test.npz"
    ext = {}
    for name in ("digits_cnn", "digits_cnn_aug"):
        s = _scan(SAMPLES / f"{name}.pt", data, tmp_path, ["rotate:step=15"], limit=120).symmetries[0].summary
        ext[name] = s["extent"]
        assert ext[name]["unit"] == "deg" and ext[name]["tolerance"] == 0.1
        assert ext[name]["lower"] <= 0 <= ext[name]["upper"]
    width = {k: v["upper"] - v["lower"] for k, v in ext.items()}
    assert width["digits_cnn"] < width["digits_cnn_aug"]
    assert ext["digits_cnn"]["auc"] < ext["digits_cnn_aug"]["auc"]


def test_flip_points_in_the_orbit_table(tmp_path):
    _scan(SAMPLES / "digits_cnn.pt", SAMPLES / "digits_test.npz", tmp_path, ["rotate:step=15"], limit=40)
    z = np.load(tmp_path / "out" / "orbits.npz")
    up, down, flipped = z["s0.flip_up"], z["s0.flip_down"], z["s0.flipped"]
    assert up.shape == (40,) and np.all((up[np.isfinite(up)] > 0)) and np.all(down[np.isfinite(down)] < 0)
    angles = json.loads((tmp_path / "out" / "result.json").read_text())["symmetries"][0]["elements"]
    angles = np.array([a[0] for a in angles])
    i = int(np.nonzero(np.isfinite(up))[0][0])
    first = angles[(angles > 0) & flipped[i]].min()
    assert up[i] == first


def test_bootstrap_ci_shrinks_with_more_samples(tmp_path):
    widths = []
    for n in (40, 320):
        s = _scan(SAMPLES / "digits_cnn_aug.pt", SAMPLES / "digits_test.npz", tmp_path, ["rot90"], limit=n).symmetries[0].summary
        lo, hi = s["level_ci"]
        assert lo <= s["level"] <= hi
        widths.append(hi - lo)
    assert widths[1] < 0.7 * widths[0]


def test_lie_derivative_is_float_noise_for_a_continuously_invariant_model(tmp_path, data_npz):
    for name, small in (("ShiftInvariantNet", True), ("BrokenShiftNet", False), ("SmallCNN", False)):
        path = tmp_path / f"{name}.pt"
        torch.save(getattr(toy_models, name)().state_dict(), path)
        s = _scan(path, data_npz, tmp_path, ["translate", "rot90"], factory(name), local=True).symmetries
        lie = s[0].summary
        assert lie["lie_derivative_unit"] == "per px" and lie["lie_derivative_method"].startswith("autograd")
        assert set(lie["lie_derivative_parts"]) == {"dx", "dy"}
        assert (lie["lie_derivative"] < 1e-6) == small, (name, lie["lie_derivative"])
        assert s[1].summary["lie_derivative"] is None and "finite" in s[1].summary["lie_derivative_reason"]


def test_autograd_and_finite_differences_agree(tmp_path, data_npz):
    model = toy_models.SmoothCNN().eval()
    pt = tmp_path / "smooth.pt"
    torch.save(model.state_dict(), pt)
    onnx = export_onnx(model, tmp_path / "smooth.onnx", torch.zeros(2, 1, 12, 12))
    for spec, unit in (("rotate:step=90", "per rad"), ("translate", "per px"), ("scale:steps=3", "per log2")):
        t = _scan(pt, data_npz, tmp_path, [spec], factory("SmoothCNN"), local=True).symmetries[0].summary
        o = _scan(onnx, data_npz, tmp_path, [spec], local=True).symmetries[0].summary
        assert o["lie_derivative_method"].startswith("central difference")
        assert t["lie_derivative_unit"] == o["lie_derivative_unit"] == unit
        assert t["lie_derivative"] > 1e-3
        assert o["lie_derivative"] == pytest.approx(t["lie_derivative"], rel=2e-3), spec


def test_layer_shares_blame_the_one_broken_layer(tmp_path, data_npz):
    path = tmp_path / "broken.pt"
    torch.save(toy_models.BrokenShiftNet().state_dict(), path)
    s = _scan(path, data_npz, tmp_path, ["translate"], factory("BrokenShiftNet"), layers=True).symmetries[0].summary
    shares = {r["name"]: r["share"] for r in s["layers"]}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert s["layers"][0]["name"] == "mask" and shares["mask"] > 0.99
    assert s["layers_residual"] < 1e-3


def test_layer_shares_go_to_the_module_that_owns_the_computation(tmp_path, data_npz):
    """A module with its own buffer and a child is one unit (not its child, not 100 % unexplained)."""
    path = tmp_path / "owned.pt"
    torch.save(toy_models.BrokenShiftNetOwned().state_dict(), path)
    s = _scan(path, data_npz, tmp_path, ["translate"], factory("BrokenShiftNetOwned"), layers=True).symmetries[0].summary
    names = [r["name"] for r in s["layers"]]
    assert names[0] == "mask" and s["layers"][0]["share"] > 0.99
    assert not any(n.startswith("mask.") for n in names)
    assert s["layers_residual"] < 1e-3 and "layers_note" not in s


def test_computing_units_skip_export_internals_and_keep_owners():
    from eqaudit.lie import computing_units

    class Guard(torch.nn.Module):
        def forward(self, x):
            return x

    net = toy_models.BrokenShiftNetOwned()
    net._guards_fn = Guard()
    names = [n for n, _ in computing_units(net)]
    assert "mask" in names and "mask.basis" not in names and "_guards_fn" not in names
    assert {"conv1", "conv2", "head"} <= set(names)


def test_local_and_layers_through_the_cli(tmp_path):
    res = CliRunner().invoke(app, ["scan", str(SAMPLES / "digits_cnn.pt"), "-s", "rotate:step=90", "--limit", "16",
                                   "--layers", "--out", str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "o" / "result.json").read_text())["symmetries"][0]["summary"]
    assert s["lie_derivative"] > 0 and s["layers"] and abs(sum(r["share"] for r in s["layers"]) - 1) < 1e-6
    onnx = CliRunner().invoke(app, ["scan", str(SAMPLES / "digits_cnn.onnx"), "-s", "rotate:step=90", "--limit", "16",
                                    "--layers", "--out", str(tmp_path / "p"), "--quiet"])
    assert onnx.exit_code == 0, onnx.output
    s = json.loads((tmp_path / "p" / "result.json").read_text())["symmetries"][0]["summary"]
    assert s["layers"] is None and "torch" in s["layers_reason"]


def test_level_at_init_separates_architecture_from_training(model_files, data_npz, tmp_path):
    inv = _scan(model_files["Rot90Averaged"], data_npz, tmp_path, ["rot90"], factory("Rot90Averaged"), level_at_init=True)
    assert inv.symmetries[0].summary["level_at_init"] >= 0.99  # the architecture alone gives it
    plain = _scan(model_files["SmallCNN"], data_npz, tmp_path, ["rot90"], factory("SmallCNN"), level_at_init=True)
    assert plain.symmetries[0].summary["level_at_init"] < 0.9
    onnx = _scan(model_files["SmallCNN.onnx"], data_npz, tmp_path, ["rot90"], level_at_init=True).symmetries[0].summary
    assert onnx["level_at_init"] is None and "factory" in onnx["level_at_init_reason"]


def test_gates_on_local_error_and_level_at_init(model_files, data_npz, tmp_path):
    res = CliRunner().invoke(app, ["scan", str(model_files["Rot90Averaged"]), "--data", str(data_npz), "-s", "rotate:step=90",
                                   "--model-factory", factory("Rot90Averaged"), "--local", "--level-at-init",
                                   "--gate", "lie_derivative<=1e-9", "--gate", "level_at_init>=0.99", "--out", str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 1, res.output
    assert "lie_derivative" in res.output
    gates = {g["metric"]: g for g in json.loads((tmp_path / "o" / "result.json").read_text())["symmetries"][0]["gates"]}
    assert not gates["lie_derivative"]["passed"] and gates["lie_derivative"]["value"] > 1e-9
    assert gates["level_at_init"]["passed"] and gates["level_at_init"]["value"] >= 0.99


def test_fingerprint_line_lists_every_symmetry_level(model_files, data_npz, tmp_path):
    res = CliRunner().invoke(app, ["scan", str(model_files["Rot90Averaged.onnx"]), str(model_files["SmallCNN.onnx"]),
                                   "--data", str(data_npz), "-s", "rot90", "-s", "flip", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    lines = {ln.split(":")[0]: ln for ln in res.output.splitlines() if ln.startswith("fingerprint ")}
    inv, plain = lines["fingerprint Rot90Averaged.onnx"], lines["fingerprint SmallCNN.onnx"]
    assert "rot90 1.00" in inv and "| flip " in inv
    assert "rot90 1.00" not in plain


def test_extent_along_one_translation_axis(tmp_path):
    res = _scan(SAMPLES / "digits_cnn.pt", SAMPLES / "digits_test.npz", tmp_path,
                ["translate:axis=y,max=3", "translate:axis=x,max=3,mode=zero", "translate"], limit=60)
    y, x, grid = res.symmetries
    assert y.layout == x.layout == "line" and grid.layout == "grid2d"
    assert [e[0] for e in y.elements] == [0.0] * 7 and [e[1] for e in y.elements] == [-3, -2, -1, 0, 1, 2, 3]
    assert y.labels[0] == "dy=-3" and x.labels[-1] == "dx=3"
    for sym in (x, y):
        ext = sym.summary["extent"]
        assert ext["unit"] == "px" and -3 <= ext["lower"] <= 0 <= ext["upper"] <= 3
    assert "extent" not in grid.summary
    z = np.load(tmp_path / "out" / "orbits.npz")
    assert z["s0.flip_up"].shape == (60,)


@pytest.mark.parametrize("model, spec, first", [("pointnet", "so3:n=8", "point_mlp.0"), ("piv_flow", "rotate:step=90", None)])
def test_layer_split_is_complete_for_points_and_vector_fields(tmp_path, model, spec, first):
    s = _scan(SAMPLES / f"{model}.pt", None, tmp_path, [spec], limit=8, layers=True).symmetries[0].summary
    assert s["lie_derivative"] > 1e-3
    assert sum(r["share"] for r in s["layers"]) == pytest.approx(1.0, abs=1e-9)
    assert s["layers_residual"] < 1e-3  # the leaf modules explain the whole Lie derivative
    if first:  # only the first point layer sees coordinates: it carries all of a PointNet's rotation error
        assert s["layers"][0]["name"] == first and s["layers"][0]["share"] > 0.999


def test_terminal_shows_local_error_layers_and_level_at_init(tmp_path):
    res = CliRunner().invoke(app, ["scan", str(SAMPLES / "digits_cnn.pt"), "-s", "rot90", "-s", "rotate:step=90", "--limit", "12",
                                   "--layers", "--level-at-init", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "local error rot90: n/a (rot90 is a finite group" in out
    assert "local error rotate:step=90: " in out and "per rad (autograd" in out
    assert "layers rotate:step=90: features." in out and "unexplained" in out
    assert "level at init rot90: " in out and "(trained: " in out


def test_float_noise_is_not_resolved_above_the_floor():
    from eqaudit.metrics import resolved_above_floor

    rng = np.random.default_rng(0)
    floor = rng.uniform(0, 1e-8, (200, 3))
    noise = rng.normal(0, 1e-12, (200, 3))
    # a consistent 1e-9 above the floor is float noise (the exact elements of a resampled orbit) ...
    assert not resolved_above_floor(floor + 1e-9 + noise, floor).any()
    # ... a real error above it is resolved, and an error at the floor is not
    err = floor + np.array([0.0, 1e-3, 0.05]) + noise
    assert resolved_above_floor(err, floor).tolist() == [False, True, True]


def test_nothing_resolved_is_floor_limited_not_a_level_of_one():
    from eqaudit.levels import estimate_level

    rng = np.random.default_rng(1)
    floor = rng.uniform(0.01, 0.02, (100, 4))
    err = floor.copy()
    null = rng.uniform(0.5, 0.7, 300)
    out = estimate_level(err, floor, null, 0, n_boot=50, resolved=np.zeros(4, bool))
    assert out["level_status"] == "floor-limited" and out["level"] is None and out["level_ci"] is None
    assert "floor" in out["level_reason"] and out["null"] == pytest.approx(null.mean())
    # one resolved element (the identity does not count) and the level is measured
    assert estimate_level(err, floor, null, 0, n_boot=50, resolved=np.array([True, False, False, False]))["level_status"] == "floor-limited"
    ok = estimate_level(err, floor, null, 0, n_boot=50, resolved=np.array([False, True, False, False]))
    assert ok["level_status"] == "ok" and ok["level"] == pytest.approx(1.0)


def test_floor_limited_scan_fails_its_level_gate(model_files, data_npz, tmp_path):
    from eqaudit.gates import failure_line

    # a D4-invariant model under 45-degree rotations: every error is interpolation (the floor)
    sym = _scan(model_files["D4Averaged"], data_npz, tmp_path, ["rotate:step=45"], factory("D4Averaged"),
                gates=["level>=0.5"]).symmetries[0]
    assert sym.summary["level_status"] == "floor-limited" and sym.summary["level"] is None
    assert not any(row["resolved"] for row in sym.per_element)
    [g] = sym.gates
    assert not g.passed and g.value is None
    assert "level is floor-limited (no element's error is clearly above" in failure_line("d4.pt", sym.spec, g, sym.summary)


def test_report_words_for_levels_and_extents():
    from eqaudit.report.html import _extent_text, _level_note

    base = {"unit": "deg", "tolerance": 0.1, "auc": 0.2}
    assert _extent_text({**base, "lower": 0.0, "upper": 0.0, "full": False}) == "none within tolerance"
    assert _extent_text({**base, "lower": -30.0, "upper": 45.0, "full": False}) == "-30 … 45 deg"
    assert _extent_text({**base, "lower": -180.0, "upper": 180.0, "full": True}) == "whole orbit"
    assert _extent_text(None) is None
    und = {"level": None, "level_status": "undetermined", "level_reason": "null 0.1 is not clearly above floor 0.1"}
    assert _level_note(und) == "undetermined: null 0.1 is not clearly above floor 0.1"
    assert _level_note({"level": 0.5, "level_status": "ok", "level_ci": [0.4, 0.6]}) == "95% CI 0.400–0.600"


def test_terminal_gives_the_reason_for_a_missing_level_and_no_empty_extent(model_files, data_npz, tmp_path):
    path = tmp_path / "const.pt"
    torch.save(toy_models.ConstantModel().state_dict(), path)
    runner = CliRunner()
    res = runner.invoke(app, ["scan", str(path), "--data", str(data_npz), "-s", "rotate:step=45", "--model-factory",
                              factory("ConstantModel"), "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "level rotate:step=45: undetermined: null" in res.output and "barely depend" in res.output
    res = runner.invoke(app, ["scan", str(model_files["SmallCNN"]), "--data", str(data_npz), "-s", "rotate:step=45",
                              "--model-factory", factory("SmallCNN"), "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    sm = json.loads((tmp_path / "s" / "result.json").read_text())["symmetries"][0]["summary"]
    assert sm["extent"]["lower"] == sm["extent"]["upper"] == 0.0  # the level drops at the first element
    assert "none within" in res.output and "tolerance" in res.output and "0 … 0" not in res.output  # the cell may wrap
    lo, hi = sm["level_ci"]
    assert f"{sm['level']:.3f} [{lo:.2f}–{hi:.2f}]" in res.output  # the CI beside the level


def test_a_constant_floor_on_a_subset_gives_the_full_floors_interval():
    """Exact actions read a zero floor; measured on a subset of samples it must not change the bootstrap
    (the level's confidence interval stays what it was with the floor on every sample)."""
    from eqaudit.levels import estimate_level

    g = np.random.default_rng(0)
    err = g.uniform(0.0, 0.3, size=(200, 4))
    err[:, 0] = 0.0
    null = g.uniform(0.4, 0.8, size=100)
    full = estimate_level(err, np.zeros((200, 4)), null, 0, seed=1)
    subset = estimate_level(err, np.zeros((64, 4)), null, 0, seed=1)
    assert full["level_status"] == subset["level_status"] == "ok"
    assert subset["level"] == full["level"] and subset["level_ci"] == full["level_ci"]
    # a floor that varies over the subset is resampled on its own: another interval
    varied = estimate_level(err, g.uniform(0.0, 0.02, size=(64, 4)), null, 0, seed=1)
    assert varied["level_ci"] != full["level_ci"]
