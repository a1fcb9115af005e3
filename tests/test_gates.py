"""Gates as pure functions: syntax, per-symmetry selection, lower/upper bounds, CI-bound gates, tolerances, baselines."""

from __future__ import annotations

import json
import pytest

from eqaudit.errors import ConfigError
from eqaudit.gates import (
    GateSpec,
    Tolerance,
    check_gates,
    compare_results,
    evaluate_gates,
    failure_line,
    fail_over_specs,
    gate_specs,
    parse_gate,
    parse_tolerances,
)
from eqaudit.result import AuditResult, DataInfo, ModelInfo, SymmetryResult


class Sym:
    def __init__(self, name: str, spec: str):
        self.name, self.spec = name, spec


ROT90 = Sym("rot90", "rot90")
ROTATE = Sym("rotate", "rotate:step=30")

# A classifier summary with a learned level whose CI straddles 0.9 (point estimate 0.92).
SUMMARY = {
    "flip_rate": 0.0125, "prob_tv": 0.031, "accuracy": 0.95, "worst_case_accuracy": 0.90, "floor": 0.0,
    "level": 0.92, "level_ci": [0.86, 0.97], "level_ci_low": 0.86, "level_ci_high": 0.97, "level_status": "ok",
    "null": 0.8, "extent": {"low": -30, "high": 30},
}


@pytest.mark.parametrize(
    "text, expect",
    [
        ("flip_rate<=0.01", GateSpec("flip_rate", "<=", 0.01, None)),
        ("  rot90 : flip_rate <= 1% ", GateSpec("flip_rate", "<=", 0.01, "rot90")),
        ("rotate:step=15,min=-90:prob_tv<=0.05", GateSpec("prob_tv", "<=", 0.05, "rotate:step=15,min=-90")),
        ("*:level_ci_low>=0.9", GateSpec("level_ci_low", ">=", 0.9, None)),
        ("accuracy >= 9e-1", GateSpec("accuracy", ">=", 0.9, None)),
    ],
)
def test_parse_gate(text, expect):
    got = parse_gate(text)
    assert got == expect
    assert parse_gate(got.text()) == got  # the canonical text round-trips


@pytest.mark.parametrize(
    "text, message",
    [
        ("flip_rate=0.01", "--fail-over takes METRIC=VALUE"),
        ("flip_rate<<0.01", "one operator"),
        ("flip_rate<=>0.01", "one operator"),
        ("flip_rate==0.01", "<= for an upper bound"),
        ("rot90:<=0.01", "metric name"),
        ("flip rate<=0.01", "metric name"),
        ("flip_rate<=abc", "Expected a number"),
        ("flip_rate<=nan", "NaN is no bound"),
        ("rot90: flip_rate <= NaN%", "'rot90: flip_rate <= NaN%'"),
    ],
)
def test_bad_gate_text(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_gate(text)
    assert message in str(exc.value)
    assert exc.value.exit_code == 2


def test_gate_specs_from_toml_forms():
    table = {"*": "prob_tv <= 0.1", "rot90": ["flip_rate <= 0.01", "level_ci_low >= 0.9"], "rotate:step=15": ["prob_tv<=0.2"]}
    texts = [g.text() for g in gate_specs(table)]
    assert texts == ["prob_tv<=0.1", "rot90:flip_rate<=0.01", "rot90:level_ci_low>=0.9", "rotate:step=15:prob_tv<=0.2"]
    assert [g.text() for g in gate_specs("rot90:flip_rate<=0.01; level>=0.5")] == ["rot90:flip_rate<=0.01", "level>=0.5"]
    with pytest.raises(ConfigError, match="names a symmetry again"):
        gate_specs({"rot90": ["flip:flip_rate<=0.1"]})


@pytest.mark.parametrize(
    "gates, fail_over, symmetry, expect",
    [
        # (gate texts, --fail-over, symmetry) -> [(metric, op, passed)] ; selectors pick symmetries
        (["flip_rate<=0.01"], {}, ROT90, [("flip_rate", "<=", False)]),
        (["flip_rate<=0.02"], {}, ROT90, [("flip_rate", "<=", True)]),
        (["rotate:flip_rate<=0.01"], {}, ROT90, []),
        (["rotate:flip_rate<=0.02"], {}, ROTATE, [("flip_rate", "<=", True)]),
        (["rotate:step=30:flip_rate<=0.01"], {}, ROTATE, [("flip_rate", "<=", False)]),
        (["rotate: step = 30 :flip_rate<=0.01"], {}, ROTATE, [("flip_rate", "<=", False)]),  # canonical spec match
        (["rotate:step=15:flip_rate<=0.01"], {}, Sym("rotate", "rotate"), [("flip_rate", "<=", False)]),  # 15 is the default
        # lower bounds: higher is better
        (["accuracy>=0.96"], {}, ROT90, [("accuracy", ">=", False)]),
        (["worst_case_accuracy>=0.9"], {}, ROT90, [("worst_case_accuracy", ">=", True)]),
        ([], {"accuracy": 0.9, "prob_tv": 0.03}, ROT90, [("accuracy", ">=", True), ("prob_tv", "<=", False)]),
        # CI-bound gates: the point estimate passes where the CI's lower end fails ...
        (["level>=0.9"], {}, ROT90, [("level", ">=", True)]),
        (["level_ci_low>=0.9"], {}, ROT90, [("level_ci_low", ">=", False)]),
        ([], {"level_ci_low": 0.9}, ROT90, [("level_ci_low", ">=", False)]),
        # ... and the CI's upper end passes where the point estimate fails (no flake on sampling noise)
        (["level>=0.95"], {}, ROT90, [("level", ">=", False)]),
        (["level_ci_high>=0.95"], {}, ROT90, [("level_ci_high", ">=", True)]),
        # a metric this symmetry does not have: skipped by a wildcard gate, failed by a selected one
        (["floor_flip_rate<=0.1"], {}, ROT90, []),
        (["rot90:floor_flip_rate<=0.1"], {}, ROT90, [("floor_flip_rate", "<=", False)]),
        # a metric eqaudit does not know but the summary has (a task's new metric) is gated
        (["pixel_iou>=0.5"], {}, ROT90, [("pixel_iou", ">=", True)]),
    ],
)
def test_evaluate_gates_table(gates, fail_over, symmetry, expect):
    summary = {**SUMMARY, "pixel_iou": 0.75}
    got = evaluate_gates(summary, fail_over, gate_specs(gates), symmetry=symmetry)
    assert [(g.metric, g.op, g.passed) for g in got] == expect
    for g in got:
        assert g.value == summary.get(g.metric)


def test_undetermined_level_fails_with_reason():
    summary = {**SUMMARY, "level": None, "level_ci_low": None, "level_status": "undetermined", "level_reason": "null equals floor"}
    [g] = evaluate_gates(summary, {}, gate_specs(["level>=0.5"]), symmetry=ROT90)
    assert not g.passed and g.value is None
    assert "undetermined (null equals floor)" in failure_line("m.pt", "rot90", g, summary)


def test_failure_line_has_exact_value_bound_and_symmetry():
    [g] = evaluate_gates(SUMMARY, {}, gate_specs(["rot90:flip_rate<=0.0125000001"]), symmetry=ROT90)
    assert g.passed
    [g] = evaluate_gates({**SUMMARY, "flip_rate": 0.1 + 0.2}, {}, gate_specs(["flip_rate<=0.3"]), symmetry=ROTATE)
    line = failure_line("net.pt", "rotate:step=30", g)
    assert not g.passed
    assert line == "net.pt, symmetry rotate:step=30: flip_rate = 0.30000000000000004, bound <= 0.3"



@pytest.mark.parametrize(
    "gate, value, passed",
    [
        ("flip_rate<0.0125", 0.0125, False), ("flip_rate<=0.0125", 0.0125, True), ("flip_rate < 0.0126", 0.0125, True),
        ("accuracy>0.95", 0.95, False), ("accuracy>=0.95", 0.95, True), ("accuracy > 94%", 0.95, True),
        ("flip_rate<=inf", 1e300, True), ("flip_rate<inf", float("inf"), False), ("level>=-inf", 0.0, True),
        ("flip_rate<=-inf", 0.0, False),
    ],
)
def test_strict_and_infinite_bounds(gate, value, passed):
    [spec] = gate_specs([gate])
    assert spec.op == gate.replace(" ", "").split(spec.metric)[1].rstrip("0123456789.%inf-")  # kept as written
    [g] = evaluate_gates({**SUMMARY, spec.metric: value}, {}, [spec], symmetry=ROT90)
    assert (g.op, g.passed) == (spec.op, passed)


@pytest.mark.parametrize("fail_over", [{"flip_rate": float("nan")}, {"flip_rate": "nan"}, ["flip_rate=NaN"], "prob_tv=0.1,flip_rate=nan%"])
def test_nan_fail_over_is_a_usage_error(fail_over):
    with pytest.raises(ConfigError) as exc:
        fail_over_specs(fail_over)
    assert "NaN is no bound" in str(exc.value) and exc.value.exit_code == 2


def test_fail_over_and_gate_share_one_number_parser():
    """The same bound text means the same number in --fail-over and --gate (%, inf, exponents)."""
    for text, value in [("5%", 0.05), ("inf", float("inf")), ("1e-3", 1e-3), (" 2.5 % ", 0.025)]:
        [f] = fail_over_specs([f"flip_rate={text}"])
        [g] = gate_specs([f"flip_rate<={text}"])
        assert f.threshold == g.threshold == pytest.approx(value)
        assert (f.op, f.origin) == ("<=", "fail_over")
    assert fail_over_specs({"accuracy": 0.9})[0].op == ">="  # the natural direction


def test_messages_quote_the_gate_as_written():
    with pytest.raises(ConfigError) as exc:
        check_gates(fail_over_specs(["flip_rat=5%"]), symmetries=[ROT90])
    assert "--fail-over 'flip_rat=5%'" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        check_gates(gate_specs([" rot45 : flip_rate < 1% "]), symmetries=[ROT90])
    assert "'rot45 : flip_rate < 1%'" in str(exc.value)


@pytest.mark.parametrize(
    "gate, value, shown",
    [
        ("level>=0.1", 0.0723020493368165, "level = 0.07, bound >= 0.1"),  # 0.1 would read as the bound
        ("level>=0.5", 0.0723020493368165, "level = 0.07, bound >= 0.5"),  # at least two decimals below 1
        ("accuracy>=1", 0.125, "accuracy = 0.12, bound >= 1"),
        ("flip_rate<=1000", 1234.5678, "flip_rate = 1235, bound <= 1000"),
        ("flip_rate<=1%", 0.2624839846997501, "flip_rate = 0.26, bound <= 0.01"),
        ("flip_rate<0.01", 0.01, "flip_rate = 0.01, bound < 0.01"),
        ("prob_tv<=0.3", 0.3104, "prob_tv = 0.31, bound <= 0.3"),
        ("prob_tv<=0.3", 0.30004, "prob_tv = 0.30004, bound <= 0.3"),  # more digits where rounding would hide it
        ("level_ci_low>=0.95", 0.9449999, "level_ci_low = 0.94, bound >= 0.95"),
    ],
)
def test_failure_values_are_rounded_to_the_gate(gate, value, shown):
    [g] = evaluate_gates({**SUMMARY, gate_specs([gate])[0].metric: value}, {}, gate_specs([gate]), symmetry=ROT90)
    assert not g.passed
    assert failure_line("net.pt", "rot90", g) == f"net.pt, symmetry rot90: {shown}"


@pytest.mark.parametrize(
    "gates, has_labels, message",
    [
        (["flip_rat<=0.1"], True, "did you mean 'flip_rate'"),
        (["level_ci_lo>=0.9"], True, "did you mean 'level_ci_low'"),
        (["level_ci>=0.9"], True, "level_ci_low or level_ci_high"),
        (["rot45:flip_rate<=0.1"], True, "did you mean 'rot90'"),
        (["d4:flip_rate<=0.1"], True, "this scan audits rot90, rotate, rotate:step=30"),
        (["accuracy>=0.9"], False, "needs labels"),
    ],
)
def test_check_gates_before_the_sweep(gates, has_labels, message):
    with pytest.raises(ConfigError) as exc:
        check_gates(gate_specs(gates), symmetries=[ROT90, ROTATE], has_labels=has_labels, label_metrics=frozenset({"accuracy"}))
    assert message in str(exc.value)


def test_unknown_metric_missing_from_summary_is_a_usage_error():
    check_gates(gate_specs(["pixel_iou>=0.5"]), symmetries=[ROT90])  # unknown yet: left to the summary
    with pytest.raises(ConfigError, match="did you mean 'pixel_iou'") as exc:
        evaluate_gates({**SUMMARY, "pixel_iou": 0.7}, {}, gate_specs(["pixel_io>=0.5"]), symmetry=ROT90)
    assert exc.value.exit_code == 2
    with pytest.raises(ConfigError, match="not a number"):
        evaluate_gates(SUMMARY, {}, gate_specs(["extent<=1"]), symmetry=ROT90)


@pytest.mark.parametrize(
    "raw, expect",
    [
        (0.02, {"*": Tolerance(0.02)}),
        ("5%", {"*": Tolerance(0.05, True)}),
        (["0.01", "level=5%"], {"*": Tolerance(0.01), "level": Tolerance(0.05, True)}),
        ("prob_tv=0.01,level=10%", {"prob_tv": Tolerance(0.01), "level": Tolerance(0.1, True)}),
        ({"default": 0.01, "level": "5%"}, {"*": Tolerance(0.01), "level": Tolerance(0.05, True)}),
    ],
)
def test_parse_tolerances(raw, expect):
    assert parse_tolerances(raw) == expect


@pytest.mark.parametrize("raw", ["-0.1", "level=abc", "x y=1", True])
def test_bad_tolerances(raw):
    with pytest.raises(ConfigError):
        parse_tolerances(raw)


def _result(summaries: dict[str, dict], model: str = "net.pt") -> AuditResult:
    syms = [SymmetryResult(0, spec.split(":")[0], spec, True, "image", [], [], "finite", 0, [], [], dict(sm), [])
            for spec, sm in summaries.items()]
    return AuditResult("0", "2024-01-01T00:00:00", 0, "cpu", [ModelInfo(model, "torch", "", [1, 8, 8])],
                       DataInfo("d.npz", 10, True), syms, {"seconds": 1.0})


def test_compare_per_metric_absolute_and_relative_tolerances():
    base = _result({"rot90": {"flip_rate": 0.10, "prob_tv": 0.20, "level": 0.80}, "flip": {"flip_rate": 0.0}})
    new = _result({"rot90": {"flip_rate": 0.115, "prob_tv": 0.205, "level": 0.77}, "flip": {"flip_rate": 0.0}}, model="retrained.pt")
    # default 0.01 absolute: flip_rate (+0.015) and level (-0.03) regress, prob_tv (+0.005) does not
    c = compare_results(base, new)
    assert [(r.symmetry, r.metric) for r in c.regressions] == [("rot90", "flip_rate"), ("rot90", "level")]
    # level within 5% of 0.80 (0.04), flip_rate within 0.02
    c = compare_results(base, new, {"*": "0.02", "level": "5%"})
    assert c.passed and len(c.rows) == 4
    # level 3% relative is 0.024 < 0.03: regresses; the message lists the metric, both values and the allowance
    c = compare_results(base, new, ["0.02", "level=3%"])
    [r] = c.regressions
    assert r.metric == "level" and "0.8 -> 0.77" in r.describe() and "allowed 0.024 = 3% of |base|" in r.describe()
    # improvements never regress; a symmetry missing from the new result does
    c = compare_results(new, base, 0)
    assert not c.regressions
    c = compare_results(base, _result({"rot90": {"flip_rate": 0.1}}), 0.5)
    assert c.missing == ["net.pt flip"] and not c.passed


def test_compare_ignores_the_floor_and_notes_different_data(tmp_path, model_files, data_npz):
    from conftest import factory
    from eqaudit.api import scan
    from eqaudit.gates import compare_results

    common = dict(data=str(data_npz), symmetry=["rotate:step=45"], model_factory=factory("Rot90Averaged"))
    a = scan(model_files["Rot90Averaged"], out=str(tmp_path / "a"), **common)
    b = scan(model_files["Rot90Averaged"], out=str(tmp_path / "b"), limit=12, **common)
    b.symmetries[0].summary["floor"] = a.symmetries[0].summary["floor"] + 0.5  # a worse floor is not the model's fault
    c = compare_results(a, b, 1.0)
    assert "floor" not in {row[2] for row in c.rows} and c.passed
    assert any("24 samples" in w and "12" in w for w in c.warnings)
    assert "floor" in {row[2] for row in compare_results(a, b, {"floor": 0.01}).rows}  # unless asked for


def test_a_gate_no_symmetry_measures_is_a_usage_error_and_fail_over_takes_percentages(model_files, data_npz, tmp_path):
    from typer.testing import CliRunner

    from conftest import factory
    from eqaudit.cli import app

    base = ["scan", str(model_files["SmallCNN"]), "--data", str(data_npz), "-s", "rot90", "--model-factory", factory("SmallCNN"),
            "--out", str(tmp_path / "o"), "--quiet"]
    for gate in (["--gate", "epe<=0.1"], ["--gate", "lie_derivative<=1"], ["--fail-over", "level_at_init=0.5"]):
        res = CliRunner().invoke(app, base + gate)
        assert res.exit_code == 2 and "no symmetry of this scan measures" in res.output, (gate, res.output)
    res = CliRunner().invoke(app, base + ["--fail-over", "flip_rate=5%"])
    gate = json.loads((tmp_path / "o" / "result.json").read_text())["symmetries"][0]["gates"][0]
    assert gate["threshold"] == pytest.approx(0.05) and res.exit_code == 1


def test_gate_metric_names_ignore_case_and_regressions_name_the_new_model(model_files, data_npz, tmp_path):
    from conftest import factory
    from eqaudit.api import scan
    from eqaudit.gates import compare_results, parse_gate

    assert parse_gate("rot90:FLIP_RATE<=0.5").metric == "flip_rate"
    common = dict(data=str(data_npz), symmetry=["rot90"])
    base = scan(model_files["Rot90Averaged"], model_factory=factory("Rot90Averaged"), out=str(tmp_path / "a"), **common)
    new = scan(model_files["SmallCNN"], model_factory=factory("SmallCNN"), out=str(tmp_path / "b"), **common)
    c = compare_results(base, new, 0.01)
    assert c.regressions and {r.model for r in c.regressions} == {"SmallCNN.pt"}
