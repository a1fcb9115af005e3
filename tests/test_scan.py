"""Known answers for the classifier audit: invariant-by-construction models read ~0, plain ones are flagged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import eqaudit
from eqaudit.api import scan
from eqaudit.result import AuditResult
from eqaudit.symmetries import parse_symmetry

from conftest import factory, smooth_images
import toy_models


def _scan(model_files, data_npz, tmp_path, name, symmetries, **kw):
    path = model_files[name]
    fac = None if str(path).endswith(".onnx") else factory(name.split(".")[0])
    return scan(path, data=str(data_npz), symmetry=symmetries, model_factory=fac, out=str(tmp_path / "out"), device="cpu", **kw)


def by_spec(result: AuditResult) -> dict:
    return {s.spec: s for s in result.symmetries}


@pytest.mark.parametrize("name", ["Rot90Averaged", "Rot90Averaged.onnx"])
def test_rot90_averaged_model_is_invariant_in_torch_and_onnx(model_files, data_npz, tmp_path, name):
    res = by_spec(_scan(model_files, data_npz, tmp_path, name, ["rot90", "flip"]))
    assert res["rot90"].summary["flip_rate"] == 0
    assert res["rot90"].summary["prob_tv"] < 1e-5
    assert res["rot90"].summary["floor"] < 1e-5
    # the same model is not flip-invariant: flagged
    assert res["flip"].summary["prob_tv"] > 1e-3


@pytest.mark.parametrize("name", ["D4Averaged", "D4Averaged.onnx"])
def test_d4_averaged_model_is_invariant_to_every_d4_subgroup(model_files, data_npz, tmp_path, name):
    res = by_spec(_scan(model_files, data_npz, tmp_path, name, ["d4", "rot90", "flip", "flip:axis=v"]))
    for spec, s in res.items():
        assert s.summary["flip_rate"] == 0, spec
        assert s.summary["prob_tv"] < 1e-5, spec


def test_flip_averaged_model(model_files, data_npz, tmp_path):
    res = by_spec(_scan(model_files, data_npz, tmp_path, "FlipAveraged", ["flip", "rot90"]))
    assert res["flip"].summary["prob_tv"] < 1e-5
    assert res["rot90"].summary["prob_tv"] > 1e-3


@pytest.mark.parametrize("name", ["SmallCNN", "SmallCNN.onnx"])
def test_plain_cnn_is_flagged(model_files, data_npz, tmp_path, name):
    res = by_spec(_scan(model_files, data_npz, tmp_path, name, ["rot90", "d4", "translate:max=2"]))
    for spec, s in res.items():
        assert s.summary["flip_rate"] > 0.05, spec
        assert s.summary["prob_tv"] > 1e-2, spec
    # identity element reads ~0 in per_element (the built-in check)
    rot = res["rot90"]
    assert rot.per_element[rot.identity_index]["prob_tv"] < 1e-5


def test_circular_pool_cnn_is_invariant_to_circular_shifts_only(model_files, data_npz, tmp_path):
    res = by_spec(_scan(model_files, data_npz, tmp_path, "CircularPoolCNN", ["translate:max=3", "translate:max=3,mode=zero"]))
    assert res["translate:max=3"].summary["flip_rate"] == 0
    assert res["translate:max=3"].summary["prob_tv"] < 1e-5
    assert res["translate:max=3,mode=zero"].summary["prob_tv"] > 1e-4


def test_resampled_rotation_reports_floor_and_exact_quarter_turns(model_files, data_npz, tmp_path):
    res = _scan(model_files, data_npz, tmp_path, "Rot90Averaged", ["rotate:step=30"]).symmetries[0]
    assert not res.exact
    assert res.summary["floor"] > 1e-6  # interpolation alone moves the outputs
    angles = [e[0] for e in res.elements]
    for a in (0.0, 90.0, 180.0, -90.0):
        row = res.per_element[angles.index(a)]
        assert row["prob_tv"] < 1e-5 and row["floor"] < 1e-5, a
    off = res.per_element[angles.index(30.0)]
    assert off["floor"] > 1e-6


def test_numbers_equal_a_direct_computation(model_files, data_npz, tmp_path):
    """Loop over elements and samples here, independently of the sweep, and compare."""
    res = _scan(model_files, data_npz, tmp_path, "SmallCNN", ["d4"]).symmetries[0]
    z = np.load(data_npz)
    x, y = torch.from_numpy(z["x"]), torch.from_numpy(z["y"])
    model = toy_models.SmallCNN().eval()
    sym = parse_symmetry("d4")
    with torch.no_grad():
        p0 = torch.softmax(model(x).double(), -1)
        tv, flips, correct = [], [], []
        for e in range(sym.n_elements):
            xg = sym.act(x, sym.elements[e : e + 1])[0]
            p = torch.softmax(model(xg).double(), -1)
            tv.append(0.5 * (p - p0).abs().sum(-1))
            flips.append((p.argmax(-1) != p0.argmax(-1)).double())
            correct.append((p.argmax(-1) == y).double())
    tv, flips, correct = torch.stack(tv, 1), torch.stack(flips, 1), torch.stack(correct, 1)  # (N, E)
    keep = [e for e in range(sym.n_elements) if e != sym.identity_index]
    s = res.summary
    assert s["prob_tv"] == pytest.approx(tv[:, keep].mean().item(), abs=1e-6)
    assert s["flip_rate"] == pytest.approx(flips[:, keep].mean().item(), abs=1e-9)
    assert s["accuracy"] == pytest.approx(correct[:, keep].mean().item(), abs=1e-9)
    assert s["worst_case_accuracy"] == pytest.approx(correct.min(1).values.mean().item(), abs=1e-9)
    for e in range(sym.n_elements):
        assert res.per_element[e]["prob_tv"] == pytest.approx(tv[:, e].mean().item(), abs=1e-6)


def test_results_do_not_depend_on_batch_size(model_files, data_npz, tmp_path):
    a = _scan(model_files, data_npz, tmp_path, "SmallCNN", ["rot90", "rotate:step=45"], batch_size=7)
    b = _scan(model_files, data_npz, tmp_path, "SmallCNN", ["rot90", "rotate:step=45"], batch_size=1000)
    for sa, sb in zip(a.symmetries, b.symmetries):
        for k, v in sa.summary.items():
            assert v == pytest.approx(sb.summary[k], abs=1e-6), (sa.spec, k)


def test_torch_and_onnx_forms_agree(model_files, data_npz, tmp_path):
    t = _scan(model_files, data_npz, tmp_path, "SmallCNN", ["d4", "rotate:step=45"])
    o = _scan(model_files, data_npz, tmp_path, "SmallCNN.onnx", ["d4", "rotate:step=45"])
    for st, so in zip(t.symmetries, o.symmetries):
        for k in ("prob_tv", "flip_rate", "accuracy", "worst_case_accuracy", "floor"):
            assert st.summary[k] == pytest.approx(so.summary[k], abs=1e-4), (st.spec, k)


def test_probability_outputs_are_detected_not_softmaxed_twice(model_files, data_npz, tmp_path):
    probs = _scan(model_files, data_npz, tmp_path, "SoftmaxOf", ["flip"])
    logits = _scan(model_files, data_npz, tmp_path, "Rot90Averaged", ["flip"])
    assert probs.models[0].output_kind == "probabilities"
    assert logits.models[0].output_kind == "logits"
    assert probs.symmetries[0].summary["prob_tv"] == pytest.approx(logits.symmetries[0].summary["prob_tv"], abs=1e-6)
    forced = _scan(model_files, data_npz, tmp_path, "SoftmaxOf", ["flip"], output_kind="logits")
    assert forced.symmetries[0].summary["prob_tv"] < probs.symmetries[0].summary["prob_tv"]


def test_flat_inputs_with_input_shape(model_files, tmp_path):
    x = smooth_images(10).reshape(10, -1)
    path = tmp_path / "flat.npz"
    np.savez(path, x=x, y=np.zeros(10, dtype=np.int64))
    res = scan(model_files["FlatRot90Averaged"], data=str(path), symmetry=["rot90", "flip"], input_shape="1x12x12",
               model_factory=factory("FlatRot90Averaged"), out=str(tmp_path / "o"))
    rot, flip = res.symmetries
    assert rot.summary["prob_tv"] < 1e-5 and flip.summary["prob_tv"] > 1e-3
    assert res.models[0].input_shape == [1, 12, 12]


def test_output_name_picks_one_onnx_output(model_files, data_npz, tmp_path):
    res = _scan(model_files, data_npz, tmp_path, "TwoOutputs.onnx", ["flip"], output_name="probabilities")
    assert res.models[0].output_name == "probabilities"
    assert res.models[0].output_kind == "probabilities"
    default = _scan(model_files, data_npz, tmp_path, "TwoOutputs.onnx", ["flip"])
    assert default.models[0].output_name == "logits"


def test_limit_and_seed_pick_a_deterministic_subset(model_files, data_npz, tmp_path):
    a = _scan(model_files, data_npz, tmp_path, "SmallCNN", ["rot90"], limit=10, seed=3)
    b = _scan(model_files, data_npz, tmp_path, "SmallCNN", ["rot90"], limit=10, seed=3)
    c = _scan(model_files, data_npz, tmp_path, "SmallCNN", ["rot90"], limit=10, seed=4)
    assert a.data.n_samples == 10
    assert a.symmetries[0].summary == b.symmetries[0].summary
    idx = lambda r: np.load(tmp_path / "out" / "orbits.npz")["sample_index"]  # noqa: E731
    assert len(idx(c)) == 10
    assert a.symmetries[0].summary != c.symmetries[0].summary


def test_result_json_round_trip_and_contract_keys(model_files, data_npz, tmp_path):
    import json

    _scan(model_files, data_npz, tmp_path, "SmallCNN", ["rot90", "rotate:step=90"], fail_over=["flip_rate=0.5"])
    d = json.loads((tmp_path / "out" / "result.json").read_text())
    for key in ["format_version", "eqaudit_version", "created", "seed", "device", "models", "data", "symmetries", "passed", "timing"]:
        assert key in d, key
    assert d["format_version"] == 1 and d["eqaudit_version"] == eqaudit.__version__
    for key in ["path", "backend", "sha256", "input_shape"]:
        assert key in d["models"][0]
    for key in ["path", "n_samples", "has_labels"]:
        assert key in d["data"]
    s = d["symmetries"][0]
    for key in ["model", "name", "spec", "exact", "elements", "summary", "per_element", "gates", "passed"]:
        assert key in s, key
    for key in ["flip_rate", "prob_tv", "accuracy", "worst_case_accuracy", "floor"]:
        assert key in s["summary"], key
    assert len(s["per_element"]) == len(s["elements"]) == 4
    assert s["gates"][0]["metric"] == "flip_rate" and s["gates"][0]["op"] == "<="
    for key in ["seconds", "model_evals", "evals_per_second"]:
        assert d["timing"][key] > 0
    # model evals: one reference call for the floor subset (all 24 samples: fewer than floor_samples), then
    # E orbit rows per sample (f(x) is the identity's row), and round trips of the subset for resampled actions
    assert d["timing"]["model_evals"] == 24 + 24 * 4 + 24 * (4 + 4)
    again = AuditResult.load(tmp_path / "out" / "result.json")
    assert again.to_dict() == d
    orbits = again.load_orbits(tmp_path / "out")
    assert orbits["s0.prob_tv"].shape == (24, 4)
    assert orbits["s1.floor"].shape == (24, 4)
    assert orbits["s0.worst_x"].shape[1:] == (1, 12, 12)


def test_gates_pass_and_fail(model_files, data_npz, tmp_path):
    ok = _scan(model_files, data_npz, tmp_path, "Rot90Averaged", ["rot90"], fail_over={"flip_rate": 0.0, "prob_tv": 1e-4})
    assert ok.passed and all(g.passed for g in ok.symmetries[0].gates)
    bad = _scan(model_files, data_npz, tmp_path, "SmallCNN", ["rot90"], fail_over={"flip_rate": 0.01, "accuracy": 0.0})
    gates = {g.metric: g for g in bad.symmetries[0].gates}
    assert not bad.passed and not gates["flip_rate"].passed and gates["accuracy"].passed
    assert gates["accuracy"].op == ">="


def test_a_failure_mid_run_keeps_finished_symmetries(data_npz, tmp_path):
    from typer.testing import CliRunner

    from conftest import save_state_dict
    from eqaudit.cli import app

    path = save_state_dict("FailsOnZeroColumn", tmp_path)
    res = CliRunner().invoke(app, ["scan", str(path), "--data", str(data_npz), "-s", "rot90", "-s", "translate:mode=zero",
                                   "--model-factory", factory("FailsOnZeroColumn"), "--out", str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 3 and "blank column" in res.output
    saved = AuditResult.load(tmp_path / "o" / "result.json")
    assert not saved.complete and not saved.passed
    assert [s.spec for s in saved.symmetries] == ["rot90"]
    assert saved.symmetries[0].summary["prob_tv"] < 1e-5
    assert saved.load_orbits(tmp_path / "o")["s0.prob_tv"].shape == (24, 4)


def test_elements_csv_matches_per_element(model_files, data_npz, tmp_path):
    import pandas as pd

    res = _scan(model_files, data_npz, tmp_path, "SmallCNN", ["rot90", "translate:max=1"])
    df = pd.read_csv(tmp_path / "out" / "elements.csv")
    assert len(df) == 4 + 9 and set(df["symmetry"]) == {"rot90", "translate:max=1"}
    trans = df[df["symmetry"] == "translate:max=1"]
    sym = res.symmetries[1]
    assert list(trans["dx"]) == [e[0] for e in sym.elements] and list(trans["dy"]) == [e[1] for e in sym.elements]
    np.testing.assert_allclose(trans["prob_tv"], [pe["prob_tv"] for pe in sym.per_element])
    assert int(df["identity"].sum()) == 2


def test_out_of_memory_halves_the_rows_per_call_and_changes_nothing(data_npz):
    """The CUDA back-off path, exercised on CPU with a model that 'runs out of memory' above 16 rows."""
    from eqaudit.data import load_dataset
    from eqaudit.models.base import AdapterInfo
    from eqaudit.models.torch_backend import TorchAdapter
    from eqaudit.sweep import sweep
    from eqaudit.tasks import get_task

    class Tight(TorchAdapter):
        sizes: list[int] = []

        def __call__(self, batch):
            self.sizes.append(int(batch.shape[0]))
            if batch.shape[0] > 16:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().__call__(batch)

    info = AdapterInfo("mem", "torch", "module", "", "cpu")
    ds = load_dataset(str(data_npz))
    syms = [parse_symmetry("d4"), parse_symmetry("rotate:step=60")]
    plain = sweep(TorchAdapter(toy_models.SmallCNN().eval(), info, torch.device("cpu")), ds, syms, get_task("classify"), batch_size=128)
    tight = Tight(toy_models.SmallCNN().eval(), info, torch.device("cpu"))
    out = sweep(tight, ds, syms, get_task("classify"), batch_size=128)
    assert max(tight.sizes) > 16 and max(s for s in tight.sizes[-10:]) <= 16  # backed off, then stayed down
    assert out.model_evals == plain.model_evals
    for a, b in zip(plain.tables, out.tables):
        for key in a:
            np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)
