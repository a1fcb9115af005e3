"""Toy models whose outputs transform in declared ways by construction: pseudovectors, swapped labels, one logit, several outputs."""

from __future__ import annotations

import torch
from torch import nn


def _pair_weights(x: torch.Tensor) -> torch.Tensor:
    """(B, P, 3) -> (B, P, P) antisymmetric weights |x_p| - |x_q| (invariant under O(3) and permutations)."""
    r = x.norm(dim=-1)
    return r.unsqueeze(2) - r.unsqueeze(1)


def torque(x: torch.Tensor) -> torch.Tensor:
    """(B, P, 3) -> (B, 3): sum over pairs of (|x_p| - |x_q|) x_p × x_q, an O(3) pseudovector (cross products gain det R)."""
    w = _pair_weights(x)
    cross = torch.linalg.cross(x.unsqueeze(2).expand(-1, -1, x.shape[1], -1), x.unsqueeze(1).expand(-1, x.shape[1], -1, -1), dim=-1)
    return (w.unsqueeze(-1) * cross).sum((1, 2))


class TorqueNet(nn.Module):
    """(B, P, 3) -> (B, 3) pseudovector: exactly O(3)-equivariant with det(R) R, permutation-invariant."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x):
        return torque(x) * self.scale


class PhysicsNet(nn.Module):
    """(B, P, 3) -> (energy (B,), forces (B, P, 3), torque (B, 3)): invariant, per-point vector, pseudovector."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x):
        r2 = (x * x).sum(-1)  # (B, P)
        energy = (r2 ** 2).sum(1) * self.scale
        forces = x * torch.exp(-r2).unsqueeze(-1) * self.scale
        return energy, forces, torque(x) * self.scale


class MirrorSwapNet(nn.Module):
    """(B, C, H, W) -> (B, 2) logits (g(x), g(flip_h x)): a left-right mirror exchanges the two classes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.head = nn.Linear(6 * 4, 1)

    def _g(self, x):
        h = torch.relu(self.conv(x))
        return self.head(nn.functional.adaptive_avg_pool2d(h, 2).flatten(1))

    def forward(self, x):
        return 4 * torch.cat([self._g(x), self._g(torch.flip(x, dims=(-1,)))], 1)


class HalfTurnLogit(nn.Module):
    """(B, C, H, W) -> (B, 1) one logit, averaged over the half turn (exactly rot180-invariant, not mirror-invariant)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(12)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 9, 1)

    def _g(self, x):
        return self.head(nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 3).flatten(1))

    def forward(self, x):
        return 3 * (self._g(x) + self._g(torch.rot90(x, 2, dims=(-2, -1)))) / 2


class HalfTurnSwapNet(MirrorSwapNet):
    """(B, C, H, W) -> (B, 2) logits (g(x), g(rot180 x)) on any H x W: the half turn exchanges the two classes."""

    def forward(self, x):
        return 4 * torch.cat([self._g(x), self._g(torch.rot90(x, 2, dims=(-2, -1)))], 1)


class PerPointEnergyNet(nn.Module):
    """(B, P, 3) -> (B, P) per-point |x_p|^4: O(3)-invariant, rows follow the points."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x):
        return ((x * x).sum(-1) ** 2) * self.scale
