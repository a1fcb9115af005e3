"""Laws of the fast sweep: prefetching and batch size change no number, the floor's seeded subset agrees
with the full floor within its reported standard error, the folded reference keeps an honest floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from eqaudit.data import load_dataset
from eqaudit.errors import ConfigError, DataError
from eqaudit.models import load_model
from eqaudit.sweep import floor_subset, sweep
from eqaudit.symmetries import parse_symmetry
from eqaudit.tasks import get_task
from eqaudit.testing import CallableAdapter

import toy_models

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
SPECS = ["rot90", "rotate:step=45", "translate:max=1"]


def _sweep(model, data, specs, **kw):
    syms = [parse_symmetry(s) for s in specs]
    for s in syms:
        s.check_input(data.sample_shape)
    return syms, sweep(model, data, syms, get_task("classify"), **kw)


def _assert_same(a, b, atol: float = 0.0):
    """Equal tables (NaN, outside the floor subset, equals NaN); ``atol`` > 0 allows the model's own float
    noise between batch sizes (a CPU convolution gives other last bits on 1 row than on 256)."""
    assert len(a.tables) == len(b.tables)
    for ta, tb in zip(a.tables, b.tables):
        assert sorted(ta) == sorted(tb)
        for key in ta:
            if atol and ta[key].dtype.kind == "f":
                np.testing.assert_allclose(ta[key], tb[key], rtol=10 * atol, atol=atol, err_msg=key)
            else:
                np.testing.assert_array_equal(ta[key], tb[key], err_msg=key)
    np.testing.assert_allclose(a.null, b.null, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return CallableAdapter(toy_models.SmallCNN().eval())


@pytest.mark.parametrize("reference", ["identity", "label"])
def test_results_identical_with_prefetch_on_and_off_and_any_batch_size(cnn, data_npz, reference):
    data = load_dataset(str(data_npz), limit=12)
    _, base = _sweep(cnn, data, SPECS, batch_size=256, prefetch=True, floor_samples=5, reference=reference)
    _, off = _sweep(cnn, data, SPECS, batch_size=256, prefetch=False, floor_samples=5, reference=reference)
    _assert_same(base, off)
    for bs in (1, 7):
        _, on = _sweep(cnn, data, SPECS, batch_size=bs, prefetch=True, floor_samples=5, reference=reference)
        _, off = _sweep(cnn, data, SPECS, batch_size=bs, prefetch=False, floor_samples=5, reference=reference)
        _assert_same(on, off)  # prefetching changes no bit
        _assert_same(base, on, atol=1e-6)  # the batch size changes only the model's own float noise
    # the floor of the resampled symmetry was measured on the 5 seeded samples only
    floor = base.tables[1]["floor"]
    measured = np.isfinite(floor).all(1)
    assert measured.sum() == 5 and np.array_equal(np.nonzero(measured)[0], floor_subset(len(data), 0, 5))


def test_floor_subset_is_seeded_sorted_and_the_whole_selection_when_asked():
    a = floor_subset(100, 3, 20)
    assert len(a) == 20 and len(np.unique(a)) == 20 and np.all(np.diff(a) > 0) and a.max() < 100
    assert np.array_equal(a, floor_subset(100, 3, 20)) and not np.array_equal(a, floor_subset(100, 4, 20))
    assert np.array_equal(floor_subset(100, 3, 0), np.arange(100))
    assert np.array_equal(floor_subset(10, 3, 64), np.arange(10))


@pytest.mark.parametrize("spec", ["rotate:step=30", "scale:steps=5"])
def test_floor_on_a_subset_agrees_with_the_full_floor_within_its_standard_error(spec):
    model = load_model(SAMPLES / "digits_cnn.pt", torch.device("cpu"), factory="digits_models:PlainCNN", search_dirs=[SAMPLES])
    data = load_dataset(str(SAMPLES / "digits_test.npz"), limit=120)
    task = get_task("classify")
    sym = parse_symmetry(spec)
    sym.check_input(data.sample_shape)
    full = sweep(model, data, [sym], task, floor_samples=0)
    part = sweep(model, data, [sym], task, floor_samples=40)
    s_full, _ = task.summarize(full.tables[0], sym.identity_index)
    s_part, _ = task.summarize(part.tables[0], sym.identity_index)
    assert s_full["floor_samples"] == 120 and s_part["floor_samples"] == 40
    assert s_full["floor"] > 1e-4 and s_part["floor_se"] > 0
    assert abs(s_part["floor"] - s_full["floor"]) <= 3 * s_part["floor_se"]
    # everything but the floor is the same measurement
    for key in full.tables[0]:
        if not key.startswith("floor"):
            np.testing.assert_array_equal(full.tables[0][key], part.tables[0][key], err_msg=key)
    assert part.model_evals < full.model_evals


class BatchDependent(nn.Module):
    """Rot90-invariant logits plus a tiny term that depends on the other rows of the batch: the
    pipeline noise an honest floor must see (a separately computed f(x) differs from the orbit's)."""

    def forward(self, x):
        e = x.mean((1, 2, 3))
        logits = torch.stack([e, -e, 2 * e, 0.5 * e, -2 * e], -1)  # five classes, like the toy data's labels
        return logits + 1e-3 * x.shape[0] * torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])


def test_folded_reference_keeps_an_honest_floor_on_its_subset(data_npz):
    data = load_dataset(str(data_npz))
    syms, out = _sweep(CallableAdapter(BatchDependent()), data, ["rot90"], floor_samples=8)
    table, sym = out.tables[0], syms[0]
    rows = table["floor_rows"]
    col = table["prob_tv"][:, sym.identity_index]
    assert len(rows) == 8
    assert np.all(col[rows] > 1e-6)  # identity output vs the separate f(x): the batch-size noise
    others = np.setdiff1d(np.arange(len(data)), rows)
    assert np.all(col[others] == 0)  # there f(x) is the identity row itself
    summary, _ = get_task("classify").summarize(table, sym.identity_index)
    assert summary["floor"] == pytest.approx(col[rows].mean(), rel=1e-6) and summary["floor_samples"] == 8
    # the invariance itself reads float noise only (a mean over turned pixels sums in another order)
    assert np.all(np.delete(table["prob_tv"], sym.identity_index, 1)[others] < 1e-6)


def test_an_error_in_the_prefetching_thread_reaches_the_caller_typed(cnn, tmp_path):
    x = np.random.default_rng(0).random((40, 1, 12, 12)).astype(np.float32)
    x[33, 0, 0, 0] = np.nan  # a later batch: read by the producer thread
    np.savez(tmp_path / "bad.npz", x=x)
    data = load_dataset(str(tmp_path / "bad.npz"))
    with pytest.raises(DataError, match="Sample 33"):
        _sweep(cnn, data, ["rot90"], batch_size=16, prefetch=True, floor_samples=4)


def test_negative_floor_samples_is_a_usage_error(tmp_path):
    from eqaudit.api import scan

    with pytest.raises(ConfigError, match="floor-samples"):
        scan(SAMPLES / "digits_cnn.pt", data=str(SAMPLES / "digits_test.npz"), symmetry=["rot90"], out=str(tmp_path / "o"),
             device="cpu", floor_samples=-1)
