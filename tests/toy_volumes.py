"""Small models on volumes (B, C, D, H, W) for the volume tests, symmetric (or not) by construction."""

from __future__ import annotations

import torch
from torch import nn

SIZE = 6  # cubic volumes SIZE x SIZE x SIZE
CLASSES = 4


class PooledVolumeNet(nn.Module):
    """A 1x1x1 convolution, ReLU, the mean over every voxel, a linear head: invariant to every voxel
    permutation (so to every rotation and mirror of the cube) by construction."""

    def __init__(self, channels: int = 2):
        super().__init__()
        torch.manual_seed(11)
        self.mix = nn.Conv3d(channels, 8, 1)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x):
        return 10 * self.head(torch.relu(self.mix(x)).mean(dim=(2, 3, 4)))


class ChannelsLastPooled(nn.Module):
    """PooledVolumeNet (same seed, same weights) taking channels-last (B, D, H, W, C) volumes."""

    def __init__(self):
        super().__init__()
        self.net = PooledVolumeNet()

    def forward(self, x):
        return self.net(x.permute(0, 4, 1, 2, 3).contiguous())


class PlainVolumeNet(nn.Module):
    """A 3x3x3 convolution with a linear head over every voxel: no symmetry."""

    def __init__(self, channels: int = 2):
        super().__init__()
        torch.manual_seed(12)
        self.conv = nn.Conv3d(channels, 4, 3, padding=1)
        self.head = nn.Linear(4 * SIZE**3, CLASSES)

    def forward(self, x):
        return 10 * self.head(torch.relu(self.conv(x)).flatten(1))


class Centroid(nn.Module):
    """The weighted centroid (x, y, z) of the voxels, weights softplus of a 1x1x1 convolution: a vector
    that turns with every rotation and mirror of the volume by construction."""

    def __init__(self, channels: int = 2):
        super().__init__()
        torch.manual_seed(13)
        self.mix = nn.Conv3d(channels, 1, 1)

    def forward(self, x):
        d, h, w = x.shape[-3:]
        weights = nn.functional.softplus(self.mix(x))[:, 0]  # (B, D, H, W)
        z, y, xx = torch.meshgrid(*(torch.arange(n, dtype=x.dtype) - (n - 1) / 2 for n in (d, h, w)), indexing="ij")
        coords = torch.stack([xx, y, z], -1)  # (D, H, W, 3) in (x, y, z) order, centred
        return torch.einsum("bdhw,dhwk->bk", weights, coords) / weights.sum(dim=(1, 2, 3)).unsqueeze(-1)
