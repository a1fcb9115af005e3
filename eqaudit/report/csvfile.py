"""The csv reporter: elements.csv, one row per (model, symmetry, group element) with every per-element metric."""

from __future__ import annotations

from pathlib import Path

from ..result import AuditResult
from .base import Outcome, Written
from .io import write_text_atomic

CSV_FILE = "elements.csv"


def elements_frame(result: AuditResult):
    """The rows of elements.csv as a pandas DataFrame (for spreadsheets and CI artifacts): model,
    symmetry, element label, identity, the element's parameters, then its metrics."""
    import pandas as pd

    rows = []
    for s in result.symmetries:
        for e, pe in enumerate(s.per_element):
            row = {"model": Path(result.models[s.model].path).name, "symmetry": s.spec, "element": pe.get("label", str(e)),
                   "identity": e == s.identity_index}
            row.update({name: value for name, value in zip(s.param_names, s.elements[e])})
            row.update({k: v for k, v in pe.items() if k not in ("label", "element") and not isinstance(v, (list, dict))})
            rows.append(row)
    return pd.DataFrame(rows)


class CsvReporter:
    name = "csv"

    def write(self, outcome: Outcome) -> Written:
        path = outcome.out_dir / CSV_FILE
        write_text_atomic(path, elements_frame(outcome.result).to_csv(index=False))
        return Written([path])
