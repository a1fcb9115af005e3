"""The result cache: a second scan of the same audit never calls the model; any keyed input changed measures afresh; results are the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TOY_FILE, save_state_dict
from eqaudit.cli import app
from eqaudit.result import OrbitTable

SPECS = ["rot90", "flip"]


@pytest.fixture
def audit(tmp_path, data_npz, monkeypatch):
    """A model (CallLogCNN, its factory a copy of toy_models.py), a copy of the data and a call counter."""
    factory_file = tmp_path / "toy_copy.py"
    shutil.copy(TOY_FILE, factory_file)
    model = save_state_dict("CallLogCNN", tmp_path)
    data = tmp_path / "data.npz"
    shutil.copy(data_npz, data)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("EQAUDIT_TEST_CALL_LOG", str(log))

    def calls() -> int:
        """Model calls since the last look (and forget them)."""
        n = len(log.read_text().split()) if log.exists() else 0
        log.unlink(missing_ok=True)
        return n

    return {"model": model, "data": data, "factory": f"{factory_file}:CallLogCNN", "factory_file": factory_file,
            "out": tmp_path / "out", "calls": calls}


def _scan(a: dict, **kw):
    from eqaudit.api import scan

    options = dict(data=str(a["data"]), symmetry=SPECS, model_factory=a["factory"], batch_size=16, out=str(a["out"]), device="cpu")
    return scan(a["model"], **{**options, **kw})


def _comparable(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """result.json without what differs between two runs of one audit (timing, created, out, the cache
    setting itself), and the orbit table."""
    d = json.loads((folder / "result.json").read_text())
    d.pop("timing"), d.pop("created")
    d["settings"]["values"].pop("out"), d["settings"]["values"].pop("cache"), d["settings"]["sources"].pop("cache")
    return d, OrbitTable.load(folder / "orbits.npz").arrays


def _assert_same(a: Path, b: Path) -> None:
    (da, oa), (db, ob) = _comparable(a), _comparable(b)
    assert da == db
    assert sorted(oa) == sorted(ob)
    for key in oa:
        np.testing.assert_array_equal(oa[key], ob[key], err_msg=key)


def test_a_second_scan_is_served_from_the_cache_without_a_model_call(audit, tmp_path):
    first = _scan(audit)
    assert audit["calls"]() > 0 and "cache" not in first.timing
    second = _scan(audit)
    assert audit["calls"]() == 0
    assert second.timing["cache"] == "hit"
    assert second.timing["seconds"] == first.timing["seconds"] and second.timing["model_evals"] == first.timing["model_evals"]
    stored = json.loads((audit["out"] / "result.json").read_text())
    assert stored["timing"]["cache"] == "hit" and stored["complete"] is True
    # the same audit measured afresh (--no-cache, elsewhere) gives the same result and orbit table
    fresh = _scan(audit, out=str(tmp_path / "fresh"), cache=False)
    assert audit["calls"]() > 0 and "cache" not in fresh.timing
    _assert_same(audit["out"], tmp_path / "fresh")
    third = _scan(audit)  # a result served from the cache serves again
    assert audit["calls"]() == 0 and third.timing["cache"] == "hit"
    _assert_same(audit["out"], tmp_path / "fresh")


def test_no_cache_measures_again(audit):
    _scan(audit)
    audit["calls"]()
    again = _scan(audit, cache=False)
    assert audit["calls"]() > 0 and "cache" not in again.timing


def test_batch_size_and_prefetch_are_not_keyed(audit):
    """The sweep's numbers do not depend on them (eqaudit.fingerprint), so they reuse the cache."""
    _scan(audit)
    audit["calls"]()
    assert _scan(audit, batch_size=7).timing["cache"] == "hit"
    assert _scan(audit, prefetch=False).timing["cache"] == "hit"
    assert audit["calls"]() == 0


def _edit_model(a):
    state = torch.load(a["model"], weights_only=True)
    name = next(iter(state))
    state[name] = state[name] + 0.01
    torch.save(state, a["model"])


def _edit_data(a):
    with np.load(a["data"]) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["x"] = arrays["x"].copy()
    arrays["x"][0] += 0.5
    np.savez(a["data"], **arrays)


def _edit_factory(a):
    with open(a["factory_file"], "a") as fh:
        fh.write("\nSmallCNN.forward_scale = 1.0  # an edit of the architecture's source\n")


CHANGES = {
    "model file bytes": ({}, _edit_model),
    "data content": ({}, _edit_data),
    "factory source": ({}, _edit_factory),
    "symmetry spec": ({"symmetry": ["rot90", "flip:axis=h"]}, None),
    "seed": ({"seed": 1}, None),
    "limit": ({"limit": 20}, None),
    "reference": ({"reference": "label"}, None),
    "layout": ({"layout": "NCHW"}, None),
    "output declaration": ({"output": ["invariant"]}, None),
    "local error": ({"local": True}, None),
    "floor samples": ({"floor_samples": 5, "symmetry": ["rotate:step=90"]}, None),  # the base scan rotates too
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_any_keyed_input_changed_misses_the_cache(audit, tmp_path, change):
    options, edit = CHANGES[change]
    _scan(audit, **({"symmetry": options["symmetry"]} if change == "floor samples" else {}))
    audit["calls"]()
    if edit is not None:
        edit(audit)
    result = _scan(audit, **options)
    assert audit["calls"]() > 0, change
    assert "cache" not in result.timing
    # and the result is the one a scan into an empty folder gives
    _scan(audit, out=str(tmp_path / "fresh"), **options)
    _assert_same(audit["out"], tmp_path / "fresh")


def test_another_gate_and_format_on_a_cached_scan_need_no_model_call(audit):
    _scan(audit)
    assert audit["calls"]() > 0
    args = ["scan", str(audit["model"]), "--data", str(audit["data"]), "--model-factory", audit["factory"], "--out", str(audit["out"]),
            "--device", "cpu", "--quiet", "-s", SPECS[0], "-s", SPECS[1]]
    res = CliRunner().invoke(app, [*args, "--gate", "flip_rate<=0", "--format", "json"])
    assert res.exit_code == 1, res.output  # the toy model flips some labels: the new gate fails
    assert audit["calls"]() == 0
    result = json.loads((audit["out"] / "result.json").read_text())
    assert result["timing"]["cache"] == "hit" and result["passed"] is False
    gates = [g for s in result["symmetries"] for g in s["gates"]]
    assert [g["metric"] for g in gates] == ["flip_rate", "flip_rate"] and not all(g["passed"] for g in gates)
    # --format json wrote no orbit table: what this run left out is gone, as after a fresh scan
    assert not (audit["out"] / "orbits.npz").exists() and not (audit["out"] / "elements.csv").exists()
    res = CliRunner().invoke(app, [*args, "--format", "json,csv"])  # needs no orbit table: served
    assert res.exit_code == 0, res.output
    assert audit["calls"]() == 0 and (audit["out"] / "elements.csv").exists()
    assert json.loads((audit["out"] / "result.json").read_text())["passed"] is True
    res = CliRunner().invoke(app, [*args, "--format", "json,orbits"])  # needs the orbit table the cache lacks
    assert res.exit_code == 0, res.output
    assert audit["calls"]() > 0 and (audit["out"] / "orbits.npz").exists()
    res = CliRunner().invoke(app, [*args, "--no-cache", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert audit["calls"]() > 0


def test_the_report_says_a_result_came_from_the_cache(audit):
    from eqaudit.report.base import Outcome, reporter

    _scan(audit, symmetry=["flip"])
    _scan(audit, symmetry=["flip"])
    assert audit["calls"]() > 0
    from eqaudit.result import AuditResult

    reporter("html").write(Outcome(AuditResult.load(audit["out"]), audit["out"]))
    assert "served from the result cache" in (audit["out"] / "report.html").read_text()
    _scan(audit, symmetry=["flip"], cache=False)
    reporter("html").write(Outcome(AuditResult.load(audit["out"]), audit["out"]))
    assert "served from the result cache" not in (audit["out"] / "report.html").read_text()


def test_every_setting_is_classified_as_measured_or_not():
    """A new setting must be put in MEASUREMENT_SETTINGS (keyed: the cache and --resume notice it) or NOT_MEASURED."""
    from eqaudit.config import SETTINGS
    from eqaudit.fingerprint import MEASUREMENT_SETTINGS, NOT_MEASURED

    assert not set(MEASUREMENT_SETTINGS) & set(NOT_MEASURED)
    assert set(MEASUREMENT_SETTINGS) | set(NOT_MEASURED) == set(SETTINGS)
