"""Whole-scan wall time against the sweep's own time (result.json timing.seconds), with all outputs and with CI's.

    python benchmarks/bench_wall.py [MODEL] [--repeat 3] [-- extra scan arguments]

Runs `python -m eqaudit scan MODEL --out TMP -q` in a fresh interpreter (imports included) with the
default outputs and with `--format json,junit`, and prints wall, sweep and wall / sweep per run
(goal: <= 2 for the quick start, <= 1.3 for sweeps of 20 s or more), and "after": the seconds from
the last write of result.json (the finished result) to the process's exit, i.e. the reports (with
every output, what the figures drawn during the sweep left to draw). Numbers on a shared machine
are noisy: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(model: str, extra: list[str]) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "eqaudit", "scan", model, "--out", tmp, "-q", *extra], check=False,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        after = time.time() - (Path(tmp) / "result.json").stat().st_mtime
        sweep = json.loads((Path(tmp) / "result.json").read_text())["timing"]["seconds"]
    return wall, sweep, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="sample_models/digits_cnn.pt")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    for label, extra in (("all outputs", []), ("--format json,junit", ["--format", "json,junit"])):
        for _ in range(args.repeat):
            wall, sweep, after = run(args.model, [*args.extra, *extra])
            print(f"{label:20s} wall {wall:6.2f} s  sweep {sweep:6.2f} s  wall/sweep {wall / sweep:.2f}  after {after:5.2f} s",
                  flush=True)


if __name__ == "__main__":
    main()
