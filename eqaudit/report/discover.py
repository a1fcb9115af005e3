"""The discover report: a spectrum plot (singular values and each generator's own value against the
floor and thresholds) and one small self-contained HTML page, from the JSON result alone."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import write_bytes_atomic, write_text_atomic
from .plots import to_png

VERDICT_COLORS = {"learned": "#009E73", "partly": "#E69F00", "not": "#c62828"}
PLOT_FILE = "plots/spectrum.png"
DISCOVER_KEYS = ("model", "data", "algebra", "generators", "spectrum", "floor", "thresholds")  # what the page reads


def spectrum_figure(result: dict) -> Figure:
    """Two panels on a log scale: the singular values (smallest first, labelled with their leading
    generator) and every generator's own value coloured by verdict, with the floor and thresholds."""
    th, floor = result["thresholds"], result["floor"]
    spec, gens = result["spectrum"], result["generators"]
    g = len(gens)
    fig = Figure(figsize=(max(6.0, 1.1 * g + 3.0), 3.4), dpi=100)
    FigureCanvasAgg(fig)
    values = [np.asarray([s["value"] for s in spec]), np.asarray([x["value"] for x in gens])]
    positive = [float(v[v > 0].min()) for v in values if (v > 0).any()] + ([floor] if floor > 0 else [])
    lo = min([th["learned"], *positive]) / 3  # exact zeros are drawn at this bottom edge
    hi = max(float(max(v.max() for v in values)), th["not_at"]) * 3
    titles = ["symmetry spectrum (singular values)", "generators (own Lie derivative)"]
    labels = [[max(s["vector"], key=lambda n, s=s: abs(s["vector"][n])) for s in spec], [x["name"] for x in gens]]
    colors = [["#0072B2"] * g, [VERDICT_COLORS[x["verdict"]] for x in gens]]
    for k in range(2):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.bar(np.arange(g), np.maximum(values[k], lo), color=colors[k])
        ax.set_yscale("log")
        for i in np.flatnonzero(values[k] <= 0):  # exact zeros have no bar on a log scale: say so
            ax.text(i, lo * 1.3, "0", ha="center", va="bottom", fontsize=8, color=colors[k][i])
        ax.set_ylim(lo, hi)
        ax.set_xticks(np.arange(g), labels[k], rotation=30, ha="right", fontsize=8)
        ax.axhline(th["learned"], color="#009E73", ls="--", lw=1, label=f"learned ≤ {th['learned']:.2g}")
        ax.axhline(th["not_at"], color="#c62828", ls=":", lw=1, label=f"not ≥ {th['not_at']:.2g}")
        if floor > 0:
            ax.axhline(floor, color="0.4", lw=1, label=f"floor {floor:.2g}")
        ax.set_title(titles[k], fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        if k == 0:
            ax.set_ylabel("relative output change per unit", fontsize=8)
            handles, texts = ax.get_legend_handles_labels()
    fig.legend(handles, texts, fontsize=7, loc="upper center", ncol=3, frameon=False)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.25, top=0.82, wspace=0.25)
    return fig


def read_discover(path: Path) -> dict | None:
    """The result in ``path`` (a result.json or its folder) when it is a discover result (``"kind":
    "discover"``), so `eqaudit report` re-renders its page; None for anything else (a scan's result,
    or a file the scan loader will explain)."""
    import json

    path = Path(path)
    if path.is_dir():
        path = path / "result.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("kind") != "discover":
        return None
    missing = [k for k in DISCOVER_KEYS if k not in d]
    if missing:
        from ..errors import ResultError

        raise ResultError(f"Expected a discover result with keys {', '.join(DISCOVER_KEYS)}, got {str(path)!r} without "
                          f"{', '.join(missing)}, do re-run `eqaudit discover` to write it again.")
    return d


def write_discover_report(result: dict, out_dir: Path) -> Path:
    """Write ``plots/spectrum.png`` and ``report.html`` under ``out_dir``; return the page's path."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from .html import TEMPLATES, fmt_number

    out_dir = Path(out_dir)
    png = to_png(spectrum_figure(result), dpi=96)
    write_bytes_atomic(out_dir / PLOT_FILE, png)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_number
    html = env.get_template("discover.html.j2").render(
        r=result, model_name=Path(result["model"]["path"]).name, data_name=Path(result["data"]["path"]).name,
        plot="data:image/png;base64," + base64.b64encode(png).decode("ascii"), colors=VERDICT_COLORS)
    path = out_dir / "report.html"
    write_text_atomic(path, html)
    return path
