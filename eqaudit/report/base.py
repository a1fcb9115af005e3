"""The Reporter protocol: every output of an audit (files, CI outputs) behind one interface, chosen by --format.

A reporter reads an :class:`Outcome` (the finished result, its folder, the baseline comparison and, for
the scan's own files, the per-sample orbit table) and writes one kind of output; it never measures,
imports torch or builds a task: what it needs is in the result. The CLI prints what reporters return
(``Written.paths`` as "wrote ..." lines, ``Written.lines`` verbatim on stdout); reporters print nothing.

Formats (``--format``, a comma-separated list, default all):

- ``json``     result.json: the contract (`eqaudit report`, `compare`, --baseline read it), so it is
               **always written**, listed or not;
- ``orbits``   orbits.npz, the per-sample orbit table (`eqaudit report` re-renders from it); written
               whenever ``html`` is, which draws from it;
- ``csv``      elements.csv, one row per (model, symmetry, element);
- ``html``     report.html and plots/;
- ``junit``    the JUnit XML file, when --junit-xml names one;
- ``summary``  the GitHub step summary, when $GITHUB_STEP_SUMMARY is set;
- ``annotations``  ``::error`` lines, when GITHUB_ACTIONS=true.

json, orbits and csv are the scan's *files*: written after each model (so an interrupted scan keeps
them) by :func:`eqaudit.api.write_outputs`; the others are written once, after the verdict.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ..gates import Comparison
    from ..result import AuditResult

FORMATS = ("json", "orbits", "csv", "html", "junit", "summary", "annotations")
FILE_FORMATS = ("orbits", "csv", "json")  # written per model during the scan, json last
# --format name -> "module:class" under eqaudit.report, imported only when selected
REPORTERS = {
    "json": "jsonfile:JsonReporter",
    "orbits": "orbits:OrbitsReporter",
    "csv": "csvfile:CsvReporter",
    "html": "html:HtmlReporter",
    "junit": "junit:JUnitReporter",
    "summary": "summary:StepSummaryReporter",
    "annotations": "annotations:AnnotationsReporter",
}


@dataclass
class Outcome:
    """What reporters read. ``orbits``: the in-memory orbit table (the scan's file writers only);
    ``junit_path``, ``step_summary`` and ``annotate`` say where the CI outputs go (None/False: nowhere)."""

    result: AuditResult | None
    out_dir: Path | None = None
    comparison: Comparison | None = None
    orbits: dict[str, Any] | None = None
    junit_path: Path | None = None
    step_summary: Path | None = None
    annotate: bool = False


@dataclass
class Written:
    """A reporter's answer: files it wrote and lines for the CLI to print on stdout."""

    paths: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


class Reporter(Protocol):
    name: str

    def write(self, outcome: Outcome) -> Written:
        """Write this output of ``outcome`` (nothing when its destination is not set)."""
        ...


def parse_formats(value: Any) -> list[str]:
    """``"json,csv"``, ``["html", "junit"]`` or ``"all"`` -> the formats in canonical order; a usage
    error names an unknown one and the choices."""
    import difflib

    names = [n.strip().lower() for part in ([value] if isinstance(value, str) else list(value or []))
             for n in str(part).replace(";", ",").replace(" ", ",").split(",") if n.strip()]
    if not names or "all" in names:
        return list(FORMATS)
    for n in names:
        if n not in FORMATS:
            close = difflib.get_close_matches(n, FORMATS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"Expected --format to list outputs from {', '.join(FORMATS)} or all, got {n!r}; "
                              f"{hint}do pass e.g. --format json,junit.")
    return [f for f in FORMATS if f in names]


def selected(formats: Iterable[str] | None) -> list[str]:
    """The formats actually written for a selection: json always, orbits whenever html is."""
    chosen = set(FORMATS if formats is None else formats) | {"json"}
    if "html" in chosen:
        chosen.add("orbits")
    return [f for f in FORMATS if f in chosen]


def reporter(name: str) -> Reporter:
    module, _, cls = REPORTERS[name].partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)()


def file_reporters(formats: Iterable[str] | None) -> list[Reporter]:
    """The scan's file writers for ``formats``, in writing order (result.json last: it points at the others)."""
    chosen = selected(formats)
    return [reporter(f) for f in FILE_FORMATS if f in chosen]


def after_reporters(formats: Iterable[str] | None) -> list[Reporter]:
    """The outputs written once after the verdict (HTML, JUnit, step summary, annotations)."""
    chosen = selected(formats)
    return [reporter(f) for f in FORMATS if f in chosen and f not in FILE_FORMATS]
