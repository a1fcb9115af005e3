"""Models with several named inputs: fed by name, --input mapping, --act-on, permute moving every point-axis input."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from typer.testing import CliRunner

from eqaudit.api import scan
from eqaudit.cli import app
from eqaudit.inputs import orbit
from eqaudit.symmetries.outputs import point_permutation
from eqaudit.symmetries import parse_symmetry

sys.path.insert(0, str(Path(__file__).parent))
import toy_multi  # noqa: E402
from toy_multi import CLASSES, FEATURES, POINTS  # noqa: E402

MULTI_FILE = Path(__file__).parent / "toy_multi.py"
N = 10
SYMS = ["so3:n=6", "permute:n=6"]


def mfactory(name: str) -> str:
    return f"{MULTI_FILE}:{name}"


def point_data(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    return {"pos": g.normal(size=(n, POINTS, 3)).astype(np.float32),
            "feat": g.normal(size=(n, POINTS, FEATURES)).astype(np.float32),
            "y": g.integers(0, CLASSES, n).astype(np.int64)}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Data and the point-set and rate models as state dicts, ONNX and .pt2 files."""
    folder = tmp_path_factory.mktemp("multi")
    out = {"points.npz": folder / "points.npz", "rate.npz": folder / "rate.npz"}
    np.savez(out["points.npz"], **point_data())
    g = np.random.default_rng(1)
    np.savez(out["rate.npz"], img=g.normal(size=(N, 1, 8, 8)).astype(np.float32),
             rate=g.choice([8000, 16000, 44100], N).astype(np.int64))
    torch.manual_seed(0)
    for name in ["PointSetNet", "BrokenPointSetNet", "RateNet"]:
        out[name] = folder / f"{name}.pt"
        torch.save(getattr(toy_multi, name)().state_dict(), out[name])
    net = toy_multi.PointSetNet().eval()
    net.load_state_dict(torch.load(out["PointSetNet"]))
    pos, feat = torch.randn(3, POINTS, 3), torch.randn(3, POINTS, FEATURES)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(net, (pos, feat), dynamic_shapes={"pos": {0: batch}, "feat": {0: batch}})
        torch.export.save(ep, str(folder / "PointSetNet.pt2"))
        torch.onnx.export(net, (pos, feat), str(folder / "PointSetNet.onnx"), input_names=["pos", "feat"],
                          output_names=["logits"], dynamic_shapes={"pos": {0: batch}, "feat": {0: batch}},
                          dynamo=True, external_data=False, verbose=False)
        rate = toy_multi.RateNet().eval()
        rate.load_state_dict(torch.load(out["RateNet"]))
        torch.onnx.export(rate, (torch.randn(3, 1, 8, 8), torch.tensor([8000, 16000, 8000])), str(folder / "RateNet.onnx"),
                          input_names=["img", "sr"], output_names=["logits"], dynamic_shapes={"img": {0: batch}, "sr": {0: batch}},
                          dynamo=True, external_data=False, verbose=False)
    out["PointSetNet.pt2"] = folder / "PointSetNet.pt2"
    out["PointSetNet.onnx"] = folder / "PointSetNet.onnx"
    out["RateNet.onnx"] = folder / "RateNet.onnx"
    return out


def run(files, tmp_path, model: str, data: str, symmetries, **kw):
    name = model.split(".")[0]
    factory = mfactory(name) if model == name else None
    return scan(files[model], data=str(files[data]), symmetry=symmetries, model_factory=factory,
                out=str(tmp_path / "out"), device="cpu", **kw)


@pytest.mark.parametrize("model", ["PointSetNet", "PointSetNet.pt2", "PointSetNet.onnx"])
def test_invariant_multi_input_point_model_reads_float_noise(files, tmp_path, model):
    res = run(files, tmp_path, model, "points.npz", SYMS, act_on=["pos"])
    for s in res.symmetries:
        assert s.summary["prob_tv"] < 1e-6, (s.spec, s.summary["prob_tv"])
        assert s.summary["flip_rate"] == 0.0
    assert res.data.inputs == {"pos": "pos", "feat": "feat"}
    assert res.data.act_on == ["pos"]
    assert res.data.sample_shape == [POINTS, 3]


def test_breaking_the_feature_permutation_reads_a_clear_error_under_permute_only(files, tmp_path):
    res = {s.name: s.summary for s in run(files, tmp_path, "BrokenPointSetNet", "points.npz", SYMS, level_at_init=True).symmetries}
    assert res["so3"]["prob_tv"] < 1e-6
    assert res["permute"]["prob_tv"] > 1e-3
    assert res["so3"]["level_at_init"] == pytest.approx(1.0)  # fresh weights of the same architecture, fed the same inputs


def bound(spec: str):
    sym = parse_symmetry(spec)
    sym.check_input((POINTS, 3))
    return sym


def test_permute_moves_every_input_with_the_point_axis_and_repeats_the_others():
    d = point_data(4)
    pos, feat = torch.from_numpy(d["pos"]), torch.from_numpy(d["feat"])
    extra = torch.arange(4 * 5, dtype=torch.float32).view(4, 5)  # no point axis: repeated as is
    sym = bound("permute:n=5")
    el = sym.elements
    out = orbit(sym, {"pos": pos, "feat": feat, "extra": extra}, el, ["pos"])
    perm = el.round().long()
    for e in range(el.shape[0]):
        assert torch.equal(out["pos"][e], pos[:, perm[e]])
        assert torch.equal(out["feat"][e], feat[:, perm[e]])
        assert torch.equal(out["extra"][e], extra)
    # the mechanism matters: with features left in place the invariant model reads a clear change
    net = toy_multi.PointSetNet().eval()
    with torch.no_grad():
        ref = net(pos, feat)
        moved = net(out["pos"][1], out["feat"][1])
        unmoved = net(out["pos"][1], feat)
    assert_close(moved, ref, rtol=0, atol=1e-5)
    assert (unmoved - ref).abs().max() > 1e-3


def test_a_product_composes_its_point_permutations_and_rotations_leave_other_inputs_alone():
    d = point_data(3)
    pos, feat = torch.from_numpy(d["pos"]).double(), torch.from_numpy(d["feat"]).double()
    sym = bound("so3:n=3*permute:n=3")
    out = orbit(sym, {"pos": pos, "feat": feat}, sym.elements, ["pos"])
    perm = point_permutation(sym, sym.elements)
    assert perm.shape == (sym.n_elements, POINTS)
    norms = pos.norm(dim=-1)
    for e in range(sym.n_elements):  # the features follow the points: row i of both came from point perm[e, i]
        assert_close(out["feat"][e], feat[:, perm[e]])
        assert_close(out["pos"][e].norm(dim=-1), norms[:, perm[e]], rtol=0, atol=1e-12)
    rot = bound("so3:n=3")
    vel = torch.randn(3, POINTS, 3, dtype=torch.float64)
    both = orbit(rot, {"pos": pos, "feat": feat, "vel": vel}, rot.elements, ["pos", "vel"])
    assert_close(both["vel"], rot.act(vel, rot.elements))  # a second acted-on input moves with the same elements
    assert torch.equal(both["feat"], feat.expand(rot.n_elements, *feat.shape))  # the others are only repeated


@pytest.mark.parametrize("model", ["RateNet", "RateNet.onnx"])
def test_an_int64_input_is_fed_by_name_with_its_dtype(files, tmp_path, model):
    res = run(files, tmp_path, model, "rate.npz", ["rot90", "flip"], input=["sr=rate"])
    for s in res.symmetries:
        assert s.summary["prob_tv"] < 1e-6 and s.summary["flip_rate"] == 0.0
    assert res.data.inputs == {"img": "img", "sr": "rate"} and res.data.act_on == ["img"]


def test_results_do_not_depend_on_batch_size(files, tmp_path):
    small = run(files, tmp_path / "a", "BrokenPointSetNet", "points.npz", SYMS, batch_size=7)
    large = run(files, tmp_path / "b", "BrokenPointSetNet", "points.npz", SYMS, batch_size=64)
    for a, b in zip(small.symmetries, large.symmetries):
        for key in ("prob_tv", "flip_rate", "logit_error"):
            if key in a.summary:
                assert a.summary[key] == pytest.approx(b.summary[key], rel=1e-5, abs=1e-7), key


def cli(files, tmp_path, model: str, data: Path, *extra: str):
    args = ["scan", str(files[model]), "--data", str(data), "--symmetry", "so3:n=2", "--device", "cpu",
            "--out", str(tmp_path / "out"), "--quiet", "--model-factory", mfactory(model), *extra]
    return CliRunner().invoke(app, args)


def test_cli_errors_name_the_inputs_and_the_fix(files, tmp_path):
    d = point_data()
    np.savez(tmp_path / "renamed.npz", pos=d["pos"], features=d["feat"])
    r = cli(files, tmp_path, "PointSetNet", tmp_path / "renamed.npz")
    assert r.exit_code == 3, r.output
    assert "'feat'" in r.output and "features" in r.output and "--input feat=KEY" in r.output
    assert cli(files, tmp_path, "PointSetNet", tmp_path / "renamed.npz", "--input", "feat=features").exit_code == 0

    r = cli(files, tmp_path, "PointSetNet", files["points.npz"], "--act-on", "positions")
    assert r.exit_code == 2 and "'positions'" in r.output and "pos, feat" in r.output, r.output

    np.savez(tmp_path / "ragged.npz", pos=d["pos"], feat=d["feat"][:-1])
    r = cli(files, tmp_path, "PointSetNet", tmp_path / "ragged.npz")
    assert r.exit_code == 3 and "same number of samples" in r.output, r.output

    r = cli(files, tmp_path, "PointSetNet", files["points.npz"], "--local")
    assert r.exit_code == 2 and "--local" in r.output, r.output

    r = cli(files, tmp_path, "PointSetNet", files["points.npz"], "--input", "feat")
    assert r.exit_code == 2 and "NAME=KEY" in r.output, r.output
