"""Point structures (atoms, particles, point clouds) drawn as small depth-shaded images for the report's thumbnails.

A structure (P, 3) is seen along a fixed oblique direction (so no axis hides another), projected
orthographically, and every point drawn as a disc coloured by its depth (near: yellow, far: dark
blue), the nearest disc winning each pixel. One batched numpy computation per image (points x
pixels), no plotting library: thumbnails stay cheap even for many worst samples.
"""

from __future__ import annotations

import numpy as np

_VIEW = None  # (3, 3) rotation of the oblique view, built once


def _view() -> np.ndarray:
    global _VIEW
    if _VIEW is None:
        a, b = np.radians(35.0), np.radians(25.0)
        rz = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
        rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
        _VIEW = rx @ rz
    return _VIEW


def frame_of(points: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre (3,), half-width) that frames ``points`` (..., 3) with a margin; pass every moved copy of
    a sample at once and share the frame across its thumbnails, so moves (shifts, rotations) show."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    centre = p.mean(0)
    radius = float(np.sqrt(((p - centre) ** 2).sum(1).max())) if len(p) else 1.0
    return centre, max(radius, 1e-9) * 1.15


def structure_image(points: np.ndarray, centre: np.ndarray, half: float, size: int = 64) -> np.ndarray:
    """(P, 3) points -> (size, size, 3) RGB image in [0, 1]: white background, depth-coloured discs."""
    p = (np.asarray(points, dtype=np.float64).reshape(-1, 3) - centre) @ _view().T
    n = len(p)
    img = np.ones((size, size, 3))
    if n == 0:
        return img
    radius = max(1.5, min(5.0, 0.6 * size / np.sqrt(n)))  # px: big discs for few atoms, dots for clouds
    px = (p[:, 0] / half * 0.5 + 0.5) * (size - 1)
    py = (0.5 - p[:, 1] / half * 0.5) * (size - 1)
    ys, xs = np.mgrid[0:size, 0:size]
    d2 = (xs[None] - px[:, None, None]) ** 2 + (ys[None] - py[:, None, None]) ** 2  # (P, H, W)
    inside = d2 <= radius**2
    depth = np.where(inside, p[:, 2, None, None], -np.inf)
    front = depth.argmax(0)
    hit = inside.any(0)
    z = p[:, 2]
    t = (z - z.min()) / (np.ptp(z) + 1e-12) if n > 1 else np.ones(1)
    colours = np.stack([0.15 + 0.8 * t, 0.2 + 0.6 * t, 0.55 - 0.4 * t], 1)  # far: dark blue, near: yellow
    shade = 1.0 - 0.35 * np.sqrt(np.take_along_axis(d2, front[None], 0)[0] / radius**2)  # a rim on each disc
    img[hit] = colours[front[hit]] * shade[hit, None]
    return np.clip(img, 0.0, 1.0)
