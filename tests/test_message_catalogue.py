"""docs/messages.md lists every error the CLI can print (exit code, message, fix) and is up to date with the code."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from eqaudit.cli import app

_spec = importlib.util.spec_from_file_location("eqaudit_messages_tool", ROOT / "tools" / "messages.py")
messages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(messages)

CATALOGUE = ROOT / "docs" / "messages.md"


def test_catalogue_is_up_to_date():
    assert CATALOGUE.read_text() == messages.build(), "docs/messages.md is out of date; run: python tools/messages.py"


def test_every_error_raised_in_the_source_is_in_the_catalogue():
    """Independently of the generator's parser: the literal start of every XxxError("...") in the package."""
    names = "|".join(messages.error_classes())
    text = CATALOGUE.read_text().replace("\\|", "|")
    found = 0
    for path in (ROOT / "eqaudit").rglob("*.py"):
        source = path.read_text()
        for m in re.finditer(rf"\b(?:{names})\(\s*f?\"([^\"{{\\]{{12,}})", source):
            found += 1
            assert m.group(1) in text, (path.name, m.group(1))
    assert found > 100  # the scan itself works


def test_every_row_has_an_exit_code_and_a_fix():
    rows = messages.extract()
    assert rows and {r["exit"] for r in rows} <= {2, 3}
    assert [r for r in rows if not r["fix"]] == []
    for start in messages.FIXES:  # no stale hand-written fix
        assert any(r["message"].startswith(start) for r in rows), start
    cli = (ROOT / "eqaudit" / "cli.py").read_text()
    for *_, needle in messages.CLI_ROWS:
        assert needle in cli, needle


def _templates() -> list[tuple[int, re.Pattern]]:
    """(exit code, regex) per catalogue row: literal text, with <...> matching any value."""
    out = []
    for code, row in [(int(r["exit"]), r["message"]) for r in messages.extract()]:
        parts = re.split(r"<[^<>]*>", row)
        if not "".join(parts).strip():
            continue  # a message built elsewhere (listed there)
        out.append((code, re.compile("^" + ".*?".join(re.escape(p) for p in parts) + "$", re.S)))
    return out


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cat")
    (d / "random.npz").write_bytes(np.random.default_rng(0).bytes(200))
    (d / "latin1.toml").write_bytes('symmetry = ["rot90"]\ndata = "é"\n'.encode("latin-1"))
    return d


def test_what_the_cli_prints_is_a_catalogue_row_with_its_exit_code(bad_inputs):
    model = ROOT / "sample_models" / "digits_cnn.pt"
    cases = [
        ["-s", "rot45"],
        ["-s", "scale:steps=100000"],
        ["--data", bad_inputs / "random.npz", "-s", "rot90"],
        ["--config", bad_inputs / "latin1.toml"],
        ["--batch-size", "-3"],
    ]
    templates = _templates()
    for args in cases:
        res = CliRunner().invoke(app, ["scan", str(model), *map(str, args), "--quiet", "--out", str(bad_inputs / "o")])
        line = res.output.strip().splitlines()[-1]
        assert line.startswith("error: "), (args, res.output)
        message = line[len("error: "):]
        codes = {code for code, rx in templates if rx.match(message)}
        assert res.exit_code in codes, (args, res.exit_code, message)
