"""Model and data loading: formats, wrapped checkpoints, safety defaults, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import toy_models
from conftest import TESTS, factory, smooth_images
from eqaudit.data import load_dataset
from eqaudit.errors import ConfigError, DataError, ModelLoadError, PathNotFoundError
from eqaudit.models import load_model

CPU = torch.device("cpu")
X = torch.from_numpy(smooth_images(6))


def reference(name="SmallCNN"):
    with torch.no_grad():
        return getattr(toy_models, name)().eval()(X)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix", "compiled_prefix"])
def test_wrapped_state_dicts_load(tmp_path, wrap):
    state = toy_models.SmallCNN().state_dict()
    if wrap == "module_prefix":
        obj = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "compiled_prefix":
        obj = {f"_orig_mod.{k}": v for k, v in state.items()}
    elif wrap == "plain":
        obj = state
    else:
        obj = {wrap: state, "epoch": 3}
    path = tmp_path / "ck.pth"
    torch.save(obj, path)
    model = load_model(path, CPU, factory=factory("SmallCNN"))
    torch.testing.assert_close(model(X), reference())
    assert model.info.format == "state_dict" and len(model.info.sha256) == 64


def test_factory_as_module_name(tmp_path, model_files):
    model = load_model(model_files["SmallCNN"], CPU, factory="toy_models:SmallCNN", search_dirs=[TESTS])
    torch.testing.assert_close(model(X), reference())


def test_missing_and_unexpected_keys_are_reported(tmp_path):
    state = toy_models.SmallCNN().state_dict()
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError) as exc:
        load_model(path, CPU, factory=factory("SmallCNN"))
    assert "head.bias" in str(exc.value) and "extra.weight" in str(exc.value)


def test_export_program_loads_including_fixed_batch(tmp_path):
    module = toy_models.Rot90Averaged().eval()
    dyn = torch.export.export(module, (X[:2],), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(dyn, tmp_path / "dyn.pt2")
    fixed = torch.export.export(module, (X[:4],))
    torch.export.save(fixed, tmp_path / "fixed.pt2")
    for name in ("dyn.pt2", "fixed.pt2"):
        model = load_model(tmp_path / name, CPU)
        assert model.info.format == "export"
        torch.testing.assert_close(model(X), reference("Rot90Averaged"), atol=1e-5, rtol=1e-5)  # 6 rows: 4 + padded 2
    assert load_model(tmp_path / "fixed.pt2", CPU).fixed_batch == 4


def test_onnx_matches_torch_and_lists_outputs(model_files):
    model = load_model(model_files["TwoOutputs.onnx"], CPU)
    assert model.info.output_names == ["logits", "probabilities"]
    torch.testing.assert_close(model(X), reference("Rot90Averaged"), atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="probabilites"):
        load_model(model_files["TwoOutputs.onnx"], CPU, output_name="probabilites")


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "m.h5").write_bytes(b"\x89HDF")
    with pytest.raises(ModelLoadError, match=".h5"):
        load_model(tmp_path / "m.h5", CPU)
    with pytest.raises(PathNotFoundError):
        load_model(tmp_path / "none.pt", CPU)


def test_truncated_torch_file(tmp_path, model_files):
    path = tmp_path / "cut.pt"
    path.write_bytes(model_files["SmallCNN"].read_bytes()[:300])
    with pytest.raises(ModelLoadError):
        load_model(path, CPU, factory=factory("SmallCNN"))


# --- data ---------------------------------------------------------------------------------------


def test_npy_is_memory_mapped_and_pt_dicts_load(tmp_path):
    x = smooth_images(9)
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(str(tmp_path / "x.npy"))
    assert isinstance(ds.x, np.memmap) and not ds.has_labels and len(ds) == 9
    torch.save({"images": torch.from_numpy(x), "y": torch.arange(9) % 3, "classes": ["a", "b", "c"]}, tmp_path / "d.pt")
    ds = load_dataset(f"{tmp_path / 'd.pt'}:images")
    assert ds.classes == ["a", "b", "c"] and ds.labels(np.arange(3)).tolist() == [0, 1, 2]
    torch.testing.assert_close(ds.take(np.arange(9)), torch.from_numpy(x))


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((6, 6), 40 * i, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = load_dataset(str(tmp_path))
    assert ds.classes == ["cat", "dog"] and ds.sample_shape == (1, 6, 6) and len(ds) == 4
    assert float(ds.take(np.array([1])).max()) == pytest.approx(40 / 255)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((3, 1, 4, 4))}, "no array 'x'"),
        ({"x": np.zeros((3, 1, 4, 4)), "y": np.array([0.5, 1, 2])}, "integer class indices"),
        ({"x": np.zeros((3, 1, 4, 4)), "y": np.array([0, 1])}, "expected (3,)"),
        ({"x": np.zeros((3, 1, 4, 4)), "y": np.array([0, -1, 2])}, ">= 0"),
        ({"x": np.array(["a", "b"])}, "numeric"),
    ],
)
def test_bad_npz_files(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError) as exc:
        load_dataset(str(tmp_path / "d.npz"))
    assert message in str(exc.value)


def test_pickled_npz_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="pickled"):
        load_dataset(str(tmp_path / "d.npz"))


def test_nan_inputs_are_named(tmp_path):
    x = smooth_images(4)
    x[2, 0, 1, 1] = np.nan
    np.savez(tmp_path / "d.npz", x=x)
    ds = load_dataset(str(tmp_path / "d.npz"))
    with pytest.raises(DataError, match="Sample 2"):
        list(ds.batches(10))


def test_nan_inputs_are_found_beside_checked_rows_and_on_every_read(tmp_path):
    """Each row is checked once, by the first read that finds it finite: a bad row among rows already
    checked is still named, and again on the next read (the next symmetry's batches)."""
    x = smooth_images(6)
    x[4, 0, 2, 2] = np.inf
    np.savez(tmp_path / "d.npz", x=x)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.take(np.arange(3)).shape[0] == 3
    for _ in range(2):
        with pytest.raises(DataError, match="Sample 4"):
            ds.take(np.arange(1, 6))
    np.testing.assert_array_equal(ds.take(np.array([0, 3, 5])).numpy(), x[[0, 3, 5]])


def test_input_shape_must_match(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 64), dtype=np.float32))
    assert load_dataset(str(tmp_path / "d.npz"), input_shape=(1, 8, 8)).sample_shape == (1, 8, 8)
    with pytest.raises(ConfigError, match="64 values"):
        load_dataset(str(tmp_path / "d.npz"), input_shape=(1, 8, 9))


def test_declared_input_shape_is_checked_before_the_sweep(model_files, tmp_path):
    from eqaudit.api import scan
    from eqaudit.errors import ModelRunError

    np.savez(tmp_path / "big.npz", x=smooth_images(4, size=14))
    with pytest.raises(ModelRunError) as exc:
        scan(model_files["SmallCNN.onnx"], data=str(tmp_path / "big.npz"), symmetry=["rot90"], out=str(tmp_path / "o"))
    assert "(1, 12, 12)" in str(exc.value) and "(1, 14, 14)" in str(exc.value)
    assert load_model(model_files["SmallCNN.onnx"], CPU).info.declared_shape == [1, 12, 12]
