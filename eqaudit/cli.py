"""The typer command-line app: parses options, calls the api, prints with rich; the only module that prints."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import EqauditError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Audit trained models for symmetry: orbit sweeps, metrics, CI gates and reports.",
    pretty_exceptions_enable=False,
)
# Logs and CI capture are not terminals: give tables room instead of rich's 80-column fallback.
_WIDTH = None if sys.stdout.isatty() else 160
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)

EXIT_PASS, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3


class State:
    verbose = False


def _fail(exc: BaseException) -> None:
    """The one error boundary: a library error becomes one line and its exit code."""
    if State.verbose:
        err.print_exception(show_locals=False)
    code = exc.exit_code if isinstance(exc, EqauditError) else EXIT_RUNTIME
    text = str(exc) if isinstance(exc, EqauditError) else (
        f"unexpected {type(exc).__name__}: {exc} (a bug in eqaudit? re-run with --verbose for the traceback)"
    )
    err.print(f"[bold red]error:[/] {text}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.1f}%"
    return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"


def print_summary(result) -> None:
    """One row per (model, symmetry)."""
    multi = len(result.models) > 1
    table = Table(title=f"eqaudit: {result.data.n_samples} samples from {Path(result.data.path).name}", title_justify="left")
    if multi:
        table.add_column("model")
    for col, just in [("symmetry", "left"), ("exact", "center"), ("flip rate", "right"), ("prob shift", "right"),
                      ("accuracy", "right"), ("worst-case acc", "right"), ("floor", "right"), ("gates", "left")]:
        table.add_column(col, justify=just)
    for s in result.symmetries:
        sm = s.summary
        floor = _fmt(sm.get("floor")) + ("" if s.exact else f" ({sm.get('unresolved_elements', 0)} unres.)")
        gates = ", ".join(("[green]pass[/]" if g.passed else "[red]FAIL[/]") + f" {g.metric}" for g in s.gates) or "–"
        row = [s.spec, "yes" if s.exact else "no", _fmt(sm.get("flip_rate"), True), _fmt(sm.get("prob_tv")),
               _fmt(sm.get("accuracy"), True), _fmt(sm.get("worst_case_accuracy"), True), floor, gates]
        table.add_row(*([Path(result.models[s.model].path).name] if multi else []), *row)
    out.print(table)


@app.command()
def scan(
    models: Annotated[list[Path], typer.Argument(help="model files: .pt/.pth state dict, .pt2 export, .onnx", show_default=False)],
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="dataset PATH[:KEY] (.npz, .npy, .pt, image folder)")] = None,
    symmetry: Annotated[Optional[list[str]], typer.Option("--symmetry", "-s", help="symmetry spec, repeatable (see `eqaudit symmetries`)")] = None,
    task: Annotated[Optional[str], typer.Option(help="what the model outputs: classify [default: classify]")] = None,
    reference: Annotated[Optional[str], typer.Option(help="compare against: identity, label or consensus [default: identity]")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="model rows per call [default: 256]")] = None,
    limit: Annotated[Optional[int], typer.Option(help="audit a seeded random subset of N samples")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed for subsets and random elements [default: 0]")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="output folder [default: reports/<model-stem>/]")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML config file (instead of the model's sidecar)")] = None,
    fail_over: Annotated[Optional[list[str]], typer.Option(help="gate METRIC=VALUE, repeatable, e.g. flip_rate=0.05")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="per-sample shape for flat inputs, e.g. 1x8x8")] = None,
    output_name: Annotated[Optional[str], typer.Option(help="which output of a multi-output model to audit")] = None,
    output_kind: Annotated[Optional[str], typer.Option(help="auto, logits or probabilities [default: auto]")] = None,
    model_factory: Annotated[Optional[str], typer.Option(help="module:callable building the architecture for a state dict")] = None,
    local: Annotated[bool, typer.Option("--local", help="also measure the Lie derivative (local error) at the identity")] = False,
    layers: Annotated[bool, typer.Option("--layers", help="attribute the local error to layers (torch models; implies --local)")] = False,
    extent_tolerance: Annotated[Optional[float], typer.Option(help="level drop from 1 that bounds the extent [default: 0.1]")] = None,
    trust: Annotated[bool, typer.Option("--trust", help="allow pickled modules and TorchScript (they run code when loaded)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print only errors and the verdict")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show settings and their sources; tracebacks on errors")] = False,
) -> None:
    """Sweep each input through the orbit of each symmetry and measure how far outputs move."""
    from .api import run_scan
    from .config import resolve

    State.verbose = verbose
    flags = {
        "data": data, "symmetry": symmetry or None, "task": task, "device": device, "batch_size": batch_size,
        "limit": limit, "seed": seed, "out": str(out_dir) if out_dir else None, "fail_over": fail_over or None,
        "input_shape": input_shape, "output_name": output_name, "output_kind": output_kind,
        "model_factory": model_factory, "trust": True if trust else None, "reference": reference,
        "local": True if (local or layers) else None, "layers": True if layers else None, "extent_tolerance": extent_tolerance,
    }
    try:
        settings = resolve(flags, models=models, config_file=config)
        if verbose:
            for name, value in settings.values.items():
                err.print(f"  {name} = {value!r}  [dim]({settings.sources[name]})[/]", highlight=False)
        if quiet:
            result, folder = run_scan(models, settings)
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=err, transient=True) as bar:
                task_id = bar.add_task("sweeping", total=None)

                def progress(done: int, total: int, what: str) -> None:
                    bar.update(task_id, completed=done, total=total, description=f"sweeping {what}")

                result, folder = run_scan(models, settings, progress=_per_model(progress, len(models)))
    except KeyboardInterrupt:
        err.print("interrupted; results of models already finished are in the output folder")
        raise typer.Exit(130)
    except Exception as exc:
        _fail(exc)
    if not quiet:
        print_summary(result)
    html = _render_report(result, folder)
    if not quiet:
        out.print(f"wrote {folder / 'result.json'} and {html}")
    _print_verdict(result)
    raise typer.Exit(EXIT_PASS if result.passed else EXIT_GATE_FAILED)


def _per_model(progress, n_models: int):
    """Progress over all models: each model restarts the sweep's own counter."""
    state = {"offset": 0, "last": 0}

    def wrapped(done: int, total: int, what: str) -> None:
        if done < state["last"]:
            state["offset"] += state["last"]
        state["last"] = done
        progress(state["offset"] + done, total * n_models, what)

    return wrapped


def _render_report(result, folder: Path) -> Path:
    """HTML and plots beside the JSON (already written, so a failure here loses no measurement)."""
    from .report import render

    try:
        return render(result, folder, source=folder)
    except Exception as exc:
        _fail(exc)


def _print_verdict(result) -> None:
    failed = [(s, g) for s in result.symmetries for g in s.gates if not g.passed]
    for s, g in failed:
        err.print(f"[red]gate failed:[/] {Path(result.models[s.model].path).name} {s.spec}: {g.describe()}", highlight=False)
    if any(s.gates for s in result.symmetries):
        out.print("[green]all gates passed[/]" if not failed else f"[red]{len(failed)} gate(s) failed[/]")


@app.command()
def report(
    result_file: Annotated[Path, typer.Argument(metavar="RESULT.json", help="a result.json written by scan")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="output folder [default: the result's folder]")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="tracebacks on errors")] = False,
) -> None:
    """Re-render plots and the HTML report from a saved result (no model or data needed)."""
    from .report import render
    from .result import AuditResult

    State.verbose = verbose
    try:
        result = AuditResult.load(result_file)
        folder = out_dir or result_file.parent
        html = render(result, folder, source=result_file.parent)
    except Exception as exc:
        _fail(exc)
    out.print(f"wrote {html}")


@app.command()
def compare(
    base: Annotated[Path, typer.Argument(help="baseline result.json")],
    new: Annotated[Path, typer.Argument(help="new result.json")],
    tolerance: Annotated[float, typer.Option(help="largest allowed worsening of any metric (absolute)")] = 0.01,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="list every compared metric; tracebacks on errors")] = False,
) -> None:
    """Exit 1 when NEW is worse than BASE on any summary metric by more than --tolerance."""
    from .gates import compare_results
    from .result import AuditResult

    State.verbose = verbose
    try:
        if tolerance < 0:
            from .errors import ConfigError

            raise ConfigError(f"Expected --tolerance >= 0, got {tolerance}.")
        comparison = compare_results(AuditResult.load(base), AuditResult.load(new), tolerance)
    except Exception as exc:
        _fail(exc)
    table = Table(title="eqaudit compare", title_justify="left")
    for col in ["model", "symmetry", "metric", "base", "new", ""]:
        table.add_column(col)
    for model, spec, metric, b, n, regressed in comparison.rows:
        if regressed or verbose:
            table.add_row(model, spec, metric, _fmt(b), _fmt(n), "[red]regressed[/]" if regressed else "ok")
    if table.rows:
        out.print(table)
    for item in comparison.missing:
        err.print(f"[red]missing in new result:[/] {item}", highlight=False)
    bad = len(comparison.regressions) + len(comparison.missing)
    if bad:
        out.print(f"[red]{bad} regression(s)[/] beyond tolerance {tolerance:g}")
        raise typer.Exit(EXIT_GATE_FAILED)
    out.print(f"no regressions ({len(comparison.rows)} metrics compared, tolerance {tolerance:g})")


@app.command()
def symmetries() -> None:
    """The catalogue: every symmetry with its parameters and defaults."""
    from .symmetries import catalogue_entries

    table = Table(title="eqaudit symmetries", title_justify="left", show_lines=True)
    for col in ["name", "acts on", "exact", "description", "parameters (default)"]:
        table.add_column(col)
    for entry in catalogue_entries():
        params = "\n".join(
            f"{p.name}={p.default}" + (f" ({'|'.join(p.choices)})" if p.choices else "") + f": {p.help}" for p in entry.params
        )
        table.add_row(entry.name, entry.domain, "yes" if entry.exact else "no", entry.description, params or "–")
    out.print(table)


def _version(value: bool) -> None:
    if value:
        out.print(f"eqaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")] = False,
) -> None:
    """Audit trained models for symmetry."""


def main() -> None:
    try:
        app()
    except EqauditError as exc:  # pragma: no cover - commands catch their own
        err.print(f"error: {exc}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
