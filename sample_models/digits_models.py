"""Architectures of the shipped sample models (small digit classifiers) used by eqaudit's examples and tests.

Importing this module has no side effects. Image models take (B, 1, 32, 32) float32 in [0, 1];
`DigitsLR` takes flat (B, 64) rows (8x8 digits scaled to [0, 1]). All return (B, 10) logits.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PlainCNN", "Rot90InvariantCNN", "DigitsLR", "DigitsLRWithProba"]


class PlainCNN(nn.Module):
    """A small ordinary (not rotation-invariant) CNN: three conv-BN-ReLU blocks, global average pool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 32 -> 16
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 -> 8
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = h.mean(dim=(-2, -1))  # global average pool
        return self.classifier(h)


class Rot90InvariantCNN(nn.Module):
    """A `PlainCNN` averaged over the four rot90 rotations of its input: rot90-invariant by construction.

    The four rotations are evaluated in one batched call (concatenated along the batch), so the
    model exports to ONNX as a single graph. Output is the mean of the four logit vectors.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.net = PlainCNN(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        xs = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)], dim=0)  # (4B, C, H, W)
        logits = self.net(xs)  # (4B, K)
        return logits.reshape(4, b, -1).mean(dim=0)


class DigitsLR(nn.Module):
    """Multinomial logistic regression on flat 8x8 digits: (B, 64) in [0, 1] -> (B, 10) logits."""

    def __init__(self, in_features: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(x.shape[0], -1))


class DigitsLRWithProba(nn.Module):
    """Export wrapper around `DigitsLR` returning (logits, softmax probabilities)."""

    def __init__(self, lr: DigitsLR) -> None:
        super().__init__()
        self.lr = lr

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.lr(x)
        return logits, torch.softmax(logits, dim=-1)
