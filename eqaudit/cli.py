"""The typer command-line app: parses options, calls the api, prints with rich; the only module that prints."""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__, distributed
from .errors import EqauditError, Interrupted, RankError
from .report.base import Outcome, selected

class _Command(typer.core.TyperCommand):
    """Help in click's plain words: ``eqaudit scan [OPTIONS] MODEL...`` and ``--data TEXT``, never typer's
    internal type names (``<list[str]>``) or its braces around a required argument (``{models}``)."""

    WORDS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "path": "PATH", "file": "FILE", "directory": "DIR"}

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if isinstance(p, typer.core.TyperArgument):
                p.display_type_rich = lambda ctx: None  # the metavar says it all; no "<list[Path]>" beside it
            if p.metavar is None and not getattr(p, "is_flag", False) and not getattr(p, "count", False):
                if isinstance(p, typer.core.TyperArgument):
                    p.metavar = p.name.upper().removesuffix("S") + ("..." if p.nargs != 1 else "")  # models -> MODEL...
                else:
                    bare = p.display_type(ctx).strip("<>").removeprefix("list[").removesuffix("]")
                    p.metavar = self.WORDS.get(bare.lower(), bare.upper())
        return params

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if isinstance(p, typer.core.TyperArgument):
                pieces.append(p.metavar if p.required else f"[{p.metavar}]")
        return pieces


class _Group(typer.core.TyperGroup):
    """``eqaudit --help`` lists each command with its whole first sentence, not one cut to the width."""

    def format_commands(self, ctx, formatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                first = (cmd.short_help or cmd.help or "").split("\n\n")[0]
                rows.append((name, " ".join(first.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    help="Audit trained models for symmetry: orbit sweeps, metrics, CI gates and reports.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show "[default: ...]" literally
)
# Logs and CI capture are not terminals: give tables room instead of rich's 80-column fallback.
_WIDTH = None if sys.stdout.isatty() else 160
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)

EXIT_PASS, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal: stopped after the current batch, partial result kept


class _StopOnSignal:
    """While a scan runs: the first SIGINT or SIGTERM asks it to stop after the current batch (``check``,
    called between batches, raises Interrupted); a second one stops at once (KeyboardInterrupt)."""

    def __init__(self):
        self.signum: int | None = None
        self._saved: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    def __enter__(self) -> _StopOnSignal:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, old in self._saved.items():
            signal.signal(sig, old)


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
    if distributed.launched():  # one of several ranks: torchrun's summary (or --nproc's line) names the rank
        rank, primary = distributed.env_rank(), not (isinstance(exc, RankError) and exc.lost)
        if distributed.record_error(text, code, primary=primary) and not (rank == 0 and primary):
            raise typer.Exit(code)
        text = text if rank == 0 else f"rank {rank} failed: {text}"
    err.print(f"[bold red]error:[/] {escape(text)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _fmt(v, pct: bool = False) -> str:
    from .report.terminal import fmt

    return fmt(v, pct)


def print_summary(result) -> None:
    """The terminal summary (eqaudit.report.terminal) on stdout."""
    from .report.base import Outcome
    from .report.terminal import TerminalReporter

    TerminalReporter(out).write(Outcome(result))


# The typer type of each option form of eqaudit.config.KINDS.
_OPTION_TYPES = {"text": Optional[str], "int": Optional[int], "number": Optional[float], "path": Optional[Path],
                 "list": Optional[list[str]], "on-off": Optional[bool], "switch": bool}


def _with_settings(command: str, default_text: dict[str, str] | None = None):
    """Give a command one typer option per setting of eqaudit.config.SETTINGS whose ``commands`` name it,
    built from that one declaration (option names, short alias, form, help with its default) and placed
    before the command's own ``config`` option. They reach the function as ``**options`` (None or False
    when not given; ``_flags`` turns them into what ``resolve`` takes). ``default_text`` overrides the
    "[default: ...]" a setting shows on this command."""
    from .config import SETTINGS

    def wrap(func):
        own = [p.replace(kind=p.KEYWORD_ONLY) for p in inspect.signature(func, eval_str=True).parameters.values()
               if p.kind is not p.VAR_KEYWORD]
        at = next(i for i, p in enumerate(own) if p.name == "config")
        added = []
        for s in SETTINGS.values():
            if command not in s.commands:
                continue
            decls = [s.option + (f"/--no-{s.option[2:]}" if s.kind == "on-off" else ""), *([s.short] if s.short else [])]
            option = typer.Option(*decls, help=s.help_text((default_text or {}).get(s.name)), show_default=False,
                                  **({"metavar": s.metavar} if s.metavar else {}))
            added.append(inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=False if s.kind == "switch" else None,
                                           annotation=Annotated[_OPTION_TYPES[s.kind], option]))
        func.__signature__ = inspect.Signature([*own[:at], *added, *own[at:]])
        return func

    return wrap


def _flags(options: dict) -> dict:
    """The settings options a command received, as ``resolve`` takes them: only what the user gave (not None)."""
    from .config import SETTINGS

    return {name: SETTINGS[name].from_flag(raw) for name, raw in options.items()}


@app.command()
@_with_settings("scan")
def scan(
    models: Annotated[list[Path], typer.Argument(help="model files: .pt/.pth state dict, .pt2 export, .onnx", show_default=False)],
    config: Annotated[Optional[Path], typer.Option(help="TOML config file (instead of the model's sidecar)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the interrupted audit in the output folder (same models, data and settings)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print only errors and the verdict")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show settings and their sources; tracebacks on errors")] = False,
    **options,
) -> None:
    """Sweep each input through the orbit of each symmetry and measure how far outputs move."""
    from .config import plain_values, resolve

    State.verbose = verbose
    flags = _flags(options)
    if options["layers"]:
        flags["local"] = True  # --layers implies --local
    settings = None
    stopper = _StopOnSignal()
    try:
        settings = resolve(flags, models=models, config_file=config)
        if settings.nproc > 1 and not distributed.launched():
            _launch(settings.nproc, verbose)
        ranks = distributed.ranks()  # launched by torchrun (or --nproc): join the others; only rank 0 prints
        worker = ranks is not None and not ranks.lead
        quiet = quiet or worker
        if "html" in selected(settings.format) and not worker:
            from .report import pool

            pool.draw_ahead()  # drawing workers start now (importing matplotlib beside torch) and draw as symmetries finish
        from .api import run_scan

        if verbose and not worker:
            for name, value in plain_values(settings.values).items():  # gates as their text
                err.print(f"  {name} = {escape(repr(value))}  [dim]({escape(settings.sources[name])})[/]", highlight=False)
        elif not quiet and _applied_files(settings):
            err.print(escape(_applied_files(settings)), highlight=False, soft_wrap=True)
        hooks = {"resume": resume, "notify": lambda line: err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)}
        with stopper:
            if quiet:
                result, folder, comparison = run_scan(models, settings, stop=stopper.check, **hooks)
            else:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                              console=err, transient=True) as bar:
                    task_id = bar.add_task("sweeping", total=None)

                    def progress(done: int, total: int, what: str) -> None:
                        bar.update(task_id, completed=done, total=total, description=f"sweeping {what}")

                    result, folder, comparison = run_scan(models, settings, progress=_per_model(progress, len(models)),
                                                          stop=stopper.check, **hooks)
    except (KeyboardInterrupt, Interrupted):
        import signal

        _stop_drawing_ahead()

        signum = stopper.signum or signal.SIGINT  # the first signal names the exit code (a second one stops at once)
        code, name = 128 + signum, signal.Signals(signum).name
        if distributed.launched() and distributed.record_error(f"interrupted by {name}", code, primary=False):
            raise typer.Exit(code)  # the launcher says it (--nproc), or names the rank whose failure stopped this one
        _say_interrupted(name)
        raise typer.Exit(code)
    except Exception as exc:
        _stop_drawing_ahead()
        if distributed.env_rank() == 0:
            _junit_error(settings.junit_xml if settings is not None else flags["junit_xml"], exc)
        _fail(exc)
    if ranks is not None:
        distributed.leave()  # every collective is done
    if worker:
        raise typer.Exit(EXIT_PASS)  # rank 0 reports the verdict
    lines = _write_reports(Outcome(result, folder, comparison, **_ci_targets(settings.junit_xml)), settings.format, quiet=quiet)
    if comparison is not None:
        _print_comparison(comparison, verbose=verbose, quiet=quiet)
    _print_verdict(result)
    for line in lines:
        typer.echo(line)
    raise typer.Exit(EXIT_PASS if result.passed else EXIT_GATE_FAILED)


def _stop_drawing_ahead() -> None:
    """A scan that stops draws no report: drop the figures queued ahead (workers would finish them first)."""
    if "eqaudit.report.pool" in sys.modules:
        sys.modules["eqaudit.report.pool"].stop_ahead()


def _say_interrupted(name: str) -> None:
    err.print(f"interrupted by {name}; every finished (model, symmetry) is in the output folder (complete: false); "
              "continue with --resume", highlight=False, soft_wrap=True)


def _launch(nproc: int, verbose: bool) -> None:
    """``scan --nproc N``: run this same command line as N ranks through torch's launcher (as torchrun
    does) and exit with rank 0's verdict, or 3 with one line naming the rank that failed first."""
    import signal

    code, line = distributed.launch(nproc, sys.argv[1:], verbose=verbose)
    if line:
        err.print(f"[bold red]error:[/] {escape(line)}", markup=True, highlight=False, soft_wrap=True)
    elif code > 128 and code - 128 in signal.Signals._value2member_map_:  # the launch was stopped by a signal
        _say_interrupted(signal.Signals(code - 128).name)
    raise SystemExit(code)  # not typer.Exit: that is a RuntimeError, which the scan's error boundary would catch


def _warn_unfinished(folder: Path) -> None:
    """`eqaudit report` on a folder whose scan did not finish: say so before rendering what it holds."""
    from . import outdir

    marker = outdir.read_marker(folder)
    if marker is not None:
        err.print(f"[yellow]warning:[/] {escape(outdir.describe_marker(folder, marker))}; the result there is partial "
                  "or missing (continue it with scan --resume)", highlight=False, soft_wrap=True)


def _junit_error(junit_path: str | Path | None, exc: BaseException) -> None:
    """A run that stopped before a verdict still leaves a JUnit file (one test case with the error)."""
    if not junit_path:
        return
    from . import ci

    try:
        ci.write_junit(Path(junit_path), error=exc)
    except OSError as write_exc:
        err.print(f"could not write {escape(str(junit_path))}: {escape(str(write_exc))}", highlight=False)


def _ci_targets(junit_path: str | Path | None) -> dict:
    """Where the CI outputs go: the --junit-xml file, $GITHUB_STEP_SUMMARY, and annotations when GITHUB_ACTIONS=true."""
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    return {"junit_path": Path(junit_path) if junit_path else None, "step_summary": Path(summary_file) if summary_file else None,
            "annotate": os.environ.get("GITHUB_ACTIONS") == "true"}


def _applied_files(settings) -> str | None:
    """One line naming each sidecar or config file the settings came from and the keys it still sets
    (``settings from sidecar models/net.eqaudit.toml: data, symmetry``); None when no file applied."""
    keys: dict[str, list[str]] = {}
    for name, source in settings.sources.items():
        if source.startswith(("sidecar ", "config ", "[tool.eqaudit] in ")):
            keys.setdefault(source, []).append(name)
    if not keys:
        return None
    return "settings from " + "; ".join(f"{source}: {', '.join(names)}" for source, names in keys.items())


def _write_reports(outcome, formats, *, quiet: bool = False) -> list[str]:
    """Run the reporters of a finished audit in one loop: the terminal summary (unless quiet), then those
    --format selects (HTML, JUnit, step summary, annotations; see eqaudit.report.base). Say what they
    wrote and return their stdout lines (annotations) to print after the verdict."""
    from .report.base import after_reporters
    from .report.terminal import TerminalReporter

    lines, html = [], None
    terminal = [TerminalReporter(out)] if not quiet and outcome.result is not None else []
    try:
        for reporter in [*terminal, *after_reporters(formats)]:
            written = reporter.write(outcome)
            lines.extend(written.lines)
            for path in written.paths:
                if reporter.name == "html":
                    html = path
                else:
                    err.print(f"wrote {escape(str(path))}", highlight=False)
    except Exception as exc:  # the JSON is already written, so a failure here loses no measurement
        _fail(exc)
    if not quiet and outcome.result is not None:
        out.print(f"wrote {outcome.out_dir / 'result.json'}" + (f" and {html}" if html else ""), markup=False)
    return lines


def _per_model(progress, n_models: int):
    """Progress over all models: each model restarts the sweep's own counter."""
    state = {"offset": 0, "last": 0}

    def wrapped(done: int, total: int, what: str) -> None:
        if done < state["last"]:
            state["offset"] += state["last"]
        state["last"] = done
        progress(state["offset"] + done, total * n_models, what)

    return wrapped


def _print_verdict(result) -> None:
    from .gates import failure_line

    failed = [(s, g) for s in result.symmetries for g in s.gates if not g.passed]
    for s, g in failed:
        line = failure_line(Path(result.models[s.model].path).name, s.spec, g, s.summary)
        err.print(f"[red]gate failed:[/] {escape(line)}", highlight=False, soft_wrap=True)
    n = sum(len(s.gates) for s in result.symmetries)
    if n:
        out.print(f"[green]all gates passed[/] ({n} checked)" if not failed else f"[red]{len(failed)} of {n} gate(s) failed[/]")


def _print_comparison(comparison, *, verbose: bool, quiet: bool = False) -> None:
    """Metric by metric: every regression (every compared metric with --verbose), then missing symmetries."""
    allowed = comparison.allowed or [None] * len(comparison.rows)
    table = Table(title="eqaudit compare (baseline -> new)", title_justify="left")
    for col in ["model", "symmetry", "metric", "base", "new", "change", "allowed", ""]:
        table.add_column(col)
    for (model, spec, metric, b, n, regressed), limit in zip(comparison.rows, allowed):
        if regressed or verbose:
            table.add_row(escape(model), escape(spec), metric, _fmt(b), _fmt(n), f"{n - b:+.3g}",
                          "–" if limit is None else f"{limit:.3g}", "[red]regressed[/]" if regressed else "ok")
    if table.rows and not quiet:
        out.print(table)
    for r in comparison.regressions:
        err.print(f"[red]regression:[/] {escape(r.describe())}", highlight=False, soft_wrap=True)
    for item in comparison.missing:
        err.print(f"[red]missing in new result:[/] {escape(item)}", highlight=False)
    for warning in comparison.warnings:
        err.print(f"[yellow]note:[/] {escape(warning)}", highlight=False)
    bad = len(comparison.regressions) + len(comparison.missing)
    if bad:
        out.print(f"[red]{bad} regression(s)[/] against the baseline ({len(comparison.rows)} metrics compared)")
    else:
        out.print(f"no regressions against the baseline ({len(comparison.rows)} metrics compared)")


@app.command()
def report(
    result_file: Annotated[Path, typer.Argument(metavar="RESULT.json", help="a result.json written by scan or discover")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="output folder [default: the result's folder]")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="tracebacks on errors")] = False,
) -> None:
    """Re-render plots and the HTML report from a saved result (no model or data needed); a discover result's page too."""
    from .report import render
    from .report.discover import read_discover, write_discover_report
    from .result import AuditResult

    State.verbose = verbose
    try:
        source = result_file if result_file.is_dir() else result_file.parent  # a scan's folder or its result.json
        discovered = read_discover(result_file)  # a discover result: its page is re-rendered from result.json
        if discovered is not None:
            html = write_discover_report(discovered, out_dir or source)
        else:
            _warn_unfinished(source)
            result = AuditResult.load(result_file)
            html = render(result, out_dir or source, source=source)
    except Exception as exc:
        _fail(exc)
    out.print(f"wrote {html}", markup=False)


@app.command()
def compare(
    base: Annotated[Path, typer.Argument(help="baseline result.json")],
    new: Annotated[Path, typer.Argument(help="new result.json")],
    tolerance: Annotated[Optional[list[str]], typer.Option(help="allowed worsening: 0.01 (absolute), 5% (of the baseline value) or METRIC=VALUE; repeatable [default: 0.01]")] = None,
    junit_xml: Annotated[Optional[Path], typer.Option(help="write a JUnit XML file: one test case per compared metric")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="list every compared metric; tracebacks on errors")] = False,
) -> None:
    """Exit 1 when NEW is worse than BASE on any summary metric by more than its tolerance."""
    from .gates import check_tolerance_metrics, compare_results, parse_tolerances
    from .result import AuditResult

    State.verbose = verbose
    try:
        tolerances = parse_tolerances(tolerance)
        base_result, new_result = AuditResult.load(base), AuditResult.load(new)
        check_tolerance_metrics(tolerances, base_result, new_result)
        comparison = compare_results(base_result, new_result, tolerances)
    except Exception as exc:
        _fail(exc)
    _print_comparison(comparison, verbose=verbose)
    for line in _write_reports(Outcome(None, None, comparison, **_ci_targets(junit_xml)), ["junit", "summary", "annotations"]):
        typer.echo(line)
    raise typer.Exit(EXIT_PASS if comparison.passed else EXIT_GATE_FAILED)


@app.command()
def init(
    models: Annotated[Optional[list[Path]], typer.Argument(help="the model file(s) the workflow scans", show_default=False)] = None,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="dataset PATH[:KEY] to put in the config")] = None,
    symmetry: Annotated[Optional[list[str]], typer.Option("--symmetry", "-s", help="symmetry spec, repeatable [default: rot90, flip]")] = None,
    gate: Annotated[Optional[list[str]], typer.Option("--gate", "-g", help="gate to put in the config, repeatable, e.g. 'rot90:flip_rate<=0.01'")] = None,
    model_factory: Annotated[Optional[str], typer.Option(help="module:callable building the architecture for a state dict")] = None,
    directory: Annotated[Path, typer.Option("--dir", help="project root (where pyproject.toml and .github/ live)")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing workflow file (an existing tool.eqaudit table is never changed)")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="tracebacks on errors")] = False,
) -> None:
    """Write a starter tool.eqaudit table into pyproject.toml and a GitHub Actions workflow that runs the scan."""
    from .scaffold import init_project

    State.verbose = verbose
    try:
        outcome = init_project(directory, [str(m) for m in models or []], data=data, symmetry=symmetry, gates=gate,
                               model_factory=model_factory, force=force)
    except Exception as exc:
        _fail(exc)
    for path in outcome.written:
        out.print(f"wrote {escape(str(path))}", highlight=False)
    for path, why in outcome.skipped:
        out.print(f"[yellow]left {escape(str(path))} unchanged:[/] {escape(why)}", highlight=False)
    if not outcome.block_written:
        out.print(escape(outcome.block), highlight=False, soft_wrap=True)
    for note in outcome.notes:
        out.print(f"note: {escape(note)}", highlight=False)


@app.command()
def symmetries() -> None:
    """The catalogue: every symmetry with its parameters and defaults."""
    from .symmetries import catalogue_entries

    table = Table(title="eqaudit symmetries", title_justify="left", show_lines=True)
    for col in ["name", "acts on", "layouts", "exact", "description", "parameters (default)"]:
        table.add_column(col)
    for entry in catalogue_entries():
        params = "\n".join(
            f"{p.name}={p.default}" + (f" ({'|'.join(p.choices)})" if p.choices else "") + f": {p.help}" for p in entry.params
        )
        table.add_row(escape(entry.name), entry.domain, " ".join(entry.layouts) or "–", "yes" if entry.exact else "no",
                      escape(entry.description), escape(params) or "–")
    out.print(table)


@app.command()
@_with_settings("discover", default_text={"out": "reports/<model-stem>/discover/"})
def discover(
    model: Annotated[Path, typer.Argument(help="model file: .pt/.pth state dict, .pt2 export, .onnx", show_default=False)],
    algebra: Annotated[Optional[list[str]], typer.Option(help="generators: affine2d (tx ty rot scale stretch shear), shift1d, affine1d, so3, se3, or a catalogue symmetry with generators (rotate, translate, ...); repeatable [default: affine2d for images, affine1d for signals, se3 for points]")] = None,
    learned_at: Annotated[float, typer.Option(help="a generator is learned at or below max(FLOOR_FACTOR x floor, this)")] = 1e-3,
    not_at: Annotated[float, typer.Option(help="a generator is not learned at or above this")] = 0.1,
    floor_factor: Annotated[float, typer.Option(help="multiple of the numerical floor that still reads learned")] = 10.0,
    layers: Annotated[bool, typer.Option("--layers", help="also the spectrum of every leaf module's output (torch models)")] = False,
    config: Annotated[Optional[Path], typer.Option(help="TOML config file (instead of the model's sidecar)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print only errors")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show settings and their sources; tracebacks on errors")] = False,
    **options,
) -> None:
    """Which symmetries has the model learned? The spectrum of its Lie derivatives over a Lie algebra's generators (LieGG)."""
    from .config import plain_values, resolve
    from .discover import run_discover
    from .report.discover import write_discover_report

    State.verbose = verbose
    flags = _flags(options)
    try:
        settings = resolve(flags, models=[model], config_file=config)
        if verbose:
            for name, value in plain_values(settings.values).items():  # gates as their text
                err.print(f"  {name} = {escape(repr(value))}  [dim]({escape(settings.sources[name])})[/]", highlight=False)
        result, folder = run_discover(model, settings, algebra=algebra or None, learned_at=learned_at, not_at=not_at,
                                      floor_factor=floor_factor, layers=layers)
        html = write_discover_report(result, folder)
    except Exception as exc:
        _fail(exc)
    if quiet:
        return
    th = result["thresholds"]
    table = Table(title=f"eqaudit discover: {escape(Path(result['model']['path']).name)} on {result['data']['n_samples']} samples "
                        f"({escape(', '.join(result['algebra']))})", title_justify="left")
    for col, just in [("generator", "left"), ("unit", "left"), ("value", "right"), ("verdict", "left")]:
        table.add_column(col, justify=just)
    shade = {"learned": "green", "partly": "yellow", "not": "red"}
    for g in result["generators"]:
        table.add_row(escape(g["name"]), escape(g["unit"]), _fmt(g["value"]), f"[{shade[g['verdict']]}]{g['verdict']}[/]")
    out.print(table)
    spectrum = Table(title="spectrum (smallest first)", title_justify="left")
    for col, just in [("#", "right"), ("singular value", "right"), ("generator mixture", "left"), ("at floor", "left")]:
        spectrum.add_column(col, justify=just)
    for k, s in enumerate(result["spectrum"], 1):
        spectrum.add_row(str(k), _fmt(s["value"]), escape(s["text"]), "yes" if s["at_floor"] else "no")
    out.print(spectrum)
    if result.get("layers"):
        per_layer = Table(title="layers (each output's own Lie derivative, relative to its spread)", title_justify="left")
        per_layer.add_column("layer", overflow="fold")
        for g in result["generators"]:
            per_layer.add_column(escape(g["name"]), justify="right")
        for layer in result["layers"]:
            per_layer.add_row(escape(layer["name"]), *(f"{_fmt(g['value'])} [{shade[g['verdict']]}]{g['verdict']}[/]" for g in layer["generators"]))
        out.print(per_layer)
    elif "layers_reason" in result:
        out.print(f"layers: n/a ({result['layers_reason']})", markup=False, highlight=False)
    out.print(f"floor {_fmt(result['floor'])} ({result['method']}); learned <= {th['learned']:.3g} "
              f"(max of {th['floor_factor']:g} x floor and {th['learned_at']:g}), not >= {th['not_at']:g}; "
              f"values: {result['normalisation']}", markup=False, highlight=False)
    for note in result["notes"]:
        out.print(f"note: {note}", style="dim", markup=False, highlight=False)
    out.print(f"wrote {folder / 'result.json'} and {html}", markup=False)


def _version(value: bool) -> None:
    if value:
        out.print(f"eqaudit {__version__}")
        raise typer.Exit()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings (torch's UserWarnings and the like) are captured: one line each with --verbose,
    nothing otherwise, so the verdict or the one-line error stays the last thing printed."""
    if State.verbose:
        first = str(message).strip().splitlines()[0] if str(message).strip() else ""
        err.print(f"warning: {category.__name__}: {first} ({Path(filename).name}:{lineno})", markup=False, highlight=False, soft_wrap=True)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")] = False,
) -> None:
    """Audit trained models for symmetry."""
    import warnings

    State.verbose = False
    warnings.showwarning = _show_warning


for _info in app.registered_commands:  # every command gets the plain help of _Command
    if _info.cls in (None, typer.core.TyperCommand):
        _info.cls = _Command


def main() -> None:
    try:
        app(prog_name="eqaudit")
    except EqauditError as exc:  # pragma: no cover - commands catch their own
        err.print(f"error: {exc}", markup=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
