"""Benchmark: sweep and whole-scan throughput over the model's raw forward throughput (orbit elements per second).

Run from the repository root (plain Python, not a test; numbers are noisy on a shared machine):

    python benchmarks/bench_sweep.py                  # every model, backend and symmetry below
    python benchmarks/bench_sweep.py --quick          # the CNN and the tiny MLP, rot90 and rotate:step=15
    python benchmarks/bench_sweep.py --wall           # also time whole `eqaudit scan` runs (report included)

Per (model, file format, symmetry) it prints:
  raw      rows/s of the model file alone (the same adapter eqaudit uses) at its best batch size
           (BATCHES), on the same inputs; the physical limit of an audit;
  sweep    orbit elements/s of eqaudit's sweep: N x E / timing.seconds, identity included (the floor's
           separate reference and round-trip rows are overhead, not work);
  s/raw    sweep over raw (goal: >= 0.9, >= 0.8 for rotate:step=15);
  in model share of the sweep's time spent inside the model;
  us/el    time outside the model per (sample, element), in microseconds (goal: <= 10 on the tiny MLP);
  naive    orbit elements/s of a NERO-style loop that calls the model on one sample and one element
           at a time (a seeded subset of NAIVE_SAMPLES samples);
  RSS      peak resident memory of this process so far, MiB (psutil if installed, else ru_maxrss).
With --wall, a last table runs `eqaudit scan` in a subprocess per row and prints wall / sweep.

Models: a tiny MLP on 8x8 digits (flat input reshaped with --input-shape), the sample digits CNN on
32x32 digits, a tiny fully-convolutional dense model (4 maps) and the sample PIV flow net (vector
fields, two-frame input). Each is run as a state dict or module (.pt), a torch.export program
(.pt2) and ONNX (.onnx), exported into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eqaudit.data import load_dataset  # noqa: E402
from eqaudit.models import load_model  # noqa: E402
from eqaudit.models.base import ReshapedInput  # noqa: E402
from eqaudit.sweep import sweep  # noqa: E402
from eqaudit.symmetries import parse_symmetry  # noqa: E402
from eqaudit.tasks import get_task  # noqa: E402

SAMPLES = ROOT / "sample_models"
BATCHES = (64, 256, 1024)
NAIVE_SAMPLES = 8


def rss_mib() -> float:
    """Peak resident set size of this process in MiB."""
    try:
        import psutil  # optional

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20
    except ImportError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


class TinyDense(nn.Module):
    """A fully convolutional map model: (B, 1, H, W) -> (B, 4, H, W) class scores per pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x):
        return self.net(x)


@dataclass
class Case:
    name: str
    data: str  # dataset path
    task: str
    specs: list[str]
    module: nn.Module
    example: torch.Tensor  # one input batch for exports
    files: dict  # format -> (path, load_model kwargs)
    input_shape: tuple | None = None  # model rows reshaped from the symmetry's sample shape


def build_cases(tmp: Path, quick: bool) -> list[Case]:
    torch.manual_seed(0)
    sys.path.insert(0, str(SAMPLES))
    from digits_models import PlainCNN  # noqa: E402
    from domain_models import FlowNet  # noqa: E402

    cnn = PlainCNN()
    cnn.load_state_dict(torch.load(SAMPLES / "digits_cnn.pt", weights_only=True))
    flow = FlowNet()
    flow.load_state_dict(torch.load(SAMPLES / "piv_flow.pt", weights_only=True))
    piv = np.load(SAMPLES / "piv_test.npz")
    np.savez(tmp / "piv4.npz", x=np.concatenate([piv["x"]] * 4))  # 192 two-frame samples
    digits8 = np.load(SAMPLES / "digits64.npz")
    np.savez(tmp / "digits8.npz", x=digits8["x"].reshape(-1, 1, 8, 8).astype(np.float32), y=digits8["y"])
    cases = [
        Case("mlp", str(tmp / "digits8.npz"), "classify", ["rot90", "flip", "d4", "translate:max=1", "rotate:step=15"],
             TinyMLP().eval(), torch.zeros(2, 1, 8, 8), {}),
        Case("cnn", str(SAMPLES / "digits_test.npz"), "classify", ["rot90", "flip", "d4", "translate:max=2", "rotate:step=15"],
             cnn.eval(), torch.zeros(2, 1, 32, 32),
             {".pt": (SAMPLES / "digits_cnn.pt", {"factory": "digits_models:PlainCNN", "search_dirs": [SAMPLES]})}),
        Case("dense", str(SAMPLES / "digits_test.npz"), "dense", ["rot90", "flip", "d4", "translate:max=2", "rotate:step=15"],
             TinyDense().eval(), torch.zeros(2, 1, 32, 32), {}),
        Case("flow", str(tmp / "piv4.npz"), "vector-field", ["rot90", "flip", "d4", "translate:max=2", "rotate:step=15"],
             flow.eval(), torch.zeros(2, 2, 32, 32),
             {".pt": (SAMPLES / "piv_flow.pt", {"factory": "domain_models:FlowNet", "search_dirs": [SAMPLES]})}),
    ]
    if quick:
        cases = cases[:2]
        for c in cases:
            c.specs = ["rot90", "rotate:step=15"]
    for c in cases:
        batch = torch.export.Dim("batch", min=1, max=4096)
        ep = torch.export.export(c.module, (c.example,), dynamic_shapes=({0: batch},))
        torch.export.save(ep, tmp / f"{c.name}.pt2")
        c.files[".pt2"] = (tmp / f"{c.name}.pt2", {})
        torch.onnx.export(c.module, (c.example,), tmp / f"{c.name}.onnx", input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
        c.files[".onnx"] = (tmp / f"{c.name}.onnx", {})
    return cases


def raw_throughput(model, x: torch.Tensor, seconds: float = 1.5) -> tuple[float, int]:
    """(rows/s, batch size) of the model alone at its best batch size in BATCHES, on ``x`` tiled to enough rows."""
    best = (0.0, 0)
    for bs in BATCHES:
        xb = x.repeat((bs + len(x) - 1) // len(x), *([1] * (x.dim() - 1)))[:bs].contiguous()
        model(xb)  # warm-up
        rows, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / len(BATCHES) or rows < 2 * bs:
            rows += len(model(xb))
        rate = rows / (time.perf_counter() - t0)
        best = max(best, (rate, bs))
    return best


def naive_loop(model, x: torch.Tensor, sym, samples: int = NAIVE_SAMPLES, budget_s: float = 2.0) -> float:
    """Orbit elements/s of a per-sample, per-element loop (NERO-style): act, call, compare one at a time
    (a seeded subset of samples; stops after ``budget_s`` seconds)."""
    rng = np.random.default_rng(0)
    idx = rng.choice(len(x), size=min(samples, len(x)), replace=False)
    t0, count = time.perf_counter(), 0
    with torch.inference_mode():
        for i in idx:
            xi = x[int(i) : int(i) + 1]
            ref = model(xi)
            for e in range(sym.n_elements):
                out = model(sym.act(xi, sym.elements[e : e + 1])[0])
                float((out.double() - ref.double()).abs().max())
                count += 1
            if time.perf_counter() - t0 > budget_s:
                break
    return count / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="the CNN and the MLP, rot90 and rotate:step=15 only")
    ap.add_argument("--wall", action="store_true", help="also time whole scans in a subprocess (slow)")
    ap.add_argument("--formats", default=".pt,.pt2,.onnx")
    ap.add_argument("--no-prefetch", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    formats = args.formats.split(",")
    print(f"device {device}, batch size {args.batch_size}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads, prefetch {'off' if args.no_prefetch else 'on'}")
    head = f"{'model':6} {'file':5} {'symmetry':16} {'E':>3} {'N':>4} {'raw/s':>8} {'@bs':>5} {'sweep/s':>8} {'s/raw':>6} " \
           f"{'in model':>8} {'us/el':>6} {'naive/s':>8} {'RSS MiB':>8}"
    walls = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        cases = build_cases(tmp, args.quick)
        print(head)
        for c in cases:
            data = load_dataset(c.data)
            x = data.take(np.arange(len(data)), device)
            for fmt in formats:
                if fmt not in c.files:
                    continue
                path, kw = c.files[fmt]
                model = load_model(path, device, **kw)
                raw, bs = raw_throughput(model, x)
                for spec in c.specs:
                    sym = parse_symmetry(spec)
                    sym.check_input(data.sample_shape)
                    out = sweep(model, data, [sym], get_task(c.task), batch_size=args.batch_size, prefetch=not args.no_prefetch)
                    work = len(data) * sym.n_elements
                    rate = work / out.seconds
                    outside = (out.seconds - out.model_seconds) / work * 1e6
                    naive = naive_loop(model, x, sym)
                    print(f"{c.name:6} {fmt:5} {spec:16} {sym.n_elements:3d} {len(data):4d} {raw:8.0f} {bs:5d} {rate:8.0f} "
                          f"{rate / raw:6.2f} {out.model_seconds / out.seconds:8.1%} {outside:6.1f} {naive:8.0f} {rss_mib():8.0f}",
                          flush=True)
                    if args.wall and fmt != ".pt" and spec in ("rot90", "rotate:step=15") and c.name in ("cnn", "flow"):
                        walls.append((c, fmt, path, spec, raw))
        if walls:
            print(f"\n{'model':6} {'file':5} {'symmetry':16} {'wall s':>7} {'sweep s':>8} {'wall/sweep':>10} {'sweep/raw':>9} {'wall/raw':>8}")
            for c, fmt, path, spec, raw in walls:
                out_dir = tmp / f"scan_{c.name}{fmt.replace('.', '_')}_{spec.replace(':', '_').replace('=', '')}"
                cmd = [sys.executable, "-c", "import sys; from eqaudit.cli import main; sys.exit(main())", "scan", str(path),
                       "--data", c.data, "--symmetry", spec, "--task", c.task, "--out", str(out_dir), "--device", str(device)]
                t0 = time.perf_counter()
                subprocess.run(cmd, cwd=tmp, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, check=False)
                wall = time.perf_counter() - t0
                res = json.loads((out_dir / "result.json").read_text())
                n_el = sum(len(s["per_element"]) for s in res["symmetries"])
                sw = res["timing"]["seconds"]
                work = res["data"]["n_samples"] * n_el
                print(f"{c.name:6} {fmt:5} {spec:16} {wall:7.1f} {sw:8.2f} {wall / sw:10.2f} {work / sw / raw:9.2f} {work / wall / raw:8.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
