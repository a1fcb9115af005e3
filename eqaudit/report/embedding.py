"""Figures of fitted embedding maps (``--output embedding``): heatmaps of M_g for small embeddings and the singular-value spectra of every M_g."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_HEATMAPS = 8  # non-identity elements drawn as heatmaps (the first ones in sweep order)
FLOAT_NOISE = 1e-5  # fitted errors at or below this read "at float noise" (float32 outputs, residuals from sums)


def error_text(err: float | None) -> str:
    """A fitted error for a caption: the number, and "at float noise" where it is that small."""
    if err is None or not np.isfinite(err):
        return "n/a"
    return f"{err:.2g} (at float noise)" if err <= FLOAT_NOISE else f"{err:.3g}"


def embedding_figure(maps: np.ndarray | None, sv: np.ndarray, labels: Sequence[str], identity_index: int,
                     errors: np.ndarray) -> Figure:
    """maps (E, D, D) or None (too large to draw), sv (E, D) singular values, errors (E,) held-out fitted
    errors: a row of heatmaps of M_g for up to MAX_HEATMAPS non-identity elements (a shared symmetric
    colour scale), then the spectra of every non-identity M_g on a log scale."""
    others = [e for e in range(len(labels)) if e != identity_index] or [identity_index]
    shown = others[:MAX_HEATMAPS] if maps is not None else []
    cols = max(len(shown), 1)
    fig = Figure(figsize=(max(5.0, 1.7 * cols), 3.9 if shown else 2.6), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if shown else 1, cols, height_ratios=[1.1, 1] if shown else [1])
    if shown:
        vmax = float(np.abs(maps[shown]).max()) or 1.0
        image = None
        for k, e in enumerate(shown):
            ax = fig.add_subplot(grid[0, k])
            image = ax.imshow(maps[e], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
            ax.set_title(f"M[{labels[e]}]\nerr {error_text(float(errors[e]))}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(image, ax=fig.axes[: len(shown)], fraction=0.02, pad=0.01).ax.tick_params(labelsize=7)
    ax = fig.add_subplot(grid[-1, :])
    floor = 1e-12
    for e in others:
        ax.plot(np.arange(1, sv.shape[1] + 1), np.maximum(sv[e], floor), marker="o", ms=2, lw=1, label=str(labels[e]))
    ax.set_yscale("log")
    drawn = np.maximum(sv[others], floor)
    ax.set_ylim(float(drawn.min()) / 2, float(drawn.max()) * 2)  # equal values (orthogonal maps) stay a flat line
    ax.set_xlabel("singular value index", fontsize=8)
    ax.set_ylabel("singular value of M_g", fontsize=8)
    ax.tick_params(labelsize=7)
    if len(others) <= 12:
        ax.legend(fontsize=6, ncol=min(6, len(others)), frameon=False)
    fig.subplots_adjust(left=0.14, right=0.9, bottom=0.15, top=0.88, hspace=0.55)
    return fig
