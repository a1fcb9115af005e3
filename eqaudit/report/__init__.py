"""Reports from a saved AuditResult: plots (matplotlib, Agg) and one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

from ..result import AuditResult


def render(result: AuditResult, out_dir: Path, *, source: Path | None = None, workers: int | None = None) -> Path:
    """Write plots under ``out_dir/plots/`` and ``out_dir/report.html``; return the HTML path.

    ``source`` is the folder holding result.json and the orbit table (defaults to ``out_dir``).
    Reads nothing but the result and the orbit table, so it works after model and data are gone.
    ``workers``: processes drawing the figures (None: as many as pay off, 1: this process only).
    """
    from .html import write_report

    return write_report(result, Path(out_dir), Path(source) if source is not None else Path(out_dir), workers=workers)
