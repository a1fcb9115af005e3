"""The output folder of a scan: checked for writability up front, marked while a run is in progress, cleared of the previous run's outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .errors import ConfigError

MARKER = ".eqaudit-in-progress"
"""Written when a scan starts writing into a folder, removed when its result is complete: a folder
that still holds it after the run ended belongs to a run that was interrupted, failed or was killed."""

OUTPUT_FILES = ("result.json", "orbits.npz", "elements.csv", "report.html")
PLOTS_DIR = "plots"
_OWN_PLOT = re.compile(r"^[gs]\d+-.*\.(png|svg)$")  # the names eqaudit.report writes under plots/


def check_writable(folder: Path) -> None:
    """Prove that ``folder`` can be written (or created) without creating it; ConfigError (exit 2) if
    not: a file in its place, a path under a file, a read-only folder or file system."""
    folder = Path(folder)
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == folder else f"is under {str(parent)!r}, which is a file"
            raise ConfigError(f"Output folder {str(folder)!r} {what}; expected a folder, pass --out DIR with a new or existing folder.")
    existing = next(p for p in [folder, *folder.parents] if p.exists() or p == Path(p.anchor) or str(p) == ".")
    try:  # a file where the folder is, or a sub-folder of the nearest folder that exists above it
        if existing == folder:
            fd, probe = tempfile.mkstemp(prefix=".eqaudit-probe.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".eqaudit-probe.", dir=existing))
    except OSError as exc:
        raise ConfigError(f"Output folder {str(folder)!r} is not writable ({exc.strerror or exc}); "
                          "pass --out DIR with a folder you can write to.") from None


def read_marker(folder: Path) -> dict | None:
    """What the in-progress marker of ``folder`` says (``started``, ``pid``), or None without one."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    return info if isinstance(info, dict) else {}


def describe_marker(folder: Path, info: dict) -> str:
    """One sentence naming an unfinished run found in ``folder``."""
    when = info.get("started", "an unknown time")
    pid = f" by process {info['pid']}" if "pid" in info else ""
    return f"a scan into {str(folder)!r} started at {when}{pid} did not finish (interrupted, failed or killed)"


def start(folder: Path, *, keep: bool) -> dict | None:
    """Mark ``folder`` as holding a run in progress; unless ``keep`` (a resumed run), first remove the
    previous run's outputs (result, orbit table, CSV, report and eqaudit's plots; other files stay).
    Returns what an earlier unfinished run's marker said (None: the folder held no unfinished run)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    previous = read_marker(folder)
    if not keep:
        for name in OUTPUT_FILES:
            (folder / name).unlink(missing_ok=True)
        plots = folder / PLOTS_DIR
        if plots.is_dir():
            for p in plots.iterdir():
                if p.is_file() and _OWN_PLOT.match(p.name):
                    p.unlink(missing_ok=True)
            if not any(plots.iterdir()):
                shutil.rmtree(plots, ignore_errors=True)
    info = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pid": os.getpid()}
    from .report.io import write_text_atomic

    write_text_atomic(folder / MARKER, json.dumps(info) + "\n")
    return previous


def finish(folder: Path) -> None:
    """The run's result is complete: remove the in-progress marker."""
    (Path(folder) / MARKER).unlink(missing_ok=True)
