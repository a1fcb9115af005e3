"""eqaudit: audit trained models for symmetry (orbit sweeps, metrics, gates, reports)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "scan", "AuditResult", "testing"]

if TYPE_CHECKING:  # pragma: no cover
    from . import testing
    from .api import scan
    from .result import AuditResult

# Imported on first use, so `import eqaudit` (and the CLI's start) does not load torch.
_LAZY = {"scan": ("eqaudit.api", "scan"), "AuditResult": ("eqaudit.result", "AuditResult"), "testing": ("eqaudit.testing", None)}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'eqaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
