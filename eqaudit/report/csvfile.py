"""The csv reporter: elements.csv, one row per (model, symmetry, group element) with every per-element metric."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..result import AuditResult
from .base import Outcome, Written
from .io import write_text_atomic

CSV_FILE = "elements.csv"


def element_rows(result: AuditResult) -> list[dict]:
    """The rows of elements.csv: model, symmetry, element label, identity, the element's parameters,
    then its metrics (lists and tables such as the extent are left out)."""
    rows = []
    for s in result.symmetries:
        for e, pe in enumerate(s.per_element):
            row = {"model": Path(result.models[s.model].path).name, "symmetry": s.spec, "element": pe.get("label", str(e)),
                   "identity": e == s.identity_index}
            row.update({name: value for name, value in zip(s.param_names, s.elements[e])})
            row.update({k: v for k, v in pe.items() if k not in ("label", "element") and not isinstance(v, (list, dict))})
            rows.append(row)
    return rows


def elements_frame(result: AuditResult):
    """elements.csv as a pandas DataFrame (for notebooks and spreadsheets)."""
    import pandas as pd

    return pd.DataFrame(element_rows(result))


def elements_csv(result: AuditResult) -> str:
    """The CSV text: columns in order of first appearance, missing and NaN cells empty (as pandas
    writes them), written with the standard library so a scan does not import pandas for it."""
    rows = element_rows(result)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if (v := row.get(k)) is None or (isinstance(v, float) and math.isnan(v)) else v for k in columns])
    return buf.getvalue()


class CsvReporter:
    name = "csv"

    def write(self, outcome: Outcome) -> Written:
        path = outcome.out_dir / CSV_FILE
        write_text_atomic(path, elements_csv(outcome.result))
        return Written([path])
