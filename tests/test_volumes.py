"""Volumes (N, C, D, H, W): rot90-3d and flip3d against torch references and group laws, and scans of
models invariant or equivariant by construction (classifiers, a vector output, channels-last input)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import toy_volumes
from eqaudit import scan
from eqaudit.cli import app
from eqaudit.errors import SymmetryError
from eqaudit.symmetries import parse_symmetry
from eqaudit.symmetries.volumes import cube

N = 12


def _random(shape=(3, 2, 4, 5, 6)):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def test_cube_group_is_the_24_rotations():
    CUBE = cube()
    dets = torch.linalg.det(CUBE.double())
    assert CUBE.shape == (24, 3, 3) and bool((dets == 1).all())
    assert len({m.numpy().tobytes() for m in CUBE}) == 24
    # closed under products
    keys = {m.numpy().tobytes() for m in CUBE}
    assert all((a @ b).numpy().tobytes() in keys for a, b in itertools.product(CUBE, CUBE))


def test_quarter_turns_match_torch_rot90_and_flips_match_torch_flip():
    x = _random((2, 1, 5, 5, 5))
    rot = parse_symmetry("rot90-3d")
    out = rot.act(x, rot.elements)
    at = dict(zip(rot.labels, out))
    # (x, y, z) = (W, H, D) = dims (-1, -2, -3); a right-handed quarter turn about z takes x to y
    assert torch.equal(at["z90"], torch.rot90(x, 1, dims=(-1, -2)))
    assert torch.equal(at["x90"], torch.rot90(x, 1, dims=(-2, -3)))
    assert torch.equal(at["y90"], torch.rot90(x, 1, dims=(-3, -1)))
    assert torch.equal(at["z180"], torch.rot90(x, 2, dims=(-1, -2)))
    flip = parse_symmetry("flip3d")
    got = dict(zip(flip.labels, flip.act(x, flip.elements)))
    assert torch.equal(got["flip-x"], torch.flip(x, dims=(-1,)))
    assert torch.equal(got["flip-yz"], torch.flip(x, dims=(-2, -3)))
    assert torch.equal(got["flip-xyz"], torch.flip(x, dims=(-1, -2, -3)))
    assert parse_symmetry("flip3d:axis=z").labels == ["id", "flip-z"]


@pytest.mark.parametrize("spec", ["rot90-3d", "flip3d", "flip3d:axis=y"])
def test_group_laws_on_volumes(spec):
    sym = parse_symmetry(spec)
    x = _random((2, 2, 5, 5, 5))
    el = sym.elements
    e = len(el)
    assert el[sym.identity_index].abs().sum() == 0 and sym.labels[sym.identity_index] == "id"
    b = el[torch.randperm(e, generator=torch.Generator().manual_seed(1))]
    xs = x.unsqueeze(0).expand(e, *x.shape)
    assert torch.equal(sym.apply(sym.apply(xs, b), el), sym.apply(xs, sym.compose(el, b)))
    assert torch.equal(sym.apply(sym.apply(xs, el), sym.inverse(el)), xs)
    # vectors turn like the voxels: the centroid of a single bright voxel moves with it
    vol = torch.zeros(1, 1, 5, 5, 5, dtype=torch.float64)
    vol[0, 0, 1, 0, 3] = 1.0  # z=1, y=0, x=3
    pos = torch.tensor([[[3.0 - 2, 0.0 - 2, 1.0 - 2]]], dtype=torch.float64).expand(e, 1, 3)
    moved = sym.act(vol, el)[:, 0, 0]  # (E, D, H, W)
    idx = moved.flatten(1).argmax(1)
    zz, yy, xx = idx // 25, (idx // 5) % 5, idx % 5
    assert torch.equal(sym.vectors(pos, el)[:, 0], torch.stack([xx, yy, zz], 1).double() - 2)


def test_non_cubic_volumes_bind_the_shape_keeping_subgroup():
    sym = parse_symmetry("rot90-3d")
    sym.check_input((1, 4, 4, 6))  # D = H != W: turns about x keep the shape, and the half turns
    assert sym.labels == ["id", "x90", "x180", "x270", "y180", "z180", "yz180", "y-z180"]
    assert sym.notes and "4x4x6" in sym.notes[0] and "8" in sym.notes[0]
    x = _random((2, 1, 4, 4, 6))
    assert sym.act(x, sym.elements).shape == (8, 2, 1, 4, 4, 6)
    sym.check_input((1, 3, 4, 5))
    assert sym.labels == ["id", "x180", "y180", "z180"]
    sym.check_input((1, 5, 5, 5))
    assert len(sym.labels) == 24 and sym.notes == []
    with pytest.raises(SymmetryError, match=r"\(C, D, H, W\)"):
        sym.check_input((1, 5, 5))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("volumes")
    out = {}
    for name in ["PooledVolumeNet", "ChannelsLastPooled", "PlainVolumeNet", "Centroid"]:
        out[name] = d / f"{name}.pt"
        torch.save(getattr(toy_volumes, name)().state_dict(), out[name])
    g = np.random.default_rng(5)
    s = toy_volumes.SIZE
    x = g.normal(size=(N, 2, s, s, s)).astype(np.float32)
    y = g.integers(0, toy_volumes.CLASSES, N)
    np.savez(d / "ncdhw.npz", x=x, y=y)
    np.savez(d / "ndhwc.npz", x=np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1)), y=y)
    np.savez(d / "unlabelled.npz", x=x)
    out["ncdhw"], out["ndhwc"], out["unlabelled"] = d / "ncdhw.npz", d / "ndhwc.npz", d / "unlabelled.npz"
    return out


def _scan(files, tmp_path, model, data, symmetries, **kw):
    return scan(files[model], data=str(files[data]), symmetry=symmetries, model_factory=f"toy_volumes:{model}",
                out=str(tmp_path / "out"), device="cpu", **kw)


def _by_spec(result):
    return {s.spec: s for s in result.symmetries}


def test_pooled_classifier_is_invariant_and_plain_one_is_flagged(files, tmp_path):
    got = _by_spec(_scan(files, tmp_path / "a", "PooledVolumeNet", "ncdhw", ["rot90-3d", "flip3d"]))
    for spec in ("rot90-3d", "flip3d"):
        assert got[spec].summary["flip_rate"] == 0 and got[spec].summary["prob_tv"] < 1e-6, spec
        assert got[spec].summary["logit_error"] < 1e-5, spec
    assert len(got["rot90-3d"].per_element) == 24 and got["rot90-3d"].domain == "volume"
    plain = _by_spec(_scan(files, tmp_path / "b", "PlainVolumeNet", "ncdhw", ["rot90-3d", "flip3d"]))
    for spec in ("rot90-3d", "flip3d"):
        assert plain[spec].summary["prob_tv"] > 1e-2, spec


def test_channels_last_volumes_read_exactly_the_numbers_of_ncdhw(files, tmp_path):
    ref = _by_spec(_scan(files, tmp_path / "a", "PooledVolumeNet", "ncdhw", ["rot90-3d"]))
    res = _scan(files, tmp_path / "b", "ChannelsLastPooled", "ndhwc", ["rot90-3d"], layout="NDHWC")
    assert res.data.layout == "NDHWC" and res.data.sample_shape == [2, 6, 6, 6]
    got = _by_spec(res)["rot90-3d"]
    for key in ("flip_rate", "prob_tv", "logit_error", "accuracy"):
        assert got.summary[key] == ref["rot90-3d"].summary[key], key


def test_vector_output_turns_with_the_volume(files, tmp_path):
    vec = _by_spec(_scan(files, tmp_path / "a", "Centroid", "ncdhw", ["rot90-3d", "flip3d"], output=["vector"]))
    for spec in ("rot90-3d", "flip3d"):
        assert vec[spec].summary["equivariance_error"] < 1e-5, spec
    # declared as a pseudovector, the mirrors (det -1) read a clear error; rotations still hold
    pseudo = _by_spec(_scan(files, tmp_path / "b", "Centroid", "ncdhw", ["rot90-3d", "flip3d"], output=["pseudovector"]))
    assert pseudo["rot90-3d"].summary["equivariance_error"] < 1e-5
    assert pseudo["flip3d"].summary["equivariance_error"] > 0.1
    # declared invariant, it is not
    inv = _by_spec(_scan(files, tmp_path / "c", "Centroid", "unlabelled", ["rot90-3d"], output=["invariant"]))
    assert inv["rot90-3d"].summary["equivariance_error"] > 0.1


def test_cli_scans_volumes_and_refuses_images(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(app, ["scan", str(files["ChannelsLastPooled"]), "--data", str(files["ndhwc"]), "--layout", "NDHWC",
                            "-s", "rot90-3d", "-s", "flip3d:axis=x", "--model-factory", "toy_volumes:ChannelsLastPooled",
                            "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "result.json").read_text())
    assert [s["spec"] for s in saved["symmetries"]] == ["rot90-3d", "flip3d:axis=x"]
    assert (out / "report.html").is_file()
    r = runner.invoke(app, ["scan", str(files["PooledVolumeNet"]), "--data", str(files["ncdhw"]), "-s", "rot90",
                            "--model-factory", "toy_volumes:PooledVolumeNet", "--out", str(tmp_path / "bad"), "--device", "cpu"])
    assert r.exit_code == 2 and "(C, H, W)" in r.output
