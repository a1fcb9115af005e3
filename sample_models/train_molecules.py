"""Deterministically train eqaudit's molecule sample models on Lennard-Jones clusters and write their data and sidecars.

Run from anywhere:  python sample_models/train_molecules.py   (CPU, one thread, about a minute)

Writes into the folder of this file:
  lj_test.npz        64 test clusters of 5 and 8 atoms padded to 8: pos (N, 8, 3), z (N, 8), mask (N, 8),
                     and the true energy (N,) and forces (N, 8, 3) (LJ, sigma = epsilon = 1)
  lj_egnn.pt         EGNNPotential: energy + forces (-dE/dpos by autograd inside forward), E(3) x S_n by construction
  lj_mlp.pt          MLPPotential: an MLP on flattened coordinates fitted to the same data, no symmetry
  nbody_test.npz     64 states of 5-body spring systems: prev, pos (two frames) and next (the target)
  nbody_egnn.pt      EquivariantStep: next positions, E(3) x S_n-equivariant by construction
  nbody_aug.pt       MLPStep trained with random rotations, reflections and relabellings
  nbody_mlp.pt       MLPStep trained plainly
and a sidecar NAME.eqaudit.toml for each, then audits both with eqaudit and prints the numbers that
sample_models/README.md quotes. Architectures and the data generator are in molecule_models.py.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from molecule_models import EGNNPotential, EquivariantStep, MLPPotential, MLPStep, lj_clusters, spring_trajectories  # noqa: E402

SEED = 0
TRAIN, TEST = 512, 64
SIDECARS = {
    "lj_egnn": (
        "EGNN potential on Lennard-Jones clusters (padded, 5 and 8 atoms): energy and forces E(3) x S_n-equivariant by construction",
        'model_factory = "molecule_models:EGNNPotential"\n',
    ),
    "lj_mlp": (
        "MLP on flattened coordinates fitted to the same clusters: no rotation, shift or relabelling symmetry",
        'model_factory = "molecule_models:MLPPotential"\n',
    ),
}
NBODY = {
    "nbody_egnn": ("next-position predictor for 5-body spring systems, E(3) x S_n-equivariant by construction",
                   'model_factory = "molecule_models:EquivariantStep"\n'),
    "nbody_aug": ("MLP next-position predictor trained with random rotations, reflections and relabellings",
                  'model_factory = "molecule_models:MLPStep"\n'),
    "nbody_mlp": ("MLP next-position predictor trained plainly (shift-equivariant by centring only)",
                  'model_factory = "molecule_models:MLPStep"\n'),
}
NBODY_COMMON = ('data = "nbody_test.npz"\nact_on = ["pos", "prev"]\noutput = ["next=positions"]\n'
                'symmetry = ["so3:n=16", "o3:n=8", "translate3d:max=0.5", "permute:n=8", "e3:n=16"]\n')
COMMON = ('data = "lj_test.npz"\nact_on = ["pos"]\noutput = ["energy=energy", "forces=forces"]\n'
          'symmetry = ["so3:n=16", "o3:n=8", "translate3d:max=0.5", "permute:n=8", "e3:n=16"]\n')


def set_determinism(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)


def train(model: torch.nn.Module, data: dict[str, np.ndarray], epochs: int, lr: float) -> torch.nn.Module:
    """Adam on mean squared energy (per atom) and force errors, each divided by its variance in the data, the
    energy term weighted 0.05 (the atom count alone explains most of the energy; forces carry the shape)."""
    pos, z, mask = (torch.from_numpy(data[k]) for k in ("pos", "z", "mask"))
    energy, forces = torch.from_numpy(data["energy"]).float(), torch.from_numpy(data["forces"])
    atoms = mask.sum(1).float()
    e_scale = float((energy / atoms).var())
    f_scale = float(forces[mask].pow(2).mean())
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * (len(pos) // 64))
    g = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(pos), generator=g).split(64):
            out = model(pos[idx].clone(), z[idx], mask[idx])
            e, f = out["energy"], out["forces"]
            m = mask[idx].unsqueeze(-1).float()
            loss = 0.05 * ((e - energy[idx]) / atoms[idx]).pow(2).mean() / e_scale + ((f - forces[idx]) * m).pow(2).sum() / m.sum() / 3 / f_scale
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def errors(model: torch.nn.Module, data: dict[str, np.ndarray]) -> tuple[float, float]:
    """Test energy MAE per atom and force RMSE (LJ units)."""
    pos, z, mask = (torch.from_numpy(data[k]) for k in ("pos", "z", "mask"))
    out = model(pos.clone(), z, mask)
    e, f = out["energy"], out["forces"]
    atoms = mask.sum(1)
    e_mae = float(((e.detach().double() - torch.from_numpy(data["energy"])) / atoms).abs().mean())
    f_rmse = float((f.detach() - torch.from_numpy(data["forces"]))[mask].pow(2).sum(-1).mean().sqrt())
    return e_mae, f_rmse


def random_orthogonal(n: int, g: torch.Generator) -> torch.Tensor:
    """(n, 3, 3) Haar-random orthogonal matrices (rotations and reflections), from QR of Gaussians."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g))
    return q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)


def train_step(model: torch.nn.Module, data: dict[str, np.ndarray], epochs: int, lr: float, augment: bool) -> torch.nn.Module:
    """Adam on the mean squared next-position error; ``augment``: each batch randomly rotated/reflected and relabelled."""
    pos, prev, nxt = (torch.from_numpy(data[k]) for k in ("pos", "prev", "next"))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * (len(pos) // 64))
    g = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        for idx in torch.randperm(len(pos), generator=g).split(64):
            a, b, c = pos[idx], prev[idx], nxt[idx]
            if augment:
                m = random_orthogonal(len(idx), g)
                perm = torch.randperm(a.shape[1], generator=g)
                a, b, c = (torch.einsum("bij,bpj->bpi", m, t[:, perm]) for t in (a, b, c))
            loss = (model(a, b) - c).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def write_sidecar(name: str, what: str, body: str) -> None:
    (HERE / f"{name}.eqaudit.toml").write_text(
        f"# eqaudit settings for {name}.pt (read by `eqaudit scan sample_models/{name}.pt`): {what}.\n"
        "# Paths are relative to this file's folder; written by train_molecules.py.\n" + body)


def main() -> None:
    t0 = time.perf_counter()
    set_determinism(SEED)
    train_data, test_data = lj_clusters(TRAIN, seed=1), lj_clusters(TEST, seed=2)
    np.savez(HERE / "lj_test.npz", **test_data)
    for name, model, epochs, lr in (("lj_egnn", EGNNPotential(), 20, 5e-3), ("lj_mlp", MLPPotential(), 60, 3e-3)):
        t = time.perf_counter()
        model = train(model, train_data, epochs, lr)
        torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, HERE / f"{name}.pt")
        e_mae, f_rmse = errors(model, test_data)
        print(f"  {name:8s} test energy MAE/atom {e_mae:.4f}, force RMSE {f_rmse:.3f} ({time.perf_counter() - t:.1f} s)")
        what, body = SIDECARS[name]
        (HERE / f"{name}.eqaudit.toml").write_text(
            f"# eqaudit settings for {name}.pt (read by `eqaudit scan sample_models/{name}.pt`): {what}.\n"
            "# Paths are relative to this file's folder; written by train_molecules.py.\n" + body + COMMON)
    set_determinism(SEED)
    nb_train, nb_test = spring_trajectories(2048, seed=3), spring_trajectories(64, seed=4)
    np.savez(HERE / "nbody_test.npz", **nb_test)
    base = float(((torch.from_numpy(nb_test["next"]) - 2 * torch.from_numpy(nb_test["pos"]) + torch.from_numpy(nb_test["prev"]))
                  .pow(2).mean()).sqrt())
    for name, model, epochs, augment in (("nbody_egnn", EquivariantStep(), 20, False), ("nbody_aug", MLPStep(), 40, True),
                                         ("nbody_mlp", MLPStep(), 40, False)):
        t = time.perf_counter()
        torch.manual_seed(SEED)
        model = train_step(model, nb_train, epochs, 3e-3, augment)
        torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, HERE / f"{name}.pt")
        with torch.no_grad():
            rmse = float((model(torch.from_numpy(nb_test["pos"]), torch.from_numpy(nb_test["prev"])) - torch.from_numpy(nb_test["next"]))
                         .pow(2).mean().sqrt())
        print(f"  {name:10s} test next-position RMSE {rmse:.5f} (constant velocity: {base:.5f}) ({time.perf_counter() - t:.1f} s)")
        write_sidecar(name, NBODY[name][0], NBODY[name][1] + NBODY_COMMON)
    print(f"training total {time.perf_counter() - t0:.1f} s")
    from eqaudit.api import scan

    for name in [*SIDECARS, *NBODY]:
        res = scan(HERE / f"{name}.pt", out=str(HERE.parent / "reports" / name), device="cpu", write=False)
        for s in res.symmetries:
            keys = ("energy.equivariance_error", "forces.equivariance_error", "forces.rms_error", "energy.error_per_atom",
                    "equivariance_error", "rms_error")
            shown = ", ".join(f"{k}={s.summary[k]:.3g}" for k in keys if k in s.summary)
            print(f"  {name:10s} {s.spec:22s} {shown}")


if __name__ == "__main__":
    main()
