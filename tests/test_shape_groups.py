"""Quarter turns of non-square images in two shape groups: the full rot90/d4 when the model takes W x H too
(one probe call), the shape-keeping subgroup with its note when it does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eqaudit.api import scan
from eqaudit.sweep import _chunk_plan
from eqaudit.symmetries import parse_symmetry

TOYS = Path(__file__).parent / "toy_shapes.py"
NOISE = 1e-5


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shapes")
    g = np.random.default_rng(0)
    x = g.normal(size=(10, 1, 6, 10)).astype(np.float32)
    out = {"data": folder / "rect.npz"}
    np.savez(out["data"], x=x, y=g.integers(0, 3, size=10))
    import sys

    sys.path.insert(0, str(TOYS.parent))
    import toy_shapes

    for name in ("PooledNet", "TurnAveragedNet", "FixedShapeNet", "PointwiseMaps", "ConvMaps"):
        out[name] = folder / f"{name}.pt"
        torch.save(getattr(toy_shapes, name)().state_dict(), out[name])
    return out


def run(files, tmp_path, model, specs, **kw):
    res = scan(files[model], data=str(files["data"]), symmetry=specs, model_factory=f"{TOYS}:{model}",
               out=str(tmp_path / model), device="cpu", **kw)
    return {s.spec: s for s in res.symmetries}


def test_turn_averaged_model_reads_noise_on_all_four_quarter_turns_in_two_shape_groups(files, tmp_path):
    res = run(files, tmp_path, "TurnAveragedNet", ["rot90", "d4"])
    rot = res["rot90"]
    assert rot.labels == ["0°", "90°", "180°", "270°"]  # the full group, in its own order
    assert "two shape groups" in rot.notes[0] and "10x6: 90°, 270°" in rot.notes[0]
    for row in rot.per_element:
        assert row["prob_tv"] < NOISE and row["logit_error"] < NOISE and row["flip_rate"] == 0, row
    d4 = res["d4"]
    assert len(d4.labels) == 8
    turns = {row["label"]: row for row in d4.per_element}
    for label in ("r1", "r2", "r3"):
        assert turns[label]["prob_tv"] < NOISE, label
    assert all(turns[lab]["prob_tv"] > 1e-3 for lab in ("r0·f", "r1·f", "r2·f", "r3·f"))  # mirrors: no symmetry built in


def test_plain_pooled_model_is_flagged_on_the_quarter_turns_and_results_do_not_depend_on_batch_size(files, tmp_path):
    big = run(files, tmp_path / "big", "PooledNet", ["rot90", "d4"])
    small = run(files, tmp_path / "small", "PooledNet", ["rot90", "d4"], batch_size=3)
    rows = {r["label"]: r for r in big["rot90"].per_element}
    assert rows["90°"]["prob_tv"] > 1e-3 and rows["270°"]["prob_tv"] > 1e-3
    assert rows["0°"]["prob_tv"] < NOISE
    for spec in ("rot90", "d4"):
        assert big[spec].labels == small[spec].labels
        for a, b in zip(big[spec].per_element, small[spec].per_element):
            for key in ("prob_tv", "logit_error", "flip_rate"):
                assert a[key] == pytest.approx(b[key], abs=1e-6), (spec, a["label"], key)


def test_a_model_that_rejects_the_transposed_shape_keeps_the_subgroup_and_its_note(files, tmp_path):
    res = run(files, tmp_path, "FixedShapeNet", ["rot90", "d4"])
    assert res["rot90"].labels == ["0°", "180°"] and "shape-keeping subgroup" in res["rot90"].notes[0]
    assert res["d4"].labels == ["r0", "r2", "r0·f", "r2·f"]
    assert res["rot90"].summary["prob_tv"] < NOISE  # the half turn: invariant by construction
    assert res["d4"].per_element[2]["prob_tv"] > 1e-3  # a mirror is not


def test_dense_maps_of_the_transposed_shape_are_turned_back_by_the_output_action(files, tmp_path):
    """Outputs of 10 x 6 inputs are 10 x 6 maps, compared with f(x) turned by the element's map action."""
    exact = run(files, tmp_path, "PointwiseMaps", ["rot90", "d4"], task="dense")
    for spec in ("rot90", "d4"):
        assert len(exact[spec].per_element) == (4 if spec == "rot90" else 8)
        for row in exact[spec].per_element:
            assert row["equivariance_error"] < NOISE, (spec, row["label"], row["equivariance_error"])
    consensus = run(files, tmp_path / "c", "PointwiseMaps", ["rot90"], task="dense", reference="consensus")
    assert consensus["rot90"].summary["equivariance_error"] < NOISE  # S_g^-1 maps 10 x 6 outputs back to 6 x 10
    plain = run(files, tmp_path, "ConvMaps", ["rot90"], task="dense")
    rows = {r["label"]: r for r in plain["rot90"].per_element}
    assert rows["90°"]["equivariance_error"] > 1e-2 and rows["270°"]["equivariance_error"] > 1e-2


def test_chunk_plan_keeps_one_shape_per_call_and_every_element_once():
    sym = parse_symmetry("d4")
    sym.check_input((1, 6, 10))
    sym.use_both_shapes(True)
    turned = sym.transposes(sym.elements).numpy()
    for e_chunk in (1, 2, 3, 8):
        plan = _chunk_plan(sym, e_chunk)
        idx = [np.arange(8)[c] for c in plan]
        assert [i.tolist() for i in idx] == [np.arange(8)[c].tolist() for c in _chunk_plan(sym, e_chunk)]  # deterministic
        assert sorted(np.concatenate(idx).tolist()) == list(range(8))  # each element once
        assert all(len(set(turned[i].tolist())) == 1 and len(i) <= e_chunk for i in idx)  # one input shape per call
        assert sym.identity_index in idx[0]  # the identity's shape first
    square = parse_symmetry("d4")
    square.check_input((1, 6, 6))
    assert _chunk_plan(square, 3) == [slice(0, 3), slice(3, 6), slice(6, 8)]  # square images: the plan as before


def test_thumbnails_of_both_shapes_sit_centred_on_square_canvases(files, tmp_path):
    run(files, tmp_path, "PooledNet", ["rot90"])
    with np.load(tmp_path / "PooledNet" / "orbits.npz") as z:
        xs, index, thumbs = z["s0.worst_x"], z["s0.thumb_elements"], z["s0.thumb_x"]
    assert thumbs.shape[-3:] == (1, 10, 10) and index.shape[1] == 4
    for r in range(len(xs)):
        for t, e in enumerate(index[r].tolist()):
            turned = np.rot90(xs[r], e, axes=(-2, -1))
            top, left = (10 - turned.shape[-2]) // 2, (10 - turned.shape[-1]) // 2
            np.testing.assert_array_equal(thumbs[r, t, :, top : top + turned.shape[-2], left : left + turned.shape[-1]], turned)
            assert (thumbs[r, t][..., :top, :] == xs[r].min()).all() and (thumbs[r, t][..., :left] == xs[r].min()).all()


def test_a_gate_may_name_a_quarter_turn_that_only_the_full_group_holds(files, tmp_path):
    """On non-square images the orbit is known only once a model has run (the probe): a gate on 90° is
    accepted up front, holds for the turn-averaged model, fails for the plain one, and is a usage error
    (exit 2) for a model that keeps the shape-keeping subgroup."""
    from eqaudit.api import scan
    from eqaudit.errors import ConfigError

    def gated(model):
        return scan(files[model], data=str(files["data"]), symmetry=["rot90"], model_factory=f"{TOYS}:{model}",
                    out=str(tmp_path / f"gate_{model}"), device="cpu", gates=["rot90[90°]:prob_tv<=1e-4"])

    assert gated("TurnAveragedNet").passed
    assert not gated("PooledNet").passed
    with pytest.raises(ConfigError, match="90°"):
        gated("FixedShapeNet")
