"""How every report words a level: its value with the CI, a missing level's status and reason, and the extent."""

from __future__ import annotations

from typing import Any


def level_missing(summary: dict) -> str:
    """The status of a level that is None ("undetermined", "floor-limited"), "–" when there is none."""
    status = summary.get("level_status")
    return str(status) if status and status != "ok" else "–"


def level_reason(summary: dict) -> str | None:
    """Why a level is missing, as ``"undetermined: null 0.1 is not clearly above floor 0.1: ..."``; None when it is not."""
    if summary.get("level") is not None or summary.get("level_status") in (None, "ok"):
        return None
    reason = summary.get("level_reason")
    return f"{summary['level_status']}: {reason}" if reason else str(summary["level_status"])


def extent_text(ext: Any) -> str | None:
    """'-30 … 45 deg' from a summary's extent (the interval around the identity where the level holds),
    'whole orbit' when it holds everywhere, 'none within tolerance' when only the identity does."""
    if not isinstance(ext, dict) or ext.get("lower") is None or ext.get("upper") is None:
        return None
    if ext.get("full"):
        return "whole orbit"
    if ext["lower"] == ext["upper"]:
        return "none within tolerance"
    return f"{ext['lower']:g} … {ext['upper']:g} {ext.get('unit') or ''}".strip()
