"""Calling a model that was exported with a fixed batch size on batches of any size."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def call_fixed_batch(fn: Callable[[Tensor], Tensor], batch: Tensor, fixed: int | None) -> Tensor:
    """Run ``fn`` on ``batch`` (B, ...) in slices of exactly ``fixed`` rows (the last one zero-padded
    and trimmed); with ``fixed`` None the whole batch goes in one call."""
    b = int(batch.shape[0])
    if fixed is None or fixed == b:
        return fn(batch)
    outs = []
    for start in range(0, b, fixed):
        part = batch[start : start + fixed]
        n = int(part.shape[0])
        if n < fixed:
            pad = part.new_zeros((fixed - n, *part.shape[1:]))
            part = torch.cat([part, pad])
        out = fn(part)
        outs.append(out[:n] if isinstance(out, Tensor) else tuple(o[:n] for o in out))
    if isinstance(outs[0], Tensor):
        return torch.cat(outs)
    return tuple(torch.cat(parts) for parts in zip(*outs))  # several outputs, each joined on its own
