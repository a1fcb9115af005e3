"""The summary reporter: a Markdown table appended to the GitHub step summary ($GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from .base import Outcome, Written


class StepSummaryReporter:
    name = "summary"

    def write(self, outcome: Outcome) -> Written:
        if not outcome.step_summary:
            return Written()
        from .. import ci

        ci.append_step_summary(outcome.step_summary, ci.step_summary(outcome.result, outcome.comparison))
        return Written()  # appended to a file the runner owns: nothing to announce
