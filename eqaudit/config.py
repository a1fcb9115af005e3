"""Settings: one table of options, one precedence function, and where each value came from.

Precedence, lowest first: built-in defaults < ``[tool.eqaudit]`` in the nearest pyproject.toml <
the model's sidecar ``MODEL_STEM.eqaudit.toml`` (or ``--config FILE``) < ``EQAUDIT_*`` environment
variables < command-line flags. Relative paths in a config file are relative to that file's folder.
``trust`` can only come from a flag or the environment: a file lying next to a model must not be
able to vouch for it.

Settings that take structured values accept TOML forms as well as strings (the string forms are what
flags and ``EQAUDIT_*`` variables use; see eqaudit.gates for the syntax)::

    fail_over = { flip_rate = 0.05 }                 # or ["flip_rate=0.05"], or "flip_rate=0.05,prob_tv=0.1"
    gates = ["rot90:flip_rate <= 0.01", "level_ci_low >= 0.9"]    # EQAUDIT_GATES: separated by ';'
    [tool.eqaudit.gates]                             # or a table keyed by symmetry ("*" = every one)
    rot90 = ["flip_rate <= 0.01", "level_ci_low >= 0.9"]
    max_regression = { "*" = 0.01, level = "5%" }     # or 0.02, "5%", ["level=5%"]

Adding a setting is one entry in SETTINGS (a ``Setting``: key, default, converter, help, option form,
short alias, commands, ``measured``, ...). Everything else derives from it: the typer options of
``eqaudit scan`` (and of each command in its ``commands``; eqaudit.cli), the flags passed to
``resolve``, ``EQAUDIT_NAME`` variables, config-file keys (refused when ``files_allowed`` is false),
the audit fingerprint (eqaudit.fingerprint keys on the ``measured`` ones) and docs/settings.md
(regenerate with ``python tools/settings.py``). The code that uses the value reads
``settings.NAME``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError, PathNotFoundError
from .gates import GateSpec, fail_over_specs, gate_specs, parse_tolerances, tolerances_to_strings
from .report.base import FORMATS, parse_formats

ENV_PREFIX = "EQAUDIT_"
RESERVED_ENV_PREFIX = "EQAUDIT_TEST_"  # the test suite's own variables, never settings
SIDECAR_SUFFIX = ".eqaudit.toml"


def _to_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("a whole number")
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    raise ValueError("a whole number")


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in {"1", "true", "yes", "on"}:
        return True
    if s in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("true or false")


def _to_str(v: Any) -> str:
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return str(v)
    raise ValueError("a string")


def _to_list(v: Any) -> list[str]:
    if isinstance(v, str):
        return [p.strip() for p in _split_specs(v) if p.strip()]
    if isinstance(v, (list, tuple)) and all(isinstance(p, str) for p in v):
        return [p.strip() for p in v]
    raise ValueError("a list of strings")


def _to_words(v: Any) -> list[str]:
    """A list of strings, or one string split on whitespace only (';' and ',' belong to the items)."""
    if isinstance(v, str):
        return v.split()
    return _to_list(v)


def _split_specs(s: str) -> list[str]:
    """Split 'rot90;rotate:step=15' or 'rot90 rotate:step=15' (';' or whitespace; commas belong to specs)."""
    return [p for chunk in s.split(";") for p in chunk.split()]


def _to_names(v: Any) -> list[str]:
    """Names separated by commas, ';' or whitespace (``pos,vel``), or a list of them."""
    return [n.strip() for p in _to_list(v) for n in p.split(",") if n.strip()]


def _to_input_pairs(v: Any) -> list[str]:
    """``NAME=KEY`` pairs (a model input and the data array that feeds it), as a list of strings."""
    pairs = _to_list(v)
    parse_input_map(pairs)
    return pairs


def parse_input_map(pairs: list[str] | None) -> dict[str, str]:
    """``["pos=positions", "h=features"]`` -> {"pos": "positions", "h": "features"}."""
    out: dict[str, str] = {}
    for item in pairs or []:
        name, sep, key = item.partition("=")
        if not sep or not name.strip() or not key.strip():
            raise ConfigError(f"Expected --input NAME=KEY (a model input and the data array that feeds it), got {item!r}, "
                              "do write e.g. --input pos=positions.")
        out[name.strip()] = key.strip()
    return out


def _to_seed(v: Any) -> int:
    out = _to_int(v)
    if out < 0:
        raise ValueError("a whole number >= 0")
    return out


def _to_count(v: Any) -> int:
    out = _to_int(v)
    if out < 1:
        raise ValueError("a whole number >= 1")
    return out


def _to_batch(v: Any) -> int | str:
    """Rows per model call: a whole number >= 1, or ``auto`` (eqaudit.models.batching)."""
    if isinstance(v, str) and v.strip().lower() == "auto":
        return "auto"
    try:
        return _to_count(v)
    except ValueError:
        raise ValueError("a whole number >= 1 or auto") from None


def _to_size(v: Any) -> int:
    out = _to_int(v)
    if out < 0:
        raise ValueError("a whole number >= 0 (0: all)")
    return out


def _to_fraction(v: Any) -> float:
    out = _to_float(v)
    if not 0.0 < out < 1.0:
        raise ValueError("a number between 0 and 1 (exclusive)")
    return out


def _to_float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("a number")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError("a number") from None


def _to_gates(v: Any) -> list[GateSpec]:
    """``{"flip_rate": 0.05}`` or ``["flip_rate=0.05", ...]`` or ``"flip_rate=0.05,prob_tv=5%"``: parsed
    once into GateSpecs (see eqaudit.gates), each in its metric's natural direction."""
    return fail_over_specs(v)


def _to_layout(v: Any) -> str:
    """Input layouts (see eqaudit.layouts), case-insensitive: ``nhwc`` -> ``NHWC``; per input ``NAME=LAYOUT``,
    repeated (a list) or comma-separated, kept as one canonical string."""
    from .layouts import normalise_spec

    return normalise_spec(v)


def _to_formats(v: Any) -> list[str]:
    """Output formats (see eqaudit.report.base): ``"json,junit"``, a list of names, or ``all``."""
    return parse_formats(v)


def _to_gate_list(v: Any) -> list[GateSpec]:
    """Gates (see eqaudit.gates): a gate string or a list of them, or a table keyed by symmetry
    (``[gates] rot90 = ["flip_rate <= 0.01"]``); parsed once into GateSpecs."""
    return gate_specs(v)


def plain_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings values as JSON holds them: gates as their canonical text, --fail-over as METRIC -> bound."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
    if isinstance(out.get("fail_over"), list):
        out["fail_over"] = {g.metric: g.threshold for g in out["fail_over"]}
    if isinstance(out.get("gates"), list):
        out["gates"] = [g.text() if isinstance(g, GateSpec) else g for g in out["gates"]]
    return out


def _to_tolerances(v: Any) -> dict[str, str]:
    """Tolerances (see eqaudit.gates): ``0.02``, ``"5%"``, ``"level=5%"``, a list, or a table; stored as
    METRIC -> "0.02" / "5%" with ``*`` for every other metric."""
    return tolerances_to_strings(parse_tolerances(v))


@dataclass(frozen=True)
class Setting:
    """One setting, declared once: its config key and default, the converter that checks a value from
    any layer, its help, and how it appears on the command line. The typer options of the commands in
    ``commands`` (eqaudit.cli), the ``EQAUDIT_*`` variables, config-file validation, the fingerprint's
    split (eqaudit.fingerprint) and docs/settings.md are all derived from it."""

    name: str
    default: Any
    convert: Callable[[Any], Any]
    help: str  # the option's help; "[default: ...]" is appended (see default_text)
    is_path: bool = False  # a config file's relative path is relative to that file's folder
    files_allowed: bool = True  # may a config file set it?
    flag: str | None = None  # the command-line option, when it is not --NAME
    short: str | None = None  # a short alias, e.g. "-d"
    kind: str = "text"  # the option's form: one of KINDS
    choices: tuple[str, ...] = ()  # the only values allowed (checked after convert)
    default_text: str | None = None  # the "[default: ...]" in help when not the default value itself
    metavar: str | None = None  # the value's name in help when not the form's own (e.g. "INTEGER|auto")
    commands: tuple[str, ...] = ("scan",)  # the commands that take it as an option
    measured: bool = field(kw_only=True)  # does it change measured numbers? (the audit fingerprint keys on it)

    @property
    def option(self) -> str:
        return self.flag or f"--{self.name.replace('_', '-')}"

    def help_text(self, default_text: str | None = None) -> str:
        """The option's help with its default: ``model rows per call [default: 256]``."""
        shown = default_text or self.default_text
        if shown is None and self.kind != "switch" and self.default not in (None, [], {}):
            if self.kind == "on-off":
                shown = "on" if self.default else "off"
            elif isinstance(self.default, list):
                shown = ", ".join(map(str, self.default))
            else:
                shown = str(self.default)
        return self.help + (f" [default: {shown}]" if shown is not None else "")

    def from_flag(self, raw: Any) -> Any:
        """The value the option passes to ``resolve``, None when the user did not give it: a switch
        (``--local``, ``--no-cache``) sets the opposite of the default, an empty list is not given."""
        if self.kind == "switch":
            return (not self.default) if raw else None
        if self.kind == "list":
            return list(raw) if raw else None
        if self.kind == "path":
            return str(raw) if raw is not None else None
        return raw


KINDS = {
    "text": "one string (TEXT)",
    "int": "a whole number (INTEGER)",
    "number": "a number (NUMBER)",
    "path": "a file or folder (PATH)",
    "list": "repeatable option (TEXT, given once per value)",
    "switch": "a flag without a value: --NAME (or the flag given) sets the opposite of the default",
    "on-off": "a pair of flags --NAME/--no-NAME",
}
"""The forms an option can take on the command line (eqaudit.cli maps each to a typer type)."""

_SCAN_AND_DISCOVER = ("scan", "discover")

SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("data", None, _to_str, "dataset PATH[:KEY] (.npz, .npy, .pt, image folder)", is_path=True, short="-d",
                commands=_SCAN_AND_DISCOVER, measured=False),
        Setting("symmetry", ["rot90", "flip"], _to_list, "symmetry spec, repeatable (see `eqaudit symmetries`)", short="-s",
                kind="list", measured=True),
        Setting("task", "classify", _to_str, "what the model outputs: classify, binary, dense, vector-field, points or boxes",
                measured=True),
        Setting("reference", "identity", _to_str, "compare against: identity, label or consensus",
                choices=("identity", "label", "consensus"), measured=True),
        Setting("targets_key", "targets", _to_str, "array of ground-truth outputs in the data file, for --reference label with non-classifier tasks", measured=True),
        Setting("device", "auto", _to_str, "auto, cpu, cuda, cuda:N or mps", commands=_SCAN_AND_DISCOVER, measured=False),
        Setting("batch_size", 256, _to_batch, "model rows per call, or auto: the largest that fits the device",
                metavar="INTEGER|auto", commands=_SCAN_AND_DISCOVER, measured=False),
        Setting("dtype", "float32", _to_str, "the model call's dtype: float32, float16 or bfloat16; the floor records the "
                "extra noise", choices=("float32", "float16", "bfloat16"), measured=True),
        Setting("floor_samples", 64, _to_size, "samples (a seeded subset) the floor is measured on; 0: all", kind="int", measured=True),
        Setting("prefetch", True, _to_bool, "build the next orbit chunk in a thread while the model runs (same numbers)",
                kind="on-off", measured=False),
        Setting("limit", None, _to_count, "use a seeded random subset of N samples", kind="int", commands=_SCAN_AND_DISCOVER,
                measured=True),
        Setting("seed", 0, _to_seed, "seed for subsets and random elements", kind="int", commands=_SCAN_AND_DISCOVER, measured=True),
        Setting("out", None, _to_str, "output folder", is_path=True, kind="path", default_text="reports/<model-stem>/",
                commands=_SCAN_AND_DISCOVER, measured=False),
        Setting("fail_over", [], _to_gates, "gate METRIC=VALUE on every symmetry, repeatable, e.g. flip_rate=0.05", kind="list",
                measured=False),
        Setting("gates", [], _to_gate_list, "gate [SYMMETRY[ELEMENT]:]METRIC<=VALUE or >=VALUE, repeatable, e.g. "
                "'rot90:flip_rate<=0.01', 'rot90[180]:flip_rate<=0.01', 'level_ci_low>=0.9'", flag="--gate", short="-g",
                kind="list", measured=False),
        Setting("baseline", None, _to_str, "a previous result.json: fail when a metric got worse than there", is_path=True,
                kind="path", measured=False),
        Setting("max_regression", {}, _to_tolerances, "allowed worsening against --baseline: 0.02, 5% or METRIC=VALUE, repeatable",
                kind="list", default_text="0.01", measured=False),
        Setting("junit_xml", None, _to_str, "write a JUnit XML file: one test case per gate and baseline metric", is_path=True,
                kind="path", measured=False),
        Setting("format", list(FORMATS), _to_formats, "outputs to write, comma-separated or repeated: json, orbits, csv, html, "
                "junit, summary, annotations or all; result.json is always written, html implies orbits", kind="list",
                default_text="all", measured=False),
        Setting("input_shape", None, _to_str, "per-sample shape for flat inputs, e.g. 1x8x8", commands=_SCAN_AND_DISCOVER,
                measured=True),
        Setting("layout", "auto", _to_layout, "axes of the model's input batch: auto, NCHW, NHWC (channels-last), NCL, NLC "
                "(1-D signals), NPD (point sets), NCDHW or NDHWC (volumes); per input NAME=LAYOUT, repeatable or "
                "comma-separated", kind="list", default_text="auto", commands=_SCAN_AND_DISCOVER, measured=True),
        Setting("input", [], _to_input_pairs, "NAME=KEY: feed model input NAME from data array KEY, repeatable (models with "
                "several inputs)", kind="list", measured=True),
        Setting("act_on", [], _to_names, "model inputs the symmetry moves, NAME[=TYPE],...: positions (default, shifted too), vector or "
                "pseudovector (turned only), e.g. pos,vel=vector", default_text="the first input",
                measured=True),
        Setting("output_name", None, _to_str, "which output of a multi-output model to measure", commands=_SCAN_AND_DISCOVER,
                measured=True),
        Setting("output", [], _to_words, "declare how the group acts on an output, [NAME=]TYPE, repeatable: invariant, "
                "label-perm:GEN=i,j,..., binary, vector, pseudovector, vector-per-point, scalar-per-point, map, field, boxes "
                "(replaces --task)", kind="list", measured=True),
        Setting("output_kind", "auto", _to_str, "classifier outputs: auto, logits or probabilities",
                choices=("auto", "logits", "probabilities"), measured=True),
        Setting("model_factory", None, _to_str, "module:callable building the architecture for a state dict",
                commands=_SCAN_AND_DISCOVER, measured=True),
        Setting("local", False, _to_bool, "also measure the Lie derivative (local error) at the identity", kind="switch",
                measured=True),
        Setting("layers", False, _to_bool, "attribute the local error to layers (torch models; implies --local)", kind="switch",
                measured=True),
        Setting("extent_tolerance", 0.1, _to_fraction, "level drop from 1 that bounds the extent", kind="number", measured=True),
        Setting("level_at_init", False, _to_bool, "also measure freshly initialised weights (what the architecture alone "
                "gives)", kind="switch", measured=True),
        Setting("trust", False, _to_bool, "allow pickled modules and TorchScript (they run code when loaded)",
                files_allowed=False, kind="switch", commands=_SCAN_AND_DISCOVER, measured=False),
        Setting("nproc", 1, _to_count, "processes to run the audit on, on this machine (torch.distributed; one per GPU), one "
                "result as from one process; torchrun sets its own", kind="int", measured=False),
        Setting("cache", True, _to_bool, "measure afresh even when the output folder holds the complete result of the same "
                "audit", flag="--no-cache", kind="switch", measured=False),
    ]
}

CHOICES = {k: s.choices for k, s in SETTINGS.items() if s.choices}


@dataclass
class Settings:
    """Effective values plus, for each, where it came from (``sources``) and, for values read from a
    config file, that file's folder (``bases``; model factories are imported from there)."""

    values: dict[str, Any]
    sources: dict[str, str]
    bases: dict[str, Path] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    project: Path | None = None  # the folder of the nearest pyproject.toml at or above the current directory

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


def _unknown(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, SETTINGS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(SETTINGS)}"
    return ConfigError(f"Unknown setting {key!r} in {where}; {hint}")


def _convert(name: str, value: Any, where: str) -> Any:
    setting = SETTINGS[name]
    if value is None:
        return None
    try:
        out = setting.convert(value)
    except ValueError as exc:
        raise ConfigError(f"Setting {name!r} from {where}: expected {exc}, got {value!r}.") from None
    except ConfigError as exc:
        raise ConfigError(f"Setting {name!r} from {where}: {exc}") from None
    if name in CHOICES and out not in CHOICES[name]:
        close = difflib.get_close_matches(str(out), CHOICES[name], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"Setting {name!r} from {where}: expected one of {', '.join(CHOICES[name])}, got {out!r}.{hint}")
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """A config, sidecar or pyproject file as a table; unreadable, non-UTF-8 or invalid TOML is a ConfigError."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PathNotFoundError(f"Config file {str(path)!r} does not exist; check the path given to --config.") from None
    except OSError as exc:
        raise ConfigError(f"Config file {str(path)!r} cannot be read ({exc.strerror or exc}); check its permissions.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8 TOML.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid TOML: {exc}; fix the syntax.") from None


def find_pyproject(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def sidecar_for(model: Path) -> Path:
    name = model.name
    stem = name[: -len(model.suffix)] if model.suffix else name
    return model.with_name(stem + SIDECAR_SUFFIX)


def resolve(
    flags: Mapping[str, Any],
    *,
    models: list[Path] = (),
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Merge every layer into effective settings; ``flags`` holds only options the user gave (not None)."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else Path(cwd)
    values = {k: s.default for k, s in SETTINGS.items()}
    sources = {k: "default" for k in SETTINGS}
    bases: dict[str, Path] = {}
    files: list[Path] = []

    def apply_file(table: Mapping[str, Any], where: str, base: Path) -> None:
        for key, raw in table.items():
            k = key.replace("-", "_")
            if k not in SETTINGS:
                raise _unknown(key, where)
            if not SETTINGS[k].files_allowed:
                raise ConfigError(f"Setting {key!r} cannot be set in {where}; pass {SETTINGS[k].option} on the command line.")
            value = _convert(k, raw, where)
            if SETTINGS[k].is_path and value is not None:
                value = _resolve_path(value, base)
            values[k], sources[k], bases[k] = value, where, base

    pyproject = find_pyproject(cwd)
    if pyproject is not None:
        tool = read_toml(pyproject).get("tool", {})
        table = tool.get("eqaudit") if isinstance(tool, dict) else None
        if table is not None:
            if not isinstance(table, dict):
                raise ConfigError(f"[tool.eqaudit] in {str(pyproject)!r} must be a table.")
            apply_file(table, f"[tool.eqaudit] in {pyproject}", pyproject.parent)
            files.append(pyproject)

    if config_file is not None:
        config_file = Path(config_file)
        apply_file(read_toml(config_file), f"config {config_file}", config_file.parent.resolve())
        files.append(config_file)
    elif models:
        sidecar = sidecar_for(Path(models[0]))
        if sidecar.is_file():
            apply_file(read_toml(sidecar), f"sidecar {sidecar}", sidecar.parent.resolve())
            files.append(sidecar)

    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key.startswith(RESERVED_ENV_PREFIX):
            continue
        k = key[len(ENV_PREFIX) :].lower()
        if k not in SETTINGS:
            raise _unknown(k, f"environment variable {key}")
        values[k], sources[k] = _convert(k, raw, f"environment variable {key}"), f"env {key}"
        bases.pop(k, None)

    for k, value in flags.items():
        if value is None:
            continue
        if k not in SETTINGS:
            raise _unknown(k, "options")
        option = SETTINGS[k].option
        values[k], sources[k] = _convert(k, value, option), f"flag {option}"
        bases.pop(k, None)
    return Settings(values, sources, bases, files, pyproject.parent.resolve() if pyproject is not None else None)


def _resolve_path(value: str, base: Path) -> str:
    """Resolve a config-file path against the file's folder, keeping a ``:KEY`` suffix (data)."""
    p = Path(value)
    if p.is_absolute():
        return value
    candidate = base / value
    if ":" in value and not candidate.exists():
        head, key = value.rsplit(":", 1)
        if (base / head).exists():
            return f"{base / head}:{key}"
    return str(candidate)


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"1x8x8"`` -> (1, 8, 8)."""
    try:
        dims = tuple(int(p) for p in text.lower().replace("*", "x").replace(",", "x").split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"Expected --input-shape like 1x8x8 (positive integers joined by 'x'), got {text!r}.")
    return dims
