"""Declared output types (--output): pseudovectors, label permutations, binary logits, several outputs, logit_error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from eqaudit.api import scan
from eqaudit.cli import app
from eqaudit.errors import ConfigError, SymmetryError
from eqaudit.symmetries import parse_symmetry
from eqaudit.symmetries.outputs import label_map, parity, permute_classes
from eqaudit.tasks.declared import parse_output

from conftest import smooth_images

TOY = Path(__file__).parent / "toy_outputs.py"
NOISE = 1e-5  # float32 models: rounding noise of the forward pass, far below any real error


def fac(name: str) -> str:
    return f"{TOY}:{name}"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import toy_outputs  # noqa: F401  (tests/ is on sys.path via conftest)

    folder = tmp_path_factory.mktemp("outputs")
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(12, 7, 3)).astype(np.float32)
    np.savez(folder / "points.npz", x=pts)
    imgs = smooth_images(16, seed=3, size=10)
    np.savez(folder / "images.npz", x=imgs, y=(np.arange(16) % 2).astype(np.int64))
    out = {"points": folder / "points.npz", "images": folder / "images.npz"}
    np.savez(folder / "crops.npz", x=smooth_images(10, seed=4, size=24)[:, :, 9:15, :])  # 6 x 24 crops
    out["crops"] = folder / "crops.npz"
    for name in ("TorqueNet", "PhysicsNet", "MirrorSwapNet", "HalfTurnLogit", "HalfTurnSwapNet", "PerPointEnergyNet"):
        module = getattr(toy_outputs, name)()
        torch.save(module.state_dict(), folder / f"{name}.pt")
        out[name] = folder / f"{name}.pt"
    physics = toy_outputs.PhysicsNet().eval()
    onnx_path = folder / "physics.onnx"
    torch.onnx.export(physics, (torch.from_numpy(pts[:2]),), str(onnx_path), input_names=["pos"],
                      output_names=["energy", "forces", "torque"], dynamic_axes={"pos": {0: "b"}, "energy": {0: "b"},
                                                                              "forces": {0: "b"}, "torque": {0: "b"}},
                      dynamo=False)
    out["physics.onnx"] = onnx_path
    return out


def run(files, tmp_path, model, data, symmetries, **kw):
    res = scan(files[model], data=str(files[data]), symmetry=symmetries, model_factory=fac(model) if not model.endswith(".onnx") else None,
               out=str(tmp_path / "out"), device="cpu", **kw)
    return {s.spec: s.summary for s in res.symmetries}, res


# ---- parsing -----------------------------------------------------------------------------------------


def test_declarations_parse_names_types_and_permutations():
    d = parse_output("label-perm:rot180=1,0")
    assert (d.name, d.type, d.params) == (None, "label-perm", {"rot180": [1, 0]})
    d = parse_output("vote=label-perm:flip=1,0,2/rot90=2,0,1")
    assert (d.name, d.params) == ("vote", {"flip": [1, 0, 2], "rot90": [2, 0, 1]})
    assert parse_output("energy=invariant").name == "energy"
    for bad, fragment in [("pseudovektor", "did you mean 'pseudovector'"), ("label-perm:flip=1,1", "permutation"),
                          ("label-perm:spin=1,0", "GEN"), ("vector:x=1", "no parameters"), ("label-perm:", "at least one")]:
        with pytest.raises(ConfigError, match=fragment):
            parse_output(bad)


# ---- the group laws of the output actions --------------------------------------------------------------


@pytest.mark.parametrize("spec", ["rot90", "flip", "d4", "d4*swap", "rot90*swap"])
def test_label_maps_compose_like_the_group(spec):
    sym = parse_symmetry(spec)
    perms = {"rot90": torch.tensor([1, 2, 3, 0, 4]), "flip": torch.tensor([3, 2, 1, 0, 4]), "swap": torch.tensor([0, 1, 2, 3, 4])}
    el = sym.elements
    comp = sym.compose(el.repeat_interleave(len(el), 0), el.repeat(len(el), 1))
    to_a = label_map(sym, el.repeat_interleave(len(el), 0), perms)
    to_b = label_map(sym, el.repeat(len(el), 1), perms)
    to_ab = label_map(sym, comp, perms)
    # (ab)(i) = a(b(i))
    assert torch.equal(to_ab, torch.gather(to_a, 1, to_b))
    inv = label_map(sym, el, perms, inverse=True)
    assert torch.equal(torch.gather(inv, 1, label_map(sym, el, perms)), torch.arange(5).expand(len(el), 5))


def test_permute_classes_moves_class_i_to_its_image():
    scores = torch.tensor([[0.1, 0.2, 0.7]])
    to = torch.tensor([[1, 2, 0]])  # class 0 -> 1, 1 -> 2, 2 -> 0
    assert torch.equal(permute_classes(scores, to)[0, 0], torch.tensor([0.7, 0.1, 0.2]))


def test_parity_is_minus_one_on_reflections_only():
    sym = parse_symmetry("o3:n=16")
    det = parity(sym, sym.elements)
    mats = sym.point_matrix(sym.elements)
    assert torch.allclose(det, torch.linalg.det(mats))
    assert set(det.round().tolist()) == {1.0, -1.0}


# ---- known answers through the API -----------------------------------------------------------------------


def test_pseudovector_reads_noise_under_o3_only_when_declared(files, tmp_path):
    pseudo, _ = run(files, tmp_path, "TorqueNet", "points", ["o3:n=12", "so3:n=12"], output=["pseudovector"])
    vector, _ = run(files, tmp_path, "TorqueNet", "points", ["o3:n=12", "so3:n=12"], output=["vector"])
    assert pseudo["o3:n=12"]["equivariance_error"] < NOISE
    assert pseudo["so3:n=12"]["equivariance_error"] < NOISE and vector["so3:n=12"]["equivariance_error"] < NOISE
    assert vector["o3:n=12"]["equivariance_error"] > 0.3  # every reflected element reads ~1


def test_mirror_swapped_classes_read_noise_with_label_perm(files, tmp_path):
    declared, res = run(files, tmp_path, "MirrorSwapNet", "images", ["flip"], output=["label-perm:flip=1,0"])
    plain, _ = run(files, tmp_path, "MirrorSwapNet", "images", ["flip"], task="classify")
    d, p = declared["flip"], plain["flip"]
    assert d["prob_tv"] < NOISE and d["flip_rate"] == 0 and d["logit_error"] < NOISE
    assert p["prob_tv"] > 0.05 and p["logit_error"] > 0.05
    assert d["level"] is None or d["level"] > 0.99
    assert res.models[0].outputs == ["label-perm:flip=1,0"]
    # labels move too: the true class of flip(x) is the other class, so accuracy is the same on both elements
    per = res.symmetries[0].per_element
    assert per[0]["accuracy"] == pytest.approx(per[1]["accuracy"])


def test_binary_logit_scans_and_flags_the_mirror(files, tmp_path):
    out, res = run(files, tmp_path, "HalfTurnLogit", "images", ["rot90", "flip"], output=["binary"])
    per = {row["label"]: row for row in res.symmetries[0].per_element}
    assert per["180°"]["prob_tv"] < NOISE and per["180°"]["logit_error"] < NOISE
    assert out["flip"]["prob_tv"] > 1e-3 and out["flip"]["logit_error"] > 1e-3
    assert res.models[0].output_kind == "logits"
    assert "accuracy" in out["flip"]


def test_several_outputs_are_measured_with_prefixed_keys(files, tmp_path):
    decl = ["energy=invariant", "forces=vector-per-point", "torque=pseudovector"]
    for model in ("PhysicsNet", "physics.onnx"):
        out, res = run(files, tmp_path, model, "points", ["o3:n=12", "permute:n=8"], output=decl)
        for spec in ("o3:n=12", "permute:n=8"):
            s = out[spec]
            for key in ("energy.equivariance_error", "forces.equivariance_error", "torque.equivariance_error"):
                assert s[key] < 1e-5, (model, spec, key, s[key])
        assert res.symmetries[0].main_metric == "energy.equivariance_error"
    wrong, _ = run(files, tmp_path, "physics.onnx", "points", ["o3:n=12"],
                   output=["energy=invariant", "forces=vector-per-point", "torque=vector"])
    assert wrong["o3:n=12"]["torque.equivariance_error"] > 0.3
    assert wrong["o3:n=12"]["forces.equivariance_error"] < 1e-5


def test_several_outputs_gate_on_a_named_output(files, tmp_path):
    r = CliRunner().invoke(app, ["scan", str(files["physics.onnx"]), "--data", str(files["points"]), "-s", "o3:n=8",
                                 "--output", "energy=invariant", "--output", "forces=vector-per-point",
                                 "--output", "torque=vector", "--gate", "o3:torque.equivariance_error<=0.01",
                                 "--out", str(tmp_path / "cli"), "--device", "cpu", "-q"])
    assert r.exit_code == 1, r.output
    r = CliRunner().invoke(app, ["scan", str(files["physics.onnx"]), "--data", str(files["points"]), "-s", "o3:n=8",
                                 "--output", "energy=invariant", "--output", "bogus=vector-per-point",
                                 "--out", str(tmp_path / "cli2"), "--device", "cpu", "-q"])
    assert r.exit_code == 2 and "bogus" in r.output


def test_half_turn_exchanging_classes_on_rectangular_crops(files, tmp_path):
    """The text-direction case: 6 x 24 crops, a half turn swaps 'upright' and 'upside down'."""
    out, res = run(files, tmp_path, "HalfTurnSwapNet", "crops", ["rot180"], output=["label-perm:rot180=1,0"])
    assert out["rot180"]["prob_tv"] < NOISE and out["rot180"]["flip_rate"] == 0 and out["rot180"]["logit_error"] < NOISE
    # the network is fully convolutional (24 x 6 crops work too), so rot90 runs the full group, whose quarter
    # turns have no declared class permutation
    with pytest.raises(SymmetryError, match=r"quarter turn of element (90|270)°.*declare rot90="):
        run(files, tmp_path, "HalfTurnSwapNet", "crops", ["rot90"], output=["label-perm:rot180=1,0"])
    plain, _ = run(files, tmp_path, "HalfTurnSwapNet", "crops", ["rot180"], task="classify")
    assert plain["rot180"]["prob_tv"] > 0.05


def test_per_point_scalars_follow_the_points(files, tmp_path):
    out, _ = run(files, tmp_path, "PerPointEnergyNet", "points", ["so3:n=8", "permute:n=8", "so3:n=4*permute:n=4"],
                 output=["scalar-per-point"])
    for spec, s in out.items():
        assert s["equivariance_error"] < NOISE, (spec, s["equivariance_error"])
    invariant, _ = run(files, tmp_path, "PerPointEnergyNet", "points", ["permute:n=8"], output=["invariant"])
    assert invariant["permute:n=8"]["equivariance_error"] > 0.1  # rows that do not follow the points read an error


def test_same_kind_product_keeps_its_factors_as_written():
    sym = parse_symmetry("flip:axis=h*flip:axis=v")
    assert sym.spec == "flip:axis=h*flip:axis=v"
    sym.check_input((1, 6, 8))  # binding to the data rebuilds the grid; the spec stays as written
    assert sym.spec == "flip:axis=h*flip:axis=v"
    assert parse_symmetry("d4*swap").spec == "d4*swap"


def test_consensus_reference_moves_votes_back_through_the_class_permutation(files, tmp_path):
    out, _ = run(files, tmp_path, "MirrorSwapNet", "images", ["flip"], output=["label-perm:flip=1,0"], reference="consensus")
    assert out["flip"]["flip_rate"] == 0 and out["flip"]["prob_tv"] < NOISE


def test_consensus_votes_are_counted_in_the_canonical_frame():
    from eqaudit.tasks.base import ConsensusAccumulator
    from eqaudit.tasks.classify import ClassifyTask

    task = ClassifyTask(perms={"flip": [1, 0]})
    sym = parse_symmetry("flip")
    logits = torch.tensor([[[3.0, 0.0]], [[0.0, 3.0]]])  # (E=2, B=1, K=2): the mirror swapped the classes, as declared
    task.setup(logits[0], "auto")
    acc = ConsensusAccumulator(task)
    acc.add(task.convert(logits), sym, sym.elements, torch.zeros(1, 1, 4, 4))
    assert acc.votes.tolist() == [[2.0, 0.0]]  # both elements vote for class 0 once moved back
