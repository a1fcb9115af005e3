"""The report in a real browser: headless Chromium (Debian's package) driven by Playwright opens report.html from disk.

Skips, with the reason, where Chromium or Playwright is not installed (see README, "Reports"). The
screenshot is kept as a test artifact under reports/test-artifacts/ (or $EQAUDIT_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from test_report import build_report

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def _chromium() -> str | None:
    env = os.environ.get("EQAUDIT_TEST_CHROMIUM")
    for path in ([env] if env else []) + list(CHROMIUM_CANDIDATES):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed (pip install playwright): {exc}")
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        except Exception as exc:  # a broken or incompatible browser install
            pytest.skip(f"chromium at {exe} does not start under playwright: {exc}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> Path:
    return build_report(tmp_path_factory.mktemp("browser"))["html"]


def _artifacts() -> Path:
    folder = Path(os.environ.get("EQAUDIT_TEST_ARTIFACTS", ROOT / "reports" / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _in_view(page, element_id: str) -> bool:
    return page.evaluate(
        """id => { const r = document.getElementById(id).getBoundingClientRect();
                   return r.top >= -2 && r.top < window.innerHeight && r.height > 0; }""",
        element_id,
    )


def test_report_in_chromium(browser, report_file):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report_file.as_uri(), wait_until="load")
    assert page.title().startswith("eqaudit report")
    assert page.locator("section#summary table.summary tbody tr").count() == 6
    # the summary table fits a 1400 px window: no horizontal scrolling to reach level, floor, gates
    wrap = page.evaluate("""() => { const w = document.querySelector('section#summary .table-wrap');
                                    return [w.scrollWidth, w.clientWidth]; }""")
    assert wrap[0] <= wrap[1] + 1, wrap
    assert page.locator("section#summary table.summary th[title]").count() >= 3  # abbreviated headers explain themselves

    # a worst-sample link beside the sample map shows that sample's orbit plot
    link = page.locator("a.worst-link").nth(1)
    target = link.get_attribute("href")[1:]
    link.click()
    page.wait_for_function("id => location.hash === '#' + id", arg=target)
    page.wait_for_function(
        """id => { const r = document.getElementById(id).getBoundingClientRect();
                   return r.top >= -2 && r.top < window.innerHeight; }""",
        arg=target,
    )
    assert page.evaluate("document.querySelector(':target').id") == target
    card = page.locator(f"#{target}")
    assert card.is_visible()
    assert card.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    assert _in_view(page, target)

    # the labels in the sample map (inline SVG) are links too
    svg_link = page.locator("section#sym-1 svg a").first
    svg_target = svg_link.get_attribute("xlink:href") or svg_link.get_attribute("href")
    assert svg_target and svg_target.startswith("#s")
    page.evaluate("t => { location.hash = t; }", svg_target)
    page.wait_for_function("id => document.querySelector(':target') && document.querySelector(':target').id === id",
                           arg=svg_target[1:])

    # the metric toggle swaps the aggregate figures (CSS only)
    first = page.locator("#sym-0 figure.mv-prob_tv").first
    other = page.locator("#sym-0 figure.mv-flip_rate").first
    assert first.is_visible() and not other.is_visible()
    page.locator('label[for="mt-flip_rate"]').click()
    assert other.is_visible() and not first.is_visible()

    # the model toggle hides one model's per-model views
    block = page.locator("#sym-0 .model-block.model-1")
    assert block.is_visible()
    page.locator('label[for="ms-1"]').click()
    assert not block.is_visible()
    page.locator('label[for="ms-1"]').click()
    assert block.is_visible()

    page.locator('label[for="mt-prob_tv"]').click()
    page.evaluate("window.scrollTo(0, 0)")
    shot = _artifacts() / "report-browser.png"
    page.screenshot(path=str(shot), full_page=False)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert not problems, problems
    outside = [u for u in requests if not (u.startswith("file:") or u.startswith("data:"))]
    assert not outside, outside
    page.close()


def test_report_readable_without_scripts(browser, report_file):
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1000, "height": 800})
    page = context.new_page()
    page.goto(report_file.as_uri(), wait_until="load")
    assert page.locator("#sym-0 figure.mv-prob_tv").first.is_visible()
    link = page.locator("a.worst-link").first
    target = link.get_attribute("href")[1:]
    link.click()
    page.wait_for_function(
        """id => { const r = document.getElementById(id).getBoundingClientRect();
                   return r.top >= -2 && r.top < window.innerHeight; }""",
        arg=target,
    )
    assert page.locator(f"#{target} img").is_visible()
    context.close()
