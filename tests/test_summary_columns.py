"""The terminal's and the HTML report's summary columns come from the metric registry (eqaudit.metricspec):
every main metric a summary holds gets a column headed by its registry header, in both outputs."""

from __future__ import annotations

import pytest
from rich.console import Console

from eqaudit.metricspec import METRICS, summary_columns
from eqaudit.report import html
from eqaudit.report.terminal import print_summary
from test_ci import make_result

MAIN = summary_columns("main")


def _terminal(summary: dict) -> str:
    result = make_result()
    result.symmetries = result.symmetries[:1]
    result.symmetries[0].summary = summary
    console = Console(record=True, width=400)
    print_summary(console, result)
    return console.export_text()


@pytest.mark.parametrize("spec", MAIN, ids=lambda s: s.key)
def test_every_main_metric_is_a_terminal_column_under_its_registry_header(spec):
    text = _terminal({spec.key: 0.5, "level": 0.5})
    header = next(line for line in text.splitlines() if "symmetry" in line)
    assert spec.header in header, header
    assert ("50.0%" if spec.percent else "0.5000") in text


def test_box_error_has_a_terminal_column_and_other_metrics_do_not():
    """box_error (the boxes task) is a main column now; a "more" metric stays out of the terminal."""
    text = _terminal({"iou": 0.9, "box_error": 0.1, "true_class_prob": 0.25, "level": 0.5})
    header = next(line for line in text.splitlines() if "symmetry" in line)
    assert "IoU" in header and "box err." in header and "true p" not in header and "0.2500" not in text


def test_the_report_columns_are_the_registry_in_its_order():
    keys = [k for k, _, _ in html.SUMMARY_COLUMNS]
    assert keys == [*(s.key for s in MAIN), "level", "floor", *(s.key for s in summary_columns("more")), "unresolved_elements"]
    for key, header, tip in html.SUMMARY_COLUMNS:
        if key in METRICS:
            assert header == METRICS[key].header and tip in (METRICS[key].help, METRICS[key].label)
    assert {s.summary for s in METRICS.values()} <= {"", "main", "more"}
