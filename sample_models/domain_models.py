"""Architectures of the sample models for the other domains: a point-cloud PointNet, a PIV flow estimator and a box localiser.

Importing this module has no side effects. Shapes: B batch, P points, K classes.

- ``PointNet``: point clouds (B, P, 3) -> (B, 5) logits (sphere, box, cylinder, cone, torus).
- ``FlowNet``: two-frame particle images (B, 2, 32, 32) (frame 1, frame 2) -> flow (B, 2, 32, 32) in
  pixels, channel 0 along x (right), channel 1 along y (down the rows).
- ``BoxNet``: canvases (B, 1, 32, 32) -> (B, 4 + 3): one box (x1, y1, x2, y2) in pixels (pixel edges,
  0..32), then 3 class logits (square, disc, triangle). The ``boxes`` task's declared layout.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PointNet", "FlowNet", "BoxNet", "SHAPES3D", "SHAPES2D"]

SHAPES3D = ("sphere", "box", "cylinder", "cone", "torus")
SHAPES2D = ("square", "disc", "triangle")


class PointNet(nn.Module):
    """A small PointNet: shared per-point MLP (3 -> 32 -> 64 -> 128), max pool over points, MLP head.

    Invariant to the order of the points by construction (max pool); not to rotations, unless it
    learned it (train with rotation augmentation).
    """

    def __init__(self, num_classes: int = len(SHAPES3D)) -> None:
        super().__init__()
        self.point_mlp = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 128))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.point_mlp(x).amax(dim=1))


class FlowNet(nn.Module):
    """A fully convolutional flow estimator (zero padding, dilations 1-2-4-2-1): frames (B, 2, H, W) -> flow (B, 2, H, W)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 2
        for d in (1, 2, 4, 2):
            layers += [nn.Conv2d(c_in, width, 3, padding=d, dilation=d), nn.ReLU()]
            c_in = width
        layers.append(nn.Conv2d(width, 2, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BoxNet(nn.Module):
    """A plain CNN localiser: three conv-ReLU-maxpool blocks (32 -> 4 px), flatten, MLP -> (B, 4 + K).

    The box is regressed as a fraction of the 32-pixel canvas and returned in pixels.
    """

    SIZE = 32

    def __init__(self, num_classes: int = len(SHAPES2D)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 4 + num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        return torch.cat([out[:, :4] * self.SIZE, out[:, 4:]], dim=1)
