"""Several declared outputs measured together: one Task that splits each model output tuple among per-output Tasks.

The model returns a tuple (ONNX outputs, a ``.pt2`` program's or a module's tuple or dict), one entry
per declaration. Converted outputs are flattened and concatenated along the last axis,
(..., F_1 + F_2 + ...), so the sweep keeps one tensor per reference; ``compare`` cuts it back into
the outputs' own shapes and asks each output's Task. Every metric key is prefixed with the output's
name (``energy.equivariance_error``, ``forces.max_abs_error``); the first declared output's main
metric and floor drive the level, the worst-sample ranking and the report, and are also stored
unprefixed (``floor``). Only the identity reference is supported.

Shapes: E elements, B batch, F_i the flattened size of output i after conversion.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ModelRunError
from .base import Task


class MultiOutputTask(Task):
    """Per-output Tasks over one output tuple (see the module docstring)."""

    name = "outputs"
    supports_labels = True

    def __init__(self, parts: list[tuple[str, Task]]) -> None:
        self.names = [n for n, _ in parts]
        self.tasks = [t for _, t in parts]
        self.shapes: list[tuple[int, ...]] = []
        self.label_metrics = frozenset(f"{n}.{m}" for n, t in parts for m in t.label_metrics)

    @property
    def main_metric(self) -> str:  # type: ignore[override]
        return f"{self.names[0]}.{self.tasks[0].main_metric}"

    def check_reference(self, reference, has_labels, has_targets=False, targets_key="targets"):
        if reference != "identity":
            raise ConfigError(
                f"Expected --reference identity with several declared outputs, got {reference!r}, "
                "do audit one output at a time for label or consensus references."
            )
        for t in self.tasks:
            t.check_reference(reference, has_labels, has_targets, targets_key)

    def _tuple(self, out) -> list[Tensor]:
        if isinstance(out, Tensor) or len(out) != len(self.tasks):
            got = "one tensor" if isinstance(out, Tensor) else f"{len(out)} outputs"
            raise ModelRunError(
                f"Expected {len(self.tasks)} outputs ({', '.join(self.names)}) from the model, got {got}; "
                "declare one --output per model output, in the model's order or by name."
            )
        return list(out)

    def check_output(self, out, x: Tensor) -> None:
        for name, t, o in zip(self.names, self.tasks, self._tuple(out)):
            try:
                t.check_output(o, x)
            except ModelRunError as exc:
                raise ModelRunError(f"output {name!r}: {exc}") from exc

    def setup(self, first, output_kind: str) -> str:
        outs = self._tuple(first)
        kinds = [t.setup(o, output_kind) for t, o in zip(self.tasks, outs)]
        self.shapes = [tuple(t.convert(o).shape[1:]) for t, o in zip(self.tasks, outs)]
        return ", ".join(f"{n}={k}" for n, k in zip(self.names, kinds))

    def convert(self, out) -> Tensor:
        parts = []
        for t, o, shape in zip(self.tasks, self._tuple(out), self.shapes):
            c = t.convert(o)
            lead = c.dim() - len(shape)
            parts.append(c.reshape(*c.shape[:lead], -1))
        return torch.cat(parts, -1)

    def unpack(self, t: Tensor) -> list[Tensor]:
        """(..., sum F_i) -> one tensor per output in its converted shape (..., *shape_i)."""
        sizes = [math.prod(s) for s in self.shapes]
        lead = t.shape[:-1]
        return [p.reshape(*lead, *s) for p, s in zip(torch.split(t, sizes, -1), self.shapes)]

    def compare(self, ref, out, sym, elements, x, y, ref_class=None, mask=None):
        values: dict[str, Tensor] = {}
        for name, t, r, o in zip(self.names, self.tasks, self.unpack(ref), self.unpack(out)):
            for k, v in t.compare(r, o, sym, elements, x, y, mask=mask).items():
                values[f"{name}.{k}"] = v
        return values

    def point_errors(self, ref, out, sym, elements, mask=None):
        """The first per-point vector output's errors (by declaration order), named."""
        for name, t, r, o in zip(self.names, self.tasks, self.unpack(ref), self.unpack(out)):
            got = t.point_errors(r, o, sym, elements, mask)
            if got is not None:
                return name, got[1]
        return None

    def floor_keys(self) -> dict[str, str]:
        return {f"{n}.{k}": f"{n}.{v}" for n, t in zip(self.names, self.tasks) for k, v in t.floor_keys().items()}

    def floor_pairs(self) -> list[tuple[str, str]]:
        """Every output's floors, and the first output's main floor also as ``floor`` (the level's)."""
        return [*self.floor_keys().items(), (self.main_metric, "floor")]

    def null(self, ref_a: Tensor, ref_b: Tensor) -> Tensor:
        return self.tasks[0].null(self.unpack(ref_a)[0], self.unpack(ref_b)[0])

    def summarize(self, table: dict[str, np.ndarray], identity_index: int):
        summary: dict = {}
        per_element: list[dict] = []
        for i, (name, t) in enumerate(zip(self.names, self.tasks)):
            pre = f"{name}."
            sub = {k[len(pre):]: v for k, v in table.items() if k.startswith(pre)}
            if "floor_rows" in table:
                sub["floor_rows"] = table["floor_rows"]
            s, rows = t.summarize(sub, identity_index)
            if not per_element:
                per_element = [{} for _ in rows]
            for row, r in zip(per_element, rows):
                row.update({pre + k: v for k, v in r.items()})
                if i == 0:
                    row.update({k: v for k, v in r.items() if k in ("floor", "resolved")})
            summary.update({pre + k: v for k, v in s.items()})
            if i == 0:
                summary.update({k: v for k, v in s.items() if k in ("floor", "unresolved_elements", "floor_samples", "floor_se")})
        return summary, per_element
