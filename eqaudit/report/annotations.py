"""The annotations reporter: one ``::error`` workflow command per failed gate or regression (GITHUB_ACTIONS=true)."""

from __future__ import annotations

from .base import Outcome, Written


class AnnotationsReporter:
    name = "annotations"

    def write(self, outcome: Outcome) -> Written:
        if not outcome.annotate:
            return Written()
        from .. import ci

        return Written(lines=ci.annotations(outcome.result, outcome.comparison))
