"""Benchmark: audit throughput over raw forward throughput of the same model, backend and batch size.

Run from the repository root: ``python benchmarks/bench_sweep.py [--device cpu|cuda] [--batch-size 256]``.
It prints, per backend and symmetry, rows per second of the raw model, of the audit sweep, their
ratio (1.0 = the sweep costs nothing beyond the model), and the share of sweep time spent inside the
model. A memory check runs the sweep on memory-mapped data of N and 4N rows and prints the traced
peak (numpy/python allocations) next to the size of the per-sample metric table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eqaudit.data import load_dataset  # noqa: E402
from eqaudit.models import load_model  # noqa: E402
from eqaudit.sweep import sweep  # noqa: E402
from eqaudit.symmetries import parse_symmetry  # noqa: E402
from eqaudit.tasks import get_task  # noqa: E402

SAMPLES = ROOT / "sample_models"
SPECS = ["rot90", "d4", "translate:max=2", "rotate:step=15", "scale:steps=5"]


def raw_throughput(model, x: torch.Tensor, batch_size: int, repeat: int) -> float:
    """Rows per second of the model alone on ``x`` in batches of ``batch_size``."""
    model(x[:batch_size])  # warm-up
    rows, t0 = 0, time.perf_counter()
    for _ in range(repeat):
        for start in range(0, len(x), batch_size):
            rows += len(model(x[start : start + batch_size]))
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return rows / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--limit", type=int, default=360)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    data = load_dataset(str(SAMPLES / "digits_test.npz"), limit=args.limit)
    x = data.take(np.arange(len(data)), device)
    print(f"device {device}, batch size {args.batch_size}, {len(data)} samples, torch {torch.__version__}")
    print(f"{'backend':8} {'symmetry':16} {'E':>3} {'raw rows/s':>11} {'audit rows/s':>13} {'ratio':>6} {'in model':>9}")
    for path, kw in [(SAMPLES / "digits_cnn.pt", {"factory": "digits_models:PlainCNN", "search_dirs": [SAMPLES]}),
                     (SAMPLES / "digits_cnn.onnx", {})]:
        model = load_model(path, device, **kw)
        raw = raw_throughput(model, x, args.batch_size, repeat=3)
        for spec in SPECS:
            sym = parse_symmetry(spec)
            out = sweep(model, data, [sym], get_task("classify"), batch_size=args.batch_size)
            audit = out.model_evals / out.seconds
            print(f"{model.info.backend:8} {spec:16} {sym.n_elements:3d} {raw:11.0f} {audit:13.0f} "
                  f"{audit / raw:6.2f} {out.model_seconds / out.seconds:9.1%}")

    # memory: peak traced allocations for N and 4N memory-mapped rows
    model = load_model(SAMPLES / "digits_cnn.pt", device, factory="digits_models:PlainCNN", search_dirs=[SAMPLES])
    base = np.load(SAMPLES / "digits_test.npz")["x"]
    with tempfile.TemporaryDirectory() as tmp:
        for reps in (4, 16):
            path = Path(tmp) / f"x{reps}.npy"
            np.save(path, np.concatenate([base] * reps))
            ds = load_dataset(str(path))
            tracemalloc.start()
            out = sweep(model, ds, [parse_symmetry("rot90")], get_task("classify"), batch_size=args.batch_size)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            table = sum(a.nbytes for a in out.tables[0].values())
            data_bytes = ds.x.size * ds.x.itemsize
            print(f"memory: N={len(ds):6d}  data {data_bytes / 2**20:6.1f} MiB (memory-mapped)  "
                  f"metric table {table / 2**20:5.2f} MiB  traced peak {peak / 2**20:6.2f} MiB  "
                  f"peak/table {peak / table:5.2f}")


if __name__ == "__main__":
    main()
