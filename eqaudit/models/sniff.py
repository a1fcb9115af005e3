"""Say what a model file really is from its first bytes, before any loader touches it."""

from __future__ import annotations

import zipfile
from pathlib import Path

from ..errors import ModelLoadError

ZIP_MAGIC = b"PK\x03\x04"


def head(path: Path, n: int = 64) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def describe_foreign(data: bytes) -> str | None:
    """A human name for content that is clearly not a model file (HTML page, JSON, text), else None."""
    stripped = data.lstrip()
    lower = stripped[:32].lower()
    if lower.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "an HTML/XML page (a download that saved an error or login page?)"
    if stripped[:1] in (b"{", b"["):
        return "JSON text"
    if data.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer (run `git lfs pull` to fetch the real file)"
    if not data:
        return "an empty file"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
        return "a text file"
    return None


def zip_kind(path: Path) -> str | None:
    """For a zip-based torch file: "torchscript", "export" (torch.export program) or "pickle"
    (torch.save archive); None when the file is not a readable zip archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("serialized_exported_program.json") or "/models/" in n and n.endswith(".json") for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "pickle"
    return None


def check_not_foreign(path: Path, expected: str, fix: str) -> bytes:
    """Raise ModelLoadError when the file is evidently not ``expected``; return its first bytes."""
    data = head(path)
    foreign = describe_foreign(data)
    if foreign:
        raise ModelLoadError(f"{str(path)!r} is {foreign}, not {expected}; {fix}.")
    return data
