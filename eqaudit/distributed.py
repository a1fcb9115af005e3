"""Data-parallel audits on torch.distributed: ranks sweep whole batches of the one-process plan, rank 0 gathers and writes the one result.

``torchrun --nproc-per-node N -m eqaudit scan ...`` (or ``eqaudit scan --nproc N``, which launches
the same thing on this machine through torch's own launcher) starts N ranks. Each runs the scan:
the same settings, model, data, symmetries and seeded choices (the ``--limit`` subset, the null
pairs and the floor subset are drawn from global sample indices, so every rank draws the same).
For each symmetry the sweep reads the data in the batches of the one-process plan; rank r takes a
contiguous run of whole batches (``batch_share``), so each model call holds the same rows as in one
process, and each per-sample row is computed bit for bit as there. When its share is done, every
rank sends its rows of the per-sample table (and, for the first symmetry, the converted reference
outputs of the null's samples it holds) to rank 0 (``Ranks.gather``), which assembles the full
table and goes on exactly as a single process does: levels, gates, checkpoints, reports. Only rank
0 writes to ``--out``; the others write nothing and print only errors.

The collectives carry CPU numpy arrays, so the process group is gloo on every machine (NCCL would
add nothing); models run on ``cuda:LOCAL_RANK`` when ``--device`` is auto or cuda and GPUs exist.
A rank that fails stops the audit: the launcher (torchrun's agent) sees the exit and stops the
others; a rank waiting in a collective for a rank that left gets an error (RankError) at once, or
after ``TIMEOUT`` at the latest. Under torchrun each failing rank writes its error to the file
torch's elastic agent reads (``TORCHELASTIC_ERROR_FILE``), so torchrun's failure summary names the
rank and its message, and ``--nproc`` turns it into one line: ``rank R failed: ...`` with exit 3.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from .errors import ConfigError, RankError

TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for the other ranks (torch's default for gloo). Ranks meet after each
symmetry; rank 0 also measures --local and --level-at-init alone in between, so this bounds those."""

ERROR_FILE = "TORCHELASTIC_ERROR_FILE"
"""Set by torch's elastic agent for each rank: where a failing rank writes its error as JSON."""


def batch_share(n_batches: int, rank: int, world: int) -> range:
    """The batches (numbers in sweep order) that ``rank`` of ``world`` sweeps: a contiguous run, sizes
    differing by at most one; the ranks' runs, in rank order, are the whole plan."""
    return range(n_batches * rank // world, n_batches * (rank + 1) // world)


@dataclass
class Ranks:
    """This process's place in a launch: its global rank, the world size and its rank on this node."""

    rank: int
    world: int
    local_rank: int

    @property
    def lead(self) -> bool:
        """Rank 0: the one that gathers, decides and writes."""
        return self.rank == 0

    def share(self, n_batches: int) -> range:
        return batch_share(n_batches, self.rank, self.world)

    def tell(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank (the others' ``value`` is ignored)."""
        import torch.distributed as dist

        box = [value]
        try:
            dist.broadcast_object_list(box, src=0)
        except RuntimeError as exc:
            raise _lost(self, "receiving rank 0's plan", exc) from exc
        return box[0]

    def exchange(self, part: dict) -> list[dict] | None:
        """Every rank's ``part``, in rank order, on rank 0 (torch.distributed.gather_object); None elsewhere."""
        import torch.distributed as dist

        parts = [None] * self.world if self.lead else None
        try:
            dist.gather_object(part, parts, dst=0)
        except RuntimeError as exc:
            raise _lost(self, "gathering the per-sample tables", exc) from exc
        return parts

    def reduce(self, reducer):
        """A task's per-symmetry accumulator (eqaudit.tasks.base.Task.accumulator) summed over the ranks on
        rank 0, in rank order (``merge``); None elsewhere. Sums of floats added in another grouping than one
        process adds them, so they agree with it to rounding, not bit for bit."""
        parts = self.exchange(reducer)
        if parts is None:
            return None
        total = parts[0]
        for other in parts[1:]:
            total.merge(other)
        return total

    def gather(self, table: dict[str, np.ndarray], mine: np.ndarray, n: int, kept, kept_rows: np.ndarray, m: int,
               cost: tuple[float, int]):
        """Hand this rank's rows ``mine`` of ``table`` (metric -> (N, E)), its null references ``kept``
        (rows ``kept_rows`` of the (M, ...) tensor, or None) and its ``cost`` (model seconds, model rows)
        to rank 0. Rank 0 gets (the full table, the full kept tensor or None, the ranks' summed model
        seconds and rows); the others get (None, None, None)."""
        part = {
            "rank": self.rank,
            "rows": {k: np.ascontiguousarray(v[mine]) for k, v in table.items() if _per_sample(v, n)},
            "whole": {k: v for k, v in table.items() if not _per_sample(v, n)},
            "order": list(table),
            "mine": mine,
            "kept": (kept_rows, kept[kept_rows] if kept is not None and len(kept_rows) else None),
            "cost": cost,
        }
        parts = self.exchange(part)
        if parts is None:
            return None, None, None
        return merge_tables(parts, n), merge_kept(parts, kept, m), (sum(p["cost"][0] for p in parts), sum(p["cost"][1] for p in parts))


def _per_sample(v: np.ndarray, n: int) -> bool:
    return isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[0] == n


def merge_tables(parts: list[dict], n: int) -> dict[str, np.ndarray]:
    """The ranks' parts (in rank order) as one table: keys in order of first appearance (the order one
    process creates them in), each (N, E) array filled from the rows every rank measured; a float key
    a rank never created (a floor measured only on the floor subset) stays NaN there, as in one process."""
    out: dict[str, np.ndarray] = {}
    for p in parts:
        for key in p["order"]:
            if key in out:
                continue
            if key in p["whole"]:
                out[key] = p["whole"][key]
            else:
                v = p["rows"][key]
                fill = np.nan if np.issubdtype(v.dtype, np.floating) else 0
                out[key] = np.full((n, *v.shape[1:]), fill, dtype=v.dtype)
    for p in parts:
        for key, v in p["rows"].items():
            out[key][p["mine"]] = v
    return out


def merge_kept(parts: list[dict], own, m: int):
    """The null's (M, ...) reference outputs assembled from the rows of them each rank holds (``own``:
    rank 0's tensor, whose other rows are filled here; None when no rank holds any)."""
    import torch

    full = own
    for p in parts:
        rows, values = p["kept"]
        if values is None:
            continue
        if full is None:
            full = torch.empty((m, *values.shape[1:]), dtype=values.dtype)
        full[torch.from_numpy(np.asarray(rows, dtype=np.int64))] = values
    return full


def _lost(r: Ranks, doing: str, exc: BaseException) -> RankError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RankError(f"Rank {r.rank} lost the other ranks while {doing} ({first}): another rank failed or was killed; "
                     "its own error names the cause, do fix that and run the audit again.", lost=True)


_RANKS: Ranks | None = None


def launched() -> bool:
    """Was this process started as one of several ranks (torchrun sets WORLD_SIZE)?"""
    return _world() > 1


def _world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def env_rank() -> int:
    """This process's global rank as the launcher set it (0 outside a launch)."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def ranks() -> Ranks | None:
    """This process's Ranks when it is one of several (the gloo process group is joined on the first
    call, from torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), else None."""
    global _RANKS
    if _RANKS is not None or not launched():
        return _RANKS
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("This torch build has no torch.distributed; run eqaudit as one process (without torchrun or --nproc).")
    if not dist.is_initialized():
        try:
            dist.init_process_group("gloo", timeout=TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RankError(f"Rank {os.environ.get('RANK', '?')} could not join the other ranks ({first}); "
                            "expected a launch by torchrun (or eqaudit scan --nproc N), do check its rendezvous flags.") from exc
    _RANKS = Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0") or 0))
    return _RANKS


def leave() -> None:
    """Leave the process group once this rank's audit is done (called on success): a gloo group torn
    down during interpreter shutdown can abort a finished rank (std::terminate, exit -6) and so fail
    the launch."""
    import torch.distributed as dist

    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - leaving is best effort; the audit's outcome is already decided
        pass


def rank_device(spec: str, r: Ranks | None):
    """The device this rank runs the model on: ``--device`` ``spec`` resolved by
    eqaudit.models.select_device with this rank's LOCAL_RANK (``auto`` and ``cuda`` become
    cuda:LOCAL_RANK), made the current CUDA device of this process."""
    import torch

    from .models import select_device

    device = select_device(spec, r.local_rank if r is not None else None)
    if r is not None and device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def record_error(message: str, code: int, *, primary: bool) -> bool:
    """Write this rank's error where torch's elastic agent reads it (True when launched by it).
    ``primary``: this rank's own failure; False: it stopped because another rank failed (its timestamp
    is one second later, so torchrun's first-failure rule names the rank that caused it)."""
    path = os.environ.get(ERROR_FILE)
    if not path:
        return False
    now = time.time()
    rank = env_rank()
    data = {"message": message, "timestamp": int(now) + (0 if primary else 1),
            "eqaudit": {"rank": rank, "code": code, "primary": primary, "time": now, "message": message}}
    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
    except OSError:
        return False
    return True


def launch(nproc: int, argv: list[str], *, verbose: bool = False) -> tuple[int, str | None]:
    """Run ``python -m eqaudit ARGV`` as ``nproc`` ranks on this machine through torch's own launcher
    (what ``torchrun --standalone --nproc-per-node NPROC -m eqaudit ARGV`` does). Returns the exit code
    (rank 0's verdict, or 3 when another rank failed first) and the line to print (None: rank 0 said it)."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, parse_args

    if not verbose:  # the launcher's own warnings and failure reports: the one line returned says what matters
        for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")] + ["torch.distributed"]:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = parse_args(["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0", "-m", "eqaudit"])
    args.training_script_args = list(argv)  # not parsed: argparse would take our --nproc for its --nproc-per-node
    args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())  # as --standalone does
    config, cmd, cmd_args = config_from_args(args)
    try:
        elastic_launch(config, cmd)(*cmd_args)
    except SignalException as exc:
        return 128 + int(exc.sigval), None
    except ChildFailedError as exc:
        return verdict(exc.failures)
    return 0, None


def verdict(failures: dict[int, Any]) -> tuple[int, str | None]:
    """(exit code, line) of a launch whose ranks ``failures`` (rank -> torch's ProcessFailure) exited
    non-zero. A rank's own failure (not one caused by another rank leaving) counts: rank 0's error or
    verdict first (its code; it printed its message), else the earliest, as exit 3 naming the rank (2
    when it was a usage error)."""
    import signal

    rows = []
    for rank, f in failures.items():
        data = (getattr(f, "error_file_data", None) or {}).get("eqaudit") or {}
        if data:
            primary, when, message = bool(data.get("primary")), float(data.get("time", f.timestamp)), str(data.get("message"))
        elif f.exitcode < 0:
            sig = signal.Signals(-f.exitcode).name if -f.exitcode in signal.Signals._value2member_map_ else f"signal {-f.exitcode}"
            primary, when, message = sig != "SIGTERM", float(f.timestamp), f"killed by {sig}"
        else:
            primary, when, message = True, float(f.timestamp), f"exit code {f.exitcode}"
        said = rank == 0 and bool(data)  # rank 0 printed its own error: every rank failing alike is said once
        code = int(data.get("code", f.exitcode)) if data else f.exitcode  # its own code, even if stopped while exiting
        rows.append((not primary, not said, when, rank, code, message))
    rows.sort()
    lost, _, _, rank, code, message = rows[0]
    if rank == 0 and code > 0 and (not lost or code > 128):  # its verdict, its error or its interruption: it said so
        return code, None
    return (2 if code == 2 else 3), f"rank {rank} failed: {message}"  # a usage error stays one (e.g. more ranks than GPUs)

