"""The json reporter: result.json, the versioned contract between measuring and reporting (always written)."""

from __future__ import annotations

from .base import Outcome, Written


class JsonReporter:
    name = "json"

    def write(self, outcome: Outcome) -> Written:
        path = outcome.out_dir / "result.json"
        outcome.result.save(path)
        return Written([path])
