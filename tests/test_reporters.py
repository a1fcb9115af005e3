"""Outputs behind one Reporter interface, chosen by --format; commands that need no model never import torch."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from conftest import ROOT, factory
from eqaudit.cli import app
from eqaudit.errors import ConfigError
from eqaudit.report.base import FORMATS, parse_formats, selected

runner = CliRunner()


def scan_args(model_files, data_npz, out, *extra):
    return ["scan", str(model_files["SmallCNN"]), "--model-factory", factory("SmallCNN"), "--data", str(data_npz),
            "-s", "rot90", "--out", str(out), "--quiet", *map(str, extra)]


def test_format_lists_parse_and_json_is_always_written():
    assert parse_formats("csv, JSON") == ["json", "csv"]  # canonical order, case-insensitive
    assert parse_formats(["html", "junit"]) == ["html", "junit"]
    assert parse_formats("all") == list(FORMATS) == parse_formats([])
    assert selected(["csv"]) == ["json", "csv"]  # result.json is the contract
    assert selected(["html"]) == ["json", "orbits", "html"]  # the page is drawn from the orbit table
    with pytest.raises(ConfigError, match=r"got 'htm'; did you mean 'html'"):
        parse_formats("json,htm")


def test_scan_writes_only_the_selected_outputs(model_files, data_npz, tmp_path):
    out = tmp_path / "o"
    junit = tmp_path / "junit.xml"
    res = runner.invoke(app, scan_args(model_files, data_npz, out, "--format", "csv,junit", "--junit-xml", junit,
                                       "--gate", "rot90:flip_rate<=1"))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["elements.csv", "result.json"]
    assert ET.parse(junit).getroot().get("tests") == "1"
    assert json.loads((out / "result.json").read_text())["settings"]["values"]["format"] == ["csv", "junit"]
    # written without pandas, the CSV reads as pandas writes it
    from eqaudit.report.csvfile import elements_frame
    from eqaudit.result import AuditResult

    assert (out / "elements.csv").read_text() == elements_frame(AuditResult.load(out / "result.json")).to_csv(index=False)
    # the same scan with the defaults writes everything, and --format without junit leaves no JUnit file
    res = runner.invoke(app, scan_args(model_files, data_npz, tmp_path / "all", "--junit-xml", tmp_path / "all.xml"))
    assert res.exit_code == 0, res.output
    assert {"elements.csv", "orbits.npz", "report.html", "result.json", "plots"} <= {p.name for p in (tmp_path / "all").iterdir()}
    res = runner.invoke(app, scan_args(model_files, data_npz, tmp_path / "j", "--format", "json", "--junit-xml", tmp_path / "no.xml"))
    assert res.exit_code == 0 and not (tmp_path / "no.xml").exists()
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == ["result.json"]


def test_unknown_format_is_a_usage_error(model_files, data_npz, tmp_path):
    res = runner.invoke(app, scan_args(model_files, data_npz, tmp_path / "o", "--format", "pdf"))
    assert res.exit_code == 2 and "pdf" in res.output and "json, orbits, csv" in res.output
    assert not (tmp_path / "o").exists()


LIGHT = """
import sys
from typer.testing import CliRunner
from eqaudit.cli import app
res = CliRunner().invoke(app, sys.argv[1:])
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib', 'pandas', 'onnxruntime'})
print(res.exit_code, ','.join(heavy) or 'none')
"""


@pytest.mark.parametrize("argv", [["--help"], ["symmetries"], ["compare", "--help"], ["scan", "--help"], ["compare", "BASE", "BASE"]])
def test_commands_that_run_no_model_never_import_torch(argv, tmp_path):
    """The catalogue, compare and help run in a fresh interpreter without loading torch (or the report's
    plotting), so they start in a fraction of `import torch`'s time."""
    if "BASE" in argv:
        from test_ci import make_result

        base = tmp_path / "base.json"
        make_result().save(base)
        argv = [str(base) if a == "BASE" else a for a in argv]
    run = subprocess.run([sys.executable, "-c", LIGHT, *argv], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "0 none"


@pytest.mark.slow  # worker processes and a whole scan
def test_scan_draws_the_report_figures_ahead_as_a_serial_render_would(model_files, data_npz, tmp_path, monkeypatch):
    """`eqaudit scan` queues each checkpoint's figures while it sweeps (eqaudit.report.pool); the report's
    plots are the bytes a serial re-render of the saved result writes, and nothing stays queued after."""
    from eqaudit.report import pool, render
    from eqaudit.result import AuditResult

    queued = []
    submit = pool.submit_checkpoint
    monkeypatch.setattr(pool, "submit_checkpoint",
                        lambda result, out_dir: (queued.append(len(result.symmetries)) if pool._ahead is not None else None,
                                                 submit(result, out_dir)))
    out = tmp_path / "o"
    res = runner.invoke(app, [*scan_args(model_files, data_npz, out), "-s", "flip"])
    assert res.exit_code == 0, res.output
    assert queued[:2] == [1, 2] and pool._ahead is None  # after each symmetry, during the scan; closed by the report
    serial = tmp_path / "serial"
    render(AuditResult.load(out / "result.json"), serial, source=out, workers=1)
    files = sorted(p.name for p in (serial / "plots").iterdir())
    assert len(files) > 6 and files == sorted(p.name for p in (out / "plots").iterdir())
    assert all((serial / "plots" / f).read_bytes() == (out / "plots" / f).read_bytes() for f in files)
