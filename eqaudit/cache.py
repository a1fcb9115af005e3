"""The result cache: a complete scan in the output folder whose fingerprint equals this run's is served without loading or calling a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .errors import EqauditError
from .fingerprint import audit_fingerprint, differences
from .result import AuditResult, OrbitTable

HIT = "hit"
"""``timing["cache"]`` of a result served from the cache; its other timing keys are the original run's."""


def lookup(out_dir: Path, models: list[Path], values: Mapping[str, Any], version: str, *, factories: list | None = None,
           known: dict[str, str] | None = None, need_orbits: bool = True) -> tuple[AuditResult, OrbitTable] | None:
    """The complete audit in ``out_dir`` when it measured exactly what this run would, else None.

    The key is the audit fingerprint (eqaudit.fingerprint: the eqaudit version, each model file's and
    factory's bytes, the data's content and array key, the measurement settings) plus the data spec as
    given; model files and data are hashed, never loaded. The array key a run reads depends on the data
    spec, the model's input names (its file) and --input (a measurement setting), all part of the key,
    so the stored key is reused. ``need_orbits``: this run writes orbits.npz or the HTML report, so the
    stored orbit table must be there too (a scan with --format json writes none)."""
    path = Path(out_dir) / "result.json"
    if not path.is_file():
        return None
    try:
        saved = AuditResult.load(path)
    except (EqauditError, OSError, ValueError, TypeError, KeyError):
        return None  # not a readable result: measure afresh
    check = saved.checkpoint or {}
    old = check.get("fingerprint")
    if not saved.complete or not old or check.get("models_finished") != len(models):
        return None
    if ((saved.settings or {}).get("values") or {}).get("data") != values.get("data"):
        return None
    from .data.dataset import split_key

    data_path, _ = split_key(str(values.get("data")))
    stored = old.get("data") or {}
    if stored.get("path") != str(data_path) or not data_path.exists():
        return None
    new = audit_fingerprint(models, data_path, stored.get("key"), values, version, factories, known)
    if differences(old, new):
        return None
    orbits_path = Path(out_dir) / saved.orbits_file
    if orbits_path.is_file():
        try:
            orbits = OrbitTable.load(orbits_path)
        except (OSError, ValueError, EqauditError):
            return None
    elif need_orbits:
        return None
    else:
        orbits = OrbitTable({})
    return saved, orbits


def mark_hit(result: AuditResult) -> None:
    """Say in ``timing`` that ``result`` was served from the cache (its seconds stay the original sweep's)."""
    result.timing["cache"] = HIT
