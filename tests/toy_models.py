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


class HalfTurnAveraged(nn.Module):
    """A CNN on x + rot180(x): invariant to the half turn by construction, not to quarter turns."""

    def __init__(self):
        super().__init__()
        self.net = SmallCNN()

    def forward(self, x):
        return self.net(x + torch.rot90(x, 2, dims=(-2, -1)))


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


class ShiftInvariantNet(nn.Module):
    """Circular convolutions, no pointwise nonlinearity before global pooling: exactly invariant to
    continuous (band-limited) circular shifts, so its Lie derivative under translate is float noise."""

    def __init__(self, classes: int = 5, positional: bool = False):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1, padding_mode="circular")
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, padding_mode="circular")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.head = nn.Linear(6, classes)
        self.act = nn.Tanh()
        self.positional = positional
        if positional:
            self.mask = PositionalGain(12)

    def forward(self, x):
        h = self.conv1(x)
        if self.positional:
            h = self.mask(h)
        h = self.conv2(h)
        return 4 * self.head(self.act(self.flat(self.pool(h))))


class PositionalGain(nn.Module):
    """Multiplies feature maps by a fixed smooth gain that depends on position: breaks shift symmetry."""

    def __init__(self, size: int):
        super().__init__()
        u = torch.linspace(0, 1, size)
        self.register_buffer("gain", (1 + 0.8 * torch.sin(3.0 * u)).view(1, 1, 1, size).expand(1, 1, size, size).clone())

    def forward(self, h):
        return h * self.gain


class OwnedGain(PositionalGain):
    """PositionalGain whose gain passes through a child module (as an escnn R2Conv builds its filter
    from a child basis): the computation belongs to this module, not to its child."""

    def __init__(self, size: int):
        super().__init__(size)
        self.basis = nn.Identity()

    def forward(self, h):
        return h * self.basis(self.gain)


class BrokenShiftNetOwned(ShiftInvariantNet):
    """BrokenShiftNet with the gain in a module that has a child (OwnedGain)."""

    def __init__(self):
        super().__init__(positional=True)
        self.mask = OwnedGain(12)


class BrokenShiftNet(ShiftInvariantNet):
    """ShiftInvariantNet with one non-equivariant layer (PositionalGain) between the convolutions."""

    def __init__(self):
        super().__init__(positional=True)


class SmoothCNN(nn.Module):
    """A plain CNN with smooth activations (tanh), so finite differences and autograd agree."""

    def __init__(self, classes: int = 5):
        super().__init__()
        torch.manual_seed(4)
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6 * 12 * 12, classes)

    def forward(self, x):
        h = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return 3 * self.head(h.flatten(1))


class MixedRot90(nn.Module):
    """logits = (1 - alpha) * plain + alpha * rot90-averaged plain; alpha is a buffer, so it travels
    in the state dict (alpha = 1: invariant by construction)."""

    def __init__(self):
        super().__init__()
        self.net = SmallCNN()
        self.register_buffer("alpha", torch.tensor(0.0))

    def forward(self, x):
        views = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
        out = self.net(views).reshape(4, x.shape[0], -1)
        return (1 - self.alpha) * out[0] + self.alpha * out.mean(0)


class ConstantModel(nn.Module):
    """Ignores its input: trivially 'invariant', but its level must read undetermined."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.bias = nn.Parameter(torch.linspace(-1, 1, classes))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1) + 0 * x.flatten(1).sum(1, keepdim=True)


class FailsOnZeroColumn(nn.Module):
    """Raises when an input's first column is all zeros (as after a zero-fill shift to the right)."""

    def __init__(self):
        super().__init__()
        self.net = Rot90Averaged()

    def forward(self, x):
        if bool((x[..., 0].abs().amax(dim=(-1, -2)) == 0).any()):
            raise RuntimeError("blank column")
        return self.net(x)


class SlowCNN(SmallCNN):
    """SmallCNN that sleeps 50 ms per call: a scan slow enough to interrupt between symmetries."""

    def forward(self, x):
        import time

        time.sleep(0.05)
        return super().forward(x)


class CallLogCNN(SmallCNN):
    """SmallCNN that appends a line to the file named by $EQAUDIT_TEST_CALL_LOG on every call (to prove
    that a scan stopped before calling the model)."""

    def forward(self, x):
        import os

        log = os.environ.get("EQAUDIT_TEST_CALL_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(f"{x.shape[0]}\n")
        return super().forward(x)
