"""Molecules, graphs and dynamics: padded systems (mask), edges, energy/forces/stress/positions outputs, e3, EGNN vs MLP."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from eqaudit.api import scan
from eqaudit.errors import DataError
from eqaudit.inputs import orbit
from eqaudit.symmetries import parse_symmetry
from eqaudit.symmetries.outputs import point_permutation, restrict_permutation, sample_permutation

TESTS = Path(__file__).parent
ROOT = TESTS.parent
sys.path.insert(0, str(ROOT / "sample_models"))
import molecule_models  # noqa: E402
from molecule_models import POINTS, lj_clusters  # noqa: E402

MOLS = ROOT / "sample_models" / "molecule_models.py"
TOYS = TESTS / "toy_molecules.py"
SYMS = ["so3:n=4", "o3:n=2", "translate3d:max=0.5", "permute:n=4", "e3:n=4"]
NOISE = 1e-4  # float32 models: rounding of the moved positions, amplified by gradients


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """LJ clusters of two sizes (5 and 8 atoms) padded to 8, with random padded positions; fresh-weight models."""
    folder = tmp_path_factory.mktemp("mol")
    data = lj_clusters(8, sizes=(5, 8), seed=3)
    g = np.random.default_rng(0)
    pad = ~data["mask"]
    data["pos"][pad] = g.normal(size=(int(pad.sum()), 3)).astype(np.float32)  # padding anywhere, not at 0
    out = {"lj": folder / "lj.npz"}
    np.savez(out["lj"], **data)
    torch.manual_seed(0)
    for name in ("EGNNPotential", "MLPPotential"):
        out[name] = folder / f"{name}.pt"
        torch.save(getattr(molecule_models, name)().state_dict(), out[name])
    for name in ("GarbagePad", "Tensors", "EdgeNet"):
        out[name] = folder / f"{name}.pt"
        sys.path.insert(0, str(TESTS))
        import toy_molecules

        torch.save(getattr(toy_molecules, name)().state_dict(), out[name])
    return out


def run(files, tmp_path, model, data, outputs, symmetries=SYMS, **kw):
    src = MOLS if model in ("EGNNPotential", "MLPPotential") else TOYS
    res = scan(files[model], data=str(data), symmetry=symmetries, model_factory=f"{src}:{model}", output=outputs,
               act_on=["pos"], out=str(tmp_path / "out"), device="cpu", **kw)
    return {s.spec: s.summary for s in res.symmetries}, res


def test_egnn_potential_reads_float_noise_for_energy_and_forces_and_the_mlp_does_not(files, tmp_path):
    """Forces computed as -dE/dpos by autograd inside forward scan through the factory path."""
    eg, res = run(files, tmp_path, "EGNNPotential", files["lj"], ["energy=energy", "forces=forces"])
    mlp, _ = run(files, tmp_path, "MLPPotential", files["lj"], ["energy=energy", "forces=forces"])
    for spec in SYMS:
        for key, noise in (("energy.equivariance_error", NOISE), ("forces.equivariance_error", NOISE), ("forces.relative_error", 3e-4)):
            assert eg[spec][key] < noise, (spec, key, eg[spec][key])  # relative to the reference alone: float32 noise x 2
            assert mlp[spec][key] > 1e-2, (spec, key, mlp[spec][key])
        assert eg[spec]["energy.error_per_atom"] <= eg[spec]["energy.abs_error"] / 5 + 1e-12  # at least 5 atoms each
        assert mlp[spec]["forces.rms_error"] > 1e-4
    assert any("autograd" in n for n in res.models[0].notes)


def test_energy_error_per_atom_divides_by_the_real_atoms_of_each_system(files, tmp_path):
    """Known answer: a shift-only energy error |dE| per sample divided by 5 or 8 real atoms."""
    run(files, tmp_path, "MLPPotential", files["lj"], ["energy=energy", "forces=forces"], ["so3:n=2"])
    table = np.load(tmp_path / "out" / "orbits.npz")
    keys, per = ["s0.energy.abs_error"], ["s0.energy.error_per_atom"]
    assert float(table[keys[0]].max()) > 1e-4  # the MLP moves its energy: a real test of the division
    atoms = np.load(files["lj"])["mask"].sum(1)
    assert_close(torch.from_numpy(table[per[0]]).double(), torch.from_numpy(table[keys[0]] / atoms[:, None]).double(),
                 rtol=1e-5, atol=1e-9)


def test_padded_atoms_never_change_a_metric(files, tmp_path):
    """GarbagePad's padded rows are non-equivariant functions of the padded inputs: leaving them out of
    every metric (and out of the permutations) reads float noise, and randomising the padded positions and
    types leaves every metric bit-identical."""
    outputs = ["energy=energy", "forces=forces", "charges=charges"]
    base, _ = run(files, tmp_path, "GarbagePad", files["lj"], outputs)
    for spec in SYMS:
        for key in ("energy.equivariance_error", "forces.equivariance_error", "charges.equivariance_error", "forces.max_abs_error"):
            assert base[spec][key] < NOISE, (spec, key, base[spec][key])
    d = dict(np.load(files["lj"]))
    pad = ~d["mask"]
    g = np.random.default_rng(7)
    d["pos"][pad] = g.normal(scale=3.0, size=(int(pad.sum()), 3)).astype(np.float32)
    other = tmp_path / "other.npz"
    np.savez(other, **d)
    moved, _ = run(files, tmp_path, "GarbagePad", other, outputs)
    for spec in SYMS:  # every key, the level and its null (drawn from the first output, the energy) included
        assert moved[spec] == base[spec], spec
    # without the mask the padded rows count: the same model reads a clear error under rotations
    d.pop("mask")
    nomask = tmp_path / "nomask.npz"
    np.savez(nomask, **d)
    raw, _ = run(files, tmp_path, "GarbagePad", nomask, outputs, ["so3:n=4"])
    assert raw["so3:n=4"]["forces.equivariance_error"] > 1e-3
    assert raw["so3:n=4"]["charges.equivariance_error"] > 1e-3


def test_stress_dipole_pseudoscalar_and_next_positions_follow_their_representations(files, tmp_path):
    outs = ["stress=stress", "dipole=dipole", "chirality=pseudoscalar", "next=positions"]
    res, _ = run(files, tmp_path, "Tensors", files["lj"], outs)
    for spec in SYMS:
        for name in ("stress", "dipole", "chirality", "next"):
            assert res[spec][f"{name}.equivariance_error"] < NOISE, (spec, name, res[spec][f"{name}.equivariance_error"])
    # the same outputs declared with the wrong representation read clear errors
    wrong, _ = run(files, tmp_path, "Tensors", files["lj"], ["stress=invariant", "dipole=dipole", "chirality=invariant",
                                                             "next=forces"], ["o3:n=2", "translate3d:max=0.5"])
    assert wrong["o3:n=2"]["chirality.equivariance_error"] > 0.5  # flips sign under -I: |2s| / (2|s|) = 1
    assert wrong["translate3d:max=0.5"]["next.equivariance_error"] > 1e-3  # positions move with shifts, forces do not


def test_edge_index_is_relabelled_with_the_atoms(files, tmp_path):
    d = lj_clusters(6, sizes=(5, 8), seed=4)
    m = 10
    g = np.random.default_rng(1)
    real = d["mask"].sum(1)
    edges = np.zeros((6, 2, m), dtype=np.int64)
    emask = np.zeros((6, m), dtype=bool)
    for i, k in enumerate(real):  # building test data
        n = min(m, k + 2)
        edges[i, :, :n] = g.integers(0, k, size=(2, n))
        emask[i, :n] = True
    d.update(edge_index=edges, edge_mask=emask)
    path = tmp_path / "edges.npz"
    np.savez(path, **d)
    res, _ = run(files, tmp_path, "EdgeNet", path, ["energy=energy"], ["permute:n=6", "e3:n=4"])
    for spec, s in res.items():
        assert s["equivariance_error"] < NOISE and s["abs_error"] < NOISE, (spec, s)
    # the orbit keeps every edge between the same two atoms
    sym = parse_symmetry("permute:n=6")
    sym.check_input((POINTS, 3))
    batch = {k: torch.from_numpy(np.asarray(d[k])) for k in ("pos", "z", "mask", "edge_index", "edge_mask")}
    xg = orbit(sym, batch, sym.elements, ["pos"])
    ends = lambda pos, ei: torch.gather(pos, 1, ei.reshape(pos.shape[0], -1, 1).expand(-1, -1, 3))  # noqa: E731
    for e in range(sym.n_elements):
        assert torch.equal(ends(xg["pos"][e], xg["edge_index"][e]), ends(batch["pos"], batch["edge_index"]))
        assert torch.equal(xg["edge_mask"][e], batch["edge_mask"])
        assert torch.equal(xg["mask"][e], batch["mask"])


def test_masked_permutations_reorder_only_real_points():
    g = torch.Generator().manual_seed(0)
    perm = torch.stack([torch.randperm(9, generator=g) for _ in range(20)])
    mask = torch.rand(6, 9, generator=g) < 0.6
    mask[:, 0] = True
    out = restrict_permutation(perm, mask)
    assert out.shape == (20, 6, 9)
    assert torch.equal(out.sort(-1).values, torch.arange(9).expand(20, 6, 9))  # a permutation per sample
    ar = torch.arange(9).expand(20, 6, 9)
    assert torch.equal(torch.where(~mask, out, ar), ar)  # padded points stay put
    assert bool(torch.gather(mask.expand(20, 6, 9), 2, out)[mask.expand(20, 6, 9)].all())  # real slots take real points
    assert torch.equal(restrict_permutation(perm, torch.ones(6, 9, dtype=torch.bool)), perm.unsqueeze(1).expand(20, 6, 9))
    # the orbit and the output action agree per sample; padded positions are not moved by rotations either
    sym = parse_symmetry("so3:n=3*permute:n=3")
    sym.check_input((9, 3))
    pos = torch.randn(6, 9, 3, dtype=torch.float64, generator=g)
    xg = orbit(sym, {"pos": pos, "mask": mask}, sym.elements, ["pos"])
    sp = sample_permutation(sym, sym.elements, mask)  # the mask travels with the batch, nothing is bound to sym
    assert sample_permutation(sym, sym.elements).shape == (sym.n_elements, 1, 9)
    assert sp.shape == (sym.n_elements, 6, 9) and point_permutation(sym, sym.elements).shape == (sym.n_elements, 9)
    norms = pos.norm(dim=-1)
    assert_close(xg["pos"].norm(dim=-1), torch.gather(norms.expand(sym.n_elements, 6, 9), 2, sp), rtol=0, atol=1e-12)
    assert torch.equal(xg["pos"][:, ~mask], pos[~mask].expand(sym.n_elements, -1, 3))


def test_padded_systems_read_the_same_with_prefetch_on_and_off_over_several_batches(files, tmp_path):
    """The point mask travels with its batch (nothing is bound to the symmetry): over several batches with
    different masks (the last one shorter) and a partial floor subset, prefetching changes no bit, every
    batch is compared with its own mask (GarbagePad's padded rows would read a clear error otherwise), and
    the batch size changes only float noise."""
    outputs = ["energy=energy", "forces=forces", "charges=charges"]
    specs = ["permute:n=4", "so3:n=2*permute:n=2", "translate3d:max=0.5"]
    tables = {}
    for prefetch in (True, False):
        for bs in (15, 4096):
            res, _ = run(files, tmp_path / f"{prefetch}{bs}", "GarbagePad", files["lj"], outputs, specs, batch_size=bs,
                         prefetch=prefetch, floor_samples=5)
            for spec in specs:
                for key in ("forces.equivariance_error", "charges.equivariance_error", "energy.equivariance_error"):
                    assert res[spec][key] < NOISE, (prefetch, bs, spec, key, res[spec][key])
            with np.load(tmp_path / f"{prefetch}{bs}" / "out" / "orbits.npz") as z:
                tables[prefetch, bs] = {k: z[k] for k in z.files if z[k].dtype.kind in "fiub"}
    for bs in (15, 4096):
        on, off = tables[True, bs], tables[False, bs]
        assert sorted(on) == sorted(off)
        for key in on:
            np.testing.assert_array_equal(on[key], off[key], err_msg=key)
    for key, v in tables[True, 15].items():
        if key.endswith("_error") and v.dtype.kind == "f":
            np.testing.assert_allclose(v, tables[True, 4096][key], rtol=0, atol=1e-5, err_msg=key)


def test_bad_masks_and_edges_are_data_errors(files, tmp_path):
    d = dict(np.load(files["lj"]))
    for change, word in [({"mask": d["mask"][:, :5]}, "mask"), ({"edge_index": np.full((8, 2, 3), 99)}, "edge_index")]:
        bad = dict(d, **change)
        path = tmp_path / f"bad_{word}.npz"
        np.savez(path, **bad)
        with pytest.raises(DataError, match=word):
            run(files, tmp_path, "EGNNPotential", path, ["energy=energy", "forces=forces"], ["so3:n=2"])


E3NN_MODEL = """
import torch
from e3nn import o3


class E3nnVectors(torch.nn.Module):
    \"\"\"pos (B, P, 3) -> (energy (B,), vectors (B, P, 3)): one e3nn tensor product 1o x 1o -> 0e + 1o of the
    centred positions and their neighbours in index order; ``bias`` adds a fixed vector (breaks rotations).\"\"\"

    def __init__(self, bias: float = 0.0):
        super().__init__()
        self.tp = o3.FullyConnectedTensorProduct("1o", "1o", "0e + 1o")
        self.register_buffer("bias", torch.tensor([bias, 0.0, 0.0]))

    def forward(self, pos):
        c = pos - pos.mean(1, keepdim=True)
        out = self.tp(c, c.roll(1, 1))
        return out[..., 0].sum(1), out[..., 1:] + self.bias


class Broken(E3nnVectors):
    def __init__(self):
        super().__init__(bias=0.5)
"""


@pytest.mark.parametrize("name", ["E3nnVectors", "Broken"])
def test_e3nn_network_agrees_with_e3nn_equivariance_error(tmp_path, name):
    """Skipped without e3nn: an e3nn network scanned by eqaudit (energy 0e, per-point vectors 1o, under o3)
    reads what e3nn.util.test.equivariance_error reads on the same inputs: float noise for the network,
    a clear error for the same network plus a fixed vector."""
    pytest.importorskip("e3nn")
    from e3nn.o3 import Irreps
    from e3nn.util.test import equivariance_error

    (tmp_path / "e3nn_toy.py").write_text(E3NN_MODEL)
    sys.path.insert(0, str(tmp_path))
    import e3nn_toy

    torch.manual_seed(0)
    net = getattr(e3nn_toy, name)().eval()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    pos = torch.randn(6, 5, 3)
    np.savez(tmp_path / "pos.npz", x=pos.numpy())
    res = scan(tmp_path / "net.pt", data=str(tmp_path / "pos.npz"), symmetry=["o3:n=4"], output=["energy=energy", "vec=vector-per-point"],
               model_factory=f"{tmp_path / 'e3nn_toy.py'}:{name}", out=str(tmp_path / "out"), device="cpu")
    ours = max(res.symmetries[0].summary["energy.max_abs_error"], res.symmetries[0].summary["vec.max_abs_error"])

    def fn(x):
        energy, vec = net(x)
        return energy.unsqueeze(-1), vec

    with torch.no_grad():
        errs = equivariance_error(fn, args_in=[pos], irreps_in=[Irreps("1o")], irreps_out=[Irreps("0e"), Irreps("1o")],
                                  ntrials=4, do_parity=True, do_translation=False)
    theirs = max(float(v.max()) for v in errs.values())
    if name == "E3nnVectors":
        assert ours < 1e-4 and theirs < 1e-4, (ours, theirs)
    else:
        assert ours > 1e-2 and theirs > 1e-2, (ours, theirs)


def test_shipped_potentials_scan_unaided_from_their_sidecars(tmp_path):
    """sample_models/lj_egnn.pt and lj_mlp.pt (trained by train_molecules.py) with nothing but their sidecars."""
    res = {}
    for name in ("lj_egnn", "lj_mlp"):
        r = scan(ROOT / "sample_models" / f"{name}.pt", symmetry=["e3:n=4"], limit=16, out=str(tmp_path / name), device="cpu")
        assert r.models[0].outputs == ["energy=energy", "forces=forces"]
        res[name] = r.symmetries[0].summary
    assert res["lj_egnn"]["forces.equivariance_error"] < NOISE and res["lj_egnn"]["energy.equivariance_error"] < NOISE
    assert res["lj_mlp"]["forces.equivariance_error"] > 0.1 and res["lj_mlp"]["forces.rms_error"] > 0.1


def test_onnx_graph_model_gets_its_own_inputs_while_the_mask_rides_along(files, tmp_path):
    """An ONNX EdgeNet (inputs pos, z, edge_index, edge_mask) on a file that also holds `mask`: the mask
    travels with the batch but is not fed to onnxruntime (which refuses inputs a graph lacks); int64
    edges are relabelled with the atoms."""
    import warnings

    sys.path.insert(0, str(TESTS))
    import toy_molecules

    d = lj_clusters(6, sizes=(5, 8), seed=4)
    m = 12
    edges = np.zeros((6, 2, m), dtype=np.int64)
    emask = np.zeros((6, m), dtype=bool)
    for i, k in enumerate(d["mask"].sum(1)):  # building test data: a ring over the real atoms
        edges[i, 0, :k], edges[i, 1, :k] = np.arange(k), (np.arange(k) + 1) % k
        emask[i, :k] = True
    d.update(edge_index=edges, edge_mask=emask)
    np.savez(tmp_path / "edges.npz", **d)
    net = toy_molecules.EdgeNet().eval()
    args = tuple(torch.from_numpy(np.asarray(d[k][:3])) for k in ("pos", "z", "edge_index", "edge_mask"))
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(tmp_path / "edge.onnx"), input_names=["pos", "z", "edge_index", "edge_mask"],
                          output_names=["energy"], dynamic_shapes={k: {0: batch} for k in ("pos", "z", "edge_index", "edge_mask")},
                          dynamo=True, external_data=False, verbose=False)
    res = scan(tmp_path / "edge.onnx", data=str(tmp_path / "edges.npz"), symmetry=["permute:n=6", "e3:n=4"], output=["energy"],
               act_on=["pos"], out=str(tmp_path / "out"), device="cpu")
    for s in res.symmetries:
        assert s.summary["equivariance_error"] < NOISE, (s.spec, s.summary)
    assert res.data.inputs == {"pos": "pos", "z": "z", "edge_index": "edge_index", "edge_mask": "edge_mask"}


def test_structure_thumbnails_draw_points_where_they_are_and_the_nearest_in_front():
    from eqaudit.report.structures import _view, structure_image

    to_world = lambda v: np.asarray(v, dtype=np.float64) @ _view()  # noqa: E731  (view coordinates -> world; V orthogonal)
    size, centre = 33, np.zeros(3)

    def drawn_centroid(img):
        ys, xs = np.nonzero((img < 0.999).any(-1))
        return xs.mean(), ys.mean()

    one = structure_image(to_world([[0.0, 0.0, 0.0]]), centre, 1.0, size)
    assert one.shape == (size, size, 3) and (one[0, 0] == 1).all()  # white background
    assert drawn_centroid(one) == pytest.approx((16.0, 16.0))
    moved = structure_image(to_world([[0.5, 0.25, 0.0]]), centre, 1.0, size)  # right and up in the view
    # within half a pixel: a disc edge that falls exactly on pixel centres rounds either way (numpy builds differ)
    assert drawn_centroid(moved) == pytest.approx((16.0 + 0.25 * 32, 16.0 - 0.125 * 32), abs=0.5)
    # two points on one line of sight and a third aside: the nearer (view z = +1) owns the shared pixel
    img = structure_image(to_world([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.6, 0.6, 0.0]]), centre, 1.0, size)
    assert_close(torch.from_numpy(img[16, 16]), torch.tensor([0.95, 0.8, 0.15], dtype=torch.float64), rtol=0, atol=1e-9)


def test_lie_derivatives_of_next_positions_include_the_shift(tmp_path):
    """--local on a trajectory step: positions move with shifts (tangent e_i), so an equivariant step reads
    ~0 under translate3d and so3; a fixed offset keeps shifts but breaks rotations."""
    sys.path.insert(0, str(TESTS))
    import toy_molecules

    pos = np.random.default_rng(0).normal(size=(6, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "pos.npz", x=pos)
    lie = {}
    for name in ("NextPositions", "OffsetNextPositions"):
        torch.save(getattr(toy_molecules, name)().state_dict(), tmp_path / f"{name}.pt")
        res = scan(tmp_path / f"{name}.pt", data=str(tmp_path / "pos.npz"), symmetry=["so3:n=2", "translate3d"],
                   output=["positions"], model_factory=f"{TOYS}:{name}", local=True, out=str(tmp_path / name), device="cpu")
        lie[name] = {s.name: s.summary["lie_derivative"] for s in res.symmetries}
    assert lie["NextPositions"]["so3"] < 1e-4 and lie["NextPositions"]["translate3d"] < 1e-4, lie
    assert lie["OffsetNextPositions"]["translate3d"] < 1e-4 and lie["OffsetNextPositions"]["so3"] > 1e-2, lie


def test_energies_and_forces_against_the_true_values(tmp_path):
    """--reference label with the data's true energies (N, 1) and forces (N, P, 3): the errors of the trained
    EGNN on the test clusters, the same for every rotation (it is exactly equivariant)."""
    d = dict(np.load(ROOT / "sample_models" / "lj_test.npz"))
    data = tmp_path / "lj.npz"
    np.savez(data, **d, energy_rows=d["energy"][:, None])  # targets are rows (N, ...): energies as (N, 1)
    per = {}
    for out, key in (("energy=energy", "energy_rows"), ("forces=forces", "forces")):
        res = scan(ROOT / "sample_models" / "lj_egnn.pt", data=str(data), symmetry=["so3:n=3"], output=[out], reference="label",
                   targets_key=key, out=str(tmp_path / key), device="cpu")
        key = key.split("_")[0]
        per[key] = res.symmetries[0].per_element
    d = np.load(data)
    sys.path.insert(0, str(ROOT / "sample_models"))
    net = molecule_models.EGNNPotential()
    net.load_state_dict(torch.load(ROOT / "sample_models" / "lj_egnn.pt"))
    pred = net(torch.from_numpy(d["pos"]), torch.from_numpy(d["z"]), torch.from_numpy(d["mask"]))
    e_err = (pred["energy"].detach().double() - torch.from_numpy(d["energy"])).abs()
    f_rms = ((pred["forces"].detach().double() - torch.from_numpy(d["forces"]).double()).pow(2).sum(-1) * torch.from_numpy(d["mask"])).sum(1)
    f_rms = (f_rms / torch.from_numpy(d["mask"]).sum(1)).sqrt()
    for row in per["energy"]:
        assert row["abs_error"] == pytest.approx(float(e_err.mean()), rel=1e-4)
    for row in per["forces"]:
        assert row["rms_error"] == pytest.approx(float(f_rms.mean()), rel=1e-4)


def test_shipped_trajectory_predictors_equivariant_augmented_plain(tmp_path):
    """sample_models/nbody_*.pt: two input frames (pos, prev) both moved, next positions moved with shifts too."""
    res = {}
    for name in ("nbody_egnn", "nbody_aug", "nbody_mlp"):
        r = scan(ROOT / "sample_models" / f"{name}.pt", symmetry=["so3:n=4", "translate3d:max=0.5"], limit=16,
                 out=str(tmp_path / name), device="cpu")
        assert r.data.act_on == ["pos", "prev"]
        res[name] = {s.name: s.summary for s in r.symmetries}
    assert res["nbody_egnn"]["so3"]["rms_error"] < 1e-5
    for name in ("nbody_egnn", "nbody_aug", "nbody_mlp"):
        assert res[name]["translate3d"]["rms_error"] < 1e-5  # all centre their inputs
    assert res["nbody_aug"]["so3"]["rms_error"] > 1e-3 and res["nbody_mlp"]["so3"]["rms_error"] > 1e-3


def test_thumbnails_of_padded_systems_keep_the_mask_and_draw_only_real_atoms(files, tmp_path, monkeypatch):
    """The worst samples' mask is stored beside them; the stored moved structures permute only the real
    atoms (padded rows stay at their stored positions, as the sweep moves them); the report frames and
    draws the real atoms only."""
    from eqaudit.report import structures

    _, res = run(files, tmp_path, "MLPPotential", files["lj"], ["energy=energy", "forces=forces"], ["so3:n=2*permute:n=2"])
    data = np.load(files["lj"])
    with np.load(tmp_path / "out" / "orbits.npz") as z:
        worst, masks, xs, moved = z["s0.worst_index"], z["s0.worst_mask"], z["s0.worst_x"], z["s0.thumb_x"]
    assert masks.dtype == bool and np.array_equal(masks, data["mask"][worst])
    assert (~masks).any()  # the worst samples include a padded system: a real test
    for r in range(len(worst)):
        pad = ~masks[r]
        assert np.array_equal(moved[r][:, pad], np.broadcast_to(xs[r][pad], moved[r][:, pad].shape))  # padding stays put
        np.testing.assert_allclose(np.linalg.norm(moved[r][:, ~pad] - moved[r][:, ~pad].mean(1, keepdims=True), axis=-1).sum(-1),
                                   np.linalg.norm(xs[r][~pad] - xs[r][~pad].mean(0), axis=-1).sum(), rtol=1e-5)  # real atoms: moved rigidly
    drawn = []
    real = structures.structure_image
    monkeypatch.setattr(structures, "structure_image", lambda p, c, h, *a, **k: (drawn.append(np.asarray(p)), real(p, c, h, *a, **k))[1])
    from eqaudit.report.html import write_report

    write_report(res, tmp_path / "report", tmp_path / "out", workers=1)
    real_counts = sorted(set(masks.sum(1).tolist()))
    assert drawn and all(len(p) in real_counts for p in drawn)  # only real atoms drawn
    padded = np.concatenate([xs[r][~masks[r]] for r in range(len(worst))])
    for p in drawn:  # no drawn point sits where a padded atom is stored
        assert not (np.abs(p[:, None, :] - padded[None]).sum(-1) < 1e-9).any()


def test_per_atom_force_errors_of_the_worst_samples_agree_with_the_sweep(files, tmp_path):
    """Known answer: the stored per-atom errors (k, E, P) of the worst samples, from their own model calls,
    give back the sweep's rms_error per (sample, element) (root mean square over the real atoms), are 0
    on padded atoms and at the identity, and the report draws one error-bar figure per plotted sample."""
    _, res = run(files, tmp_path, "MLPPotential", files["lj"], ["energy=energy", "forces=forces"], ["so3:n=2", "permute:n=3"])
    data = np.load(files["lj"])
    with np.load(tmp_path / "out" / "orbits.npz") as z:
        for j, sym in enumerate(res.symmetries):
            worst, err = z[f"s{j}.worst_index"], z[f"s{j}.worst_point_error"]
            assert str(z[f"s{j}.worst_point_output"]) == "forces"
            mask = data["mask"][worst]
            assert err.shape == (len(worst), len(sym.labels), mask.shape[1]) and (~mask).any()
            assert (err.transpose(1, 0, 2)[:, ~mask] == 0).all() and np.abs(err[:, sym.identity_index]).max() < 1e-5
            rms = np.sqrt((err.astype(np.float64) ** 2).sum(-1) / mask.sum(1)[:, None])  # (k, E)
            np.testing.assert_allclose(rms, z[f"s{j}.forces.rms_error"][worst], rtol=1e-4, atol=1e-6)
            assert rms.max() > 1e-3  # the MLP moves its forces: a real comparison
    from eqaudit.report.html import write_report

    html = write_report(res, tmp_path / "report", tmp_path / "out", workers=1).read_text()
    assert html.count('alt="error per atom of sample') == 2 * min(4, len(worst))  # both symmetries, every plotted sample
    # GarbagePad's padded rows move arbitrarily: still 0 there, float noise on the real atoms
    run(files, tmp_path / "garbage", "GarbagePad", files["lj"], ["energy=energy", "forces=forces", "charges=charges"], ["so3:n=2"])
    with np.load(tmp_path / "garbage" / "out" / "orbits.npz") as z:
        err, mask = z["s0.worst_point_error"], data["mask"][z["s0.worst_index"]]
    assert (~mask).any() and (err.transpose(1, 0, 2)[:, ~mask] == 0).all() and err.max() < 1e-4
