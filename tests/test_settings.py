"""Every setting is declared once (eqaudit.config.SETTINGS): the options of scan and discover, the flags
they pass on, config-file keys, the fingerprint's split and docs/settings.md all follow that table."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from eqaudit import config as config_module
from eqaudit.cli import app
from eqaudit.config import SETTINGS, resolve
from eqaudit.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
OWN = {  # each command's options that are not settings
    "scan": {"--config", "--resume", "--quiet", "-q", "--verbose", "-v", "--help"},
    "discover": {"--algebra", "--learned-at", "--not-at", "--floor-factor", "--layers", "--config", "--quiet", "-q",
                 "--verbose", "-v", "--help"},
}
runner = CliRunner()


def _declared(command: str) -> list:
    return [s for s in SETTINGS.values() if command in s.commands]


def _names(s) -> set[str]:
    """The option names a setting declares: --NAME (and --no-NAME for an on-off pair) and its short alias."""
    return {s.option, *([f"--no-{s.option[2:]}"] if s.kind == "on-off" else []), *([s.short] if s.short else [])}


def _flat(text: str) -> str:
    return re.sub(r"-\s+", "-", " ".join(text.split()))  # help wraps, also after a hyphen


@pytest.mark.parametrize("command", ["scan", "discover"])
def test_help_lists_exactly_the_settings_of_the_table(command):
    res = runner.invoke(app, [command, "--help"], prog_name="eqaudit", env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    listed = set()
    for line in res.output.split("Options:")[1].splitlines():  # "  -d, --data TEXT   help" / "  --prefetch / --no-prefetch"
        head = re.match(r"\s+(-[-\w]+(?:(?:, | / )-[-\w]+)*)", line)
        if head:
            listed |= set(re.split(r", | / ", head.group(1)))
    expected = set().union(*(_names(s) for s in _declared(command)))
    assert listed - OWN[command] == expected
    flat = _flat(res.output)
    for s in _declared(command):
        if not (command == "discover" and s.name == "out"):  # discover shows its own default folder
            assert _flat(s.help_text()) in flat, s.name
    cmd = typer.main.get_command(app).commands[command]
    params = {p.name: p for p in cmd.params}
    for s in _declared(command):
        assert set(params[s.name].opts + params[s.name].secondary_opts) == _names(s)


def test_scan_passes_each_option_to_resolve_under_its_key(monkeypatch, tmp_path):
    """Each setting's option reaches resolve under the setting's key, in the setting's form (a switch
    sets the opposite of its default); options not given are not passed."""
    seen = []

    def fake_resolve(flags, **kw):
        seen.append(dict(flags))
        raise ConfigError("stop here")

    monkeypatch.setattr(config_module, "resolve", fake_resolve)
    given = {"text": (["x"], "x"), "int": (["3"], 3), "number": (["0.5"], 0.5), "path": ([str(tmp_path / "p")], str(tmp_path / "p")),
             "list": (["a", "b"], ["a", "b"]), "on-off": ([], False)}
    argv, expect = ["model.pt"], {}
    for s in _declared("scan"):
        if s.kind == "switch":
            argv.append(s.option)
            expect[s.name] = not s.default
        elif s.kind == "on-off":
            argv.append(f"--no-{s.option[2:]}")
            expect[s.name] = False
        else:
            values, expect[s.name] = given[s.kind]
            for v in values:
                argv += [s.option, v]
    res = runner.invoke(app, ["scan", *argv])
    assert res.exit_code == 2 and "stop here" in res.output, res.output
    assert (tmp_path / "p").is_file()  # --junit-xml: a run that stopped before a verdict leaves its error there
    assert seen[-1] == expect
    res = runner.invoke(app, ["scan", "model.pt", "--layers"])  # --layers implies --local; nothing else given
    assert res.exit_code == 2
    assert {k: v for k, v in seen[-1].items() if v is not None} == {"layers": True, "local": True}
    assert set(seen[-1]) == {s.name for s in _declared("scan")}


def _sample(s):
    """A valid TOML value for a setting: its default, or a plain one where the default is None."""
    if s.default is not None:
        return s.default
    return 3 if s.kind == "int" else "x"


def test_a_config_file_accepts_exactly_the_settings_files_may_set(tmp_path):
    for s in SETTINGS.values():
        for key in {s.name, s.name.replace("_", "-")}:
            cfg = tmp_path / "cfg.toml"
            cfg.write_text(f"{key} = {json.dumps(_sample(s))}\n")
            if s.files_allowed:
                got = resolve({}, config_file=cfg, env={}, cwd=tmp_path)
                assert got.sources[s.name] == f"config {cfg}", key
            else:
                with pytest.raises(ConfigError, match=f"cannot be set in config.*{s.option}"):
                    resolve({}, config_file=cfg, env={}, cwd=tmp_path)
    cfg.write_text("not_a_setting = 1\n")
    with pytest.raises(ConfigError, match="Unknown setting 'not_a_setting'"):
        resolve({}, config_file=cfg, env={}, cwd=tmp_path)
    assert any(not s.files_allowed for s in SETTINGS.values())  # trust: a file next to a model cannot vouch for it


def test_every_setting_is_classified_for_the_fingerprint():
    from eqaudit.fingerprint import MEASUREMENT_SETTINGS, NOT_MEASURED, settings_digest

    assert set(MEASUREMENT_SETTINGS) == {k for k, s in SETTINGS.items() if s.measured}
    assert set(NOT_MEASURED) == {k for k, s in SETTINGS.items() if not s.measured}
    values = {k: s.default for k, s in SETTINGS.items()}
    assert set(settings_digest(values)) == set(MEASUREMENT_SETTINGS)
    assert {"symmetry", "seed", "task", "floor_samples"} <= set(MEASUREMENT_SETTINGS)
    assert {"device", "batch_size", "out", "gates", "trust", "cache"} <= set(NOT_MEASURED)


def test_help_names_every_value_the_code_accepts():
    """Help that lists values must list them all: tasks, formats, layouts and choices (no drift)."""
    from eqaudit.layouts import LAYOUT_NAMES
    from eqaudit.report.base import FORMATS
    from eqaudit.tasks import TASKS

    words = lambda name: set(re.findall(r"[\w-]+", SETTINGS[name].help))  # noqa: E731
    assert set(TASKS) <= words("task")
    assert set(FORMATS) <= words("format")
    assert set(LAYOUT_NAMES) <= words("layout")
    for s in SETTINGS.values():
        assert set(s.choices) <= set(re.findall(r"[\w-]+", s.help)), s.name


def test_docs_settings_md_is_up_to_date():
    spec = importlib.util.spec_from_file_location("eqaudit_settings_tool", ROOT / "tools" / "settings.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    text = tool.build()
    assert (ROOT / "docs" / "settings.md").read_text() == text, "docs/settings.md is out of date; run: python tools/settings.py"
    for s in SETTINGS.values():
        assert f"| `{s.name}` |" in text
