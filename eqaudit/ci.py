"""CI-native outputs built from a result and a baseline comparison: JUnit XML, a GitHub step summary and ``::error`` annotations.

Everything here returns strings or writes files; the CLI decides when (``--junit-xml``,
``$GITHUB_STEP_SUMMARY``, ``GITHUB_ACTIONS=true``) and prints the annotations.
"""

from __future__ import annotations

import math
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

from .gates import Comparison, failure_line
from .metricspec import METRICS
from .result import AuditResult, Gate, SymmetryResult, raw_logit_key

MAX_SUMMARY_BYTES = 64 * 1024  # GitHub accepts 1 MiB per step; a compact table stays far below
MAX_SUMMARY_ROWS = 200
SUMMARY_METRICS = ("flip_rate", "prob_tv", "equivariance_error", "max_abs_error", "accuracy", "worst_case_accuracy")
PERCENT_METRICS = {k for k, m in METRICS.items() if m.percent}  # from the metric registry


def _model(result: AuditResult, s: SymmetryResult) -> str:
    return Path(result.models[s.model].path).name


def _gates(result: AuditResult) -> Iterator[tuple[SymmetryResult, Gate]]:
    for s in result.symmetries:
        for g in s.gates:
            yield s, g


# ---------------------------------------------------------------------------------------------------
# GitHub workflow commands


def escape_data(text: str) -> str:
    """Escape a workflow command's message (GitHub's rules: %, CR, LF)."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command's property value (as data, plus ':' and ',')."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def error_command(message: str, **properties: str) -> str:
    """``::error title=...::message`` with every part escaped."""
    props = ",".join(f"{k}={escape_property(v)}" for k, v in properties.items() if v is not None)
    return f"::error{' ' + props if props else ''}::{escape_data(message)}"


def annotations(result: AuditResult | None, comparison: Comparison | None = None) -> list[str]:
    """One ``::error`` line per failed gate, regression and baseline symmetry missing from the result."""
    lines = []
    if result is not None:
        for s, g in _gates(result):
            if not g.passed:
                lines.append(error_command(failure_line(_model(result, s), s.spec, g, s.summary),
                                           title=f"eqaudit gate failed: {s.spec} {g.name}"))
    if comparison is not None:
        for r in comparison.regressions:
            lines.append(error_command(r.describe(), title=f"eqaudit regression: {r.symmetry} {r.metric}"))
        for item in comparison.missing:
            lines.append(error_command(f"{item} is in the baseline but not in the new result",
                                       title="eqaudit regression: symmetry missing"))
    return lines


# ---------------------------------------------------------------------------------------------------
# JUnit XML


def _num(v: float) -> str:
    return repr(float(v))


def _case(suite: ET.Element, classname: str, name: str, failure: str | None, time: float = 0.0) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{time:.3f}")
    if failure is not None:
        f = ET.SubElement(case, "failure", message=failure, type="AssertionError")
        f.text = failure


def _finish(suite: ET.Element) -> tuple[int, int]:
    cases = suite.findall("testcase")
    tests, failures = len(cases), sum(1 for c in cases if c.find("failure") is not None)
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    return tests, failures


def junit_xml(result: AuditResult | None = None, comparison: Comparison | None = None, error: BaseException | None = None) -> str:
    """A JUnit XML document: ``<testsuites>`` holding one ``<testsuite>`` per model (one test case per
    gate, named ``SYMMETRY: METRIC OP BOUND``, or ``SYMMETRY: METRIC at ELEMENT OP BOUND`` for a gate on
    one element) and, with a comparison, a ``baseline`` suite (one test
    case per compared metric, plus one per baseline symmetry missing from the new result). With
    ``error`` (a scan that stopped before a verdict, exit 2 or 3), one ``eqaudit run`` suite whose
    single test case carries the ``<error>``, so CI dashboards show a broken run, not an empty one."""
    root = ET.Element("testsuites", name="eqaudit")
    if error is not None:
        suite = ET.SubElement(root, "testsuite", name="eqaudit run", tests="1", failures="0", errors="1", skipped="0", time="0.000")
        case = ET.SubElement(suite, "testcase", classname="eqaudit", name="scan", time="0.000")
        e = ET.SubElement(case, "error", message=str(error), type=type(error).__name__)
        e.text = str(error)
    seconds = float(result.timing.get("seconds", 0.0)) if result is not None else 0.0
    if result is not None:
        for m, info in enumerate(result.models):
            model = Path(info.path).name
            suite = ET.SubElement(root, "testsuite", name=f"eqaudit gates: {model}", timestamp=result.created[:19],
                                  hostname=socket.gethostname(), time=f"{seconds / max(1, len(result.models)):.3f}")
            props = ET.SubElement(suite, "properties")
            for k, v in [("model", info.path), ("sha256", info.sha256), ("data", result.data.path),
                         ("n_samples", str(result.data.n_samples)), ("seed", str(result.seed)), ("device", result.device)]:
                ET.SubElement(props, "property", name=k, value=str(v))
            for s in result.symmetries:
                if s.model != m:
                    continue
                for g in s.gates:
                    failure = None if g.passed else failure_line(model, s.spec, g, s.summary)
                    _case(suite, f"eqaudit.{Path(model).stem}", f"{s.spec}: {g.name} {g.op} {_num(g.threshold)}", failure)
            _finish(suite)
    if comparison is not None:
        suite = ET.SubElement(root, "testsuite", name="eqaudit baseline", time="0.000")
        failed = {(r.model, r.symmetry, r.metric): r for r in comparison.regressions}
        allowed = comparison.allowed or [math.nan] * len(comparison.rows)
        for (model, spec, metric, b, n, regressed), limit in zip(comparison.rows, allowed):
            r = failed.get((model, spec, metric))
            _case(suite, f"eqaudit.baseline.{Path(model).stem}", f"{spec}: {metric} (base {b:.6g}, allowed worsening {limit:.3g})",
                  r.describe() if regressed and r is not None else None)
        for item in comparison.missing:
            _case(suite, "eqaudit.baseline", f"{item} present", f"{item} is in the baseline but not in the new result")
        _finish(suite)
    totals = [_finish_counts(s) for s in root.findall("testsuite")]
    root.set("tests", str(sum(t for t, _ in totals)))
    root.set("failures", str(sum(f for _, f in totals)))
    root.set("errors", "1" if error is not None else "0")
    root.set("time", f"{seconds:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _finish_counts(suite: ET.Element) -> tuple[int, int]:
    return int(suite.get("tests", "0")), int(suite.get("failures", "0"))


def write_junit(path: Path, result: AuditResult | None = None, comparison: Comparison | None = None,
                error: BaseException | None = None) -> Path:
    from .report.io import write_text_atomic

    path = Path(path)
    write_text_atomic(path, junit_xml(result, comparison, error))
    return path


# ---------------------------------------------------------------------------------------------------
# GitHub step summary (Markdown)


def _cell(text: object) -> str:
    s = str(text).replace("\r", " ").replace("\n", " ")
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _fmt(metric: str, v: object) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "–"
    if metric in PERCENT_METRICS:
        return f"{100 * v:.1f}%"
    return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"


def _level(sm: dict) -> str:
    lv = sm.get("level")
    if lv is None:
        from .report.words import level_missing

        return level_missing(sm)  # undetermined, floor-limited
    lo, hi = sm.get("level_ci_low"), sm.get("level_ci_high")
    ci = f" [{lo:.2f}, {hi:.2f}]" if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else ""
    return f"{lv:.3f}{ci}"


def step_summary(result: AuditResult | None, comparison: Comparison | None = None) -> str:
    """A compact Markdown report for ``$GITHUB_STEP_SUMMARY``: verdict, one table row per (model,
    symmetry), failed gates, and regressions. Plain text and tables only (no images), capped at
    MAX_SUMMARY_BYTES."""
    parts: list[str] = []
    gates = list(_gates(result)) if result is not None else []
    failed = [(s, g) for s, g in gates if not g.passed]
    bad = (len(comparison.regressions) + len(comparison.missing)) if comparison is not None else 0
    ok = not failed and not bad
    verdict = []
    if gates:
        verdict.append(f"{len(gates) - len(failed)}/{len(gates)} gates passed")
    if comparison is not None:
        verdict.append(f"{bad} regression(s) against the baseline" if bad else "no regressions against the baseline")
    head = "✅ passed" if ok else "❌ failed"
    parts.append(f"### eqaudit: {head}" + (f" ({'; '.join(verdict)})" if verdict else ""))
    if result is not None:
        parts.append(f"{result.data.n_samples} samples from {_cell(Path(result.data.path).name)}, seed {result.seed}, "
                     f"device {_cell(result.device)}")
        present = [m for m in SUMMARY_METRICS if any(isinstance(s.summary.get(m), (int, float)) and not raw_logit_key(m, s.summary)
                                                     for s in result.symmetries)][:4]
        has_level = any("level" in s.summary for s in result.symmetries)
        cols = ["model", "symmetry", *present, *(["level [CI]"] if has_level else []), "gates"]
        rows = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        for s in result.symmetries[:MAX_SUMMARY_ROWS]:
            n_fail = sum(not g.passed for g in s.gates)
            gate_cell = "–" if not s.gates else (f"✅ {len(s.gates)}" if not n_fail else f"❌ {n_fail}/{len(s.gates)} failed")
            cells = [_model(result, s), s.spec, *(_fmt(m, s.summary.get(m)) for m in present),
                     *([_level(s.summary)] if has_level else []), gate_cell]
            rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        if len(result.symmetries) > MAX_SUMMARY_ROWS:
            rows.append(f"\n… {len(result.symmetries) - MAX_SUMMARY_ROWS} more rows in result.json")
        parts.append("\n".join(rows))
        if failed:
            parts.append("**Failed gates**\n\n" + "\n".join(
                f"- {_cell(failure_line(_model(result, s), s.spec, g, s.summary))}" for s, g in failed))
    if comparison is not None and bad:
        lines = ["**Regressions against the baseline**", "", "| model | symmetry | metric | base | new | allowed worsening |",
                 "|---|---|---|---|---|---|"]
        for r in comparison.regressions[:MAX_SUMMARY_ROWS]:
            lines.append(f"| {_cell(r.model)} | {_cell(r.symmetry)} | {_cell(r.metric)} | {r.base:.6g} | {r.new:.6g} | {r.tolerance:.3g} |")
        for item in comparison.missing:
            lines.append(f"| {_cell(item)} | | missing in the new result | | | |")
        parts.append("\n".join(lines))
    text = "\n\n".join(parts) + "\n"
    raw = text.encode("utf-8")
    if len(raw) > MAX_SUMMARY_BYTES:
        cut = raw[: MAX_SUMMARY_BYTES - 200].decode("utf-8", "ignore")
        text = cut[: cut.rfind("\n") + 1] + "\n… (truncated; see result.json)\n"
    return text


def append_step_summary(path: Path, text: str) -> None:
    """Append (never overwrite: earlier steps' summaries live in the same file), separated by a blank line."""
    path = Path(path)
    sep = "\n" if path.exists() and path.stat().st_size > 0 else ""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(sep + text)
