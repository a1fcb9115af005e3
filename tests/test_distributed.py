"""Data-parallel audits: the ranks' shares are the one-process plan, sharded sweeps give the one-process
tables bit for bit, and (slow) torchrun and --nproc runs write the one-process result or exit 3 naming a failed rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import toy_domains
import toy_models
from conftest import ROOT, TESTS, smooth_images
from eqaudit.data import load_dataset
from eqaudit.distributed import Ranks, batch_share, verdict
from eqaudit.sweep import _chunk_slices, _produce, sweep_tables
from eqaudit.symmetries import parse_symmetry
from eqaudit.tasks import get_task
from eqaudit.testing import CallableAdapter


# ---- the shares ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_batches", [0, 1, 2, 7, 24])
@pytest.mark.parametrize("world", [1, 2, 3, 5, 8])
def test_shares_are_the_whole_plan_in_order_and_balanced(n_batches, world):
    shares = [batch_share(n_batches, r, world) for r in range(world)]
    assert [b for s in shares for b in s] == list(range(n_batches))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_ranks_take_whole_model_calls_of_the_one_process_plan(data_npz):
    """Each rank's produced chunks (rows and elements of every model call) are those of the one-process
    sweep, and the ranks' sequences, joined in rank order, are that sweep's sequence."""
    data = load_dataset(str(data_npz), limit=10)
    n, device = len(data), torch.device("cpu")
    floor = np.zeros(n, dtype=bool)
    for spec in ["rot90", "rotate:step=60"]:
        sym = parse_symmetry(spec)
        elements = sym.elements
        for batch_size in [3, 16, 256]:
            per_batch = max(1, batch_size // sym.n_elements)
            e_chunk = min(sym.n_elements, max(1, batch_size // per_batch))

            def calls(share=None):
                return [(tuple(b.pos), (sl.start, sl.stop), xg.clone())
                        for b, sl, xg, _ in _produce(data, sym, elements, per_batch, e_chunk, device, None, floor, True, True, share)]

            whole = calls()
            assert len(whole) == -(-n // per_batch) * len(_chunk_slices(sym.n_elements, e_chunk))
            for world in [2, 3, 7]:
                joined = [c for r in range(world) for c in calls(batch_share(-(-n // per_batch), r, world))]
                assert [c[:2] for c in joined] == [c[:2] for c in whole], (spec, batch_size, world)
                assert all(torch.equal(a[2], b[2]) for a, b in zip(joined, whole))


# ---- sharded sweeps in one process -------------------------------------------------------------------------


class _InProcessRanks(Ranks):
    """Rank ``rank`` of ``world`` without processes: the other ranks sweep first and leave their parts
    in ``mailbox``; rank 0 sweeps last and reads them at each gather, as torch.distributed would hand them."""

    def __init__(self, rank: int, world: int, mailbox: dict):
        super().__init__(rank, world, rank)
        self.mailbox, self.calls = mailbox, 0

    def exchange(self, part):
        i, self.calls = self.calls, self.calls + 1
        if not self.lead:
            self.mailbox.setdefault(i, {})[self.rank] = part
            return None
        return [part] + [self.mailbox[i][r] for r in range(1, self.world)]


def _sharded(model, data, syms, task, world, **kw):
    mailbox: dict = {}
    totals = []
    for r in reversed(range(world)):
        seen = [(0, 0)]
        done = list(sweep_tables(model, data, syms, task, ranks=_InProcessRanks(r, world, mailbox),
                                 progress=lambda d, t, w: seen.append((d, t)), **kw))
        if r:
            assert all(d.table is None and d.null is None for d in done)  # only rank 0 gets tables
        assert seen[-1][0] == seen[-1][1]  # each rank's progress ends at its own total (0 for an empty share)
        totals.append(seen[-1][1])
    assert sum(totals) == len(data) * len(syms)  # the shares' totals add up to the whole sweep
    return done


def _assert_same_sweep(one, many):
    assert len(one) == len(many)
    for a, b in zip(one, many):
        assert list(a.table) == list(b.table)  # same keys, in the order one process makes them
        for key in a.table:
            assert a.table[key].dtype == b.table[key].dtype, key
            np.testing.assert_array_equal(a.table[key], b.table[key], err_msg=key)  # bit for bit (NaN == NaN)
        assert a.model_evals == b.model_evals and a.output_kind == b.output_kind
        if a.null is None:
            assert b.null is None
        else:
            np.testing.assert_array_equal(a.null, b.null)


@pytest.fixture(scope="module")
def cnn():
    return CallableAdapter(toy_models.SmallCNN().eval())


@pytest.mark.parametrize("reference, batch_size, worlds", [("identity", 16, [2, 3, 5]), ("identity", 256, [2]),
                                                           ("label", 16, [3]), ("consensus", 16, [2])])
def test_sharded_classifier_sweep_equals_one_process(cnn, data_npz, reference, batch_size, worlds):
    """A resampled symmetry (rotate) and an exact one (rot90), a floor subset that some ranks do not
    hold, and shares of several sizes (one batch for several ranks: some sweep nothing)."""
    data = load_dataset(str(data_npz), limit=16)
    syms = [parse_symmetry(s) for s in ["rotate:step=60", "rot90"]]
    task = get_task("classify")
    kw = dict(batch_size=batch_size, floor_samples=5, reference=reference, prefetch=False)
    one = list(sweep_tables(cnn, data, syms, task, **kw))
    assert np.isnan(one[0].table["floor"]).any() and not np.isnan(one[0].table["floor"]).all()
    for world in worlds:
        _assert_same_sweep(one, _sharded(cnn, data, syms, task, world, **kw))


def test_sharded_point_cloud_sweep_equals_one_process(tmp_path):
    g = np.random.default_rng(0)
    path = tmp_path / "clouds.npz"
    np.savez(path, x=(g.normal(size=(10, 12, 3)) * np.array([1.0, 0.6, 0.3])).astype(np.float32), y=np.arange(10) % 4)
    data = load_dataset(str(path))
    syms = [parse_symmetry(s) for s in ["so3:n=8", "permute:n=4"]]
    for s in syms:
        s.check_input(data.sample_shape)
    model, task = CallableAdapter(toy_domains.TinyPointNet().eval()), get_task("classify")
    one = list(sweep_tables(model, data, syms, task, batch_size=24, floor_samples=4))
    for world in [2, 4]:
        _assert_same_sweep(one, _sharded(model, data, syms, task, world, batch_size=24, floor_samples=4))


def test_sharded_embedding_sums_equal_one_process_to_rounding(tmp_path):
    """A task's per-symmetry accumulator (scan --output embedding's running sums) reaches rank 0 summed over
    every rank's share; the sums agree with one process to float64 rounding (they are added in another grouping)."""
    import toy_embeddings
    from eqaudit.tasks.embedding import EmbeddingTask

    path = tmp_path / "images.npz"
    np.savez(path, x=np.random.default_rng(1).normal(size=(20, 1, toy_embeddings.S, toy_embeddings.S)).astype(np.float32))
    data = load_dataset(str(path))
    model, syms = CallableAdapter(toy_embeddings.Moments().eval()), [parse_symmetry("rot90")]
    kw = dict(batch_size=16, floor_samples=4)
    one = list(sweep_tables(model, data, syms, EmbeddingTask(), **kw))
    many = _sharded(model, data, syms, EmbeddingTask(), 3, **kw)
    assert one[0].reduced is not None and many[0].reduced is not None
    assert float(one[0].reduced.count.sum()) == float(many[0].reduced.count.sum()) == 20  # every sample, once
    for key, v in one[0].reduced.state().items():
        torch.testing.assert_close(many[0].reduced.state()[key], v, rtol=1e-12, atol=1e-12)


class _PlannedRanks(_InProcessRanks):
    """As _InProcessRanks, and ``tell`` as torch.distributed's broadcast: rank 0 says its value (kept in
    ``told``), the others receive what rank 0 will say (``told`` given in advance)."""

    def __init__(self, rank: int, world: int, mailbox: dict, told: list):
        super().__init__(rank, world, mailbox)
        self.told, self.heard = told, []

    def tell(self, value):
        if self.lead:
            self.told.append(value)
            return value
        self.heard.append(self.told[len(self.heard)])
        return self.heard[-1]


def test_scan_on_two_ranks_writes_the_one_process_result_from_rank_0_alone(monkeypatch, data_npz, tmp_path):
    """The whole scan (api.scan) as rank 1 then rank 0 of two, in one process: rank 1 creates nothing
    in its --out; rank 0's result.json and orbits.npz equal a one-process scan's (timing aside)."""
    from eqaudit import distributed
    from eqaudit.api import scan
    from conftest import factory, save_state_dict

    model = save_state_dict("SmallCNN", tmp_path)
    kw = dict(data=str(data_npz), symmetry=["rotate:step=60", "rot90"], model_factory=factory("SmallCNN"), device="cpu",
              batch_size=16, floor_samples=5, format="json,orbits", limit=16)
    scan(model, out=str(tmp_path / "one"), **kw)
    mailbox: dict = {}
    plan = ["measure", (0, 0)]  # what rank 0 tells a fresh scan's other ranks: no cache hit, nothing checkpointed
    worker = _PlannedRanks(1, 2, mailbox, plan)
    monkeypatch.setattr(distributed, "ranks", lambda: worker)
    scan(model, out=str(tmp_path / "rank1"), **kw)
    assert not (tmp_path / "rank1").exists() and worker.heard == plan and len(mailbox) == 2
    lead = _PlannedRanks(0, 2, mailbox, [])
    monkeypatch.setattr(distributed, "ranks", lambda: lead)
    scan(model, out=str(tmp_path / "rank0"), **kw)
    assert lead.told == plan
    _assert_same_outputs(tmp_path / "one", tmp_path / "rank0")
    assert json.loads((tmp_path / "rank0" / "result.json").read_text())["timing"]["world_size"] == 2


# ---- the launch's exit code ------------------------------------------------------------------------------------


class _Failure:
    """What torch's ProcessFailure offers verdict(): exit code, timestamp and the error file's data."""

    def __init__(self, exitcode: int, data: dict | None = None, timestamp: int = 100):
        self.exitcode, self.timestamp = exitcode, timestamp
        self.error_file_data = {"message": "x", "eqaudit": data} if data else {"message": "x"}


def _err(rank, code, primary, when, message="boom"):
    return {"rank": rank, "code": code, "primary": primary, "time": when, "message": message}


def test_verdict_is_rank_0s_own_or_3_naming_the_rank_that_failed_first():
    assert verdict({0: _Failure(1)}) == (1, None)  # a gate failed: rank 0's verdict
    assert verdict({0: _Failure(2, _err(0, 2, True, 5.0)), 1: _Failure(-15)}) == (2, None)  # usage error; rank 1 stopped
    caused = {0: _Failure(3, _err(0, 3, False, 4.0)), 1: _Failure(3, _err(1, 3, True, 5.0, "model failed"))}
    assert verdict(caused) == (3, "rank 1 failed: model failed")  # rank 0 only lost rank 1
    assert verdict({0: _Failure(143, _err(0, 143, False, 9.0)), 2: _Failure(-9)}) == (3, "rank 2 failed: killed by SIGKILL")
    both = {0: _Failure(-15, _err(0, 2, True, 2.5, "bad spec")), 1: _Failure(2, _err(1, 2, True, 2.0, "bad spec"))}
    assert verdict(both) == (2, None)  # every rank failed alike (rank 1 first; rank 0 stopped as it exited): rank 0 said it
    stuck = {0: _Failure(-9, timestamp=130), 1: _Failure(3, _err(1, 3, True, 100.0, "model failed"))}
    assert verdict(stuck) == (3, "rank 1 failed: model failed")  # rank 0, stopped late by the launcher, did not cause it
    alone = {0: _Failure(3, _err(0, 3, False, 3.0, "Rank 0 lost the other ranks")), 1: _Failure(-15)}
    assert verdict(alone) == (3, "rank 0 failed: Rank 0 lost the other ranks")  # no rank's own error: still one line
    usage = {0: _Failure(-15), 1: _Failure(2, _err(1, 2, True, 3.0, "no GPU for it"))}
    assert verdict(usage) == (2, "rank 1 failed: no GPU for it")


def test_a_rank_runs_on_the_gpu_of_its_local_rank(monkeypatch):
    """Simulated CUDA devices: auto/cuda picks cuda:LOCAL_RANK (made the process's current device), an
    explicit index or the CPU stays, and a local rank without a GPU is a device error naming LOCAL_RANK."""
    from eqaudit.distributed import rank_device
    from eqaudit.errors import DeviceError

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert rank_device("cuda", Ranks(3, 4, 1)) == torch.device("cuda", 1) and chosen == [torch.device("cuda", 1)]
    assert rank_device("auto", Ranks(3, 4, 1)) == torch.device("cuda", 1)
    assert rank_device("cuda:0", Ranks(3, 4, 1)) == torch.device("cuda", 0)
    assert rank_device("cpu", Ranks(3, 4, 1)) == torch.device("cpu")
    assert rank_device("cuda", None) == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"LOCAL_RANK 2.*cuda:0\.\.cuda:1"):
        rank_device("cuda", Ranks(2, 4, 2))


# ---- several processes (slow) ------------------------------------------------------------------------------------


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", **extra}


def _scan(args: list[str], launch: list[str] | None = None, **env) -> subprocess.CompletedProcess:
    head = [sys.executable, "-m", *(launch or []), "eqaudit", "scan"]
    return subprocess.run([*head, *args], capture_output=True, text=True, env=_env(**env), cwd=ROOT, timeout=600)


TORCHRUN = ["torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]


def _measured(folder: Path) -> dict:
    """result.json without what records the run rather than the measurement (timing, created, settings, device)."""
    d = json.loads((folder / "result.json").read_text())
    for key in ("timing", "created", "settings", "device"):
        d.pop(key)
    return d


def _assert_same_outputs(a: Path, b: Path) -> None:
    assert _measured(a) == _measured(b)
    with np.load(a / "orbits.npz", allow_pickle=False) as za, np.load(b / "orbits.npz", allow_pickle=False) as zb:
        assert za.files == zb.files
        for key in za.files:
            np.testing.assert_array_equal(za[key], zb[key], err_msg=key)


@pytest.fixture(scope="module")
def launch_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("launch")
    torch.save(toy_models.SmallCNN().state_dict(), d / "cnn.pt")
    torch.save(toy_domains.TinyPointNet().state_dict(), d / "pointnet.pt")
    np.savez(d / "images.npz", x=smooth_images(24), y=np.random.default_rng(1).integers(0, 5, 24))
    g = np.random.default_rng(0)
    np.savez(d / "clouds.npz", x=(g.normal(size=(10, 12, 3)) * np.array([1.0, 0.6, 0.3])).astype(np.float32), y=np.arange(10) % 4)
    return d


@pytest.mark.slow
def test_torchrun_and_nproc_write_the_one_process_result(launch_files, tmp_path):
    d = launch_files
    cnn = [str(d / "cnn.pt"), "--data", str(d / "images.npz"), "--model-factory", f"{TESTS / 'toy_models.py'}:SmallCNN",
           "-s", "rotate:step=45", "-s", "rot90", "--batch-size", "16", "--floor-samples", "5", "--format", "json,orbits",
           "--fail-over", "flip_rate=0.01"]
    points = [str(d / "pointnet.pt"), "--data", str(d / "clouds.npz"), "--model-factory", f"{TESTS / 'toy_domains.py'}:TinyPointNet",
              "-s", "so3:n=8", "-s", "permute:n=4", "--batch-size", "24", "--floor-samples", "4", "--format", "json,orbits"]
    for name, args, code in [("cnn", cnn, 1), ("points", points, 0)]:
        one = _scan([*args, "--out", str(tmp_path / f"{name}1")])
        two = _scan([*args, "--out", str(tmp_path / f"{name}2")], launch=TORCHRUN)
        assert one.returncode == code, one.stderr
        assert two.returncode == (1 if code else 0), two.stderr  # torchrun reports any failed rank as 1
        _assert_same_outputs(tmp_path / f"{name}1", tmp_path / f"{name}2")
        assert sorted(os.listdir(tmp_path / f"{name}2")) == sorted(os.listdir(tmp_path / f"{name}1"))
        assert json.loads((tmp_path / f"{name}2" / "result.json").read_text())["timing"]["world_size"] == 2
    nproc = _scan([*cnn, "--out", str(tmp_path / "cnn3"), "--nproc", "2"])
    assert nproc.returncode == 1, nproc.stderr  # rank 0's verdict: the gate failed
    assert "gate failed:" in nproc.stderr and "error" not in nproc.stderr
    _assert_same_outputs(tmp_path / "cnn2", tmp_path / "cnn3")


@pytest.mark.slow
@pytest.mark.parametrize("how, said", [("raise", "this rank fails on purpose"), ("kill", "killed by SIGKILL")])
def test_a_failed_rank_stops_the_audit_with_exit_3_naming_it(launch_files, tmp_path, how, said):
    d = launch_files
    torch.save(toy_models.SmallCNN().state_dict(), tmp_path / "fails.pt")
    out = tmp_path / "out"
    run = _scan([str(tmp_path / "fails.pt"), "--data", str(d / "images.npz"), "--model-factory", f"{TESTS / 'toy_ranks.py'}:FailsOnRank",
                 "-s", "rot90", "-s", "rotate:step=45", "--batch-size", "16", "--out", str(out), "--nproc", "2"],
                EQAUDIT_TEST_FAIL_RANK="1", EQAUDIT_TEST_FAIL_HOW=how)
    assert run.returncode == 3, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == [line for line in lines if line.startswith("error: rank 1 failed:")] and len(lines) == 1, run.stderr
    assert said in lines[0] and "Traceback" not in run.stderr
    assert (out / ".eqaudit-in-progress").is_file()  # the folder says its run did not finish
    left = sorted(p.name for p in out.iterdir())
    assert set(left) <= {".eqaudit-in-progress", "result.json", "orbits.npz", "elements.csv"}, left  # no temporary files
    if "result.json" in left:  # a checkpoint of what finished before the failure, whole
        assert json.loads((out / "result.json").read_text())["complete"] is False
