"""Tiny models for the per-input layout and moved-input-type tests: an image and a signal taken in either
layout, and n-body steps that read velocities."""

from __future__ import annotations

import torch
from torch import nn


class ImageSignalNet(nn.Module):
    """(img (B, 1, H, W), sig (B, 2, L)) -> (B, 3) logits from a 3x3 convolution of the image and a width-3
    convolution of the signal, pooled over their first halves: no symmetry at all."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(8)
        self.conv2 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv1 = nn.Conv1d(2, 4, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, img, sig):
        a = torch.tanh(self.conv2(img))[..., : img.shape[-1] // 2].mean((-2, -1))
        b = torch.tanh(self.conv1(sig))[..., : sig.shape[-1] // 2].mean(-1)
        return 5 * self.head(torch.cat([a, b], 1))


class ImageSignalNetLast(ImageSignalNet):
    """The same network taking channels-last inputs: img (B, H, W, 1), sig (B, L, 2)."""

    def forward(self, img, sig):
        return super().forward(img.permute(0, 3, 1, 2), sig.permute(0, 2, 1))


class VelocityStep(nn.Module):
    """(pos (B, P, 3), vel (B, P, 3)) -> next positions pos + dt * vel + dt^2 * a, a the centred spring pull
    -(pos - centroid): E(3)-equivariant when vel is a vector (turned, never shifted); shifting vel as a
    position adds dt * t to every output."""

    def __init__(self):
        super().__init__()
        self.dt = nn.Parameter(torch.tensor(0.3))

    def forward(self, pos, vel):
        acc = -(pos - pos.mean(1, keepdim=True))
        return pos + self.dt * vel + self.dt ** 2 * acc
