"""Gates and regressions as pure functions over summaries: threshold checks and baseline comparison."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .metrics import DIRECTION
from .result import AuditResult, Gate


def check_gate_metrics(fail_over: dict[str, float], has_labels: bool, label_metrics: frozenset[str] = frozenset()) -> None:
    """Reject gates on unknown metrics, or on label metrics when the data has no labels."""
    for metric in fail_over:
        if metric not in DIRECTION:
            import difflib

            close = difflib.get_close_matches(metric, DIRECTION, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(sorted(DIRECTION))}"
            raise ConfigError(f"Unknown gate metric {metric!r} in --fail-over; {hint}")
        if metric in label_metrics and not has_labels:
            raise ConfigError(f"Gate on {metric!r} needs labels, but the data has no 'y'; drop the gate or add labels.")


def evaluate_gates(summary: dict, fail_over: dict[str, float]) -> list[Gate]:
    """``--fail-over METRIC=VALUE``: the summary value must not exceed VALUE (it must not fall below
    VALUE for metrics where higher is better, such as accuracy)."""
    gates = []
    for metric, threshold in fail_over.items():
        value = summary.get(metric)
        op = ">=" if DIRECTION.get(metric, -1) > 0 else "<="
        if value is None:
            passed = False
        else:
            passed = value >= threshold if op == ">=" else value <= threshold
        gates.append(Gate(metric, op, float(threshold), value, bool(passed)))
    return gates


@dataclass
class Regression:
    model: str
    symmetry: str
    metric: str
    base: float
    new: float
    tolerance: float

    def describe(self) -> str:
        return f"{self.model} {self.symmetry}: {self.metric} {self.base:.6g} -> {self.new:.6g} (tolerance {self.tolerance:g})"


@dataclass
class Comparison:
    rows: list[tuple[str, str, str, float, float, bool]]  # model, symmetry, metric, base, new, regressed
    regressions: list[Regression]
    missing: list[str]  # (model, symmetry) in base but not in new


def _key(result: AuditResult, s) -> tuple[str, str]:
    from pathlib import Path

    return Path(result.models[s.model].path).name, s.spec


def compare_results(base: AuditResult, new: AuditResult, tolerance: float = 0.01) -> Comparison:
    """Every summary metric with a known direction, matched by (model file name, symmetry spec).

    A metric regressed when it got worse by more than ``tolerance`` (absolute). A (model, symmetry)
    present in the baseline but missing from the new result counts as a regression too.
    """
    new_by_key = {_key(new, s): s for s in new.symmetries}
    rows, regressions, missing = [], [], []
    for s in base.symmetries:
        k = _key(base, s)
        other = new_by_key.get(k)
        if other is None:
            missing.append(f"{k[0]} {k[1]}")
            continue
        for metric, direction in DIRECTION.items():
            b, n = s.summary.get(metric), other.summary.get(metric)
            if b is None or n is None:
                continue
            worse = (b - n) if direction > 0 else (n - b)
            regressed = worse > tolerance
            rows.append((k[0], k[1], metric, b, n, regressed))
            if regressed:
                regressions.append(Regression(k[0], k[1], metric, b, n, tolerance))
    return Comparison(rows, regressions, missing)
