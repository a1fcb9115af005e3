"""Tiny models with several named inputs whose symmetries hold (or break) by construction, for test_multi_input."""

from __future__ import annotations

import torch
from torch import nn

POINTS, FEATURES, CLASSES = 6, 4, 3


class PointSetNet(nn.Module):
    """Logits from positions (B, P, 3) and per-point features (B, P, F): an MLP of the sum over points of
    phi(|pos_p|, feat_p), so rotating the positions, or permuting positions and features together,
    leaves the output unchanged. ``broken`` pairs each point with a fixed per-index weight instead,
    which breaks the permutation symmetry (rotations still hold)."""

    def __init__(self, broken: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.phi = nn.Sequential(nn.Linear(1 + FEATURES, 16), nn.Tanh(), nn.Linear(16, 16))
        self.head = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, CLASSES))
        weight = 1.0 + 2.0 * torch.rand(POINTS, 1, generator=g) if broken else torch.ones(POINTS, 1)
        self.register_buffer("index_weight", weight)

    def forward(self, pos, feat):
        r = pos.norm(dim=-1, keepdim=True)  # (B, P, 1)
        h = self.phi(torch.cat([r, feat], dim=-1)) * self.index_weight  # (B, P, 16)
        return self.head(h.sum(1))


class BrokenPointSetNet(PointSetNet):
    def __init__(self):
        super().__init__(broken=True)


class RateNet(nn.Module):
    """Logits from an image (B, 1, H, W) and an int64 sample rate (B,): a linear map of the image's mean and
    of the rate, so any rotation or flip of the image leaves it unchanged. Refuses a rate that is not int64."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, CLASSES)

    def forward(self, img, sr):
        if sr.dtype != torch.int64:
            raise TypeError(f"sr must be int64, got {sr.dtype}")
        feats = torch.stack([img.mean(dim=(1, 2, 3)), sr.to(img.dtype) / 16000.0], dim=1)  # (B, 2)
        return self.lin(feats)
