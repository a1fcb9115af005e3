"""Tiny atom-system models whose symmetries hold (or break) by construction, for test_molecules.

Inputs: pos (B, P, 3), z (B, P) atom types (0: padding), and where named mask (B, P), edge_index
(B, 2, M), edge_mask (B, M). Shapes: B batch, P atoms (padded), M edges.
"""

from __future__ import annotations

import torch
from torch import nn


def _pair_energy(pos, m, w):
    """Sum over real pairs of a smooth function of the distance: invariant, and -grad are the forces."""
    d = pos.unsqueeze(2) - pos.unsqueeze(1)
    r2 = d.pow(2).sum(-1)
    pair = m.unsqueeze(2) * m.unsqueeze(1) * (1 - torch.eye(pos.shape[1], dtype=pos.dtype, device=pos.device))
    return (w[0] * torch.exp(-r2 * w[1]) * pair).sum((1, 2))


class GarbagePad(nn.Module):
    """(pos, z) -> energy (B,), forces (B, P, 3), charges (B, P): equivariant on the real atoms (z != 0,
    forces = -dE/dpos by autograd), but every output row of a padded atom is a non-equivariant
    function of that atom's padded position and type. The file's ``mask`` is not an input here."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.3, 0.7]))

    def forward(self, pos, z):
        m = (z != 0).to(pos.dtype)
        with torch.enable_grad():
            p = pos.requires_grad_(True) if not pos.requires_grad else pos
            energy = _pair_energy(p, m, self.w)
            (grad,) = torch.autograd.grad(energy.sum(), p)
        pad = (1 - m).unsqueeze(-1)
        forces = -grad * m.unsqueeze(-1) + pad * (pos.pow(2) + z.unsqueeze(-1).to(pos.dtype) + 3.0)
        centre = (pos * m.unsqueeze(-1)).sum(1, keepdim=True) / m.sum(1).view(-1, 1, 1)
        charges = ((pos - centre).norm(dim=-1) * 0.1 + 0.2) * m + (1 - m) * (pos[..., 0] * 5 + z.to(pos.dtype) + 1.0)
        return energy.detach(), forces.detach(), charges


class Tensors(nn.Module):
    """(pos, z, mask) -> stress (B, 3, 3) = sum_i c_i (x_i - x̄)(x_i - x̄)^T, dipole (B, 3) = sum_i q_i (x_i - x̄),
    chirality (B,) = (x_1 - x_0) . ((x_2 - x_0) x (x_3 - x_0)) over the first four real atoms in *sorted
    distance order* (a pseudoscalar), next positions (B, P, 3) = x + 0.1 * sum_j (x_i - x_j) exp(-r_ij^2)."""

    def __init__(self):
        super().__init__()
        self.step = nn.Parameter(torch.tensor(0.1))

    def forward(self, pos, z, mask):
        m = (mask != 0).to(pos.dtype)
        centre = (pos * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
        c = pos - centre.unsqueeze(1)
        weight = (0.5 + z.to(pos.dtype)) * m
        stress = torch.einsum("bp,bpi,bpj->bij", weight, c, c)
        dipole = ((c.norm(dim=-1) * 0.3 + z.to(pos.dtype)) * m).unsqueeze(-1).mul(c).sum(1)
        r = c.norm(dim=-1) + (1 - m) * 1e6  # real atoms first, by distance from the centre
        order = torch.argsort(r, dim=1)[:, :4]
        q = torch.gather(c, 1, order.unsqueeze(-1).expand(-1, -1, 3))
        chirality = torch.einsum("bi,bi->b", q[:, 1] - q[:, 0], torch.cross(q[:, 2] - q[:, 0], q[:, 3] - q[:, 0], dim=-1))
        d = pos.unsqueeze(2) - pos.unsqueeze(1)
        pair = m.unsqueeze(2) * m.unsqueeze(1)
        step = (d * torch.exp(-d.pow(2).sum(-1, keepdim=True)) * pair.unsqueeze(-1)).sum(2)
        return stress, dipole, chirality, pos + self.step * step


class EdgeNet(nn.Module):
    """(pos, z, edge_index, edge_mask) -> energy (B,): a sum over the real edges of a function of the edge's
    length and of its two atoms' types, so the energy is invariant under relabelling only when
    edge_index is relabelled with the atoms."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.3, 0.1]))

    def forward(self, pos, z, edge_index, edge_mask):
        b = pos.shape[0]
        src, dst = edge_index[:, 0].long(), edge_index[:, 1].long()  # (B, M)
        xs = torch.gather(pos, 1, src.unsqueeze(-1).expand(-1, -1, 3))
        xd = torch.gather(pos, 1, dst.unsqueeze(-1).expand(-1, -1, 3))
        zs, zd = torch.gather(z, 1, src).to(pos.dtype), torch.gather(z, 1, dst).to(pos.dtype)
        r = (xs - xd).norm(dim=-1)
        return ((torch.sin(r) + self.w[0] * zs * zd + self.w[1] * zs) * edge_mask.to(pos.dtype)).sum(1).view(b)


class NextPositions(nn.Module):
    """pos (B, P, 3) -> next positions x + a sum_j (x_i - x_j) exp(-r_ij^2) + offset: E(3)-equivariant with
    offset 0; a fixed offset keeps shifts equivariant but breaks rotations (``OffsetNextPositions``)."""

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.1))
        self.register_buffer("offset", torch.tensor([offset, 0.0, 0.0]))

    def forward(self, pos):
        d = pos.unsqueeze(2) - pos.unsqueeze(1)
        return pos + self.a * (d * torch.exp(-d.pow(2).sum(-1, keepdim=True))).sum(2) + self.offset


class OffsetNextPositions(NextPositions):
    def __init__(self):
        super().__init__(offset=0.5)
