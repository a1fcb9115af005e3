"""Small models whose continuous symmetries are known by construction, for the discover tests (no training)."""

from __future__ import annotations

import torch
from torch import nn


class RadialNet(nn.Module):
    """Smooth radial profiles (Gaussian-windowed, decaying well inside the frame) pooled over the
    image, then an MLP: invariant to every rotation about the centre, exactly in the continuum and
    to spectral accuracy on the grid; not to translations, scale or the other affine maps."""

    def __init__(self, size: int = 24, classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        i = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        r2 = i.view(-1, 1) ** 2 + i.view(1, -1) ** 2
        profiles = [torch.exp(-r2 / (2 * s**2)) for s in (1.5, 2.0, 2.5)] + [r2 / 4 * torch.exp(-r2 / 8)]
        self.register_buffer("profiles", torch.stack(profiles))  # (R, H, W)
        self.mlp = nn.Sequential(nn.Linear(len(profiles), 16), nn.Tanh(), nn.Linear(16, classes))

    def forward(self, x):
        feats = torch.einsum("bchw,rhw->br", x, self.profiles)
        return self.mlp(feats)


class CircularQuadNet(nn.Module):
    """One circular convolution, a square, global mean pooling, then an MLP: invariant to every
    band-limited (Fourier) shift, since sum_p h(p) (D h)(p) = 0 for the antisymmetric spectral
    derivative D; a ReLU would keep only the integer shifts."""

    def __init__(self, channels: int = 1, classes: int = 4):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(channels, 8, 5, padding=2, padding_mode="circular")
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, classes))

    def forward(self, x):
        return self.mlp(self.conv(x).pow(2).mean((-2, -1)))


class PlainMLP(nn.Module):
    """Flatten and an MLP: no symmetry."""

    def __init__(self, size: int = 24, classes: int = 4):
        super().__init__()
        torch.manual_seed(2)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(size * size, 32), nn.Tanh(), nn.Linear(32, classes))

    def forward(self, x):
        return self.mlp(x)


class DistanceNet(nn.Module):
    """Gaussian kernels of all pairwise distances, summed, then an MLP: invariant to rotations,
    translations (and permutations) of the cloud."""

    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(3)
        self.register_buffer("widths", torch.tensor([0.3, 0.7, 1.5]))
        self.mlp = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, classes))

    def forward(self, x):
        d2 = (x.unsqueeze(2) - x.unsqueeze(1)).pow(2).sum(-1)  # (B, P, P)
        feats = torch.exp(-d2.unsqueeze(-1) / self.widths).mean((1, 2))
        return self.mlp(feats)


class ZRotationNet(nn.Module):
    """Mean squared distance from the z axis and mean squared height: invariant to rotations about z
    alone (not to the other rotations, nor to translations)."""

    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(4)
        self.mlp = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, classes))

    def forward(self, x):
        rho = x[..., :2].pow(2).sum(-1)
        feats = torch.stack([rho.mean(1), x[..., 2].pow(2).mean(1)], -1)
        return self.mlp(feats)


class CircularQuad1D(nn.Module):
    """The 1-D form of CircularQuadNet for signals (B, C, L): invariant to band-limited shifts."""

    def __init__(self, channels: int = 2, classes: int = 3):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv1d(channels, 6, 5, padding=2, padding_mode="circular")
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x).pow(2).mean(-1)))
