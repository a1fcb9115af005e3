"""Settings precedence: defaults < pyproject < sidecar/--config < environment < flags, with sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from eqaudit.config import parse_input_shape, plain_values, resolve
from eqaudit.errors import ConfigError, PathNotFoundError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.eqaudit]\nseed = 1\nbatch_size = 11\nlimit = 5\ndata = "p.npz"\nmax_regression = 0.05\njunit-xml = "ci/junit.xml"\n'
        '[tool.eqaudit.gates]\n"*" = "prob_tv <= 0.1"\nrot90 = ["flip_rate <= 1%", "level_ci_low >= 0.9"]\n'
    )
    models = tmp_path / "models"
    models.mkdir()
    (models / "net.pt").write_bytes(b"")
    (models / "net.eqaudit.toml").write_text(
        'seed = 2\nbatch_size = 22\ndata = "side.npz"\nsymmetry = ["rot90", "rotate:step=15,min=-90"]\nbaseline = "old/result.json"\n'
    )
    (tmp_path / "other.toml").write_text('seed = 3\ngates = ["flip:prob_tv<=0.2"]\nmax_regression = { "*" = 0.01, level = "5%" }\n')
    return tmp_path


@pytest.mark.parametrize(
    "flags, env, config, expect",
    [
        ({}, {}, None, {"seed": (2, "sidecar"), "batch_size": (22, "sidecar"), "limit": (5, "[tool.eqaudit]"), "device": ("auto", "default")}),
        ({}, {"EQAUDIT_SEED": "4"}, None, {"seed": (4, "env EQAUDIT_SEED"), "batch_size": (22, "sidecar")}),
        ({"seed": 5}, {"EQAUDIT_SEED": "4"}, None, {"seed": (5, "flag --seed")}),
        ({}, {}, "other.toml", {"seed": (3, "config"), "batch_size": (11, "[tool.eqaudit]")}),
        ({"symmetry": ["flip"]}, {}, None, {"symmetry": (["flip"], "flag --symmetry")}),
        ({}, {}, None, {"symmetry": (["rot90", "rotate:step=15,min=-90"], "sidecar")}),
        ({}, {"EQAUDIT_SYMMETRY": "rot90;flip:axis=v"}, None, {"symmetry": (["rot90", "flip:axis=v"], "env")}),
        ({}, {"EQAUDIT_FAIL_OVER": "flip_rate=0.1,prob_tv=0.2"}, None, {"fail_over": ({"flip_rate": 0.1, "prob_tv": 0.2}, "env")}),
        ({"trust": True}, {}, None, {"trust": (True, "flag --trust")}),
        # gates: a table keyed by symmetry in pyproject, a list in --config, ';'-separated in the environment, flags last
        ({}, {}, None, {"gates": (["prob_tv<=0.1", "rot90:flip_rate<=0.01", "rot90:level_ci_low>=0.9"], "[tool.eqaudit]")}),
        ({}, {}, "other.toml", {"gates": (["flip:prob_tv<=0.2"], "config")}),
        ({}, {"EQAUDIT_GATES": "rot90:flip_rate<=0; level>=0.5"}, "other.toml", {"gates": (["rot90:flip_rate<=0.0", "level>=0.5"], "env EQAUDIT_GATES")}),
        ({"gates": ["rotate:step=30:prob_tv <= 5%"]}, {"EQAUDIT_GATES": "level>=0.5"}, None, {"gates": (["rotate:step=30:prob_tv<=0.05"], "flag --gate")}),
        # baseline and tolerances
        ({}, {}, None, {"baseline": (None, "sidecar"), "max_regression": ({"*": "0.05"}, "[tool.eqaudit]")}),
        ({}, {}, "other.toml", {"baseline": (None, "default"), "max_regression": ({"*": "0.01", "level": "5%"}, "config")}),
        ({"max_regression": ["0.02", "level=10%"]}, {"EQAUDIT_MAX_REGRESSION": "1"}, None, {"max_regression": ({"*": "0.02", "level": "10%"}, "flag --max-regression")}),
        ({}, {"EQAUDIT_MAX_REGRESSION": "level=1%"}, None, {"max_regression": ({"level": "1%"}, "env")}),
        ({}, {}, None, {"junit_xml": (None, "[tool.eqaudit]")}),
        ({"junit_xml": "j.xml"}, {"EQAUDIT_JUNIT_XML": "e.xml"}, None, {"junit_xml": ("j.xml", "flag --junit-xml")}),
    ],
)
def test_precedence_table(project, flags, env, config, expect):
    s = resolve(flags, models=[project / "models" / "net.pt"], config_file=project / config if config else None, env=env, cwd=project)
    for name, (value, source) in expect.items():
        if value is not None:  # None: a path, checked in test_config_paths_are_relative_to_their_file
            assert plain_values(s.values)[name] == value, name
        assert s.sources[name].startswith(source), (name, s.sources[name])


def test_config_paths_are_relative_to_their_file(project):
    s = resolve({}, models=[project / "models" / "net.pt"], env={}, cwd=project)
    assert Path(s.data) == project / "models" / "side.npz"
    s = resolve({}, models=[], env={}, cwd=project)
    assert Path(s.data) == project / "p.npz"
    s = resolve({"data": "here.npz"}, models=[project / "models" / "net.pt"], env={}, cwd=project)
    assert s.data == "here.npz"
    s = resolve({}, models=[project / "models" / "net.pt"], env={}, cwd=project)
    assert Path(s.baseline) == project / "models" / "old" / "result.json"
    assert Path(s.junit_xml) == project / "ci" / "junit.xml"


@pytest.mark.parametrize(
    "content, message",
    [
        ("sed = 1\n", "did you mean 'seed'"),
        ("seed = 'x'\n", "whole number"),
        ("trust = true\n", "cannot be set"),
        ("seed = \n", "not valid TOML"),
        ("output_kind = 'probs'\n", "one of auto, logits, probabilities"),
        ("gate = ['flip_rate<=0.1']\n", "did you mean 'gates'"),
        ("gates = ['flip_rate=0.1']\n", "Setting 'gates' from config"),
        ("gates = ['flip_rate <= nan']\n", "NaN is no bound"),
        ("fail_over = { flip_rate = nan }\n", "NaN is no bound"),
        ("fail_over = ['flip_rate=NaN%']\n", "NaN is no bound"),
        ("gates = 3\n", "list of gate strings"),
        ("[gates]\nrot90 = ['flip:flip_rate<=0.1']\n", "names a symmetry again"),
        ("max_regression = '-1'\n", ">= 0"),
        ("max_regression = 'level=lots'\n", "Setting 'max_regression'"),
        ("junit_xmll = 'x.xml'\n", "did you mean 'junit_xml'"),
    ],
)
def test_bad_config_files(tmp_path, content, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError) as exc:
        resolve({}, config_file=cfg, env={}, cwd=tmp_path)
    assert message in str(exc.value)
    assert str(cfg) in str(exc.value)  # the file the value came from
    assert exc.value.exit_code == 2


def test_named_config_must_exist(tmp_path):
    with pytest.raises(PathNotFoundError):
        resolve({}, config_file=tmp_path / "none.toml", env={}, cwd=tmp_path)


def test_unknown_environment_variable(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'seed'"):
        resolve({}, env={"EQAUDIT_SEEED": "1"}, cwd=tmp_path)


def test_input_shape_parsing():
    assert parse_input_shape("1x8x8") == (1, 8, 8)
    for bad in ["", "1x0x8", "axb"]:
        with pytest.raises(ConfigError):
            parse_input_shape(bad)
