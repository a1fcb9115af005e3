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
