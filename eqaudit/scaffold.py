"""``eqaudit init``: a starter ``[tool.eqaudit]`` block and a GitHub Actions workflow that runs the scan, without clobbering files.

Rules: the block is appended to ``pyproject.toml`` when that file has no ``[tool.eqaudit]`` table yet
(created when there is no pyproject.toml: tools such as pytest and ruff read their settings from it
too); an existing table is never touched, and the block is returned for the user to merge instead.
The workflow is written to ``.github/workflows/eqaudit.yml`` unless that file exists (``force``
overwrites it). Every value written is checked first (symmetry specs, gates), so the files work as
written.
"""

from __future__ import annotations

import json
import os
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

WORKFLOW = Path(".github/workflows/eqaudit.yml")
REPORT_DIR = "reports/eqaudit"
PLACEHOLDER_MODEL = "path/to/model.pt"


@dataclass
class InitOutcome:
    """What init did: files written, files left alone (with why), and the block when it was not written."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    block: str = ""
    block_written: bool = False
    notes: list[str] = field(default_factory=list)


def _toml(v: object) -> str:
    """A TOML value for a string or a list of strings (JSON string escapes are valid TOML)."""
    if isinstance(v, str):
        return json.dumps(v)
    return "[" + ", ".join(json.dumps(x) for x in v) + "]"


def _relative(path: str, root: Path) -> str:
    """A path given relative to the current folder, rewritten relative to ``root`` (where the config lives)."""
    head, sep, key = path, "", ""
    if not Path(path).exists() and ":" in path:
        head, _, key = path.rpartition(":")
        sep = ":"
    p = Path(head)
    absolute = p if p.is_absolute() else Path.cwd() / p
    try:
        rel = os.path.relpath(absolute, root.resolve())
    except ValueError:  # another drive on Windows
        rel = str(absolute)
    return Path(rel).as_posix() + sep + key


def _inside(path: Path, root: Path) -> bool:
    """True when ``path`` (relative to the current folder, or absolute) lies in ``root`` or below it."""
    absolute = (path if path.is_absolute() else Path.cwd() / path).resolve()
    return absolute.is_relative_to(root.resolve())


def starter_block(
    root: Path,
    *,
    data: str | None = None,
    symmetry: list[str] | None = None,
    gates: list[str] | None = None,
    model_factory: str | None = None,
    has_sidecar: bool = False,
) -> str:
    """The ``[tool.eqaudit]`` block: given values active, the rest as commented examples."""
    from .gates import parse_gate
    from .symmetries import parse_symmetry

    specs = [parse_symmetry(s).spec for s in (symmetry or ["rot90", "flip"])]
    gate_texts = [parse_gate(g).text() for g in (gates or [])]
    lines = [
        "[tool.eqaudit]",
        "# Settings for `eqaudit scan` (written by `eqaudit init`). Paths are relative to this file.",
        "# Precedence, lowest first: these < MODEL.eqaudit.toml next to the model (or --config) < EQAUDIT_* < flags.",
    ]
    if has_sidecar:
        lines.append("# The model has a sidecar MODEL.eqaudit.toml: settings there override the ones here.")
    lines.append(f"data = {_toml(_relative(data, root))}" if data else '# data = "data/test.npz"            # .npz with x (and y), .npy, .pt or an image folder')
    lines.append(f"symmetry = {_toml(specs)}")
    lines.append(f"model_factory = {_toml(model_factory)}" if model_factory
                 else '# model_factory = "mypkg.models:Net"  # the architecture, for state-dict checkpoints')
    lines += [
        "# Gates: [SYMMETRY:]METRIC <= VALUE (errors) or >= VALUE (accuracy, level); no SYMMETRY = every symmetry.",
        "# Gate level_ci_low instead of level to pass only when the whole confidence interval clears the bound.",
    ]
    if gate_texts:
        lines.append(f"gates = {_toml(gate_texts)}")
    else:
        lines.append('# gates = ["rot90:flip_rate <= 0.01", "prob_tv <= 0.05", "level_ci_low >= 0.9"]')
    lines += [
        '# fail_over = { flip_rate = 0.05 }     # short form: every symmetry, in the metric\'s natural direction',
        '# baseline = "reports/baseline/result.json"   # fail when a metric gets worse than there by more than:',
        '# max_regression = { "*" = 0.01, level = "5%" }',
    ]
    return "\n".join(lines) + "\n"


def workflow_text(models: list[str]) -> str:
    """An example workflow: install, scan (gates fail the job), upload the report folder as an artifact."""
    cmd = " ".join(["eqaudit", "scan", *(shlex.quote(m) for m in models), "--out", REPORT_DIR, "--junit-xml", f"{REPORT_DIR}/junit.xml"])
    return f"""# Written by `eqaudit init`: audits the model's symmetries on every push and pull request.
# Gates come from [tool.eqaudit] in pyproject.toml (or MODEL.eqaudit.toml next to the model). A failed
# gate fails the job (exit code 1) and is annotated on the run; GitHub's step summary gets a table.
name: eqaudit
on:
  push:
  pull_request:
jobs:
  symmetry-audit:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        # with: {{lfs: true}}   # if the model is stored with Git LFS
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - name: Install eqaudit
        # the CPU build of torch first (small; the runner has no GPU), then eqaudit, as in eqaudit's README;
        # add your project (pip install -e .) if it provides the model's architecture
        run: |
          pip install torch --index-url https://download.pytorch.org/whl/cpu
          pip install eqaudit
      - name: Symmetry audit
        run: {cmd}
      - name: Upload the report
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: eqaudit-report
          path: {REPORT_DIR}/
          if-no-files-found: warn
"""


def init_project(
    root: Path,
    models: list[str] | None = None,
    *,
    data: str | None = None,
    symmetry: list[str] | None = None,
    gates: list[str] | None = None,
    model_factory: str | None = None,
    force: bool = False,
) -> InitOutcome:
    """Write the starter config and workflow under ``root`` (see the module docstring)."""
    from .config import sidecar_for

    root = Path(root)
    if not root.is_dir():
        from .errors import PathNotFoundError

        raise PathNotFoundError(f"Folder {str(root)!r} does not exist; pass an existing project folder with --dir.")
    outcome = InitOutcome()
    models = list(models or [])
    for m in models:
        if not _inside(Path(m), root):
            raise ConfigError(
                f"Expected the model inside the project folder {str(root.resolve())!r} (CI checks out only the repository), "
                f"got {m!r}, do copy the model into the repository (Git LFS for large files) and pass that path"
            )
    for m in models:
        if not Path(m).exists():
            outcome.notes.append(f"model {m!r} does not exist yet; the workflow scans it once it is committed")
    if data and not Path(data).exists() and not Path(data.rpartition(":")[0] or data).exists():
        outcome.notes.append(f"data {data!r} does not exist yet; the scan needs it")
    has_sidecar = any(sidecar_for(Path(m)).is_file() for m in models)
    outcome.block = starter_block(root, data=data, symmetry=symmetry, gates=gates, model_factory=model_factory, has_sidecar=has_sidecar)

    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        text = pyproject.read_text(encoding="utf-8")
        try:
            table = tomllib.loads(text).get("tool", {}).get("eqaudit")
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{str(pyproject)!r} is not valid TOML ({exc}); fix it before running eqaudit init.") from None
        if table is not None:
            outcome.skipped.append((pyproject, "already has a [tool.eqaudit] table (left unchanged; merge the block below by hand)"))
        else:
            sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
            pyproject.write_text(text + sep + outcome.block, encoding="utf-8")
            outcome.block_written = True
            outcome.written.append(pyproject)
    else:
        pyproject.write_text(outcome.block, encoding="utf-8")
        outcome.block_written = True
        outcome.written.append(pyproject)

    workflow = root / WORKFLOW
    if workflow.exists() and not force:
        outcome.skipped.append((workflow, "exists (pass --force to overwrite it)"))
    else:
        workflow.parent.mkdir(parents=True, exist_ok=True)
        rel_models = [_relative(m, root) for m in models] or [PLACEHOLDER_MODEL]
        workflow.write_text(workflow_text(rel_models), encoding="utf-8")
        outcome.written.append(workflow)
        if not models:
            outcome.notes.append(f"edit the model path ({PLACEHOLDER_MODEL}) in {WORKFLOW}")
    return outcome
