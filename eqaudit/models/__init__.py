"""Model loading: one ModelAdapter interface over torch (state dict, export, trusted pickles) and ONNX."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelLoadError, PathNotFoundError
from .base import AdapterInfo, ModelAdapter, ReshapedInput, resolve_device, select_device

TORCH_SUFFIXES = {".pt", ".pth", ".pt2", ".bin", ".ckpt", ".tar"}


def load_model(
    path: str | Path,
    device: torch.device,
    *,
    factory: str | None = None,
    search_dirs: list[Path] | None = None,
    trust: bool = False,
    output_name: str | None = None,
    outputs: list[str | None] | None = None,
    check_factory=None,
) -> ModelAdapter:
    """Load a model file by its suffix (.onnx, or a torch format sniffed from its content); with
    ``outputs`` (several declared outputs: names, or None for "by position") it returns a tuple.
    ``check_factory(factory, search_dirs)`` runs before a factory is imported and may refuse it."""
    adapter = _load(path, device, factory=factory, search_dirs=search_dirs, trust=trust, output_name=output_name,
                    check_factory=check_factory)
    if outputs is not None and len(outputs) > 1:
        adapter.select(list(outputs))
    return adapter


def _load(path, device, *, factory, search_dirs, trust, output_name, check_factory) -> ModelAdapter:
    path = Path(path)
    if not path.exists():
        raise PathNotFoundError(f"Model file {str(path)!r} does not exist; check the path.")
    if path.is_dir():
        raise ModelLoadError(f"{str(path)!r} is a folder; pass a model file (.pt, .pth, .pt2 or .onnx).")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnx_backend import load_onnx

        return load_onnx(path, device, output_name=output_name)
    if suffix in TORCH_SUFFIXES:
        from .torch_backend import load_torch

        return load_torch(path, device, factory=factory, search_dirs=search_dirs, trust=trust, output_name=output_name,
                          check_factory=check_factory)
    raise ModelLoadError(
        f"Unknown model file type {suffix or '(none)'!r} for {str(path)!r}; expected .pt/.pth (state dict), .pt2 (torch.export) or .onnx."
    )


__all__ = ["AdapterInfo", "ModelAdapter", "ReshapedInput", "load_model", "resolve_device", "select_device"]
