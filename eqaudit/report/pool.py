"""The report's drawing pool: figures drawn in worker processes forked from a warm fork server, and drawn
ahead during a scan as its symmetries finish, so that the report after the sweep draws little.

A figure is a pure function of its recipe (a plots function, its arguments, the output kind and name),
so a figure drawn from a checkpoint of the scan is the final figure whenever the final report asks for
the same recipe (same pickled arguments): the final render takes it instead of drawing it again, and
draws everything else (e.g. figures that a later model or symmetry changed). The bytes are those of a
figure drawn in the final render, whichever process drew them.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

Recipe = tuple[Callable[..., Any], tuple, dict]  # a plots function, its positional and keyword arguments
Job = tuple[Recipe, str, str]  # recipe, "png" or "svg", figure name (the SVG's id salt)
MIN_JOBS_PER_WORKER = 6  # a forked worker loads its fonts before its first figure: not worth it for fewer
MAX_WORKERS = 8
PRELOAD = ["matplotlib.figure", "matplotlib.backends.backend_agg", "eqaudit.report.plots"]
PNG_DPI = 96


def draw(job: Job) -> bytes | str:
    """One figure: PNG bytes or inline SVG text (top level, so worker processes can run it)."""
    from . import plots

    (make, args, kwargs), kind, name = job
    fig = make(*args, **kwargs)
    return plots.to_png(fig, dpi=PNG_DPI) if kind == "png" else plots.to_svg(fig, salt=name)


def key(job: Job) -> str:
    """A digest of everything a figure is drawn from (equal digests, equal figures)."""
    (make, args, kwargs), kind, name = job
    blob = pickle.dumps((make.__module__, make.__qualname__, args, kwargs, kind, name), protocol=pickle.HIGHEST_PROTOCOL)
    return hashlib.sha256(blob).hexdigest()


def report_workers(n_jobs: int) -> int:
    """Processes worth starting for ``n_jobs`` figures: one per available CPU, at most one per
    MIN_JOBS_PER_WORKER figures; 1 (draw here) where fork is not the platform's safe default."""
    if sys.platform != "linux":
        return 1
    return max(1, min(_cpus(), MAX_WORKERS, n_jobs // MIN_JOBS_PER_WORKER))


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def _context():
    """Workers forked from a fork server, which starts clean and preloads matplotlib and the plotting code: a
    plain fork of the scanning process would copy the threads' locks of torch and onnxruntime, and a child
    that frees an inherited session can wait forever on a lock whose owner was not copied."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_server() -> None:
    """Start the fork server now (it imports matplotlib in its own process, e.g. while this one imports
    torch), so that the first pool forks warm workers at once. Nothing happens off Linux."""
    if sys.platform != "linux":
        return
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


class _Ahead:
    """The pool of a scan that draws ahead: one executor for the scan and its final render, and the
    figures submitted so far by digest."""

    def __init__(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.workers = max(1, min(_cpus(), MAX_WORKERS))
        self.executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=_context())
        self.futures: dict[str, Future] = {}
        self.symmetries = 0  # symmetry entries of the last checkpoint queued

    def submit(self, jobs: list[Job]) -> list[Future]:
        """Each job's figure, queued unless an equal one is."""
        out = []
        for job in jobs:
            k = key(job)
            if k not in self.futures:
                self.futures[k] = self.executor.submit(draw, job)
            out.append(self.futures[k])
        return out

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.futures.clear()


_ahead: _Ahead | None = None


def draw_ahead() -> None:
    """From now on, draw each checkpoint's figures in the background (:func:`submit_checkpoint`) and let the
    next :func:`draw_all` take them. Starts the fork server at once. Linux only (elsewhere: no effect)."""
    global _ahead
    if sys.platform != "linux" or _cpus() < 2:
        return
    start_server()
    if _ahead is None:
        _ahead = _Ahead()


def stop_ahead() -> None:
    """Drop what was queued ahead (a scan that stopped draws no report)."""
    global _ahead
    ahead, _ahead = _ahead, None
    if ahead is not None:
        ahead.close()


def submit_checkpoint(result, out_dir: Path) -> None:
    """Queue the figures of a checkpoint written to ``out_dir`` (result.json's orbit table on disk) that are
    not queued yet. Figures of a partial result that the final one changes are simply drawn again then, so a
    checkpoint the report cannot draw from yet is skipped (the final render reports any real problem)."""
    if _ahead is None or len(result.symmetries) == _ahead.symmetries:
        return  # nothing new finished (e.g. the final write of the last checkpoint): the final render draws what changed
    _ahead.symmetries = len(result.symmetries)
    from .html import figure_jobs

    try:
        jobs = figure_jobs(result, Path(out_dir))
    except Exception:  # noqa: BLE001 - drawing ahead is an optimisation; the final render draws and raises
        return
    _ahead.submit(jobs)


def draw_all(jobs: list[Job], workers: int | None = None) -> list[bytes | str]:
    """Draw ``jobs`` in order. Each figure is a pure function of its arguments, so drawing them in forked
    processes (matplotlib is single-threaded), or ahead from a checkpoint with the same arguments, gives
    the same bytes as drawing them here. Ends drawing ahead."""
    global _ahead
    ahead, _ahead = _ahead, None
    try:
        if ahead is not None and workers != 1:
            return [f.result() for f in ahead.submit(jobs)]
        n = report_workers(len(jobs)) if workers is None else max(1, int(workers))
        if n <= 1 or len(jobs) < 2:
            return [draw(job) for job in jobs]
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=n, mp_context=_context()) as pool:
            return list(pool.map(draw, jobs, chunksize=max(1, len(jobs) // (4 * n))))
    finally:
        if ahead is not None:
            ahead.close()
