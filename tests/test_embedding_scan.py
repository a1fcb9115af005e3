"""`scan --output embedding`: fitted maps M_g from the sweep's running sums, with known answers (linear
equivariant, permuting, invariant and unstructured embeddings), batch-size and backend independence,
intermediate outputs, errors and the report; `eqaudit report` on a discover result."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import toy_embeddings as toys
from eqaudit.api import scan
from eqaudit.cli import app
from eqaudit.embedding import EmbeddingSums, fit_from_sums, fit_maps, split_parts
from eqaudit.errors import ConfigError
from eqaudit.symmetries import parse_symmetry
from eqaudit.symmetries.outputs import linear_part

TOY = Path(toys.__file__)
NOISE = 1e-5  # float32 models: rounding noise of the forward pass (and ~1e-8 from residuals computed from sums)
N = 96


def fac(name: str) -> str:
    return f"{TOY}:{name}"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embedding")
    rng = np.random.default_rng(0)
    np.savez(folder / "images.npz", x=rng.normal(size=(N, 1, toys.S, toys.S)).astype(np.float32))
    np.savez(folder / "few.npz", x=rng.normal(size=(5, 1, toys.S, toys.S)).astype(np.float32))
    np.savez(folder / "points.npz", x=rng.normal(size=(48, 6, 3)).astype(np.float32))
    out = {"images": folder / "images.npz", "few": folder / "few.npz", "points": folder / "points.npz"}
    for name in ("Moments", "TurnedResponses", "InvariantFeatures", "RandomMLP", "PointVectors", "BackboneClassifier"):
        torch.save(getattr(toys, name)().state_dict(), folder / f"{name}.pt")
        out[name] = folder / f"{name}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("RandomMLP", "BackboneClassifier"):
            path = folder / f"{name}.onnx"
            torch.onnx.export(getattr(toys, name)().eval(), (torch.zeros(2, 1, toys.S, toys.S),), str(path), input_names=["x"],
                              output_names=["out"], dynamic_axes={"x": {0: "b"}, "out": {0: "b"}}, dynamo=False)
            out[f"{name}.onnx"] = path
    return out


def run(files, tmp_path, model, symmetries, data="images", output="embedding", **kw):
    """(summaries by spec, orbit arrays, result) of one embedding scan."""
    onnx = str(model).endswith(".onnx")
    res = scan(files[model], data=str(files[data]), symmetry=symmetries, output=[output], model_factory=None if onnx else fac(model),
               out=str(tmp_path / "out"), device="cpu", format=["json", "orbits"], **kw)
    with np.load(tmp_path / "out" / "orbits.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return {s.spec: s.summary for s in res.symmetries}, arrays, res


def test_linear_equivariant_moments_fit_at_float_noise_and_form_a_representation(files, tmp_path):
    """First and second moments turn as a vector and a symmetric tensor: a signed permutation per element."""
    specs, arrays, res = run(files, tmp_path, "Moments", ["rot90", "flip"])
    for j, spec in enumerate(["rot90", "flip"]):
        s = specs[spec]
        assert s["equivariance_error"] < NOISE and s["max_equivariance_error"] < NOISE
        assert s["representation_defect"] < NOISE  # M_g M_h = M_gh: the maps form a representation
        assert s["invariance_error"] > 0.5 and s["level"] > 0.999 and s["level_status"] == "ok"
        assert s["rank"] == 5 and s["condition"] < 1 + 1e-4  # orthogonal maps
        assert s["null"] > 0.8  # unrelated inputs: nothing to fit
        maps = arrays[f"s{j}.embedding_maps"]
        ident = res.symmetries[j].identity_index
        dist = np.linalg.norm(maps - np.eye(5), axis=(1, 2))
        assert dist[ident] < NOISE and (np.delete(dist, ident) > 1.0).all()  # non-trivial maps
        np.testing.assert_allclose(np.abs(maps), np.abs(maps).round(), atol=1e-4)  # signed permutations
    m90 = arrays["s0.embedding_maps"][1][:2, :2]  # the first moments turn by a quarter: M^2 = -I
    np.testing.assert_allclose(m90 @ m90, -np.eye(2), atol=1e-5)


def test_channel_permutation_under_rot90(files, tmp_path):
    specs, arrays, _ = run(files, tmp_path, "TurnedResponses", ["rot90"])
    assert specs["rot90"]["equivariance_error"] < NOISE and specs["rot90"]["representation_defect"] < NOISE
    m = arrays["s0.embedding_maps"][1]
    p = m.round()
    np.testing.assert_allclose(m, p, atol=1e-4)
    assert (p.sum(0) == 1).all() and (p.sum(1) == 1).all() and (p >= 0).all()  # a permutation matrix ...
    assert not np.array_equal(p, np.eye(4))  # ... that moves the channels
    assert specs["rot90"]["invariance_error"] > 0.5


def test_invariant_embedding_gives_identity_maps(files, tmp_path):
    specs, arrays, _ = run(files, tmp_path, "InvariantFeatures", ["rot90"])
    s = specs["rot90"]
    assert s["invariance_error"] < NOISE and s["equivariance_error"] < NOISE
    np.testing.assert_allclose(arrays["s0.embedding_maps"], np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-4)
    assert s["change"] < NOISE  # per sample too


def test_random_mlp_embedding_does_not_fit_and_fails_a_gate(files, tmp_path):
    specs, _, _ = run(files, tmp_path, "RandomMLP", ["rot90"])
    s = specs["rot90"]
    assert s["equivariance_error"] > 0.5 and s["level"] < 0.5 and s["representation_defect"] > 0.1
    out = tmp_path / "cli"
    base = ["scan", str(files["RandomMLP"]), "--model-factory", fac("RandomMLP"), "--data", str(files["images"]), "-s", "rot90",
            "--output", "embedding", "--device", "cpu", "--format", "json", "--fail-over", "equivariance_error=0.01", "--out"]
    r = CliRunner().invoke(app, [*base, str(out)])
    assert r.exit_code == 1, r.output
    r = CliRunner().invoke(app, [base[0], str(files["Moments"]), "--model-factory", fac("Moments"), *base[4:], str(out)])
    assert r.exit_code == 0, r.output


def test_points_rotating_as_vectors_under_so3(files, tmp_path):
    """Two vector features and one scalar: the fitted map is R_g on each vector and 1 on the scalar."""
    spec = "so3:n=0,grid=octahedral"
    specs, arrays, res = run(files, tmp_path, "PointVectors", [spec], data="points")
    s = specs[spec]
    assert s["equivariance_error"] < NOISE and s["representation_defect"] < NOISE
    sym = parse_symmetry(spec)
    rot = linear_part(sym, sym.elements).numpy()
    maps = arrays["s0.embedding_maps"]
    np.testing.assert_allclose(maps[:, :3, :3], rot, atol=1e-4)
    np.testing.assert_allclose(maps[:, 3:6, 3:6], rot, atol=1e-4)
    np.testing.assert_allclose(maps[:, 6, 6], 1.0, atol=1e-4)


def test_results_do_not_depend_on_batch_size(files, tmp_path):
    a, arr_a, _ = run(files, tmp_path / "a", "RandomMLP", ["rot90", "flip"], batch_size=3)  # element chunks [0:3], [3:4]: several chunks per batch
    b, arr_b, _ = run(files, tmp_path / "b", "RandomMLP", ["rot90", "flip"], batch_size=1000)
    for spec in a:
        for key in ("equivariance_error", "invariance_error", "null", "level", "rank", "condition", "representation_defect"):
            assert a[spec][key] == pytest.approx(b[spec][key], rel=1e-6, abs=1e-9), (spec, key)
    np.testing.assert_allclose(arr_a["s0.embedding_maps"], arr_b["s0.embedding_maps"], atol=1e-6)


def test_scan_matches_the_in_memory_fit(files, tmp_path):
    """The sweep's sums give the maps and errors of fitting all embeddings at once (same split, same null pairs)."""
    specs, arrays, res = run(files, tmp_path, "RandomMLP", ["rot90"])
    model = toys.RandomMLP()
    model.load_state_dict(torch.load(files["RandomMLP"], weights_only=True))
    x = torch.from_numpy(np.load(files["images"])["x"])
    sym = parse_symmetry("rot90")
    with torch.no_grad():
        z = model(x).double()
        zg = model(sym.act(x, sym.elements).reshape(-1, *x.shape[1:])).double().reshape(4, N, -1)
    fit = fit_maps(z, zg)
    assert specs["rot90"]["null"] == pytest.approx(fit.null, rel=1e-6)
    np.testing.assert_allclose([r["equivariance_error"] for r in res.symmetries[0].per_element], fit.equivariance_error, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(arrays["s0.embedding_maps"], fit.maps.numpy(), atol=1e-6)


def test_torch_and_onnx_agree_also_on_intermediate_outputs(files, tmp_path):
    t, _, _ = run(files, tmp_path / "t", "RandomMLP", ["rot90"])
    o, _, _ = run(files, tmp_path / "o", "RandomMLP.onnx", ["rot90"])
    for key in ("equivariance_error", "invariance_error", "null", "level"):
        assert t["rot90"][key] == pytest.approx(o["rot90"][key], rel=1e-4), key
    # the backbone of a classifier: a submodule (torch) or a node's value (ONNX) named as the output
    import onnx

    value = next(n.output[0] for n in onnx.load(str(files["BackboneClassifier.onnx"])).graph.node if n.op_type == "Einsum")
    bt, _, _ = run(files, tmp_path / "bt", "BackboneClassifier", ["rot90"], output="backbone=embedding")
    bo, _, res = run(files, tmp_path / "bo", "BackboneClassifier.onnx", ["rot90"], output=f"{value}=embedding")
    direct, _, _ = run(files, tmp_path / "d", "Moments", ["rot90"])
    assert bt["rot90"]["embedding_dim"] == bo["rot90"]["embedding_dim"] == 5
    assert bt["rot90"]["equivariance_error"] < NOISE and bo["rot90"]["equivariance_error"] < NOISE
    assert bt["rot90"]["null"] == pytest.approx(direct["rot90"]["null"], rel=1e-6) == bo["rot90"]["null"]
    assert any("intermediate value" in n for n in res.models[0].notes)
    head, _, _ = run(files, tmp_path / "h", "BackboneClassifier", ["rot90"])  # the final output: 3 logits of a generic head
    assert head["rot90"]["embedding_dim"] == 3 and head["rot90"]["equivariance_error"] > 0.1


def test_sums_merge_like_one_pass():
    """Shards (any split of the samples and elements into chunks) summed give the one-pass sums."""
    g = torch.Generator().manual_seed(5)
    z, zg = torch.randn(40, 3, generator=g, dtype=torch.float64), torch.randn(2, 40, 3, generator=g, dtype=torch.float64)
    parts = split_parts(40, 0)
    whole = EmbeddingSums(parts, 2, 3)
    whole.add(np.arange(40), slice(0, 2), z, zg)
    a, b = EmbeddingSums(parts, 2, 3), EmbeddingSums(parts, 2, 3)
    for shard, rows in ((a, np.arange(0, 40, 2)), (b, np.arange(1, 40, 2))):
        shard.add(rows, slice(0, 1), z[rows], zg[:1, rows])
        shard.add(rows, slice(1, 2), z[rows], zg[1:, rows])
    a.merge(b)
    for key, v in whole.state().items():
        torch.testing.assert_close(a.state()[key], v)
    np.testing.assert_allclose(fit_from_sums(a, 1.0).equivariance_error, fit_from_sums(whole, 1.0).equivariance_error, rtol=1e-9)


def test_errors_exit_2_with_the_fix(files, tmp_path):
    base = ["scan", str(files["Moments"]), "--model-factory", fac("Moments"), "-s", "rot90", "--device", "cpu", "--format", "json",
            "--out", str(tmp_path / "e")]
    cases = [
        (["--data", str(files["images"]), "--output", "embedding", "--output", "logits=invariant"], "Expected --output embedding alone"),
        (["--data", str(files["images"]), "--output", "embedding", "--reference", "consensus"], "Expected --reference identity for --output embedding"),
        (["--data", str(files["few"]), "--output", "embedding"], "Expected at least 8 samples"),
        (["--data", str(files["images"]), "--output", "embedding", "--local"], "Expected no --local/--layers with --output embedding"),
    ]
    for extra, message in cases:
        r = CliRunner().invoke(app, [*base, *extra])
        assert r.exit_code == 2, r.output
        assert message in " ".join(r.output.split()), r.output
    with pytest.raises(ConfigError, match="smaller output or layer"):
        EmbeddingSums(np.zeros(8, np.int64), 24, 10_000)


def test_maps_figure_draws_heatmaps_for_small_embeddings_only():
    from eqaudit.report.embedding import MAX_HEATMAPS, embedding_figure, error_text

    maps = np.stack([np.eye(4), np.eye(4)[[1, 2, 3, 0]], np.eye(4)[[2, 3, 0, 1]]])
    sv = np.ones((3, 4))
    fig = embedding_figure(maps, sv, ["0", "1", "2"], 0, np.array([0.0, 2e-7, 0.3]))
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == 2  # the non-identity elements
    assert "at float noise" in heatmaps[0].get_title() and "at float noise" not in heatmaps[1].get_title()
    assert not [ax for ax in embedding_figure(None, sv, ["0", "1", "2"], 0, np.zeros(3)).axes if ax.images]  # spectra only
    many = embedding_figure(np.zeros((12, 2, 2)), np.ones((12, 2)), [str(i) for i in range(12)], 0, np.ones(12))
    assert len([ax for ax in many.axes if ax.images]) == MAX_HEATMAPS
    assert error_text(None) == "n/a" and error_text(0.25) == "0.25"


@pytest.mark.slow
def test_report_draws_the_fitted_maps(files, tmp_path):
    """Re-rendered from result.json and orbits.npz alone: heatmaps and spectra, errors at float noise said so."""
    run(files, tmp_path, "Moments", ["rot90"])
    out = tmp_path / "out"
    from eqaudit.report import render
    from eqaudit.result import AuditResult

    html = render(AuditResult.load(out / "result.json"), out, workers=1).read_text()
    assert "Fitted embedding maps" in html and "at float noise" in html
    assert list((out / "plots").glob("*embedding*.png"))


def test_report_rerenders_a_discover_result(tmp_path):
    from eqaudit.discover import run_discover
    from eqaudit.config import resolve

    folder = tmp_path / "d"
    np.savez(tmp_path / "imgs.npz", x=np.random.default_rng(1).normal(size=(8, 1, toys.S, toys.S)).astype(np.float32))
    torch.save(toys.Moments().state_dict(), tmp_path / "m.pt")
    settings = resolve({"data": str(tmp_path / "imgs.npz"), "model_factory": fac("Moments"), "out": str(folder), "device": "cpu"},
                       models=[tmp_path / "m.pt"])
    result, written = run_discover(tmp_path / "m.pt", settings)
    assert json.loads((written / "result.json").read_text())["kind"] == "discover"
    assert not (written / "report.html").exists()
    r = CliRunner().invoke(app, ["report", str(written / "result.json"), "--out", str(tmp_path / "page")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "page" / "report.html").read_text()
    assert "rot" in page and (tmp_path / "page" / "plots" / "spectrum.png").is_file()
    r = CliRunner().invoke(app, ["report", str(written)])  # the folder works too
    assert r.exit_code == 0 and (written / "report.html").is_file(), r.output
    broken = json.loads((written / "result.json").read_text())
    del broken["spectrum"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    r = CliRunner().invoke(app, ["report", str(tmp_path / "broken.json")])
    assert r.exit_code == 3 and "without spectrum" in " ".join(r.output.split()), r.output
