"""Input layouts (``--layout``): how one sample stored in the model's own axis order maps to the canonical form symmetries act on.

Symmetries always act on one canonical form per kind of data: images (B, C, H, W), 1-D signals as
images with one row (B, C, 1, L), point sets (B, P, D), volumes (B, C, D, H, W). The data file holds samples in the model's
layout; a :class:`Layout` converts a batch to the canonical form (``to_canonical``) where batches
are made, and back (``from_canonical``) right before every model call, so a model is always called
with its own layout and reports and thumbnails see canonical images.

=========  ======================  ======================
layout     one stored sample       canonical sample
=========  ======================  ======================
``NCHW``   (C, H, W)               (C, H, W)
``NHWC``   (H, W, C)               (C, H, W)
``NCL``    (C, L)                  (C, 1, L)
``NLC``    (L, C)                  (C, 1, L)
``NPD``    (P, D)                  (P, D)
``NCDHW``  (C, D, H, W)            (C, D, H, W)
``NDHWC``  (D, H, W, C)            (C, D, H, W)
``auto``   anything                unchanged (rank-4 data is NCHW, (N, P, 3) is NPD)
=========  ======================  ======================

A model with several inputs may take each in its own layout: ``--layout NAME=LAYOUT`` (repeatable or
comma-separated) names one input's layout; a bare ``--layout LAYOUT`` is the layout of the inputs the
symmetry moves (``--act-on``; of the only input for one-input models). ``parse_layouts`` reads the
setting; ``LayoutInput`` converts every named input of a dict batch with its own layout.

Pure functions of tensor shapes and axis permutations: no torch import, no copies of the data
beyond the one ``contiguous`` each conversion makes. Shapes: B batch, C channels, H, W pixels,
L signal length, P points, D coordinates (or, in volumes, slices).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, DataError

# name -> (axes of one stored sample, in order; axes of the canonical sample, in order)
_AXES: dict[str, tuple[str, str]] = {
    "NCHW": ("CHW", "CHW"),
    "NHWC": ("HWC", "CHW"),
    "NCL": ("CL", "CL"),
    "NLC": ("LC", "CL"),
    "NPD": ("PD", "PD"),
    "NCDHW": ("CDHW", "CDHW"),
    "NDHWC": ("DHWC", "CDHW"),
}
LAYOUT_NAMES: tuple[str, ...] = ("auto", *_AXES)
"""Every value ``--layout`` accepts (``auto`` keeps today's behaviour: the data is taken as it is)."""


def normalise(name: Any) -> str:
    """``"nhwc"`` -> ``"NHWC"``, ``"Auto"`` -> ``"auto"``; ConfigError with a suggestion for an unknown name."""
    text = str(name).strip()
    out = "auto" if text.lower() == "auto" else text.upper()
    if out not in LAYOUT_NAMES:
        close = difflib.get_close_matches(out, list(LAYOUT_NAMES[1:]), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"Expected --layout one of {', '.join(LAYOUT_NAMES)}, got {text!r}, do name the axes of one input batch "
            f"(e.g. --layout NHWC for channels-last images, NCL for 1-D signals, NDHWC for channels-last volumes).{hint}"
        )
    return out


@dataclass(frozen=True)
class Layout:
    """One named layout: the axis order of a stored sample and how it maps to the canonical sample."""

    name: str

    @property
    def stored_axes(self) -> str | None:
        """Axis letters of one stored sample, e.g. ``"HWC"``; None for ``auto`` (any rank)."""
        return _AXES[self.name][0] if self.name in _AXES else None

    @property
    def is_identity(self) -> bool:
        """True when the stored sample already is the canonical one (auto, NCHW, NPD)."""
        if self.name == "auto":
            return True
        stored, canonical = _AXES[self.name]
        return stored == canonical and "L" not in stored  # signals gain a unit row even in NCL

    def check(self, sample_shape: tuple[int, ...]) -> None:
        """DataError when one stored sample of ``sample_shape`` does not have this layout's rank."""
        axes = self.stored_axes
        if axes is None or len(sample_shape) == len(axes):
            return
        raise DataError(
            f"Expected samples of rank {len(axes)} ({', '.join(axes)}) for --layout {self.name}, got one sample of shape "
            f"{tuple(int(d) for d in sample_shape)} (rank {len(sample_shape)}), do pass the layout the model takes "
            f"({', '.join(LAYOUT_NAMES)}) or reshape the data (--input-shape for flat rows)"
        )

    def _order(self) -> tuple[int, ...]:
        """Permutation of the batched stored axes (B, ...) that puts them in canonical order."""
        stored, canonical = _AXES[self.name]
        return (0, *(1 + stored.index(a) for a in canonical))

    def canonical_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """One stored sample's shape -> the canonical sample's shape: (H, W, C) -> (C, H, W) for NHWC,
        (C, L) -> (C, 1, L) for NCL, (L, C) -> (C, 1, L) for NLC; unchanged for auto, NCHW and NPD."""
        shape = tuple(int(d) for d in sample_shape)
        self.check(shape)
        if self.name == "auto":
            return shape
        order = self._order()
        out = tuple(shape[i - 1] for i in order[1:])
        return (out[0], 1, out[1]) if "L" in _AXES[self.name][0] else out

    def to_canonical(self, x: Any) -> Any:
        """A batch (B, *stored sample) -> (B, *canonical sample), as one permute (+ a unit row for signals)."""
        if self.is_identity:
            return x
        self.check(tuple(x.shape[1:]))
        y = x.permute(*self._order())
        if "L" in _AXES[self.name][0]:
            y = y.unsqueeze(2)  # (B, C, L) -> (B, C, 1, L)
        return y.contiguous()

    def from_canonical(self, x: Any) -> Any:
        """A batch (B, *canonical sample) -> (B, *stored sample): the inverse of ``to_canonical``."""
        if self.is_identity:
            return x
        if "L" in _AXES[self.name][0]:
            if x.dim() != 4 or x.shape[2] != 1:
                raise DataError(
                    f"Expected canonical signals (B, C, 1, L) for --layout {self.name}, got {tuple(x.shape)}, "
                    "do report this: symmetries must keep the signal's single row"
                )
            x = x.squeeze(2)
        order = self._order()
        inverse = tuple(sorted(range(len(order)), key=lambda i: order[i]))
        return x.permute(*inverse).contiguous()

    def output_to_canonical(self, out: Any) -> Any:
        """A model output in this layout -> canonical: spatial outputs (dense maps, vector fields) of a
        model called in a channels-last or 1-D layout come in the same layout as its input, so an
        output with the stored sample's rank, e.g. (B, H', W', K) for NHWC or (B, K, L') for NCL, is
        moved like an input (to (B, K, H', W') or (B, K, 1, L')); other outputs (logits (B, K), vectors,
        boxes) are returned as they are."""
        axes = self.stored_axes
        if self.is_identity or axes is None or out.dim() != len(axes) + 1:
            return out
        return self.to_canonical(out)


def get_layout(name: Any) -> Layout:
    """The Layout called ``name`` (case-insensitive); ConfigError (exit 2) with a suggestion if unknown."""
    return Layout(normalise(name))


def normalise_spec(value: Any) -> str:
    """The ``layout`` setting as one canonical string: ``"nhwc"`` -> ``"NHWC"``, ``["img=nhwc", "NCL"]`` or
    ``"img=nhwc,NCL"`` -> ``"NCL,img=NHWC"`` (the bare layout first, then inputs by name); ConfigError for
    unknown layouts, an empty name, a name given twice or more than one bare layout."""
    parts = [p.strip() for item in (value if isinstance(value, (list, tuple)) else [value]) for p in str(item).split(",")]
    bare, named = None, {}
    for part in (p for p in parts if p):
        if "=" in part:
            name, _, lay = (s.strip() for s in part.partition("="))
            if not name or name in named:
                raise ConfigError(f"Expected --layout NAME=LAYOUT with one layout per input name, got {part!r}"
                                  f"{' again' if name else ' (no name)'}, do write e.g. --layout image=NHWC --layout audio=NCL")
            named[name] = normalise(lay)
        elif bare is not None:
            raise ConfigError(f"Expected at most one --layout without a name, got {bare!r} and {part!r}, do name the input "
                              "each one is for: --layout NAME=LAYOUT")
        else:
            bare = normalise(part)
    if not named:
        return bare or "auto"
    return ",".join([*([bare] if bare else []), *(f"{k}={v}" for k, v in named.items())])


def parse_layouts(value: Any) -> tuple[str | None, dict[str, str]]:
    """The ``layout`` setting -> (the bare layout, None for auto, {input name: layout})."""
    bare, named = None, {}
    for part in normalise_spec(value).split(","):
        if "=" in part:
            name, _, lay = part.partition("=")
            named[name] = lay
        elif part != "auto":
            bare = part
    return bare, named


class LayoutInput:
    """Wraps a model adapter whose model takes batches in ``layout`` while symmetries (and the sweep)
    hand out canonical batches: (B, *canonical) -> (B, *stored) before each call (like ReshapedInput
    for ``--input-shape``), and its spatial outputs back to canonical (``Layout.output_to_canonical``).
    A dict batch (several inputs) converts ``main`` with ``layout`` and every input named in ``inputs``
    with its own layout; the others pass as they are."""

    def __init__(self, inner: Any, layout: Layout, main: str | None = None, inputs: dict[str, Layout] | None = None):
        self.inner = inner
        self.layout = layout
        self.inputs = {**(inputs or {}), **({main: layout} if main is not None else {})}
        self.info = inner.info
        self.device = inner.device
        self.supports_autograd = inner.supports_autograd

    def __call__(self, batch: Any) -> Any:
        if isinstance(batch, dict):
            moved = {k: (self.inputs[k].from_canonical(v) if k in self.inputs else v) for k, v in batch.items()}
        else:
            moved = self.layout.from_canonical(batch)
        out = self.inner(moved)
        if isinstance(out, tuple):
            return tuple(self.layout.output_to_canonical(o) for o in out)
        return self.layout.output_to_canonical(out)
