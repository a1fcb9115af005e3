"""Build the self-contained report.html and the plots/ files from a saved result and its orbit table.

Reads nothing but the ``AuditResult`` and ``orbits.npz`` (so ``eqaudit report`` works after model and
data are gone). Figures are rendered once each (PNG at a modest dpi, the sample maps as inline SVG
so their worst-sample labels are links), written under ``out_dir/plots/`` and inlined in the page
as data URIs. The page is a Jinja2 template with autoescaping on: every user string (class names,
file names, specs) is escaped; only the SVG that matplotlib wrote here is inserted as markup, and it
holds no user text (text is drawn as paths and comments are stripped).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from ..errors import ResultError
from ..result import AuditResult, SymmetryResult
from . import plots
from .io import write_bytes_atomic, write_text_atomic

TEMPLATES = Path(__file__).parent / "templates"
PLOTS_DIR = "plots"
WORST_PLOTTED = 4  # individual orbit plots per (model, symmetry)
MAX_CLASSES = 20  # per-class small multiples beyond this are left out (and the page says so)
MAX_MAP_POINTS = 3000  # sample-map points drawn (worst samples always kept)
MAX_THUMBS = 6
PNG_DPI = 96
METRIC_ORDER = ["prob_tv", "flip_rate", "accuracy", "true_class_prob", "equivariance_error", "max_abs_error"]
NOT_METRICS = {"floor", "floor_flip_rate", "resolved", "element", "label", "null", "level", "level_ci", "extent"}
SUMMARY_COLUMNS = [
    ("flip_rate", "flip rate"),
    ("prob_tv", "prob. shift"),
    ("accuracy", "accuracy"),
    ("worst_case_accuracy", "worst-case acc."),
    ("true_class_prob", "true-class prob."),
    ("clean_accuracy", "clean acc."),
    ("equivariance_error", "equiv. error"),
    ("floor", "floor"),
    ("unresolved_elements", "unresolved"),
]
_OWN_PLOT = re.compile(r"^[gs]\d+-.*\.(png|svg)$")


def write_report(result: AuditResult, out_dir: Path, source_dir: Path) -> Path:
    """Render every plot to ``out_dir/plots/`` and the page to ``out_dir/report.html``; return its path.

    ``source_dir`` holds result.json's orbit table. Without it the page still renders the summary
    and the aggregate curves from ``per_element`` (no bands, per-class views or samples) and says so.
    """
    out_dir = Path(out_dir)
    try:
        orbits = result.load_orbits(Path(source_dir))
        missing = ""
    except ResultError as exc:
        orbits, missing = None, str(exc)
    builder = _Builder(result, orbits, out_dir)
    context = builder.build()
    context["orbits_missing"] = missing
    html = _environment().get_template("report.html.j2").render(**context)
    path = out_dir / "report.html"
    write_text_atomic(path, html)
    builder.remove_stale_plots()
    return path


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
    written: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ helpers
    def _save_png(self, fig, name: str, alt: str) -> _Figure:
        data = plots.to_png(fig, dpi=PNG_DPI)
        rel = f"{PLOTS_DIR}/{name}.png"
        write_bytes_atomic(self.out_dir / rel, data)
        self.written.add(Path(rel).name)
        return _Figure(rel, "data:image/png;base64," + base64.b64encode(data).decode("ascii"), alt=alt)

    def _save_svg(self, fig, name: str, alt: str) -> _Figure:
        svg = plots.to_svg(fig, salt=name)
        rel = f"{PLOTS_DIR}/{name}.svg"
        standalone = svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" '
                                 'xmlns:xlink="http://www.w3.org/1999/xlink" ', 1)
        write_text_atomic(self.out_dir / rel, standalone)
        self.written.add(Path(rel).name)
        svg = svg.replace("<svg ", f'<svg role="img" aria-label="{_attr(alt)}" ', 1)
        return _Figure(rel, svg=Markup(svg), alt=alt)

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
        return self.orbits.get(f"s{j}.{key}")

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
            "summary_columns": [(k, lab) for k, lab in SUMMARY_COLUMNS if any(k in s.summary for s in r.symmetries)],
            "rows": rows,
            "timing": timing,
            "settings_sources": sorted((r.settings or {}).get("sources", {}).items()),
            "settings_values": (r.settings or {}).get("values", {}),
            "n_gates": sum(len(s.gates) for s in r.symmetries),
            "n_failed": sum(1 for s in r.symmetries for g in s.gates if not g.passed),
            "classes": list(r.data.classes or []),
        }
        context["groups"] = [self._group_context(gi, entries, metrics) for gi, entries in enumerate(groups)]
        return context

    def _metrics(self) -> list[str]:
        keys: list[str] = []
        for s in self.result.symmetries:
            for row in s.per_element:
                for k, v in row.items():
                    if k not in NOT_METRICS and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                        keys.append(k)
        ordered = [k for k in METRIC_ORDER if k in keys] + [k for k in keys if k not in METRIC_ORDER]
        return ordered

    def _groups(self) -> list[list[tuple[int, SymmetryResult]]]:
        """Symmetry entries grouped by spec (one group per symmetry, one entry per model)."""
        groups: dict[str, list[tuple[int, SymmetryResult]]] = {}
        for j, s in enumerate(self.result.symmetries):
            groups.setdefault(s.spec, []).append((j, s))
        return list(groups.values())

    def _summary_row(self, j: int, s: SymmetryResult, groups) -> dict[str, Any]:
        gi = next(i for i, g in enumerate(groups) if any(jj == j for jj, _ in g))
        m = self.models[s.model] if s.model < len(self.models) else {"name": f"model {s.model}", "color": "#333", "index": s.model}
        return {
            "j": j,
            "model": m,
            "spec": s.spec,
            "exact": s.exact,
            "anchor": f"sym-{gi}",
            "summary": s.summary,
            "gates": s.gates,
            "passed": s.passed,
            "floor_flip_rate": s.summary.get("floor_flip_rate"),
        }

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
            "layout": first.layout,
            "n_elements": orbit.n,
            "params": ", ".join(
                f"{n} ({u})" if u else n for n, u in zip(first.param_names, list(first.units) + [""] * len(first.param_names))
            ),
            "rows": [],
            "aggregate": [],
            "classes": [],
            "classes_note": "",
            "entries": [],
        }
        for metric in metrics:
            series = [self._aggregate_series(j, s, metric) for j, s in entries]
            series = [x for x in series if x is not None]
            if not series:
                continue
            fig = plots.orbit_figure(orbit, series, metric)
            info = plots.metric_info(metric)
            f = self._save_png(fig, f"{slug}-aggregate-{_slug(metric)}", f"{first.spec}: {info.label} over the orbit")
            ctx["aggregate"].append({"metric": metric, "id": _css_id(metric), "label": info.label, "fig": f,
                                     "band": self._band_text(info), "floor": not first.exact and info.floor_key is not None})
        labels = None if self.orbits is None else self.orbits.get("labels")
        if labels is not None and labels.size:
            present = np.unique(labels.astype(np.int64))
            shown = present[:MAX_CLASSES]
            if present.size > MAX_CLASSES:
                ctx["classes_note"] = f"The first {MAX_CLASSES} of {present.size} classes are shown."
            for metric in metrics:
                info = plots.metric_info(metric)
                per_class, counts = [], []
                for c in shown:
                    rows = labels == c
                    counts.append(int(rows.sum()))
                    group = []
                    for j, s in entries:
                        t = self._table(j, info.table_key)
                        if t is None:
                            continue
                        group.append(plots.Series(self.models[s.model]["name"], self.models[s.model]["color"],
                                                  t[rows].astype(np.float64).mean(0)))
                    per_class.append(group)
                if not any(per_class):
                    continue
                fig = plots.class_grid_figure(orbit, [self._class_name(int(c)) for c in shown], counts, per_class, metric)
                f = self._save_png(fig, f"{slug}-classes-{_slug(metric)}", f"{first.spec}: {info.label} per class")
                ctx["classes"].append({"metric": metric, "id": _css_id(metric), "label": info.label, "fig": f})
        ctx["rows"] = [self._summary_row(j, s, [entries]) | {"anchor": ctx["anchor"]} for j, s in entries]
        map_max = self._map_vmax(entries)
        for j, s in entries:
            ctx["entries"].append(self._entry_context(j, s, orbit, map_max))
        return ctx

    @staticmethod
    def _band_text(info: plots.MetricInfo) -> str:
        return "95% interval of the rate" if info.binary else "10th–90th percentile over samples"

    def _aggregate_series(self, j: int, s: SymmetryResult, metric: str) -> plots.Series | None:
        info = plots.metric_info(metric)
        m = self.models[s.model]
        table = self._table(j, info.table_key)
        open_ = np.array([row.get("resolved") is False for row in s.per_element]) if s.per_element else None
        if table is not None and table.ndim == 2 and table.shape[0] > 0:
            mean, lo, hi = plots.element_stats(table, info.binary)
            floor_t = self._table(j, info.floor_key) if (info.floor_key and not s.exact) else None
            floor = None if floor_t is None else floor_t.astype(np.float64).mean(0)
            return plots.Series(m["name"], m["color"], mean, lo, hi, floor, open_, band_label=self._band_text(info))
        values = [row.get(metric) for row in s.per_element]
        if not values or any(v is None for v in values):
            return None
        floor = None
        floor_key = {"prob_tv": "floor", "flip_rate": "floor_flip_rate"}.get(metric)
        if floor_key and not s.exact and all(row.get(floor_key) is not None for row in s.per_element):
            floor = np.array([row[floor_key] for row in s.per_element], dtype=np.float64)
        return plots.Series(m["name"], m["color"], np.array(values, dtype=np.float64), floor=floor, open=open_)

    def _map_vmax(self, entries) -> float:
        vmax = 0.0
        for j, s in entries:
            tv = self._table(j, "prob_tv")
            if tv is not None and tv.size:
                vmax = max(vmax, float(_orbit_profile(tv, s.identity_index).mean(1).max()))
        return vmax

    def _entry_context(self, j: int, s: SymmetryResult, orbit: plots.Orbit, map_max: float) -> dict[str, Any]:
        m = self.models[s.model]
        slug = f"s{j}-{_slug(s.spec)}-m{s.model}"
        ctx: dict[str, Any] = {"j": j, "model": m, "map": None, "worst": [], "map_note": ""}
        tv = self._table(j, "prob_tv")
        worst = self._table(j, "worst_index")
        if tv is None or tv.ndim != 2 or tv.shape[0] == 0:
            return ctx
        worst = np.zeros(0, np.int64) if worst is None else worst.astype(np.int64)[:WORST_PLOTTED]
        anchors = [f"s{j}-worst-{r + 1}" for r in range(len(worst))]
        # sample map
        profile = _orbit_profile(tv, s.identity_index)
        coords, explained = plots.pca_2d(profile)
        mean = profile.mean(1)
        keep = _map_rows(mean, worst, MAX_MAP_POINTS)
        pos = {int(row): i for i, row in enumerate(keep)}
        marks = [(pos[int(row)], f"#{r + 1}", "#" + anchors[r]) for r, row in enumerate(worst) if int(row) in pos]
        fig = plots.sample_map_figure(coords[keep], mean[keep], marks, colour_label="orbit mean prob. shift",
                                      explained=explained, vmax=map_max)
        ctx["map"] = self._save_svg(fig, f"{slug}-map", f"sample map of {m['name']} under {s.spec}")
        if keep.size < mean.size:
            ctx["map_note"] = f"{keep.size} of {mean.size} samples drawn."
        # worst samples
        xs = self._table(j, "worst_x")
        for r, row in enumerate(worst):
            ctx["worst"].append(self._worst_context(j, s, orbit, r, int(row), xs, anchors[r], slug))
        return ctx

    def _worst_context(self, j, s: SymmetryResult, orbit: plots.Orbit, r: int, row: int, xs, anchor: str, slug: str):
        m = self.models[s.model]
        tv = self._table(j, "prob_tv")[row].astype(np.float64)
        pred = self._table(j, "pred")
        pred = None if pred is None else pred[row].astype(np.int64)
        flipped = self._table(j, "flipped")
        flipped = None if flipped is None else flipped[row].astype(bool)
        tcp = self._table(j, "true_class_prob")
        floor = self._table(j, "floor") if not s.exact else None
        labels = self.orbits.get("labels")
        label = None if labels is None else int(labels[row])
        sample_index = int(self.orbits["sample_index"][row]) if "sample_index" in self.orbits else row
        series = [plots.Series("probability shift", m["color"], tv,
                               floor=None if floor is None else floor[row].astype(np.float64))]
        if tcp is not None:
            series.append(plots.Series("true-class prob.", "#555555", tcp[row].astype(np.float64)))
        if flipped is not None:
            series[0].open = None
        ref = pred[s.identity_index] if pred is not None else None
        tile_texts = None
        if pred is not None and orbit.layout not in ("polar", "line"):
            index = plots.finite_cells(orbit) if orbit.layout != "grid2d" else plots.grid_cells(orbit.elements)[2]
            if index.size <= 81:
                names = [plots.plain_text(self._class_name(int(p)), 6) for p in pred]
                if orbit.layout == "grid2d":
                    tile_texts = [f"{n}\n{v:.2f}" if index.size <= 49 else n for n, v in zip(names, tv)]
                else:
                    tile_texts = [f"{orbit.labels[e]}\n→{names[e]}\n{tv[e]:.2f}" for e in range(orbit.n)]
        thumbs = self._thumbs(s, orbit, r, xs, tv, pred, label, ref)
        title = f"#{r + 1}  sample {sample_index}"
        if label is not None:
            title += f"  (true: {self._class_name(label)})"
        fig = plots.sample_figure(orbit, series, "prob_tv", thumbs, title=title, tile_texts=tile_texts,
                                  flags=flipped)
        f = self._save_png(fig, f"{slug}-worst{r + 1}", f"orbit of sample {sample_index} under {s.spec}")
        non_id = np.arange(orbit.n) != orbit.identity_index
        worst_e = int(np.argmax(np.where(non_id, tv, -np.inf))) if non_id.any() else orbit.identity_index
        return {
            "rank": r + 1,
            "anchor": anchor,
            "sample_index": sample_index,
            "label": None if label is None else self._class_name(label),
            "clean_pred": None if ref is None else self._class_name(int(ref)),
            "mean_tv": float(tv[non_id].mean()) if non_id.any() else float(tv.mean()),
            "flips": None if flipped is None else int(flipped[non_id].sum()),
            "n_other": int(non_id.sum()),
            "worst_element": orbit.labels[worst_e] if worst_e < len(orbit.labels) else str(worst_e),
            "worst_pred": None if pred is None else self._class_name(int(pred[worst_e])),
            "fig": f,
        }

    def _thumbs(self, s: SymmetryResult, orbit: plots.Orbit, r: int, xs, tv, pred, label, ref) -> list[plots.Thumb]:
        if xs is None or r >= len(xs) or s.domain not in ("image", ""):
            return []
        x = np.asarray(xs[r])
        if x.ndim != 3:
            return []
        sel = _thumb_elements(orbit, tv, MAX_THUMBS)
        try:
            import torch

            from ..symmetries import parse_symmetry

            sym = parse_symmetry(s.spec)
            with torch.no_grad():
                xt = sym.act(torch.from_numpy(x[None].astype(np.float32)),
                             torch.as_tensor(orbit.elements[sel], dtype=torch.float64))[:, 0].numpy()
        except Exception:  # a symmetry this version cannot rebuild: the plot goes without thumbnails
            return []
        lo, hi = float(np.min(x)), float(np.max(x))
        thumbs = []
        for k, e in enumerate(sel):
            if pred is None:
                caption, ok = "", True
            else:
                p = int(pred[e])
                caption = "→ " + self._class_name(p)
                target = label if label is not None else ref
                ok = target is None or p == int(target)
            thumbs.append(plots.Thumb(plots.thumbnail(xt[k], lo, hi), orbit.labels[e], caption, ok))
        return thumbs


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


def _thumb_elements(orbit: plots.Orbit, tv: np.ndarray, k: int) -> list[int]:
    """Up to ``k`` element rows to show as thumbnails: all of a small group, else the identity, the
    sample's worst element and evenly spaced ones, in sweep order."""
    n = orbit.n
    if n <= max(k, 8) and orbit.layout == "finite":
        return list(range(n))
    if n <= k:
        return list(range(n))
    order = np.argsort(orbit.elements[:, 0], kind="stable") if orbit.layout in ("polar", "line") else np.arange(n)
    non_id = np.arange(n) != orbit.identity_index
    worst = int(np.argmax(np.where(non_id, tv, -np.inf)))
    chosen = {orbit.identity_index, worst}
    for i in np.linspace(0, n - 1, k).round().astype(int):
        if len(chosen) >= k:
            break
        chosen.add(int(order[i]))
    pos = {int(e): i for i, e in enumerate(order)}
    return sorted(chosen, key=lambda e: pos[e])
