"""Build the self-contained report.html and the plots/ files from a saved result and its orbit table.

Reads nothing but the ``AuditResult`` and ``orbits.npz`` (so ``eqaudit report`` works after model and
data are gone). Figures are rendered once each (PNG at a modest dpi, the sample maps as inline SVG
so their worst-sample labels are links), in worker processes (forked from a clean fork server) where there are CPUs to spare
(:func:`draw_all`), written under ``out_dir/plots/`` and inlined in the page as data URIs. The page is a Jinja2 template with autoescaping on: every user string (class names,
file names, specs) is escaped; only the SVG that matplotlib wrote here is inserted as markup, and it
holds no user text (text is drawn as paths and comments are stripped).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from ..errors import ResultError
from ..metricspec import METRICS, summary_columns
from ..result import AuditResult, OrbitTable, SymmetryResult, raw_logit_key
from . import plots, pool
from .io import write_bytes_atomic, write_text_atomic

TEMPLATES = Path(__file__).parent / "templates"
PLOTS_DIR = "plots"
WORST_PLOTTED = 4  # individual orbit plots per (model, symmetry)
MAX_CLASSES = 20  # per-class small multiples beyond this are left out (and the page says so)
MAX_MAP_POINTS = 3000  # sample-map points drawn (worst samples always kept)
PNG_DPI = pool.PNG_DPI
MIN_SMALL_POINTS = 16  # the explorer's point clouds thin out to fit the budget, not below this many points
MIN_SMALL_SIDE = 12  # the explorer's thumbnails shrink to fit the budget, not below this many pixels a side
MAX_MOVED_ELEMENTS = 4096  # exact orbits up to this size carry the steps that move the explorer's thumbnails
EXPLORE_BUDGET = 12_000_000  # bytes of per-sample data (base64) the sample explorer embeds; beyond it a seeded subset
METRIC_ORDER = ["prob_tv", "flip_rate", "accuracy", "true_class_prob", "equivariance_error", "box_error", "iou",
                "mean_iou", "pixel_flip_rate", "epe", "center_error", "max_abs_error"]
NOT_METRICS = {"floor", "floor_flip_rate", "resolved", "element", "label", "null", "level", "level_ci", "extent"}
# (key, header, tooltip) from the metric registry (eqaudit.metricspec): the main metrics first, then level
# and floor, then the rarely needed columns, so that the key columns fit a laptop-width window without scrolling.
SUMMARY_COLUMNS = [(m.key, m.header, m.help or m.label) for m in [*summary_columns("main"), METRICS["level"], METRICS["floor"],
                                                                  *summary_columns("more")]]
SUMMARY_COLUMNS.append(("unresolved_elements", "unres.", "unresolved elements: elements whose metric is not clearly above the floor"))


def _shown(key: str, values: dict) -> bool:
    """Does the report draw or table ``key`` of a summary or per-element row? Not a classifier's raw-logit
    values, nor its logit_error (in the JSON and the terminal; one figure fewer per classifier symmetry)."""
    return key in values and not raw_logit_key(key, values) and not (key == "logit_error" and "prob_tv" in values)


_OWN_PLOT = re.compile(r"^[gs]\d+-.*\.(png|svg)$")


def write_report(result: AuditResult, out_dir: Path, source_dir: Path, *, workers: int | None = None) -> Path:
    """Render every plot to ``out_dir/plots/`` and the page to ``out_dir/report.html``; return its path.

    ``source_dir`` holds result.json's orbit table. Without it the page still renders the summary
    and the aggregate curves from ``per_element`` (no bands, per-class views or samples) and says so.
    ``workers``: processes drawing the figures (None: as many as pay off here, 1: this process only).
    """
    out_dir = Path(out_dir)
    try:
        orbits = result.load_orbits(Path(source_dir))
        missing = ""
    except ResultError as exc:
        orbits, missing = None, str(exc)
    builder = _Builder(result, orbits, out_dir)
    context = builder.build()
    builder.render_figures(workers)
    context["orbits_missing"] = missing
    html = _environment().get_template("report.html.j2").render(**context)
    path = out_dir / "report.html"
    write_text_atomic(path, html)
    builder.remove_stale_plots()
    return path


Recipe = pool.Recipe
draw_all = pool.draw_all  # figures in worker processes where that pays, taken from a scan's drawing ahead where it drew them


def figure_jobs(result: AuditResult, source_dir: Path) -> list[pool.Job]:
    """The figures a report of ``result`` (its orbit table in ``source_dir``) draws, as (recipe, kind, name)."""
    builder = _Builder(result, result.load_orbits(Path(source_dir)), Path(source_dir))
    builder.build()
    return [(recipe, kind, name) for recipe, kind, name, _ in builder.jobs]


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_number
    return env


def fmt_number(v: Any, digits: int = 3) -> str:
    """Table formatting: None -> an en dash, tiny values in scientific notation, ints as ints."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not np.isfinite(f):
        return "–"
    if f != 0 and abs(f) < 10 ** -digits:
        return f"{f:.1e}"
    return f"{f:.{digits}f}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "x"


def _css_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _model_name(path: str) -> str:
    return Path(path).name or path


@dataclass
class _Figure:
    file: str  # path relative to out_dir
    uri: str = ""  # data URI (PNG figures)
    svg: Markup | None = None  # inline SVG (sample maps)
    alt: str = ""


@dataclass
class _Builder:
    result: AuditResult
    orbits: dict[str, np.ndarray] | None
    out_dir: Path
    written: set[str] = field(default_factory=set)  # plot file names this render wrote
    models: list[dict[str, Any]] = field(default_factory=list)  # template rows of result.models
    jobs: list[tuple[Recipe, str, str, _Figure]] = field(default_factory=list)  # figures to draw

    # ------------------------------------------------------------------ helpers
    def _png(self, recipe: Recipe, name: str, alt: str) -> _Figure:
        """A PNG figure to draw (``recipe``: a plots function and its arguments); its file, data URI and
        bytes are filled in by :meth:`render_figures`."""
        f = _Figure(f"{PLOTS_DIR}/{name}.png", alt=alt)
        self.jobs.append((recipe, "png", name, f))
        return f

    def _svg(self, recipe: Recipe, name: str, alt: str) -> _Figure:
        f = _Figure(f"{PLOTS_DIR}/{name}.svg", alt=alt)
        self.jobs.append((recipe, "svg", name, f))
        return f

    def render_figures(self, workers: int | None = None) -> None:
        """Draw every figure :meth:`build` asked for (in parallel processes where that pays, see
        :func:`draw_all`), write each under plots/ and fill in what the page inlines."""
        drawn = draw_all([(recipe, kind, name) for recipe, kind, name, _ in self.jobs], workers)
        for (_, kind, name, f), data in zip(self.jobs, drawn):
            if kind == "png":
                write_bytes_atomic(self.out_dir / f.file, data, durable=False)
                f.uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            else:
                standalone = data.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" '
                                          'xmlns:xlink="http://www.w3.org/1999/xlink" ', 1)
                write_text_atomic(self.out_dir / f.file, standalone, durable=False)
                f.svg = Markup(data.replace("<svg ", f'<svg role="img" aria-label="{_attr(f.alt)}" ', 1))
            self.written.add(Path(f.file).name)
        self.jobs.clear()

    def remove_stale_plots(self) -> None:
        """Delete plot files an earlier render of this folder wrote and this one did not."""
        folder = self.out_dir / PLOTS_DIR
        if not folder.is_dir():
            return
        for p in folder.iterdir():
            if p.is_file() and _OWN_PLOT.match(p.name) and p.name not in self.written:
                p.unlink(missing_ok=True)

    def _table(self, j: int, key: str) -> np.ndarray | None:
        if self.orbits is None:
            return None
        return self.orbits.get(OrbitTable.key(j, key))

    def _class_name(self, c: int) -> str:
        classes = self.result.data.classes
        if classes and 0 <= c < len(classes):
            return str(classes[c])
        return str(c)

    # ------------------------------------------------------------------ context
    def build(self) -> dict[str, Any]:
        r = self.result
        models = [
            {
                "index": i,
                "name": _model_name(m.path),
                "path": m.path,
                "backend": m.backend,
                "format": m.format,
                "sha256": m.sha256,
                "sha_short": (m.sha256 or "")[:12],
                "output_kind": m.output_kind,
                "output_name": m.output_name,
                "color": plots.MODEL_COLORS[i % len(plots.MODEL_COLORS)],
                "notes": list(m.notes),
            }
            for i, m in enumerate(r.models)
        ]
        self.models = models
        metrics = self._metrics()
        groups = self._groups()
        rows = [self._summary_row(j, s, groups) for j, s in enumerate(r.symmetries)]
        timing = dict(r.timing)
        context = {
            "title": "eqaudit report: " + ", ".join(m["name"] for m in models),
            "result": r,
            "models": models,
            "metrics": [{"key": k, "id": _css_id(k), "label": plots.metric_info(k).label} for k in metrics],
            "summary_columns": [c for c in SUMMARY_COLUMNS if any(_shown(c[0], s.summary) for s in r.symmetries)],
            "has_extent": any(row["extent"] for row in rows),
            "rows": rows,
            "timing": timing,
            "settings_sources": sorted((r.settings or {}).get("sources", {}).items()),
            "settings_values": (r.settings or {}).get("values", {}),
            "n_gates": sum(len(s.gates) for s in r.symmetries),
            "n_failed": sum(1 for s in r.symmetries for g in s.gates if not g.passed),
            "classes": list(r.data.classes or []),
            "fingerprints": [(m, r.fingerprint(i)) for i, m in enumerate(models)],
        }
        context["groups"] = [self._group_context(gi, entries, metrics) for gi, entries in enumerate(groups)]
        context["explore"] = self._explore(groups)
        if context["explore"] is not None:
            # inlined in a <script> element: the file holds no "</" (tests/test_explore.py checks)
            context["explore"]["script"] = Markup((TEMPLATES / "explore.js").read_text(encoding="utf-8"))
        return context

    # ------------------------------------------------------------------ sample explorer
    def _explore(self, groups) -> dict[str, Any] | None:
        """The per-sample table the page's sample explorer draws from (see the template's script): per
        group of symmetry entries the main metric (float32), the predicted class and the floor per element and
        model, and the untransformed inputs small and 8-bit (``x_small``), all base64 in one JSON block. Larger
        than EXPLORE_BUDGET: a subset seeded by the result's seed, every worst sample in it, and a note."""
        o = self.orbits
        if o is None or "sample_index" not in o:
            return None
        n = int(len(o["sample_index"]))
        parts, worst, per_row = [], [], 0
        for gi, entries in enumerate(groups):
            traces = []
            for j, s in entries:
                t = self._profile_table(j, s)
                if t is None or t.shape[0] != n:
                    continue
                pred = self._table(j, "pred")
                pred = pred if pred is not None and pred.shape == t.shape else None
                floor = self._table(j, "floor")
                floor = floor if floor is not None and floor.shape == t.shape else None
                if floor is not None and s.exact and float(np.max(np.abs(floor), initial=0.0)) < 1e-9:
                    floor = None
                traces.append((j, s, t, pred, floor))
                per_row += t.shape[1] * (4 + (np.dtype(_class_dtype(pred)).itemsize if pred is not None else 0)
                                         + (2 if floor is not None else 0))
                w = self._table(j, "worst_index")
                if w is not None:
                    worst.extend(int(r) for r in w[:WORST_PLOTTED] if 0 <= r < n)
            if traces:
                parts.append((gi, entries[0][1], traces))
        if not parts:
            return None
        small = o.get(OrbitTable.SMALL_INPUTS)
        if small is not None and (small.ndim != 4 or small.shape[0] != n or small.dtype != np.uint8):
            small = None
        budget = EXPLORE_BUDGET * 3 // 4  # raw bytes (base64 writes 4 characters per 3)
        while small is not None and n * (per_row + small[0].size) > budget and max(small.shape[1:3]) > MIN_SMALL_SIDE:
            small = _halve(small)  # smaller thumbnails before fewer samples
        if small is not None:
            per_row += int(small[0].size)
        points = o.get(OrbitTable.SMALL_POINTS)
        if points is not None and (points.ndim != 3 or points.shape[0] != n or points.shape[2] != 3):
            points = None
        while points is not None and n * (per_row + points[0].size * 2) > budget and points.shape[1] > MIN_SMALL_POINTS:
            points = points[:, ::2]  # fewer points before fewer samples
        if points is not None:
            per_row += int(points[0].size) * 2
        table = OrbitTable(o)
        outputs = {}  # what box and flow models output on each untransformed input, per model
        for m in range(len(self.models)):
            for key, dtype, ndim in (("box", "<f4", 2), ("flow", "<f2", 4)):
                arr = table.sample_output(m, key)
                if arr is not None and arr.ndim == ndim and arr.shape[0] == n:
                    outputs[m] = (key, arr.astype(dtype), dtype)
                    per_row += int(arr[0].size) * np.dtype(dtype).itemsize
        cap = max(1, int(budget // max(per_row, 1)))
        note = ""
        if n <= cap:
            rows = np.arange(n)
        else:
            keep = np.unique(np.asarray(worst, dtype=np.int64))[:cap]
            rest = np.setdiff1d(np.arange(n), keep)
            fill = np.random.default_rng(self.result.seed).choice(rest, cap - keep.size, replace=False)
            rows = np.union1d(keep, fill)
            note = (f"Per-sample orbits are embedded for {rows.size} of {n} samples (a subset seeded with "
                    f"{self.result.seed} that holds every worst sample) to keep this page small; the other points "
                    "of the sample maps open no view.")
        labels = o.get("labels")
        data = {
            "n": n,
            "rows": rows.tolist() if rows.size < n else None,
            "sample_index": o["sample_index"][rows].astype(np.int64).tolist(),
            "labels": None if labels is None or labels.shape[0] != n else labels[rows].astype(np.int64).tolist(),
            "classes": [str(c) for c in self.result.data.classes] if self.result.data.classes else None,
            "models": [{"name": m["name"], "path": m["path"], "color": m["color"]} |
                       ({outputs[i][0]: {"shape": list(outputs[i][1].shape[1:]), "data": _b64(outputs[i][1][rows])}}
                        if i in outputs else {}) for i, m in enumerate(self.models)],
            "input_hw": [int(v) for v in self.result.data.sample_shape[-2:]] if len(self.result.data.sample_shape) >= 2 else None,
            "groups": [self._explore_group(gi, first, traces, rows, None if small is None else small.shape[1:3])
                       for gi, first, traces in parts],
            "small": None if small is None else {"shape": list(small.shape[1:]), "data": _b64(small[rows])},
            "points": None if points is None else {"shape": list(points.shape[1:]), "data": _b64(points[rows].astype("<f2"))},
            "note": note,
        }
        # JSON in a <script> block: no "<" (hence no "</script>") survives as such, strings stay JSON
        text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return {"json": Markup(text), "note": note}

    def _explore_group(self, gi: int, first: SymmetryResult, traces, rows: np.ndarray, small_hw) -> dict[str, Any]:
        orbit = plots.Orbit.from_symmetry(first).drawable()
        group: dict[str, Any] = {"index": gi, "spec": first.spec, "layout": orbit.layout, "labels": list(orbit.labels),
                                 "identity": orbit.identity_index, "metric": plots.metric_info(self._main_metric(first)).label,
                                 "axis": orbit.axis_label(0), "param": None, "cells": None, "traces": [],
                                 "moves": self._thumbnail_moves(first, small_hw), "kind": first.domain,
                                 "exact": first.exact}
        if first.domain == "points" and traces:
            group["moves"] = self._point_moves(traces[0][0], len(first.elements))
        if orbit.layout in ("polar", "line"):
            group["param"] = orbit.elements[:, 0].tolist()
        elif orbit.layout == "grid2d":
            xs, ys, index = plots.grid_cells(orbit.elements)
            group["cells"] = {"shape": list(index.shape), "index": index.reshape(-1).tolist(),  # as the static heatmaps: first y on top
                              "x": [orbit.axis_label(0), float(xs[0]), float(xs[-1])],
                              "y": [orbit.axis_label(1), float(ys[0]), float(ys[-1])]}
        elif orbit.layout == "finite":
            index = plots.finite_cells(orbit)
            group["cells"] = {"shape": list(index.shape), "index": index.reshape(-1).tolist()}
        elif orbit.layout == "axis-angle":  # 3-D rotations at their rotation vectors, as the static plots draw them
            xy, up, improper = plots.axis_angle_points(orbit.elements)
            group["discs"] = {"xy": np.round(xy, 5).tolist(), "up": up.tolist(), "improper": improper.tolist()}
        else:  # a layout the plots do not know: drawn over the element index
            group["layout"], group["param"], group["axis"] = "line", list(range(orbit.n)), "element"
        for j, s, t, pred, floor in traces:
            group["traces"].append({
                "j": j, "model": s.model,
                "values": _b64(t[rows].astype("<f4")),
                "pred": None if pred is None else _b64(pred[rows].astype(_class_dtype(pred))),
                "pred_type": None if pred is None else _class_dtype(pred),
                "floor": None if floor is None else _b64(floor[rows].astype("<f2")),  # a reference line: half precision
            })
        return group

    def _thumbnail_moves(self, s: SymmetryResult, small_hw) -> list | None:
        """Per element the pixel steps that move the explorer's thumbnail as ``s`` moves the input
        (eqaudit.report.moves, approximate for resampled ones); None for inputs other than images."""
        from .moves import element_steps

        full = self.result.data.sample_shape or (self.result.models[0].input_shape if self.result.models else [])
        if small_hw is None or s.domain != "image" or len(full) < 2 or len(s.elements) > MAX_MOVED_ELEMENTS:
            return None
        return element_steps(s.spec, s.elements, (int(full[-2]), int(full[-1])), (int(small_hw[0]), int(small_hw[1])))

    def _point_moves(self, j: int, n_elements: int) -> list | None:
        """Per element of point symmetry ``j`` its action on coordinates as 12 numbers (the 3x3 matrix row by
        row, then the shift), read from the orbit table; None when the scan did not store it."""
        m, t = self._table(j, "point_matrix"), self._table(j, "point_shift")
        if m is None or t is None or m.shape != (n_elements, 3, 3) or t.shape != (n_elements, 3) or n_elements > MAX_MOVED_ELEMENTS:
            return None
        both = np.concatenate([m.reshape(n_elements, 9), t], axis=1).astype(np.float64)
        return [[float(f"{v:.6g}") for v in row] for row in both]

    def _metrics(self) -> list[str]:
        keys: list[str] = []
        for s in self.result.symmetries:
            for row in s.per_element:
                for k, v in row.items():
                    if (k not in NOT_METRICS and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool)
                            and _shown(k, row)):
                        keys.append(k)
        ordered = [k for k in METRIC_ORDER if k in keys] + [k for k in keys if k not in METRIC_ORDER]
        return ordered

    def _groups(self) -> list[list[tuple[int, SymmetryResult]]]:
        """Symmetry entries grouped by spec and elements (one group per symmetry, one entry per model)."""
        groups: dict[tuple, list[tuple[int, SymmetryResult]]] = {}
        for j, s in enumerate(self.result.symmetries):
            key = (s.spec, s.layout, tuple(tuple(float(v) for v in e) for e in s.elements))
            groups.setdefault(key, []).append((j, s))
        return list(groups.values())

    def _summary_row(self, j: int, s: SymmetryResult, groups) -> dict[str, Any]:
        gi = next(i for i, g in enumerate(groups) if any(jj == j for jj, _ in g))
        m = self.models[s.model] if s.model < len(self.models) else {"name": f"model {s.model}", "color": "#333", "index": s.model}
        # small finite groups: one sub-row per non-identity element, carrying that element's gates
        listed = {e: str(s.per_element[e].get("label", e)) for e in s.listed_elements()}
        return {
            "j": j,
            "model": m,
            "spec": s.spec,
            "exact": s.exact,
            "anchor": f"sym-{gi}",
            "summary": s.summary,
            "gates": s.gates,
            "passed": s.passed,
            "own_gates": [g for g in s.gates if g.element is None or g.element not in listed.values()],  # beside its elements
            "elements": [
                {"label": label, "summary": s.per_element[e], "level_note": "", "level_ci": "", "extent": "",
                 "gates": [g for g in s.gates if g.element == label]}
                for e, label in listed.items()
            ],
            "floor_flip_rate": s.summary.get("floor_flip_rate"),
            "extent": _extent_text(s.summary.get("extent")),
            "level_note": _level_note(s.summary),
            "level_ci": _level_ci(s.summary),
        }

    def _main_metric(self, s: SymmetryResult) -> str:
        """The task's main per-sample metric (worst-sample ranking, floor, sample map), as the result
        records it; for results written before it did, the first of METRIC_ORDER the entry has."""
        if s.main_metric:
            return s.main_metric
        keys = [k for k in METRIC_ORDER if s.per_element and k in s.per_element[0]]
        return keys[0] if keys else "prob_tv"

    def _group_context(self, gi: int, entries: list[tuple[int, SymmetryResult]], metrics: list[str]) -> dict[str, Any]:
        first = entries[0][1]
        orbit = plots.Orbit.from_symmetry(first)
        slug = f"g{gi}-{_slug(first.spec)}"
        ctx: dict[str, Any] = {
            "index": gi,
            "anchor": f"sym-{gi}",
            "spec": first.spec,
            "name": first.name,
            "exact": first.exact,
            "layout": first.layout if first.layout in plots.LAYOUTS else f"{first.layout} (drawn over the element index)",
            "curves": orbit.drawable().layout in ("polar", "line"),
            "n_elements": orbit.n,
            "params": ", ".join(
                f"{n} ({u})" if u else n for n, u in zip(first.param_names, list(first.units) + [""] * len(first.param_names))
            ),
            "rows": [],
            "aggregate": [],
            "classes": [],
            "classes_note": "",
            "entries": [],
            "main_label": plots.metric_info(self._main_metric(first)).label,
            "ranked_by_flips": any(self._table(j, "flipped") is not None for j, _ in entries),
        }
        for metric in metrics:
            series = [self._aggregate_series(j, s, metric) for j, s in entries]
            series = [x for x in series if x is not None]
            if not series:
                continue
            info = plots.metric_info(metric)
            f = self._png((plots.orbit_figure, (orbit, series, metric), {}), f"{slug}-aggregate-{_slug(metric)}", f"{first.spec}: {info.label} over the orbit")
            ctx["aggregate"].append({"metric": metric, "id": _css_id(metric), "label": info.label, "fig": f,
                                     "band": self._band_text(info, series), "floor": any(x.floor is not None for x in series)})
        labels = None if self.orbits is None else self.orbits.get("labels")
        if labels is not None and labels.size:
            present = np.unique(labels.astype(np.int64))
            shown = present[:MAX_CLASSES]
            if present.size > MAX_CLASSES:
                ctx["classes_note"] = f"The first {MAX_CLASSES} of {present.size} classes are shown."
            for metric in metrics:
                info = plots.metric_info(metric)
                reduce = np.max if info.reduce == "max" else np.mean
                per_class, counts = [], []
                for c in shown:
                    rows = labels == c
                    counts.append(int(rows.sum()))
                    group = []
                    for j, s in entries:
                        t = self._table(j, info.table_key)
                        if t is None or t.ndim != 2 or t.shape[0] != rows.shape[0]:
                            continue
                        group.append(plots.Series(self.models[s.model]["name"], self.models[s.model]["color"],
                                                  reduce(t[rows].astype(np.float64), axis=0)))
                    per_class.append(group)
                if not all(per_class):
                    continue
                recipe = (plots.class_grid_figure, (orbit, [self._class_name(int(c)) for c in shown], counts, per_class, metric), {})
                f = self._png(recipe, f"{slug}-classes-{_slug(metric)}", f"{first.spec}: {info.label} per class")
                ctx["classes"].append({"metric": metric, "id": _css_id(metric), "label": info.label, "fig": f})
        ctx["rows"] = [self._summary_row(j, s, [entries]) | {"anchor": ctx["anchor"]} for j, s in entries]
        map_max = self._map_vmax(entries)
        for j, s in entries:
            ctx["entries"].append(self._entry_context(j, s, orbit, map_max))
        ctx["embedding"] = [e for e in (self._embedding_context(j, s, slug) for j, s in entries) if e is not None]
        return ctx

    def _embedding_context(self, j: int, s: SymmetryResult, slug: str) -> dict[str, Any] | None:
        """The fitted maps of an ``--output embedding`` entry (heatmaps for small D, spectra), or None."""
        from .embedding import embedding_figure, error_text

        sv, err = self._table(j, "embedding_singular_values"), self._table(j, "embedding_error")
        if sv is None or err is None:
            return None
        m = self.models[s.model]
        maps = self._table(j, "embedding_maps")
        recipe = (embedding_figure, (maps, sv, list(s.labels), s.identity_index, err[0]), {})
        fig = self._png(recipe, f"{slug}-embedding-m{s.model}", f"{s.spec}: fitted maps of {m['name']}")
        sm = s.summary
        return {"model": m, "fig": fig, "maps": maps is not None, "worst": sm.get("worst_element"),
                "worst_error": error_text(sm.get("max_equivariance_error")), "defect": sm.get("representation_defect"),
                "dim": sm.get("embedding_dim")}

    @staticmethod
    def _band_text(info: plots.MetricInfo, series=()) -> str:
        if not any(s.lo is not None for s in series):
            return ""
        return "95% interval of the rate" if info.binary else "10th–90th percentile over samples"

    def _aggregate_series(self, j: int, s: SymmetryResult, metric: str) -> plots.Series | None:
        """One model's curve of ``metric``: the result's per-element values (authoritative), with the
        spread band and the floor from the orbit table where it has them."""
        info = plots.metric_info(metric)
        m = self.models[s.model]
        values = [row.get(metric) for row in s.per_element]
        table = self._table(j, info.table_key)
        if table is not None and (table.ndim != 2 or table.shape[0] == 0 or table.shape[1] != len(s.elements)):
            table = None
        if values and all(isinstance(v, (int, float)) for v in values):
            vals = np.array(values, dtype=np.float64)
        elif table is not None:
            vals = table.astype(np.float64).max(0) if info.reduce == "max" else table.astype(np.float64).mean(0)
        else:
            return None
        lo = hi = None
        binary = info.binary or (table is not None and table.dtype == bool)
        if table is not None and info.reduce == "mean":
            _, lo, hi = plots.element_stats(table, binary)
        floor = None
        floor_key = info.floor_key if info.floor_key != "floor" or metric == self._main_metric(s) else None
        floor_t = self._table(j, floor_key) if floor_key else None
        if floor_t is not None and floor_t.shape == (table.shape if table is not None else floor_t.shape):
            rows = floor_t.astype(np.float64)
            measured = ~np.isnan(rows).all(1)  # the floor is measured on a seeded subset of samples (NaN elsewhere)
            floor = rows[measured].mean(0) if measured.any() else None
        elif metric == self._main_metric(s) and all(isinstance(row.get("floor"), (int, float)) for row in s.per_element):
            floor = np.array([row["floor"] for row in s.per_element], dtype=np.float64)
        elif metric == "flip_rate" and all(isinstance(row.get("floor_flip_rate"), (int, float)) for row in s.per_element):
            floor = np.array([row["floor_flip_rate"] for row in s.per_element], dtype=np.float64)
        if floor is not None and s.exact and float(np.max(np.abs(floor))) < 1e-9:
            floor = None  # an exact action's floor is zero: nothing to draw
        open_ = np.array([row.get("resolved") is False for row in s.per_element]) if s.per_element else None
        band = "95% interval of the rate" if binary else "10th–90th percentile over samples"
        return plots.Series(m["name"], m["color"], vals, lo, hi, floor, open_, band_label=band if lo is not None else "")

    def _profile_table(self, j: int, s: SymmetryResult) -> np.ndarray | None:
        t = self._table(j, plots.metric_info(self._main_metric(s)).table_key)
        if t is None or t.ndim != 2 or t.shape[0] == 0 or t.shape[1] != len(s.elements):
            return None
        return t.astype(np.float64)

    def _map_vmax(self, entries) -> float:
        vmax = 0.0
        for j, s in entries:
            t = self._profile_table(j, s)
            if t is not None:
                vmax = max(vmax, float(np.nanmax(_orbit_profile(t, s.identity_index).mean(1))))
        return vmax

    def _entry_context(self, j: int, s: SymmetryResult, orbit: plots.Orbit, map_max: float) -> dict[str, Any]:
        m = self.models[s.model]
        slug = f"s{j}-{_slug(s.spec)}-m{s.model}"
        ctx: dict[str, Any] = {"j": j, "model": m, "map": None, "worst": [], "map_note": "", "map_rows": ""}
        table = self._profile_table(j, s)
        worst = self._table(j, "worst_index")
        if table is None:
            return ctx
        worst = np.zeros(0, np.int64) if worst is None else worst.astype(np.int64)[:WORST_PLOTTED]
        worst = worst[(worst >= 0) & (worst < table.shape[0])]
        anchors = [f"s{j}-worst-{r + 1}" for r in range(len(worst))]
        # sample map
        main = plots.metric_info(self._main_metric(s))
        profile = _orbit_profile(table, s.identity_index)
        coords, explained = plots.pca_2d(profile)
        mean = profile.mean(1)
        keep = _map_rows(mean, worst, MAX_MAP_POINTS)
        pos = {int(row): i for i, row in enumerate(keep)}
        marks = [(pos[int(row)], f"#{r + 1}", "#" + anchors[r]) for r, row in enumerate(worst) if int(row) in pos]
        recipe = (plots.sample_map_figure, (coords[keep], mean[keep], marks),
                  dict(colour_label=f"orbit mean {main.label}", explained=explained, vmax=map_max))
        ctx["map"] = self._svg(recipe, f"{slug}-map", f"sample map of {m['name']} under {s.spec}")
        # the map's points in the order matplotlib drew them (see plots.sample_map_figure): the page's
        # sample explorer makes each one a button for its row of the orbit table
        ctx["map_rows"] = " ".join(str(int(r)) for r in keep[np.argsort(mean[keep], kind="stable")])
        if keep.size < mean.size:
            ctx["map_note"] = f"{keep.size} of {mean.size} samples drawn."
        # worst samples
        xs = self._table(j, "worst_x")
        for r, row in enumerate(worst):
            ctx["worst"].append(self._worst_context(j, s, orbit, r, int(row), xs, anchors[r], slug, table[row]))
        return ctx

    def _row_of(self, j: int, key: str, row: int, dtype) -> np.ndarray | None:
        t = self._table(j, key)
        if t is None or t.ndim != 2 or row >= t.shape[0]:
            return None
        return t[row].astype(dtype)

    def _worst_context(self, j, s: SymmetryResult, orbit: plots.Orbit, r: int, row: int, xs, anchor: str, slug: str,
                       values: np.ndarray):
        m = self.models[s.model]
        main = self._main_metric(s)
        info = plots.metric_info(main)
        pred = self._row_of(j, "pred", row, np.int64)
        flipped = self._row_of(j, "flipped", row, bool)
        tcp = self._row_of(j, "true_class_prob", row, np.float64)
        floor = self._row_of(j, "floor", row, np.float64)
        if floor is not None and (np.isnan(floor).all() or (s.exact and float(np.nanmax(np.abs(floor))) < 1e-9)):
            floor = None  # not in the floor subset, or an exact action's zero floor: nothing to draw
        labels = self.orbits.get("labels")
        label = None if labels is None else int(labels[row])
        sample_index = int(self.orbits["sample_index"][row]) if "sample_index" in self.orbits else row
        series = [plots.Series(info.label, m["color"], values, floor=floor)]
        if tcp is not None:
            series.append(plots.Series("true-class prob.", "#555555", tcp))
        ref = int(pred[s.identity_index]) if pred is not None else None
        tile_texts = None
        drawn = orbit.drawable()
        if pred is not None and drawn.layout in ("grid2d", "finite"):
            index = plots.finite_cells(drawn) if drawn.layout == "finite" else plots.grid_cells(drawn.elements)[2]
            if index.size <= 81:
                names = [plots.plain_text(self._class_name(int(p)), 14) for p in pred]  # cut to each tile by plots
                if drawn.layout == "grid2d":
                    tile_texts = [f"{n}\n{v:.2f}" if index.size <= 49 else n for n, v in zip(names, values)]
                else:
                    tile_texts = [f"{plots.plain_text(drawn.labels[e], 10)}\n→{names[e]}\n{values[e]:.2f}"
                                  for e in range(drawn.n)]
        thumbs = self._thumbs(j, r, xs, pred, label, ref)
        title = f"#{r + 1}  sample {sample_index}"
        if label is not None:
            title += f"  (true: {self._class_name(label)})"
        recipe = (plots.sample_figure, (orbit, series, main, thumbs), dict(title=title, tile_texts=tile_texts, flags=flipped))
        f = self._png(recipe, f"{slug}-worst{r + 1}", f"orbit of sample {sample_index} under {s.spec}")
        non_id = np.arange(orbit.n) != orbit.identity_index
        worst_e = int(np.argmax(np.where(non_id, values, -np.inf))) if non_id.any() else orbit.identity_index
        atoms = self._point_error_fig(j, s, r, sample_index, slug)
        return {
            "atoms_fig": atoms,
            "rank": r + 1,
            "anchor": anchor,
            "sample_index": sample_index,
            "label": None if label is None else self._class_name(label),
            "clean_pred": None if ref is None else self._class_name(ref),
            "metric_label": info.label,
            "mean": float(values[non_id].mean()) if non_id.any() else float(values.mean()),
            "flips": None if flipped is None else int(flipped[non_id].sum()),
            "n_other": int(non_id.sum()),
            "worst_element": orbit.labels[worst_e] if worst_e < len(orbit.labels) else str(worst_e),
            "worst_pred": None if pred is None else self._class_name(int(pred[worst_e])),
            "fig": f,
        }

    def _point_error_fig(self, j: int, s: SymmetryResult, r: int, sample_index: int, slug: str) -> _Figure | None:
        """Error bars per atom of worst sample ``r`` (``worst_point_error``: per-point vector outputs such as
        forces, stored for the worst samples only), real atoms only; None when the scan stored none."""
        errors, masks = self._table(j, "worst_point_error"), self._table(j, "worst_mask")
        if errors is None or r >= len(errors) or errors.ndim != 3:
            return None
        real = masks[r] if masks is not None and r < len(masks) and masks[r].shape == errors.shape[2:] else None
        name = self._table(j, "worst_point_output")
        label = f"{str(name) + ' ' if name is not None and str(name) else ''}error per atom"
        recipe = (plots.point_error_figure, (errors[r], s.identity_index, real, label), {})
        return self._png(recipe, f"{slug}-atoms{r + 1}", f"error per atom of sample {sample_index} under {s.spec}")

    def _thumbs(self, j: int, r: int, xs, pred, label, ref) -> list[plots.Thumb]:
        """Thumbnails of worst sample ``r``: the transformed inputs the scan stored (``s{j}.thumb_x``),
        on the untransformed input's intensity scale; none for results written without them."""
        index, images = self._table(j, "thumb_elements"), self._table(j, "thumb_x")
        if xs is None or index is None or images is None or r >= min(len(xs), len(index), len(images)):
            return []
        orbit_labels = self.result.symmetries[j].labels
        x = np.asarray(xs[r])
        if self.result.symmetries[j].domain == "points":
            masks = self._table(j, "worst_mask")
            real = masks[r] if masks is not None and r < len(masks) and masks[r].shape == x.shape[:1] else None
            return self._point_thumbs(x, index[r], images[r], orbit_labels, real)
        lo, hi = float(np.min(x)), float(np.max(x))
        outputs = {key: self._table(j, f"thumb_{key}") for key in ("box", "flow", "map")}  # what box, flow, map models output
        outputs = {k: v[r] for k, v in outputs.items() if v is not None and v.ndim >= 3 and r < v.shape[0] and v.shape[1] == index.shape[1]}
        thumbs = []
        for t, (e, img) in enumerate(zip(index[r].tolist(), images[r])):
            if e < 0 or e >= len(orbit_labels):
                continue
            if pred is None:
                caption, ok = "", True
            else:
                p = int(pred[e])
                caption = "→ " + self._class_name(p)
                target = label if label is not None else ref
                ok = target is None or p == int(target)
            thumbs.append(plots.Thumb(plots.thumbnail(img, lo, hi), orbit_labels[e], caption, ok,
                                      box=outputs["box"][t].tolist() if "box" in outputs else None,
                                      arrows=outputs["flow"][t] if "flow" in outputs else None,
                                      overlay=outputs["map"][t] if "map" in outputs else None))
        return thumbs


    def _point_thumbs(self, x: np.ndarray, index: np.ndarray, moved: np.ndarray, labels: list[str],
                      real: np.ndarray | None = None) -> list[plots.Thumb]:
        """Thumbnails of a point structure x (P, 3) as the scan stored it moved by the elements with the
        largest error (``moved`` (T, P, 3)), drawn as depth-shaded 3-D scatters in one frame, so shifts
        show as moves (eqaudit.report.structures); ``real`` (P,) bool: padded atoms (False) are neither
        drawn nor framed."""
        from .structures import frame_of, structure_image

        keep = [(int(e), m) for e, m in zip(index.tolist(), moved) if 0 <= e < len(labels)]
        if x.ndim != 2 or x.shape[-1] != 3 or not keep:
            return []
        if real is not None:
            x, keep = x[real], [(e, m[real]) for e, m in keep]
        centre, half = frame_of(np.concatenate([x[None], np.stack([m for _, m in keep])]))
        return [plots.Thumb(structure_image(m, centre, half), labels[e], "", True) for e, m in keep]


def _extent_text(ext: Any) -> str | None:
    """'-30 … 45 deg', 'whole orbit' or 'none within tolerance' (see eqaudit.report.words)."""
    from .words import extent_text

    return extent_text(ext)


def _level_note(summary: dict) -> str:
    """The level's confidence interval or, when it could not be determined, its status and why."""
    from .words import level_reason

    reason = level_reason(summary)
    if reason is not None:
        return reason
    ci = summary.get("level_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return f"95% CI {ci[0]:.3f}–{ci[1]:.3f}"
    return ""


def _level_ci(summary: dict) -> str:
    """The level's 95% confidence interval as the summary cell shows it beside the level ('0.58–1.00'), or ''."""
    ci = summary.get("level_ci")
    if summary.get("level") is None or not (isinstance(ci, (list, tuple)) and len(ci) == 2
                                            and all(isinstance(v, (int, float)) for v in ci)):
        return ""
    return f"{ci[0]:.2f}–{ci[1]:.2f}"


def _class_dtype(pred: np.ndarray) -> str:
    """The smallest little-endian integer type that holds every predicted class in ``pred``."""
    lo, hi = (int(pred.min()), int(pred.max())) if pred.size else (0, 0)
    return "u1" if lo >= 0 and hi < 256 else "<i2" if -32768 <= lo and hi < 32768 else "<i4"


def _halve(small: np.ndarray) -> np.ndarray:
    """8-bit thumbnails (N, h, w, c) at half the resolution (box means)."""
    from .thumbs import box_means

    x = small.astype(np.float32)
    x = box_means(box_means(x, 1, max(1, x.shape[1] // 2)), 2, max(1, x.shape[2] // 2))
    return np.round(x).astype(np.uint8)


def _b64(a: np.ndarray) -> str:
    """An array's bytes (C order, its own little-endian dtype) as base64 text for the page's JSON."""
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _attr(text: str) -> str:
    return (str(text).replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;"))


def _orbit_profile(tv: np.ndarray, identity_index: int) -> np.ndarray:
    """Per-sample metric over the non-identity elements: (N, E) -> (N, E - 1) (all E when E == 1)."""
    tv = np.asarray(tv, dtype=np.float64)
    if tv.shape[1] > 1:
        return np.delete(tv, identity_index, axis=1)
    return tv


def _map_rows(mean: np.ndarray, worst: np.ndarray, limit: int) -> np.ndarray:
    """Rows drawn on the sample map: all when few, else an even subsample plus every worst row."""
    n = mean.shape[0]
    if n <= limit:
        return np.arange(n)
    step = int(np.ceil(n / limit))
    return np.union1d(np.arange(0, n, step), worst)


class HtmlReporter:
    """The html reporter: report.html and plots/ beside result.json (drawn from the saved orbit table)."""

    name = "html"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers

    def write(self, outcome):
        from .base import Written

        return Written([write_report(outcome.result, outcome.out_dir, outcome.out_dir, workers=self.workers)])
