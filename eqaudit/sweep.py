"""The orbit engine: for each batch, build g.x for a chunk of elements in one op, call the model once, reduce at once.

Loop structure (no per-sample or per-element Python loops): for each symmetry, data is read in
batches of B = max(1, batch_size // E) samples, so each model call carries about ``batch_size`` rows
(E elements x B samples). Per batch the reference f(x) is evaluated separately (so the identity
element, evaluated inside the orbit batch, reads the float noise of the pipeline: the exact floor).
Per-sample metrics go straight into (N, E) arrays; raw outputs are never kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .data import Dataset
from .errors import DataError, EqauditError, ModelRunError
from .metrics import classify_per_sample, looks_like_probabilities, to_probabilities
from .symmetries import Symmetry

Progress = Callable[[int, int, str], None]  # (done, total, what)


def _is_oom(exc: BaseException) -> bool:
    seen = [exc, exc.__cause__]
    return any(
        e is not None
        and (isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower() or "failed to allocate memory" in str(e).lower())
        for e in seen
    )


class ModelCaller:
    """Calls the model, counts rows and time, and on out-of-memory halves the rows per call and retries."""

    def __init__(self, model, device: torch.device):
        self.model = model
        self.device = device
        self.max_rows: int | None = None
        self.evals = 0
        self.seconds = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, x: Tensor) -> Tensor:
        rows = int(x.shape[0])
        step = min(rows, self.max_rows or rows)
        outs, i = [], 0
        while i < rows:
            part = x[i : i + step]
            self._sync()
            t0 = time.perf_counter()
            try:
                out = self.model(part)
                self._sync()
            except EqauditError as exc:
                if _is_oom(exc) and step > 1:
                    step = self._back_off(step)
                    continue
                raise
            except Exception as exc:
                if _is_oom(exc) and step > 1:
                    step = self._back_off(step)
                    continue
                raise ModelRunError(
                    f"The model failed on a batch of shape {tuple(part.shape)}: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}; check that --data (and --input-shape) match the model's input."
                ) from exc
            self.seconds += time.perf_counter() - t0
            self.evals += int(part.shape[0])
            outs.append(out)
            i += int(part.shape[0])
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _back_off(self, step: int) -> int:
        step = max(1, step // 2)
        self.max_rows = step
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return step


@dataclass
class SweepOutput:
    tables: list[dict[str, np.ndarray]]  # per symmetry: metric -> (N, E)
    output_kind: str
    n_classes: int
    seconds: float
    model_seconds: float
    model_evals: int
    notes: list[str] = field(default_factory=list)


def sweep(
    model,
    dataset: Dataset,
    symmetries: list[Symmetry],
    *,
    batch_size: int = 256,
    output_kind: str = "auto",
    progress: Progress | None = None,
) -> SweepOutput:
    """Measure every symmetry on every selected sample; see the module docstring."""
    device = model.device
    caller = ModelCaller(model, device)
    n = len(dataset)
    total = n * len(symmetries)
    done = 0
    kind = None if output_kind == "auto" else output_kind
    n_classes = 0
    tables: list[dict[str, np.ndarray]] = []
    t_start = time.perf_counter()
    with torch.inference_mode():
        for sym in symmetries:
            elements = sym.elements.to(device)
            e_total = sym.n_elements
            per_batch = max(1, batch_size // e_total)
            e_chunk = min(e_total, max(1, batch_size // per_batch))
            table: dict[str, np.ndarray] = {}
            for pos, x, y in dataset.batches(per_batch, device):
                ref = caller(x)
                if kind is None:
                    _check_classifier_output(ref, x)
                    kind = "probabilities" if looks_like_probabilities(ref) else "logits"
                if not n_classes:
                    n_classes = _check_classifier_output(ref, x)
                    _check_labels(dataset, n_classes)
                p_ref = to_probabilities(ref, kind)
                for start in range(0, e_total, e_chunk):
                    sl = slice(start, min(start + e_chunk, e_total))
                    el = elements[sl]
                    values = _measure(caller, sym, x, el, p_ref, y, kind)
                    if not sym.exact:
                        back = _evaluate(caller, sym.round_trip(x, el), kind)
                        floor = classify_per_sample(p_ref, back, None)
                        values["floor"], values["floor_flipped"] = floor["prob_tv"], floor["flipped"]
                    for key, v in values.items():
                        arr = table.get(key)
                        if arr is None:
                            arr = table[key] = np.zeros((n, e_total), dtype=_np_dtype(v))
                        arr[pos, sl] = v.transpose(0, 1).cpu().numpy()
                done += len(pos)
                if progress is not None:
                    progress(done, total, sym.spec)
            tables.append(table)
    seconds = time.perf_counter() - t_start
    return SweepOutput(tables, kind or "logits", n_classes, seconds, caller.seconds, caller.evals)


def _evaluate(caller: ModelCaller, xg: Tensor, kind: str) -> Tensor:
    """xg (E, B, ...) -> probabilities (E, B, K) with one model call."""
    e, b = xg.shape[:2]
    out = caller(xg.reshape(e * b, *xg.shape[2:]))
    return to_probabilities(out.reshape(e, b, *out.shape[1:]), kind)


def _measure(caller, sym: Symmetry, x: Tensor, el: Tensor, p_ref: Tensor, y, kind: str) -> dict[str, Tensor]:
    p = _evaluate(caller, sym.act(x, el), kind)
    return classify_per_sample(p_ref, p, y)


def _np_dtype(v: Tensor):
    if v.dtype == torch.bool:
        return np.bool_
    if v.dtype in (torch.int64, torch.int32):
        return np.int32
    return np.float32  # relative precision 6e-8 is plenty, and halves the table


def _check_classifier_output(out: Tensor, x: Tensor) -> int:
    if out.ndim != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 2:
        raise ModelRunError(
            f"Expected classifier outputs of shape (B, K) with K >= 2 for a batch of {x.shape[0]}, got {tuple(out.shape)}; "
            "pick another output with --output-name, or check the task."
        )
    if not torch.isfinite(out).all():
        raise ModelRunError("The model returned NaN or infinite outputs on the unmodified data; check the model and the input range.")
    return int(out.shape[1])


def _check_labels(dataset: Dataset, n_classes: int) -> None:
    if dataset.y is not None:
        top = int(dataset.y[dataset.indices].max())
        if top >= n_classes:
            raise DataError(
                f"Labels in {dataset.path!r} go up to {top}, but the model has {n_classes} outputs; "
                "expected labels in 0..K-1: check the data file or the model output."
            )
    if dataset.classes is not None and len(dataset.classes) != n_classes:
        raise DataError(
            f"{dataset.path!r} names {len(dataset.classes)} classes, but the model has {n_classes} outputs; fix 'classes' in the data file."
        )
