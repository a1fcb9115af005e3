"""Calling a model that was exported with a fixed batch size on batches of any size; rows of one or several inputs."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def n_rows(batch) -> int:
    """Rows of a batch: one tensor (R, ...) or a dict of tensors (R, ...) that share R."""
    t = next(iter(batch.values())) if isinstance(batch, dict) else batch
    return int(t.shape[0])


def take_rows(batch, start: int, stop: int):
    """Rows start:stop of a tensor, or of every tensor of a dict."""
    if isinstance(batch, dict):
        return {k: v[start:stop] for k, v in batch.items()}
    return batch[start:stop]


def _pad(t: Tensor, fixed: int) -> Tensor:
    n = int(t.shape[0])
    return t if n == fixed else torch.cat([t, t.new_zeros((fixed - n, *t.shape[1:]))])


def call_fixed_batch(fn: Callable, batch, fixed: int | None) -> Tensor:
    """Run ``fn`` on ``batch`` (B, ...) (a tensor or a dict of tensors) in slices of exactly ``fixed``
    rows (the last one zero-padded and trimmed); with ``fixed`` None the whole batch goes in one call."""
    b = n_rows(batch)
    if fixed is None or fixed == b:
        return fn(batch)
    outs = []
    for start in range(0, b, fixed):
        part = take_rows(batch, start, start + fixed)
        n = n_rows(part)
        if n < fixed:
            part = {k: _pad(v, fixed) for k, v in part.items()} if isinstance(part, dict) else _pad(part, fixed)
        out = fn(part)
        outs.append(out[:n] if isinstance(out, Tensor) else tuple(o[:n] for o in out))
    if isinstance(outs[0], Tensor):
        return torch.cat(outs)
    return tuple(torch.cat(parts) for parts in zip(*outs))  # several outputs, each joined on its own
