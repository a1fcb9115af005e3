"""eqaudit discover: the symmetry spectrum of models whose continuous symmetries are known by construction."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import toy_discover
from conftest import export_onnx
from eqaudit.cli import app
from eqaudit.config import resolve
from eqaudit.discover import FD_METHOD, JVP_METHOD, _affine2d, build_algebra, run_discover, vector_text, verdicts
from eqaudit.errors import ConfigError, SymmetryError
from eqaudit.symmetries import parse_symmetry

TOY = Path(toy_discover.__file__)
H = 24


def _factory(name: str) -> str:
    return f"{TOY}:{name}"


def _blobs(n: int, seed: int) -> np.ndarray:
    """(n, 1, H, H) smooth images: two anisotropic Gaussian blobs each, away from the border."""
    rng = np.random.default_rng(seed)
    i, j = np.arange(H)[:, None], np.arange(H)[None, :]
    x = np.zeros((n, 1, H, H))
    for amp, off in ((1.0, 0.0), (0.5, 3.0)):
        cy, cx = rng.uniform(8, 16, (2, n, 1, 1)) + off
        sy, sx = rng.uniform(1.5, 3.0, (2, n, 1, 1))
        x[:, 0] += amp * np.exp(-((i - cy) ** 2 / (2 * sy**2) + (j - cx) ** 2 / (2 * sx**2)))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("discover")
    out = {"dir": d}
    np.savez(d / "img.npz", x=_blobs(20, 0), y=np.zeros(20, dtype=np.int64))
    np.savez(d / "pts.npz", x=np.random.default_rng(1).normal(size=(16, 9, 3)).astype(np.float32))
    t = np.arange(32) / 32
    rng = np.random.default_rng(2)
    sig = np.sin(2 * np.pi * (rng.integers(1, 4, (12, 2, 1)) * t + rng.uniform(0, 1, (12, 2, 1))))
    np.savez(d / "sig.npz", x=sig.astype(np.float32))
    for name in ["RadialNet", "CircularQuadNet", "PlainMLP", "DistanceNet", "ZRotationNet", "CircularQuad1D"]:
        module = getattr(toy_discover, name)()
        torch.save(module.state_dict(), d / f"{name}.pt")
        out[name] = d / f"{name}.pt"
    out["RadialNet.onnx"] = export_onnx(toy_discover.RadialNet(), d / "radial.onnx", torch.zeros(2, 1, H, H))
    out["DistanceNet.onnx"] = export_onnx(toy_discover.DistanceNet(), d / "distance.onnx", torch.zeros(2, 9, 3))
    return out


def discover(files, model: str, data: str, *, algebra=None, onnx: bool = False, layers: bool = False, **flags) -> dict:
    path = files[model + ".onnx"] if onnx else files[model]
    given = {"data": str(files["dir"] / f"{data}.npz"), "device": "cpu", "out": str(files["dir"] / "out"), **flags}
    if not onnx:
        given["model_factory"] = _factory(model)
    result, _ = run_discover(path, resolve(given, models=[path]), algebra=algebra, layers=layers, write=False)
    return result


def by_name(result: dict) -> dict:
    return {g["name"]: g for g in result["generators"]}


# ---- generators --------------------------------------------------------------------------------------


def test_affine2d_tangents_match_the_analytic_flow():
    """On a smooth Gaussian the band-limited tangents equal -grad I . (A p + b) computed analytically."""
    n = 32
    c = n / 2
    pos = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / c
    u, v = pos.view(1, -1), pos.view(-1, 1)
    a, b, s = 30.0, 20.0, 0.1  # exp(-(a (U - s)^2 + b V^2)): anisotropic and off-centre
    img = torch.exp(-(a * (u - s) ** 2 + b * v**2))
    gu, gv = -2 * a * (u - s) * img, -2 * b * v * img
    expected = [-gu, -gv, u * gv - v * gu, -(u * gu + v * gv), -(u * gu - v * gv), -(v * gu + u * gv)]
    got = _affine2d(img.view(1, 1, n, n))
    for k, e in enumerate(expected):
        assert float((got[k, 0, 0] - e).abs().max()) < 1e-6 * float(e.abs().max()) + 1e-9, k


def test_affine2d_agrees_with_the_catalogue_tangents():
    """Same directions and units as the catalogue: translate exactly (times half the side), rotate and
    scale (bilinear resamplers) to their interpolation error; rotation is counter-clockwise as displayed."""
    x = torch.as_tensor(_blobs(2, 3), dtype=torch.float64)
    mine = _affine2d(x)
    c = H / 2
    dx, dy = (t[1] for t in parse_symmetry("translate").tangents(x))
    assert torch.allclose(mine[0] / c, dx, atol=1e-12) and torch.allclose(mine[1] / c, dy, atol=1e-12)
    rot = parse_symmetry("rotate").tangents(x)[0][1]
    scale = parse_symmetry("scale").tangents(x)[0][1]  # per log2
    assert float((mine[2] - rot).norm() / rot.norm()) < 0.2
    assert float((mine[3] * math.log(2) - scale).norm() / scale.norm()) < 0.2
    assert float((-mine[2] - rot).norm() / rot.norm()) > 1.5  # the opposite sense is far off


def test_build_algebra_names_and_errors():
    probe = torch.zeros(1, 1, H, H)
    assert [g.name for g in build_algebra(["affine2d"], (1, H, H), probe).generators] == ["tx", "ty", "rot", "scale", "stretch", "shear"]
    assert [g.name for g in build_algebra(None, (9, 3), torch.zeros(1, 9, 3)).generators] == ["rx", "ry", "rz", "tx", "ty", "tz"]
    assert [g.name for g in build_algebra(["so3"], (9, 3), torch.zeros(1, 9, 3)).generators] == ["rx", "ry", "rz"]
    assert [g.name for g in build_algebra(["shift1d"], (2, 1, 32), torch.zeros(1, 2, 1, 32)).generators] == ["t"]
    assert [(g.name, g.unit) for g in build_algebra(["rotate"], (1, H, H), probe).generators] == [("angle", "rad")]
    with pytest.raises(ConfigError, match="points data for --algebra so3.*affine2d"):
        build_algebra(["so3"], (1, H, H), probe)
    with pytest.raises(SymmetryError, match="rot90.*finite group"):
        build_algebra(["rot90"], (1, H, H), probe)
    with pytest.raises(SymmetryError, match="affine3d"):
        build_algebra(["affine3d"], (1, H, H), probe)
    with pytest.raises(ConfigError, match="dx, dy twice"):
        build_algebra(["translate", "translate"], (1, H, H), probe)


def test_verdicts_and_vector_text():
    vd, learned = verdicts(np.array([0.0, 5e-4, 2e-3, 0.05, 0.1, 3.0]), floor=1e-6)
    assert learned == 1e-3 and vd == ["learned", "learned", "partly", "partly", "not", "not"]
    vd, learned = verdicts(np.array([5e-4, 2e-3, 0.05]), floor=1e-3, learned_at=1e-4, not_at=0.04)
    assert learned == pytest.approx(1e-2) and vd == ["learned", "learned", "not"]
    assert vector_text(np.array([0.02, -0.14, 0.99, 0.004]), ["tx", "scale", "rot", "shear"]) == "0.99 rot - 0.14 scale + 0.02 tx"


# ---- known answers -----------------------------------------------------------------------------------


def test_radial_model_learns_rotation_only(files):
    r = discover(files, "RadialNet", "img")
    g = by_name(r)
    assert r["method"] == JVP_METHOD and r["floor"] < 1e-5
    assert g["rot"]["verdict"] == "learned" and g["rot"]["value"] <= r["thresholds"]["learned"]
    assert all(g[n]["verdict"] == "not" for n in ("tx", "ty", "scale"))
    first, second = r["spectrum"][0], r["spectrum"][1]
    assert abs(first["vector"]["rot"]) > 0.99 and first["at_floor"] and first["value"] <= r["thresholds"]["learned"]
    assert not second["at_floor"] and second["value"] > 100 * first["value"]
    assert [s["value"] for s in r["spectrum"]] == sorted(s["value"] for s in r["spectrum"])


def test_circular_network_learns_both_translations(files):
    r = discover(files, "CircularQuadNet", "img")
    g = by_name(r)
    assert g["tx"]["verdict"] == g["ty"]["verdict"] == "learned"
    assert all(g[n]["verdict"] != "learned" for n in ("rot", "scale", "stretch", "shear"))
    low = r["spectrum"][:2]
    assert all(s["at_floor"] for s in low) and not r["spectrum"][2]["at_floor"]
    for s in low:  # the two at-floor vectors span the translations
        assert s["vector"]["tx"] ** 2 + s["vector"]["ty"] ** 2 > 0.999


def test_plain_mlp_learns_nothing(files):
    r = discover(files, "PlainMLP", "img")
    assert {g["verdict"] for g in r["generators"]} == {"not"}
    assert not any(s["at_floor"] for s in r["spectrum"])


def test_distance_model_learns_se3_and_z_model_only_rz(files):
    r = discover(files, "DistanceNet", "pts")
    assert r["algebra"] == ["se3"] and [g["name"] for g in r["generators"]] == ["rx", "ry", "rz", "tx", "ty", "tz"]
    assert {g["verdict"] for g in r["generators"]} == {"learned"} and all(s["at_floor"] for s in r["spectrum"])
    z = by_name(discover(files, "ZRotationNet", "pts"))
    assert z["rz"]["verdict"] == "learned"
    assert all(z[n]["verdict"] == "not" for n in ("rx", "ry", "tx", "ty", "tz"))


def test_signals_shift(files):
    r = discover(files, "CircularQuad1D", "sig", layout="NCL")
    g = by_name(r)
    assert r["algebra"] == ["affine1d"] and g["t"]["verdict"] == "learned" and g["stretch"]["verdict"] == "not"
    assert [x["name"] for x in discover(files, "CircularQuad1D", "sig", layout="NCL", algebra=["shift1d"])["generators"]] == ["t"]


def test_catalogue_symmetries_as_algebras(files):
    """Catalogue generators keep their own names and units: translate's are the same band-limited shifts."""
    r = discover(files, "CircularQuadNet", "img", algebra=["translate", "rotate"])
    g = by_name(r)
    assert [(x["name"], x["unit"]) for x in r["generators"]] == [("dx", "px"), ("dy", "px"), ("angle", "rad")]
    assert g["dx"]["verdict"] == g["dy"]["verdict"] == "learned" and g["angle"]["verdict"] != "learned"


def test_layers_show_where_invariance_appears(files, monkeypatch):
    """The convolution's output moves with the shift (equivariant, not invariant); from the pooled
    features on, both translations are learned; the last layer is the model's output."""
    r = discover(files, "CircularQuadNet", "img", layers=True)
    layers = {x["name"]: by_name(x) for x in r["layers"]}
    assert list(layers) == ["conv", "mlp.0", "mlp.1", "mlp.2"]
    assert layers["conv"]["tx"]["verdict"] == layers["conv"]["ty"]["verdict"] == "not"
    for name in ("mlp.0", "mlp.1", "mlp.2"):
        assert layers[name]["tx"]["verdict"] == layers[name]["ty"]["verdict"] == "learned"
        assert layers[name]["rot"]["verdict"] != "learned"
    np.testing.assert_allclose([g["value"] for g in r["layers"][-1]["generators"]], [g["value"] for g in r["generators"]], rtol=1e-6, atol=1e-9)
    monkeypatch.setattr("eqaudit.discover.LAYER_CHUNK", 3)  # layers in chunks of 3 samples: the same numbers
    chunked = discover(files, "CircularQuadNet", "img", layers=True)
    for a, b in zip(r["layers"], chunked["layers"]):
        np.testing.assert_allclose([g["value"] for g in a["generators"]], [g["value"] for g in b["generators"]], rtol=1e-5, atol=10 * a["floor"])
    o = discover(files, "RadialNet", "img", onnx=True, layers=True)
    assert o["layers"] is None and "torch" in o["layers_reason"]


def test_torch_and_onnx_agree(files):
    for model, data in (("RadialNet", "img"), ("DistanceNet", "pts")):
        t, o = discover(files, model, data), discover(files, model, data, onnx=True)
        assert t["method"] == JVP_METHOD and o["method"] == FD_METHOD
        assert o["floor"] > t["floor"]  # differences are noisier than forward-mode AD
        assert [g["verdict"] for g in t["generators"]] == [g["verdict"] for g in o["generators"]]
        for a, b in zip(t["generators"], o["generators"]):
            if a["verdict"] == "learned":
                assert b["value"] <= o["thresholds"]["learned"]
            else:
                assert b["value"] == pytest.approx(a["value"], rel=1e-3)


def test_results_do_not_depend_on_batch_size(files):
    for onnx in (False, True):
        a = discover(files, "RadialNet", "img", onnx=onnx, batch_size=3)
        b = discover(files, "RadialNet", "img", onnx=onnx, batch_size=64)
        tol = 10 * max(a["floor"], b["floor"])
        np.testing.assert_allclose([g["value"] for g in a["generators"]], [g["value"] for g in b["generators"]], rtol=1e-5, atol=tol)
        np.testing.assert_allclose([s["value"] for s in a["spectrum"]], [s["value"] for s in b["spectrum"]], rtol=1e-5, atol=tol)
        assert a["output_spread"] == pytest.approx(b["output_spread"], rel=1e-6)


# ---- CLI ---------------------------------------------------------------------------------------------

runner = CliRunner()


def run(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes is not None else "")


def test_cli_writes_json_plot_and_page(files, tmp_path):
    out = tmp_path / "o"
    code, text = run("discover", files["RadialNet"], "--data", files["dir"] / "img.npz", "--model-factory", _factory("RadialNet"),
                     "--out", out, "--device", "cpu", "--not-at", "0.5", "--layers")
    assert code == 0, text
    assert "1.00 rot" in text and "learned" in text and "floor" in text
    r = json.loads((out / "result.json").read_text())
    assert r["kind"] == "discover" and r["algebra"] == ["affine2d"]
    assert all(set(g) >= {"name", "value", "verdict"} and g["verdict"] in ("learned", "partly", "not") for g in r["generators"])
    assert all(set(s) >= {"value", "vector"} and list(s["vector"]) == [g["name"] for g in r["generators"]] for s in r["spectrum"])
    assert r["thresholds"]["not_at"] == 0.5
    assert (out / "plots" / "spectrum.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert "RadialNet.pt" in page and "rot" in page and "data:image/png;base64," in page
    assert [x["name"] for x in r["layers"]] == ["mlp.0", "mlp.1", "mlp.2"] and "<h2>Layers</h2>" in page and "mlp.0" in text


def test_cli_exit_codes(files, tmp_path):
    base = ["discover", files["RadialNet"], "--model-factory", _factory("RadialNet"), "--device", "cpu", "--out", tmp_path / "o"]
    img = files["dir"] / "img.npz"
    cases = [
        ([*base, "--data", img, "--algebra", "affine3d"], 2, "affine3d"),
        ([*base, "--data", img, "--algebra", "so3"], 2, "so3"),
        ([*base, "--data", img, "--algebra", "rot90"], 2, "finite group"),
        ([*base, "--data", tmp_path / "missing.npz"], 2, "missing.npz"),
        ([*base], 2, "--data"),
        ([*base, "--data", img, "--learned-at", "0.5", "--not-at", "0.1"], 2, "--learned-at"),
        (["discover", tmp_path / "nope.pt", "--data", img], 2, "nope.pt"),
        (["discover", files["RadialNet"], "--data", img, "--model-factory", _factory("PlainMLP"), "--out", tmp_path / "o"], 3, "RadialNet.pt"),
    ]
    for args, want, needle in cases:
        code, text = run(*args)
        assert code == want, (args, text)
        assert needle in text and "Traceback" not in text, (args, text)
