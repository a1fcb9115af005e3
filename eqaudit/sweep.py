"""The orbit engine: for each batch, build g.x for a chunk of elements in one op, call the model once, reduce at once.

Loop structure (no per-sample or per-element Python loops): for each symmetry, data is read in
batches of B = max(1, batch_size // E) samples, so each model call carries about ``batch_size`` rows
(E elements x B samples). A producer (a thread unless ``prefetch`` is off) reads the next batch and
builds its orbit chunks while the model runs on the current one; the numbers do not depend on it.
Per-sample metrics go straight into (N, E) arrays; raw outputs are never kept, except the converted
reference outputs of a seeded subset (at most NULL_SAMPLES) from which the null is measured.
How outputs are compared is the Task's business (eqaudit.tasks); this module only schedules.

The reference f(x) and the floor. For an exact action (a permutation or sign change of the input) with
the identity reference, f(x) is *folded* into the orbit call: the identity element's input is x bit for
bit, so its output row is f(x), and no separate reference call is made. The floor of such an action
is the pipeline's float noise (batch composition, kernels that depend on the batch size): it is
measured on a seeded subset of ``floor_samples`` samples (``floor_subset``, table key ``floor_rows``),
whose f(x) is also computed in a separate call and compared with the identity row; that comparison
is what the identity column holds for those rows (elsewhere the identity column is 0 by
construction, and summaries read the floor from the subset only). Resampled actions whose identity
is computed exactly (rotate, scale: an integer index; checked by ``_identity_is_exact``) are folded
the same way, others keep a separate f(x) call per batch; their floor is the round trip
T_{-t}(T_t x) against f(x), evaluated for the subset only, in the same model call as its chunk
(table ``floor``: NaN outside the subset).
Other references with exact actions keep the separate call and the identity-element floor on every
sample.

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

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .data import Dataset
from .errors import DataError, EqauditError, ModelRunError
from .inputs import describe, flatten, lead_shape, orbit, point_mask
from .models.batching import is_oom as _is_oom, n_rows, take_rows
from .models.precision import full_precision, reduced as _reduced
from .symmetries import Symmetry
from .tasks import Task
from .tasks.base import ConsensusAccumulator

Progress = Callable[[int, int, str], None]  # (done, total, what)


class ModelCaller:
    """Calls the model, counts rows and time, and on out-of-memory halves the rows per call and retries."""

    def __init__(self, model, device: torch.device):
        self.model = model
        self.device = device
        self.threads: int | None = None  # torch threads for the model call (the sweep may run its own work on fewer)
        self.widths: tuple[int | None, ...] | None = None  # K of every (R, K) output of the first call
        self.first_rows = 0
        self.max_rows: int | None = None
        self.evals = 0
        self.seconds = 0.0

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
                with _threads(self.threads):
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
            self.check_widths(out, n_rows(part))
            self.evals += n_rows(part)
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


SMALL_OUTPUT = 1 << 18
"""Converted outputs of at most this many numbers per model call are compared on one CPU thread: the
metric ops on them are too small to gain from threads, and waking idle workers costs more than the
op itself (milliseconds per op on a loaded machine). The model itself always runs on every thread."""


@contextlib.contextmanager
def _threads(n: int | None):
    """Run the block on ``n`` torch CPU threads (None: as they are)."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


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

FLOOR_SAMPLES = 64
"""Default size of the seeded subset on which the floor is measured (``floor_samples``; 0: every sample)."""


def floor_subset(n: int, seed: int, m: int = FLOOR_SAMPLES) -> np.ndarray:
    """Sorted selection positions of the seeded floor subset: ``min(n, m)`` of them (all when m is 0 or >= n)."""
    if m <= 0 or m >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed + 15485863)
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


@dataclass
class _Batch:
    """One batch of samples on its way through the sweep: what the prefetching producer built for it."""

    pos: np.ndarray  # (B,) selection positions
    x: Tensor  # (B, ...) the sweep's x
    y: Tensor | None
    feed: object  # x, or a dict of the model's inputs
    sub: np.ndarray  # indices into the batch of the floor subset's samples
    ref: Tensor | None = None  # converted f(x) (B, ...)
    sep: Tensor | None = None  # converted f(x) from a separate call, for the floor subset of folded batches
    mask: Tensor | None = None  # (B, P) bool point mask of padded systems (the feed's ``mask``), passed to every compare

    def sub_mask(self) -> Tensor | None:
        """The point mask of the floor subset's rows (len(sub), P), or None."""
        return None if self.mask is None else self.mask.index_select(0, torch.as_tensor(self.sub, device=self.mask.device))


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
    reduced: object | None = None  # the task's accumulator (Task.accumulator), fed every chunk, not yet finished


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
    floor_samples: int = FLOOR_SAMPLES,
    prefetch: bool = True,
    stop: Callable[[], None] | None = None,
    ranks=None,
) -> Iterator[SymmetryTable]:
    """Measure every symmetry on every selected sample, yielding each symmetry's table as it finishes
    (outside inference mode), so a caller keeps what finished whatever stops the sweep later.

    ``reference`` (identity, label or consensus) is what each orbit output is compared against (after
    the symmetry's output action): f(x), the label, or the orbit's consensus (two passes over each
    batch's chunks: the first sums the outputs mapped back to the canonical frame and counts class
    votes, the second compares). The floor is always measured against f(x), on the seeded subset of
    ``floor_samples`` samples (0: all). ``prefetch`` builds the next chunk's orbit in a thread while
    the model runs (same numbers either way: the point mask of padded systems travels with its batch).
    The null is measured from the first symmetry's reference outputs.
    ``stop`` is called between batches; it raises to stop the sweep (e.g. eqaudit.errors.Interrupted
    after SIGTERM). ``ranks`` (eqaudit.distributed.Ranks, several processes): this process sweeps its
    share of whole batches and hands its rows to rank 0, which yields the full tables; the other ranks
    yield tables of None."""
    task.check_reference(reference, dataset.has_labels, dataset.has_targets, dataset.targets_key)
    use_targets = reference == "label" and task.supports_targets
    device = model.device
    caller = ModelCaller(model, device)
    n = len(dataset)
    total = n * len(symmetries)
    if ranks is not None:  # the progress this rank reports counts its own share
        total = sum(len(_share_rows(n, max(1, batch_size // s.n_elements), ranks)) for s in symmetries)
    done = 0
    null_a, null_b = null_pairs(n, seed)
    slot = np.full(n, -1, dtype=np.int64)  # selection position -> row of kept_refs (-1: not kept)
    slot[null_a] = np.arange(len(null_a))
    rows = floor_subset(n, seed, floor_samples)
    in_floor = np.zeros(n, dtype=bool)
    in_floor[rows] = True
    fslot = np.full(n, -1, dtype=np.int64)
    fslot[rows] = np.arange(len(rows))
    state = {"kind": None, "kept": None}
    binding = dataset.binding
    act_on = binding.moved if binding is not None else None
    null = None
    t0, m0, e0 = time.perf_counter(), caller.seconds, caller.evals  # the setup call counts with the first symmetry
    reduced = _reduced(model) is not None  # --dtype: the floor subset's f(x) runs in float32 (see eqaudit.models.precision)
    with torch.inference_mode(), full_precision(model):
        state["kind"], sep_ref = _setup(caller, task, dataset, rows, device, batch_size, output_kind) if n else ("raw", None)
    if ranks is not None and not ranks.lead:
        m0, e0 = caller.seconds, caller.evals  # every rank repeats the setup call; rank 0's alone is counted
    small = device.type == "cpu" and sep_ref is not None and sep_ref[:1].numel() * batch_size <= SMALL_OUTPUT
    caller.threads = torch.get_num_threads()
    for si, sym in enumerate(symmetries):
        if si > 0:
            t0, m0, e0 = time.perf_counter(), caller.seconds, caller.evals
        with torch.inference_mode(), _threads(1 if small else None):
            elements = sym.elements.to(device)
            e_total = sym.n_elements
            per_batch = max(1, batch_size // e_total)
            e_chunk = min(e_total, max(1, batch_size // per_batch))
            fold = reference == "identity" and (sym.exact or _identity_is_exact(sym, dataset, rows, device))
            table: dict[str, np.ndarray] = {}
            reducer = task.accumulator(sym, n, seed, device)
            if fold or not sym.exact or reduced:
                table["floor_rows"] = rows.copy()
            share = ranks.share(-(-n // per_batch)) if ranks is not None else None
            stream = _produce(dataset, sym, elements, per_batch, e_chunk, device, act_on, in_floor,
                              fold, reference != "consensus", share)
            with contextlib.closing(_prefetched(stream) if prefetch else stream) as items:
                for b, chunks in _group(items):
                    if stop is not None:
                        stop()
                    ref = _reference(caller, task, b, fold, sep_ref, fslot, reduced)
                    if si == 0:
                        _keep_null_refs(state, b, ref, slot, len(null_a))
                    targets = dataset.targets_at(b.pos, device) if use_targets else None
                    _sweep_batch(caller, task, sym, elements, table, n, b, chunks, e_chunk, reference, targets, act_on, fold,
                                 null_state=(state, slot, len(null_a)) if si == 0 else None, reducer=reducer, reduced=reduced)
                    done += len(b.pos)
                    if progress is not None:
                        progress(done, total, sym.spec)
            evals = caller.evals - e0
            if ranks is not None:  # rank 0 gets every rank's rows (and model time and rows); the others None
                mine = _share_rows(n, per_batch, ranks)
                held = slot[mine][slot[mine] >= 0] if si == 0 else np.zeros(0, dtype=np.int64)
                table, state["kept"], cost = ranks.gather(table, mine, n, state["kept"] if si == 0 else None, held,
                                                          len(null_a), (caller.seconds - m0, evals))
                if cost is not None:
                    m0, evals = caller.seconds - cost[0], cost[1]
                if reducer is not None:
                    reducer = ranks.reduce(reducer)
            if si == 0 and len(null_a) and table is not None:
                kept = state["kept"]
                ra, rb = kept[torch.from_numpy(slot[null_a])], kept[torch.from_numpy(slot[null_b])]
                null = task.null(ra, rb).cpu().numpy().astype(np.float64)
        yield SymmetryTable(si, table, state["kind"] or "raw", null, time.perf_counter() - t0, caller.seconds - m0, evals, reducer)


def _share_rows(n: int, per_batch: int, ranks) -> np.ndarray:
    """Selection positions of the batches of ``per_batch`` samples that ``ranks`` sweeps (its share)."""
    share = ranks.share(-(-n // per_batch))
    return np.arange(min(n, share.start * per_batch), min(n, share.stop * per_batch))


def _identity_is_exact(sym: Symmetry, dataset: Dataset, rows: np.ndarray, device) -> bool:
    """Does the identity element of a resampled symmetry return its input bit for bit (rotate and scale
    compute it by an integer index)? Checked on a few samples of the floor subset and on seeded random
    inputs of the same shape; then f(x) can be folded into the orbit call like for exact actions."""
    if dataset.binding is not None or not len(rows):
        return False
    identity = sym.elements[sym.identity_index : sym.identity_index + 1].to(device)
    probe = dataset.take(rows[:4], device)
    noise = torch.rand(probe.shape, generator=torch.Generator().manual_seed(0)).to(device)
    return all(torch.equal(sym.act(p, identity)[0], p) for p in (probe, noise))


def _produce(dataset: Dataset, sym: Symmetry, elements: Tensor, per_batch: int, e_chunk: int, device, act_on, in_floor: np.ndarray,
             fold: bool, build: bool, share: range | None = None):
    """Yield (batch, chunk slice, orbit inputs (E_chunk, B, ...) or None, round-trip inputs of the floor
    subset or None) in sweep order; the chunk holding the identity comes first when the reference is
    folded into the orbit. ``build`` False leaves the orbits to the consumer (consensus: two passes).
    ``share``: only these batches (a rank's, see eqaudit.distributed)."""
    chunks = _chunk_plan(sym, e_chunk)
    if fold:
        chunks.sort(key=lambda sl: not _holds(sl, sym.identity_index))
    for pos, x, y in dataset.batches(per_batch, device, share):
        feed = dataset.feed(pos, x, device)
        b = _Batch(pos, x, y, feed, np.nonzero(in_floor[pos])[0], mask=point_mask(feed))
        if not build:
            yield b, None, None, None
            continue
        part = None
        if not sym.exact and len(b.sub):
            part = _select(b.feed, b.sub, x.device)
        for sl in chunks:
            xg = orbit(sym, b.feed, _pick(elements, sl), act_on)
            back = orbit(sym, part, _pick(elements, sl), act_on, round_trip=True) if part is not None else None
            yield b, sl, xg, back


def _chunk_slices(e_total: int, e_chunk: int) -> list[slice]:
    """The element chunks of one orbit, in sweep order: [0, e_chunk), [e_chunk, 2 e_chunk), ..."""
    return [slice(s, min(s + e_chunk, e_total)) for s in range(0, e_total, e_chunk)]


def _chunk_plan(sym: Symmetry, e_chunk: int) -> list:
    """The element chunks of one orbit, in sweep order, a deterministic list: ``_chunk_slices`` when every
    element gives inputs of one shape; otherwise (quarter turns of non-square images, ``Symmetry.transposes``)
    the elements of the identity's shape, then the others, each group cut into chunks of at most
    ``e_chunk`` (a slice where contiguous, else sorted indices), so one model call holds one input shape.
    The tables keep the elements' own order either way."""
    e_total = sym.n_elements
    turned = sym.transposes(sym.elements).cpu().numpy()
    if not turned.any():
        return _chunk_slices(e_total, e_chunk)
    plan: list = []
    for group in (turned[sym.identity_index], not turned[sym.identity_index]):
        idx = np.nonzero(turned == group)[0].astype(np.int64)
        for s in range(0, len(idx), e_chunk):
            part = idx[s : s + e_chunk]
            plan.append(slice(int(part[0]), int(part[-1]) + 1) if int(part[-1] - part[0]) + 1 == len(part) else part)
    return plan


def _holds(sl, i: int) -> bool:
    """Does chunk ``sl`` hold element ``i``?"""
    return sl.start <= i < sl.stop if isinstance(sl, slice) else bool((sl == i).any())


def _at(sl, i: int) -> int:
    """The position of element ``i`` inside chunk ``sl``."""
    return i - sl.start if isinstance(sl, slice) else int(np.nonzero(sl == i)[0][0])


def _pick(elements: Tensor, sl) -> Tensor:
    """The rows of chunk ``sl`` of ``elements`` (E, D)."""
    return elements[sl] if isinstance(sl, slice) else elements[torch.as_tensor(sl, device=elements.device)]


def _columns(pos: np.ndarray, sl):
    """numpy index of table rows ``pos`` and the columns of chunk ``sl``."""
    return (pos, sl) if isinstance(sl, slice) else np.ix_(pos, sl)


def _group(items):
    """Group the produced stream by batch: yield (batch, [(slice, orbit, round trip), ...]) lazily."""
    current, chunks = None, []
    for b, sl, xg, back in items:
        if b is not current:
            if current is not None:
                yield current, _drain(chunks)
            current, chunks = b, []
        chunks.append((sl, xg, back))
    if current is not None:
        yield current, _drain(chunks)


def _drain(chunks: list):
    """The chunks of one batch, released as they are used (so only the prefetched ones stay in memory)."""
    while chunks:
        yield chunks.pop(0)


_DONE = object()


def _prefetched(items, depth: int = 2):
    """Run the generator ``items`` in a thread, ``depth`` items ahead of the consumer (orbit building
    overlaps the model call); exceptions travel to the consumer. Closing stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            with torch.inference_mode():
                for item in items:
                    if not put(item):
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_Failed(exc))
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="eqaudit-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass
class _Failed:
    exc: BaseException


def _select(batch, idx: np.ndarray, device):
    """Rows ``idx`` of a tensor or of every tensor of a dict."""
    index = torch.as_tensor(idx, device=device)
    if isinstance(batch, dict):
        return {k: v.index_select(0, index.to(v.device)) for k, v in batch.items()}
    return batch.index_select(0, index)


def _setup(caller, task: Task, dataset: Dataset, rows: np.ndarray, device, batch_size: int, output_kind: str) -> tuple[str, Tensor]:
    """One separate f(x) call on the floor subset (in slices of ``batch_size`` rows): its raw output is
    checked and sets the task up; returns (output kind, converted f(x) of the subset (M, ...))."""
    parts, kind = [], None
    for start in range(0, len(rows), batch_size):
        pos = rows[start : start + batch_size]
        x = dataset.take(pos, device)
        raw = caller(dataset.feed(pos, x, device))
        if kind is None:
            task.check_output(raw, x)
            _check_finite(raw)
            kind = task.setup(raw, output_kind)
            _check_labels(dataset, raw, task, caller, dataset.feed(pos, x, device))
        parts.append(task.convert(raw))
    return kind, parts[0] if len(parts) == 1 else torch.cat(parts)


def _reference(caller, task: Task, b: _Batch, fold: bool, sep_ref: Tensor, fslot: np.ndarray, reduced: bool = False) -> Tensor | None:
    """Folded batches: the floor subset's separate f(x) (``b.sep``); others: the separate f(x) call (``b.ref``),
    and with a reduced dtype also ``b.sep`` (the subset's float32 f(x), which their floors compare with)."""
    if (fold or reduced) and len(b.sub):
        b.sep = sep_ref[torch.as_tensor(fslot[b.pos[b.sub]], device=sep_ref.device)]
    if fold:
        return None
    b.ref = task.convert(caller(b.feed))
    return b.ref


def _keep_null_refs(state: dict, b: _Batch, ref: Tensor | None, slot: np.ndarray, m: int) -> None:
    """Copy the converted f(x) of the null's samples in this batch (first symmetry only)."""
    if ref is None:
        return  # folded: kept once the identity chunk ran (see _sweep_batch)
    rows = slot[b.pos]
    if not (rows >= 0).any():
        return
    if state["kept"] is None:
        state["kept"] = torch.empty((m, *ref.shape[1:]), dtype=ref.dtype)
    hit = torch.from_numpy(rows >= 0)
    state["kept"][torch.from_numpy(rows[rows >= 0])] = ref[hit.to(ref.device)].cpu()


def _sweep_batch(caller, task: Task, sym: Symmetry, elements: Tensor, table: dict[str, np.ndarray], n: int, b: _Batch, chunks,
                 e_chunk: int, reference: str, targets: Tensor | None, act_on: list[str] | None, fold: bool,
                 null_state: tuple | None = None, reducer=None, reduced: bool = False) -> None:
    """All elements of ``sym`` on one batch: fills table[key][pos, :] for every metric.

    ``chunks`` yields (slice, orbit inputs, round-trip inputs of the floor subset) per chunk of
    elements, each going through the model in one call. Folded (identity reference, bit-exact identity action):
    f(x) is the identity chunk's output row, and on the floor subset the identity column compares it
    with the separate f(x) (``b.sep``): the pipeline's float noise. With the consensus reference a
    first pass over the chunks builds the reference. ``reducer`` (the task's accumulator, or None) is fed every chunk.
    ``reduced`` (--dtype): every floor compares with the float32 f(x) of the floor subset (``b.sep``), so it
    includes the dtype's rounding."""
    x, y, feed, pos = b.x, b.y, b.feed, b.pos
    identity = elements[sym.identity_index : sym.identity_index + 1]
    e_total = sym.n_elements
    ref_out = b.ref
    ref, ref_class, kept = ref_out, None, None
    if reference == "label":
        ref, ref_class = task.label_reference(y, ref_out, targets)
    elif reference == "consensus":
        slices = _chunk_plan(sym, e_chunk)
        acc = ConsensusAccumulator(task)
        keep = e_total * ref_out.numel() * 8 <= KEEP_BYTES
        kept = [] if keep else None
        for sl in slices:
            out = _evaluate(caller, task, orbit(sym, feed, _pick(elements, sl), act_on))
            acc.add(out, sym, _pick(elements, sl), x, mask=b.mask)
            if keep:
                kept.append(out)
        ref, ref_class = acc.result(ref_out)
        part = _select(feed, b.sub, x.device) if not sym.exact and len(b.sub) else None
        chunks = [(sl, None, orbit(sym, part, _pick(elements, sl), act_on, round_trip=True) if part is not None else None)
                  for sl in slices]
    for ci, (sl, xg, back) in enumerate(chunks):
        el = _pick(elements, sl)
        fb = None
        if kept is not None:
            out = kept[ci]
        elif xg is not None and back is not None:
            out, fb = _evaluate_many(caller, task, [xg, back])  # one call for the chunk and its round trips
        else:
            out = _evaluate(caller, task, xg if xg is not None else orbit(sym, feed, el, act_on))
        has_identity = _holds(sl, sym.identity_index)
        i = _at(sl, sym.identity_index) if has_identity else -1
        if fold and ref is None:  # the identity chunk comes first
            ref = ref_out = b.ref = out[i]
            if null_state is not None:
                state, slot, m = null_state
                _keep_null_refs(state, b, ref, slot, m)
        values = task.compare(ref, out, sym, el, x, y, ref_class=ref_class, mask=b.mask)
        if fold and has_identity and b.sep is not None and len(b.sub):
            sub = torch.as_tensor(b.sub, device=out.device)
            noise = task.compare(b.sep, out[i : i + 1].index_select(1, sub), sym, identity, x.index_select(0, sub.to(x.device)), None,
                                 mask=b.sub_mask())
            for key, v in noise.items():
                if key in values:
                    values[key] = values[key].clone()
                    values[key][i].index_copy_(0, sub.to(values[key].device), v[0].to(values[key].dtype))
        if back is not None:
            if fb is None:
                fb = _evaluate(caller, task, back)
            sub = torch.as_tensor(b.sub, device=ref_out.device)
            base = b.sep if reduced else ref_out.index_select(0, sub)
            floor = task.compare(base, fb, sym, identity.expand(fb.shape[0], -1),
                                 x.index_select(0, sub.to(x.device)), None, mask=b.sub_mask())
            for key, target in task.floor_pairs():
                if key in floor:
                    _store_floor(table, target, n, e_total, pos[b.sub], sl, floor[key])
        elif reference != "identity" and sym.exact and has_identity and reduced:
            if len(b.sub):  # as below, on the floor subset against its float32 f(x)
                sub = torch.as_tensor(b.sub, device=out.device)
                floor = task.compare(b.sep, out[i : i + 1].index_select(1, sub), sym, identity,
                                     x.index_select(0, sub.to(x.device)), None)
                for key, target in task.floor_pairs():
                    if key in floor:
                        _store_floor(table, target, n, e_total, pos[b.sub], slice(0, e_total), floor[key].expand(e_total, -1))
        elif reference != "identity" and sym.exact and has_identity:
            # exact action, other reference: the floor is the identity element's output against f(x)
            floor = task.compare(ref_out, out[i : i + 1], sym, identity, x, None, mask=b.mask)
            for key, target in task.floor_pairs():
                if key in floor:
                    _store(table, target, n, e_total, pos, slice(0, e_total), floor[key].expand(e_total, -1))
        for key, v in values.items():
            _store(table, key, n, e_total, pos, sl, v)
        if reducer is not None:
            reducer.add(pos, sl, ref, out)


def _store_floor(table: dict[str, np.ndarray], key: str, n: int, e_total: int, pos: np.ndarray, sl: slice, v: Tensor) -> None:
    """table[key][pos, sl] = v (E_chunk, b) for the floor subset's rows; the others stay NaN (not measured)."""
    arr = table.get(key)
    if arr is None:
        arr = table[key] = np.full((n, e_total), np.nan, dtype=np.float32)
    arr[_columns(pos, sl)] = v.transpose(0, 1).to(torch.float32).cpu().numpy()


def _store(table: dict[str, np.ndarray], key: str, n: int, e_total: int, pos: np.ndarray, sl: slice, v: Tensor) -> None:
    """table[key][pos, sl] = v (E_chunk, B), creating the (N, E) array on first use."""
    arr = table.get(key)
    if arr is None:
        arr = table[key] = np.zeros((n, e_total), dtype=_np_dtype(v))
    arr[_columns(pos, sl)] = v.transpose(0, 1).cpu().numpy()


def _evaluate(caller: ModelCaller, task: Task, xg) -> Tensor:
    """xg (E, B, ...) (or a dict of several inputs (E, B, ...)) -> converted outputs (E, B, ...) with one model call."""
    e, b = lead_shape(xg)
    out = caller(flatten(xg))
    if isinstance(out, Tensor):
        return task.convert(out.reshape(e, b, *out.shape[1:]))
    return task.convert(tuple(o.reshape(e, b, *o.shape[1:]) for o in out))


def _evaluate_many(caller: ModelCaller, task: Task, parts: list) -> list[Tensor]:
    """Several orbit batches (E_i, B_i, ...) (tensors or dicts) through one model call -> the converted
    outputs (E_i, B_i, ...) of each: fewer, larger calls (small calls cost more per row)."""
    shapes = [lead_shape(p) for p in parts]
    flat = [flatten(p) for p in parts]
    if isinstance(flat[0], dict):
        xs = {k: torch.cat([f[k] for f in flat]) for k in flat[0]}
    else:
        xs = torch.cat(flat)
    out = caller(xs)
    res, start = [], 0
    for e, b in shapes:
        stop = start + e * b
        if isinstance(out, Tensor):
            res.append(task.convert(out[start:stop].reshape(e, b, *out.shape[1:])))
        else:
            res.append(task.convert(tuple(o[start:stop].reshape(e, b, *o.shape[1:]) for o in out)))
        start = stop
    return res


def _np_dtype(v: Tensor):
    if v.dtype == torch.bool:
        return np.bool_
    if v.dtype in (torch.int64, torch.int32):
        return np.int32
    return np.float32  # relative precision 6e-8 is plenty, and halves the table


def _check_finite(out: Tensor | tuple[Tensor, ...]) -> None:
    if not all(bool(torch.isfinite(o).all()) for o in ((out,) if isinstance(out, Tensor) else out)):
        raise ModelRunError("The model returned NaN or infinite outputs on the unmodified data; check the model and the input range.")


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
