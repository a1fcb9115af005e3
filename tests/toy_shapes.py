"""Tiny models on non-square images for the shape-group tests: fully convolutional ones that take H x W and
W x H alike (global pooling or dense maps), and one whose head fixes the input shape."""

from __future__ import annotations

import torch
from torch import nn


class PooledNet(nn.Module):
    """(B, 1, H, W) -> (B, 3) logits: 3x3 convolutions then a global mean: any H x W, not rotation-invariant."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return 4 * self.head(h.mean((-2, -1)))


class TurnAveragedNet(PooledNet):
    """PooledNet averaged over the four quarter turns of its input: exactly rot90-invariant on any H x W
    (each turn is called on its own, since turned non-square inputs differ in shape)."""

    def forward(self, x):
        return torch.stack([super(TurnAveragedNet, self).forward(torch.rot90(x, k, dims=(-2, -1))) for k in range(4)]).mean(0)


class FixedShapeNet(TurnAveragedNet):
    """TurnAveragedNet's logits plus a linear read-out of a (3, 5) valid convolution's whole map, summed
    over the half turn (so still exactly rot180-invariant): the head fixes the input shape (6 x 10 gives
    4 x 6 = 24 features; 10 x 6 gives 16 and fails)."""

    def __init__(self):
        super().__init__()
        self.fixed = nn.Conv2d(1, 1, (3, 5))
        self.read = nn.Linear(24, 3)

    def forward(self, x):
        maps = self.fixed(x) + self.fixed(torch.rot90(x, 2, dims=(-2, -1)))
        return super().forward(x) + self.read(maps.flatten(1))


class PointwiseMaps(nn.Module):
    """(B, 1, H, W) -> (B, 2, H, W): a 1x1 convolution and a pixel-wise nonlinearity: exactly equivariant
    to every pixel permutation, quarter turns of non-square maps included."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return torch.tanh(self.conv(x))


class ConvMaps(PointwiseMaps):
    """(B, 1, H, W) -> (B, 2, H, W) through a 3x3 convolution with a random kernel: not rotation-equivariant."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
