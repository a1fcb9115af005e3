"""Messages that say what is wrong: element limits that agree with their messages, config values blamed
on their file, a batch-dependent model blamed on the model, third-party warnings only with --verbose."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from eqaudit.api import scan
from eqaudit.cli import app
from eqaudit.config import resolve
from eqaudit.errors import ConfigError, DataError, ModelRunError, SymmetryError
from eqaudit.symmetries import parse_symmetry
from eqaudit.symmetries.base import MAX_ELEMENTS


@pytest.mark.parametrize(
    "accepted, refused, stated",
    [
        # (the largest value accepted, one more, what the refusal says is valid)
        ("scale:steps=99999", "scale:steps=100000", "(99999 without)"),  # 1.0 is added when the factors miss it
        ("scale:min=1,max=2,steps=100000", "scale:min=1,max=2,steps=100001", "steps <= 100000"),  # 1.0 among them
        ("so3:n=99999", "so3:n=100000", "n <= 99999"),  # plus the identity
        ("so3:n=99976,grid=octahedral", "so3:n=99977,grid=octahedral", "n <= 99976"),  # plus 24 grid rotations
        ("o3:n=49999", "o3:n=50000", "n <= 49999"),  # each rotation also with the point reflection
        ("translate:max=49999,axis=x", "translate:max=50000,axis=x", "at most 100000 shifts for 'translate', got 100001"),
    ],
)
def test_every_stated_limit_is_the_real_one(accepted, refused, stated):
    assert parse_symmetry(accepted).n_elements <= MAX_ELEMENTS
    with pytest.raises(SymmetryError) as info:
        parse_symmetry(refused)
    assert stated in str(info.value), str(info.value)


def test_the_steps_message_names_the_largest_accepted_value():
    with pytest.raises(SymmetryError) as info:
        parse_symmetry("scale:steps=0")
    text = str(info.value)
    assert f"steps <= {MAX_ELEMENTS} with 1.0 among the factors ({MAX_ELEMENTS - 1} without)" in text
    parse_symmetry(f"scale:steps={MAX_ELEMENTS - 1}")  # what it promises holds


@pytest.mark.parametrize("key, value", [("batch_size", "-4"), ("batch-size", "0"), ("limit", "-1")])
def test_a_bad_count_in_a_sidecar_names_the_file_and_the_key(tmp_path, key, value):
    model = tmp_path / "net.pt"
    model.write_bytes(b"")
    sidecar = tmp_path / "net.eqaudit.toml"
    sidecar.write_text(f"{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        resolve({}, models=[model], env={}, cwd=tmp_path)
    text = str(info.value)
    assert str(sidecar) in text and key.replace("-", "_") in text and ">= 1" in text, text
    assert "--batch-size" not in text and "--limit" not in text


def test_a_bad_count_on_the_command_line_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--batch-size"):
        resolve({"batch_size": -2}, models=[], env={}, cwd=tmp_path)


BATCH_MODELS = '''
import warnings
import torch
from torch import nn


class BatchWide(nn.Module):
    """(B, B) "class scores": the output width follows the batch size."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        s = x.flatten(1).sum(1, keepdim=True) * self.w
        return s * torch.ones(1, x.shape[0])


class Noisy(nn.Module):
    """A fine 3-class model that emits a two-line UserWarning on every call, as torch often does."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        warnings.warn("TypedStorage is deprecated-ish.\\nSecond line of the warning.", UserWarning)
        return self.fc(x.flatten(1))
'''


@pytest.fixture
def batch_files(tmp_path):
    (tmp_path / "batch_models.py").write_text(BATCH_MODELS)
    g = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=g.random((8, 1, 4, 4), dtype=np.float32), y=np.arange(8) % 5)
    torch.save({"w": torch.ones(1)}, tmp_path / "wide.pt")
    torch.manual_seed(0)
    sd = {f"fc.{k}": v for k, v in torch.nn.Linear(16, 3).state_dict().items()}
    torch.save(sd, tmp_path / "noisy.pt")
    return tmp_path


def test_a_class_count_that_follows_the_batch_size_is_the_models_fault(batch_files):
    with pytest.raises(ModelRunError) as info:
        scan(batch_files / "wide.pt", data=str(batch_files / "data.npz"), symmetry=["rot90"], batch_size=6,
             model_factory=f"{batch_files / 'batch_models.py'}:BatchWide", out=str(batch_files / "o"), device="cpu")
    text = str(info.value)
    assert "batch size" in text and "wide.pt" in text and "(R, 2)" in text, text
    assert not isinstance(info.value, DataError)


def test_labels_beyond_a_fixed_class_count_are_still_the_datas_fault(batch_files):
    with pytest.raises(DataError, match="Labels"):  # a steady 3-class model, labels up to 4
        scan(batch_files / "noisy.pt", data=str(batch_files / "data.npz"), symmetry=["rot90"],
             model_factory=f"{batch_files / 'batch_models.py'}:Noisy", out=str(batch_files / "o"), device="cpu")


def test_third_party_warnings_show_only_with_verbose(batch_files):
    # labels up to 4 for a 3-class model: the run stops after the first model call (which warns) with one line
    args = ["scan", str(batch_files / "noisy.pt"), "--data", str(batch_files / "data.npz"), "-s", "rot90", "--quiet",
            "--model-factory", f"{batch_files / 'batch_models.py'}:Noisy", "--out", str(batch_files / "o")]
    runner = CliRunner()
    quiet = runner.invoke(app, args)
    assert quiet.exit_code == 3, quiet.output
    assert "TypedStorage" not in quiet.output and "UserWarning" not in quiet.output
    assert quiet.output.strip().splitlines()[-1].startswith("error: Labels"), quiet.output  # the one line, last
    loud = runner.invoke(app, [*args, "--verbose"])
    assert loud.exit_code == 3, loud.output
    lines = [ln for ln in loud.output.splitlines() if "TypedStorage" in ln]
    assert lines and all(ln.startswith("warning: UserWarning:") for ln in lines), loud.output
    assert "Second line" not in loud.output  # one line each
