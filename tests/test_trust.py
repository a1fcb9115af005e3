"""Trust is one rule: code that came with a model (a sidecar's factory outside the project) runs only with --trust."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from eqaudit.cli import app
from eqaudit.config import find_pyproject

runner = CliRunner()

# A tiny classifier in a module that leaves a marker file beside itself when it is imported.
HELPER = '''
import pathlib
import torch
from torch import nn

pathlib.Path(__file__).with_name("MARKER").write_text("helper.py ran")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))
'''


class _Net(torch.nn.Module):  # the same architecture, to write the state dict
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 3)


def _model_folder(folder: Path, sidecar: bool = True) -> Path:
    """helper.py, model.pt (a state dict), data.npz and (optionally) the sidecar naming helper:Net."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "helper.py").write_text(HELPER)
    torch.manual_seed(0)
    torch.save(_Net().state_dict(), folder / "model.pt")
    g = np.random.default_rng(0)
    np.savez(folder / "data.npz", x=g.random((6, 1, 4, 4), dtype=np.float32), y=g.integers(0, 3, 6))
    if sidecar:
        (folder / "model.eqaudit.toml").write_text('model_factory = "helper:Net"\ndata = "data.npz"\nsymmetry = ["rot90"]\n')
    return folder / "model.pt"


@pytest.fixture(autouse=True)
def _fresh_helper():
    """Each scan must import helper.py afresh (a module already imported would not run again)."""
    sys.modules.pop("helper", None)
    yield
    sys.modules.pop("helper", None)


def scan(*args, env=None):
    res = runner.invoke(app, ["scan", *map(str, args), "--quiet"], env=env)
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes is not None else "")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The current directory is a project (its own pyproject.toml); a downloaded model lies outside it."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "pyproject.toml").write_text('[project]\nname = "mine"\n')
    monkeypatch.chdir(proj)
    monkeypatch.delenv("EQAUDIT_TRUST", raising=False)
    return proj


def test_sidecar_factory_from_a_downloaded_folder_needs_trust(project, tmp_path):
    model = _model_folder(tmp_path / "download")
    marker = model.with_name("MARKER")
    code, output = scan(model, "--out", tmp_path / "o1")
    assert code == 3, output
    assert "helper.py" in output and "--trust" in output and "EQAUDIT_TRUST=1" in output, output
    assert not marker.exists()  # nothing from the folder was imported

    code, output = scan(model, "--out", tmp_path / "o2", "--trust")
    assert code == 0, output
    assert marker.read_text() == "helper.py ran"

    marker.unlink()
    sys.modules.pop("helper", None)
    code, output = scan(model, "--out", tmp_path / "o3", env={"EQAUDIT_TRUST": "1"})
    assert code == 0, output
    assert marker.exists()


def test_a_factory_file_named_by_a_sidecar_is_refused_as_well(project, tmp_path):
    model = _model_folder(tmp_path / "download")
    model.with_name("model.eqaudit.toml").write_text('model_factory = "helper.py:Net"\ndata = "data.npz"\nsymmetry = ["rot90"]\n')
    code, output = scan(model, "--out", tmp_path / "o")
    assert code == 3 and "helper.py" in output, output
    assert not model.with_name("MARKER").exists()


def test_a_config_file_naming_outside_code_is_refused(project, tmp_path):
    model = _model_folder(tmp_path / "download", sidecar=False)
    config = tmp_path / "download" / "audit.toml"
    config.write_text('model_factory = "helper:Net"\ndata = "data.npz"\nsymmetry = ["rot90"]\n')
    code, output = scan(model, "--config", config, "--out", tmp_path / "o")
    assert code == 3 and "helper.py" in output and str(config) in output, output
    assert not model.with_name("MARKER").exists()


def test_factory_named_on_the_command_line_is_vouched_for(project, tmp_path):
    model = _model_folder(tmp_path / "download")
    code, output = scan(model, "--model-factory", "helper:Net", "--out", tmp_path / "o")
    assert code == 0, output
    assert model.with_name("MARKER").exists()


def test_factory_in_the_projects_own_pyproject_runs_without_trust(project, tmp_path):
    model = _model_folder(project / "models", sidecar=False)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "mine"\n[tool.eqaudit]\nmodel_factory = "models/helper.py:Net"\ndata = "models/data.npz"\nsymmetry = ["rot90"]\n'
    )
    code, output = scan("models/model.pt", "--out", tmp_path / "o")
    assert code == 0, output
    assert model.with_name("MARKER").exists()


def test_a_sidecar_inside_the_project_is_vouched_for(project, tmp_path):
    model = _model_folder(project / "models")
    code, output = scan("models/model.pt", "--out", tmp_path / "o")
    assert code == 0, output
    assert model.with_name("MARKER").exists()


def test_without_a_project_no_sidecar_factory_is_vouched_for(tmp_path, monkeypatch):
    here = tmp_path / "anywhere"
    here.mkdir()
    if find_pyproject(here) is not None:
        pytest.skip("a pyproject.toml above the temporary folder makes it a project")
    monkeypatch.chdir(here)
    monkeypatch.delenv("EQAUDIT_TRUST", raising=False)
    model = _model_folder(here)  # even in the current directory: no project vouches for it
    code, output = scan("model.pt", "--out", tmp_path / "o")
    assert code == 3 and "helper.py" in output and "no pyproject.toml" in output, output
    assert not model.with_name("MARKER").exists()
