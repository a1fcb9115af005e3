"""eqaudit.testing: assert_invariant / assert_equivariant on modules and callables, with useful failure messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import toy_models
from conftest import smooth_images
from eqaudit.testing import CallableAdapter, assert_equivariant, assert_invariant, check_symmetry, in_memory_dataset

X = torch.from_numpy(smooth_images(6))


@pytest.mark.parametrize("symmetry", ["rot90", "flip", "d4"])
def test_invariant_by_construction_passes(symmetry):
    check = assert_invariant(toy_models.D4Averaged(), X, symmetry, tol=1e-6)
    assert check.passed and check.worst_value <= 1e-6 and check.metric == "prob_tv"


def test_plain_model_fails_with_worst_element_and_value():
    with pytest.raises(AssertionError) as exc:
        assert_invariant(toy_models.SmallCNN(), X, "rot90", tol=1e-5)
    msg = str(exc.value)
    check = check_symmetry(toy_models.SmallCNN(), X, "rot90")
    assert check.worst_element in ("90°", "180°", "270°") and check.worst_value > 0.01
    assert f"got prob_tv = {check.worst_value:.6g} at element {check.worst_element} (sample {check.worst_sample})" in msg
    assert "invariant under rot90 within tol=1e-05" in msg and "0°: 0" in msg  # per-element maxima, identity reads 0
    # the rot90-averaged model is invariant under rot90 but not under flips
    assert_invariant(toy_models.Rot90Averaged(), X, "rot90")
    with pytest.raises(AssertionError, match="under flip"):
        assert_invariant(toy_models.Rot90Averaged(), X, "flip")


def test_plain_callable_numpy_and_float64():
    net = toy_models.Rot90Averaged()

    def as_numpy(x):  # any callable; numpy outputs are accepted
        return net(x).detach().numpy()

    assert_invariant(as_numpy, X, "rot90")
    assert_invariant(net.double(), X.double(), "rot90", tol=1e-12)  # float64 modules are compared in float64
    adapter = CallableAdapter(net)
    assert adapter.dtype == torch.float64 and adapter.info.format == "module"
    with pytest.raises(AssertionError):
        assert_invariant(lambda x: x.flatten(1)[:, :5] * 10, X, "flip", tol=1e-3)


def test_data_from_a_path_and_with_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=smooth_images(4), y=np.array([0, 1, 2, 3]))
    assert_invariant(toy_models.FlipAveraged(), path, "flip")
    assert_invariant(toy_models.FlipAveraged(), (X, torch.arange(6) % 5), "flip")
    ds = in_memory_dataset(X)
    assert len(ds) == 6 and ds.sample_shape == (1, 12, 12) and not ds.has_labels


def test_eval_mode_is_used_and_restored():
    net = torch.nn.Sequential(torch.nn.Dropout(0.5), toy_models.Rot90Averaged())
    net.train()
    assert_invariant(net, X, "rot90")  # dropout would break invariance in training mode
    assert net.training and net[0].training


@pytest.mark.skipif("dense" not in __import__("eqaudit.tasks", fromlist=["TASKS"]).TASKS, reason="dense task not registered")
def test_assert_equivariant_dense():
    x = torch.rand(4, 1, 12, 12)
    torch.manual_seed(0)
    pointwise = torch.nn.Conv2d(1, 3, 1)  # acts per pixel: equivariant to every image symmetry
    assert_equivariant(pointwise, x, "d4", task="dense")
    with pytest.raises(AssertionError, match=r"equivariant \(dense\) under rot90 .* got equivariance_error = .* at element"):
        assert_equivariant(torch.nn.Conv2d(1, 3, 3, padding=1), x, "rot90", task="dense")


def test_assert_equivariant_needs_a_known_task():
    with pytest.raises(Exception, match="did you mean|Unknown --task"):
        assert_equivariant(toy_models.SmallCNN(), X, "rot90", task="dence")


def test_python_scan_api_returns_the_result(model_files, data_npz, tmp_path):
    import eqaudit
    from conftest import factory

    result = eqaudit.scan(model_files["Rot90Averaged"], data=str(data_npz), symmetry=["rot90", "flip"],
                          model_factory=factory("Rot90Averaged"), gates=["rot90:flip_rate<=0", "flip:prob_tv<=1e-3"],
                          out=str(tmp_path / "o"), env={})
    assert isinstance(result, eqaudit.AuditResult) and (tmp_path / "o" / "result.json").exists()
    assert [(s.spec, [g.passed for g in s.gates]) for s in result.symmetries] == [("rot90", [True]), ("flip", [False])]
    assert not result.passed
