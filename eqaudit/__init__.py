"""eqaudit: audit trained models for symmetry (orbit sweeps, metrics, gates, reports)."""

__version__ = "0.1.0"
