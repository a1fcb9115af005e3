"""The orbits reporter: orbits.npz, the per-sample orbit table beside result.json (see eqaudit.result.ORBITS_FILE).

The archive is streamed to its temporary file one array after another (numpy's savez writes each
member through the zip file in chunks), so writing it holds no second copy of the table, compressed or
not; the rename makes it appear whole or not at all."""

from __future__ import annotations

import numpy as np

from ..result import ORBITS_FILE
from .base import Outcome, Written
from .io import open_atomic


class OrbitsReporter:
    name = "orbits"

    def write(self, outcome: Outcome) -> Written:
        if outcome.orbits is None:
            return Written()
        path = outcome.out_dir / ORBITS_FILE
        with open_atomic(path) as fh:
            np.savez_compressed(fh, **outcome.orbits)
        return Written([path])
