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


DEVICE_SPECS = "auto, cpu, cuda, cuda:N or mps"


def select_device(spec: str | None, local_rank: int | None = None) -> torch.device:
    """The torch device for ``--device`` ``spec``: ``auto`` is ``cuda`` when CUDA is available, else the
    CPU (never ``mps``: ask for it by name); ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are checked.
    ``local_rank`` (a torchrun process's LOCAL_RANK) picks ``cuda:LOCAL_RANK`` for ``auto`` and ``cuda``.
    ConfigError (exit 2) for a spec that names no device; DeviceError (exit 3) for a device this
    machine does not have."""
    from ..errors import ConfigError, DeviceError

    text = (spec or "auto").strip().lower()
    if text == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        text = "cuda"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"Expected --device {DEVICE_SPECS}, got {spec!r}; do pass one of those.") from None
    if dev.type not in ("cpu", "cuda", "mps") or (dev.type != "cuda" and dev.index not in (None, 0)):
        raise ConfigError(f"Expected --device {DEVICE_SPECS}, got {spec!r}; do pass one of those.")
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"Expected an Apple GPU for --device {spec}, got a torch without MPS on this machine; "
                              "do use --device cpu (or auto).")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(f"Expected a CUDA device for --device {spec}, got none on this machine (torch {torch.__version__}, "
                          f"CUDA build {torch.version.cuda or 'none'}); do use --device cpu or auto, or install a CUDA build of torch.")
    count = torch.cuda.device_count()
    index = dev.index if dev.index is not None else (local_rank if local_rank is not None else torch.cuda.current_device())
    if not 0 <= index < count:
        what = f"--device {spec}" if dev.index is not None else f"--device {spec} on LOCAL_RANK {local_rank}"
        raise DeviceError(f"Expected a CUDA device index in 0..{count - 1} for {what}, got cuda:{index} ({count} visible); "
                          f"do pick one of cuda:0..cuda:{count - 1} (or check CUDA_VISIBLE_DEVICES).")
    return torch.device("cuda", index)


def resolve_device(spec: str) -> torch.device:
    """``--device`` for one process (see select_device)."""
    return select_device(spec)
