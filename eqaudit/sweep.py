"""The orbit engine: for each batch, build g.x for a chunk of elements in one op, call the model once, reduce at once.

Loop structure (no per-sample or per-element Python loops): for each symmetry, data is read in
batches of B = max(1, batch_size // E) samples, so each model call carries about ``batch_size`` rows
(E elements x B samples). Per batch the reference f(x) is evaluated separately (so the identity
element, evaluated inside the orbit batch, reads the float noise of the pipeline: the exact floor).
Per-sample metrics go straight into (N, E) arrays; raw outputs are never kept, except the converted
reference outputs of a seeded subset (at most NULL_SAMPLES) from which the null is measured.
How outputs are compared is the Task's business (eqaudit.tasks); this module only schedules.

References (``reference=``): ``identity`` compares each orbit output with f(x) moved by the element;
``label`` with the ground truth (the labels y for classifiers; for the other tasks the data's targets,
read once per batch with ``Dataset.targets_at`` and moved by S_g like f(x)); ``consensus`` runs two passes over a batch's
chunks of elements: the first maps every output back to the canonical frame and sums it (and counts
class votes) in a running total, the second compares (outputs are kept between the passes when they
fit in KEEP_BYTES, else evaluated again), so results do not depend on batch or chunk size. The floor
is always measured against f(x). A model with several inputs is fed dicts of them (``Dataset.feed``);
eqaudit.inputs builds their orbits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .data import Dataset
from .errors import DataError, EqauditError, ModelRunError
from .inputs import describe, flatten, lead_shape, orbit
from .models.batching import n_rows, take_rows
from .symmetries import Symmetry
from .tasks import Task
from .tasks.base import ConsensusAccumulator

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
        self.widths: tuple[int | None, ...] | None = None  # K of every (R, K) output of the first call
        self.first_rows = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, x) -> Tensor:
        """x (R, ...), or a dict of inputs (R, ...) sliced by the same rows -> outputs (R, ...)."""
        rows = n_rows(x)
        step = min(rows, self.max_rows or rows)
        outs, i = [], 0
        while i < rows:
            part = take_rows(x, i, i + step)
            self._sync()
            t0 = time.perf_counter()
            try:
                out = self.model(part)
                self._sync()
            except Exception as exc:
                if _is_oom(exc) and step > 1:
                    step = self._back_off(step)
                    continue
                if isinstance(exc, EqauditError):  # already says what went wrong (e.g. an ONNX adapter's error)
                    raise
                raise ModelRunError(
                    f"The model failed on a batch of shape {describe(part)}: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}; check that --data (and --input-shape) match the model's input."
                ) from exc
            self.seconds += time.perf_counter() - t0
            self.evals += n_rows(part)
            self.check_widths(out, n_rows(part))
            outs.append(out)
            i += n_rows(part)
        if len(outs) == 1:
            return outs[0]
        if isinstance(outs[0], Tensor):
            return torch.cat(outs)
        return tuple(torch.cat(parts) for parts in zip(*outs))  # several outputs: each joined on its own

    def check_widths(self, out, rows: int) -> None:
        """Every call must return the same K per row for (R, K) outputs (class scores): a width that
        follows the number of rows is the model's fault, not the data's (ModelRunError)."""
        widths = tuple(int(o.shape[1]) if isinstance(o, Tensor) and o.ndim == 2 else None
                       for o in ((out,) if isinstance(out, Tensor) else out))
        if self.widths is None:
            self.widths, self.first_rows = widths, rows
        elif widths != self.widths:
            path = getattr(getattr(self.model, "info", None), "path", None)
            who = f"The model {path!r}" if path else "The model"
            raise ModelRunError(
                f"{who} returned {_widths(self.widths)} for a batch of {self.first_rows} rows but {_widths(widths)} for "
                f"{rows} rows: its output width depends on the batch size; expected (B, K) with K fixed, do fix the "
                "model's output layer (is something sized by the batch?)."
            )

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
    seconds: float
    model_seconds: float
    model_evals: int
    null: np.ndarray | None = None  # (M,) main metric between reference outputs of different inputs
    notes: list[str] = field(default_factory=list)


NULL_SAMPLES = 512


def null_pairs(n: int, seed: int, m: int = NULL_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Seeded pairs of *different* selection positions (a, b), at most ``m`` of them: each sample of a
    random subset is paired with the next one in a random cycle, so no sample is paired with itself."""
    if n < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed + 7919)
    a = np.sort(rng.choice(n, size=min(n, m), replace=False)) if n > m else np.arange(n)
    order = rng.permutation(len(a))
    b = np.empty_like(a)
    b[order] = a[np.roll(order, -1)]
    return a, b


KEEP_BYTES = 256 * 2**20
"""Consensus reference: a batch's orbit outputs are kept between the two passes when they fit in this
many bytes; otherwise the second pass evaluates the model again (same numbers, twice the model time)."""


@dataclass
class SymmetryTable:
    """One finished symmetry of a sweep: what ``sweep_tables`` yields as soon as its last batch is done."""

    index: int  # position in the ``symmetries`` passed to the sweep
    table: dict[str, np.ndarray]  # metric -> (N, E)
    output_kind: str
    null: np.ndarray | None  # (M,) main metric between reference outputs of different inputs (same for every table)
    seconds: float  # this symmetry's wall time, model time and model rows
    model_seconds: float
    model_evals: int


def sweep(model, dataset: Dataset, symmetries: list[Symmetry], task: Task, **options) -> SweepOutput:
    """Measure every symmetry on every selected sample (``sweep_tables``, collected); see the module docstring."""
    done = list(sweep_tables(model, dataset, symmetries, task, **options))
    return SweepOutput([d.table for d in done], done[-1].output_kind if done else "raw", sum(d.seconds for d in done),
                       sum(d.model_seconds for d in done), sum(d.model_evals for d in done), done[0].null if done else None)


def sweep_tables(
    model,
    dataset: Dataset,
    symmetries: list[Symmetry],
    task: Task,
    *,
    batch_size: int = 256,
    output_kind: str = "auto",
    seed: int = 0,
    progress: Progress | None = None,
    reference: str = "identity",
    stop: Callable[[], None] | None = None,
) -> Iterator[SymmetryTable]:
    """Measure every symmetry on every selected sample, yielding each symmetry's table as it finishes
    (outside inference mode), so a caller keeps what finished whatever stops the sweep later.

    ``reference`` (identity, label or consensus) is what each orbit output is compared against (after
    the symmetry's output action): f(x), the label, or the orbit's consensus (two passes over each
    batch's chunks: the first sums the outputs mapped back to the canonical frame and counts class
    votes, the second compares). The floor is always measured against f(x). The null is measured from
    the first symmetry's reference outputs. ``stop`` is called between batches; it raises to stop
    the sweep (e.g. eqaudit.errors.Interrupted after SIGTERM)."""
    task.check_reference(reference, dataset.has_labels, dataset.has_targets, dataset.targets_key)
    use_targets = reference == "label" and task.supports_targets
    device = model.device
    caller = ModelCaller(model, device)
    n = len(dataset)
    total = n * len(symmetries)
    done = 0
    kind: str | None = None
    null_a, null_b = null_pairs(n, seed)
    slot = np.full(n, -1, dtype=np.int64)  # selection position -> row of kept_refs (-1: not kept)
    slot[null_a] = np.arange(len(null_a))
    kept_refs: Tensor | None = None  # (M, ...) converted reference outputs of the null's samples
    null = None
    for si, sym in enumerate(symmetries):
        t0, m0, e0 = time.perf_counter(), caller.seconds, caller.evals
        with torch.inference_mode():
            elements = sym.elements.to(device)
            e_total = sym.n_elements
            per_batch = max(1, batch_size // e_total)
            e_chunk = min(e_total, max(1, batch_size // per_batch))
            table: dict[str, np.ndarray] = {}
            for pos, x, y in dataset.batches(per_batch, device):
                if stop is not None:
                    stop()
                feed = dataset.feed(pos, x, device)
                raw = caller(feed)
                if kind is None:
                    task.check_output(raw, x)
                    _check_finite(raw)
                    kind = task.setup(raw, output_kind)
                    _check_labels(dataset, raw, task, caller, feed)
                ref = task.convert(raw)
                rows = slot[pos]
                if si == 0 and (rows >= 0).any():
                    if kept_refs is None:
                        kept_refs = torch.empty((len(null_a), *ref.shape[1:]), dtype=ref.dtype)
                    hit = torch.from_numpy(rows >= 0)
                    kept_refs[torch.from_numpy(rows[rows >= 0])] = ref[hit.to(ref.device)].cpu()
                targets = dataset.targets_at(pos, device) if use_targets else None
                _sweep_batch(caller, task, sym, elements, table, n, pos, x, y, ref, e_chunk, reference, targets,
                             feed=feed, act_on=dataset.binding.act_on if dataset.binding is not None else None)
                done += len(pos)
                if progress is not None:
                    progress(done, total, sym.spec)
            if si == 0 and len(null_a):
                ra, rb = kept_refs[torch.from_numpy(slot[null_a])], kept_refs[torch.from_numpy(slot[null_b])]
                null = task.null(ra, rb).cpu().numpy().astype(np.float64)
        yield SymmetryTable(si, table, kind or "raw", null, time.perf_counter() - t0, caller.seconds - m0, caller.evals - e0)


def _sweep_batch(caller, task: Task, sym: Symmetry, elements: Tensor, table: dict[str, np.ndarray], n: int, pos: np.ndarray,
                 x: Tensor, y: Tensor | None, ref_out: Tensor, e_chunk: int, reference: str, targets: Tensor | None = None,
                 feed=None, act_on: list[str] | None = None) -> None:
    """All elements of ``sym`` on one batch x (B, ...): fills table[key][pos, :] for every metric.

    elements (E, D) on the device; ref_out (B, ...) the converted f(x); targets (B, ...) the ground truth
    for the label reference, or None; ``feed`` the model's inputs for x (x itself, or a dict of several
    inputs whose ``act_on`` ones the symmetry moves). Chunks of ``e_chunk`` elements go through the model
    in one call each; with the consensus reference a first pass over the chunks builds the reference."""
    feed = x if feed is None else feed
    identity = elements[sym.identity_index : sym.identity_index + 1]
    e_total = sym.n_elements
    chunks = [slice(s, min(s + e_chunk, e_total)) for s in range(0, e_total, e_chunk)]
    ref, ref_class, kept = ref_out, None, None
    if reference == "label":
        ref, ref_class = task.label_reference(y, ref_out, targets)
    elif reference == "consensus":
        acc = ConsensusAccumulator(task)
        keep = e_total * ref_out.numel() * 8 <= KEEP_BYTES
        kept = [] if keep else None
        for sl in chunks:
            out = _evaluate(caller, task, orbit(sym, feed, elements[sl], act_on))
            acc.add(out, sym, elements[sl], x)
            if keep:
                kept.append(out)
        ref, ref_class = acc.result(ref_out)
    for ci, sl in enumerate(chunks):
        el = elements[sl]
        out = kept[ci] if kept is not None else _evaluate(caller, task, orbit(sym, feed, el, act_on))
        values = task.compare(ref, out, sym, el, x, y, ref_class=ref_class)
        if not sym.exact:
            back = _evaluate(caller, task, orbit(sym, feed, el, act_on, round_trip=True))
            floor = task.compare(ref_out, back, sym, identity.expand(back.shape[0], -1), x, None)
            for key, target in task.floor_pairs():
                if key in floor:
                    values[target] = floor[key]
        elif reference != "identity" and sl.start <= sym.identity_index < sl.stop:
            # exact action, other reference: the floor is the identity element's output against f(x)
            i = sym.identity_index - sl.start
            floor = task.compare(ref_out, out[i : i + 1], sym, identity, x, None)
            for key, target in task.floor_pairs():
                if key in floor:
                    _store(table, target, n, e_total, pos, slice(0, e_total), floor[key].expand(e_total, -1))
        for key, v in values.items():
            _store(table, key, n, e_total, pos, sl, v)


def _store(table: dict[str, np.ndarray], key: str, n: int, e_total: int, pos: np.ndarray, sl: slice, v: Tensor) -> None:
    """table[key][pos, sl] = v (E_chunk, B), creating the (N, E) array on first use."""
    arr = table.get(key)
    if arr is None:
        arr = table[key] = np.zeros((n, e_total), dtype=_np_dtype(v))
    arr[pos, sl] = v.transpose(0, 1).cpu().numpy()


def _evaluate(caller: ModelCaller, task: Task, xg) -> Tensor:
    """xg (E, B, ...) (or a dict of several inputs (E, B, ...)) -> converted outputs (E, B, ...) with one model call."""
    e, b = lead_shape(xg)
    out = caller(flatten(xg))
    if isinstance(out, Tensor):
        return task.convert(out.reshape(e, b, *out.shape[1:]))
    return task.convert(tuple(o.reshape(e, b, *o.shape[1:]) for o in out))


def _np_dtype(v: Tensor):
    if v.dtype == torch.bool:
        return np.bool_
    if v.dtype in (torch.int64, torch.int32):
        return np.int32
    return np.float32  # relative precision 6e-8 is plenty, and halves the table


def _check_finite(out: Tensor | tuple[Tensor, ...]) -> None:
    if not all(bool(torch.isfinite(o).all()) for o in ((out,) if isinstance(out, Tensor) else out)):
        raise ModelRunError("The model returned NaN or infinite outputs on the unmodified data; check the model and the input range.")


def _widths(widths: tuple[int | None, ...]) -> str:
    shown = [f"(R, {w})" if w is not None else "(R, ...)" for w in widths]
    return shown[0] + " outputs" if len(shown) == 1 else "outputs " + ", ".join(shown)


def _probe_width(caller: ModelCaller, feed) -> None:
    """Before blaming the data for a class count, call the model on another number of rows: a width
    that changes with the batch size raises ModelRunError (see ModelCaller.check_widths)."""
    rows = n_rows(feed)
    part = take_rows(feed, 0, rows - 1) if rows > 1 else (
        {k: torch.cat([v, v]) for k, v in feed.items()} if isinstance(feed, dict) else torch.cat([feed, feed]))
    try:
        out = caller.model(part)
    except Exception:
        return  # the model fails on its own; the sweep reports that where it happens
    caller.check_widths(out, n_rows(part))


def _check_labels(dataset: Dataset, raw: Tensor, task: Task, caller: ModelCaller | None = None, feed=None) -> None:
    """Labels index classes: for classifiers they must lie in 0..K-1 and match the class names
    (after checking, with ``caller``, that K does not follow the batch size)."""
    if task.name != "classify" or not isinstance(raw, Tensor) or raw.ndim != 2:
        return
    n_classes = int(raw.shape[1])
    top = int(dataset.y[dataset.indices].max()) if dataset.y is not None else -1
    mismatch = top >= n_classes or (dataset.classes is not None and len(dataset.classes) != n_classes)
    if mismatch and caller is not None and feed is not None:
        _probe_width(caller, feed)
    if dataset.y is not None:
        if top >= n_classes:
            raise DataError(
                f"Labels in {dataset.path!r} go up to {top}, but the model has {n_classes} outputs; "
                "expected labels in 0..K-1: check the data file or the model output."
            )
    if dataset.classes is not None and len(dataset.classes) != n_classes:
        raise DataError(
            f"{dataset.path!r} names {len(dataset.classes)} classes, but the model has {n_classes} outputs; fix 'classes' in the data file."
        )
