"""The report's sample explorer: any sample's orbit from the embedded per-sample table, in headless Chromium and in Python."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from eqaudit.report import html as html_report
from eqaudit.report.thumbs import small_images
from eqaudit.result import AuditResult, OrbitTable
from test_browser import browser  # noqa: F401  (the shared headless Chromium fixture, with its skips)
from test_report import build_report

BLOCK = re.compile(r'<script type="application/json" id="eqaudit-samples">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    b = build_report(tmp_path_factory.mktemp("explore"))
    b["orbits"] = OrbitTable.load(b["out"] / "orbits.npz").arrays
    b["table"] = json.loads(BLOCK.search(b["html"].read_text(encoding="utf-8")).group(1))
    return b


def _decode(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


def _not_worst(built) -> int:
    """A sample no (model, symmetry) lists among its worst."""
    o, n = built["orbits"], len(built["orbits"]["sample_index"])
    worst = {int(r) for k, v in o.items() if k.endswith(".worst_index") for r in v}
    return max(set(range(n)) - worst)


def test_small_images_box_average_known_answer():
    x = np.zeros((2, 1, 4, 4), np.float32)
    x[0, 0, :2, :2] = 1.0  # one bright quarter
    x[1, 0] = np.arange(16).reshape(4, 4)
    out = small_images(x, side=2)
    assert out.shape == (2, 2, 2, 1) and out.dtype == np.uint8
    assert out[0, :, :, 0].tolist() == [[255, 0], [0, 0]]
    means = np.array([[2.5, 4.5], [10.5, 12.5]])  # block means of 0..15, stretched to 0..255
    assert np.allclose(out[1, :, :, 0], np.round((means - 2.5) / 10 * 255))
    assert small_images(np.ones((1, 3, 5, 5)), side=32).shape == (1, 5, 5, 3)  # small enough already: kept


def test_script_can_be_inlined():
    """explore.js goes into the page as is: nothing in it could end its <script> element or name a URL."""
    script = (html_report.TEMPLATES / "explore.js").read_text(encoding="utf-8")
    assert "</" not in script and "<!--" not in script
    assert "http" not in script.lower() and "//cdn" not in script.lower()
    assert 50 < len(script.splitlines()) < 700  # a small amount of own code


def test_embedded_table_agrees_with_orbits(built):
    o, t, result = built["orbits"], built["table"], built["result"]
    n = len(o["sample_index"])
    assert t["n"] == n and t["rows"] is None and t["note"] == ""  # small audit: every sample
    assert t["sample_index"] == o["sample_index"].tolist() and t["labels"] == o["labels"].tolist()
    assert [m["name"] for m in t["models"]] == ["plain.pt", "other <b>&.pt"]
    small = o["x_small"]  # the untransformed inputs, small and 8-bit, as the scan stored them
    x = np.load(built["data"])["x"][o["sample_index"]]
    assert x.shape[1:] == (1, 12, 12) and np.array_equal(small, small_images(x))
    assert np.array_equal(_decode(t["small"]["data"], "u1").reshape(n, *t["small"]["shape"]), small)
    traces = [tr for g in t["groups"] for tr in g["traces"]]
    assert sorted(tr["j"] for tr in traces) == list(range(len(result.symmetries)))
    assert all(len(g["traces"]) == 2 for g in t["groups"])  # both models side by side in every group
    for g in t["groups"]:
        for tr in g["traces"]:
            e = len(g["labels"])
            values = _decode(tr["values"], "<f4").reshape(n, e)
            pred = _decode(tr["pred"], tr["pred_type"]).reshape(n, e)
            for k in (0, 7, n - 1):
                assert np.array_equal(values[k], o[f"s{tr['j']}.prob_tv"][k].astype(np.float32))
                assert np.array_equal(pred[k], o[f"s{tr['j']}.pred"][k])
            floor = o.get(f"s{tr['j']}.floor")
            if tr["floor"] is not None:
                assert np.allclose(_decode(tr["floor"], "<f2").reshape(n, e), floor, atol=1e-3)
    assert {g["layout"] for g in t["groups"]} == {"polar", "grid2d", "finite"}


def test_large_audit_embeds_a_seeded_subset(built, tmp_path, monkeypatch):
    """Over the budget: thumbnails shrink first, then a subset seeded by the result's seed, worst samples kept."""
    result = AuditResult.load(built["out"])
    n = len(built["orbits"]["sample_index"])
    full = built["table"]
    raw = sum(len(base64.b64decode(tr[k])) for g in full["groups"] for tr in g["traces"] for k in ("values", "pred", "floor")
              if tr[k] is not None) + len(base64.b64decode(full["small"]["data"]))
    worst = {int(r) for k, v in built["orbits"].items() if k.endswith(".worst_index") for r in v[:html_report.WORST_PLOTTED]}
    want = len(worst) + (n - len(worst)) // 2
    assert len(worst) < want < n
    monkeypatch.setattr(html_report, "EXPLORE_BUDGET", (want * raw // n + 1) * 4 // 3)  # base64 for `want` samples
    context = html_report._Builder(result, dict(built["orbits"]), tmp_path).build()
    t = json.loads(str(context["explore"]["json"]))
    assert t["small"]["shape"][:2] == [12, 12]  # thumbnails shrink no further than MIN_SMALL_SIDE
    rows = t["rows"]
    assert rows is not None and len(rows) == want and rows == sorted(set(rows))
    assert worst <= set(rows)
    assert f"{len(rows)} of {n} samples" in t["note"] and str(result.seed) in t["note"]
    again = json.loads(str(html_report._Builder(result, dict(built["orbits"]), tmp_path).build()["explore"]["json"]))
    assert again["rows"] == rows  # seeded: the same subset every render
    g = t["groups"][0]
    assert _decode(g["traces"][0]["values"], "<f4").size == len(rows) * len(g["labels"])


def _open(browser, built):  # noqa: F811
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    context.route(re.compile(r"^(?!file:|data:).*"), lambda route: (problems.append("request " + route.request.url), route.abort()))
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(built["html"].as_uri(), wait_until="load")
    return context, page, problems


def test_click_a_map_point_opens_that_sample(browser, built):  # noqa: F811
    context, page, problems = _open(browser, built)
    view = page.locator("#sample-view")
    assert not view.is_visible()
    points = page.locator("#sym-0 .model-1 figure.mapbox use[data-sample]")  # the second model's map
    assert points.count() == len(built["orbits"]["sample_index"])  # every point of the map is a button
    point = points.nth(3)
    point.evaluate("p => p.closest('figure').scrollIntoView({block: 'center', behavior: 'instant'})")
    box = point.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(x, y)
    k = page.evaluate("([x, y]) => Number(document.elementFromPoint(x, y).closest('[data-sample]').dataset.sample)", [x, y])
    assert view.is_visible()
    text = view.inner_text()
    assert f"sample {k}" in text
    assert f"data-file row {int(built['orbits']['sample_index'][k])}" in text
    assert "plain.pt" in text and "other <b>&.pt" in text  # every model's file name, as text
    # keyboard: Enter on a focused point opens it too
    other = points.nth(7)
    other.focus()
    page.keyboard.press("Enter")
    assert f"sample {other.get_attribute('data-sample')}" in view.inner_text()
    assert not problems, problems
    context.close()


def test_show_any_sample_draws_its_orbit(browser, built):  # noqa: F811
    context, page, problems = _open(browser, built)
    k = _not_worst(built)
    assert page.evaluate(f"window.eqauditShowSample({k})") is True
    view = page.locator("#sample-view")
    assert f"sample {k}" in view.inner_text()
    result = built["result"]
    plots_ = view.locator("svg.orbit-plot")
    assert plots_.count() == len(built["table"]["groups"]) == len(result.symmetries) // 2
    for g, group in enumerate(built["table"]["groups"]):
        plot = plots_.nth(g)
        traces = plot.locator("g.trace")
        assert traces.count() == 2  # both models
        for m in range(2):
            assert traces.nth(m).locator(".pt").count() == len(group["labels"])  # a mark per element
    thumb = view.locator("img.sample-thumb")
    assert thumb.evaluate("img => img.complete && img.naturalWidth === 12")
    # the tile of the rot90 orbit names the element, the value and the class predicted there
    finite = next(i for i, g in enumerate(built["table"]["groups"]) if g["layout"] == "finite")
    j = built["table"]["groups"][finite]["traces"][0]["j"]
    tips = plots_.nth(finite).locator("g.trace").first.locator(".pt").evaluate_all(
        "els => els.map(e => [Number(e.dataset.element), e.textContent])")
    pred, values = built["orbits"][f"s{j}.pred"][k], built["orbits"][f"s{j}.prob_tv"][k]
    labels = result.symmetries[j].labels
    assert sorted(e for e, _ in tips) == list(range(len(labels)))
    for e, tip in tips:
        assert tip.startswith(f"plain.pt · {labels[e]}: ")
        assert tip.endswith("predicts " + result.data.classes[int(pred[e])])
        shown = float(re.search(r"\(TV\) ([-+0-9.e]+),", tip).group(1))  # three significant digits
        assert shown == pytest.approx(float(values[e]), rel=5e-3, abs=1e-12)
    shot = page.screenshot(full_page=False)
    assert len(shot) > 10_000
    assert not problems, problems
    context.close()


def test_ten_thousand_samples_by_72_elements_stay_under_15_mb(tmp_path):
    """The issue's size case: 10,000 samples x 72 elements of a resampled rotation, 28x28 inputs: every sample
    embedded (thumbnails halved to fit) and the whole page under 15 MB."""
    from eqaudit.result import DataInfo, ModelInfo, SymmetryResult
    from eqaudit.report.io import write_bytes_atomic

    n, angles = 10_000, list(range(0, 360, 5))
    rng = np.random.default_rng(0)
    tv = rng.random((n, len(angles)), dtype=np.float32) * 0.3
    tv[:, 0] = 0
    pred = rng.integers(0, 10, (n, len(angles)))
    floor = rng.random((n, len(angles)), dtype=np.float32) * 0.01
    rows = [{"prob_tv": float(tv[:, e].mean()), "flip_rate": float((pred[:, e] != pred[:, 0]).mean()), "floor": float(floor[:, e].mean())}
            for e in range(len(angles))]
    sym = SymmetryResult(model=0, name="rotate", spec="rotate:step=5", exact=False, domain="image", param_names=["angle"],
                         units=["deg"], layout="polar", identity_index=0, elements=[[float(a)] for a in angles],
                         labels=[f"{a}°" for a in angles], summary={"prob_tv": float(tv.mean())}, per_element=rows,
                         main_metric="prob_tv")
    result = AuditResult("0", "now", 0, "cpu", [ModelInfo("m.pt", "torch", "0" * 64, [1, 28, 28])],
                         DataInfo("d.npz", n, False, [1, 28, 28], n), [sym], {})
    table = OrbitTable.start(np.arange(n), None)  # no labels, one worst sample: fewer figures to draw
    for key, arr in {"prob_tv": tv, "pred": pred, "flipped": pred != pred[:, :1], "floor": floor,
                     "worst_index": np.argsort(-tv.mean(1))[:1]}.items():
        table.put(0, key, arr)
    table.put_small_inputs(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8))
    result.save(tmp_path / "result.json")
    write_bytes_atomic(tmp_path / "orbits.npz", table.to_bytes())
    page = html_report.write_report(result, tmp_path, tmp_path, workers=1)
    text = page.read_text(encoding="utf-8")
    assert len(text.encode()) < 15_000_000
    t = json.loads(BLOCK.search(text).group(1))
    assert t["rows"] is None and t["note"] == ""  # every sample
    assert t["small"]["shape"] == [14, 14, 1]  # halved once to fit
    tr = t["groups"][0]["traces"][0]
    assert tr["pred_type"] == "u1" and _decode(tr["pred"], "u1").size == n * len(angles)


def _png_pixels(uri: str) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def _moved_by_symmetry(spec: str, small: np.ndarray) -> np.ndarray:
    """The symmetry itself (torch) applied to an 8-bit thumbnail (h, w, c): (E, h, w, c)."""
    import torch

    from eqaudit.symmetries import parse_symmetry

    sym = parse_symmetry(spec)
    x = torch.from_numpy(small.transpose(2, 0, 1).astype(np.float64))
    sym.check_input(tuple(x.shape))
    e = sym.elements.shape[0]
    out = sym.apply(x.expand(e, 1, *x.shape).contiguous(), sym.elements)
    return np.round(out[:, 0].numpy()).astype(np.uint8).transpose(0, 2, 3, 1)


def test_moved_thumbnails_equal_the_symmetry_applied(browser, built):  # noqa: F811
    """The view's thumbnail at each element is x_small moved in the page: for exact actions pixel for pixel what
    the symmetry's own code gives on x_small; rotate's quarter turns are np.rot90 of x_small (counter-clockwise
    as displayed), and its 45-degree turns, resampled by the browser, are close to eqaudit's rotate of x_small."""
    from eqaudit.symmetries import parse_symmetry

    context, page, problems = _open(browser, built)
    k = _not_worst(built)
    assert page.evaluate(f"window.eqauditShowSample({k})") is True
    small = built["orbits"]["x_small"][k]
    checked = resampled = 0
    for gi, g in enumerate(built["table"]["groups"]):
        fig = page.locator(f"#sample-view figure.sv-group[data-group='{gi}']")
        thumbs = fig.locator("img.moved-thumb")
        want = _moved_by_symmetry(g["spec"], small)
        shown = thumbs.evaluate_all("els => els.map(e => [Number(e.dataset.element), e.src])")
        assert sorted(e for e, _ in shown) == list(range(len(g["labels"])))  # small orbits: every element
        for e, uri in shown:
            px = _png_pixels(uri)
            assert px.shape[:2] == small.shape[:2]
            if g["spec"].startswith("rotate"):
                angles = parse_symmetry(g["spec"]).elements[:, 0].tolist()
                angle = angles[e]
                if angle % 90 == 0:  # a known answer: numpy's quarter turns are counter-clockwise as displayed
                    assert np.array_equal(px[..., 0], np.rot90(small[..., 0], int(angle // 90))), g["labels"][e]
                else:  # resampled in the page: near eqaudit's rotate, far from the unturned and the opposite turn
                    mirror = angles.index(-angle)
                    err = np.abs(px[..., 0].astype(float) - want[e, ..., 0]).mean()
                    for other in (small[..., 0], want[mirror, ..., 0]):
                        assert err < 0.35 * np.abs(other.astype(float) - want[e, ..., 0]).mean(), (g["labels"][e], err)
                    resampled += 1
            else:
                assert np.array_equal(px[..., 0], want[e, ..., 0]), (g["spec"], g["labels"][e])
            checked += 1
        assert not np.array_equal(want[1], want[0])  # the check can tell moved from unmoved
        if g["spec"].startswith("rotate"):
            assert "resampled in this page" in fig.inner_text()
    assert checked == 8 + 4 + 9 and resampled == 4  # rotate:step=45, rot90 and translate:max=1
    assert not problems, problems
    context.close()


STEP_FUNCTION = re.compile(r"^  function step\(.*?^  }$", re.S | re.M)
MOVE_CASES = [("d4", (5, 5)), ("rot180", (4, 6)), ("flip:axis=v", (4, 6)), ("translate:max=2,mode=zero", (5, 6)),
              ("translate:max=1,axis=y", (4, 5)), ("d4*translate:max=1", (4, 4)), ("flip*flip:axis=v", (3, 5)),
              ("rot90", (6, 6)), ("translate:max=2", (1, 7))]


def test_page_steps_equal_the_symmetries(browser):  # noqa: F811
    """The page's pixel step function (explore.js) fed the steps of eqaudit.report.moves gives, for every element
    of products, zero-filled shifts, top-bottom mirrors and non-square images, exactly the symmetry's own output."""
    from eqaudit.report.moves import element_steps
    from eqaudit.symmetries import parse_symmetry

    source = STEP_FUNCTION.search((html_report.TEMPLATES / "explore.js").read_text(encoding="utf-8")).group(0)
    page = browser.new_page()
    page.set_content("<p>steps</p>")
    page.evaluate(f"() => {{ window.moveBy = function (src, h, w, ch, steps) {{ {source}\n"
                  "var x = Uint8Array.from(src); steps.forEach(function (st) { x = step(x, h, w, ch, st); }); return Array.from(x); }; }")
    rng = np.random.default_rng(1)
    for spec, (h, w) in MOVE_CASES:
        small = rng.integers(1, 256, (h, w, 2), dtype=np.uint8)  # no zeros: a zero-filled pixel is told apart
        want = _moved_by_symmetry(spec, small)
        sym = parse_symmetry(spec)
        sym.check_input((2, h, w))
        steps = element_steps(sym.spec, sym.elements.tolist(), (h, w), (h, w))
        assert steps is not None and all(s is not None for s in steps)
        for e, st in enumerate(steps):
            got = page.evaluate("([s, h, w, st]) => window.moveBy(s, h, w, 2, st)", [small.reshape(-1).tolist(), h, w, st])
            assert np.array_equal(np.array(got, np.uint8).reshape(h, w, 2), want[e]), (spec, sym.labels[e], st)
    page.close()


RESAMPLED_FUNCTION = re.compile(r"^  function resampled\(.*?^  }$", re.S | re.M)


def test_page_turns_and_zooms_are_close_to_the_symmetries(browser):  # noqa: F811
    """The page's resampled step (a canvas transform, two channels: every channel moved) on an off-centre smooth
    picture is close to eqaudit's own rotate and scale, and far from the unmoved picture and the opposite move."""
    from eqaudit.report.moves import element_steps
    from eqaudit.symmetries import parse_symmetry

    source = RESAMPLED_FUNCTION.search((html_report.TEMPLATES / "explore.js").read_text(encoding="utf-8")).group(0)
    page = browser.new_page()
    page.set_content("<p>turns</p>")
    page.evaluate(f"() => {{ window.turn = function (src, h, w, ch, st) {{ {source}\n"
                  "return Array.from(resampled(Uint8Array.from(src), h, w, ch, st)); }; }")
    h, w = 16, 20
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((yy - 5.0) ** 2 + (xx - 13.0) ** 2) / 8.0)
    small = np.round(255 * np.stack([blob, blob[:, ::-1]], -1)).astype(np.uint8)
    moved = 0
    for spec in ("rotate:step=60", "scale:min=0.5,max=2,steps=3"):
        sym = parse_symmetry(spec)
        sym.check_input((2, h, w))
        want = _moved_by_symmetry(spec, small).astype(float)
        values = sym.elements[:, 0].tolist()
        for e, st in enumerate(element_steps(sym.spec, sym.elements.tolist(), (h, w), (h, w))):
            if not st or st[0][0] != "r":
                continue
            got = np.array(page.evaluate("([s, h, w, st]) => window.turn(s, h, w, 2, st)",
                                         [small.reshape(-1).tolist(), h, w, st[0]]), float).reshape(h, w, 2)
            err = np.abs(got - want[e]).mean()
            opposite = want[values.index(-values[e])]
            for other in (small.astype(float), opposite):
                assert err < 0.35 * np.abs(other - want[e]).mean(), (spec, sym.labels[e], err)
            moved += 1
    assert moved == 6 + 2  # ±60°, ±120° and, on this non-square picture, ±90°; x0.5 and x2
    page.close()


def test_steps_only_for_whole_thumbnail_pixels():
    from eqaudit.report.moves import element_steps

    shifts = [[0.0, 0.0], [1.0, 0.0], [2.0, -2.0]]
    assert element_steps("translate:max=2", shifts, (28, 28), (14, 14)) == [
        [["s", 0, 0, True]], None, [["s", 1, -1, True]]]  # 1 px of the input is half a thumbnail pixel
    assert element_steps("translate:max=2,mode=zero", shifts, (8, 8), (8, 8))[1] == [["s", 1, 0, False]]
    assert element_steps("rotate:step=45", [[0.0], [90.0], [-45.0]], (8, 8), (8, 8)) == [
        [["d", 0, 0, "h"]], [["d", 1, 0, "h"]], [["r", -45.0, 1.0]]]  # quarter turns exact, the others resampled
    assert element_steps("rotate:step=90", [[90.0], [180.0]], (6, 8), (6, 8)) == [[["r", 90.0, 1.0]], [["d", 2, 0, "h"]]]
    assert element_steps("scale:min=0.5,max=2,steps=3", [[-1.0], [0.0], [1.0]], (8, 8), (8, 8)) == [
        [["r", 0.0, 0.5]], [], [["r", 0.0, 2.0]]]
    assert element_steps("scale", [[1.0]], (1, 16), (1, 16)) == [None]  # a time stretch of a signal: no picture
    assert element_steps("rot90*permute", [[1.0, 1.0]], (8, 8), (8, 8)) is None  # a factor it does not know
    assert element_steps("d4*swap", [[1.0, 1.0, 1.0]], (8, 8), (8, 8)) == [[["d", 1, 1, "h"]]]  # swap: the mean stays
    assert element_steps("rot90*translate", [[1.0, 2.0, 0.0]], (8, 8), (8, 8)) == [[["s", 2, 0, True], ["d", 1, 0, "h"]]]


def test_swapped_frames_leave_the_thumbnail_as_it_is():
    """The thumbnail of a two-frame input is the mean of its channels, so exchanging the frames leaves it unchanged
    (why eqaudit.report.moves gives swap no pixel step)."""
    import torch

    from eqaudit.symmetries import parse_symmetry

    sym = parse_symmetry("swap")
    x = np.random.default_rng(3).random((5, 4, 9, 9)).astype(np.float32)  # two frames of two channels
    sym.check_input(x.shape[1:])
    moved = sym.apply(torch.from_numpy(x).expand(2, *x.shape).contiguous(), sym.elements).numpy()
    assert not np.array_equal(moved[1], x)
    assert np.array_equal(small_images(moved[1]), small_images(x))


@pytest.fixture(scope="module")
def cloud_report(tmp_path_factory) -> dict:
    """The shipped PointNet on six shapes under two point symmetries, and its report."""
    from eqaudit.api import scan
    from eqaudit.report import render

    root = html_report.TEMPLATES.parents[2] / "sample_models"
    out = tmp_path_factory.mktemp("clouds") / "out"
    result = scan(root / "pointnet.pt", symmetry=["so3:n=3", "rotate-z:step=90"], limit=6, out=str(out), device="cpu")
    page = render(result, out)
    return {"result": result, "out": out, "html": page, "orbits": OrbitTable.load(out / "orbits.npz").arrays,
            "table": json.loads(BLOCK.search(page.read_text(encoding="utf-8")).group(1)), "data": root / "shapes3d_test.npz"}


@pytest.mark.slow  # a scan and a report of its own
def test_point_clouds_are_drawn_and_moved_as_the_symmetry_moves_them(browser, cloud_report):  # noqa: F811
    import torch

    from eqaudit.report.thumbs import small_points
    from eqaudit.symmetries import parse_symmetry

    o, t, result = cloud_report["orbits"], cloud_report["table"], cloud_report["result"]
    x = np.load(cloud_report["data"])["x"][o["sample_index"]]
    assert np.array_equal(o["x_points"], small_points(x)) and o["x_points"].shape == (6, 64, 3)
    assert np.array_equal(_decode(t["points"]["data"], "<f2").reshape(6, 64, 3), o["x_points"])
    context, page, problems = _open(browser, cloud_report)
    k = 4
    assert page.evaluate(f"window.eqauditShowSample({k})") is True
    view = page.locator("#sample-view")
    assert view.locator("svg.sample-cloud circle").count() == 64
    for gi, g in enumerate(t["groups"]):
        s = result.symmetries[g["traces"][0]["j"]]
        sym = parse_symmetry(s.spec, seed=result.seed)
        elements = torch.tensor(s.elements, dtype=torch.float64)
        cloud = torch.from_numpy(o["x_points"][k].astype(np.float64))
        want = sym.apply(cloud.expand(len(s.elements), 1, 64, 3).contiguous(), elements)[:, 0].numpy()
        shown = view.locator(f"figure.sv-group[data-group='{gi}'] svg.moved-cloud").evaluate_all(
            "els => els.map(e => [Number(e.dataset.element), JSON.parse(e.dataset.coords), e.querySelectorAll('circle').length])")
        assert sorted(e for e, _, _ in shown) == list(range(len(s.elements)))
        for e, coords, n in shown:
            assert n == 64
            assert np.allclose(np.array(coords).reshape(64, 3), want[e], rtol=1e-3, atol=1e-4), (s.spec, s.labels[e])
        assert not np.allclose(want[1], want[0])
    assert not problems, problems
    context.close()


def test_map_colours_by_any_model_or_a_difference(browser, built):  # noqa: F811
    """The select under a sample map recolours its points from the embedded table: another model's orbit mean,
    or the difference of two models (diverging colours, the largest difference at a full end)."""
    context, page, problems = _open(browser, built)
    o, t = built["orbits"], built["table"]
    g = next(g for g in t["groups"] if g["layout"] == "polar")
    fig = page.locator(f"#sym-{g['index']} .model-0 figure.mapbox")
    rows = [int(r) for r in fig.get_attribute("data-rows").split()]
    select = fig.locator("select")
    assert select.evaluate("s => Array.from(s.options).map(o => o.value)") == ["m:0", "m:1", "d:0:1"]
    assert select.input_value() == "m:0"
    j = {tr["model"]: tr["j"] for tr in g["traces"]}
    mean = {m: np.delete(o[f"s{j[m]}.prob_tv"], g["identity"], axis=1).astype(np.float32).mean(1) for m in (0, 1)}

    def shown():
        return fig.locator("use.pick").evaluate_all("els => els.map(e => [Number(e.dataset.value), e.style.fill])")

    select.select_option("m:1")
    values = shown()
    assert np.allclose([v for v, _ in values], mean[1][rows], rtol=1e-5, atol=1e-7)
    top = max(float(mean[0].max()), float(mean[1].max()))
    assert {f for v, f in values if v == pytest.approx(top)} <= {"rgb(253, 231, 37)"}  # viridis' bright end
    select.select_option("d:0:1")
    values = shown()
    diff = (mean[0] - mean[1])[rows]
    assert np.allclose([v for v, _ in values], diff, rtol=1e-4, atol=1e-6)
    extreme = values[int(np.argmax(np.abs(diff)))][1]
    assert extreme in ("rgb(178, 24, 43)", "rgb(33, 102, 172)")  # a full end of the diverging scale
    assert "higher" in fig.locator(".map-legend").inner_text()
    assert len({f for _, f in values}) > 3
    assert not problems, problems
    context.close()


def test_one_tab_stop_per_map_and_arrow_keys_rove(browser, built):  # noqa: F811
    context, page, problems = _open(browser, built)
    figs = page.locator("figure.mapbox")
    for n in range(figs.count()):
        stops = figs.nth(n).locator("use.pick").evaluate_all("els => els.map(e => e.getAttribute('tabindex'))")
        assert stops.count("0") == 1 and stops.count("-1") == len(stops) - 1  # one tab stop per map
    fig = figs.first
    fig.evaluate("f => f.scrollIntoView({block: 'center', behavior: 'instant'})")
    first = fig.locator("use.pick[tabindex='0']")
    first.focus()
    start = page.evaluate("() => [Number(document.activeElement.getAttribute('x')), document.activeElement.dataset.sample]")
    page.keyboard.press("ArrowRight")
    moved = page.evaluate("() => [Number(document.activeElement.getAttribute('x')), document.activeElement.dataset.sample, "
                          "document.activeElement.getAttribute('tabindex')]")
    assert moved[1] != start[1] and moved[0] > start[0] and moved[2] == "0"  # to a point on the right, now the tab stop
    assert fig.locator("use.pick[tabindex='0']").count() == 1
    page.keyboard.press("ArrowLeft")
    back = page.evaluate("() => Number(document.activeElement.getAttribute('x'))")
    assert back < moved[0]
    page.keyboard.press("End")
    page.keyboard.press("Enter")
    last = fig.locator("use.pick").last.get_attribute("data-sample")
    assert f"sample {last}" in page.locator("#sample-view").inner_text()
    page.keyboard.press("Tab")  # one Tab leaves the map's points (to its worst-sample links or on)
    assert page.evaluate("() => !document.activeElement.matches('use.pick')")
    assert not problems, problems
    context.close()


def _synthetic_report(folder, spec: str, n: int = 10, points: np.ndarray | None = None, draw: bool = True):
    """A result of one model and one symmetry made by hand (no model, no scan): random per-sample values; with
    ``points`` (N, p, 3) the explorer's small clouds. ``draw``: write the report (else return the orbit table)."""
    from eqaudit.report.io import write_bytes_atomic
    from eqaudit.result import DataInfo, ModelInfo, SymmetryResult
    from eqaudit.symmetries import parse_symmetry

    sym = parse_symmetry(spec, seed=0)
    e = sym.n_elements
    rng = np.random.default_rng(0)
    tv = rng.random((n, e)).astype(np.float32)
    tv[:, sym.identity_index] = 0
    pred = rng.integers(0, 3, (n, e))
    rows = [{"prob_tv": float(tv[:, k].mean()), "flip_rate": float((pred[:, k] != pred[:, sym.identity_index]).mean())} for k in range(e)]
    d = sym.describe()
    s = SymmetryResult(model=0, name=d["name"], spec=d["spec"], exact=d["exact"], domain=d["domain"], param_names=list(d["param_names"]),
                       units=list(d["units"]), layout=d["layout"], identity_index=d["identity_index"], elements=sym.elements.tolist(),
                       labels=list(sym.labels), summary={"prob_tv": float(tv.mean())}, per_element=rows, main_metric="prob_tv")
    result = AuditResult("0", "now", 0, "cpu", [ModelInfo("m.pt", "torch", "0" * 64, [16, 3])], DataInfo("d.npz", n, False, [16, 3], n),
                         [s], {})
    table = OrbitTable.start(np.arange(n), None)
    for key, arr in {"prob_tv": tv, "pred": pred, "flipped": pred != pred[:, sym.identity_index:sym.identity_index + 1],
                     "worst_index": np.argsort(-tv.mean(1))[:1]}.items():
        table.put(0, key, arr)
    if not sym.exact:  # the floor, measured on every second sample (NaN elsewhere, as --floor-samples leaves it)
        floor = rng.random((n, e)).astype(np.float32) * 0.01
        floor[1::2] = np.nan
        table.put(0, "floor", floor)
    if points is not None:
        table.put_small_points(points)
    if not draw:
        return result, table
    result.save(folder / "result.json")
    write_bytes_atomic(folder / "orbits.npz", table.to_bytes())
    return result, html_report.write_report(result, folder, folder, workers=1)


def test_rotations_in_3d_are_drawn_at_their_rotation_vectors(browser, tmp_path):  # noqa: F811
    """so3/o3 orbits in the explorer: one mark per element at its rotation vector (as the static axis-angle plots),
    on the z >= 0 or z < 0 disc (and the improper discs of o3), the identity at the centre of the first."""
    from eqaudit.report.plots import axis_angle_points

    result, page_file = _synthetic_report(tmp_path, "o3:n=5")
    s = result.symmetries[0]
    xy, up, improper = axis_angle_points(np.array(s.elements))
    assert improper.any() and (~up).any()
    context = browser.new_context()
    page = context.new_page()
    page.goto(page_file.as_uri())
    assert page.evaluate("window.eqauditShowSample(2)") is True
    trace = page.locator("#sample-view svg.orbit-plot g.trace")
    assert trace.count() == 1
    rings = trace.locator("circle[r='56']").evaluate_all("els => els.map(e => [Number(e.getAttribute('cx')), Number(e.getAttribute('cy'))])")
    assert len(rings) == 4  # upper and lower halves, proper and improper
    marks = trace.locator("circle.pt").evaluate_all(
        "els => els.map(e => [Number(e.dataset.element), Number(e.getAttribute('cx')), Number(e.getAttribute('cy'))])")
    assert sorted(e for e, _, _ in marks) == list(range(len(s.elements)))
    for e, x, y in marks:
        cx, cy = rings[2 * int(improper[e]) + (0 if up[e] else 1)]
        assert (x - cx) / 56 == pytest.approx(xy[e, 0], abs=0.002) and (cy - y) / 56 == pytest.approx(xy[e, 1], abs=0.002)
    assert "rotation vector" in page.locator("#sample-view").inner_text()
    context.close()


def test_level_cells_show_the_confidence_interval(built):
    """The level's 95% CI is in the summary cell's text (not only its tooltip), as the terminal shows it."""
    text = built["html"].read_text(encoding="utf-8")
    shown = re.findall(r'<span class="ci muted">\[([0-9.]+)–([0-9.]+)\]</span>', text)
    want = [(f"{s.summary['level_ci'][0]:.2f}", f"{s.summary['level_ci'][1]:.2f}") for s in built["result"].symmetries
            if s.summary.get("level") is not None and s.summary.get("level_ci")]
    assert want and sorted(shown) == sorted(want * 2)  # the summary table and each symmetry's own table
    assert html_report._level_ci({"level": None, "level_ci": [0.1, 0.2]}) == ""


def _texts_inside_cells(fig) -> int:
    """Every text of a tile axes lies inside its own cell (rendered extents); returns how many were checked."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    checked = 0
    for ax in fig.axes:
        if not ax.images:
            continue
        for t in ax.texts:
            x, y = t.get_position()
            cell = ax.transData.transform([[x - 0.5, y - 0.5], [x + 0.5, y + 0.5]])
            (x0, y0), (x1, y1) = cell.min(0), cell.max(0)
            box = t.get_window_extent(renderer)
            assert box.x0 >= x0 - 0.5 and box.x1 <= x1 + 0.5 and box.y0 >= y0 - 0.5 and box.y1 <= y1 + 0.5, (t.get_text(), box, cell)
            checked += 1
    return checked


def test_class_names_fit_their_heatmap_cells():
    """Long class names (and element labels) in the tiles of a sample's finite orbit and of a shift grid are cut or
    set smaller so that each stays inside its cell."""
    from eqaudit.report import plots

    long = "a very long class name indeed"
    finite = plots.Orbit("finite", np.arange(4.0)[:, None], ("0°", "90°", "180°", "270°"), 0, ("k",), ("",))
    texts = [f"{lab}\n→{long}\n0.25" for lab in finite.labels]
    fig = plots.sample_figure(finite, [plots.Series("m", "#333", np.linspace(0, 1, 4))], "prob_tv", [], tile_texts=texts)
    assert _texts_inside_cells(fig) == 4
    assert any("…" in t.get_text() for ax in fig.axes for t in ax.texts)
    grid = plots.Orbit("grid2d", np.array([[x, y] for y in range(-3, 4) for x in range(-3, 4)], float), tuple(str(i) for i in range(49)),
                       24, ("dx", "dy"), ("px", "px"))
    fig = plots.sample_figure(grid, [plots.Series("m", "#333", np.linspace(0, 1, 49))], "prob_tv", [],
                              tile_texts=[f"{long}\n0.{i:02d}" for i in range(49)])
    assert _texts_inside_cells(fig) == 49
    fig = plots.orbit_figure(finite, [plots.Series("m", "#333", np.linspace(0, 1, 4))], "prob_tv")
    assert _texts_inside_cells(fig) == 4


def test_per_class_figure_has_one_row_per_model():
    """With several models the per-class small multiples stack the models (one row each) instead of widening
    every class's cell into a strip: as wide as for one model, taller."""
    from eqaudit.report import plots

    rng = np.random.default_rng(0)
    for orbit in (plots.Orbit("finite", np.arange(4.0)[:, None], ("0°", "90°", "180°", "270°"), 0, ("k",), ("",)),
                  plots.Orbit("grid2d", np.array([[x, y] for y in range(-1, 2) for x in range(-1, 2)], float),
                              tuple(str(i) for i in range(9)), 4, ("dx", "dy"), ("px", "px")),
                  plots.Orbit("axis-angle", np.array([[1, 0, 0, 0], [0.7071, 0.7071, 0, 0], [0.7071, 0, 0, -0.7071]]),
                              ("id", "a", "b"), 0, ("qw", "qx", "qy", "qz"), ("", "", "", ""))):
        sizes = []
        for m in (1, 2, 3):
            per = [[plots.Series(f"m{j}", "#333", rng.random(orbit.n)) for j in range(m)] for _ in range(5)]
            sizes.append(plots.class_grid_figure(orbit, list("abcde"), [3] * 5, per, "prob_tv").get_size_inches())
        (w1, h1), (w2, h2), (w3, h3) = sizes
        assert w3 == pytest.approx(w1) and w2 == pytest.approx(w1), orbit.layout  # no wider per model...
        assert h3 > h2 > h1, orbit.layout  # ...but a row more each
        assert w3 / h3 < 4, orbit.layout  # no strip


def test_polar_sample_plot_draws_the_true_class_probability_as_a_ring():
    """The true-class probability of a sample's polar plot is a ring of marks outside the curve (dark = high), not
    a curve that spikes to the centre wherever it is 0."""
    from matplotlib.colors import to_hex

    from eqaudit.report import plots

    el = np.arange(-150, 210, 30.0)[:, None]
    orbit = plots.Orbit("polar", el, tuple(f"{a:g}°" for a in el[:, 0]), 5, ("angle",), ("deg",), False)
    tv, tcp = np.full(12, 0.95), np.full(12, 0.01)
    tv[5], tcp[5], tcp[4] = 0.0, 0.99, 0.5
    fig = plots.sample_figure(orbit, [plots.Series("prob", "#1f77b4", tv), plots.Series("true-class prob.", "#555555", tcp)],
                              "prob_tv", [])
    ax = next(a for a in fig.axes if a.name == "polar")
    assert not [ln for ln in ax.lines if to_hex(ln.get_color()) == "#555555"]  # no curve of it
    ring = [c for c in ax.collections if len(c.get_offsets()) == 12 and np.ptp(np.asarray(c.get_offsets())[:, 1]) == 0]
    assert len(ring) == 1
    r = float(np.asarray(ring[0].get_offsets())[0, 1])
    assert r > tv.max() and r < ax.get_ylim()[1]  # outside the curve, inside the frame
    ring[0].update_scalarmappable()
    grey = ring[0].get_facecolors()[:, 0]  # dark = high
    assert grey[5] < grey[4] < grey[0]


def _load(py: Path, cls: str, weights: Path):
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location(f"eqaudit_test_{py.stem}", py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = getattr(mod, cls)()
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


@pytest.mark.slow  # three scans
def test_scan_keeps_what_box_flow_and_map_models_output_on_the_thumbnails(browser, tmp_path):  # noqa: F811
    """thumb_box / thumb_flow / thumb_map are the model's own outputs on the stored thumbnails (thumb_x): boxes as
    (x1, y1, x2, y2), flows as block means, class maps as argmax; classifiers keep none. m0.box / m0.flow are its
    outputs on every untransformed input, and the explorer draws the box over the sample's thumbnail."""
    import torch

    from conftest import smooth_images
    from eqaudit.api import scan
    from eqaudit.report.thumbs import box_means

    root = html_report.TEMPLATES.parents[2] / "sample_models"
    tests = Path(__file__).parent
    import toy_domains

    torch.save(toy_domains.AsymmetricConv().state_dict(), tmp_path / "dense.pt")
    np.savez(tmp_path / "gray.npz", x=smooth_images(6, seed=4, size=12, channels=1))
    cases = [(root / "box_localiser.pt", {"symmetry": ["rot90"]}, root / "domain_models.py", "BoxNet", "box"),
             (root / "piv_flow.pt", {"symmetry": ["translate:max=1,mode=zero"]}, root / "domain_models.py", "FlowNet", "flow"),
             (tmp_path / "dense.pt", {"symmetry": ["flip"], "task": "dense", "data": str(tmp_path / "gray.npz"),
                                      "model_factory": f"{tests / 'toy_domains.py'}:AsymmetricConv"}, tests / "toy_domains.py",
              "AsymmetricConv", "map")]
    for weights, kw, py, cls, key in cases:
        out = tmp_path / key
        scan(weights, limit=6, out=str(out), device="cpu", **kw)
        o = OrbitTable.load(out / "orbits.npz").arrays
        xs = o["s0.thumb_x"]
        with torch.no_grad():
            y = _load(py, cls, weights)(torch.from_numpy(xs.reshape(-1, *xs.shape[2:]))).numpy()
        want = {"box": lambda: y[:, :4], "flow": lambda: box_means(box_means(y, 2, 12), 3, 12),
                "map": lambda: y.argmax(1)}[key]()
        got = o[f"s0.thumb_{key}"]
        assert got.shape[:2] == xs.shape[:2] and [k for k in o if k.startswith("s0.thumb_")] == ["s0.thumb_elements", "s0.thumb_x",
                                                                                                f"s0.thumb_{key}"]
        assert np.allclose(got.reshape(want.shape), want, atol=1e-4), key
        if key == "map":
            assert "m0.box" not in o and "m0.flow" not in o
            continue
        x = np.load(kw.get("data") or weights.with_name(weights.stem.replace("box_localiser", "canvas_boxes_test")
                                                        .replace("piv_flow", "piv_test") + ".npz"))["x"][o["sample_index"]]
        with torch.no_grad():
            y = _load(py, cls, weights)(torch.from_numpy(x.astype(np.float32))).numpy()
        every = y[:, :4] if key == "box" else box_means(box_means(y, 2, 6), 3, 6)
        assert np.allclose(o[f"m0.{key}"].astype(np.float32), every, atol=2e-3 if key == "flow" else 1e-4), key
        if key == "box":
            from eqaudit.report import render
            from eqaudit.result import AuditResult

            page = browser.new_page()
            page.goto(render(AuditResult.load(out), out).as_uri())
            assert page.evaluate("window.eqauditShowSample(3)") is True
            rect = page.locator("#sample-view svg.sv-outputs rect.out-box")
            drawn = [float(rect.get_attribute(a)) for a in ("x", "y", "width", "height")]
            b = o["m0.box"][3]
            assert drawn == pytest.approx([b[0], b[1], b[2] - b[0], b[3] - b[1]], abs=1e-4)
            page.close()
    digits = scan(root / "digits_cnn.pt", limit=6, symmetry=["flip"], out=str(tmp_path / "cls"), device="cpu")
    assert digits and not [k for k in OrbitTable.load(tmp_path / "cls" / "orbits.npz").arrays if k.startswith("s0.thumb_") and
                           k not in ("s0.thumb_elements", "s0.thumb_x")]


def test_cards_draw_boxes_arrows_and_maps_on_the_thumbnails():
    """A worst-sample card's thumbnails carry what the model output there: its box (at its pixels), its flow as
    arrows (one per block), its class map translucent over the input."""
    import matplotlib

    from eqaudit.report import plots

    orbit = plots.Orbit("finite", np.arange(2.0)[:, None], ("id", "flip"), 0, ("f",), ("",))
    img = np.zeros((16, 16))
    flow = np.zeros((2, 12, 12))
    flow[0] = 1.0  # rightwards
    cmap = (np.arange(16 * 16).reshape(16, 16) % 3).astype(np.int16)
    thumbs = [plots.Thumb(img, "id", "", box=[2.0, 3.0, 10.0, 7.0]), plots.Thumb(img, "flip", "", arrows=flow, overlay=cmap)]
    fig = plots.sample_figure(orbit, [plots.Series("m", "#333", np.array([0.0, 0.5]))], "equivariance_error", thumbs)
    strip = next(ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape[:2] == (16, 16 + 16 + 3))
    rects = [p for p in strip.patches if isinstance(p, matplotlib.patches.Rectangle) and
             matplotlib.colors.to_hex(p.get_edgecolor()) == plots.OUTPUT_COLOR]
    assert len(rects) == 1 and rects[0].get_xy() == (1.5, 2.5) and (rects[0].get_width(), rects[0].get_height()) == (8.0, 4.0)
    quivers = [c for c in strip.collections if isinstance(c, matplotlib.quiver.Quiver)]
    assert len(quivers) == 1 and quivers[0].N == plots.ARROWS_SIDE ** 2
    assert np.all(quivers[0].U > 0) and np.all(quivers[0].V == 0)
    assert quivers[0].X.min() > 16  # on the second thumbnail
    assert len(strip.images) == 2 and strip.images[1].get_extent()[0] > 16  # the map over the second thumbnail


def test_point_clouds_thin_out_before_samples_are_dropped(tmp_path, monkeypatch):
    """Over the budget the explorer keeps every second point of each cloud (not below MIN_SMALL_POINTS) before it
    embeds a seeded subset of the samples."""
    n = 40
    clouds = np.random.default_rng(0).normal(size=(n, 64, 3)).astype(np.float16)
    result, table = _synthetic_report(tmp_path, "rotate-z:step=90", n=n, points=clouds, draw=False)
    full = json.loads(str(html_report._Builder(result, dict(table.arrays), tmp_path).build()["explore"]["json"]))
    assert full["points"]["shape"] == [64, 3] and full["rows"] is None
    assert np.array_equal(_decode(full["points"]["data"], "<f2").reshape(n, 64, 3), clouds)
    per_sample = 5 * len(result.symmetries[0].elements)  # prob_tv (float32) and the class (u1) at each element
    monkeypatch.setattr(html_report, "EXPLORE_BUDGET", n * (per_sample + 32 * 3 * 2) * 4 // 3 + 8)  # room for 32 points each
    t = json.loads(str(html_report._Builder(result, dict(table.arrays), tmp_path).build()["explore"]["json"]))
    assert t["points"]["shape"] == [32, 3] and t["rows"] is None
    assert np.array_equal(_decode(t["points"]["data"], "<f2").reshape(n, 32, 3), clouds[:, ::2])
    monkeypatch.setattr(html_report, "EXPLORE_BUDGET", n * (per_sample + 16 * 3 * 2) * 4 // 3 // 2)  # half of them at 16
    t = json.loads(str(html_report._Builder(result, dict(table.arrays), tmp_path).build()["explore"]["json"]))
    assert t["points"]["shape"] == [html_report.MIN_SMALL_POINTS, 3] and t["rows"] is not None and len(t["rows"]) < n


def test_a_floor_measured_on_other_samples_draws_nothing(browser, tmp_path):  # noqa: F811
    """A sample outside the floor's subset (NaN floor) shows its orbit without a floor line and without errors;
    one inside it shows the floor dashed."""
    _, page_file = _synthetic_report(tmp_path, "rotate:step=90", n=6)
    context, page, problems = _open(browser, {"html": page_file})
    for k, floors in ((1, 0), (2, 1)):
        assert page.evaluate(f"window.eqauditShowSample({k})") is True
        assert page.locator("#sample-view polyline.floor").count() == floors
        assert page.locator("#sample-view polyline.curve").count() == 1
    assert not problems, problems
    context.close()
