"""Assertions for users' own unit tests: ``assert_invariant`` and ``assert_equivariant`` on a module or callable.

They run the same orbit sweep as ``eqaudit scan`` on an in-memory dataset, so a test and the CLI
measure the same thing::

    from eqaudit.testing import assert_invariant
    def test_rot90_invariant():
        assert_invariant(model, torch.randn(8, 1, 28, 28), "rot90", tol=1e-5)

The check is on the worst case: the largest per-sample value of the task's main metric (``prob_tv``
for classifiers, ``equivariance_error`` for equivariant tasks) over every element of the orbit and
every sample must not exceed ``tol``. On failure the message names the worst element (its label),
the worst sample and value, and the per-element maxima. Resampled symmetries (``rotate``,
``scale``) change inputs even at zero motion; use exact symmetries (rot90, flip, d4, integer
translations, ...) for exactness tests, or a tolerance above the measured floor, which the message
reports.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .data import Dataset, load_dataset
from .models.base import AdapterInfo
from .symmetries import Symmetry, parse_symmetry
from .tasks import get_task

__all__ = ["assert_invariant", "assert_equivariant", "check_symmetry", "OrbitCheck", "CallableAdapter", "in_memory_dataset"]


class CallableAdapter:
    """A ModelAdapter around an ``nn.Module`` or any callable taking a batch (B, ...) -> outputs.

    Inputs are cast to the module's floating dtype (float64 models are compared in float64), calls run
    without gradients, a tuple/list output is reduced to its first element, numpy outputs become tensors.
    """

    def __init__(self, fn: Callable[[Tensor], Any], device: torch.device | str | None = None):
        self.fn = fn
        params = list(fn.parameters()) if isinstance(fn, nn.Module) else []
        self.device = torch.device(device) if device is not None else (params[0].device if params else torch.device("cpu"))
        floats = [p.dtype for p in params if p.is_floating_point()]
        self.dtype = floats[0] if floats else torch.float32
        self.supports_autograd = isinstance(fn, nn.Module)
        name = type(fn).__name__ if isinstance(fn, nn.Module) else getattr(fn, "__name__", type(fn).__name__)
        self.info = AdapterInfo(path=f"<{name}>", backend="torch", format="module", sha256="", device=str(self.device))

    def __call__(self, batch: Tensor) -> Tensor:
        with torch.no_grad():
            out = self.fn(batch.to(self.device, self.dtype))
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(out)
        if not isinstance(out, Tensor):
            raise TypeError(f"Expected the model to return a tensor, got {type(out).__name__}.")
        return out.to(self.device)


def in_memory_dataset(x: Tensor | np.ndarray, y: Tensor | np.ndarray | None = None, name: str = "<tensor>") -> Dataset:
    """A Dataset over an in-memory batch x (N, ...) with optional integer labels y (N,)."""
    x = x.detach().cpu() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"Expected a batch of inputs of shape (N, ...) with N >= 1, got {tuple(x.shape)}.")
    labels = None
    if y is not None:
        labels = (y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)).astype(np.int64)
        if labels.shape != (x.shape[0],):
            raise ValueError(f"Expected labels of shape ({x.shape[0]},), got {tuple(labels.shape)}.")
    return Dataset(name, None, x, labels, None, np.arange(int(x.shape[0])), tuple(int(d) for d in x.shape[1:]))


def _dataset(data: Any) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, Path)):
        return load_dataset(str(data))
    if isinstance(data, tuple) and len(data) == 2:
        return in_memory_dataset(*data)
    return in_memory_dataset(data)


@contextlib.contextmanager
def _eval_mode(fn: Any) -> Iterator[None]:
    """Evaluate modules in eval mode (dropout off, batch-norm running stats), restoring each submodule's flag."""
    if not isinstance(fn, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in fn.modules()]
    fn.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@dataclass
class OrbitCheck:
    """What the assertion measured: per element the largest per-sample value of ``metric``."""

    symmetry: str
    metric: str
    tol: float
    labels: list[str]
    per_element_max: list[float]
    worst_element: str
    worst_sample: int
    worst_value: float
    floor: float | None = None

    @property
    def passed(self) -> bool:
        return self.worst_value <= self.tol

    def message(self, what: str) -> str:
        per = ", ".join(f"{lab}: {v:.3g}" for lab, v in zip(self.labels, self.per_element_max))
        floor = f"; measured floor (resampling round trip) {self.floor:.3g}" if self.floor is not None else ""
        return (f"Expected the model to be {what} under {self.symmetry} within tol={self.tol:g}, got {self.metric} = "
                f"{self.worst_value:.6g} at element {self.worst_element} (sample {self.worst_sample}){floor}. "
                f"Worst {self.metric} per element: {per}.")


def check_symmetry(
    model: nn.Module | Callable[[Tensor], Any],
    data: Tensor | np.ndarray | str | Path | tuple | Dataset,
    symmetry: str | Symmetry = "rot90",
    tol: float = 1e-5,
    *,
    task: str = "classify",
    metric: str | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    output_kind: str = "auto",
    seed: int = 0,
) -> OrbitCheck:
    """Sweep ``data`` through the orbit of ``symmetry`` and return the worst value of ``metric`` (the
    task's main metric unless given) per element; raises nothing when the model fails the check."""
    from .sweep import sweep

    sym = parse_symmetry(symmetry) if isinstance(symmetry, str) else symmetry
    dataset = _dataset(data)
    sym.check_input(dataset.sample_shape)
    the_task = get_task(task)
    adapter = model if hasattr(model, "info") and hasattr(model, "device") else CallableAdapter(model, device)
    with _eval_mode(model):
        out = sweep(adapter, dataset, [sym], the_task, batch_size=batch_size, output_kind=output_kind, seed=seed)
    table = out.tables[0]
    name = metric or the_task.main_metric
    if name not in table:
        raise ValueError(f"Expected metric to be one of {sorted(table)}, got {name!r}.")
    values = np.nan_to_num(table[name].astype(np.float64), nan=np.inf)  # (N, E)
    per_element = values.max(0)
    e = int(per_element.argmax())
    floor = float(np.nanmax(table["floor"])) if "floor" in table else None  # NaN: outside the floor subset
    return OrbitCheck(
        symmetry=sym.spec,
        metric=name,
        tol=float(tol),
        labels=list(sym.labels),
        per_element_max=per_element.tolist(),
        worst_element=sym.labels[e] if sym.labels else str(sym.elements[e].tolist()),
        worst_sample=int(values[:, e].argmax()),
        worst_value=float(per_element[e]),
        floor=floor,
    )


def assert_invariant(
    model: nn.Module | Callable[[Tensor], Any],
    data: Tensor | np.ndarray | str | Path | tuple | Dataset,
    symmetry: str | Symmetry = "rot90",
    tol: float = 1e-5,
    **options: Any,
) -> OrbitCheck:
    """Assert that ``model``'s outputs do not change along the orbit of ``symmetry`` (classifier
    outputs by default: ``prob_tv``, the total-variation distance of the softmax, must stay <= tol).

    ``data``: a tensor or array (N, ...), a tuple (x, y), or a dataset path (.npz/.npy/.pt). Options
    as in :func:`check_symmetry` (``task``, ``metric``, ``batch_size``, ``device``, ``output_kind``)."""
    check = check_symmetry(model, data, symmetry, tol, **options)
    if not check.passed:
        raise AssertionError(check.message("invariant"))
    return check


def assert_equivariant(
    model: nn.Module | Callable[[Tensor], Any],
    data: Tensor | np.ndarray | str | Path | tuple | Dataset,
    symmetry: str | Symmetry = "rot90",
    tol: float = 1e-5,
    *,
    task: str,
    **options: Any,
) -> OrbitCheck:
    """Assert f(T_g x) == S_g f(x) along the orbit, with S_g the output action of ``task`` (e.g.
    ``dense``, ``vector-field``, ``points``); the task's main metric (``equivariance_error``) must stay <= tol."""
    check = check_symmetry(model, data, symmetry, tol, task=task, **options)
    if not check.passed:
        raise AssertionError(check.message(f"equivariant ({task})"))
    return check
