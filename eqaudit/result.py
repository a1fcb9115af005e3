"""AuditResult: the tree that the JSON, plots, HTML and gates all read, with to_dict/from_dict."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ResultError

# Format history (bump on any incompatible change):
#   1  first release: models, data, symmetries[] (summary, per_element, gates), passed, timing.
FORMAT_VERSION = 1

MAX_LISTED_ELEMENTS = 8  # finite groups this small get one summary row per element (terminal, report)

ORBITS_FILE = "orbits.npz"
"""Per-sample orbit table written beside result.json.

Keys (j indexes ``symmetries[]``): ``sample_index`` (N,) dataset rows, ``labels`` (N,) when the data
has labels, and for each j ``s{j}.{metric}`` (N, E) per-sample values in sweep order (for
classifiers: ``prob_tv``, ``flipped``, ``correct``, ``true_class_prob``, ``pred``), ``s{j}.floor``
(N, E) where the action is resampled, ``s{j}.worst_index`` (k,) rows of N ranked worst first and
``s{j}.worst_x`` (k, ...) the inputs of those samples (no data file needed) and, for image symmetries,
``s{j}.thumb_elements`` (k, T) element rows (-1: none) with ``s{j}.thumb_x`` (k, T, C, H, W) those samples
transformed by those elements (the report's thumbnails, drawn without torch or the symmetry code; point
symmetries store (k, T, P, 3) structures, with ``s{j}.worst_mask`` (k, P) the real atoms of padded systems;
rot90/d4 in two shape groups (k, T, C, S, S), each image centred on an S = max(H, W) square) and what box, flow and map models output on those: ``s{j}.thumb_box`` (k, T, 4),
``s{j}.thumb_flow`` (k, T, 2, h, w) block means or ``s{j}.thumb_map`` (k, T, H', W') argmax classes, ``m{m}.box`` (N, 4)
or ``m{m}.flow`` (N, 2, 6, 6) what box and flow models output on every untransformed input, ``m{m}.null`` (M,) per model the null sample its levels were
estimated from, and for image data ``x_small`` (N, h, w, c) uint8 every sample's untransformed input, box-averaged
to at most 32 pixels a side (the report's sample explorer); for point clouds ``x_points`` (N, p, 3) float16 up to 64
evenly spaced points of each, with ``s{j}.point_matrix`` (E, 3, 3) and ``s{j}.point_shift`` (E, 3) per point symmetry,
its action on coordinates (the explorer moves the clouds with them). ``OrbitTable`` owns the scheme.
"""


class OrbitTable:
    """The per-sample arrays written as ORBITS_FILE, and the one owner of their key scheme
    (``s{j}.{key}`` per symmetry j of ``symmetries[]``, ``m{m}.null`` per model)."""

    def __init__(self, arrays: dict[str, np.ndarray] | None = None):
        self.arrays: dict[str, np.ndarray] = dict(arrays or {})

    @staticmethod
    def key(j: int, name: str) -> str:
        """The file's key of symmetry ``j``'s array ``name`` (e.g. ``s0.prob_tv``)."""
        return f"s{j}.{name}"

    @classmethod
    def start(cls, sample_index: np.ndarray, labels: np.ndarray | None) -> OrbitTable:
        table = cls({"sample_index": np.asarray(sample_index, dtype=np.int64)})
        if labels is not None:
            table.arrays["labels"] = labels
        return table

    def put(self, j: int, name: str, arr: np.ndarray) -> None:
        """Symmetry ``j``'s array ``name``; float64 values are stored as float32 (the file's per-sample
        values are for reports; the summaries in result.json were computed before)."""
        arr = np.asarray(arr)
        self.arrays[self.key(j, name)] = arr.astype(np.float32) if arr.dtype == np.float64 else arr

    def get(self, j: int, name: str) -> np.ndarray | None:
        return self.arrays.get(self.key(j, name))

    def put_null(self, m: int, null: np.ndarray | None) -> None:
        """The null sample of model ``m`` (kept so that a resumed audit estimates levels identically)."""
        if null is not None:
            self.arrays[f"m{m}.null"] = np.asarray(null, dtype=np.float64)

    def null(self, m: int) -> np.ndarray | None:
        return self.arrays.get(f"m{m}.null")

    SMALL_INPUTS = "x_small"

    def put_small_inputs(self, small: np.ndarray) -> None:
        """Every sample's untransformed input as a small 8-bit image (N, h, w, c) (eqaudit.report.thumbs.small_images)."""
        self.arrays[self.SMALL_INPUTS] = np.asarray(small, dtype=np.uint8)

    def put_sample_output(self, m: int, name: str, arr: np.ndarray) -> None:
        """What model ``m`` outputs on every sample's untransformed input, small (``m{m}.box``, ``m{m}.flow``)."""
        self.arrays[f"m{m}.{name}"] = arr

    def sample_output(self, m: int, name: str) -> np.ndarray | None:
        return self.arrays.get(f"m{m}.{name}")

    SMALL_POINTS = "x_points"

    def put_small_points(self, points: np.ndarray) -> None:
        """Every sample's untransformed point cloud, a few points of it in float16 (N, p, 3) (eqaudit.report.thumbs.small_points)."""
        self.arrays[self.SMALL_POINTS] = np.asarray(points, dtype=np.float16)

    def keep_first(self, n_symmetries: int, n_models: int) -> None:
        """Drop every array of symmetries j >= n_symmetries and models m >= n_models (what a checkpoint's
        result.json does not list: the orbit table is written just before it)."""
        for k in list(self.arrays):
            head, dot, _ = k.partition(".")
            if dot and head[:1] in "sm" and head[1:].isdigit():
                if int(head[1:]) >= (n_symmetries if head[0] == "s" else n_models):
                    del self.arrays[k]

    def to_bytes(self) -> bytes:
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, **self.arrays)
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path) -> OrbitTable:
        with np.load(path, allow_pickle=False) as z:
            return cls({k: z[k] for k in z.files})


RAW_LOGIT_KEYS = frozenset({"equivariance_error", "max_abs_error"})
"""Summary keys that, for classifier outputs (a summary with ``prob_tv``), measure raw logits: unbounded
and model-scaled, so they stay in result.json and elements.csv but out of tables, plots and baselines."""


def raw_logit_key(key: str, values: dict) -> bool:
    """Is ``key`` of a summary or per-element row a raw-logit value of a classifier output?"""
    return key in RAW_LOGIT_KEYS and "prob_tv" in values


@dataclass
class ModelInfo:
    path: str
    backend: str  # "torch" | "onnx"
    sha256: str
    input_shape: list[int]  # per-sample shape the symmetries act on, e.g. [1, 32, 32]
    format: str = ""  # "state_dict" | "export" | "onnx" | "pickle" | "torchscript"
    output_name: str | None = None
    output_kind: str = "logits"  # "logits" | "probabilities"
    notes: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # --output declarations as given, e.g. ["energy=invariant"]


@dataclass
class DataInfo:
    path: str
    n_samples: int
    has_labels: bool
    sample_shape: list[int] = field(default_factory=list)
    n_total: int = 0  # rows in the file before --limit
    classes: list[str] | None = None
    key: str | None = None
    has_targets: bool = False  # ground-truth outputs for --reference label (non-classifier tasks)
    targets_key: str | None = None  # the array they were read from
    layout: str = "auto"  # --layout the data (and model) use; symmetries see the canonical form (see eqaudit.layouts)
    inputs: dict[str, str] | None = None  # several model inputs: input name -> the data array that fed it
    act_on: list[str] | None = None  # several model inputs: the ones the symmetries moved (the first is x)


@dataclass
class Gate:
    metric: str
    op: str  # "<=" | ">=" | "<" | ">" (strict)
    threshold: float
    value: float | None
    passed: bool
    element: str | None = None  # the orbit element's label for a per-element gate (rot90[180]:...), else None

    @property
    def name(self) -> str:
        """The metric, with the element it was read at: ``flip_rate`` or ``flip_rate at 180°``."""
        return self.metric if self.element is None else f"{self.metric} at {self.element}"

    def describe(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.6g}"
        bound = ("inf" if self.op.startswith("<") else "-inf") if self.threshold is None else f"{self.threshold:g}"  # JSON has no inf
        return f"{self.name} = {shown} (must be {self.op} {bound})"


@dataclass
class SymmetryResult:
    model: int
    name: str
    spec: str
    exact: bool
    domain: str
    param_names: list[str]
    units: list[str]
    layout: str
    identity_index: int
    elements: list[list[float]]
    labels: list[str]
    summary: dict[str, Any]
    per_element: list[dict[str, Any]]
    task: str = "classify"
    reference: str = "identity"
    main_metric: str = ""  # the metric behind floor, null, level and the worst samples (e.g. "energy.equivariance_error")
    gates: list[Gate] = field(default_factory=list)
    passed: bool = True
    notes: list[str] = field(default_factory=list)  # what check_input said about binding to the data (e.g. a subgroup)

    def listed_elements(self) -> list[int]:
        """Indices of the non-identity elements that summaries list one row each: every one of a finite
        group of at most MAX_LISTED_ELEMENTS elements (rot90, flip, d4), none otherwise."""
        if self.layout != "finite" or not 1 < len(self.per_element) <= MAX_LISTED_ELEMENTS:
            return []
        return [e for e in range(len(self.per_element)) if e != self.identity_index]


@dataclass
class AuditResult:
    eqaudit_version: str
    created: str
    seed: int
    device: str
    models: list[ModelInfo]
    data: DataInfo
    symmetries: list[SymmetryResult]
    timing: dict[str, float]
    passed: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    orbits_file: str = ORBITS_FILE
    complete: bool = True  # False while a scan is still running or was interrupted (a checkpoint: see --resume)
    checkpoint: dict[str, Any] | None = None  # fingerprint (eqaudit.fingerprint) and models_finished, for --resume
    baseline: dict[str, Any] | None = None  # path, passed, compared, regressions[], missing[] (with --baseline)
    dtype: str = "float32"  # the model call's dtype (--dtype; eqaudit.models.precision)
    batch_size: int | None = None  # rows per model call (--batch-size, or what auto chose)
    batch_search: dict[str, Any] | None = None  # --batch-size auto: size, rule (search | cpu), tried [[rows, ran], ...]
    format_version: int = FORMAT_VERSION

    def fingerprint(self, model: int) -> list[tuple[str, float | None]]:
        """The level of every symmetry scanned for one model, side by side, in scan order."""
        return [(s.spec, s.summary.get("level")) for s in self.symmetries if s.model == model]

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditResult:
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ResultError(
                f"Expected result format_version {FORMAT_VERSION}, got {version!r}; "
                "re-run `eqaudit scan` with this version of eqaudit."
            )
        try:
            syms = []
            for s in d["symmetries"]:
                s = dict(s)
                s["gates"] = [Gate(**g) for g in s.get("gates", [])]
                syms.append(_build(SymmetryResult, s))
            return _build(
                cls,
                {
                    **d,
                    "models": [_build(ModelInfo, m) for m in d["models"]],
                    "data": _build(DataInfo, d["data"]),
                    "symmetries": syms,
                },
            )
        except (KeyError, TypeError) as exc:
            raise ResultError(f"result.json is missing or has malformed key {exc}; re-run `eqaudit scan`.") from exc

    def save(self, path: Path) -> None:
        from .report.io import write_text_atomic

        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> AuditResult:
        path = Path(path)
        if path.is_dir():  # a scan's output folder
            path = path / "result.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            from .errors import PathNotFoundError

            raise PathNotFoundError(f"Result file {str(path)!r} does not exist; pass the result.json a scan wrote.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ResultError(f"{str(path)!r} is not a JSON result ({exc}); pass the result.json a scan wrote.") from exc
        except OSError as exc:
            raise ResultError(f"{str(path)!r} could not be read ({exc.strerror}); pass the result.json a scan wrote.") from exc
        if isinstance(d, dict) and "format_version" not in d:
            raise ResultError(f"{str(path)!r} is JSON but not an eqaudit result (no format_version); pass the result.json a scan wrote.")
        if not isinstance(d, dict):
            raise ResultError(f"{str(path)!r} holds {type(d).__name__}, expected a JSON object; pass a result.json.")
        return cls.from_dict(d)

    def load_orbits(self, folder: Path) -> dict[str, np.ndarray]:
        """The per-sample orbit table saved beside result.json in ``folder``."""
        path = Path(folder) / self.orbits_file
        if not path.exists():
            raise ResultError(f"Orbit table {str(path)!r} is missing; keep it beside result.json or re-run the scan.")
        return OrbitTable.load(path).arrays


def _build(cls, d: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
