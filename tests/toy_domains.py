"""Models with known equivariance for the equivariant tasks (dense, vector-field, points, boxes), built by construction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# ---- dense maps ------------------------------------------------------------------------------------------


def _d4_symmetric(k: torch.Tensor) -> torch.Tensor:
    """Average a (O, I, 3, 3) kernel over the 8 symmetries of the square: rot90- and flip-symmetric."""
    views = [torch.rot90(k, r, dims=(-2, -1)) for r in range(4)]
    views += [torch.flip(v, dims=(-1,)) for v in views]
    return torch.stack(views).mean(0)


class CircularConv(nn.Module):
    """Two 3x3 convolutions with circular padding and a tanh: (B, 1, H, W) -> (B, 3, H, W) maps.

    ``symmetric=True`` makes both kernels rot90- and flip-symmetric, so the model is exactly
    equivariant to d4 and to circular shifts; otherwise the kernels are random (not d4-equivariant,
    still shift-equivariant). ``pool=True`` adds a 2x2 average pool (output at half resolution).
    """

    def __init__(self, symmetric: bool = True, pool: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        k1 = torch.randn(4, 1, 3, 3, generator=g)
        k2 = torch.randn(3, 4, 3, 3, generator=g)
        if symmetric:
            k1, k2 = _d4_symmetric(k1), _d4_symmetric(k2)
        self.register_buffer("k1", k1)
        self.register_buffer("k2", k2)
        self.pool = pool

    def forward(self, x):
        h = torch.tanh(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), self.k1))
        out = F.conv2d(F.pad(h, (1, 1, 1, 1), mode="circular"), self.k2)
        return F.avg_pool2d(out, 2) if self.pool else out


class AsymmetricConv(CircularConv):
    def __init__(self):
        super().__init__(symmetric=False)


class PooledConv(CircularConv):
    def __init__(self):
        super().__init__(symmetric=True, pool=True)


# ---- vector fields ---------------------------------------------------------------------------------------


def central_gradient(img: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, 2, H, W): central differences with circular boundary; u = d/dx (right), v = d/dy (down)."""
    u = (torch.roll(img, -1, dims=-1) - torch.roll(img, 1, dims=-1)) / 2
    v = (torch.roll(img, -1, dims=-2) - torch.roll(img, 1, dims=-2)) / 2
    return torch.stack([u, v], dim=1)


class Gradient(nn.Module):
    """(B, 1, H, W) -> its gradient (B, 2, H, W), u along x, v along y; ``swap_uv`` returns (v, u) instead."""

    def __init__(self, swap_uv: bool = False):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))
        self.swap_uv = swap_uv

    def forward(self, x):
        g = central_gradient(x[:, 0]) * self.scale
        return g.flip(1) if self.swap_uv else g


class SwappedGradient(Gradient):
    def __init__(self):
        super().__init__(swap_uv=True)


class FrameDiffGradient(nn.Module):
    """Two frames (B, 2, H, W) -> gradient of (frame 2 - frame 1): exactly d4*swap-equivariant (swap negates it).
    ``broken=True`` uses frame 2 + frame 1, which does not reverse when the frames are swapped."""

    def __init__(self, broken: bool = False):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))
        self.broken = broken

    def forward(self, x):
        d = x[:, 1] + x[:, 0] if self.broken else x[:, 1] - x[:, 0]
        return central_gradient(d) * self.scale


class FrameSumGradient(FrameDiffGradient):
    def __init__(self):
        super().__init__(broken=True)


# ---- points ----------------------------------------------------------------------------------------------


class Centre(nn.Module):
    """(B, P, 3) -> X - mean(X) (B, P, 3): equivariant to rotations, reflections and permutations."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x):
        return (x - x.mean(1, keepdim=True)) * self.scale


class Anisotropic(nn.Module):
    """(B, P, 3) -> X A^T with a fixed anisotropic A (B, P, 3): permutation- but not rotation-equivariant."""

    def __init__(self):
        super().__init__()
        self.register_buffer("a", torch.diag(torch.tensor([1.0, 2.0, 0.5])))

    def forward(self, x):
        return x @ self.a.T


class MeanVector(nn.Module):
    """(B, P, 3) -> mean point (B, 3): one vector per cloud, equivariant to rotations and permutations."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x):
        return x.mean(1) * self.scale


class DistanceClassifier(nn.Module):
    """(B, P, 3) -> (B, 4) logits from a soft histogram of pairwise distances: so3-, o3- and permute-invariant."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.centres = nn.Parameter(torch.linspace(0.0, 3.0, 8), requires_grad=False)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        d = torch.cdist(x, x)  # (B, P, P)
        hist = torch.exp(-((d.unsqueeze(-1) - self.centres) ** 2) / 0.1).mean((1, 2))  # (B, 8)
        return 20 * self.head(hist)


class TinyPointNet(nn.Module):
    """Shared per-point MLP, max pool, linear head: permutation-invariant, not rotation-invariant."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.mlp = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 32))
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return 10 * self.head(self.mlp(x).amax(1))


# ---- boxes -----------------------------------------------------------------------------------------------


def _extent(present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) bool -> first and one-past-last True index (B,), as float."""
    l = present.shape[1]
    idx = torch.arange(l, device=present.device)
    first = torch.where(present, idx, l).amin(1)
    last = torch.where(present, idx, -1).amax(1) + 1
    return first.to(torch.float32), last.to(torch.float32)


class BoxFinder(nn.Module):
    """(B, 1, H, W) -> (B, 4 + 2): the bounding box (x1, y1, x2, y2, pixel edges) of pixels above 0.5,
    plus two class logits (tall vs wide): exactly equivariant to shifts, flips and quarter turns
    while the object stays inside the frame. ``mirror=True`` reports the box of the mirrored image
    (moves the wrong way under horizontal shifts)."""

    def __init__(self, mirror: bool = False):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))
        self.mirror = mirror

    def forward(self, x):
        m = x[:, 0] > 0.5
        if self.mirror:
            m = m.flip(-1)
        x1, x2 = _extent(m.any(1))
        y1, y2 = _extent(m.any(2))
        tall = (y2 - y1) - (x2 - x1)
        return torch.stack([x1, y1, x2, y2, tall, -tall], 1) * self.scale


class MirrorBoxFinder(BoxFinder):
    def __init__(self):
        super().__init__(mirror=True)
