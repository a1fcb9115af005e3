"""Ground-truth targets and ``--reference label`` for the non-classifier tasks: known answers, errors, batch sizes, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import toy_domains
from conftest import dfactory, scan_specs, ROOT, TESTS, smooth_images
from eqaudit.api import scan
from eqaudit.cli import app
from eqaudit.data import load_dataset
from eqaudit.errors import ConfigError, DataError

SAMPLES = ROOT / "sample_models"



def gradient(x: np.ndarray) -> np.ndarray:
    """The true flow of the Gradient toy model: central differences of channel 0 (N, 2, H, W)."""
    return toy_domains.central_gradient(torch.from_numpy(x)[:, 0]).numpy()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Toy models and data files that carry ground-truth targets (exact and deliberately wrong)."""
    d = tmp_path_factory.mktemp("targets")
    out = {}
    for name in ["Gradient", "CircularConv", "Centre", "Anisotropic", "BoxFinder"]:
        out[name] = d / f"{name}.pt"
        torch.save(getattr(toy_domains, name)().state_dict(), out[name])
    imgs = smooth_images(6, seed=2, size=16)
    truth = gradient(imgs)
    out["imgs"] = imgs
    out["flow"] = d / "flow.npz"
    np.savez(out["flow"], x=imgs, targets=truth)
    out["flow_scaled"] = d / "flow_scaled.npz"  # the truth is 1.1 x the model's answer everywhere
    np.savez(out["flow_scaled"], x=imgs, targets=1.1 * truth)
    noise = np.random.default_rng(1).normal(scale=0.05, size=truth.shape)
    out["flow_noisy"] = d / "flow_noisy.npz"
    np.savez(out["flow_noisy"], x=imgs, true_flow=(truth + noise).astype(np.float32))
    out["no_targets"] = d / "no_targets.npz"
    np.savez(out["no_targets"], x=imgs)
    # dense class maps: the symmetric convolution's own argmax, and a copy with 10% of the pixels wrong
    with torch.no_grad():
        classes = toy_domains.CircularConv()(torch.from_numpy(imgs)).argmax(1).numpy()
    out["seg"] = d / "seg.npz"
    np.savez(out["seg"], x=imgs, targets=classes)
    wrong = np.random.default_rng(2).random(classes.shape) < 0.1
    out["seg_wrong_share"] = wrong.mean()
    out["seg_wrong"] = d / "seg_wrong.npz"
    np.savez(out["seg_wrong"], x=imgs, targets=np.where(wrong, (classes + 1) % 3, classes))
    # points: centred clouds are the truth of Centre
    clouds = np.random.default_rng(0).normal(size=(6, 20, 3)) * np.array([1.0, 0.6, 0.3])
    out["clouds"] = d / "clouds.npz"
    np.savez(out["clouds"], x=clouds, targets=clouds - clouds.mean(1, keepdims=True))
    # boxes: one rectangle per canvas; true boxes, and true boxes shifted 1 px to the right
    g = np.random.default_rng(0)
    canv = np.zeros((6, 1, 20, 20), dtype=np.float32)
    boxes = np.zeros((6, 4), dtype=np.float32)
    for i in range(6):
        y0, x0 = g.integers(4, 8, 2)
        h, w = 3 + i % 4, 6 - i % 3
        canv[i, 0, y0 : y0 + h, x0 : x0 + w] = 1.0
        boxes[i] = [x0, y0, x0 + w, y0 + h]
    out["box_widths"] = boxes[:, 2] - boxes[:, 0]
    out["canvas"] = d / "canvas.npz"
    np.savez(out["canvas"], x=canv, y=np.zeros(6, dtype=np.int64), targets=boxes)
    out["canvas_off"] = d / "canvas_off.npz"
    np.savez(out["canvas_off"], x=canv, y=np.zeros(6, dtype=np.int64), targets=boxes + np.array([1, 0, 1, 0], np.float32))
    return out


run = scan_specs


# ---- known answers ----------------------------------------------------------------------------------------


def test_a_model_that_outputs_the_truth_reads_zero_error(files, tmp_path):
    for task, specs in (("vector-field", ["d4", "translate:max=3"]), ("dense", ["translate:max=3"])):  # dense maps do not turn
        res = run(files, tmp_path, "Gradient", "flow", specs, task, reference="label")
        for spec, s in res.items():
            assert s.reference == "label"
            assert s.summary["equivariance_error"] < 1e-6, (task, spec)
            assert s.summary["max_abs_error"] < 1e-6, (task, spec)
    pts = run(files, tmp_path, "Centre", "clouds", ["so3:n=8", "permute:n=4"], "points", reference="label")
    assert all(s.summary["equivariance_error"] < 1e-6 for s in pts.values())
    box = run(files, tmp_path, "BoxFinder", "canvas", ["flip", "rot90", "translate:max=3,mode=zero"], "boxes", reference="label")
    for spec, s in box.items():
        assert s.summary["iou"] == pytest.approx(1.0, abs=1e-9), spec
        assert s.summary["center_error"] == pytest.approx(0.0, abs=1e-9), spec


def test_a_deliberate_error_reads_the_expected_value(files, tmp_path):
    # truth = 1.1 f: ||f - 1.1 f|| / (||f|| + ||1.1 f||) = 0.1 / 2.1 on every element, the identity included
    s = run(files, tmp_path, "Gradient", "flow_scaled", ["d4"], "vector-field", reference="label")["d4"]
    for row in s.per_element:
        assert row["equivariance_error"] == pytest.approx(0.1 / 2.1, abs=1e-6)
    assert s.summary["floor"] < 1e-6  # the floor is still the round trip against f(x)
    # true boxes 1 px to the right of the found ones: IoU (w - 1) / (w + 1) for a box w px wide, moved or not
    w = files["box_widths"].astype(np.float64)
    b = run(files, tmp_path, "BoxFinder", "canvas_off", ["flip", "rot90"], "boxes", reference="label")
    for spec in ("flip", "rot90"):
        assert b[spec].summary["iou"] == pytest.approx(float(np.mean((w - 1) / (w + 1))), abs=1e-6), spec
    # class-map targets for dense: the pixel flip rate is the share of wrong pixels, whatever the element
    exact = run(files, tmp_path, "CircularConv", "seg", ["d4"], "dense", reference="label")["d4"]
    assert exact.summary["pixel_flip_rate"] < 1e-9 and exact.summary["mean_iou"] == pytest.approx(1.0, abs=1e-9)
    wrong = run(files, tmp_path, "CircularConv", "seg_wrong", ["d4"], "dense", reference="label")["d4"]
    for row in wrong.per_element:
        assert row["pixel_flip_rate"] == pytest.approx(files["seg_wrong_share"], abs=1e-6)
    assert wrong.summary["mean_iou"] < 0.95


def test_label_and_identity_references_differ_for_an_imperfect_model(files, tmp_path):
    ident = run(files, tmp_path, "Anisotropic", "clouds", ["so3:n=8"], "points")["so3:n=8"]
    label = run(files, tmp_path, "Anisotropic", "clouds", ["so3:n=8"], "points", reference="label")["so3:n=8"]
    assert ident.per_element[ident.identity_index]["equivariance_error"] < 1e-9  # f(x) against itself
    assert label.per_element[label.identity_index]["equivariance_error"] > 0.05  # f(x) against the truth
    assert abs(label.summary["equivariance_error"] - ident.summary["equivariance_error"]) > 1e-3
    # a perfect model reads the same under both (truth = f(x))
    a = run(files, tmp_path, "Centre", "clouds", ["so3:n=8"], "points")["so3:n=8"]
    b = run(files, tmp_path, "Centre", "clouds", ["so3:n=8"], "points", reference="label")["so3:n=8"]
    assert a.summary["equivariance_error"] == pytest.approx(b.summary["equivariance_error"], abs=1e-6)


def test_results_do_not_depend_on_batch_size(files, tmp_path):
    kw = dict(reference="label", targets_key="true_flow")
    specs = ["d4", "rotate:step=45", "translate:max=2"]
    base = run(files, tmp_path, "Gradient", "flow_noisy", specs, "vector-field", **kw)
    assert base["d4"].summary["epe"] > 0.01  # the noise in the truth is seen
    for bs in (3, 7):
        other = run(files, tmp_path, "Gradient", "flow_noisy", specs, "vector-field", batch_size=bs, **kw)
        for spec in base:
            for key in ("equivariance_error", "epe", "max_abs_error", "floor"):
                assert other[spec].summary[key] == pytest.approx(base[spec].summary[key], abs=1e-6), (bs, spec, key)
            for r0, r1 in zip(base[spec].per_element, other[spec].per_element):
                assert r1["equivariance_error"] == pytest.approx(r0["equivariance_error"], abs=1e-6)


# ---- data and errors --------------------------------------------------------------------------------------


def test_targets_are_read_from_npz_and_pt_and_validated(files, tmp_path):
    ds = load_dataset(str(files["flow"]), limit=4, seed=1)
    assert ds.has_targets and ds.targets_key == "targets"
    t = ds.targets_at(np.arange(2))
    assert t.dtype == torch.float64 and t.shape == (2, 2, 16, 16)
    np.testing.assert_allclose(t.numpy(), gradient(files["imgs"])[ds.indices[:2]], rtol=1e-6)
    assert not load_dataset(str(files["flow_noisy"])).has_targets  # other key name: no targets unless named
    assert load_dataset(str(files["flow_noisy"]), targets_key="true_flow").has_targets
    torch.save({"x": torch.from_numpy(files["imgs"]), "targets": torch.zeros(6, 2, 16, 16)}, tmp_path / "d.pt")
    assert load_dataset(str(tmp_path / "d.pt")).targets_at(np.arange(6)).shape == (6, 2, 16, 16)
    x = files["imgs"]
    bad = np.zeros((6, 2, 16, 16))
    bad[3, 0, 0, 0] = np.nan
    for targets, match in [(bad, "finite"), (np.zeros((5, 2)), "one row per sample"), (np.array(["a"] * 6).reshape(6, 1), "numeric"),
                           (np.zeros(6), r"shape \(6, \.\.\.\)")]:
        np.savez(tmp_path / "bad.npz", x=x, targets=targets)
        with pytest.raises(DataError, match=match):
            load_dataset(str(tmp_path / "bad.npz"))
    # targets whose rows do not have the output's shape: a DataError naming the expected shape
    np.savez(tmp_path / "wrong.npz", x=x, targets=np.zeros((6, 3, 16, 16)))
    with pytest.raises(DataError, match=r"\(N, 2, 16, 16\)"):
        scan(files["Gradient"], data=str(tmp_path / "wrong.npz"), symmetry=["rot90"], task="vector-field",
             model_factory=dfactory("Gradient"), reference="label", out=str(tmp_path / "o"), device="cpu")


def test_label_reference_without_targets_is_a_usage_error(files, tmp_path):
    with pytest.raises(ConfigError, match="targets"):
        run(files, tmp_path, "Gradient", "no_targets", ["d4"], "vector-field", reference="label")
    with pytest.raises(ConfigError, match="'true_flow'"):
        run(files, tmp_path, "Gradient", "flow", ["d4"], "vector-field", reference="label", targets_key="true_flow")
    with pytest.raises(ConfigError, match="labels"):  # classifiers still need y, targets or not
        scan(files["Gradient"], data=str(files["flow"]), symmetry=["rot90"], model_factory=dfactory("Gradient"),
             reference="label", out=str(tmp_path / "o"), device="cpu")
    res = CliRunner().invoke(app, ["scan", str(files["Gradient"]), "--data", str(files["no_targets"]), "-s", "d4",
                                   "--task", "vector-field", "--reference", "label", "--model-factory", dfactory("Gradient"),
                                   "--out", str(tmp_path / "cli"), "--quiet"])
    assert res.exit_code == 2, res.output
    assert "targets" in res.output


# ---- CLI ---------------------------------------------------------------------------------------------------


def test_cli_targets_key_on_toy_data(files, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["scan", str(files["Gradient"]), "--data", str(files["flow_noisy"]), "-s", "d4",
                                   "--task", "vector-field", "--reference", "label", "--targets-key", "true_flow",
                                   "--model-factory", dfactory("Gradient"), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    d = json.loads((out / "result.json").read_text())
    assert d["data"]["has_targets"] is True and d["data"]["targets_key"] == "true_flow"
    assert d["settings"]["values"]["targets_key"] == "true_flow"
    assert d["symmetries"][0]["reference"] == "label" and d["symmetries"][0]["summary"]["epe"] > 0.01


def test_cli_label_reference_on_the_piv_sample(tmp_path):
    out = tmp_path / "piv"
    res = CliRunner().invoke(app, ["scan", str(SAMPLES / "piv_flow.pt"), "--reference", "label", "--limit", "12",
                                   "--device", "cpu", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    d = json.loads((out / "result.json").read_text())
    assert d["data"]["has_targets"] is True and d["data"]["targets_key"] == "flow"  # from the sidecar
    assert {s["reference"] for s in d["symmetries"]} == {"label"}
    for s in d["symmetries"]:
        assert 0 < s["summary"]["epe"] < 1.0  # a trained estimator: close to the true flow, not exact
