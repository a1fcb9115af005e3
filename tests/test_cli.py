"""CLI exit codes and one-line messages, through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import toy_models
from conftest import factory
from eqaudit.cli import app

runner = CliRunner()


def run(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes is not None else "")


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, model_files):
    d = tmp_path_factory.mktemp("bad")
    html = d / "page.pt"
    html.write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    trunc = d / "trunc.onnx"
    trunc.write_bytes(model_files["SmallCNN.onnx"].read_bytes()[:500])
    pickled = d / "whole.pt"
    torch.save(toy_models.SmallCNN(), pickled)
    script = d / "scripted.pt"
    torch.jit.script(toy_models.SmallCNN()).save(str(script))
    return {"html": html, "trunc": trunc, "pickled": pickled, "script": script}


def test_exit_code_table(model_files, data_npz, tmp_path, bad_files):
    out = tmp_path / "o"
    plain, inv = model_files["SmallCNN"], model_files["Rot90Averaged"]
    cases = [
        # (arguments, exit code, text the output must contain)
        ([inv, "--data", data_npz, "-s", "rot90", "--model-factory", factory("Rot90Averaged"), "--fail-over", "flip_rate=0.01", "--out", out], 0, "all gates passed"),
        ([plain, "--data", data_npz, "-s", "rot90", "--model-factory", factory("SmallCNN"), "--fail-over", "flip_rate=0.01", "--out", out], 1, "flip_rate"),
        ([plain, "--data", data_npz, "-s", "rot45", "--model-factory", factory("SmallCNN")], 2, "rot45"),
        ([plain, "--data", data_npz, "-s", "rotate:stepp=3", "--model-factory", factory("SmallCNN")], 2, "stepp"),
        ([plain, "--data", tmp_path / "missing.npz", "-s", "rot90", "--model-factory", factory("SmallCNN")], 2, "missing.npz"),
        ([tmp_path / "nope.onnx", "--data", data_npz], 2, "nope.onnx"),
        ([plain, "--data", data_npz, "-s", "rot90", "--model-factory", factory("SmallCNN"), "--fail-over", "flip_rat=0.1"], 2, "flip_rate"),
        ([plain, "--data", data_npz, "-s", "rot90"], 2, "--model-factory"),
        ([plain, "--data", data_npz, "--bogus-option"], 2, "bogus"),
        ([bad_files["html"], "--data", data_npz, "-s", "rot90"], 3, "HTML"),
        ([bad_files["trunc"], "--data", data_npz, "-s", "rot90"], 3, "ONNX"),
        ([bad_files["pickled"], "--data", data_npz, "-s", "rot90"], 3, "--trust"),
        ([bad_files["script"], "--data", data_npz, "-s", "rot90"], 3, "--trust"),
        ([plain, "--data", data_npz, "-s", "rot90", "--model-factory", factory("D4Averaged")], 3, "do not match"),
    ]
    for args, code, text in cases:
        got, output = run("scan", *args, "--quiet")
        assert got == code, (args, output)
        assert text in output, (args, output)
        assert "Traceback" not in output, (args, output)


def test_trusted_pickle_and_torchscript_load(bad_files, data_npz, tmp_path):
    for key in ("pickled", "script"):
        code, output = run("scan", bad_files[key], "--data", data_npz, "-s", "flip", "--trust", "--out", tmp_path / key, "--quiet")
        assert code == 0, output
        d = json.loads((tmp_path / key / "result.json").read_text())
        assert d["models"][0]["format"] == ("pickle" if key == "pickled" else "torchscript")


def test_verbose_shows_traceback_and_sources(model_files, data_npz):
    code, output = run("scan", model_files["SmallCNN"], "--data", data_npz, "-s", "rot45", "--verbose")
    assert code == 2 and "Traceback" in output
    assert "(flag --data)" in output and "(default)" in output


def test_scan_prints_table_and_writes_result(model_files, data_npz, tmp_path):
    code, output = run("scan", model_files["Rot90Averaged.onnx"], model_files["SmallCNN.onnx"], "--data", data_npz,
                       "-s", "rot90", "-s", "rotate:step=45", "--out", tmp_path / "o")
    assert code == 0, output
    assert "flip rate" in output and "rotate:step=45" in output and "SmallCNN.onnx" in output
    d = json.loads((tmp_path / "o" / "result.json").read_text())
    assert len(d["models"]) == 2 and len(d["symmetries"]) == 4 and d["complete"]


def test_compare_detects_regression(model_files, data_npz, tmp_path):
    common = ["--data", data_npz, "-s", "rot90", "--quiet"]
    run("scan", model_files["Rot90Averaged"], "--model-factory", factory("Rot90Averaged"), "--out", tmp_path / "a", *common)
    run("scan", model_files["SmallCNN"], "--model-factory", factory("SmallCNN"), "--out", tmp_path / "b", *common)
    # rename so both results describe "the same model" (a retrained checkpoint)
    for sub in ("a", "b"):
        p = tmp_path / sub / "result.json"
        d = json.loads(p.read_text())
        d["models"][0]["path"] = "model.pt"
        p.write_text(json.dumps(d))
    code, output = run("compare", tmp_path / "a" / "result.json", tmp_path / "b" / "result.json")
    assert code == 1 and "flip_rate" in output and "regress" in output
    code, output = run("compare", tmp_path / "b" / "result.json", tmp_path / "a" / "result.json")
    assert code == 0, output
    code, output = run("compare", tmp_path / "a" / "result.json", tmp_path / "b" / "result.json", "--tolerance", "1")
    assert code == 0, output
    code, output = run("compare", tmp_path / "a" / "result.json", tmp_path / "zzz.json")
    assert code == 2 and "zzz.json" in output
    (tmp_path / "junk.json").write_text("{not json")
    code, output = run("compare", tmp_path / "a" / "result.json", tmp_path / "junk.json")
    assert code == 3 and "junk.json" in output


def test_symmetries_lists_the_catalogue():
    code, output = run("symmetries")
    assert code == 0
    for name in ["rot90", "flip", "d4", "translate", "rotate", "scale"]:
        assert name in output
