"""Lennard-Jones clusters and two potentials for them: an E(3) x S_n-equivariant EGNN and a plain MLP.

Importing this module has no side effects. Shapes: B batch, P points (atoms, padded), F features.

- ``lj_clusters(n, sizes, points, seed)``: padded clusters of ``sizes`` atoms (two sizes -> two kinds of
  system in one file), their Lennard-Jones energies and forces (sigma = epsilon = 1), a mask and the
  atom types z (0 for padding, 1 for atoms). Positions of padded atoms are 0.
- ``EGNNPotential``: forward(pos, z, mask) -> {"energy": (B,), "forces": (B, P, 3)} (named outputs). EGNN layers (Satorras
  et al. 2021) update invariant atom features from pairwise distances and move centred coordinates
  along x_i - x_j; the energy is a masked sum of per-atom terms, so it is invariant to rotations,
  reflections, shifts and relabelling by construction, and the forces are -dE/dpos computed by
  autograd *inside* forward (``torch.enable_grad()``), hence equivariant too.
- ``MLPPotential``: the same interface, an MLP on the flattened coordinates (B, P * 3) and the mask:
  it learns the data but has none of these symmetries.
- ``spring_trajectories``, ``EquivariantStep``, ``MLPStep``: n-body spring systems and next-position
  predictors from two frames (pos, prev): equivariant by construction, or an MLP (trained plainly or
  with augmentation).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["EGNNPotential", "MLPPotential", "lj_clusters", "lj_energy_forces", "POINTS", "EquivariantStep", "MLPStep",
           "spring_trajectories", "BODIES"]

POINTS = 8  # atoms per padded system


def lj_energy_forces(pos: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lennard-Jones energy (B,) and forces (B, P, 3) of padded clusters (sigma = epsilon = 1)."""
    pos = pos.detach().to(torch.float64).requires_grad_(True)
    m = mask.to(torch.float64)
    d = pos.unsqueeze(2) - pos.unsqueeze(1)
    eye = torch.eye(pos.shape[1], dtype=torch.bool)
    pair = (m.unsqueeze(2) * m.unsqueeze(1)) * (~eye).to(torch.float64)
    r2 = (d.pow(2).sum(-1) + (1.0 - pair)).clamp_min(1e-6)  # 1 where no pair: finite, masked below
    inv6 = r2.pow(-3)
    energy = 0.5 * (4.0 * (inv6 * inv6 - inv6) * pair).sum((1, 2))
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    return energy.detach(), -grad.detach() * m.unsqueeze(-1)


def lj_clusters(n: int, sizes: tuple[int, ...] = (5, 8), points: int = POINTS, seed: int = 0, max_force: float = 10.0) -> dict[str, np.ndarray]:
    """``n`` clusters (sizes alternate over ``sizes``), padded to ``points`` atoms: a compact site of a
    simple cubic lattice (spacing 1.12, the pair minimum) near a random centre, jittered by 0.05 and
    randomly rotated and placed; drafts with a force above ``max_force`` are drawn again (no steep walls).
    Returns pos (n, P, 3) float32, z (n, P) int64, mask (n, P) bool, energy (n,) and forces (n, P, 3)."""
    g = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.12
    pos = np.zeros((n, points, 3))
    mask = np.zeros((n, points), dtype=bool)
    todo = np.arange(n)
    while len(todo):  # data generation only (not eqaudit's hot path)
        for i in todo:
            k = sizes[i % len(sizes)]
            centre = g.normal(scale=0.4, size=3)
            near = np.argsort(((grid - centre) ** 2).sum(1) + 1e-3 * g.random(len(grid)))[:k]
            site = grid[near] - grid[near].mean(0) + g.normal(scale=0.05, size=(k, 3))
            q, _ = np.linalg.qr(g.normal(size=(3, 3)))
            pos[i] = 0.0
            pos[i, :k] = site @ q.T + g.normal(scale=0.5, size=3)
            mask[i] = np.arange(points) < k
        _, f = lj_energy_forces(torch.from_numpy(pos[todo]), torch.from_numpy(mask[todo]))
        todo = todo[f.abs().amax((1, 2)).numpy() > max_force]
    e, f = lj_energy_forces(torch.from_numpy(pos), torch.from_numpy(mask))
    return {"pos": pos.astype(np.float32), "z": mask.astype(np.int64), "mask": mask,
            "energy": e.numpy(), "forces": f.numpy().astype(np.float32)}


class _Layer(nn.Module):
    """One EGNN layer: messages from (h_i, h_j, r_ij^2, r_ij^-6, r_ij^-12), invariant feature update, equivariant
    coordinate update x_i += sum_j (x_i - x_j) phi_x(m_ij) / (P - 1), all masked to real atoms."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.edge = nn.Sequential(nn.Linear(2 * width + 3, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.node = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width))
        self.coord = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, h, x, pair):
        b, p, w = h.shape
        d = x.unsqueeze(2) - x.unsqueeze(1)  # (B, P, P, 3)
        r2 = d.pow(2).sum(-1, keepdim=True) + (1.0 - pair.unsqueeze(-1))  # 1 off the real pairs: finite, masked below
        inv6 = r2.pow(-3)
        hi, hj = h.unsqueeze(2).expand(b, p, p, w), h.unsqueeze(1).expand(b, p, p, w)
        m = self.edge(torch.cat([hi, hj, r2, inv6, inv6 * inv6], -1)) * pair.unsqueeze(-1)
        x = x + (d * self.coord(m) * pair.unsqueeze(-1)).sum(2) / max(p - 1, 1)
        h = h + self.node(torch.cat([h, m.sum(2)], -1))
        return h, x


class EGNNPotential(nn.Module):
    """Energy and forces of padded atom systems, E(3) x S_n-equivariant by construction (module docstring)."""

    def __init__(self, width: int = 32, layers: int = 2, types: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(types, width)
        self.layers = nn.ModuleList(_Layer(width) for _ in range(layers))
        self.out = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def energy(self, pos, z, mask):
        m = (mask != 0).to(pos.dtype)
        pair = m.unsqueeze(2) * m.unsqueeze(1) * (1 - torch.eye(pos.shape[1], dtype=pos.dtype, device=pos.device))
        h, x = self.embed(z.long()), pos
        for layer in self.layers:
            h, x = layer(h, x, pair)
        return (self.out(h).squeeze(-1) * m).sum(1)

    def forward(self, pos, z, mask):
        with torch.enable_grad():  # forces by autograd inside the model call (eqaudit allows it)
            pos = pos.requires_grad_(True) if not pos.requires_grad else pos
            energy = self.energy(pos, z, mask)
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=self.training)
        return {"energy": energy, "forces": -grad}


class MLPPotential(nn.Module):
    """Energy from an MLP on flattened coordinates and the mask, forces = -dE/dpos: no symmetry at all."""

    def __init__(self, points: int = POINTS, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4 * points, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, pos, z, mask):
        with torch.enable_grad():
            pos = pos.requires_grad_(True) if not pos.requires_grad else pos
            m = (mask != 0).to(pos.dtype)
            feats = torch.cat([(pos * m.unsqueeze(-1)).flatten(1), m], 1)
            energy = self.net(feats).squeeze(-1)
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=self.training)
        return {"energy": energy, "forces": -grad}


# ---------------------------------------------------------------------------------------------------------
# n-body trajectories: springs between every pair of BODIES particles; predict the next positions


BODIES = 5


def spring_trajectories(n: int, seed: int = 0, steps: int = 4, dt: float = 0.1) -> dict[str, np.ndarray]:
    """``n`` states of BODIES unit masses joined pairwise by springs (rest length 1, stiffness 1): random
    positions and velocities, run ``steps`` velocity-Verlet steps of ``dt``, keep the last three frames.
    Returns prev, pos (n, BODIES, 3) float32 (the two input frames) and next (n, BODIES, 3) (the target)."""
    g = np.random.default_rng(seed)
    x = torch.from_numpy(g.normal(scale=0.8, size=(n, BODIES, 3)))
    v = torch.from_numpy(g.normal(scale=0.3, size=(n, BODIES, 3)))

    def accel(p):
        d = p.unsqueeze(2) - p.unsqueeze(1)  # x_i - x_j
        r = d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        return -((r - 1.0) * d / r).sum(2)

    frames = [x]
    a = accel(x)
    for _ in range(steps + 1):
        x = x + dt * v + 0.5 * dt * dt * a
        a_new = accel(x)
        v = v + 0.5 * dt * (a + a_new)
        a = a_new
        frames.append(x)
    return {"prev": frames[-3].numpy().astype(np.float32), "pos": frames[-2].numpy().astype(np.float32),
            "next": frames[-1].numpy().astype(np.float32)}


class EquivariantStep(nn.Module):
    """(pos, prev) -> next positions: pos + (pos - prev) + sum_j (x_i - x_j) phi(|x_i - x_j|^2) / P, with phi a
    small MLP of the squared distance: E(3) x S_n-equivariant by construction (the Verlet step's form)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, pos, prev):
        d = pos.unsqueeze(2) - pos.unsqueeze(1)
        return 2 * pos - prev + (d * self.phi(d.pow(2).sum(-1, keepdim=True))).sum(2) / pos.shape[1]


class MLPStep(nn.Module):
    """(pos, prev) -> next positions: pos + MLP(flattened pos - mean, prev - mean): shift-equivariant by the
    centring, nothing else by construction (``nbody_mlp`` is trained plainly, ``nbody_aug`` with random
    rotations, reflections and relabellings)."""

    def __init__(self, bodies: int = BODIES, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6 * bodies, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 3 * bodies))

    def forward(self, pos, prev):
        centre = pos.mean(1, keepdim=True)
        feats = torch.cat([(pos - centre).flatten(1), (prev - centre).flatten(1)], 1)
        return pos + self.net(feats).view(pos.shape)
