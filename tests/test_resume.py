"""Checkpoints, SIGINT/SIGTERM/SIGKILL, --resume and output folders: a resumed audit equals an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import toy_models
from conftest import factory, save_state_dict
from eqaudit.cli import app
from eqaudit.outdir import MARKER
from eqaudit.result import AuditResult, OrbitTable

ROOT = Path(__file__).resolve().parents[1]
SPECS = ["rot90", "flip", "d4"]


def _args(model: Path, data: Path, out: Path, cls: str, *extra: str, specs: list[str] = SPECS) -> list[str]:
    args = ["scan", str(model), "--data", str(data), "--model-factory", factory(cls), "--batch-size", "16",
            "--out", str(out), "--quiet", "--device", "cpu"]
    for spec in specs:
        args += ["-s", spec]
    return args + list(extra)


def _api_scan(model: Path, data: Path, out: Path, cls: str, specs: list[str] = SPECS, **kw):
    """The scan _args describes, through the Python API (no report rendering: faster)."""
    from eqaudit.api import scan

    return scan(model, data=str(data), symmetry=specs, model_factory=factory(cls), batch_size=16, out=str(out), device="cpu", **kw)


def _comparable(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """result.json without what may differ between two runs of one audit (timing, created, the out path)."""
    d = json.loads((folder / "result.json").read_text())
    d.pop("timing"), d.pop("created")
    d["settings"]["values"].pop("out")
    for part in ("values", "sources"):  # whether the result cache may serve a run does not change what it measures
        d["settings"][part].pop("cache", None)
    return d, OrbitTable.load(folder / "orbits.npz").arrays


def _assert_same_audit(a: Path, b: Path) -> None:
    (da, oa), (db, ob) = _comparable(a), _comparable(b)
    assert da == db
    assert sorted(oa) == sorted(ob)
    for key in oa:
        np.testing.assert_array_equal(oa[key], ob[key], err_msg=key)


@pytest.fixture(scope="module")
def slow(tmp_path_factory, data_npz):
    """A slow toy model (50 ms per call) and the uninterrupted audit of it."""
    folder = tmp_path_factory.mktemp("slow")
    model = save_state_dict("SlowCNN", folder)
    _api_scan(model, data_npz, folder / "reference", "SlowCNN")
    return model, folder / "reference"


def _start(model: Path, data: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "eqaudit", *_args(model, data, out, "SlowCNN")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not (out / "result.json").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_scan_resumes_to_the_uninterrupted_result(slow, data_npz, tmp_path, sig):
    model, reference = slow
    out = tmp_path / "out"
    proc = _start(model, data_npz, out)
    _wait_for_checkpoint(proc, out)
    proc.send_signal(sig)
    text = proc.communicate(timeout=120)[0]
    partial = AuditResult.load(out / "result.json")
    assert not partial.complete and not partial.passed
    assert 1 <= len(partial.symmetries) < len(SPECS)
    assert [s.spec for s in partial.symmetries] == SPECS[: len(partial.symmetries)]
    assert (out / MARKER).exists() and not (out / "report.html").exists()  # the report comes at the end
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, text
        assert "SIGTERM" in text and "--resume" in text
        res = CliRunner().invoke(app, _args(model, data_npz, out, "SlowCNN", "--resume"))
        assert res.exit_code == 0, res.output
        assert (out / "report.html").exists()
    else:
        assert proc.returncode == -signal.SIGKILL
        _api_scan(model, data_npz, out, "SlowCNN", resume=True)
    _assert_same_audit(reference, out)
    assert not (out / MARKER).exists()


def test_sigint_stops_after_the_batch_with_exit_130(slow, data_npz, tmp_path):
    model, _ = slow
    out = tmp_path / "out"
    proc = _start(model, data_npz, out)
    _wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGINT)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, text
    assert "Traceback" not in text
    partial = AuditResult.load(out / "result.json")
    assert not partial.complete and 1 <= len(partial.symmetries) < len(SPECS)


def _interrupted(model: Path, data: Path, out: Path, cls: str, after_batches: int):
    """An in-process scan stopped (as by SIGTERM) before its ``after_batches``-th batch."""
    from eqaudit.api import run_scan
    from eqaudit.config import resolve
    from eqaudit.errors import Interrupted

    calls = []

    def stop() -> None:
        calls.append(1)
        if len(calls) >= after_batches:
            raise Interrupted(signal.SIGTERM)

    settings = resolve({"data": str(data), "symmetry": SPECS, "model_factory": factory(cls), "batch_size": 16, "out": str(out),
                        "device": "cpu"}, models=[model])
    with pytest.raises(Interrupted) as info:
        run_scan([model], settings, stop=stop)
    assert info.value.exit_code == 143
    return settings


def test_resume_refuses_a_changed_model_data_or_setting(data_npz, tmp_path):
    model = save_state_dict("SmallCNN", tmp_path)
    out = tmp_path / "out"
    _interrupted(model, data_npz, out, "SmallCNN", after_batches=8)  # rot90 has 6 batches of 4 samples: it finished
    before = (out / "result.json").read_text()
    assert [s.spec for s in AuditResult.load(out).symmetries] == ["rot90"]

    res = CliRunner().invoke(app, _args(model, data_npz, out, "SmallCNN", "--resume", "--seed", "3"))
    assert res.exit_code == 2 and "seed 0 -> 3" in res.output, res.output

    other = tmp_path / "other.npz"
    with np.load(data_npz) as z:
        np.savez(other, x=z["x"][::-1].copy(), y=z["y"], classes=z["classes"])
    res = CliRunner().invoke(app, _args(model, other, out, "SmallCNN", "--resume"))
    assert res.exit_code == 2 and "changed" in res.output, res.output

    changed = toy_models.SmallCNN()
    with torch.no_grad():
        changed.head.weight.mul_(2)
    torch.save(changed.state_dict(), model)
    res = CliRunner().invoke(app, _args(model, data_npz, out, "SmallCNN", "--resume"))
    assert res.exit_code == 2, res.output
    assert "Cannot resume" in res.output and "SmallCNN.pt" in res.output and "changed" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert (out / "result.json").read_text() == before  # refused before anything was written


def test_resume_without_a_checkpoint_is_refused(data_npz, tmp_path):
    model = save_state_dict("SmallCNN", tmp_path)
    res = CliRunner().invoke(app, _args(model, data_npz, tmp_path / "empty", "SmallCNN", "--resume"))
    assert res.exit_code == 2 and "Nothing to resume" in res.output, res.output


def _unwritable_outs(tmp_path: Path) -> list[Path]:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    outs = [a_file, a_file / "under"]
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        outs.append(ro / "out")
    if Path("/sys").is_dir() and not os.access("/sys", os.W_OK):
        outs.append(Path("/sys/eqaudit-test-out"))
    elif Path("/sys").is_dir():
        try:
            Path("/sys/eqaudit-test-out").mkdir()
        except OSError:
            outs.append(Path("/sys/eqaudit-test-out"))  # a read-only file system even for root
    return outs


def test_an_unwritable_out_fails_before_any_model_call(data_npz, tmp_path, monkeypatch):
    model = save_state_dict("CallLogCNN", tmp_path)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("EQAUDIT_TEST_CALL_LOG", str(log))
    outs = _unwritable_outs(tmp_path)
    assert len(outs) >= 2
    for out in outs:
        res = CliRunner().invoke(app, _args(model, data_npz, out, "CallLogCNN"))
        assert res.exit_code == 2, (out, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and "Output folder" in lines[0] and "--out" in lines[0], res.output
        assert not log.exists(), out
    _api_scan(model, data_npz, tmp_path / "fine", "CallLogCNN", specs=["flip"])  # the log does record calls
    assert log.exists()


def test_a_new_run_replaces_the_previous_outputs_and_names_an_unfinished_one(data_npz, tmp_path):
    model = save_state_dict("SmallCNN", tmp_path)
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    old = {name: out / name for name in ["result.json", "orbits.npz", "elements.csv", "report.html"]}
    for path in old.values():
        path.write_text("from an earlier run\n")
    (out / "plots" / "s3-translate-m0.png").write_bytes(b"old plot")
    (out / "plots" / "mine.png").write_bytes(b"the user's")
    (out / "notes.txt").write_text("the user's\n")

    _interrupted(model, data_npz, out, "SmallCNN", after_batches=3)  # stopped inside rot90: nothing finished
    assert not any(p.exists() for p in old.values())  # no mix of two runs, and no stale passing result
    assert not (out / "plots" / "s3-translate-m0.png").exists()
    assert (out / "plots" / "mine.png").exists() and (out / "notes.txt").exists()
    assert (out / MARKER).exists()

    res = CliRunner().invoke(app, ["report", str(out)])
    assert res.exit_code == 2 and "did not finish" in res.output, res.output

    _interrupted(model, data_npz, out, "SmallCNN", after_batches=8)  # rot90 finished
    res = CliRunner().invoke(app, ["report", str(out / "result.json")])
    assert res.exit_code == 0 and "did not finish" in res.output and "partial" in res.output, res.output

    res = CliRunner().invoke(app, _args(model, data_npz, out, "SmallCNN", specs=["flip"]))  # one symmetry: a quick report
    assert res.exit_code == 0, res.output
    assert "did not finish" in res.output and "--resume" in res.output
    assert not (out / MARKER).exists() and AuditResult.load(out).complete


def test_the_sweep_hands_over_each_finished_symmetry(data_npz):
    """sweep_tables yields a table per finished symmetry; a failure in a later one leaves them with the caller."""
    from eqaudit.data import load_dataset
    from eqaudit.errors import ModelRunError
    from eqaudit.models.base import AdapterInfo
    from eqaudit.models.torch_backend import TorchAdapter
    from eqaudit.sweep import sweep, sweep_tables
    from eqaudit.symmetries import parse_symmetry
    from eqaudit.tasks import get_task

    ds = load_dataset(str(data_npz))
    info = AdapterInfo("toy", "torch", "module", "", "cpu")
    model = TorchAdapter(toy_models.FailsOnZeroColumn().eval(), info, torch.device("cpu"))
    syms = [parse_symmetry(s) for s in ["rot90", "flip", "translate:mode=zero"]]
    got = []
    with pytest.raises(ModelRunError):
        for st in sweep_tables(model, ds, syms, get_task("classify"), batch_size=32):
            got.append(st)
            assert not torch.is_inference_mode_enabled()  # the caller runs outside the sweep's inference mode
    assert [st.index for st in got] == [0, 1]
    whole = sweep(model, ds, syms[:2], get_task("classify"), batch_size=32)
    for st, table in zip(got, whole.tables):
        assert st.table.keys() == table.keys()
        for key in table:
            np.testing.assert_array_equal(st.table[key], table[key])
    np.testing.assert_array_equal(got[0].null, whole.null)


def test_orbit_table_keys_and_trimming(tmp_path):
    t = OrbitTable.start(np.arange(3), None)
    t.put(0, "prob_tv", np.zeros((3, 4)))
    t.put(2, "prob_tv", np.ones((3, 4)))
    t.put_null(0, np.ones(2))
    t.put_null(1, np.ones(2))
    assert OrbitTable.key(2, "prob_tv") == "s2.prob_tv" and t.get(2, "prob_tv").sum() == 12
    t.keep_first(n_symmetries=1, n_models=1)
    assert sorted(t.arrays) == ["m0.null", "s0.prob_tv", "sample_index"]
    (tmp_path / "orbits.npz").write_bytes(t.to_bytes())
    again = OrbitTable.load(tmp_path / "orbits.npz")
    assert sorted(again.arrays) == sorted(t.arrays) and again.null(0).tolist() == [1.0, 1.0] and again.null(1) is None


def test_resume_runs_only_the_unfinished_symmetries(data_npz, tmp_path, monkeypatch):
    model = save_state_dict("CallLogCNN", tmp_path)
    reference = tmp_path / "reference"
    _api_scan(model, data_npz, reference, "CallLogCNN")
    out = tmp_path / "out"
    _interrupted(model, data_npz, out, "CallLogCNN", after_batches=8)  # rot90 finished, flip started
    log = tmp_path / "calls.log"
    monkeypatch.setenv("EQAUDIT_TEST_CALL_LOG", str(log))
    _api_scan(model, data_npz, out, "CallLogCNN", resume=True)
    # one separate f(x) call over the floor subset (all 24 samples, in calls of at most 16 rows), then
    # flip: 3 batches of 8 samples, d4: 12 batches of 2, one orbit call each (f(x) folded in: the identity row)
    rows = [int(r) for r in log.read_text().split()]
    assert rows[:2] == [16, 8]
    assert len(rows) == 2 + 3 + 12 and sum(rows) == 24 + 24 * 2 + 24 * 8
    _assert_same_audit(reference, out)


def test_resume_of_two_models_with_local_error_and_level_at_init(data_npz, tmp_path):
    """Levels (their null comes from the first symmetry's reference outputs), Lie derivatives and levels
    at init come out identical when an audit of two models resumes mid-way."""
    from eqaudit.api import run_scan
    from eqaudit.config import resolve
    from eqaudit.errors import Interrupted

    other = toy_models.SmallCNN()
    with torch.no_grad():
        other.conv1.weight.mul_(-1)
    models = [save_state_dict("SmallCNN", tmp_path), tmp_path / "other.pt"]
    torch.save(other.state_dict(), models[1])

    def settings(out: Path):
        return resolve({"data": str(data_npz), "symmetry": ["rot90", "rotate:step=90"], "model_factory": factory("SmallCNN"),
                        "batch_size": 32, "out": str(out), "device": "cpu", "local": True, "level_at_init": True,
                        "fail_over": {"flip_rate": 0.5}}, models=models)

    run_scan(models, settings(tmp_path / "reference"))
    # 6 batches per sweep of a model, 6 more for its level at init: stop inside model 1's second symmetry,
    # inside model 1's level at init, inside model 2's second symmetry
    for after_batches, n_done in [(4, 1), (10, 2), (17, 3)]:
        calls = []

        def stop() -> None:
            calls.append(1)
            if len(calls) == after_batches:
                raise Interrupted(signal.SIGTERM)

        out = tmp_path / f"out{after_batches}"
        with pytest.raises(Interrupted):
            run_scan(models, settings(out), stop=stop)
        partial = AuditResult.load(out)
        assert not partial.complete and len(partial.symmetries) == n_done
        assert partial.checkpoint["models_finished"] == (after_batches > 12)
        result, _, _ = run_scan(models, settings(out), resume=True)
        assert result.complete and "level_at_init" in result.symmetries[-1].summary and "lie_derivative" in result.symmetries[0].summary
        _assert_same_audit(tmp_path / "reference", out)
