"""Several inputs as fields: each input in its own layout (--layout NAME=LAYOUT), and how the group acts on
each moved input (--act-on NAME=TYPE: positions move, vectors only turn)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from eqaudit.api import scan
from eqaudit.cli import app
from eqaudit.errors import ConfigError

TESTS = Path(__file__).parent
TOYS = TESTS / "toy_fields.py"
sys.path.insert(0, str(TESTS))
import toy_fields  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fields")
    g = np.random.default_rng(2)
    img = g.normal(size=(9, 1, 6, 8)).astype(np.float32)
    sig = g.normal(size=(9, 2, 16)).astype(np.float32)
    out = {"first": folder / "first.npz", "last": folder / "last.npz"}
    np.savez(out["first"], img=img, sig=sig)
    np.savez(out["last"], img=img.transpose(0, 2, 3, 1), sig=sig.transpose(0, 2, 1))
    for name in ("ImageSignalNet", "ImageSignalNetLast", "VelocityStep"):
        out[name] = folder / f"{name}.pt"
        torch.save(getattr(toy_fields, name)().state_dict(), out[name])
    return out


def run(files, tmp_path, model, data, specs, **kw):
    res = scan(files[model], data=str(files[data]), symmetry=specs, model_factory=f"{TOYS}:{model}",
               out=str(tmp_path / model), device="cpu", **kw)
    return {s.spec: s.summary for s in res.symmetries}


@pytest.mark.parametrize("layout", [["img=NHWC", "sig=NLC"], "img=nhwc,sig=nlc"])
def test_each_input_in_its_own_layout_reads_what_the_same_network_reads_in_canonical_layouts(files, tmp_path, layout):
    """img (B, H, W, 1) and sig (B, L, 2) stored and taken channels-last read what img (B, 1, H, W) and sig
    (B, 2, L) (NCL) read in the same network: flip mirrors the image and reverses the signal together;
    rot180 and shifts move the image alone while sig rides along (converted back)."""
    for act_on, specs in ((["img", "sig"], ["flip"]), (None, ["rot180", "translate:max=1"])):
        canon = run(files, tmp_path / "a", "ImageSignalNet", "first", specs, act_on=act_on, layout=["sig=NCL"])
        last = run(files, tmp_path / "b", "ImageSignalNetLast", "last", specs, act_on=act_on, layout=layout)
        for spec in specs:
            assert canon[spec]["prob_tv"] > 1e-3, spec  # a real measurement, not a trivially invariant model
            for key in ("prob_tv", "flip_rate", "logit_error"):
                assert last[spec][key] == pytest.approx(canon[spec][key], rel=1e-6, abs=1e-9), (spec, key)


def test_layout_declarations_are_checked_with_typed_errors(files, tmp_path):
    with pytest.raises(ConfigError, match=r"--layout to name an input of the model \(img, sig\), got 'image'"):
        run(files, tmp_path, "ImageSignalNetLast", "last", ["flip"], layout=["image=NHWC"])
    args = ["scan", str(files["ImageSignalNetLast"]), "--data", str(files["last"]), "-s", "flip", "--device", "cpu", "--quiet",
            "--model-factory", f"{TOYS}:ImageSignalNetLast", "--out", str(tmp_path / "cli")]
    for extra, words in ((["--layout", "image=NHWC"], ["image", "img, sig"]), (["--layout", "NHWC", "--layout", "NCL"], ["at most one"]),
                         (["--layout", "img=NHWC,img=NCHW"], ["img", "one layout per input"]), (["--layout", "img=NHWX"], ["NHWC"]),
                         (["--layout", "sig=NHWC"], ["rank 3"])):
        r = CliRunner().invoke(app, [*args, *extra])
        assert r.exit_code in (2, 3) and all(w in r.output for w in words), (extra, r.exit_code, r.output)
        assert "Traceback" not in r.output


@pytest.fixture(scope="module")
def nbody(tmp_path_factory) -> Path:
    g = np.random.default_rng(4)
    path = tmp_path_factory.mktemp("nbody") / "nbody.npz"
    np.savez(path, pos=g.normal(size=(8, 5, 3)).astype(np.float32), vel=g.normal(size=(8, 5, 3)).astype(np.float32))
    return path


SPECS = ["so3:n=4", "o3:n=2", "translate3d:max=0.5", "permute:n=4", "e3:n=4"]


def test_velocities_declared_as_vectors_are_turned_not_shifted(files, nbody, tmp_path):
    """next = pos + dt vel + dt^2 a is E(3)-equivariant when vel is a vector: float noise everywhere with
    --act-on pos,vel=vector; moving vel as a position (the default) shifts it too, so translate3d (and e3,
    which holds shifts) read a clear error while rotations and permutations still read noise; declared a
    pseudovector, vel flips under reflections (o3) and reads a clear error there."""
    files = dict(files, nbody=nbody)
    typed = run(files, tmp_path / "typed", "VelocityStep", "nbody", SPECS, act_on=["pos", "vel=vector"], output=["next=positions"])
    plain = run(files, tmp_path / "plain", "VelocityStep", "nbody", SPECS, act_on=["pos", "vel"], output=["next=positions"])
    for spec in SPECS:
        assert typed[spec]["equivariance_error"] < 1e-6, (spec, typed[spec]["equivariance_error"])
    for spec in ("translate3d:max=0.5",):
        assert plain[spec]["equivariance_error"] > 1e-2, spec
    for spec in ("so3:n=4", "o3:n=2", "permute:n=4"):
        assert plain[spec]["equivariance_error"] < 1e-6, spec
    pseudo = run(files, tmp_path / "pseudo", "VelocityStep", "nbody", ["o3:n=2", "so3:n=4"], act_on="pos,vel=pseudovector",
                 output=["next=positions"])
    assert pseudo["o3:n=2"]["equivariance_error"] > 1e-2 and pseudo["so3:n=4"]["equivariance_error"] < 1e-6
    with pytest.raises(ConfigError, match=r"positions, vector, pseudovector, got .vel=velocity."):
        run(files, tmp_path / "bad", "VelocityStep", "nbody", ["so3:n=2"], act_on=["pos", "vel=velocity"], output=["next=positions"])
