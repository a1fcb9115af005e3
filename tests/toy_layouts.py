"""Small models for the layout tests (issue 9), symmetric by construction: non-square, channels-last and 1-D inputs."""

from __future__ import annotations

import torch
from torch import nn

RECT_H, RECT_W = 6, 10  # a non-square image size
SIGNAL_C, SIGNAL_L = 2, 32  # 1-D signals (C, L)


class RectCNN(nn.Module):
    """A plain CNN on (B, 1, 6, 10) images with a linear head over every position: no symmetry."""

    def __init__(self, classes: int = 4):
        super().__init__()
        torch.manual_seed(5)
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6 * RECT_H * RECT_W, classes)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return 10 * self.head(h.flatten(1))


class HalfTurnAveraged(nn.Module):
    """The mean of RectCNN's logits over x and its half turn: exactly rot180-invariant, not mirror-invariant."""

    def __init__(self):
        super().__init__()
        self.net = RectCNN()

    def forward(self, x):
        out = self.net(torch.cat([x, torch.rot90(x, 2, dims=(-2, -1))]))
        return out.reshape(2, x.shape[0], -1).mean(0)


class PlainCNN3(nn.Module):
    """A plain CNN on (B, 3, 12, 12) NCHW images (zero padding, linear head): not invariant to anything."""

    def __init__(self, classes: int = 5):
        super().__init__()
        torch.manual_seed(6)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8 * 12 * 12, classes)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return 10 * self.head(h.flatten(1))


class ChannelsLastCNN3(nn.Module):
    """The same network (same seed, same weights) taking channels-last (B, 12, 12, 3) input."""

    def __init__(self):
        super().__init__()
        self.net = PlainCNN3()

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2).contiguous())


class ShiftInvariant1D(nn.Module):
    """(B, C, L) signals: circular conv1d, ReLU, global mean pool, linear: invariant to circular shifts."""

    def __init__(self, classes: int = 4):
        super().__init__()
        torch.manual_seed(7)
        self.conv1 = nn.Conv1d(SIGNAL_C, 8, 5, padding=2, padding_mode="circular")
        self.conv2 = nn.Conv1d(8, 8, 3, padding=1, padding_mode="circular")
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return 10 * self.head(h.mean(-1))


class ShiftInvariant1DNLC(nn.Module):
    """The same network taking (B, L, C) sequences (it transposes internally)."""

    def __init__(self):
        super().__init__()
        self.net = ShiftInvariant1D()

    def forward(self, x):
        return self.net(x.transpose(1, 2))


class Flat1D(nn.Module):
    """(B, C, L) signals flattened into one linear layer: no shift symmetry."""

    def __init__(self, classes: int = 4):
        super().__init__()
        torch.manual_seed(8)
        self.head = nn.Linear(SIGNAL_C * SIGNAL_L, classes)

    def forward(self, x):
        return 10 * self.head(x.flatten(1))


class ChannelsLastDense(nn.Module):
    """toy_domains.AsymmetricConv (fixed kernels) taking and returning channels-last maps: (B, H, W, 1) -> (B, H, W, 3)."""

    def __init__(self):
        super().__init__()
        from toy_domains import AsymmetricConv

        self.net = AsymmetricConv()

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)


class SignalDense(nn.Module):
    """A circular 1-D convolution on (B, 2, L) signals returning (B, 3, L) per-step scores: shift-equivariant."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.conv = nn.Conv1d(2, 3, 5, padding=2, padding_mode="circular")

    def forward(self, x):
        return torch.tanh(self.conv(x))
