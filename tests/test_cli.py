"""CLI exit codes and one-line messages, through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import toy_models
from conftest import TESTS, factory
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
    assert "flips" in output and "rotate:step=45" in output and "SmallCNN.onnx" in output
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


@pytest.fixture(autouse=True)
def no_github_env(monkeypatch):
    """Scans in these tests must not write to a real GitHub step summary when the suite runs in Actions."""
    for var in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def no_render(monkeypatch):
    """Skip plots and HTML (tested elsewhere; about 2 s per scan) in tests about the verdict."""
    monkeypatch.setenv("EQAUDIT_FORMAT", "json,orbits,csv,junit,summary,annotations")  # --format without html


def test_gate_table(model_files, data_npz, tmp_path, no_render):
    from eqaudit.gates import shown_value

    plain = [model_files["SmallCNN"], "--model-factory", factory("SmallCNN"), "--data", data_npz, "--out", tmp_path / "o"]
    inv = [model_files["Rot90Averaged"], "--model-factory", factory("Rot90Averaged"), "--data", data_npz, "--out", tmp_path / "o"]
    # the measured level and its CI on a resampled symmetry, to put bounds between them
    code, output = run("scan", *plain, "-s", "rotate:step=45", "--quiet")
    assert code == 0, output
    summary = json.loads((tmp_path / "o" / "result.json").read_text())["symmetries"][0]["summary"]
    lo, level, hi = summary["level_ci_low"], summary["level"], summary["level_ci_high"]
    assert summary["level_status"] == "ok" and lo < level < hi, summary
    below, above = (lo + level) / 2, (level + hi) / 2
    cases = [
        # (arguments, exit code, texts the output must contain, texts it must not contain)
        ([*inv, "-s", "rot90", "-s", "flip", "--gate", "rot90:flip_rate<=0.01", "--gate", "rot90:level>=0.99",
          "--gate", "rot90:worst_case_accuracy>=0"], 0, ["all gates passed (3 checked)"], []),
        ([*inv, "-s", "rot90", "-s", "flip", "--gate", "flip:prob_tv<=0.001", "--gate", "rot90:prob_tv<=0.001"], 1,
         ["symmetry flip: prob_tv = ", "bound <= 0.001", "1 of 2 gate(s) failed"], ["symmetry rot90"]),
        ([*plain, "-s", "rot90", "--gate", "accuracy>=1", "--fail-over", "accuracy=1"], 1,
         ["accuracy = ", "bound >= 1", "2 of 2 gate(s) failed"], ["bound >= 1.0"]),
        # CI-bound gates on the CLI: the point estimate passes where the CI's lower end fails, and vice versa
        ([*plain, "-s", "rotate:step=45", "--gate", f"level>={below!r}", "--gate", f"level_ci_low>={below!r}",
          "--gate", f"level>={above!r}", "--gate", f"rotate:level_ci_high>={above!r}"], 1,
         [f"symmetry rotate:step=45: level_ci_low = {shown_value(lo, below)}, bound >= {below!r}",
          f"symmetry rotate:step=45: level = {shown_value(level, above)}, bound >= {above!r}", "2 of 4 gate(s) failed"],
         [f"level = {shown_value(level, below)}, bound >= {below!r}", "level_ci_high = "]),
        ([*plain, "-s", "rotate:step=45", "--gate", f"level>={below!r}", "--gate", f"rotate:level_ci_high>={above!r}"], 0,
         ["all gates passed (2 checked)"], []),
        # usage errors: exit 2 with a suggestion, before any sweep
        ([*plain, "-s", "rot90", "--gate", "rot45:flip_rate<=0.1"], 2, ["did you mean 'rot90'"], []),
        ([*plain, "-s", "rot90", "--gate", "flip_rat<=0.1"], 2, ["did you mean 'flip_rate'"], []),
        ([*plain, "-s", "rot90", "--gate", "pixel_iuo>=0.1"], 2, ["Unknown gate metric 'pixel_iuo'"], []),
        ([*plain, "-s", "rot90", "--gate", "flip_rate<=nan"], 2, ["NaN is no bound"], []),
        ([*plain, "-s", "rot90", "--fail-over", "flip_rate=nan"], 2, ["--fail-over 'flip_rate=nan'", "NaN is no bound"], []),
        ([*plain, "-s", "rot90", "--gate", "flip_rate<=inf", "--fail-over", "prob_tv=inf", "--gate", "rot90:flip_rate<1.01"], 0,
         ["all gates passed (3 checked)"], []),
        ([*plain, "-s", "rot90", "--gate", "level_ci>=0.1"], 2, ["level_ci_low or level_ci_high"], []),
        ([*plain, "-s", "rot90", "--config", tmp_path / "none.toml"], 2, ["none.toml"], []),
    ]
    for args, code, texts, absent in cases:
        got, output = run("scan", *args, "--quiet")
        assert got == code, (args, output)
        for text in texts:
            assert text in output, (args, text, output)
        for text in absent:
            assert text not in output, (args, text, output)
        assert "Traceback" not in output, (args, output)


def test_verbose_shows_gate_sources(model_files, data_npz, tmp_path, monkeypatch, no_render):
    monkeypatch.setenv("EQAUDIT_MAX_REGRESSION", "level=5%")
    code, output = run("scan", model_files["Rot90Averaged"], "--model-factory", factory("Rot90Averaged"), "--data", data_npz,
                       "-s", "rot90", "--gate", "rot90:flip_rate<=0.01", "--out", tmp_path / "o", "--verbose")
    assert code == 0, output
    assert "gates = ['rot90:flip_rate<=0.01']  (flag --gate)" in output
    assert "max_regression = {'level': '5%'}  (env EQAUDIT_MAX_REGRESSION)" in output


def test_compare_with_per_metric_tolerances(tmp_path):
    from eqaudit.result import AuditResult, DataInfo, ModelInfo, SymmetryResult

    def result(path, flip_rate, level):
        s = SymmetryResult(0, "rot90", "rot90", True, "image", [], [], "finite", 0, [], [],
                           {"flip_rate": flip_rate, "prob_tv": 0.1, "level": level}, [])
        r = AuditResult("0", "2024-01-01", 0, "cpu", [ModelInfo("m.pt", "torch", "", [1])], DataInfo("d", 1, True), [s], {})
        r.save(path)
        return path

    a, b = result(tmp_path / "a.json", 0.10, 0.80), result(tmp_path / "b.json", 0.12, 0.78)
    cases = [
        ([], 1, ["flip_rate 0.1 -> 0.12", "level 0.8 -> 0.78", "2 regression(s)"]),
        (["--tolerance", "0.03"], 0, ["no regressions"]),
        (["--tolerance", "0.03", "--tolerance", "level=2%"], 1, ["level 0.8 -> 0.78", "allowed 0.016 = 2% of |base|", "1 regression(s)"]),
        (["--tolerance", "flip_rate=25%", "--tolerance", "level=0.05"], 0, ["no regressions"]),
        (["--tolerance", "levle=5%"], 2, ["did you mean 'level'"]),
        (["--tolerance", "-0.1"], 2, [">= 0"]),
    ]
    for args, code, texts in cases:
        got, output = run("compare", a, b, *args)
        assert got == code, (args, output)
        for text in texts:
            assert text in output, (args, text, output)
    got, output = run("compare", a, b, "--junit-xml", tmp_path / "j.xml")
    assert got == 1 and 'failures="2"' in (tmp_path / "j.xml").read_text()


def test_messages_with_square_brackets_survive_rich_markup(tmp_path, data_npz):
    weird = tmp_path / "[bold]model[red].onnx"
    weird.write_text("<html>not a model</html>")
    code, output = run("scan", weird, "--data", data_npz, "-s", "rot90", "--quiet")
    assert code == 3 and "[bold]model[red].onnx" in output
    code, output = run("symmetries")
    assert "[min, max]" in output


def test_qa_findings_give_clear_errors(tmp_path, model_files, data_npz):
    # a missing model is reported as such even when no data was given
    code, output = run("scan", tmp_path / "nonexist.pt", "--quiet")
    assert code == 2 and "nonexist.pt" in output and "does not exist" in output
    # a truncated zip-based checkpoint says so
    cut = tmp_path / "cut.pt"
    cut.write_bytes(model_files["SmallCNN"].read_bytes()[:2000])
    code, output = run("scan", cut, "--data", data_npz, "-s", "rot90", "--model-factory", factory("SmallCNN"), "--quiet")
    assert code == 3 and "truncated or corrupt" in output
    # range checks
    for args, text in ((["--seed", "-1"], "seed"), (["--extent-tolerance", "2"], "between 0 and 1")):
        code, output = run("scan", model_files["SmallCNN.onnx"], "--data", data_npz, "-s", "rot90", *args, "--quiet")
        assert code == 2 and text in output, output
    # report accepts the output folder; a JSON that is not a result is named as such
    code, output = run("scan", model_files["SmallCNN.onnx"], "--data", data_npz, "-s", "rot90", "--out", tmp_path / "o", "--quiet")
    assert code == 0
    (tmp_path / "o" / "report.html").unlink()
    code, output = run("report", tmp_path / "o")
    assert code == 0 and (tmp_path / "o" / "report.html").is_file() and not (tmp_path / "report.html").exists()
    (tmp_path / "other.json").write_text('{"a": 1}')
    code, output = run("report", tmp_path / "other.json")
    assert code == 3 and "not an eqaudit result" in output


def test_test_suite_variables_are_not_settings(monkeypatch, model_files, data_npz, tmp_path):
    monkeypatch.setenv("EQAUDIT_TEST_CHROMIUM", "/usr/bin/chromium")
    code, output = run("scan", model_files["SmallCNN.onnx"], "--data", data_npz, "-s", "rot90", "--out", tmp_path / "o", "--quiet")
    assert code == 0, output
    monkeypatch.setenv("EQAUDIT_SEEED", "1")
    code, output = run("scan", model_files["SmallCNN.onnx"], "--data", data_npz, "-s", "rot90", "--out", tmp_path / "o", "--quiet")
    assert code == 2 and "seed" in output


def test_trusted_pickle_finds_its_module_beside_the_model(tmp_path, data_npz):
    import shutil
    import subprocess
    import sys

    shutil.copy(TESTS / "toy_models.py", tmp_path / "pickled_arch.py")
    script = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import pickled_arch; "
              "torch.save(pickled_arch.Rot90Averaged(), sys.argv[1] + '/whole.pt')")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    code, output = run("scan", tmp_path / "whole.pt", "--data", data_npz, "-s", "rot90", "--trust", "--out", tmp_path / "o", "--quiet")
    assert code == 0, output


def test_a_non_default_reference_is_named_in_the_terminal(model_files, data_npz, tmp_path):
    code, output = run("scan", model_files["SmallCNN.onnx"], "--data", data_npz, "-s", "rot90", "--reference", "consensus",
                       "--out", tmp_path / "o")
    assert code == 0 and "reference: consensus" in output
    code, output = run("scan", model_files["SmallCNN.onnx"], "--data", data_npz, "-s", "rot90", "--out", tmp_path / "p")
    assert code == 0 and "reference:" not in output


def test_help_shows_defaults_and_every_task():
    import re

    code, output = run("scan", "--help")
    assert code == 0
    flat = re.sub(r"-\s+", "-", " ".join(output.split()))  # help wraps at 80 columns, also after a hyphen
    assert "[default: 256]" in flat and "[default: classify]" in flat
    for task in ("dense", "vector-field", "points", "boxes"):
        assert task in flat


def test_floor_subset_and_prefetch_flags(tmp_path):
    sample = TESTS.parent / "sample_models" / "digits_cnn.pt"
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["scan", str(sample), "-s", "rotate:step=90", "--limit", "20", "--floor-samples", "5",
                                 "--no-prefetch", "--format", "json", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    d = json.loads((out / "result.json").read_text())
    assert d["symmetries"][0]["summary"]["floor_samples"] == 5 and d["settings"]["values"]["prefetch"] is False
    bad = CliRunner().invoke(app, ["scan", str(sample), "--floor-samples", "-1", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "floor_samples" in bad.output and ">= 0" in bad.output


def test_help_names_no_internal_types_and_cuts_no_command():
    import re

    import typer

    res = runner.invoke(app, ["scan", "--help"], prog_name="eqaudit", env={"COLUMNS": "100"})
    assert res.exit_code == 0
    assert "Usage: eqaudit scan [OPTIONS] MODEL..." in res.output
    assert not re.search(r"<[a-zA-Z\[\]]+>|\{models\}", res.output), res.output
    assert "--data TEXT" in res.output and "--batch-size INTEGER" in res.output
    res = runner.invoke(app, ["--help"], prog_name="eqaudit", env={"COLUMNS": "100"})
    flat = " ".join(res.output.split())
    for cmd in typer.main.get_command(app).commands.values():
        first = " ".join((cmd.help or "").split("\n\n")[0].split())
        assert first and first in flat, first  # the whole first paragraph, no "..."


@pytest.mark.parametrize(
    "sidecar, key",
    [
        ('symmetry = ["rot91"]\n', "symmetry"),
        ('symmetry = ["rot90"]\ngates = ["flip_rat <= 0.1"]\n', "gates"),
        ('symmetry = ["rot90"]\ngates = ["rot90:accuracy >= 0"]\n', "gates"),  # passes: a normal scan
        ('symmetry = ["rot90"]\ndata = "missing.npz"\n', "data"),
    ],
)
def test_errors_name_the_sidecar_and_key(model_files, data_npz, tmp_path, sidecar, key):
    import shutil

    model = tmp_path / "net.pt"
    shutil.copy(model_files["SmallCNN"], model)
    data = "" if "data =" in sidecar else f'data = "{data_npz}"\n'
    (tmp_path / "net.eqaudit.toml").write_text(data + f'model_factory = "toy_models:SmallCNN"\n' + sidecar)
    code, output = run("scan", model, "--out", tmp_path / "o")
    flat = " ".join(output.split())
    if "accuracy" in sidecar:  # a normal scan names the file it applied, in one line
        assert code == 0 and f"settings from sidecar {tmp_path / 'net.eqaudit.toml'}: data, symmetry, gates, model_factory" in flat
        return
    assert code == 2, output
    assert f"{key} from sidecar {tmp_path / 'net.eqaudit.toml'}" in flat, output
