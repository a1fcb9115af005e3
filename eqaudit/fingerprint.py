"""Fingerprints of what an audit's numbers depend on (model files, data, measurement settings), for --resume and result caches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

MEASUREMENT_SETTINGS = (
    "symmetry", "task", "output", "output_kind", "output_name", "reference", "targets_key", "limit", "seed",
    "input_shape", "layout", "input", "act_on", "model_factory", "local", "layers", "extent_tolerance", "level_at_init",
    "floor_samples", "dtype",
)
"""Settings that change measured numbers. Left out on purpose: gates, baselines and output paths (they
are re-evaluated on the measured summaries, never measured), ``prefetch`` (when orbits are built, not
what they are), and ``batch_size`` and ``device``: the sweep's answer does not depend on them beyond float rounding (a resumed run may use a smaller batch
after running out of memory; the result is bit-identical to an uninterrupted run when they are unchanged)."""

NOT_MEASURED = (
    "data", "device", "batch_size", "out", "fail_over", "gates", "baseline", "max_regression", "junit_xml", "format",
    "trust", "cache", "prefetch",
)
"""The other settings, each left out of the fingerprint on purpose (``data``: the fingerprint holds its
content hash and key instead of the path). Every setting of eqaudit.config is in exactly one of the two
lists (a test checks it), so a new setting has to be classified before it can change cached numbers."""

CHUNK = 1 << 20


def file_sha256(path: str | Path, known: dict[str, str] | None = None) -> str:
    """sha256 of a file's bytes (hex); ``known`` (path -> hash, filled here) hashes each file once per scan."""
    if known is not None:
        key = str(Path(path).resolve())
        if key not in known:
            known[key] = file_sha256(path)
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def content_sha256(path: str | Path, known: dict[str, str] | None = None, pattern: str = "*") -> str:
    """sha256 of a file, or of a folder's files matching ``pattern`` (relative names and bytes, in sorted order)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path, known)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob(pattern) if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode("utf-8") + b"\0")
        h.update(file_sha256(f, known).encode("ascii"))
    return h.hexdigest()


def settings_digest(values: Mapping[str, Any]) -> dict[str, Any]:
    """The measurement settings among ``values`` (a Settings.values table), JSON-ready."""
    return {k: _plain(values.get(k)) for k in MEASUREMENT_SETTINGS}


def audit_fingerprint(models: list[Path], data_path: str | Path, data_key: str | None, values: Mapping[str, Any],
                      version: str, factories: list[tuple[str | None, list[Path]]] | None = None,
                      known: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything an audit's numbers depend on: the eqaudit version, each model file's sha256 (and the
    source of the factory that builds its architecture: ``factories``, one (spec, search dirs) per
    model), the data's content hash (and the array key read from it) and the measurement settings.
    Two audits with equal fingerprints measure the same. ``known``: see file_sha256."""
    facs = factories or [(None, [])] * len(models)
    return {
        "eqaudit_version": version,
        "models": [{"path": str(m), "sha256": file_sha256(m, known), "factory": factory_digest(spec, dirs, known)}
                   for m, (spec, dirs) in zip(models, facs)],
        "data": {"path": str(data_path), "key": data_key, "sha256": content_sha256(data_path, known)},
        "settings": settings_digest(values),
    }


def factory_digest(spec: str | None, search_dirs: list[Path], known: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The code a model factory imports: the file (or the .py files of the package folder) it would
    run from, hashed, so that editing the architecture changes the fingerprint; None without a factory.
    Nothing is imported to find it; a factory that cannot be found is named by its spec only (``sha256`` None)."""
    if not spec:
        return None
    import importlib.machinery

    from .models.factory import factory_origin

    origin = factory_origin(spec, list(search_dirs))
    top = spec.rsplit(":", 1)[0].split(".")[0]
    if origin is None and top.isidentifier():  # imported from sys.path (the current folder, the environment)
        found = importlib.machinery.PathFinder.find_spec(top)
        if found is not None and found.origin not in (None, "namespace", "built-in", "frozen"):
            origin = Path(found.origin)
    if origin is not None and origin.name == "__init__.py":  # a package: all of its modules
        origin = origin.parent
    digest = content_sha256(origin, known, "*.py") if origin is not None and origin.exists() else None
    return {"spec": spec, "origin": str(origin) if origin is not None else None, "sha256": digest}


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
        fa, fb = a.get("factory") or {}, b.get("factory") or {}
        if (fa.get("spec"), fa.get("sha256")) != (fb.get("spec"), fb.get("sha256")):
            out.append(f"model factory of {b.get('path')!r} changed ({fa.get('spec')!r} -> {fb.get('spec')!r}"
                       f"{', its source was edited' if fa.get('spec') == fb.get('spec') else ''})")
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
