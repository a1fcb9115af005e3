"""Which orbit elements the report shows as thumbnails of a worst sample (numpy only: the scan stores them, the report draws them)."""

from __future__ import annotations

import numpy as np

MAX_THUMBS = 6


def thumb_elements(layout: str, param: np.ndarray, identity_index: int, values: np.ndarray, k: int = MAX_THUMBS) -> list[int]:
    """Up to ``k`` element rows to show as thumbnails: all of a small group, else the identity, the
    sample's worst element (by ``values`` (E,)) and evenly spaced ones, in sweep order; ``param`` (E,)
    orders the elements of a one-parameter orbit (``layout`` "polar" or "line")."""
    n = int(np.asarray(values).shape[0])
    if n <= max(k, 8) and layout == "finite":
        return list(range(n))
    if n <= k:
        return list(range(n))
    order = np.argsort(np.asarray(param), kind="stable") if layout in ("polar", "line") else np.arange(n)
    non_id = np.arange(n) != identity_index
    worst = int(np.argmax(np.where(non_id, values, -np.inf)))
    chosen = {identity_index, worst}
    for i in np.linspace(0, n - 1, k).round().astype(int):
        if len(chosen) >= k:
            break
        chosen.add(int(order[i]))
    pos = {int(e): i for i, e in enumerate(order)}
    return sorted(chosen, key=lambda e: pos[e])


def pack(selections: list[list[int]]) -> np.ndarray:
    """Ragged element lists -> (k, T) int64, padded with -1 (the ``s{j}.thumb_elements`` table)."""
    width = max((len(s) for s in selections), default=0)
    out = np.full((len(selections), width), -1, dtype=np.int64)
    for r, sel in enumerate(selections):
        out[r, : len(sel)] = sel
    return out


SMALL_SIDE = 32  # longest side of the untransformed inputs the scan stores for the report's sample explorer


def box_means(x: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Average ``x`` along ``axis`` into ``n`` nearly equal boxes (no-op when already at most n long)."""
    size = x.shape[axis]
    if size <= n:
        return x
    edges = np.linspace(0, size, n + 1).round().astype(np.int64)[:-1]
    counts = np.diff(np.append(edges, size)).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = n
    return np.add.reduceat(x, edges, axis=axis) / counts.reshape(shape)


def small_images(x: np.ndarray, side: int = SMALL_SIDE) -> np.ndarray:
    """Images (N, C, H, W) -> 8-bit thumbnails (N, h, w, c) with max(h, w) <= ``side``: box-averaged,
    each sample stretched to its own min..max; c is 1 (grey, also for other channel counts: their
    mean) or 3 (RGB)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[0] == 0:
        return np.zeros((0, 0, 0, 1), np.uint8)
    if x.shape[1] != 3:
        x = x.mean(1, keepdims=True)
    scale = side / max(x.shape[2], x.shape[3])
    x = box_means(x, 2, max(1, int(round(x.shape[2] * scale))))
    x = box_means(x, 3, max(1, int(round(x.shape[3] * scale))))
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    span = x.max(axis=(1, 2, 3), keepdims=True) - lo
    out = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1), 0.5)
    return np.round(out * 255).astype(np.uint8).transpose(0, 2, 3, 1)


SMALL_POINTS = 64  # points a side of the explorer's point-cloud thumbnails keeps (evenly spaced rows)


def small_points(x: np.ndarray, n: int = SMALL_POINTS) -> np.ndarray:
    """Point clouds (N, P, 3) -> (N, p, 3) float16 with p <= ``n``: evenly spaced rows of each cloud."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] != 3:
        return np.zeros((0, 0, 3), np.float16)
    rows = np.unique(np.linspace(0, x.shape[1] - 1, min(n, x.shape[1])).round().astype(np.int64))
    return x[:, rows].astype(np.float16)
