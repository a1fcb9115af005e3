"""Toy embedding networks with known representations: moments that turn as a vector and a symmetric tensor,
channels that a quarter turn permutes, rot90-invariant features, a random MLP, points that rotate as
vectors, and a classifier whose named backbone output is the embedding."""

from __future__ import annotations

import torch
from torch import nn

S = 8


class Moments(nn.Module):
    """(B, 1, S, S) -> (B, 5): first and second moments about the centre (a vector and a symmetric tensor)."""

    def __init__(self, size: int = S) -> None:
        super().__init__()
        c = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        u, v = c.view(1, -1).expand(size, size), c.view(-1, 1).expand(size, size)
        self.register_buffer("fields", torch.stack([u, v, u * u, u * v, v * v]))

    def forward(self, x):
        return torch.einsum("bchw,khw->bk", x, self.fields)


class TurnedResponses(nn.Module):
    """(B, 1, S, S) -> (B, 4): <rot90^k x, w> for k = 0..3; a quarter turn shifts the channels cyclically."""

    def __init__(self, size: int = S) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, size, size, generator=torch.Generator().manual_seed(1)))

    def forward(self, x):
        return torch.stack([(torch.rot90(x, k, dims=(-2, -1)) * self.w).sum((-3, -2, -1)) for k in range(4)], -1)


class InvariantFeatures(nn.Module):
    """(B, 1, S, S) -> (B, 3): sums of turned responses of three filters: invariant under rot90."""

    def __init__(self, size: int = S) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 1, size, size, generator=torch.Generator().manual_seed(2)))

    def forward(self, x):
        turned = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]).sum(0)  # (B, 1, S, S)
        return torch.einsum("bchw,kchw->bk", turned, self.w)


class RandomMLP(nn.Module):
    """(B, 1, S, S) -> (B, 6): a random two-layer tanh MLP: no structure to fit."""

    def __init__(self, size: int = S) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w1 = nn.Parameter(torch.randn(size * size, 32, generator=g) / size)
        self.w2 = nn.Parameter(torch.randn(32, 6, generator=g))

    def forward(self, x):
        return torch.tanh(torch.tanh(x.flatten(1) @ self.w1) @ self.w2)


class PointVectors(nn.Module):
    """(B, P, 3) -> (B, 7): two radially weighted sums of the points (vectors) and their norm (an invariant)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # a state dict to save

    def forward(self, x):
        r = x.norm(dim=-1, keepdim=True)
        a, b = (x * torch.exp(-r / self.scale)).sum(1), (x * r).sum(1)
        return torch.cat([a, b, r.sum(1)], -1)


class BackboneClassifier(nn.Module):
    """(B, 1, S, S) -> dict: ``embedding`` (the moments, from the ``backbone`` module) and ``logits`` (a head)."""

    def __init__(self, size: int = S) -> None:
        super().__init__()
        self.backbone = Moments(size)
        self.head = nn.Linear(5, 3)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(3, 5, generator=torch.Generator().manual_seed(4)))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.backbone(x))
