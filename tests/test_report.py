"""The HTML report and its plots: sections and figures, escaping, no network, re-rendering without the model, plot shapes."""

from __future__ import annotations

import gc
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from typer.testing import CliRunner

import toy_models
from conftest import factory, smooth_images
from eqaudit.api import scan
from eqaudit.cli import app
from eqaudit.report import plots, render
from eqaudit.result import AuditResult

HOSTILE = "<script>alert(1)</script>"
CLASSES = [HOSTILE, "cat & dog", "$x^2$ {price}", "d", "e"]
SYMMETRIES = ["rotate:step=45", "translate:max=1", "rot90"]
WORST_PLOTTED = 4


def build_report(folder: Path) -> dict:
    """Scan two small CNNs (one with an awkward file name) on data with hostile class names, then
    render the report. Returns the paths and the result (used by test_browser.py too)."""
    folder.mkdir(parents=True, exist_ok=True)
    x = smooth_images(24, seed=3)
    y = np.random.default_rng(2).integers(0, len(CLASSES), 24)
    data = folder / "hostile.npz"
    np.savez(data, x=x, y=y, classes=np.array(CLASSES))
    model = toy_models.SmallCNN()
    plain = folder / "plain.pt"
    torch.save(model.state_dict(), plain)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5).add_(0.05 * torch.randn_like(p))
    other = folder / "other <b>&.pt"
    torch.save(model.state_dict(), other)
    out = folder / "out"
    result = scan([plain, other], data=str(data), symmetry=SYMMETRIES, model_factory=factory("SmallCNN"),
                  out=str(out), device="cpu", fail_over={"flip_rate": 0.5})
    html = render(result, out)
    return {"result": result, "out": out, "html": html, "models": [plain, other], "data": data}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    built = build_report(tmp_path_factory.mktemp("report"))
    built["text"] = built["html"].read_text(encoding="utf-8")
    return built


class _Collect(HTMLParser):
    """Ids, image sources, link targets and inline SVG count of an HTML page."""

    def __init__(self):
        super().__init__()
        self.ids: list[str] = []
        self.imgs: list[dict] = []
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.svgs = 0
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a)
        if tag == "svg":
            self.svgs += 1
        if tag == "script":
            self.scripts += 1
        for k, v in attrs:
            if k in ("href", "xlink:href") and v is not None:
                self.hrefs.append(v)
            if k == "src" and v is not None:
                self.srcs.append(v)

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> _Collect:
    p = _Collect()
    p.feed(text)
    return p


# ------------------------------------------------------------------------------------------ the page


def test_report_has_sections_figures_and_plot_files(report):
    res: AuditResult = report["result"]
    page = parse(report["text"])
    ids = set(page.ids)
    assert len(page.ids) == len(ids), "duplicate ids"
    assert {"summary", "provenance"} <= ids
    n_metrics = 4  # prob_tv, flip_rate, accuracy, true_class_prob (the data has labels)
    for g in range(len(SYMMETRIES)):
        assert {f"sym-{g}", f"sym-{g}-aggregate", f"sym-{g}-classes", f"sym-{g}-samples"} <= ids
    for j in range(len(res.symmetries)):
        for r in range(1, WORST_PLOTTED + 1):
            assert f"s{j}-worst-{r}" in ids
        assert f"s{j}-worst-{WORST_PLOTTED + 1}" not in ids
    # aggregate + per-class per (symmetry, metric), 4 worst samples per (model, symmetry), one map each
    n_entries = len(res.symmetries)
    assert len(page.imgs) == len(SYMMETRIES) * n_metrics * 2 + n_entries * WORST_PLOTTED
    assert page.svgs == n_entries
    assert all(img["src"].startswith("data:image/png;base64,") and img.get("alt") for img in page.imgs)
    # every figure is also a file under plots/
    files = sorted(p.name for p in (report["out"] / "plots").iterdir())
    assert len([f for f in files if f.endswith(".png")]) == len(page.imgs)
    assert len([f for f in files if f.endswith(".svg")]) == n_entries
    for f in re.findall(r"<code>(plots/[^<]+)</code>", report["text"]):
        assert (report["out"] / f).is_file(), f
    assert all((report["out"] / "plots" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files if f.endswith(".png"))
    # the summary table: a row per (model, symmetry), the gate, provenance
    summary = report["text"].split('id="summary"')[1].split("</section>")[0]
    assert summary.count("<tr") == 1 + n_entries
    assert summary.count("flip_rate ≤ 0.5") == n_entries
    for m in res.models:
        assert m.sha256 in report["text"]
    prov = report["text"].split('id="provenance"')[1].split("</section>")[0]
    assert res.eqaudit_version in prov and res.device in prov and "hostile.npz" in prov and res.created in prov
    # the worst samples listed beside each map link to their plots
    for j in range(n_entries):
        assert f'class="worst-link" href="#s{j}-worst-1"' in report["text"]
        assert f'xlink:href="#s{j}-worst-1"' in report["text"]  # and the map's labels do too
    # metric toggle: one radio per metric, every aggregate figure tagged with its metric
    assert report["text"].count('type="radio" name="metric"') == n_metrics
    assert report["text"].count('class="mv mv-prob_tv"') == 2 * len(SYMMETRIES)


def test_user_strings_are_escaped(report):
    text = report["text"]
    assert "alert(1)" in text
    assert HOSTILE not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # our own small inline scripts (hash follower, sample explorer) and the explorer's JSON table, nothing else
    assert text.count("<script") == 3
    assert text.count('<script type="application/json" id="eqaudit-samples">') == 1
    assert "cat &amp; dog" in text and "cat & dog" not in text
    assert "other &lt;b&gt;&amp;.pt" in text and "other <b>" not in text
    page = parse(text)
    assert page.scripts == 3
    assert any(HOSTILE in t for t in page.text)  # the name is shown, as text


def test_no_external_url_is_referenced(report):
    text = report["text"]
    low = text.lower()
    assert "http://" not in low and "https://" not in low and "//cdn" not in low
    page = parse(text)
    assert page.hrefs and page.srcs
    for v in page.hrefs:
        assert v.startswith("#") or v.startswith("data:"), v
    for v in page.srcs:
        assert v.startswith("data:"), v
    assert not re.search(r"url\((?!#)", text), "CSS/SVG url() must stay inside the page"
    assert not re.search(r"@import|<link(?![^>]*data:)", text)


def test_report_command_reproduces_report_without_model_or_data(report, tmp_path):
    import matplotlib.pyplot as plt

    saved = tmp_path / "saved"
    saved.mkdir()
    for name in ("result.json", "orbits.npz"):
        shutil.copy(report["out"] / name, saved / name)
    for path in report["models"] + [report["data"]]:
        path.unlink()
    out = tmp_path / "again"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "g99-old-aggregate-x.png").write_bytes(b"from an earlier render")
    (out / "plots" / "mine.txt").write_text("keep")
    res = CliRunner().invoke(app, ["report", str(saved / "result.json"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "report.html" in res.output
    again = (out / "report.html").read_text(encoding="utf-8")
    assert again == report["text"]
    # the same plot files; a stale plot of an earlier render is gone, other files are kept
    own = sorted(p.name for p in (report["out"] / "plots").iterdir())
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(own + ["mine.txt"])
    assert (out / "plots" / "mine.txt").read_text() == "keep"
    assert plt.get_fignums() == []  # no figure left open (none is ever registered with pyplot) ...
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is Figure]  # ... and every one was freed


def test_report_command_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing.json")])
    assert res.exit_code == 2 and "missing.json" in res.output and "Traceback" not in res.output


def test_missing_orbit_table_still_renders_summary_and_curves(report, tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    shutil.copy(report["out"] / "result.json", folder / "result.json")
    html = render(AuditResult.load(folder / "result.json"), folder)
    text = html.read_text(encoding="utf-8")
    assert "orbits.npz" in text and "Only the summary" in text
    page = parse(text)
    assert "summary" in page.ids and "sym-0-aggregate" in page.ids
    assert page.svgs == 0 and not any(i.startswith("s0-worst") for i in page.ids)
    assert len(page.imgs) == len(SYMMETRIES) * 4


def test_summary_numbers_come_from_the_result(report):
    res: AuditResult = report["result"]
    s = res.symmetries[0]
    row = report["text"].split('id="summary"')[1].split("<tbody>")[1].split("</tr>")[0]
    assert f"{s.summary['flip_rate']:.3f}" in row and f"{s.summary['prob_tv']:.3f}" in row
    verdict = "pass" if s.passed else "FAIL"
    assert f">{verdict}<" in row


# ------------------------------------------------------------------------------------------ plot functions


def _orbit(layout: str, elements, labels=None, identity=None, exact=True) -> plots.Orbit:
    el = np.asarray(elements, dtype=np.float64).reshape(len(elements), -1)
    if identity is None:
        identity = int(np.argmin(np.abs(el).sum(1)))
    names = {"polar": ("angle",), "line": ("log2_scale",), "grid2d": ("dx", "dy"), "finite": ("k", "f")}[layout]
    return plots.Orbit(layout, el, tuple(labels or [str(e) for e in el.tolist()]), identity, names[: el.shape[1]],
                       ("deg",) if layout == "polar" else ("px", "px") if layout == "grid2d" else ("",) * el.shape[1], exact)


def _curve(fig, label: str) -> np.ndarray:
    for ax in fig.axes:
        for line in ax.lines:
            if line.get_label() == label:
                return np.asarray(line.get_ydata(), dtype=np.float64)
    raise AssertionError(f"no line labelled {label!r}")


@pytest.mark.parametrize("layout", ["polar", "line"])
def test_invariant_model_gives_a_flat_curve_and_a_broken_one_does_not(layout):
    angles = np.arange(-165, 181, 15) if layout == "polar" else np.linspace(-1, 1, 9)
    orbit = _orbit(layout, angles[:, None])
    n, e = 50, len(angles)
    rng = np.random.default_rng(0)
    invariant = np.zeros((n, e))  # probability shift of a perfectly invariant model
    shape = np.abs(np.sin(np.radians(angles))) if layout == "polar" else np.abs(angles)
    broken = shape[None, :] * rng.uniform(0.5, 1, (n, 1))
    series = []
    for name, table in (("invariant", invariant), ("broken", broken)):
        mean, lo, hi = plots.element_stats(table, binary=False)
        series.append(plots.Series(name, "#000", mean, lo, hi))
    fig = plots.orbit_figure(orbit, series, "prob_tv")
    flat, curved = _curve(fig, "invariant"), _curve(fig, "broken")
    assert np.ptp(flat) == 0 and flat[0] == 0
    assert np.ptp(curved) > 0.4
    # polar curves are closed over the full circle; one point per element otherwise
    assert len(flat) == e + (layout == "polar")


def test_grid_gives_a_heatmap_of_the_grid_size_with_values_in_place():
    dx, dy = np.meshgrid(np.arange(-2, 3), np.arange(-1, 2))  # 5 shifts along x, 3 along y
    elements = np.stack([dx.ravel(), dy.ravel()], 1)
    orbit = _orbit("grid2d", elements)
    values = (elements[:, 0] + 2) * 0.1 + (elements[:, 1] + 1) * 0.01
    fig = plots.orbit_figure(orbit, [plots.Series("a", "#111", values), plots.Series("b", "#222", values / 2)], "prob_tv")
    arrays = plots.image_arrays(fig)
    assert [a.shape for a in arrays] == [(3, 5), (3, 5)]
    # row = dy (growing downwards, as in the image), column = dx
    assert arrays[0][0, 4] == pytest.approx(0.4) and arrays[0][2, 0] == pytest.approx(0.02)
    assert arrays[1][2, 4] == pytest.approx(0.21)
    assert plots.to_png(fig)[:4] == b"\x89PNG"


def test_finite_groups_give_a_mosaic_or_a_strip():
    d4 = _orbit("finite", [[k, f] for f in (0, 1) for k in range(4)], [f"r{k}" + ("·f" if f else "") for f in (0, 1) for k in range(4)], 0)
    assert [a.shape for a in plots.image_arrays(plots.orbit_figure(d4, [plots.Series("m", "#000", np.arange(8) / 8)], "accuracy"))] == [(2, 4)]
    rot90 = _orbit("finite", [[0], [1], [2], [3]], ["0°", "90°", "180°", "270°"], 0)
    fig = plots.orbit_figure(rot90, [plots.Series("a", "#000", np.zeros(4)), plots.Series("b", "#111", np.ones(4))], "flip_rate")
    assert [a.shape for a in plots.image_arrays(fig)] == [(1, 4), (1, 4)]
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"0°\n0.00", "270°\n1.00"} <= texts


def test_class_grid_small_multiples():
    orbit = _orbit("grid2d", np.stack(np.meshgrid(np.arange(-1, 2), np.arange(-1, 2)), -1).reshape(-1, 2))
    per_class = [[plots.Series("a", "#111", np.full(9, c / 4)), plots.Series("b", "#222", np.zeros(9))] for c in range(5)]
    fig = plots.class_grid_figure(orbit, ["$x$", "b", "c", "d", "e"], [3] * 5, per_class, "prob_tv")
    (big,) = [a for a in plots.image_arrays(fig)]
    assert np.isfinite(big).sum() == 5 * 2 * 9  # one 3x3 tile block per (class, model)
    assert plots.to_png(fig)[:4] == b"\x89PNG"  # the "$" in a class name does not break text rendering
    polar = _orbit("polar", np.arange(-180, 180, 30)[:, None])
    fig = plots.class_grid_figure(polar, list("abc"), [1, 2, 3], [[plots.Series("m", "#123456", np.ones(12))]] * 3, "accuracy")
    assert len([ln for ln in fig.axes[0].lines if ln.get_color() == "#123456"]) == 3


def test_element_stats_and_pca_known_answers():
    values = np.zeros((100, 3))
    values[:30, 1] = 1
    mean, lo, hi = plots.element_stats(values, binary=True)
    assert mean.tolist() == [0, 0.3, 0] and lo[1] < 0.3 < hi[1] and hi[0] > 0  # Wilson interval
    cont = np.tile(np.linspace(0, 1, 101)[:, None], (1, 2))
    mean, lo, hi = plots.element_stats(cont, binary=False)
    np.testing.assert_allclose(lo, 0.1) and np.testing.assert_allclose(hi, 0.9)
    t = np.linspace(-1, 1, 20)
    profile = np.stack([t, 2 * t, -t], 1) + 5  # all samples on one line
    coords, ratio = plots.pca_2d(profile)
    np.testing.assert_allclose(ratio, [1, 0], atol=1e-12)
    np.testing.assert_allclose(np.abs(coords[:, 0]), np.abs(t) * np.sqrt(6), atol=1e-12)
    assert np.all(coords[:, 1] == 0)
    coords, ratio = plots.pca_2d(np.zeros((5, 4)))  # an invariant model: no spread at all
    assert np.all(coords == 0) and np.all(ratio == 0)


def test_sample_map_svg_links_the_worst_samples_and_references_nothing_outside():
    rng = np.random.default_rng(1)
    coords = rng.normal(size=(40, 2))
    fig = plots.sample_map_figure(coords, rng.uniform(size=40), [(3, "#1", "#w-1"), (7, "#2", "#w-2")],
                                  colour_label="orbit mean")
    svg = plots.to_svg(fig, salt="test-map")
    assert svg.startswith("<svg") and 'xlink:href="#w-1"' in svg and 'xlink:href="#w-2"' in svg
    assert "http" not in svg and "<!--" not in svg
    ids = re.findall(r'\sid="([^"]+)"', svg)
    assert ids and all(i.startswith("test-map-") for i in ids)


def test_sample_map_labels_stay_inside_the_plot_and_apart():
    """Worst samples sit at the edge of the map, often on top of each other: their labels stay
    inside the axes (never behind the colour bar or off the SVG) and do not overlap."""
    import itertools

    from matplotlib.text import Text

    rng = np.random.default_rng(0)
    for corner in ([6.0, 0.0], [6.0, 6.0], [-6.0, -6.0], [0.0, -6.0]):
        coords = rng.normal(size=(120, 2))
        coords[:4] = np.array(corner) + rng.normal(scale=0.03, size=(4, 2))  # a tight cluster at an edge
        marks = [(k, f"#{k + 1}", f"#w-{k + 1}") for k in range(4)]
        fig = plots.sample_map_figure(coords, rng.uniform(size=120), marks, colour_label="orbit mean")
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]
        assert len(boxes) == 4
        inside = ax.bbox.padded(0.5)
        for b in boxes:
            assert inside.x0 <= b.x0 and b.x1 <= inside.x1 and inside.y0 <= b.y0 and b.y1 <= inside.y1, (corner, b)
            assert b.x1 <= fig.bbox.x1 and b.y1 <= fig.bbox.y1 and b.x0 >= 0 and b.y0 >= 0
        assert not [(i, j) for i, j in itertools.combinations(range(4), 2) if boxes[i].overlaps(boxes[j])], corner


def test_sample_figure_has_orbit_and_thumbnails():
    orbit = _orbit("polar", np.arange(-180, 180, 45)[:, None], [f"{a}°" for a in range(-180, 180, 45)])
    img = np.linspace(0, 1, 64).reshape(8, 8)
    thumbs = [plots.Thumb(plots.thumbnail(img[None] * 3, 0, 3), f"{a}°", "→ 1", ok=a == 0) for a in (-90, 0, 90)]
    fig = plots.sample_figure(orbit, [plots.Series("probability shift", "#000", np.linspace(0, 1, 8))], "prob_tv", thumbs,
                              title="sample", flags=np.arange(8) % 2 == 0)
    (strip,) = plots.image_arrays(fig)
    assert strip.shape[0] == 8 and strip.shape[1] > 3 * 8  # three 8x8 thumbnails side by side, with gaps
    np.testing.assert_allclose(strip[:, :8, 0], img)
    assert plots.to_png(fig)[:4] == b"\x89PNG"


def test_axis_angle_discs_place_rotations_by_their_rotation_vector():
    h = np.sqrt(0.5)
    q = np.array([[1, 0, 0, 0], [h, h, 0, 0], [0, 1, 0, 0], [h, 0, 0, -h], [-h, 0, -h, 0]], dtype=np.float64)
    xy, up, improper = plots.axis_angle_points(q)
    # identity at the centre, a quarter turn about x half-way out, a half turn on the rim; -q is q
    np.testing.assert_allclose(xy, [[0, 0], [0.5, 0], [1, 0], [0, 0], [0, 0.5]], atol=1e-12)
    assert up.tolist() == [True, True, True, False, True] and not improper.any()
    orbit = plots.Orbit("axis-angle", np.concatenate([np.concatenate([q, q]), np.repeat([[0.0], [1.0]], 5, 0)], 1),
                        tuple("abcdefghij"), 0)
    values = np.linspace(0, 1, 10)
    fig = plots.orbit_figure(orbit, [plots.Series("m", "#000", values)], "prob_tv")
    coloured = [c for c in fig.axes[0].collections if c.get_array() is not None and len(c.get_array())]
    assert len(coloured) == 4  # up/down halves of the proper and of the improper elements
    assert sorted(np.concatenate([c.get_array() for c in coloured]).tolist()) == pytest.approx(values.tolist())


def test_unknown_layout_is_drawn_over_the_element_index():
    orbit = plots.Orbit("something-new", np.random.default_rng(0).normal(size=(7, 3)), tuple("abcdefg"), 2)
    fig = plots.orbit_figure(orbit, [plots.Series("m", "#000", np.arange(7) / 7)], "prob_tv")
    np.testing.assert_allclose(_curve(fig, "m"), np.arange(7) / 7)


def test_report_shows_the_fingerprint_and_files_are_readable(tmp_path, data_npz, model_files):
    import os
    import stat

    from conftest import factory
    from eqaudit.api import scan
    from eqaudit.report import render

    res = scan(model_files["Rot90Averaged"], data=str(data_npz), symmetry=["rot90", "flip"],
               model_factory=factory("Rot90Averaged"), out=str(tmp_path / "o"))
    html = render(res, tmp_path / "o").read_text()
    assert "Symmetry fingerprint" in html
    section = html.split('id="fingerprint"')[1].split("</table>")[0]
    assert "<code>rot90</code> 1.00" in section and "<code>flip</code>" in section
    for name in ("result.json", "report.html", "orbits.npz"):
        mode = stat.S_IMODE(os.stat(tmp_path / "o" / name).st_mode)
        assert mode & stat.S_IRGRP, (name, oct(mode))


def test_products_are_laid_out_on_their_grid():
    from eqaudit.report import plots
    from eqaudit.symmetries import parse_symmetry

    def orbit(spec):
        s = parse_symmetry(spec)
        return plots.Orbit(s.layout, s.elements.numpy(), tuple(s.labels), s.identity_index, s.param_names, s.units, s.exact, s.spec)

    index = plots.finite_cells(orbit("d4*swap"))
    assert index.shape == (4, 4) and sorted(index.ravel().tolist()) == list(range(16))
    el = parse_symmetry("d4*swap").elements.numpy()
    assert len({el[i, 0] for i in index[:, 0]}) == 1  # a column holds one rotation k
    assert len({tuple(el[i, 1:]) for i in index[0]}) == 1  # a row holds one (flip, swap)
    assert plots.finite_cells(orbit("d4")).shape == (2, 4)
    assert plots.finite_cells(orbit("rot90")).shape == (1, 4)


# ------------------------------------------------------------------------------------------ speed and independence


@pytest.mark.slow
def test_parallel_drawing_writes_the_same_bytes_as_serial(report, tmp_path):
    """Figures drawn in worker processes (the fixture's render) equal those drawn in this process."""
    serial = tmp_path / "serial"
    render(report["result"], serial, source=report["out"], workers=1)
    files = sorted(p.name for p in (report["out"] / "plots").iterdir())
    assert files == sorted(p.name for p in (serial / "plots").iterdir()) and len(files) > 12
    assert all((serial / "plots" / f).read_bytes() == (report["out"] / "plots" / f).read_bytes() for f in files)
    assert (serial / "report.html").read_bytes() == report["html"].read_bytes()


@pytest.mark.slow
def test_figures_drawn_ahead_are_the_final_ones_and_stale_ones_are_drawn_again(report, tmp_path, monkeypatch):
    """A scan's checkpoints queue their figures ahead (eqaudit.report.pool); the render takes every figure
    whose recipe it asks for again and draws anew the ones a later checkpoint changed: the bytes are
    those of a serial render."""
    from eqaudit.report import html as html_report, pool

    folder = tmp_path / "ahead"
    shutil.copytree(report["out"], folder)
    serial = tmp_path / "serial"
    render(report["result"], serial, source=folder, workers=1)
    jobs = html_report.figure_jobs(report["result"], folder)
    assert len(jobs) > 12
    j = next(i for i, ((make, _, _), _, _) in enumerate(jobs) if make is plots.orbit_figure)
    (make, args, kwargs), kind, name = jobs[j]
    stale = ((make, args, {**kwargs, "title": "drawn from an older checkpoint"}), kind, name)
    pool.draw_ahead()
    try:
        ahead = pool._ahead
        ahead.submit([stale])  # the same figure file, drawn from other data
        pool.submit_checkpoint(report["result"], folder)
        queued = dict(ahead.futures)
        assert len(queued) == len(jobs) + 1
        drawn_again = []
        submit = ahead.executor.submit
        monkeypatch.setattr(ahead.executor, "submit", lambda fn, job: drawn_again.append(job[2]) or submit(fn, job))
        render(report["result"], folder, source=folder)
    finally:
        pool.stop_ahead()
    assert drawn_again == [] and all(f.done() for f in queued.values())  # every figure came from the queue
    files = sorted(p.name for p in (serial / "plots").iterdir())
    assert files == sorted(p.name for p in (folder / "plots").iterdir())
    assert all((serial / "plots" / f).read_bytes() == (folder / "plots" / f).read_bytes() for f in files)
    assert (serial / "report.html").read_bytes() == (folder / "report.html").read_bytes().replace(
        str(folder).encode(), str(serial).encode())


def test_building_the_figure_recipes_imports_no_matplotlib():
    """The report's own process only lays out recipes: matplotlib loads in the drawing workers."""
    import subprocess
    import sys

    code = "import sys, eqaudit.report.html, eqaudit.report.pool; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_thumbnails_are_stored_by_the_scan_as_the_symmetry_moves_the_input(report):
    """The report draws thumbnails from orbits.npz: for rot90 they are the worst inputs turned k quarter turns."""
    orbits = np.load(report["out"] / "orbits.npz", allow_pickle=False)
    j = next(j for j, s in enumerate(report["result"].symmetries) if s.spec == "rot90")
    k = np.asarray(report["result"].symmetries[j].elements)[:, 0].astype(int)
    index, thumbs, xs = orbits[f"s{j}.thumb_elements"], orbits[f"s{j}.thumb_x"], orbits[f"s{j}.worst_x"]
    assert index.shape == (len(xs), 4) and (index == np.arange(4)).all()  # a small group: every element
    for r in range(len(xs)):
        for t, e in enumerate(index[r]):
            np.testing.assert_array_equal(thumbs[r, t], np.rot90(xs[r], k[e], axes=(-2, -1)))


def test_report_needs_neither_torch_nor_the_tasks(report, tmp_path):
    """`eqaudit report` re-renders from the saved files in a process that never imports torch."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from eqaudit.report import render; from eqaudit.result import AuditResult; "
            f"r = AuditResult.load(Path({str(report['out'] / 'result.json')!r})); "
            f"render(r, Path({str(tmp_path / 'again')!r}), source=Path({str(report['out'])!r}), workers=1); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('eqaudit.tasks')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
    page = (tmp_path / "again" / "report.html").read_text(encoding="utf-8")
    assert page == report["text"]  # thumbnails and all, without the symmetry code


def test_gates_show_their_own_operator_strict_ones_included(report, tmp_path):
    import json

    saved = tmp_path / "saved"
    saved.mkdir()
    d = json.loads((report["out"] / "result.json").read_text())
    ops = ["<", ">=", ">", "<="]
    for k, s in enumerate(d["symmetries"]):
        for g in s["gates"]:
            g["op"] = ops[k % len(ops)]
    (saved / "result.json").write_text(json.dumps(d))
    shutil.copy(report["out"] / "orbits.npz", saved / "orbits.npz")
    res = CliRunner().invoke(app, ["report", str(saved / "result.json"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    summary = (tmp_path / "o" / "report.html").read_text(encoding="utf-8").split('id="summary"')[1].split("</section>")[0]
    shown = {"<": "flip_rate &lt; 0.5", ">=": "flip_rate ≥ 0.5", ">": "flip_rate &gt; 0.5", "<=": "flip_rate ≤ 0.5"}
    for k in range(len(d["symmetries"])):
        assert shown[ops[k % len(ops)]] in summary
