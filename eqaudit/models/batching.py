"""Rows per model call: fixed-batch exports called on any batch size, rows of one or several inputs, out-of-memory
errors, and the ``--batch-size auto`` search."""

from __future__ import annotations

from dataclasses import dataclass, field
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


def is_oom(exc: BaseException) -> bool:
    """Is ``exc`` (or its cause) an out-of-memory error: torch's OutOfMemoryError (CUDA), MPS's
    "out of memory", or onnxruntime's "Failed to allocate memory" (its CUDA arena)?"""
    seen = [exc, exc.__cause__]
    return any(
        e is not None
        and (isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower() or "failed to allocate memory" in str(e).lower())
        for e in seen
    )


AUTO_START = 64
"""``--batch-size auto`` on an accelerator: the first size tried; sizes double from here ..."""
AUTO_CAP = 8192
"""... up to this many rows per model call (larger calls gain nothing measurable and only delay the search)."""
CPU_CAP = 256
"""``--batch-size auto`` on the CPU: at most this many rows per call (the default, the CNN's best on the bench) ..."""
CPU_CALL_BYTES = 32 * 2**20
"""... and at most about this many bytes of float32 input per call (so large inputs stay in the caches)."""


@dataclass
class BatchChoice:
    """What ``--batch-size auto`` chose: ``size`` rows per model call, by ``rule`` ("search": the
    largest size that ran, "cpu": CPU_CAP and CPU_CALL_BYTES), with the sizes tried and whether each ran."""

    size: int
    rule: str
    tried: list[tuple[int, bool]] = field(default_factory=list)

    def describe(self) -> dict:
        return {"size": self.size, "rule": self.rule, "tried": [[r, ok] for r, ok in self.tried]}


def cpu_batch_size(row_bytes: int) -> BatchChoice:
    """The CPU rule: the largest power of two <= CPU_CAP whose float32 input fits CPU_CALL_BYTES (at least 1).
    A CPU has no out-of-memory error to search against (memory swaps or the process is killed)."""
    size = CPU_CAP
    while size > 1 and size * max(1, row_bytes) > CPU_CALL_BYTES:
        size //= 2
    return BatchChoice(size, "cpu")


def search_batch_size(call: Callable, probe: Callable[[int], object], *, start: int = AUTO_START, cap: int = AUTO_CAP,
                      release: Callable[[], None] | None = None) -> BatchChoice:
    """The largest rows per call that run, found by calling ``call(probe(rows))``: rows double from
    ``start`` while calls succeed, up to ``cap``; the first out-of-memory error (``is_oom``) ends the
    doubling and the last size that ran is chosen. When ``start`` itself runs out of memory, rows halve
    until a call runs (ModelRunError when not even one row fits). ``release`` (e.g. emptying torch's
    CUDA cache) runs after each failed try; errors other than out-of-memory propagate."""
    from ..errors import ModelRunError

    tried: list[tuple[int, bool]] = []

    def fits(rows: int) -> bool:
        try:
            call(probe(rows))
        except Exception as exc:
            if not is_oom(exc):
                raise
            tried.append((rows, False))
            if release is not None:
                release()
            return False
        tried.append((rows, True))
        return True

    rows = max(1, min(start, cap))
    if not fits(rows):
        while rows > 1:
            rows //= 2
            if fits(rows):
                return BatchChoice(rows, "search", tried)
        raise ModelRunError("Expected --batch-size auto to find a batch that fits the device, got out-of-memory errors down to "
                            "one row per call; do use a device with more memory, --dtype bfloat16, or --device cpu.")
    while rows * 2 <= cap and fits(rows * 2):
        rows *= 2
    return BatchChoice(rows, "search", tried)


PROBE_SAMPLES = 16
"""``--batch-size auto`` builds its probe batches from this many samples of the data, repeated on the device."""


def auto_batch_size(model, dataset, device: torch.device, *, search: bool | None = None, **limits) -> BatchChoice:
    """``--batch-size auto`` for ``model`` (as the sweep calls it) on ``dataset``: on the CPU the rule of
    ``cpu_batch_size``; on an accelerator (or with ``search`` True) ``search_batch_size`` (``limits``:
    its start and cap) with probe batches of real rows: the first PROBE_SAMPLES samples repeated on
    the device, so the host never holds a probe batch."""
    import math

    import numpy as np

    n = min(len(dataset), PROBE_SAMPLES)
    pos = np.arange(n)
    if not (device.type != "cpu" if search is None else search):
        x = dataset.take(pos[:1])
        return cpu_batch_size(4 * math.prod(x.shape[1:]))
    with torch.inference_mode():
        seed = dataset.feed(pos, dataset.take(pos, device), device)

    def probe(rows: int):
        index = torch.arange(rows, device=device) % n
        if isinstance(seed, dict):
            return {k: v.index_select(0, index.to(v.device)) for k, v in seed.items()}
        return seed.index_select(0, index)

    def call(batch) -> None:
        with torch.inference_mode():
            model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def release() -> None:
        if device.type == "cuda":
            torch.cuda.empty_cache()

    return search_batch_size(call, probe, release=release, **limits)
