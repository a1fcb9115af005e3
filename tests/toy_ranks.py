"""A toy model for the distributed tests: a plain CNN that fails on one rank of a launch, on purpose."""

from __future__ import annotations

import os
import signal

import torch
from torch import nn


class FailsOnRank(nn.Module):
    """A plain CNN (as toy_models.SmallCNN) whose calls on the rank named by EQAUDIT_TEST_FAIL_RANK fail
    after the first: raising (EQAUDIT_TEST_FAIL_HOW=raise) or killing its own process (kill)."""

    def __init__(self, channels: int = 1, classes: int = 5, size: int = 12):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(channels, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8 * size * size, classes)
        self.calls = 0

    def forward(self, x):
        if os.environ.get("RANK") is not None and os.environ.get("RANK") == os.environ.get("EQAUDIT_TEST_FAIL_RANK"):
            self.calls += 1
            if self.calls > 1:
                if os.environ.get("EQAUDIT_TEST_FAIL_HOW") == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError("this rank fails on purpose")
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return 10 * self.head(h.flatten(1))
