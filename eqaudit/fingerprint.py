"""Fingerprints of what an audit's numbers depend on (model files, data, measurement settings), for --resume and result caches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

MEASUREMENT_SETTINGS = (
    "symmetry", "task", "output", "output_kind", "output_name", "reference", "targets_key", "limit", "seed",
    "input_shape", "layout", "input", "act_on", "model_factory", "local", "layers", "extent_tolerance", "level_at_init",
)
"""Settings that change measured numbers. Left out on purpose: gates, baselines and output paths (they
are re-evaluated on the measured summaries, never measured), and ``batch_size`` and ``device``: the
sweep's answer does not depend on them beyond float rounding (a resumed run may use a smaller batch
after running out of memory; the result is bit-identical to an uninterrupted run when they are unchanged)."""

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def content_sha256(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and bytes, in sorted order)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode("utf-8") + b"\0")
        h.update(file_sha256(f).encode("ascii"))
    return h.hexdigest()


def settings_digest(values: Mapping[str, Any]) -> dict[str, Any]:
    """The measurement settings among ``values`` (a Settings.values table), JSON-ready."""
    return {k: _plain(values.get(k)) for k in MEASUREMENT_SETTINGS}


def audit_fingerprint(models: list[Path], data_path: str | Path, data_key: str | None, values: Mapping[str, Any],
                      version: str) -> dict[str, Any]:
    """Everything an audit's numbers depend on: the eqaudit version, each model file's sha256, the
    data's content hash (and the array key read from it) and the measurement settings. Two audits with equal fingerprints measure the same."""
    return {
        "eqaudit_version": version,
        "models": [{"path": str(m), "sha256": file_sha256(m)} for m in models],
        "data": {"path": str(data_path), "key": data_key, "sha256": content_sha256(data_path)},
        "settings": settings_digest(values),
    }


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed between two fingerprints, one short phrase each (empty: the same audit)."""
    out = []
    if old.get("eqaudit_version") != new.get("eqaudit_version"):
        out.append(f"eqaudit version {old.get('eqaudit_version')} -> {new.get('eqaudit_version')}")
    om, nm = old.get("models") or [], new.get("models") or []
    if len(om) != len(nm):
        out.append(f"{len(om)} model(s) -> {len(nm)}")
    for a, b in zip(om, nm):
        if a.get("sha256") != b.get("sha256"):
            out.append(f"model file {b.get('path')!r} changed (sha256 {str(a.get('sha256'))[:12]}... -> {str(b.get('sha256'))[:12]}...)")
    od, nd = old.get("data") or {}, new.get("data") or {}
    if od.get("key") != nd.get("key"):
        out.append(f"data key {od.get('key')!r} -> {nd.get('key')!r}")
    if od.get("sha256") != nd.get("sha256"):
        out.append(f"data {nd.get('path')!r} changed (content hash {str(od.get('sha256'))[:12]}... -> {str(nd.get('sha256'))[:12]}...)")
    os_, ns = old.get("settings") or {}, new.get("settings") or {}
    for key in sorted(set(os_) | set(ns)):
        if os_.get(key) != ns.get(key):
            out.append(f"{key} {os_.get(key)!r} -> {ns.get(key)!r}")
    return out


def _plain(v: Any) -> Any:
    """A JSON round trip of ``v`` (tuples to lists, paths to text), so a stored and a fresh digest compare equal."""
    return json.loads(json.dumps(v, default=str))
