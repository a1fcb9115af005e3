"""The orbits reporter: orbits.npz, the per-sample orbit table beside result.json (see eqaudit.result.ORBITS_FILE)."""

from __future__ import annotations

import io

import numpy as np

from ..result import ORBITS_FILE
from .base import Outcome, Written
from .io import write_bytes_atomic


class OrbitsReporter:
    name = "orbits"

    def write(self, outcome: Outcome) -> Written:
        if outcome.orbits is None:
            return Written()
        buf = io.BytesIO()
        np.savez_compressed(buf, **outcome.orbits)
        path = outcome.out_dir / ORBITS_FILE
        write_bytes_atomic(path, buf.getvalue())
        return Written([path])
