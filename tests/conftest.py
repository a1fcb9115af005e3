"""Shared fixtures: a small labelled image dataset, toy models saved as state dicts, ONNX and .pt2 files."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS = Path(__file__).parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

import toy_models  # noqa: E402

TOY_FILE = TESTS / "toy_models.py"
N, C, H, K = 24, 1, 12, 5


def factory(name: str) -> str:
    """The --model-factory string for a class in tests/toy_models.py."""
    return f"{TOY_FILE}:{name}"


DOMAINS_FILE = TESTS / "toy_domains.py"


def dfactory(name: str) -> str:
    """The --model-factory string for a class in tests/toy_domains.py."""
    return f"{DOMAINS_FILE}:{name}"


def scan_specs(files, tmp_path, model, data, symmetries, task, **kw) -> dict:
    """Scan toy-domain model ``files[model]`` on ``files[data]``; the symmetry results by spec."""
    from eqaudit.api import scan

    res = scan(files[model], data=str(files[data]), symmetry=symmetries, task=task, model_factory=dfactory(model),
               out=str(tmp_path / "out"), device="cpu", **kw)
    return {s.spec: s for s in res.symmetries}


def smooth_images(n: int, seed: int = 0, size: int = H, channels: int = C) -> np.ndarray:
    """(n, C, size, size) float32 smooth random images (low-frequency sums), values around [0, 1]."""
    g = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    out = np.zeros((n, channels, size, size))
    for _ in range(4):
        a, fx, fy, ph = g.normal(size=(n, channels, 1, 1)), g.uniform(0.5, 3, (n, channels, 1, 1)), g.uniform(0.5, 3, (n, channels, 1, 1)), g.uniform(0, 6.3, (n, channels, 1, 1))
        out += a * np.sin(fx * xx + fy * yy + ph)
    return (0.5 + 0.25 * out).astype(np.float32)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run tests marked slow (multi-process, long); CI does")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only with --slow, so that a bare ``pytest`` stays quick while CI runs everything."""
    if config.getoption("--slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(autouse=True)
def _no_github_environment(monkeypatch):
    """Tests must not append to a real step summary or print annotations when the suite runs in Actions."""
    for name in ("GITHUB_STEP_SUMMARY", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _no_result_cache(monkeypatch, request):
    """Tests scan again into the same folder with another batch size, chunking or prefetch to show the
    numbers do not change: the result cache (keyed without those) would make them compare a result with
    itself. It is off everywhere but in tests/test_cache.py, which tests it."""
    if request.module.__name__ != "test_cache":
        monkeypatch.setenv("EQAUDIT_CACHE", "0")


@pytest.fixture(scope="session")
def data_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    x = smooth_images(N)
    y = np.random.default_rng(1).integers(0, K, N).astype(np.int64)
    np.savez(path, x=x, y=y, classes=np.array([f"class{i}" for i in range(K)]))
    return path


def save_state_dict(cls_name: str, folder: Path) -> Path:
    model = getattr(toy_models, cls_name)()
    path = folder / f"{cls_name}.pt"
    torch.save(model.state_dict(), path)
    return path


def export_onnx(module: torch.nn.Module, path: Path, sample: torch.Tensor, output_names=("logits",)) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (sample,),
            str(path),
            input_names=["input"],
            output_names=list(output_names),
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """State dicts of every toy model, plus ONNX forms of the plain and rot90-averaged ones."""
    folder = tmp_path_factory.mktemp("models")
    files = {name: save_state_dict(name, folder) for name in
             ["SmallCNN", "CircularPoolCNN", "Rot90Averaged", "FlipAveraged", "D4Averaged", "SoftmaxOf", "FlatRot90Averaged", "TwoOutputs"]}
    sample = torch.from_numpy(smooth_images(3))
    for name in ["SmallCNN", "Rot90Averaged", "D4Averaged"]:
        files[name + ".onnx"] = export_onnx(getattr(toy_models, name)(), folder / f"{name}.onnx", sample)
    files["TwoOutputs.onnx"] = export_onnx(toy_models.TwoOutputs(), folder / "TwoOutputs.onnx", sample, ("logits", "probabilities"))
    return files
