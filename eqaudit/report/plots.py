"""Orbit figures (matplotlib, Agg): pure functions from result arrays to Figure objects, no pyplot state.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (``Figure`` plus an Agg
canvas), so no figure is ever registered or left open globally and each one is freed as soon as the
caller drops it: memory stays flat over hundreds of plots. Axes are placed by hand in inches; the
constrained-layout engine would cost more than the drawing.

Shapes use fixed letters: N samples, E group elements, D parameters per element, C, H, W pixels.
The geometry of a plot follows the orbit's ``layout``: ``"polar"`` (one angle in degrees, drawn
counter-clockwise from the east as the images are rotated), ``"line"`` (one parameter, e.g. log2
scale), ``"grid2d"`` (two parameters on a grid, e.g. dx right and dy down in pixels: a heatmap
drawn as the image is, dy growing downwards) and ``"finite"`` (a small finite group: a labelled tile
strip, or a mosaic when the elements are the product of two integer parameters, as d4's (k, f)).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .._lazy import LazyModule
from ..levels import varying_column
from ..metricspec import METRICS as REGISTRY, MetricSpec, metric_spec

# matplotlib is imported by the first figure (new_figure): the report's recipes and numbers need none of it
matplotlib = LazyModule("matplotlib", globals())
if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

# Model colours (Okabe-Ito, colour-blind safe), model i gets MODEL_COLORS[i % len].
MODEL_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
BAD_COLOR = "#c62828"


MetricInfo = MetricSpec  # how a per-element metric is read from the orbit table and drawn
METRICS: dict[str, MetricSpec] = {k: m for k, m in REGISTRY.items() if m.plotted}


def metric_info(key: str) -> MetricSpec:
    """The registry's spec of ``key`` (eqaudit.metricspec); unknown metrics are drawn as unbounded
    values, lower is better, read from the table of the same name."""
    return metric_spec(key)


LAYOUTS = ("polar", "line", "grid2d", "finite", "axis-angle")
MAX_STRIP = 12  # tiles per row of a finite group's strip


@dataclass(frozen=True)
class Orbit:
    """The geometry of one sampled group, as the result stores it.

    elements (E, D) parameters in sweep order, labels E strings, identity_index the identity's row.
    """

    layout: str
    elements: np.ndarray
    labels: tuple[str, ...]
    identity_index: int
    param_names: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    exact: bool = True
    spec: str = ""

    @classmethod
    def from_symmetry(cls, sym) -> Orbit:
        """From a ``SymmetryResult``."""
        el = np.asarray(sym.elements, dtype=np.float64).reshape(len(sym.elements), -1)
        names, units = tuple(sym.param_names), tuple(sym.units)
        if sym.layout in ("polar", "line") and el.shape[1] > 1:  # e.g. translate:axis=y: draw the varying column
            col = varying_column(el)
            el, names, units = el[:, col : col + 1], names[col : col + 1], units[col : col + 1]
        return cls(sym.layout, el, tuple(sym.labels), int(sym.identity_index), names, units, bool(sym.exact), sym.spec)

    @property
    def n(self) -> int:
        return int(self.elements.shape[0])

    def drawable(self) -> Orbit:
        """This orbit, or for a layout the plots do not know, a line over the element index."""
        if self.layout in LAYOUTS:
            return self
        return Orbit("line", np.arange(self.n, dtype=np.float64)[:, None], self.labels, self.identity_index,
                     ("element",), ("",), self.exact, self.spec)

    def axis_label(self, i: int = 0) -> str:
        name = self.param_names[i] if i < len(self.param_names) else f"p{i}"
        unit = self.units[i] if i < len(self.units) else ""
        return f"{name} ({unit})" if unit else name


@dataclass
class Series:
    """One curve of an orbit plot: per-element values (E,) of one model (or one sample).

    lo/hi (E,) spread band or None; floor (E,) the resampling floor or None; open (E,) bool marks
    elements drawn hollow (not clearly above the floor).
    """

    name: str
    color: str
    values: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    floor: np.ndarray | None = None
    open: np.ndarray | None = None
    band_label: str = ""


@dataclass
class Thumb:
    """One thumbnail of a transformed input: image (H, W) or (H, W, 3) in [0, 1], caption, ok flag."""

    image: np.ndarray
    title: str
    caption: str
    ok: bool = True
    box: Sequence[float] | None = None  # what a box model output there: (x1, y1, x2, y2) in input pixels
    arrows: np.ndarray | None = None  # what a flow model output there: (2, h, w) (u right, v down) over the image
    overlay: np.ndarray | None = None  # what a dense model output there: (H', W') classes (integers) or values


# ---------------------------------------------------------------------------------------------------------
# numbers


def element_stats(values: np.ndarray, binary: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-element mean and spread of per-sample values (N, E) -> mean, lo, hi, each (E,).

    Continuous metrics: the 10th and 90th percentile over samples. Binary (0/1) metrics: the 95 %
    Wilson interval of the rate (a percentile band of 0/1 values would say nothing).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0:
        raise ValueError(f"Expected per-sample values of shape (N, E) with N > 0, got {v.shape}")
    mean = v.mean(0)
    if binary:
        n, z = v.shape[0], 1.96
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return mean, np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    lo, hi = np.percentile(v, [10, 90], axis=0)
    return mean, lo, hi


def pca_2d(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project orbit profiles (N, F) onto their first two principal axes (numpy SVD).

    Returns coords (N, 2) and the explained variance ratio (2,). Missing components (F < 2, or
    profiles that do not vary) are zero. Signs are fixed so the largest loading is positive.
    """
    p = np.asarray(profile, dtype=np.float64)
    n = p.shape[0]
    coords, ratio = np.zeros((n, 2)), np.zeros(2)
    if n == 0 or p.ndim != 2 or p.shape[1] == 0:
        return coords, ratio
    c = p - p.mean(0, keepdims=True)
    u, s, vt = np.linalg.svd(c, full_matrices=False)
    total = float((s**2).sum())
    k = min(2, s.shape[0])
    for i in range(k):
        if total <= 0 or s[i] ** 2 / total < 1e-12:
            continue
        sign = 1.0 if vt[i, np.argmax(np.abs(vt[i]))] >= 0 else -1.0
        coords[:, i] = sign * u[:, i] * s[i]
        ratio[i] = s[i] ** 2 / total
    return coords, ratio


def grid_cells(elements: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay 2-parameter elements (E, 2) on their grid: unique xs (nx,), unique ys (ny,), and
    index (ny, nx) holding the element row at each cell, -1 where the grid has no element."""
    el = np.asarray(elements, dtype=np.float64)
    xs, xi = np.unique(np.round(el[:, 0], 9), return_inverse=True)
    ys, yi = np.unique(np.round(el[:, 1], 9), return_inverse=True)
    index = np.full((ys.size, xs.size), -1, dtype=np.int64)
    index[yi.reshape(-1), xi.reshape(-1)] = np.arange(el.shape[0])
    return xs, ys, index


MAX_MOSAIC_ROWS = 12


def finite_cells(orbit: Orbit) -> np.ndarray:
    """Tile positions of a finite group: index (rows, cols) of element rows, -1 where empty.

    Integer parameters whose values form a full product (d4: rotation k x flip f; d4*swap: k x f x s)
    give a mosaic with columns along the first parameter and rows along the others (the last one
    fastest), so horizontal neighbours differ by the first generator; anything else is one strip in
    sweep order.
    """
    el = orbit.elements
    if el.ndim == 2 and el.shape[1] >= 2 and np.allclose(el, np.round(el)):
        uniq = [np.unique(el[:, d]) for d in range(el.shape[1])]
        sizes = [len(u) for u in uniq]
        rows = math.prod(sizes[1:])
        if math.prod(sizes) == orbit.n and 1 < rows <= MAX_MOSAIC_ROWS and sizes[0] <= 3 * MAX_STRIP:
            pos = [np.searchsorted(u, el[:, d]) for d, u in enumerate(uniq)]
            row = np.zeros(orbit.n, dtype=np.int64)
            for d in range(1, el.shape[1]):
                row = row * sizes[d] + pos[d]
            index = np.full((rows, sizes[0]), -1, dtype=np.int64)
            index[row, pos[0]] = np.arange(orbit.n)
            if (index >= 0).all():
                return index
    cols = min(orbit.n, MAX_STRIP)
    index = np.full(int(math.ceil(orbit.n / cols)) * cols, -1, dtype=np.int64)
    index[: orbit.n] = np.arange(orbit.n)
    return index.reshape(-1, cols)


def axis_angle_points(elements: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3-D rotations as quaternion rows (E, 4) (w, x, y, z), optionally with a 5th column flagging the
    point reflection -I, -> rotation vectors (angle / pi) * axis projected on the xy plane (E, 2),
    whether each points up (z >= 0) and whether each element is improper (E,) bool.

    The rotation vector of (axis n, angle t), t in [0, pi], lies in the unit ball; the plots draw its
    upper and lower halves as two discs seen from +z: the identity at the centre, half turns on the rim.
    """
    el = np.asarray(elements, dtype=np.float64)
    q = el[:, :4].copy()
    q[q[:, 0] < 0] *= -1
    vec = q[:, 1:]
    norm = np.linalg.norm(vec, axis=1)
    angle = 2 * np.arctan2(norm, q[:, 0])  # in [0, pi]
    axis = np.divide(vec, norm[:, None], out=np.zeros_like(vec), where=norm[:, None] > 1e-12)
    rv = axis * (angle / np.pi)[:, None]
    improper = el[:, 4] > 0.5 if el.shape[1] > 4 else np.zeros(len(el), bool)
    return rv[:, :2], rv[:, 2] >= -1e-12, improper


def plain_text(text: str, limit: int = 24) -> str:
    """A user string made safe for matplotlib text: no mathtext, one line, at most ``limit`` chars."""
    s = re.sub(r"\s+", " ", str(text)).strip()
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def _cmap(info: MetricInfo):
    """Bright (yellow) is always the worse end."""
    from matplotlib import colormaps

    return colormaps["viridis" if not info.higher_is_better else "viridis_r"]


def _value_range(info: MetricInfo, arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    if info.bounded:
        return 0.0, 1.0
    vals = np.concatenate([np.ravel(a) for a in arrays if a is not None and np.size(a)]) if arrays else np.zeros(1)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    return (min(lo, 0.0), hi if hi > lo else lo + 1.0)


# ---------------------------------------------------------------------------------------------------------
# figure plumbing (manual layout in inches: constrained layout would cost more than the drawing)


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free Agg figure of ``width`` x ``height`` inches (freed when the last reference goes)."""
    import matplotlib.lines  # noqa: F401 - with patches, read as matplotlib.lines / .patches by the painters
    import matplotlib.patches  # noqa: F401
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _axes(fig: Figure, left: float, bottom: float, width: float, height: float, **kw):
    """Add axes at a rectangle given in inches from the figure's lower left corner."""
    fw, fh = fig.get_size_inches()
    return fig.add_axes((left / fw, bottom / fh, max(width, 0.01) / fw, max(height, 0.01) / fh), **kw)


def to_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render ``fig`` as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


_SVG_HEAD = re.compile(r"^.*?(?=<svg\b)", re.S)
_SVG_NOISE = [
    re.compile(r"<metadata>.*?</metadata>\s*", re.S),
    re.compile(r"<!--.*?-->", re.S),
    re.compile(r'\s+xmlns(:\w+)?="[^"]*"'),
]


def to_svg(fig: Figure, salt: str) -> str:
    """Render ``fig`` as an ``<svg>`` element ready to inline in HTML5.

    The XML prolog, doctype, metadata, comments and namespace declarations are dropped (the HTML
    parser supplies the SVG namespaces; this also leaves no URL in the markup) and text is drawn as
    paths, so no string reaches the markup as text. ``salt`` keeps this figure's ids distinct from
    those of other figures inlined in the same page.
    """
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = _SVG_HEAD.sub("", buf.getvalue(), count=1)
    for pat in _SVG_NOISE:
        text = pat.sub("", text)
    # Prefix every id defined here (glyphs, clip paths) and the references to it, so several
    # figures can share one page; links to the page's own anchors are left alone.
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", salt) + "-"
    ids = set(re.findall(r'\sid="([^"]+)"', text))

    def scoped(m: re.Match) -> str:
        head, name, tail = m.groups()
        return f"{head}{prefix}{name}{tail}" if name in ids else m.group(0)

    text = re.sub(r'(\sid="|href="#|url\(#)([^")]+)("|\))', scoped, text)
    return text.strip()


def image_arrays(fig: Figure) -> list[np.ndarray]:
    """The data arrays of every image (heatmap, tile strip, thumbnails) drawn in ``fig``, axes order."""
    return [np.asarray(im.get_array()) for ax in fig.axes for im in ax.images]


def _colorbar(fig: Figure, im, left: float, bottom: float, height: float, label: str):
    cax = _axes(fig, left, bottom, 0.13, height)
    cb = fig.colorbar(im, cax=cax)
    cb.set_label(label, fontsize=7)
    cb.ax.tick_params(labelsize=6.5)
    return cb


def _legend(fig: Figure, ax, *, loc: str = "lower center", anchor=(0.5, 0.0), ncols: int = 3, fontsize: float = 7):
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels):
        if lab and not lab.startswith("_") and lab not in seen:
            seen[lab] = h
    if seen:
        fig.legend(list(seen.values()), [plain_text(k, 40) for k in seen], loc=loc, bbox_to_anchor=anchor,
                   ncols=max(1, min(ncols, len(seen))), fontsize=fontsize, frameon=False, handlelength=1.6,
                   columnspacing=1.2)


# ---------------------------------------------------------------------------------------------------------
# geometry painters


def _closed(theta: np.ndarray, *arrays: np.ndarray | None) -> tuple:
    """Append the first point after the last when the angles cover the full circle."""
    if _full_circle(np.degrees(theta)):
        theta = np.append(theta, theta[0] + 2 * math.pi)
        arrays = tuple(None if a is None else np.append(a, a[0]) for a in arrays)
    return (theta, *arrays)


def _full_circle(degrees: np.ndarray) -> bool:
    d = np.sort(np.asarray(degrees, dtype=np.float64))
    if d.size < 3:
        return False
    return bool(d[-1] - d[0] + np.min(np.diff(d)) >= 360 - 1e-6)


def _draw_curves(ax, orbit: Orbit, series: Sequence[Series], info: MetricInfo, *, polar: bool,
                 band: bool = True, markers: bool = True, lw: float = 1.8) -> None:
    x = orbit.elements[:, 0]
    order = np.argsort(x, kind="stable")
    xs = np.radians(x[order]) if polar else x[order]
    for s in series:
        vals = np.asarray(s.values, dtype=np.float64)[order]
        lo = None if s.lo is None else s.lo[order]
        hi = None if s.hi is None else s.hi[order]
        fl = None if s.floor is None else s.floor[order]
        if polar:
            tx, vals_c, lo_c, hi_c, fl_c = _closed(xs, vals, lo, hi, fl)
        else:
            tx, vals_c, lo_c, hi_c, fl_c = xs, vals, lo, hi, fl
        if band and lo_c is not None and hi_c is not None:
            ax.fill_between(tx, lo_c, hi_c, color=s.color, alpha=0.16, linewidth=0,
                            label=s.band_label or None)
        ax.plot(tx, vals_c, color=s.color, lw=lw, label=s.name, zorder=3)
        if fl_c is not None:
            ax.plot(tx, fl_c, color=s.color, lw=1.1, ls=(0, (2, 2)), alpha=0.9, zorder=2,
                    label=f"{s.name}: floor" if len(series) > 1 else "resampling floor")
        if markers:
            op = np.zeros(vals.shape, bool) if s.open is None else np.asarray(s.open, bool)[order]
            ax.scatter(xs[~op], vals[~op], s=12, color=s.color, zorder=4, linewidths=0)
            if op.any():
                ax.scatter(xs[op], vals[op], s=16, facecolor="white", edgecolor=s.color, zorder=4, linewidths=1,
                           label="not above the floor")
    lo_v, hi_v = _value_range(info, [s.values for s in series] + [s.hi for s in series] + [s.floor for s in series])
    ident = orbit.elements[orbit.identity_index, 0]
    if polar:
        ax.set_ylim(lo_v, hi_v)
        ax.set_theta_zero_location("E")
        ax.set_theta_direction(1)
        if not _full_circle(x):
            ax.set_thetamin(float(min(x.min(), 0)))
            ax.set_thetamax(float(max(x.max(), 0)))
        ax.set_rlabel_position(67.5)
        ax.set_yticks(np.linspace(lo_v, hi_v, 5)[1:])
        ax.set_xticks(np.radians(np.arange(0, 360, 45)), [f"{a if a <= 180 else a - 360}°" for a in range(0, 360, 45)])
        ax.tick_params(labelsize=7, pad=1)
        ax.grid(alpha=0.35)
        ax.plot([math.radians(ident)] * 2, [lo_v, hi_v], color="#444", lw=0.8, ls=":", zorder=1)
    else:
        ax.set_ylim(lo_v - 0.03 * (hi_v - lo_v), hi_v + 0.03 * (hi_v - lo_v))
        ax.axvline(ident, color="#444", lw=0.8, ls=":", zorder=1)
        ax.set_xlabel(orbit.axis_label(0), fontsize=8)
        ax.set_ylabel(info.label, fontsize=8)
        tick_idx = order if orbit.n <= 13 else order[:: math.ceil(orbit.n / 11)]
        ax.set_xticks(x[tick_idx], [orbit.labels[i] for i in tick_idx], fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)


def _tiles(orbit: Orbit) -> tuple[np.ndarray, list[str], list[str], str, str]:
    """Index (rows, cols) of element rows, tick labels and axis titles for heatmap/tile layouts."""
    if orbit.layout == "grid2d":
        xs, ys, index = grid_cells(orbit.elements)
        return index, [f"{v:g}" for v in xs], [f"{v:g}" for v in ys], orbit.axis_label(0), orbit.axis_label(1)
    index = finite_cells(orbit)
    if index.shape[0] > 1 and len(orbit.param_names) >= 2 and index.shape[0] * index.shape[1] == orbit.n:
        return index, [], [], f"{orbit.param_names[0]} →", " · ".join(orbit.param_names[1:]) + " ↓"
    if index.shape[0] > 1:
        return index, [], [], "", ""
    return index, [], [], "", ""


def _text_colour(cmap, v: float, vmin: float, vmax: float) -> str:
    rgba = cmap((v - vmin) / (vmax - vmin) if vmax > vmin else 0.0)
    return "white" if (0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]) < 0.55 else "black"


CHAR_EM = 0.62  # the widest average character of the plots' font, in ems (DejaVu Sans digits and capitals)
MIN_TILE_FONT = 4.5


def _fit_text(text: str, fontsize: float, cell_pt: float) -> tuple[str, float]:
    """``text`` (lines) made to fit a square cell of ``cell_pt`` points: a smaller font first (not below
    MIN_TILE_FONT), then fewer lines and lines cut with an ellipsis; returns the text and its font size."""
    room = 0.9 * cell_pt
    lines = text.split("\n")
    longest = max((len(line) for line in lines), default=1) or 1
    floor = min(max(MIN_TILE_FONT, 0.7 * fontsize), room / 1.2)  # below it lines are cut rather than shrunk
    size = max(floor, min(fontsize, room / (1.2 * len(lines)), room / (CHAR_EM * longest)))
    keep = max(1, int(room // (1.2 * size)))
    chars = max(1, int(room // (CHAR_EM * size)))
    lines = [line if len(line) <= chars else line[: chars - 1].rstrip("\\") + "…" for line in lines[:keep]]
    return "\n".join(lines), size


def _paint_tiles(ax, orbit: Orbit, values: np.ndarray, info: MetricInfo, vmin: float, vmax: float, *,
                 texts: Sequence[str] | None = None, fontsize: float = 7.0):
    """One heatmap/tile image of per-element ``values`` (E,) laid out in the orbit's geometry."""
    index, xt, yt, xl, yl = _tiles(orbit)
    values = np.asarray(values, dtype=np.float64)
    grid = np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)
    cmap = _cmap(info)
    im = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, origin="upper", aspect="equal", interpolation="nearest")
    finite = orbit.layout != "grid2d"
    if texts is not None or index.size <= 121:
        fs = fontsize if index.size <= 49 else fontsize * 0.8
        pos, (fw, fh) = ax.get_position(), ax.figure.get_size_inches()
        cell_pt = 72 * min(pos.width * fw / index.shape[1], pos.height * fh / index.shape[0])  # square cells (aspect equal)
        for (r, c), e in np.ndenumerate(index):
            if e < 0:
                continue
            if texts is not None:
                t = texts[e]
            elif finite:
                t = f"{plain_text(orbit.labels[e], 12)}\n{values[e]:.2f}"
            else:
                t = f"{values[e]:.2f}"
            t, size = _fit_text(t, fs, cell_pt)
            ax.text(c, r, t, ha="center", va="center", fontsize=size, color=_text_colour(cmap, values[e], vmin, vmax))
    if not finite:
        step_x = max(1, math.ceil(len(xt) / 9))
        step_y = max(1, math.ceil(len(yt) / 9))
        ax.set_xticks(range(0, len(xt), step_x), xt[::step_x], fontsize=7)
        ax.set_yticks(range(0, len(yt), step_y), yt[::step_y], fontsize=7)
        ax.set_xlabel(xl, fontsize=8, labelpad=1)
        ax.set_ylabel(yl, fontsize=8, labelpad=1)
        ax.tick_params(length=2, pad=1)
        ir, ic = np.argwhere(index == orbit.identity_index)[0]
        ax.add_patch(matplotlib.patches.Rectangle((ic - 0.5, ir - 0.5), 1, 1, fill=False, ec="#e53935", lw=1.4))
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        if xl:
            ax.set_xlabel(xl, fontsize=7, labelpad=2)
            ax.set_ylabel(yl, fontsize=7, labelpad=2)
        for spine in ax.spines.values():
            spine.set_visible(False)
        for c in range(1, index.shape[1]):
            ax.axvline(c - 0.5, color="white", lw=2)
        for r in range(1, index.shape[0]):
            ax.axhline(r - 0.5, color="white", lw=2)
    return im


def _tile_size(orbit: Orbit) -> tuple[np.ndarray, float]:
    """Tile index and the side of one tile in inches for an aggregate plot."""
    index, *_ = _tiles(orbit)
    if orbit.layout == "grid2d":
        return index, float(np.clip(3.0 / max(index.shape), 0.16, 0.5))
    return index, 0.8


def _disc_groups(orbit: Orbit) -> list[tuple[str, np.ndarray]]:
    """(title, element mask) of each disc of an axis-angle plot: up/down halves, proper then improper."""
    _, up, improper = axis_angle_points(orbit.elements)
    groups = []
    for imp in ([False, True] if improper.any() else [False]):
        for half, mask in (("z ≥ 0", up), ("z < 0", ~up)):
            groups.append((("−I · " if imp else "") + half, mask & (improper == imp)))
    return groups


def _paint_discs(ax, orbit: Orbit, values: np.ndarray, info: MetricInfo, vmin: float, vmax: float, *,
                 x0: float = 0.0, y0: float = 0.0, radius: float = 1.0, titles: bool = True, size: float = 30.0):
    """Axis-angle discs of per-element ``values`` (E,) in data coordinates from (x0, y0); returns the
    scatter (for a colour bar) and the width used."""
    xy, _, _ = axis_angle_points(orbit.elements)
    values = np.asarray(values, dtype=np.float64)
    cmap = _cmap(info)
    sc = None
    gap = 0.35 * radius
    t = np.linspace(0, 2 * np.pi, 97)
    for i, (title, mask) in enumerate(_disc_groups(orbit)):
        cx = x0 + radius + i * (2 * radius + gap)
        ax.plot(cx + radius * np.cos(t), y0 + radius * np.sin(t), color="#999", lw=0.7)
        ax.plot([cx - radius, cx + radius], [y0, y0], color="#e3e3e3", lw=0.5, zorder=0)
        ax.plot([cx, cx], [y0 - radius, y0 + radius], color="#e3e3e3", lw=0.5, zorder=0)
        pts = xy[mask] * radius
        sc = ax.scatter(cx + pts[:, 0], y0 + pts[:, 1], c=values[mask], cmap=cmap, vmin=vmin, vmax=vmax, s=size,
                        edgecolors="#555", linewidths=0.3, zorder=3)
        if mask[orbit.identity_index]:
            ax.scatter([cx + xy[orbit.identity_index, 0] * radius], [y0 + xy[orbit.identity_index, 1] * radius],
                       s=size * 2.2, facecolor="none", edgecolor="#e53935", linewidths=1.2, zorder=4)
        if titles:
            ax.text(cx, y0 - radius * 1.08, title, ha="center", va="top", fontsize=6.5, color="#555")
    n = len(_disc_groups(orbit))
    return sc, n * 2 * radius + (n - 1) * gap


# ---------------------------------------------------------------------------------------------------------
# figures


def orbit_figure(orbit: Orbit, series: Sequence[Series], metric: str, *, title: str = "") -> Figure:
    """Aggregate orbit plot of ``metric``: one Series per model, in the geometry of the group.

    polar/line: every model overlaid on one axis (shared scale) with its spread band and, for
    resampled actions, its floor; grid2d: one heatmap per model, side by side, one colour scale;
    finite: one labelled tile strip or mosaic per model, stacked, one colour scale.
    """
    info = metric_info(metric)
    if not series:
        raise ValueError("orbit_figure needs at least one Series")
    orbit = orbit.drawable()
    top = 0.3 if title else 0.08
    if orbit.layout == "axis-angle":
        vmin, vmax = _value_range(info, [s.values for s in series])
        n_disc = len(_disc_groups(orbit))
        m = len(series)
        row_h, disc = 2.05, 1.55
        fig = new_figure(0.3 + n_disc * disc * 1.17 + 1.0, m * row_h + 0.15 + top)
        sc = None
        for k, s in enumerate(series):
            ax = _axes(fig, 0.2, (m - 1 - k) * row_h + 0.15, n_disc * disc * 1.17, row_h - 0.3)
            sc, width = _paint_discs(ax, orbit, s.values, info, vmin, vmax, size=max(8.0, 900.0 / max(orbit.n, 1)))
            ax.set_xlim(-0.05, width + 0.05)
            ax.set_ylim(-1.35, 1.08)
            ax.set_aspect("equal")
            ax.set_axis_off()
            ax.set_title(plain_text(s.name, 40), fontsize=8.5, color=s.color, fontweight="bold", loc="left", pad=2)
        _colorbar(fig, sc, 0.35 + n_disc * disc * 1.17, 0.3, max(0.8, m * row_h - 0.45), info.label)
    elif orbit.layout == "polar":
        fig = new_figure(5.6, 5.5 + top)
        ax = _axes(fig, 0.6, 1.0, 4.4, 4.1, projection="polar")
        _draw_curves(ax, orbit, series, info, polar=True)
        ax.set_title(info.label, fontsize=8.5, pad=10)
        _legend(fig, ax, ncols=2)
    elif orbit.layout == "line":
        fig = new_figure(7.0, 3.7 + top)
        ax = _axes(fig, 0.62, 1.0, 6.2, 2.6)
        _draw_curves(ax, orbit, series, info, polar=False)
        _legend(fig, ax, ncols=3)
    else:
        vmin, vmax = _value_range(info, [s.values for s in series])
        index, tile = _tile_size(orbit)
        rows, cols = index.shape
        m = len(series)
        if orbit.layout == "grid2d":
            pw, ph = cols * tile, rows * tile
            left, gap, head = 0.55, 0.5, 0.3
            fig = new_figure(left + m * pw + (m - 1) * gap + 0.9, ph + 0.55 + head + top)
            ims = []
            for k, s in enumerate(series):
                ax = _axes(fig, left + k * (pw + gap), 0.5, pw, ph)
                ims.append(_paint_tiles(ax, orbit, s.values, info, vmin, vmax))
                ax.set_title(plain_text(s.name, 30), fontsize=8.5, color=s.color, fontweight="bold", pad=3)
            _colorbar(fig, ims[0], left + m * pw + (m - 1) * gap + 0.15, 0.5, ph, info.label)
        else:
            pw, ph = cols * tile, rows * tile
            left = 0.35 if rows > 1 else 0.15
            head, bottom = 0.28, 0.3 if rows > 1 else 0.1
            block = ph + head + bottom
            fig = new_figure(left + pw + 1.0, m * block + 0.1 + top)
            ims = []
            for k, s in enumerate(series):
                y0 = (m - 1 - k) * block + bottom + 0.05
                ax = _axes(fig, left, y0, pw, ph)
                ims.append(_paint_tiles(ax, orbit, s.values, info, vmin, vmax))
                ax.set_title(plain_text(s.name, 40), fontsize=8.5, color=s.color, fontweight="bold", pad=3, loc="left")
            _colorbar(fig, ims[0], left + pw + 0.2, bottom + 0.05, max(0.6, m * block - bottom - head - 0.05), info.label)
    if title:
        fig.suptitle(plain_text(title, 80), fontsize=10, y=1 - 0.04 / fig.get_size_inches()[1])
    return fig


def class_grid_figure(orbit: Orbit, classes: Sequence[str], counts: Sequence[int],
                      per_class: Sequence[Sequence[Series]], metric: str, *, max_cols: int = 5) -> Figure:
    """Small multiples: one orbit plot of ``metric`` per class (``per_class[c]`` holds one Series per
    model, drawn in its colour), all on one scale and all in one axes (cheap to draw).

    polar: a ring per class (centre = the lowest value, outer ring = the highest, faint half-way
    ring), line: a framed mini plot per class, grid2d/finite: one small tile image per (class, model)
    with a frame in the model's colour.
    """
    info = metric_info(metric)
    orbit = orbit.drawable()
    n = len(classes)
    cols = max(1, min(max_cols, n))
    rows = max(1, math.ceil(n / cols))
    vmin, vmax = _value_range(info, [s.values for g in per_class for s in g])
    span = vmax - vmin if vmax > vmin else 1.0
    names = {}
    for g in per_class:
        for s in g:
            names.setdefault(s.name, s.color)
    legend_h = 0.3 if len(names) > 1 else 0.0
    if orbit.layout == "axis-angle":
        m = max((len(g) for g in per_class), default=1)
        n_disc = len(_disc_groups(orbit))
        cols = max(1, min(max(1, max_cols * 2 // n_disc), n))
        rows = max(1, math.ceil(n / cols))
        unit = 0.5  # inches per disc radius
        cell_w = n_disc * 2.35 - 0.35 + 0.8
        row_h = 2.5  # one row of discs per model under the class's name
        cell_h = 0.6 + m * row_h
        fig = new_figure(cols * cell_w * unit + 1.0, rows * cell_h * unit + 0.25 + legend_h)
        ax = _axes(fig, 0.1, 0.15 + legend_h, cols * cell_w * unit, rows * cell_h * unit)
        sc = None
        for k in range(n):
            x0, top = (k % cols) * cell_w + 0.4, -(k // cols) * cell_h
            ax.text(x0, top - 0.5, f"{plain_text(classes[k], 16)}  (n={counts[k]})", fontsize=7, va="bottom")
            for j, s in enumerate(per_class[k]):
                y0 = top - 1.75 - j * row_h
                sc, width = _paint_discs(ax, orbit, s.values, info, vmin, vmax, x0=x0, y0=y0, titles=False,
                                         size=max(3.0, 200.0 / max(orbit.n, 1)))
                ax.plot([x0, x0 + width], [y0 - 1.15] * 2, color=s.color, lw=2)
        ax.set_xlim(0, cols * cell_w)
        ax.set_ylim(-rows * cell_h, 0)
        ax.set_aspect("equal")
        ax.set_axis_off()
        if sc is not None:
            _colorbar(fig, sc, cols * cell_w * unit + 0.3, 0.2 + legend_h, max(0.6, min(2.0, rows * cell_h * unit - 0.2)),
                      info.label)
    elif orbit.layout in ("polar", "line"):
        polar = orbit.layout == "polar"
        cw, ch = (1.5, 1.62) if polar else (1.75, 1.3)
        fig = new_figure(cols * cw + 0.2, rows * ch + 0.25 + legend_h)
        ax = _axes(fig, 0.1, 0.15 + legend_h, cols * cw, rows * ch)
        ax.set_xlim(0, cols * cw)
        ax.set_ylim(-rows * ch, 0)
        ax.set_axis_off()
        x = orbit.elements[:, 0]
        order = np.argsort(x, kind="stable")
        for k in range(n):
            cx, cy = (k % cols + 0.5) * cw, -(k // cols) * ch
            ax.text(cx, cy - 0.05, f"{plain_text(classes[k], 16)}  (n={counts[k]})", ha="center", va="top", fontsize=7.5)
            if polar:
                R, oy = 0.58, cy - 0.2 - 0.62
                t = np.linspace(0, 2 * np.pi, 73)
                for frac, ls in ((1.0, "-"), (0.5, ":")):
                    ax.plot(cx + frac * R * np.cos(t), oy + frac * R * np.sin(t), color="#bbb", lw=0.6, ls=ls)
                for a in (0, 90, 180, 270):
                    ax.plot([cx, cx + R * math.cos(math.radians(a))], [oy, oy + R * math.sin(math.radians(a))],
                            color="#999" if a == 0 else "#ddd", lw=0.6)
                th = np.radians(x[order])
                for s in per_class[k]:
                    rr = R * np.clip((np.asarray(s.values, float)[order] - vmin) / span, 0, 1)
                    tt, rr = _closed(th, rr)
                    ax.plot(cx + rr * np.cos(tt), oy + rr * np.sin(tt), color=s.color, lw=1.3)
            else:
                bw, bh = cw * 0.84, ch * 0.62
                x0, y0 = cx - bw / 2, cy - 0.22 - bh
                ax.add_patch(matplotlib.patches.Rectangle((x0, y0), bw, bh, fill=False, ec="#bbb", lw=0.6))
                ax.plot([x0, x0 + bw], [y0 + bh / 2] * 2, color="#ddd", lw=0.6, ls=":")
                xr = (x.max() - x.min()) or 1.0
                px = x0 + 0.05 * bw + 0.9 * bw * (x[order] - x.min()) / xr
                ident = x0 + 0.05 * bw + 0.9 * bw * (x[orbit.identity_index] - x.min()) / xr
                ax.plot([ident, ident], [y0, y0 + bh], color="#999", lw=0.6, ls=":")
                for s in per_class[k]:
                    py = y0 + 0.05 * bh + 0.9 * bh * np.clip((np.asarray(s.values, float)[order] - vmin) / span, 0, 1)
                    ax.plot(px, py, color=s.color, lw=1.3)
        if polar:
            scale = f"each disc: {info.label} from {vmin:g} (centre) to {vmax:g} (outer ring), angle as in the aggregate plot"
        else:
            scale = f"each box: {info.label} from {vmin:g} (bottom) to {vmax:g} (top), {orbit.axis_label(0)} left to right"
        fig.text(0.01, 0.01, scale, fontsize=6.5, color="#555")
    else:
        index, *_ = _tiles(orbit)
        tr, tc = index.shape
        m = max((len(g) for g in per_class), default=1)
        gap = 1
        unit = float(np.clip(1.5 / max(tc, 1), 0.06, 0.22)) if orbit.layout == "grid2d" else 0.2
        cell_w = tc + 2 * gap  # one column per class, one row of tiles per model under the class's name
        head = int(math.ceil(0.6 + 0.16 / unit))
        cell_h = head + m * (tr + gap)
        fig = new_figure(cols * cell_w * unit + 1.0, rows * cell_h * unit + 0.15 + legend_h + 0.15)
        ax = _axes(fig, 0.1, 0.1 + legend_h, cols * cell_w * unit, rows * cell_h * unit)
        big = np.full((int(math.ceil(rows * cell_h)), int(math.ceil(cols * cell_w))), np.nan)
        frames = []
        for k in range(n):
            for j, s in enumerate(per_class[k]):
                c0 = (k % cols) * cell_w + gap
                r0 = (k // cols) * cell_h + head + j * (tr + gap)
                vals = np.asarray(s.values, dtype=np.float64)
                block = np.where(index >= 0, vals[np.clip(index, 0, None)], np.nan)
                ri, ci = int(r0), int(c0)
                big[ri:ri + tr, ci:ci + tc] = block
                frames.append((ci, ri, s.color))
            ax.text((k % cols) * cell_w + gap - 0.5, (k // cols) * cell_h + head - 0.5 - 0.05 / unit,
                    f"{plain_text(classes[k], max(4, min(14, int(cell_w * unit / 0.06) - 6)))} (n={counts[k]})", fontsize=6.5,
                    va="bottom", ha="left")
        cmap = _cmap(info).with_extremes(bad=(1, 1, 1, 0))
        im = ax.imshow(big, cmap=cmap, vmin=vmin, vmax=vmax, origin="upper", interpolation="nearest", aspect="equal",
                       extent=(-0.5, big.shape[1] - 0.5, big.shape[0] - 0.5, -0.5))
        for ci, ri, color in frames:
            ax.add_patch(matplotlib.patches.Rectangle((ci - 0.5, ri - 0.5), tc, tr, fill=False, ec=color, lw=1.2))
        ax.set_axis_off()
        fw, fh = fig.get_size_inches()
        _colorbar(fig, im, cols * cell_w * unit + 0.3, 0.15 + legend_h, max(0.5, min(2.0, fh - 0.4 - legend_h)), info.label)
    if len(names) > 1:
        handles = [matplotlib.lines.Line2D([], [], color=c, lw=2) for c in names.values()]
        fig.legend(handles, [plain_text(k, 30) for k in names], loc="lower right", bbox_to_anchor=(0.99, 0.0),
                   ncols=min(4, len(names)), fontsize=7, frameon=False)
    return fig


OUTPUT_COLOR = "#ff9f1c"  # what the model output, drawn on its input thumbnails (boxes)
ARROW_COLOR = "#ff3d7f"  # flows: seen on dark and light inputs alike
ARROWS_SIDE = 6


def _draw_outputs(ax, thumbs: Sequence[Thumb], boxes: Sequence[tuple[float, float, float]]) -> None:
    """On a montage of thumbnails (``boxes``: x0, width, height of each, in pixels), what the model output at
    each: its box, its flow as arrows (one length scale for the whole strip: the 90th percentile of the
    lengths spans one block) or its output map, translucent over the input."""
    from .thumbs import box_means

    def coarse(f):  # at most ARROWS_SIDE arrows a side: readable at a thumbnail's size
        f = np.asarray(f, dtype=np.float64)
        return box_means(box_means(f, 1, ARROWS_SIDE), 2, ARROWS_SIDE)

    flows = [coarse(t.arrows) for t in thumbs if t.arrows is not None]
    mags = np.concatenate([np.hypot(f[0], f[1]).ravel() for f in flows]) if flows else np.zeros(0)
    longest = float(np.percentile(mags, 90)) if mags.size else 0.0  # most arrows about a block long
    for t, (x0, w, h) in zip(thumbs, boxes):
        if t.overlay is not None:
            m = np.asarray(t.overlay)
            classes = np.issubdtype(m.dtype, np.integer)
            ax.imshow(m % 10 if classes else m, cmap="tab10" if classes else "magma", vmin=0 if classes else None,
                      vmax=9.5 if classes else None, alpha=0.45, interpolation="nearest",
                      extent=(x0 - 0.5, x0 + w - 0.5, h - 0.5, -0.5))
        if t.box is not None and np.all(np.isfinite(t.box)):
            x1, y1, x2, y2 = (float(v) for v in t.box)
            ax.add_patch(matplotlib.patches.Rectangle((x0 + x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                                      ec=OUTPUT_COLOR, lw=1.3, zorder=5))
        if t.arrows is not None and longest > 0:
            f = coarse(t.arrows)
            fh, fw = f.shape[1:]
            bw, bh = w / fw, h / fh
            gx, gy = np.meshgrid(x0 - 0.5 + (np.arange(fw) + 0.5) * bw, -0.5 + (np.arange(fh) + 0.5) * bh)
            ax.quiver(gx, gy, f[0], f[1], angles="xy", scale_units="xy", scale=longest / (0.9 * min(bw, bh)),
                      color=ARROW_COLOR, width=0.005, headwidth=3, headlength=3.5, headaxislength=3, zorder=5)
    ax.set_xlim(-0.5, max((x0 + w for x0, w, _ in boxes), default=0) - 0.5)
    ax.set_ylim(max((h for _, _, h in boxes), default=0) - 0.5, -0.5)


def _outer_ring(ax, orbit: Orbit, s: Series) -> None:
    """A further per-element series of a polar sample plot (a probability, e.g. the true class's) as a ring of
    marks outside the first curve's range, dark where high, instead of a curve that spikes to the centre
    wherever it drops to 0."""
    lo, hi = ax.get_ylim()
    r = hi + 0.12 * (hi - lo)
    theta = np.radians(orbit.elements[:, 0])
    ax.scatter(theta, np.full(theta.shape, r), c=np.clip(np.asarray(s.values, dtype=np.float64), 0, 1), cmap="Greys", vmin=0,
               vmax=1, s=20, edgecolors="#555", linewidths=0.4, zorder=4, label=f"{s.name} (ring; dark = high)")
    ax.set_ylim(lo, r + 0.06 * (hi - lo))


def _montage(thumbs: Sequence[Thumb], gap_frac: float = 0.18) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Thumbnails side by side in one RGBA image; returns it and (x0, width, height) of each, in pixels."""
    imgs = []
    for t in thumbs:
        a = np.asarray(t.image, dtype=np.float64)
        a = np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]
        imgs.append(np.concatenate([a, np.ones(a.shape[:2] + (1,))], axis=2))
    h = max(a.shape[0] for a in imgs)
    gap = max(2, int(round(gap_frac * max(a.shape[1] for a in imgs))))
    width = sum(a.shape[1] for a in imgs) + gap * (len(imgs) - 1)
    out = np.zeros((h, width, 4))
    boxes, x0 = [], 0
    for a in imgs:
        out[: a.shape[0], x0 : x0 + a.shape[1]] = a
        boxes.append((x0, a.shape[1], a.shape[0]))
        x0 += a.shape[1] + gap
    return out, boxes


def sample_figure(orbit: Orbit, series: Sequence[Series], metric: str, thumbs: Sequence[Thumb], *,
                  title: str = "", tile_texts: Sequence[str] | None = None,
                  flags: np.ndarray | None = None) -> Figure:
    """Individual orbit plot of one sample: its ``series`` (e.g. probability shift and true-class
    probability) over the orbit, and a strip of thumbnails of the transformed input below, each
    titled with its element and captioned with the model's prediction there (red when wrong).

    ``flags`` (E,) bool marks elements where the prediction changed (red crosses on the first
    curve); tile layouts draw the first series as tiles, with ``tile_texts`` (E,) in them.
    """
    info = metric_info(metric)
    orbit = orbit.drawable()
    nt = len(thumbs)
    width = max(4.9, 0.82 * nt + 0.5)
    head = 0.3 if title else 0.05
    strip = 1.3 if nt else 0.0
    if orbit.layout == "axis-angle":
        width = max(width, 0.4 + len(_disc_groups(orbit)) * 1.5 + 1.0)
        top_h = 2.0
    elif orbit.layout == "polar":
        top_h = 2.75
    elif orbit.layout == "line":
        top_h = 2.15
    else:
        index, *_ = _tiles(orbit)
        tile = min(0.34, 2.4 / max(index.shape)) if orbit.layout == "grid2d" else 0.62
        top_h = index.shape[0] * tile + (0.6 if orbit.layout == "grid2d" else 0.45)
    fig = new_figure(width, top_h + strip + head)
    y_top = strip
    if orbit.layout in ("polar", "line"):
        polar = orbit.layout == "polar"
        if polar:
            ax = _axes(fig, 0.4, y_top + 0.25, top_h - 0.4, top_h - 0.4, projection="polar")
        else:
            ax = _axes(fig, 0.55, y_top + 0.5, width - 2.35, top_h - 0.6)
        _draw_curves(ax, orbit, series[:1] if polar else series, info, polar=polar, band=False, lw=1.5)
        if polar:
            for s in series[1:]:
                _outer_ring(ax, orbit, s)
        if flags is not None and np.any(flags) and series:
            f = np.asarray(flags, bool)
            xf = orbit.elements[f, 0]
            ax.scatter(np.radians(xf) if polar else xf, np.asarray(series[0].values)[f], marker="x", s=24,
                       color=BAD_COLOR, linewidths=1.3, zorder=5, label="prediction changed")
        if polar:
            ax.tick_params(labelsize=6.5)
        else:
            ax.set_ylabel("value", fontsize=8)
        _legend(fig, ax, loc="upper right", anchor=(0.995, (y_top + top_h - 0.05) / (top_h + strip + head)), ncols=1,
                fontsize=6.5)
    elif orbit.layout == "axis-angle":
        s = series[0]
        vmin, vmax = _value_range(info, [s.values])
        n_disc = len(_disc_groups(orbit))
        ax = _axes(fig, 0.2, y_top + 0.1, n_disc * 1.5, top_h - 0.15)
        sc, w = _paint_discs(ax, orbit, s.values, info, vmin, vmax, size=max(6.0, 500.0 / max(orbit.n, 1)))
        ax.set_xlim(-0.05, w + 0.05)
        ax.set_ylim(-1.35, 1.05)
        ax.set_aspect("equal")
        ax.set_axis_off()
        _colorbar(fig, sc, 0.35 + n_disc * 1.5, y_top + 0.3, top_h - 0.5, info.label)
    else:
        s = series[0]
        vmin, vmax = _value_range(info, [s.values])
        rows, cols = index.shape
        pw, ph = cols * tile, rows * tile
        left = (width - pw - 0.8) / 2 if orbit.layout != "grid2d" else max(0.5, (width - pw - 0.8) / 2)
        ax = _axes(fig, left, y_top + (0.45 if orbit.layout == "grid2d" else 0.3), pw, ph)
        im = _paint_tiles(ax, orbit, s.values, info, vmin, vmax, texts=tile_texts, fontsize=6.3)
        _colorbar(fig, im, left + pw + 0.15, y_top + (0.45 if orbit.layout == "grid2d" else 0.3), ph, info.label)
    if nt:
        img, boxes = _montage(thumbs)
        tax = _axes(fig, 0.15, 0.3, width - 0.3, strip - 0.55)
        tax.imshow(img, interpolation="nearest", aspect="equal")
        tax.set_xlim(-0.5, img.shape[1] - 0.5)
        tax.set_ylim(img.shape[0] - 0.5, -0.5)
        tax.set_axis_off()
        for t, (x0, w, h) in zip(thumbs, boxes):
            cx = x0 + w / 2 - 0.5
            tax.text(cx, -1.5, plain_text(t.title, 14), ha="center", va="bottom", fontsize=6.5, color="#333")
            tax.text(cx, h + 1.0, plain_text(t.caption, 16), ha="center", va="top", fontsize=6.5,
                     color="#222" if t.ok else BAD_COLOR, fontweight="normal" if t.ok else "bold")
            tax.add_patch(matplotlib.patches.Rectangle((x0 - 0.5, -0.5), w, h, fill=False,
                                                       ec="#bbb" if t.ok else BAD_COLOR, lw=0.6 if t.ok else 1.8))
        _draw_outputs(tax, thumbs, boxes)
    if title:
        fig.suptitle(plain_text(title, 80), fontsize=8.5, x=0.02, ha="left",
                     y=1 - 0.03 / fig.get_size_inches()[1], va="top")
    return fig


def sample_map_figure(coords: np.ndarray, colour: np.ndarray, marks: Sequence[tuple[int, str, str]], *,
                      colour_label: str, explained: np.ndarray | None = None, vmax: float | None = None) -> Figure:
    """Sample map: every sample's orbit profile reduced to 2-D (coords (N, 2)), coloured by
    ``colour`` (N,); ``marks`` (row, text, url) ring and label the worst samples, each label and ring
    carrying ``url`` (a link when the figure is saved as SVG)."""
    coords = np.asarray(coords, dtype=np.float64)
    colour = np.asarray(colour, dtype=np.float64)
    fig = new_figure(4.7, 3.5)
    ax = _axes(fig, 0.55, 0.45, 3.2, 2.95)
    hi = float(vmax) if vmax is not None else float(np.nanmax(colour)) if colour.size else 1.0
    order = np.argsort(colour, kind="stable")  # worst drawn last, on top
    sc = ax.scatter(coords[order, 0], coords[order, 1], c=colour[order], cmap="viridis", vmin=0,
                    vmax=max(hi, 1e-9), s=11, linewidths=0, alpha=0.9)
    sc.set_gid("samples")  # the page finds the points (one <use> each, in this order) by this id
    if marks:
        rows = np.array([r for r, _, _ in marks], dtype=np.int64)
        ring = ax.scatter(coords[rows, 0], coords[rows, 1], s=80, facecolor="none", edgecolor=BAD_COLOR, linewidths=1.5)
        ring.set_urls([u for _, _, u in marks])
        texts = [plain_text(text, 12) for _, text, _ in marks]
        fs = 8.5
        sizes = [_label_size(fig, t, fs) for t in texts]
        for (r, _, url), text, (w, h), (dx, dy) in zip(marks, texts, sizes, _label_offsets(ax, coords[rows], sizes)):
            far = np.hypot(max(dx, 0, -dx - w), max(dy, 0, -dy - h)) > LABEL_GAP + 4  # nudged away: draw a leader
            t = ax.annotate(text, (coords[r, 0], coords[r, 1]), xytext=(dx, dy), textcoords="offset points",
                            ha="left", va="bottom", fontsize=fs, color=BAD_COLOR, fontweight="bold",
                            annotation_clip=False, zorder=5,
                            arrowprops=dict(arrowstyle="-", lw=0.6, color=BAD_COLOR, shrinkA=1, shrinkB=5) if far else None)
            t.set_url(url)
    _colorbar(fig, sc, 3.9, 0.45, 2.95, colour_label)
    ex = explained if explained is not None else np.zeros(2)
    ax.set_xlabel(f"PC1 ({100 * ex[0]:.0f}% of variance)", fontsize=8)
    ax.set_ylabel(f"PC2 ({100 * ex[1]:.0f}%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)
    return fig


LABEL_GAP = 6.0  # points between a marked point and its label (the ring's radius is about 4.5)


def _label_size(fig: Figure, text: str, fontsize: float, weight: str = "bold") -> tuple[float, float]:
    """Width and height in points of ``text`` as ``fig`` lays it out at ``fontsize``."""
    t = fig.text(0, 0, text, fontsize=fontsize, fontweight=weight)
    bb = t.get_window_extent(fig.canvas.get_renderer())
    t.remove()
    scale = 72.0 / fig.dpi
    return float(bb.width * scale), float(bb.height * scale)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap area of two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return float(w * h) if w > 0 and h > 0 else 0.0


def _label_offsets(ax, points: np.ndarray, sizes: Sequence[tuple[float, float]] | None = None,
                   pad: float = 2.0) -> list[tuple[float, float]]:
    """Label placement for marked points (K, 2) in data coordinates, labels of ``sizes`` (w, h) in
    points; returns each label's lower-left corner as an offset in points from its point.

    Greedy, in rank order: of the candidate spots around the point (eight directions, then the same
    farther out, so a crowded label is nudged clear), the one that keeps the label inside the axes
    (a spot that would cross an edge is slid back inside, which puts it on the side away from that
    edge), clear of the labels placed so far and of the marked points, and close to its point."""
    ax.autoscale_view()
    scale = 72.0 / ax.figure.dpi
    pts = ax.transData.transform(np.asarray(points, dtype=np.float64).reshape(-1, 2)) * scale  # in points
    x0, y0, x1, y1 = (np.asarray(ax.bbox.extents) * scale) + np.array([pad, pad, -pad, -pad])
    sizes = list(sizes) if sizes is not None else [(16.0, 8.0)] * len(pts)
    ring = 5.0
    rings = [np.array([q[0] - ring, q[1] - ring, q[0] + ring, q[1] + ring]) for q in pts]
    placed: list[np.ndarray] = []
    out: list[tuple[float, float]] = []
    dirs = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)]
    for k, (p, (w, h)) in enumerate(zip(pts, sizes)):
        best, best_cost = None, np.inf
        for step in range(4):
            gap = LABEL_GAP + step * (h + 2)
            for order, (ux, uy) in enumerate(dirs):
                # lower-left corner for a label on side (ux, uy) of the point
                lx = p[0] + (gap if ux > 0 else -gap - w if ux < 0 else -w / 2)
                ly = p[1] + (gap if uy > 0 else -gap - h if uy < 0 else -h / 2)
                cx = min(max(lx, x0), max(x0, x1 - w))
                cy = min(max(ly, y0), max(y0, y1 - h))
                box = np.array([cx, cy, cx + w, cy + h])
                hit = sum(_overlap(box, q + np.array([-1.5, -1.5, 1.5, 1.5])) for q in placed)
                cover = sum(_overlap(box, q) for q in rings)
                centre = np.array([cx + w / 2, cy + h / 2])
                cost = (1000.0 * hit + 20.0 * cover + 4.0 * float(np.hypot(cx - lx, cy - ly))
                        + float(np.hypot(*(centre - p))) + 0.1 * order)
                if cost < best_cost - 1e-9:
                    best, best_cost = box, cost
        placed.append(best)
        out.append((float(best[0] - p[0]), float(best[1] - p[1])))
    return out


def thumbnail(x: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """One input (C, H, W) -> (H, W) grey or (H, W, 3) colour image in [0, 1] for imshow.

    ``lo``/``hi`` fix the intensity range (use the untransformed input's, so every thumbnail of a
    sample shares one scale); other channel counts show the first channel.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"Expected one image (C, H, W), got shape {a.shape}")
    img = np.transpose(a[:3], (1, 2, 0)) if a.shape[0] == 3 else a[0]
    lo = float(np.nanmin(a)) if lo is None else lo
    hi = float(np.nanmax(a)) if hi is None else hi
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((img - lo) / (hi - lo), 0, 1)


def point_error_stats(errors: np.ndarray, identity_index: int, real: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-point error bars over an orbit: errors (E, P) -> (atoms, mean, low, high), each (P',) over the
    non-identity elements (all of them when the orbit is the identity alone), P' the real points of ``real``."""
    e = np.asarray(errors, dtype=np.float64)
    keep = np.arange(e.shape[0]) != identity_index
    e = e[keep] if keep.any() else e
    atoms = np.nonzero(real)[0] if real is not None else np.arange(e.shape[1])
    e = e[:, atoms]
    return atoms, e.mean(0), e.min(0), e.max(0)


def point_error_figure(errors: np.ndarray, identity_index: int, real: np.ndarray | None, label: str) -> Figure:
    """Per-atom error bars of one sample's per-point vector output (forces): the mean over the orbit's
    non-identity elements, whiskers from its smallest to its largest value; padded atoms are left out."""
    atoms, mean, lo, hi = point_error_stats(errors, identity_index, real)
    fig = new_figure(4.7, 1.9)
    ax = _axes(fig, 0.6, 0.45, 3.9, 1.25)
    pos = np.arange(len(atoms))
    ax.bar(pos, mean, color=MODEL_COLORS[0], width=0.7)
    ax.errorbar(pos, mean, yerr=np.stack([mean - lo, hi - mean]), fmt="none", ecolor="#333333", elinewidth=0.8, capsize=2)
    ax.set_xticks(pos, [str(int(a)) for a in atoms], fontsize=7)
    ax.set_xlabel("atom", fontsize=8)
    ax.set_ylabel(plain_text(label, 24), fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylim(0, max(float(hi.max()) if hi.size else 0.0, 1e-12) * 1.1)
    return fig
