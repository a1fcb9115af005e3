"""Devices, dtypes and batch sizes: --device/--dtype/--batch-size errors, the auto batch-size search and its
out-of-memory back-off (a fake adapter), half precision's floor, ONNX provider choice, memory-mapped data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import toy_models
from conftest import factory, smooth_images
from eqaudit.cli import app
from eqaudit.errors import ConfigError, DeviceError, ModelRunError
from eqaudit.models import select_device
from eqaudit.models.batching import CPU_CALL_BYTES, auto_batch_size, cpu_batch_size, search_batch_size

runner = CliRunner()


def run(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes is not None else "")


def oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


# --- errors and exit codes -------------------------------------------------------------------------


def test_bad_device_dtype_and_batch_size_exit_codes(model_files, data_npz, tmp_path):
    plain = [model_files["SmallCNN"], "--data", data_npz, "-s", "rot90", "--model-factory", factory("SmallCNN"),
             "--out", tmp_path / "o", "--quiet"]
    cases = [
        (["--device", "gpu"], 2, "Expected --device auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
        (["--device", "cuda:x"], 2, "got 'cuda:x'"),
        (["--dtype", "float8"], 2, "expected one of float32, float16, bfloat16, got 'float8'"),
        (["--batch-size", "0"], 2, "a whole number >= 1 or auto, got '0'"),
        (["--batch-size", "big"], 2, "a whole number >= 1 or auto"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], 3, "Expected a CUDA device for --device cuda, got none on this machine"))
        cases.append((["--device", "cuda:1"], 3, "do use --device cpu or auto"))
    if not torch.backends.mps.is_available():
        cases.append((["--device", "mps"], 3, "Expected an Apple GPU for --device mps"))
    for extra, code, text in cases:
        got, output = run("scan", *plain, *extra)
        assert got == code, (extra, output)
        assert text in " ".join(output.split()), (extra, output)
        assert "Traceback" not in output


def test_onnx_refuses_a_dtype_its_graph_does_not_take(model_files, data_npz, tmp_path):
    code, output = run("scan", model_files["SmallCNN.onnx"], "--data", data_npz, "-s", "rot90", "--dtype", "bfloat16",
                       "--out", tmp_path / "o", "--quiet")
    assert code == 2, output
    assert "Expected an ONNX graph that takes bfloat16 inputs for --dtype bfloat16" in " ".join(output.split())


def test_select_device_with_local_rank_on_simulated_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert select_device("auto") == torch.device("cuda", 0)
    assert select_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda:0", local_rank=1) == torch.device("cuda", 0)  # an explicit index wins
    assert select_device("cpu", local_rank=1) == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"0\.\.1 for --device cuda:2"):
        select_device("cuda:2")
    with pytest.raises(DeviceError, match="LOCAL_RANK 3"):
        select_device("auto", local_rank=3)
    with pytest.raises(ConfigError):
        select_device("tpu")


def test_onnx_providers_follow_the_device(monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    from eqaudit.models.onnx_backend import ort_device, providers_for

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers_for(torch.device("cuda", 1)) == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert providers_for(torch.device("cpu")) == ["CPUExecutionProvider"]
    assert ort_device(torch.device("cuda", 1)) == ("cuda", 1) and ort_device(torch.device("cpu")) == ("cpu", 0)
    with pytest.raises(DeviceError, match="no MPS provider"):
        providers_for(torch.device("mps"))
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DeviceError, match="onnxruntime-gpu"):
        providers_for(torch.device("cuda", 0))


# --- the batch-size search -------------------------------------------------------------------------


class Tight:
    """A fake device call that runs out of memory above ``limit`` rows; it records the rows asked for."""

    def __init__(self, limit: int):
        self.limit, self.sizes = limit, []

    def __call__(self, batch):
        rows = int(batch.shape[0])
        self.sizes.append(rows)
        if rows > self.limit:
            raise oom()
        return batch.reshape(rows, -1)[:, :3]


def test_search_doubles_until_out_of_memory_then_keeps_the_last_size_that_ran():
    call = Tight(1000)
    released = []
    got = search_batch_size(call, lambda r: torch.zeros(r, 2), start=64, cap=8192, release=lambda: released.append(1))
    assert got.size == 512 and got.rule == "search"
    assert got.tried == [(64, True), (128, True), (256, True), (512, True), (1024, False)]
    assert call.sizes == [64, 128, 256, 512, 1024] and released == [1]
    assert search_batch_size(Tight(10**6), lambda r: torch.zeros(r, 2), start=64, cap=300).size == 256  # the cap
    assert search_batch_size(Tight(20), lambda r: torch.zeros(r, 2), start=64).size == 16  # start too big: halve
    with pytest.raises(ModelRunError, match="one row per call"):
        search_batch_size(Tight(0), lambda r: torch.zeros(r, 2), start=4)

    def broken(batch):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError):  # only out-of-memory errors are searched past
        search_batch_size(broken, lambda r: torch.zeros(r, 2))


def test_cpu_rule():
    assert cpu_batch_size(4 * 32 * 32).size == 256
    assert cpu_batch_size(4 * 3 * 224 * 224).size == 32  # 32 x 602 kB <= 32 MiB < 64 x 602 kB
    assert cpu_batch_size(CPU_CALL_BYTES * 4).size == 1


def test_auto_search_on_a_fake_device_gives_the_numbers_of_a_big_enough_batch(data_npz):
    """The search probes real rows of the data and picks the largest size that ran; the sweep at that size
    with a model that runs out of memory above it gives the numbers of a plain sweep at 256 rows."""
    from eqaudit.data import load_dataset
    from eqaudit.models.base import AdapterInfo
    from eqaudit.models.torch_backend import TorchAdapter
    from eqaudit.sweep import sweep
    from eqaudit.symmetries import parse_symmetry
    from eqaudit.tasks import get_task

    class TightAdapter(TorchAdapter):
        limit = 50

        def __call__(self, batch):
            if batch.shape[0] > self.limit:
                raise oom()
            assert batch.shape[1:] == (1, 12, 12)  # real rows of the data
            return super().__call__(batch)

    info = AdapterInfo("mem", "torch", "module", "", "cpu")
    ds = load_dataset(str(data_npz))
    module = toy_models.SmallCNN().eval()
    tight = TightAdapter(module, info, torch.device("cpu"))
    choice = auto_batch_size(tight, ds, torch.device("cpu"), search=True, start=4, cap=1024)
    assert choice.size == 32 and choice.tried[-1] == (64, False)
    syms = [parse_symmetry("flip"), parse_symmetry("rotate:step=120")]
    plain = sweep(TorchAdapter(module, info, torch.device("cpu")), ds, syms, get_task("classify"), batch_size=256)
    fitted = sweep(tight, ds, syms, get_task("classify"), batch_size=choice.size)
    backed_off = sweep(tight, ds, syms, get_task("classify"), batch_size=256)  # the per-call back-off
    for out in (fitted, backed_off):
        assert out.model_evals == plain.model_evals
        for a, b in zip(plain.tables, out.tables):
            for key in a:
                np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)


def test_batch_size_auto_is_recorded_and_changes_no_number(model_files, data_npz, tmp_path):
    from eqaudit.api import scan

    common = dict(data=str(data_npz), symmetry=["rot90", "rotate:step=45"], model_factory=factory("SmallCNN"), device="cpu",
                  format=["json"])
    auto = scan(model_files["SmallCNN"], out=str(tmp_path / "auto"), batch_size="auto", **common)
    fixed = scan(model_files["SmallCNN"], out=str(tmp_path / "fixed"), batch_size=256, **common)
    saved = json.loads((tmp_path / "auto" / "result.json").read_text())
    assert saved["batch_size"] == 256 and saved["batch_search"] == {"size": 256, "rule": "cpu", "tried": []}
    assert saved["settings"]["values"]["batch_size"] == "auto"
    assert json.loads((tmp_path / "fixed" / "result.json").read_text())["batch_search"] is None
    for a, b in zip(auto.symmetries, fixed.symmetries):
        assert a.summary["level"] == b.summary["level"] and a.summary["floor"] == b.summary["floor"]


# --- half precision --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def precision_scans(model_files, data_npz, tmp_path_factory):
    """SmallCNN (broken) and Rot90Averaged (invariant by construction) in float32 and bfloat16."""
    from eqaudit.api import scan

    out = {}
    for name in ("SmallCNN", "Rot90Averaged"):
        for dtype in ("float32", "bfloat16"):
            folder = tmp_path_factory.mktemp(f"{name}_{dtype}")
            out[name, dtype] = scan(model_files[name], data=str(data_npz), symmetry=["rot90", "rotate:step=45"],
                                    model_factory=factory(name), device="cpu", dtype=dtype, out=str(folder), format=["json"])
    return out


def test_bfloat16_floor_is_above_the_float32_floor(precision_scans):
    for name in ("SmallCNN", "Rot90Averaged"):
        f32, bf16 = precision_scans[name, "float32"], precision_scans[name, "bfloat16"]
        assert f32.dtype == "float32" and bf16.dtype == "bfloat16"
        assert any("torch.autocast('cpu', bfloat16)" in n for n in bf16.models[0].notes)
        for a, b in zip(f32.symmetries, bf16.symmetries):  # exact (rot90) and resampled (rotate) alike
            assert b.summary["floor"] > a.summary["floor"] + 1e-4, (name, a.spec, a.summary["floor"], b.summary["floor"])


def test_bfloat16_keeps_the_verdicts(precision_scans):
    """Invariant by construction stays at the floor; the broken model stays flagged."""
    inv, broken = precision_scans["Rot90Averaged", "bfloat16"], precision_scans["SmallCNN", "bfloat16"]
    rot = inv.symmetries[0].summary
    assert rot["prob_tv"] <= 3 * rot["floor"] + 1e-6, rot
    assert broken.symmetries[0].summary["level"] < 0.9 and broken.symmetries[0].summary["prob_tv"] > 10 * broken.symmetries[0].summary["floor"]


def test_label_reference_floor_includes_the_dtype(model_files, data_npz, tmp_path):
    """An exact action with another reference measures its floor on the subset against float32 f(x)."""
    from eqaudit.api import scan

    floors = {}
    for dtype in ("float32", "bfloat16"):
        res = scan(model_files["SmallCNN"], data=str(data_npz), symmetry=["flip"], model_factory=factory("SmallCNN"), device="cpu",
                   dtype=dtype, reference="label", out=str(tmp_path / dtype), format=["json"])
        floors[dtype] = res.symmetries[0].summary["floor"]
    assert floors["bfloat16"] > 10 * floors["float32"] + 1e-4, floors


# --- memory ----------------------------------------------------------------------------------------


def test_npy_data_is_memory_mapped_and_read_by_rows(tmp_path):
    from eqaudit.data import load_dataset

    x = smooth_images(40)
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(str(tmp_path / "x.npy"), limit=10, seed=3)
    assert isinstance(ds.x, np.memmap) and ds.x.mode == "r"
    got = ds.take(np.arange(10))
    np.testing.assert_array_equal(got.numpy(), x[ds.indices])
    np.testing.assert_array_equal(ds.take(np.arange(3)).numpy(), x[ds.indices[:3]])  # released rows read again


def test_orbit_file_is_float32_and_streamed_whole(model_files, data_npz, tmp_path):
    from eqaudit.api import scan
    from eqaudit.result import OrbitTable

    res = scan(model_files["SmallCNN"], data=str(data_npz), symmetry=["rotate:step=45"], model_factory=factory("SmallCNN"),
               device="cpu", out=str(tmp_path / "o"), format=["json", "orbits"])
    arrays = OrbitTable.load(tmp_path / "o" / res.orbits_file).arrays
    floats = {k: v.dtype for k, v in arrays.items() if v.dtype.kind == "f"}
    assert floats and all(d == np.float32 for k, d in floats.items() if not k.endswith(".null")), floats
    assert arrays["m0.null"].dtype == np.float64  # kept exact: a resumed audit estimates levels from it
    assert arrays["s0.prob_tv"].shape == (len(arrays["sample_index"]), len(res.symmetries[0].elements))
    assert not list((tmp_path / "o").glob(".*.tmp"))
