"""The Task interface: how a kind of model output is compared along an orbit (what the sweep calls per chunk)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from torch import Tensor

from ..symmetries import Symmetry


class Task(ABC):
    """One kind of output (classifier logits, dense maps, vector fields, points, boxes).

    Shapes: E elements, B samples. The sweep calls, per batch: ``check_output`` and ``setup`` on the
    first reference output, ``convert`` on every raw output, ``compare`` on each chunk of the orbit,
    ``compare`` with identity elements on round-tripped inputs (the floor), and, after the sweep,
    ``summarize`` on the (N, E) per-sample table and ``null`` on reference outputs of different inputs.
    """

    name: str = ""
    main_metric: str = ""  # per-sample metric behind floor, null, level and worst-sample ranking
    label_metrics: frozenset[str] = frozenset()  # summary metrics that need labels

    def check_output(self, out: Tensor, x: Tensor) -> None:
        """Raise ModelRunError when a raw output batch does not have this task's shape."""

    def setup(self, first: Tensor, output_kind: str) -> str:
        """Called once with the first raw reference output; returns the output kind recorded in the result."""
        return output_kind if output_kind != "auto" else "raw"

    def convert(self, out: Tensor) -> Tensor:
        """Raw model output (B, ...) or (E, B, ...) -> the representation that is compared (float64)."""
        return out.double()

    @abstractmethod
    def compare(self, ref: Tensor, out: Tensor, sym: Symmetry, elements: Tensor, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        """Per-(element, sample) metrics: ref (B, ...) converted reference output, out (E, B, ...) converted
        outputs on the transformed inputs, x (B, ...) the untransformed inputs, y (B,) labels or None.
        Returns (E, B) tensors, always including ``main_metric``."""

    def floor_keys(self) -> dict[str, str]:
        """Which compare() results to keep from the round trip, and the table key to store them under."""
        return {self.main_metric: "floor"}

    @abstractmethod
    def null(self, ref_a: Tensor, ref_b: Tensor) -> Tensor:
        """``main_metric`` between outputs of two different inputs: (M, ...), (M, ...) -> (M,)."""

    @abstractmethod
    def summarize(self, table: dict[str, np.ndarray], identity_index: int) -> tuple[dict, list[dict]]:
        """Summary over non-identity elements and per-element means from (N, E) per-sample arrays."""
