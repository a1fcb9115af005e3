"""Dataset readers (.npz, .npy memory-mapped, .pt, image folders) and seeded batching as torch tensors."""

from __future__ import annotations

from .dataset import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
