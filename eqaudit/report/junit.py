"""The junit reporter: a JUnit XML file (one test case per gate and baseline metric) where --junit-xml names one."""

from __future__ import annotations

from .base import Outcome, Written


class JUnitReporter:
    name = "junit"

    def write(self, outcome: Outcome) -> Written:
        if not outcome.junit_path:
            return Written()
        from .. import ci

        return Written([ci.write_junit(outcome.junit_path, outcome.result, outcome.comparison)])
