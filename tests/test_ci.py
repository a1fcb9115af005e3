"""CI outputs: JUnit XML structure and counts, the GitHub step summary (appended), escaped annotations, and `eqaudit init`."""

from __future__ import annotations

import json
import shlex
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import ROOT, factory
from eqaudit import ci
from eqaudit.cli import app
from eqaudit.gates import compare_results, evaluate_gates, gate_specs
from eqaudit.result import AuditResult, DataInfo, ModelInfo, SymmetryResult

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_github_env(monkeypatch):
    """Tests decide themselves whether they run 'under GitHub Actions'."""
    for var in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(var, raising=False)


def run(*args, env=None):
    res = runner.invoke(app, [str(a) for a in args], env=env)
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes is not None else "")


def _sym(spec: str, summary: dict, gates: list[str], model: int = 0) -> SymmetryResult:
    name = spec.split(":")[0]

    class S:
        pass

    s = S()
    s.name, s.spec = name, spec
    g = evaluate_gates(summary, {}, gate_specs(gates), symmetry=s)
    return SymmetryResult(model, name, spec, True, "image", [], [], "finite", 0, [], [], summary, [], gates=g,
                          passed=all(x.passed for x in g))


def make_result(model: str = "net<1>.pt") -> AuditResult:
    syms = [
        _sym("rot90", {"flip_rate": 0.25, "prob_tv": 0.1, "level": 0.7, "level_ci_low": 0.6, "level_ci_high": 0.8},
             ["flip_rate<=0.01", "level>=0.5", "level_ci_low>=0.65"]),
        _sym("flip:axis=v", {"flip_rate": 0.0, "prob_tv": 1e-9}, ["flip_rate<=0.01"]),
        _sym("rot90", {"flip_rate": 0.0, "prob_tv": 0.0}, ["flip_rate<=0.01"], model=1),
    ]
    r = AuditResult("0.1.0", "2024-05-01T12:00:00+00:00", 0, "cpu",
                    [ModelInfo(model, "torch", "ab", [1, 8, 8]), ModelInfo("other.onnx", "onnx", "cd", [1, 8, 8])],
                    DataInfo("data/test.npz", 10, True), syms, {"seconds": 2.5})
    r.passed = all(s.passed for s in syms)
    return r


def test_junit_structure_and_counts():
    result = make_result()
    base = make_result()
    base.symmetries[1].summary = {"flip_rate": 0.0, "prob_tv": 0.0}
    base.symmetries[0].summary = {**base.symmetries[0].summary, "flip_rate": 0.1}
    comparison = compare_results(base, result, 0.01)
    root = ET.fromstring(ci.junit_xml(result, comparison))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["eqaudit gates: net<1>.pt", "eqaudit gates: other.onnx", "eqaudit baseline"]
    gates_suite = suites[0]
    cases = gates_suite.findall("testcase")
    assert (gates_suite.get("tests"), gates_suite.get("failures"), gates_suite.get("errors")) == ("4", "2", "0")
    assert len(cases) == 4 and all(c.get("classname") and c.get("name") for c in cases)
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["rot90: flip_rate <= 0.01", "rot90: level_ci_low >= 0.65"]
    msg = failed[0].find("failure").get("message")
    assert msg == "net<1>.pt, symmetry rot90: flip_rate = 0.25, bound <= 0.01"
    assert suites[1].get("tests") == "1" and suites[1].get("failures") == "0"
    props = {p.get("name"): p.get("value") for p in gates_suite.find("properties")}
    assert props["model"] == "net<1>.pt" and props["n_samples"] == "10"
    # baseline: one case per compared metric; flip_rate went 0.1 -> 0.25 (regressed), flip:axis=v's prob_tv 0 -> 1e-9 (ok)
    bsuite = suites[2]
    assert int(bsuite.get("tests")) == len(comparison.rows) and bsuite.get("failures") == "1"
    totals = sum(int(s.get("tests")) for s in suites), sum(int(s.get("failures")) for s in suites)
    assert (int(root.get("tests")), int(root.get("failures"))) == totals == (len(comparison.rows) + 5, 3)


def test_junit_without_gates_is_valid_and_empty():
    result = make_result()
    for s in result.symmetries:
        s.gates = []
    root = ET.fromstring(ci.junit_xml(result))
    assert root.get("tests") == "0" and root.get("failures") == "0" and len(root.findall("testsuite")) == 2


def test_step_summary_is_appended_compact_and_escaped(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text("## earlier step\n")
    result = make_result()
    ci.append_step_summary(path, ci.step_summary(result))
    ci.append_step_summary(path, ci.step_summary(result))
    text = path.read_text()
    assert text.startswith("## earlier step\n")
    assert text.count("### eqaudit: ❌ failed (3/5 gates passed)") == 2
    assert "net&lt;1&gt;.pt" in text and "net<1>" not in text  # user strings cannot inject HTML
    assert "| model | symmetry | flip_rate | prob_tv | level [CI] | gates |" in text
    assert "0.700 [0.60, 0.80]" in text
    assert "<img" not in text and "data:image" not in text
    ok = make_result()
    for s in ok.symmetries:
        s.gates = [g for g in s.gates if g.passed]
    assert ci.step_summary(ok).startswith("### eqaudit: ✅ passed (3/3 gates passed)")


def test_step_summary_stays_small():
    result = make_result()
    result.symmetries = result.symmetries * 2000
    text = ci.step_summary(result)
    assert len(text.encode()) <= ci.MAX_SUMMARY_BYTES < 1 << 20
    assert "more rows in result.json" in text or "truncated" in text


def test_annotations_are_escaped():
    assert ci.escape_data("50%\r\nnext") == "50%25%0D%0Anext"
    assert ci.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    line = ci.error_command("rate 100%\nline two", title="gate: rot90, flip_rate")
    assert line == "::error title=gate%3A rot90%2C flip_rate::rate 100%25%0Aline two"
    lines = ci.annotations(make_result())
    assert len(lines) == 2 and all(line.startswith("::error title=") and "\n" not in line for line in lines)
    assert "title=eqaudit gate failed%3A rot90 flip_rate::net<1>.pt, symmetry rot90: flip_rate = 0.25, bound <= 0.01" in lines[0]


@pytest.fixture
def no_render(monkeypatch):
    """Skip plots and HTML (tested elsewhere; about 2 s per scan) in tests about the verdict."""
    monkeypatch.setenv("EQAUDIT_FORMAT", "json,orbits,csv,junit,summary,annotations")  # --format without html


def test_scan_writes_junit_summary_and_annotations(model_files, data_npz, tmp_path, no_render):
    summary = tmp_path / "step.md"
    summary.write_text("previous\n")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    code, output = run("scan", model_files["SmallCNN"], "--model-factory", factory("SmallCNN"), "--data", data_npz,
                       "-s", "rot90", "-s", "flip", "--gate", "rot90:flip_rate<=0.01", "--gate", "flip:prob_tv<=1",
                       "--junit-xml", tmp_path / "j" / "junit.xml", "--out", tmp_path / "o", "--quiet", env=env)
    assert code == 1, output
    assert "::error title=eqaudit gate failed%3A rot90 flip_rate::SmallCNN.pt, symmetry rot90: flip_rate = " in output
    root = ET.parse(tmp_path / "j" / "junit.xml").getroot()
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    text = summary.read_text()
    assert text.startswith("previous\n") and "❌ failed (1/2 gates passed)" in text and "SmallCNN.pt" in text


def test_scan_against_baseline(model_files, data_npz, tmp_path, no_render):
    common = ["--data", data_npz, "-s", "rot90", "--quiet", "--out"]
    inv = [model_files["Rot90Averaged"], "--model-factory", factory("Rot90Averaged")]
    plain = [model_files["SmallCNN"], "--model-factory", factory("SmallCNN")]
    code, output = run("scan", *inv, *common, tmp_path / "base")
    assert code == 0, output
    base = tmp_path / "base" / "result.json"
    code, output = run("scan", *inv, *common, tmp_path / "same", "--baseline", base)
    assert code == 0 and "no regressions against the baseline" in output, output
    code, output = run("scan", *plain, *common, tmp_path / "new", "--baseline", base, "--max-regression", "0.02",
                       "--junit-xml", tmp_path / "j.xml")
    assert code == 1, output
    assert "regression:" in output and "flip_rate 0.0 -> " in output and "prob_tv" in output
    cases = ET.parse(tmp_path / "j.xml").getroot().find("testsuite[@name='eqaudit baseline']").findall("testcase")
    assert any(c.find("failure") is not None and "flip_rate" in c.get("name") for c in cases)
    # every metric loose enough: passes
    code, output = run("scan", *plain, *common, tmp_path / "new2", "--baseline", base, "--max-regression", "1",
                       "--max-regression", "level=100%")
    assert code == 0, output
    for args, code_, text in [
        (["--baseline", tmp_path / "missing.json"], 2, "missing.json"),
        (["--baseline", base, "--max-regression", "flip_rat=0.1"], 2, "did you mean 'flip_rate'"),
        (["--baseline", base, "--max-regression", "-1"], 2, ">= 0"),
    ]:
        got, output = run("scan", *plain, *common, tmp_path / "x", *args)
        assert got == code_ and text in output, output


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user project: a sample model, its architecture and data under models/, no config yet."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ["digits_cnn_rot90.pt", "digits_test.npz", "digits_models.py"]:
        shutil.copy(ROOT / "sample_models" / name, models / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _scan_step(workflow: Path) -> tuple[list[str], str]:
    doc = yaml.safe_load(workflow.read_text())
    steps = doc["jobs"]["symmetry-audit"]["steps"]
    run_line = next(s["run"] for s in steps if str(s.get("run", "")).startswith("eqaudit scan"))
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload.get("if") == "always()"
    return shlex.split(run_line), upload["with"]["path"]


def test_init_output_works_unchanged_on_a_sample_model(project):
    code, output = run("init", "models/digits_cnn_rot90.pt", "--data", "models/digits_test.npz",
                       "--model-factory", "models/digits_models.py:Rot90InvariantCNN", "-s", "rot90",
                       "--gate", "rot90:flip_rate<=0.01", "--gate", "rot90:level_ci_low>=0.9")
    assert code == 0, output
    workflow = project / ".github" / "workflows" / "eqaudit.yml"
    assert "[tool.eqaudit]" in (project / "pyproject.toml").read_text() and workflow.exists()
    argv, artifact = _scan_step(workflow)
    assert argv[:3] == ["eqaudit", "scan", "models/digits_cnn_rot90.pt"]
    summary = project / "summary.md"
    code, output = run(*argv[1:], env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)})
    assert code == 0, output
    out_dir = project / argv[argv.index("--out") + 1]
    assert Path(artifact.rstrip("/")) == Path(argv[argv.index("--out") + 1])  # the artifact is the report folder
    assert (out_dir / "result.json").exists() and (out_dir / "report.html").exists()
    junit = ET.parse(project / argv[argv.index("--junit-xml") + 1]).getroot()
    assert (junit.get("tests"), junit.get("failures")) == ("2", "0")
    assert "✅ passed" in summary.read_text()


def test_init_never_clobbers(project):
    pyproject = project / "pyproject.toml"
    pyproject.write_text('[project]\nname = "mine"\n')
    code, output = run("init", "models/digits_cnn_rot90.pt")
    assert code == 0, output
    text = pyproject.read_text()
    assert text.startswith('[project]\nname = "mine"\n') and text.count("[tool.eqaudit]") == 1
    workflow = project / ".github" / "workflows" / "eqaudit.yml"
    workflow.write_text("# mine\n")
    code, output = run("init", "models/digits_cnn_rot90.pt", "-s", "flip")
    assert code == 0, output
    assert pyproject.read_text() == text and workflow.read_text() == "# mine\n"
    assert "already has a [tool.eqaudit] table" in output and "--force" in output
    assert 'symmetry = ["flip"]' in output  # the block is printed for merging by hand
    code, output = run("init", "models/digits_cnn_rot90.pt", "--force")
    assert code == 0 and workflow.read_text() != "# mine\n"
    # bad values are refused before anything is written
    (project / "sub").mkdir()
    code, output = run("init", "--dir", project / "sub", "--gate", "flip_rate=0.1")
    assert code == 2 and "--fail-over takes METRIC=VALUE" in output
    code, output = run("init", "--dir", project / "sub", "-s", "rot45")
    assert code == 2 and "rot45" in output
    # a model outside the project folder would not be in CI's checkout
    code, output = run("init", "models/digits_cnn_rot90.pt", "--dir", project / "sub")
    assert code == 2 and "inside the project folder" in output and "models/digits_cnn_rot90.pt" in output
    assert not any((project / "sub").iterdir())


def test_init_workflow_installs_the_cpu_build_of_torch_before_eqaudit(project):
    code, output = run("init", "models/digits_cnn_rot90.pt")
    assert code == 0, output
    doc = yaml.safe_load((project / ".github" / "workflows" / "eqaudit.yml").read_text())
    install = next(s["run"] for s in doc["jobs"]["symmetry-audit"]["steps"] if s.get("name") == "Install eqaudit")
    lines = [line.strip() for line in install.splitlines() if line.strip()]
    assert lines[0] == "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert lines[1] == "pip install eqaudit"


def test_baseline_verdict_is_in_the_result_and_the_python_api(model_files, data_npz, tmp_path):
    import eqaudit
    from conftest import factory

    common = dict(data=str(data_npz), symmetry=["rot90"])
    eqaudit.scan(model_files["Rot90Averaged"], model_factory=factory("Rot90Averaged"), out=str(tmp_path / "a"), **common)
    base = tmp_path / "a" / "result.json"
    same = eqaudit.scan(model_files["Rot90Averaged"], model_factory=factory("Rot90Averaged"), out=str(tmp_path / "b"),
                        baseline=str(base), **common)
    assert same.passed and same.baseline["passed"] and same.baseline["compared"] > 0
    worse = eqaudit.scan(model_files["SmallCNN"], model_factory=factory("SmallCNN"), out=str(tmp_path / "c"),
                         baseline=str(base), max_regression=["0.02"], **common)
    assert not worse.passed and not worse.baseline["passed"]
    assert "flip_rate" in {r["metric"] for r in worse.baseline["regressions"]}
    saved = json.loads((tmp_path / "c" / "result.json").read_text())
    assert saved["passed"] is False and saved["baseline"]["regressions"]


@pytest.mark.parametrize("args, code", [(["-s", "rot45"], 2), (["-s", "rot90"], 3)])
def test_junit_file_records_a_run_that_stopped_before_a_verdict(bad_model_args, data_npz, tmp_path, args, code):
    junit = tmp_path / "j.xml"
    model = bad_model_args if code == 3 else []
    from typer.testing import CliRunner

    from eqaudit.cli import app

    target = model or [str(ROOT / "sample_models" / "digits_cnn.pt")]
    res = CliRunner().invoke(app, ["scan", *target, "--data", str(data_npz), *args, "--junit-xml", str(junit), "--quiet"])
    assert res.exit_code == code, res.output
    root = ET.parse(junit).getroot()
    assert root.get("errors") == "1" and root.get("failures") == "0"
    (case,) = root.iter("testcase")
    error = case.find("error")
    assert error is not None and ("rot45" in error.get("message") if code == 2 else "HTML" in error.get("message"))


@pytest.fixture
def bad_model_args(tmp_path):
    page = tmp_path / "page.pt"
    page.write_text("<!DOCTYPE html><html>login</html>")
    return [str(page)]
