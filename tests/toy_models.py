"""Small models with known symmetry properties, built by construction, for the tests (no training)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """A plain CNN (zero padding, a linear head over all positions): not invariant to anything."""

    def __init__(self, channels: int = 1, classes: int = 5, size: int = 12, padding_mode: str = "zeros"):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(channels, 8, 3, padding=1, padding_mode=padding_mode)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, padding_mode=padding_mode)
        self.head = nn.Linear(8 * size * size, classes)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return 10 * self.head(h.flatten(1))  # sharper than a fresh init: confident, like a trained model


class CircularPoolCNN(nn.Module):
    """Circular padding + global average pooling: invariant to circular shifts by construction."""

    def __init__(self, channels: int = 1, classes: int = 5):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(channels, 8, 3, padding=1, padding_mode="circular")
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, padding_mode="circular")
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.mean((-2, -1)))


class _OrbitAveraged(nn.Module):
    """Mean of the inner model's logits over a finite group's orbit, in one batched call."""

    def __init__(self):
        super().__init__()
        self.net = SmallCNN()

    def views(self, x):  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, x):
        v = self.views(x)
        out = self.net(torch.cat(v))
        return out.reshape(len(v), x.shape[0], -1).mean(0)


class Rot90Averaged(_OrbitAveraged):
    def views(self, x):
        return [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]


class FlipAveraged(_OrbitAveraged):
    def views(self, x):
        return [x, torch.flip(x, dims=(-1,))]


class D4Averaged(_OrbitAveraged):
    def views(self, x):
        r = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
        return r + [torch.flip(v, dims=(-1,)) for v in r]


class SoftmaxOf(nn.Module):
    """Returns probabilities instead of logits (to test output-kind detection)."""

    def __init__(self):
        super().__init__()
        self.net = Rot90Averaged()

    def forward(self, x):
        return torch.softmax(self.net(x), -1)


class FlatRot90Averaged(nn.Module):
    """Takes flat rows (B, 144) and reshapes to (B, 1, 12, 12) inside: needs --input-shape."""

    def __init__(self):
        super().__init__()
        self.net = Rot90Averaged()

    def forward(self, x):
        return self.net(x.reshape(-1, 1, 12, 12))


class TwoOutputs(nn.Module):
    """Returns (logits, probabilities) for multi-output selection tests."""

    def __init__(self):
        super().__init__()
        self.net = Rot90Averaged()

    def forward(self, x):
        logits = self.net(x)
        return logits, torch.softmax(logits, -1)
