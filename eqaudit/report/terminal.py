"""The terminal reporter: the rich summary table, each model's fingerprint and the opt-in measurement lines."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..metricspec import METRICS, summary_columns
from ..result import raw_logit_key
from .base import Outcome, Written
from .words import extent_text, level_missing, level_reason


def fmt(v, pct: bool = False) -> str:
    """A number as the terminal shows it: None as a dash, percent, tiny values in scientific notation."""
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.1f}%"
    return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"


# (header, summary key, shown as percent) of the registry's main summary columns (eqaudit.metricspec);
# a column appears when any row has a value for it
METRIC_COLUMNS = [(m.header, m.key, m.percent) for m in summary_columns("main")]


def _cell(sm: dict, key: str):
    """The terminal's value of a summary key (None: an empty cell)."""
    if raw_logit_key(key, sm):
        return None
    return sm.get(key)


def _columns(result) -> list[tuple[str, str, bool]]:
    """METRIC_COLUMNS that some row fills, then one column per declared output's main error
    (``energy.equivariance_error``, ``vote.flip_rate``) for scans with several outputs."""
    shown = [c for c in METRIC_COLUMNS if any(_cell(s.summary, c[1]) is not None for s in result.symmetries)]
    seen: dict[str, tuple[str, str, bool]] = {}
    for s in result.symmetries:
        for key, v in s.summary.items():
            name, _, metric = key.partition(".")
            if metric in ("flip_rate", "equivariance_error") and name and isinstance(v, (int, float)) and key not in seen:
                seen[key] = (f"{name} {METRICS[metric].header}", key, METRICS[metric].percent)
    return shown + list(seen.values())


def _level_text(sm: dict) -> str:
    if sm.get("level") is None:
        return level_missing(sm)  # "undetermined" or "floor-limited"; the reason is a line below the table
    lo, hi = sm.get("level_ci") or (None, None)
    return f"{sm['level']:.3f}" + (f" [{lo:.2f}–{hi:.2f}]" if lo is not None else "")


def fingerprint(result, model: int) -> str:
    """One line: the level of every symmetry scanned for one model, side by side."""
    return " | ".join(f"{spec} {'?' if lv is None else f'{lv:.2f}'}" for spec, lv in result.fingerprint(model))


def print_summary(console: Console, result) -> None:
    """One row per (model, symmetry), a dim sub-row per element of a small finite group (with that
    element's gates), then each model's symmetry fingerprint."""
    multi = len(result.models) > 1
    table = Table(title=f"eqaudit: {result.data.n_samples} samples from {Path(result.data.path).name}", title_justify="left")
    # narrow terminals: names and the level wrap onto a second line instead of being cut off
    if multi:
        table.add_column("model", overflow="fold")
    table.add_column("symmetry", overflow="fold")
    table.add_column("exact", justify="center")
    shown = _columns(result)
    for header, _, _ in shown:
        table.add_column(header, justify="right", overflow="fold")
    has_extent = any(extent_text(s.summary.get("extent")) for s in result.symmetries)
    for header in ("floor", "level [95% CI]", *(["extent"] if has_extent else []), "gates"):
        table.add_column(header, justify="left" if header == "gates" else "right", overflow="fold")
    for s in result.symmetries:
        sm = s.summary
        elements = {str(s.per_element[e].get("label", e)) for e in s.listed_elements()}  # their gates go on their sub-row
        floor = fmt(sm.get("floor")) + ("" if s.exact else f" ({sm.get('unresolved_elements', 0)} unres.)")
        gates = ", ".join(("[green]pass[/]" if g.passed else "[red]FAIL[/]") + f" {escape(g.name)}" for g in s.gates
                          if g.element is None or g.element not in elements) or "–"
        ext = [escape(extent_text(sm.get("extent")) or "–")] if has_extent else []
        row = [escape(s.spec), "yes" if s.exact else "no", *(fmt(_cell(sm, k), pct) for _, k, pct in shown), floor, _level_text(sm),
               *ext, gates]
        table.add_row(*([escape(Path(result.models[s.model].path).name)] if multi else []), *row)
        for e in s.listed_elements():  # one dim sub-row per element of a small finite group
            pe = s.per_element[e]
            label = str(pe.get("label", e))
            own = ", ".join(("[green]pass[/]" if g.passed else "[red]FAIL[/]") + f" {escape(g.metric)}"
                            for g in s.gates if g.element == label)
            cells = ["  └ " + escape(label), "", *("" if _cell(pe, k) is None else fmt(_cell(pe, k), pct) for _, k, pct in shown),
                     "" if pe.get("floor") is None else fmt(pe["floor"]), "" if pe.get("level") is None else f"{pe['level']:.3f}",
                     *([""] if has_extent else []), own]
            table.add_row(*([""] if multi else []), *cells, style="dim")
    console.print(table)
    for m, info in enumerate(result.models):
        console.print(f"fingerprint {escape(Path(info.path).name)}: {escape(fingerprint(result, m))}", highlight=False)
    for line in extra_lines(result):
        console.print(line, markup=False, highlight=False)
    for note in dict.fromkeys(n for s in result.symmetries for n in s.notes):  # each once, across models
        console.print(f"note: {note}", style="dim", markup=False, highlight=False)


def extra_lines(result) -> list[str]:
    """Opt-in measurements (local error, layer shares, level at init) and loader notes, one line each."""
    lines = []
    multi = len(result.models) > 1
    refs = sorted({s.reference for s in result.symmetries} - {"identity"})
    if refs:
        what = {"label": "the ground truth (labels or targets)", "consensus": "the orbit's consensus"}
        lines.append("reference: " + ", ".join(f"{r} ({what.get(r, r)})" for r in refs) + " instead of the untransformed output")
    for info in result.models:
        for note in info.notes:
            if not note.startswith("onnxruntime providers"):
                lines.append(f"note {Path(info.path).name}: {note}")
    for s in result.symmetries:
        sm, who = s.summary, (f"{Path(result.models[s.model].path).name} " if multi else "") + s.spec
        if level_reason(sm) is not None:
            lines.append(f"level {who}: {level_reason(sm)}")
        if "lie_derivative" in sm:
            if sm["lie_derivative"] is None:
                lines.append(f"local error {who}: n/a ({sm.get('lie_derivative_reason', '')})")
            else:
                lines.append(f"local error {who}: {sm['lie_derivative']:.4g} {sm['lie_derivative_unit']} "
                             f"({sm['lie_derivative_method']})")
        if "layers" in sm:
            if sm["layers"] is None:
                lines.append(f"layers {who}: n/a ({sm.get('layers_reason', '')})")
            else:
                top = ", ".join(f"{r['name']} {100 * r['share']:.0f}%" for r in sm["layers"][:4])
                lines.append(f"layers {who}: {top} (unexplained {100 * sm['layers_residual']:.0f}%)")
        if "level_at_init" in sm:
            init = sm["level_at_init"]
            lines.append(f"level at init {who}: " + (f"{init:.3f} (trained: {_level_text(sm)})" if init is not None
                                                    else f"n/a ({sm.get('level_at_init_reason', '')})"))
    return lines


class TerminalReporter:
    """Writes the summary to the console it is given (the CLI's stdout console; only the CLI owns one)."""

    name = "terminal"

    def __init__(self, console: Console) -> None:
        self.console = console

    def write(self, outcome: Outcome) -> Written:
        print_summary(self.console, outcome.result)
        return Written()
