"""``--dtype``: the model call in half precision (torch autocast), outputs back in float32, and a float32 way back for the floor.

A torch model runs under ``torch.autocast(device, dtype)``: matrix products and convolutions in
float16 or bfloat16, reductions and normalisations in float32, as mixed-precision inference does;
its outputs are cast to float32 before any metric. ``full_precision()`` runs the calls inside it in
float32: the sweep computes the floor subset's reference f(x) that way, so every floor (exact actions
too) measures the distance between the float32 model and the model in ``dtype`` on top of the
pipeline's own noise. An ONNX graph runs in the dtype its inputs declare: ``--dtype float16`` is
accepted for a graph that takes float16 (nothing to cast; its floor has no float32 reference) and
refused otherwise.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor

from ..errors import ConfigError

DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def parse_dtype(spec: str | None) -> str:
    """The canonical name of ``--dtype`` ``spec`` (float32, float16 or bfloat16); ConfigError otherwise."""
    text = (spec or "float32").strip().lower()
    text = ALIASES.get(text, text)
    if text not in DTYPES:
        raise ConfigError(f"Expected --dtype float32, float16 or bfloat16, got {spec!r}; do pass one of those "
                          "(float32, the default, runs the model as it is).")
    return text


def with_dtype(adapter: Any, name: str) -> Any:
    """``adapter`` running its model in dtype ``name`` (the adapter itself for float32): a torch model
    under autocast; an ONNX graph only when it already takes that dtype (ConfigError otherwise)."""
    dtype = DTYPES[parse_dtype(name)]
    if dtype is None:
        return adapter
    info = adapter.info
    if info.backend == "onnx":
        import numpy as np

        takes = {n: np.dtype(t).name for n, t in getattr(adapter, "input_dtypes", {}).items()}
        floats = {n: t for n, t in takes.items() if t.startswith("float")}
        if dtype == torch.float16 and floats and all(t == "float16" for t in floats.values()):
            _note(info, "--dtype float16: the ONNX graph takes float16 inputs and runs as exported (no float32 reference for the floor)")
            return adapter
        shown = ", ".join(f"{n} {t}" for n, t in floats.items()) or "no float input"
        raise ConfigError(f"Expected an ONNX graph that takes {name} inputs for --dtype {name}, got {info.path!r} with {shown}; "
                          f"do export the model in {name} (onnxruntime cannot run a float32 graph in {name}) or drop --dtype.")
    device_type = adapter.device.type
    if not torch.amp.is_autocast_available(device_type):
        raise ConfigError(f"Expected a device with torch autocast for --dtype {name}, got {device_type!r}; do drop --dtype.")
    _note(info, f"--dtype {name}: the model runs under torch.autocast({device_type!r}, {name}); outputs are cast to float32")
    return ReducedPrecision(adapter, dtype)


def _note(info, text: str) -> None:
    if text not in info.notes:  # wrapped once for the batch-size search and once for the sweep
        info.notes.append(text)


class ReducedPrecision:
    """Wraps a torch adapter: each call runs under autocast in ``dtype``; outputs come back in float32."""

    def __init__(self, inner: Any, dtype: torch.dtype):
        self.inner = inner
        self.dtype = dtype
        self.info = inner.info
        self.device = inner.device
        self.supports_autograd = inner.supports_autograd
        self._full = False

    @property
    def module(self):
        return getattr(self.inner, "module", None)

    def _autocast(self):
        if self._full:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def __call__(self, batch) -> Tensor:
        with self._autocast():
            return _float32(self.inner(batch))

    def forward(self, batch) -> Tensor:
        with self._autocast():
            return _float32(self.inner.forward(batch))

    def select(self, names: list[str | None]) -> None:
        self.inner.select(names)

    @contextlib.contextmanager
    def full_precision(self) -> Iterator[None]:
        """Calls inside run in float32 (the floor's reference)."""
        old, self._full = self._full, True
        try:
            yield
        finally:
            self._full = old


def _float32(out):
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float64 else out
    return tuple(_float32(o) for o in out)


def reduced(model: Any) -> ReducedPrecision | None:
    """The ReducedPrecision wrapper inside ``model`` (found through ``.inner`` wrappers), or None."""
    seen = 0
    while model is not None and seen < 8:
        if isinstance(model, ReducedPrecision):
            return model
        model, seen = getattr(model, "inner", None), seen + 1
    return None


def full_precision(model: Any):
    """A context in which ``model`` runs in float32 (nothing to do when it has no reduced dtype)."""
    wrapper = reduced(model)
    return wrapper.full_precision() if wrapper is not None else contextlib.nullcontext()
