"""Benchmark: peak resident memory (RSS) of a scan against the number of samples, for a classifier and a vector-field model under d4.

Run from the repository root (plain Python, not a test; it takes minutes on a small machine):

    python benchmarks/bench_memory.py                     # N = 5000 and 40000, both models
    python benchmarks/bench_memory.py --n 2000 8000       # other sizes
    python benchmarks/bench_memory.py --models classifier
    python benchmarks/bench_memory.py --sample-models     # the sample digits CNN and PIV flow net (slower)

Each (model, N) runs ``eqaudit scan`` in a fresh child process (so torch's and onnxruntime's own
allocations and the memory-mapped data pages count, which tracemalloc does not see), on a ``.npy``
file of N samples written beforehand (the sample test sets tiled, memory-mapped by the scan), with
``--symmetry d4 --format json,orbits``; the child reports its peak RSS: ``VmHWM`` of /proc/self/status,
the high-water mark of its own memory map (``ru_maxrss`` is not used on Linux: after fork and exec it
also holds the parent's peak, here the process that wrote the data file). Printed per
row: N, peak RSS, RSS after loading the model and data (before the sweep), the orbit table on disk,
and the peak's ratio to the smallest N's (goal: <= 1.3 for 40000 vs 5000).

Models: by default two tiny convolutional nets defined here (``TinyClassifier``: 1x32x32 digits -> 10
logits; ``TinyFlow``: 2x32x32 two-frame particle images -> a 2x32x32 vector field), so that N = 40000
runs in minutes on a small CPU and the fixed part of the RSS (torch, the model) is as small as it gets,
which makes the ratio a strict test; ``--sample-models`` uses the sample digits CNN and PIV flow net.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
MODELS = {
    "classifier": ("digits_cnn.pt", "digits_test.npz", "classify", "digits_models:PlainCNN"),
    "vector-field": ("piv_flow.pt", "piv_test.npz", "vector-field", "domain_models:FlowNet"),
}
TINY = {"classifier": "TinyClassifier", "vector-field": "TinyFlow"}


def _tiny_modules():
    from torch import nn

    class TinyClassifier(nn.Sequential):
        def __init__(self) -> None:
            super().__init__(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4), nn.Conv2d(8, 8, 3, padding=1),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    class TinyFlow(nn.Sequential):
        def __init__(self) -> None:
            super().__init__(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))

    return {"TinyClassifier": TinyClassifier, "TinyFlow": TinyFlow}


def __getattr__(name: str):  # the model factories: bench_memory.py:TinyClassifier, bench_memory.py:TinyFlow
    modules = _tiny_modules()
    if name in modules:
        return modules[name]
    raise AttributeError(name)

PEAK = r"""
def peak_mib():
    try:
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

CHILD = PEAK + r"""
import json, sys, time
sys.path.insert(0, {root!r})
from eqaudit.api import scan
from eqaudit.config import resolve
from eqaudit.data import load_dataset
t0 = time.perf_counter()
ds = load_dataset({data!r})
ds.take(ds.indices[:1])
res = scan({model!r}, data={data!r}, symmetry=["d4"], task={task!r}, model_factory={factory!r}, out={out!r},
           device="cpu", format=["json", "orbits"], cache=False, batch_size={batch})
print(json.dumps({{"peak_mib": peak_mib(), "seconds": time.perf_counter() - t0, "level": res.symmetries[0].summary.get("level")}}))
"""

BASE = PEAK + r"""
import json, sys
sys.path.insert(0, {root!r})
import torch
from eqaudit.api import _load
from eqaudit.config import resolve
from eqaudit.data import load_dataset
from pathlib import Path
settings = resolve({{"data": {data!r}, "model_factory": {factory!r}, "task": {task!r}, "device": "cpu"}}, models=[Path({model!r})])
_load(Path({model!r}), settings, torch.device("cpu"), [])
ds = load_dataset({data!r})
ds.take(ds.indices[:1])
print(json.dumps({{"base_mib": peak_mib()}}))
"""


def write_npy(source: Path, n: int, path: Path) -> None:
    """N samples: the sample test set's inputs tiled, written through a memory map (never all in memory)."""
    with np.load(source, allow_pickle=False) as z:
        x = z["x"]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, *x.shape[1:]))
    for start in range(0, n, len(x)):
        stop = min(n, start + len(x))
        out[start:stop] = x[: stop - start]
    out.flush()
    del out


def child(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SAMPLES)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[5000, 40000])
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--batch-size", default="256")
    ap.add_argument("--sample-models", action="store_true", help="the sample digits CNN and PIV flow net instead of tiny nets")
    ap.add_argument("--root", type=Path, default=ROOT, help="the eqaudit checkout to measure (e.g. an older one, to compare)")
    args = ap.parse_args()
    print(f"{'model':<13} {'N':>6} {'peak RSS MiB':>12} {'before sweep':>12} {'orbits.npz MiB':>14} {'seconds':>8} {'peak/first':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model, source, task, factory = MODELS[name]
            model = SAMPLES / model
            if not args.sample_models:
                import torch

                torch.manual_seed(0)
                model = Path(tmp) / f"{TINY[name]}.pt"
                torch.save(_tiny_modules()[TINY[name]]().state_dict(), model)
                factory = f"{Path(__file__).resolve()}:{TINY[name]}"
            first = None
            for n in args.n:
                data = Path(tmp) / f"{name}_{n}.npy"
                write_npy(SAMPLES / source, n, data)
                out = Path(tmp) / f"out_{name}_{n}"
                fmt = dict(root=str(args.root), model=str(model), data=str(data), task=task, factory=factory,
                           out=str(out), batch=args.batch_size if args.batch_size == "auto" else int(args.batch_size))
                base = child(BASE.format(**fmt))["base_mib"]
                t0 = time.perf_counter()
                run = child(CHILD.format(**fmt))
                first = first or run["peak_mib"]
                size = (out / "orbits.npz").stat().st_size / 2**20
                print(f"{name:<13} {n:>6} {run['peak_mib']:>12.0f} {base:>12.0f} {size:>14.1f} {time.perf_counter() - t0:>8.1f} "
                      f"{run['peak_mib'] / first:>10.2f}", flush=True)
                data.unlink()


if __name__ == "__main__":
    main()
