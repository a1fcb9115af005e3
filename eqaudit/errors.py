"""Typed errors raised by the library; each carries the process exit code the CLI maps it to."""

from __future__ import annotations


class EqauditError(Exception):
    """Base class. Messages say what went wrong, the offending value, what was expected and the fix.

    ``exit_code`` follows DESIGN.md: 2 for usage/configuration problems, 3 for runtime failures
    before a verdict.
    """

    exit_code: int = 3


class ConfigError(EqauditError):
    """A malformed option, config file, gate or spec: a usage error (exit 2)."""

    exit_code = 2


class PathNotFoundError(ConfigError):
    """A path the user named does not exist (exit 2)."""


class SymmetryError(ConfigError):
    """An unknown symmetry, an unknown or invalid parameter, or a symmetry that cannot act on the data."""


class ModelLoadError(EqauditError):
    """A model file exists but cannot be loaded, is not what its name says, or needs --trust (exit 3)."""


class ModelRunError(EqauditError):
    """The model failed on the data, or returned outputs of an unexpected shape (exit 3)."""


class DeviceError(EqauditError):
    """The device asked for (--device cuda, cuda:N, mps) does not exist on this machine (exit 3)."""


class DataError(EqauditError):
    """A data file exists but cannot be read, or holds values of the wrong shape, dtype or range (exit 3)."""


class ResultError(EqauditError):
    """A saved result.json is missing keys, has an unknown format version, or does not parse (exit 3)."""


class Interrupted(EqauditError):
    """The run was asked to stop (SIGINT or SIGTERM) and stopped after the current batch; every
    finished (model, symmetry) is in the output folder (``complete: false``). Exit 128 + the signal."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else f"signal {signum}"
        super().__init__(f"Interrupted by {name}; finished measurements are kept, continue with --resume.")


class RankError(EqauditError):
    """A rank of a distributed audit (torchrun, --nproc) could not join the others or lost them (exit 3).
    ``lost``: it stopped because another rank failed or left (that rank's own error names the cause)."""

    def __init__(self, message: str, *, lost: bool = False):
        super().__init__(message)
        self.lost = lost
