"""The ModelAdapter interface every backend implements, plus the input-reshaping wrapper."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class AdapterInfo:
    """What the result records about a loaded model."""

    path: str
    backend: str  # "torch" | "onnx"
    format: str  # "state_dict" | "export" | "pickle" | "torchscript" | "onnx" | "module"
    sha256: str
    device: str
    output_name: str | None = None
    output_names: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # several declared outputs, returned as a tuple in this order
    notes: list[str] = field(default_factory=list)
    declared_shape: list[int | None] | None = None  # per-sample input shape the file declares (None: unknown dim)
    input_names: list[str] = field(default_factory=list)  # the model's inputs in calling order ([] : unknown, one input)
    input_shapes: dict[str, list[int | None] | None] = field(default_factory=dict)  # per-sample shape declared per input


def check_declared_shape(info: AdapterInfo, rows: tuple[int, ...], name: str | None = None) -> None:
    """Raise ModelRunError when the model file declares a per-sample input shape that the data rows
    ``rows`` do not have (instead of a backend error deep inside the sweep); ``name`` checks one of
    several named inputs instead of the only one."""
    from ..errors import ModelRunError

    want = info.declared_shape if name is None else info.input_shapes.get(name)
    if want is None:
        return
    fits = len(want) == len(rows) and all(w is None or w == r for w, r in zip(want, rows))
    if not fits:
        shown = "(" + ", ".join("?" if w is None else str(w) for w in want) + ")"
        what = "inputs" if name is None else f"input {name!r}"
        raise ModelRunError(
            f"{info.path!r} expects {what} of shape {shown} per sample, but the data rows are {tuple(rows)}; "
            "resize or reshape the data (or pass --input-shape for flat rows)."
        )


@runtime_checkable
class ModelAdapter(Protocol):
    """A model behind one calling convention: a float32 batch (B, ...) on ``device`` in, outputs out;
    a model with several inputs takes a dict {input name: (B, ...)} (names in ``info.input_names``).

    ``__call__`` runs without gradients and returns a torch tensor on ``device``; only adapters
    convert between numpy and torch.
    """

    info: AdapterInfo
    device: torch.device
    supports_autograd: bool

    def __call__(self, batch: Tensor) -> Tensor: ...


class ReshapedInput:
    """Wraps an adapter whose model takes rows of ``model_shape`` while symmetries act on
    ``sample_shape`` (``--input-shape``): (B, *sample_shape) -> (B, *model_shape) before the call."""

    def __init__(self, inner: ModelAdapter, model_shape: tuple[int, ...]):
        self.inner = inner
        self.model_shape = tuple(model_shape)
        self.info = inner.info
        self.device = inner.device
        self.supports_autograd = inner.supports_autograd

    def __call__(self, batch: Tensor) -> Tensor:
        return self.inner(batch.reshape(batch.shape[0], *self.model_shape))

    def select(self, names: list[str | None]) -> None:
        self.inner.select(names)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cpu``, ``cuda`` and ``cuda:N`` are checked."""
    from ..errors import ConfigError

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"Expected --device auto, cpu, cuda or cuda:N, got {spec!r}.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec} was asked for but no CUDA device is available; use --device cpu or auto.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {spec} does not exist: {torch.cuda.device_count()} CUDA device(s) visible; "
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}."
            )
    elif dev.type != "cpu":
        raise ConfigError(f"Expected --device auto, cpu, cuda or cuda:N, got {spec!r}.")
    return dev
