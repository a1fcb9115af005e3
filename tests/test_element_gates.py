"""Gates on one element of an orbit (rot90[180]:flip_rate<=...), per-element summary rows, and the ZipMap load error."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import factory, save_state_dict, smooth_images
from eqaudit.cli import app
from eqaudit.errors import ConfigError
from eqaudit.gates import GateSpec, check_gates, evaluate_gates, failure_line, gate_specs, parse_gate
from eqaudit.symmetries import parse_symmetry

HALF = "rot90[180]:flip_rate<=0.001"  # the model is invariant to the half turn by construction
QUARTER = "rot90[90]:flip_rate<=0.001"  # ... and not to quarter turns


# ------------------------------------------------------------------------------------------ syntax


@pytest.mark.parametrize(
    "text, expect",
    [
        ("rot90[180]:flip_rate>=0.8", GateSpec("flip_rate", ">=", 0.8, "rot90", element="180")),
        (" rot90 [ 180° ] : prob_tv <= 1% ", GateSpec("prob_tv", "<=", 0.01, "rot90", element="180°")),
        ("translate:max=2[dx=1 dy=0]:flip_rate<=0.1", GateSpec("flip_rate", "<=", 0.1, "translate:max=2", element="dx=1 dy=0")),
        ("d4*flip[r1·f | flip-h]:accuracy>=0.5", GateSpec("accuracy", ">=", 0.5, "d4*flip", element="r1·f | flip-h")),
    ],
)
def test_parse_element_gate(text, expect):
    got = parse_gate(text)
    assert got == expect
    assert parse_gate(got.text()) == got  # the canonical text round-trips


@pytest.mark.parametrize(
    "text, message",
    [
        ("[180]:flip_rate<=0.1", "a symmetry before the element"),
        ("*[180]:flip_rate<=0.1", "a symmetry before the element"),
        ("rot90[]:flip_rate<=0.1", "an element label between the brackets"),
        ("rot90[180]flip_rate<=0.1", "SYMMETRY[ELEMENT]:METRIC"),
        ("rot90[180:flip_rate<=0.1", "SYMMETRY[ELEMENT]:METRIC"),
        ("translate[dx=1 dy=0]:max=2:flip_rate<=0.1", "right after the whole symmetry spec"),
    ],
)
def test_bad_element_gate_text(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_gate(text)
    assert message in str(exc.value) and exc.value.exit_code == 2


def test_config_tables_name_elements_in_the_key_or_the_gate():
    texts = [g.text() for g in gate_specs({"rot90[180]": "flip_rate<=0.01", "rot90": ["[90]:prob_tv<=0.2", "level>=0.5"]})]
    assert texts == ["rot90[180]:flip_rate<=0.01", "rot90[90]:prob_tv<=0.2", "rot90:level>=0.5"]
    with pytest.raises(ConfigError, match="names an element again"):
        gate_specs({"rot90[180]": ["[90]:flip_rate<=0.1"]})


# ------------------------------------------------------------------------------------------ matching and values

ROWS = [
    {"label": "0°", "flip_rate": 0.0, "prob_tv": 0.0, "accuracy": 0.5, "level": 1.0},
    {"label": "90°", "flip_rate": 0.25, "prob_tv": 0.1, "accuracy": 0.4, "level": 0.2},
    {"label": "180°", "flip_rate": 0.0, "prob_tv": 1e-9, "accuracy": 0.5, "level": None},
    {"label": "270°", "flip_rate": 0.5, "prob_tv": 0.2, "accuracy": 0.3, "level": 0.1},
]
SUMMARY = {"flip_rate": 0.25, "prob_tv": 0.1, "accuracy": 0.4, "worst_case_accuracy": 0.2}


@pytest.mark.parametrize(
    "gate, element, value, passed",
    [
        ("rot90[180]:flip_rate<=0.001", "180°", 0.0, True),
        ("rot90[ 270° ]:flip_rate<=0.001", "270°", 0.5, False),  # whitespace and the degree sign are optional
        ("rot90[90]:accuracy>=0.4", "90°", 0.4, True),  # the element's value, not the summary's
        ("rot90[270]:accuracy>=0.4", "270°", 0.3, False),
        ("rot90[180]:level>=0.5", "180°", None, False),  # an element without a level fails
    ],
)
def test_element_gate_compares_the_element_row(gate, element, value, passed):
    [g] = evaluate_gates(SUMMARY, {}, gate_specs([gate]), symmetry=parse_symmetry("rot90"), per_element=ROWS)
    assert (g.element, g.value, g.passed) == (element, value, passed)
    line = failure_line("m.pt", "rot90", g)
    assert f"flip_rate at {element}" in line or f"{g.metric} at {element}" in line


def test_element_gates_skip_other_symmetries_and_sit_beside_summary_gates():
    gates = evaluate_gates(SUMMARY, {"flip_rate": 0.3}, gate_specs(["flip[flip-h]:flip_rate<=0.1", "rot90[90]:flip_rate<=0.3"]),
                           symmetry=parse_symmetry("rot90"), per_element=ROWS)
    assert [(g.metric, g.element, g.value) for g in gates] == [("flip_rate", None, 0.25), ("flip_rate", "90°", 0.25)]


def test_unknown_element_and_summary_only_metric_are_usage_errors():
    with pytest.raises(ConfigError) as exc:
        check_gates(gate_specs(["rot90[18]:flip_rate<=0.1"]), symmetries=[parse_symmetry("rot90")])
    assert "did you mean '180°'" in str(exc.value) and "0°, 90°, 180°, 270°" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        check_gates(gate_specs(["flip[flip-x]:flip_rate<=0.1"]), symmetries=[parse_symmetry("flip")])
    assert "id, flip-h" in str(exc.value)
    check_gates(gate_specs(["d4[R1*F]:flip_rate<=0.1", "translate:max=1[dx=1  dy=0]:flip_rate<=0.1"]),
                symmetries=[parse_symmetry("d4"), parse_symmetry("translate:max=1")])  # case, '*' for '·', spaces
    with pytest.raises(ConfigError) as exc:
        evaluate_gates(SUMMARY, {}, gate_specs(["rot90[90]:worst_case_accuracy>=0.5"]), symmetry=parse_symmetry("rot90"),
                       per_element=ROWS)
    assert "per-element metrics: flip_rate, prob_tv, accuracy, level" in str(exc.value)


# ------------------------------------------------------------------------------------------ through the CLI


@pytest.fixture(scope="module")
def half_turn(tmp_path_factory):
    """A scan of a model invariant to the half turn only, under rot90 and a 25-element translate, with
    a passing and a failing element gate."""
    folder = tmp_path_factory.mktemp("half")
    data = folder / "d.npz"
    np.savez(data, x=smooth_images(24), y=np.random.default_rng(1).integers(0, 5, 24))
    model = save_state_dict("HalfTurnAveraged", folder)
    base = ["scan", str(model), "--data", str(data), "-s", "rot90", "-s", "translate:max=2", "--model-factory",
            factory("HalfTurnAveraged"), "--device", "cpu"]
    res = CliRunner().invoke(app, [*base, "--out", str(folder / "out"), "--gate", HALF, "--gate", QUARTER,
                                   "--junit-xml", str(folder / "junit.xml")])
    return {"base": base, "folder": folder, "res": res, "out": folder / "out"}


def test_half_turn_gate_passes_and_quarter_turn_gate_fails(half_turn):
    res = half_turn["res"]
    assert res.exit_code == 1, res.output
    result = json.loads((half_turn["out"] / "result.json").read_text())
    rot = result["symmetries"][0]
    gates = {g["element"]: g for g in rot["gates"]}
    rows = {pe["label"]: pe for pe in rot["per_element"]}
    assert set(gates) == {"180°", "90°"}
    assert gates["180°"]["passed"] and gates["180°"]["value"] == rows["180°"]["flip_rate"] == 0.0
    assert not gates["90°"]["passed"] and gates["90°"]["value"] == rows["90°"]["flip_rate"] > 0.1
    assert gates["90°"]["metric"] == "flip_rate" and result["symmetries"][1]["gates"] == []
    assert "gate failed: HalfTurnAveraged.pt, symmetry rot90: flip_rate at 90° = " in res.output
    assert "1 of 2 gate(s) failed" in res.output
    # the JUnit test cases name the element
    names = {c.get("name"): c.find("failure") is not None for c in ET.parse(half_turn["folder"] / "junit.xml").iter("testcase")}
    assert names == {"rot90: flip_rate at 180° <= 0.001": False, "rot90: flip_rate at 90° <= 0.001": True}


def test_half_turn_gate_alone_exits_zero(half_turn, tmp_path):
    res = CliRunner().invoke(app, [*half_turn["base"], "--out", str(tmp_path / "o"), "--gate", HALF, "--quiet"])
    assert res.exit_code == 0, res.output
    assert "all gates passed (1 checked)" in res.output


def test_element_errors_exit_2_with_valid_labels_or_metrics(half_turn, tmp_path):
    res = CliRunner().invoke(app, [*half_turn["base"], "--out", str(tmp_path / "o"), "--gate", "rot90[45]:flip_rate<=0.1"])
    assert res.exit_code == 2 and "valid labels: 0°, 90°, 180°, 270°" in res.output, res.output
    assert not (tmp_path / "o").exists()  # refused before the sweep
    cfg = tmp_path / "c.toml"
    cfg.write_text('gates = ["translate:max=2[dx=9 dy=0]:prob_tv<=0.1"]\n', encoding="utf-8")
    res = CliRunner().invoke(app, [*half_turn["base"], "--out", str(tmp_path / "o"), "--config", str(cfg)])
    assert res.exit_code == 2 and "'dx=9 dy=0'" in res.output and "dx=-2 dy=-2" in res.output, res.output


def test_terminal_lists_the_elements_of_small_finite_groups_only(half_turn):
    lines = half_turn["res"].output.splitlines()
    subrows = [ln for ln in lines if "└ " in ln]  # (the table border has └ too)
    assert [ln.split("└ ")[1].split()[0] for ln in subrows] == ["90°", "180°", "270°"]  # rot90, not the identity
    assert not any("dx=" in ln for ln in lines)  # translate:max=2 has 25 elements: no sub-rows
    assert "FAIL flip_rate" in subrows[0] and "pass flip_rate" in subrows[1]  # each element's gate on its row
    assert "0.0%" in subrows[1] and "45.8%" in subrows[0]  # the element's own flip rate (11 of 24 samples)


def test_report_lists_the_elements_of_small_finite_groups_only(half_turn):
    text = (half_turn["out"] / "report.html").read_text(encoding="utf-8")
    assert text.count('<tr class="element') == 3
    for label in ("90°", "180°", "270°"):
        assert f"└ <code>{label}</code>" in text
    assert "└ <code>0°</code>" not in text and "└ <code>dx=" not in text
    assert text.count('<tr class="element fail">') == 1  # the quarter turn's failed gate


# ------------------------------------------------------------------------------------------ ZipMap


def _zipmap_model(path, extra_float: bool = False):
    """An ONNX classifier shaped like skl2onnx's default export: an int64 label and a ZipMap
    (a sequence of {class: probability} maps) instead of a probability tensor."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    k = 16
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("Softmax", ["flat"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["output_label"], axis=1, keepdims=0),
        helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml", classlabels_int64s=list(range(k))),
    ]
    outputs = [
        helper.make_tensor_value_info("output_label", TensorProto.INT64, [None]),
        helper.make_value_info("output_probability", helper.make_sequence_type_proto(
            helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))),
    ]
    if extra_float:
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, k]))
    graph = helper.make_graph(nodes, "zipmap", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 4, 4])], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def test_zipmap_output_names_zipmap_false(tmp_path):
    model = _zipmap_model(tmp_path / "clf.onnx")
    data = tmp_path / "d.npz"
    np.savez(data, x=smooth_images(4, size=4))
    res = CliRunner().invoke(app, ["scan", str(model), "--data", str(data), "-s", "rot90", "--out", str(tmp_path / "o")])
    assert res.exit_code == 3, res.output
    flat = " ".join(res.output.split())
    assert "'output_probability' (seq(map(int64,tensor(float))))" in flat and "'zipmap': False" in flat and "zipmap=False" in flat
    # asking for the map output by name gets the same advice; a float output beside it is offered
    model = _zipmap_model(tmp_path / "clf2.onnx", extra_float=True)
    res = CliRunner().invoke(app, ["scan", str(model), "--data", str(data), "-s", "rot90", "--out", str(tmp_path / "o"),
                                   "--output-name", "output_probability"])
    flat = " ".join(res.output.split())
    assert res.exit_code == 3 and "zipmap=False" in flat and "--output-name (probabilities)" in flat, res.output
