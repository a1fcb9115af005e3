"""Declared output types (``--output [NAME=]TYPE``): parse a declaration and build the Task that measures that output.

An output type says how a group element acts on one model output (its representation): not at all
(``invariant``, ``binary``), by permuting the classes (``label-perm``), by rotating 3-vectors
(``vector``, ``pseudovector`` with det(R), ``vector-per-point``), by reordering per-point rows
(``scalar-per-point``), or as molecules' outputs (``energy``, ``forces``, ``dipole``, ``charges``,
``positions``, ``tensor2``/``stress``, ``pseudoscalar``: eqaudit.tasks.energy and eqaudit.tasks.points), or by the image action (``map``, ``field``, ``boxes``); ``embedding`` learns the
action instead (a linear map per element fitted on held-out samples: eqaudit.tasks.embedding). The built-in tasks
(``--task``) are default bundles of these; a declaration replaces ``--task``.

Syntax: ``TYPE[:PARAMS]`` or ``NAME=TYPE[:PARAMS]``; the text is ``NAME=TYPE`` only when the part
before the first ``=`` holds no ``:`` (so ``label-perm:flip=1,0`` is a type, ``vote=label-perm:flip=1,0``
names the output ``vote``). ``label-perm`` takes one permutation per generator, ``GEN=i,j,...``
separated by ``;`` or ``/`` (class i becomes class i-th entry under that generator), e.g.
``label-perm:rot180=1,0`` or ``label-perm:flip=1,0,2/rot90=0,1,2``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError
from .base import Task
from .binary import BinaryTask
from .boxes import BoxesTask
from .classify import ClassifyTask
from .dense import DenseTask
from .embedding import EmbeddingTask
from .energy import EnergyTask
from .points import PointsTask
from .vector_field import VectorFieldTask

GENERATORS = ("rot90", "rot180", "flip", "swap")

OUTPUT_TYPES: dict[str, tuple[Callable[[dict], Task], str]] = {
    "invariant": (lambda p: ClassifyTask(scalars_ok=True), "unchanged by the group: logits or probabilities (B, K), or a scalar such as an energy"),
    "label-perm": (lambda p: ClassifyTask(perms=p), "class scores (B, K) whose classes the group permutes: label-perm:GEN=i,j,... per generator"),
    "binary": (lambda p: BinaryTask(), "one logit or probability per input, (B,) or (B, 1); decision at 0.5"),
    "vector": (lambda p: PointsTask("vector"), "one 3-vector per input (B, 3), rotated: R v"),
    "pseudovector": (lambda p: PointsTask("any", pseudo=True), "3-vectors (B, 3) or (B, P, 3) that reflections also flip: det(R) R v"),
    "vector-per-point": (lambda p: PointsTask("vector-per-point"), "one 3-vector per point (B, P, 3), rotated and reordered with the points"),
    "scalar-per-point": (lambda p: PointsTask("scalar-per-point"), "one scalar per point (B, P), reordered with the points"),
    "energy": (lambda p: EnergyTask(), "one invariant energy per system (B,) or (B, 1); also its error per atom (mask-aware)"),
    "forces": (lambda p: PointsTask("vector-per-point", physical=True), "one force per atom (B, P, 3), rotated and permuted; also rms_error (data units) and relative_error"),
    "dipole": (lambda p: PointsTask("vector"), "one dipole per system (B, 3), rotated: R d (the vector type)"),
    "charges": (lambda p: PointsTask("scalar-per-point"), "one charge per atom (B, P), reordered with the atoms (scalar-per-point)"),
    "positions": (lambda p: PointsTask("positions", physical=True), "next positions (B, P, 3) of a trajectory predictor, moved like the input points: rotated, shifted, permuted"),
    "tensor2": (lambda p: PointsTask("tensor2"), "one rank-2 tensor per system (B, 3, 3), e.g. a stress: R T R^T"),
    "stress": (lambda p: PointsTask("tensor2"), "a stress tensor per system (B, 3, 3): R T R^T (the tensor2 type)"),
    "pseudoscalar": (lambda p: PointsTask("pseudoscalar"), "one scalar per system (B,) or (B, 1) that reflections flip: det(R) s"),
    "map": (lambda p: DenseTask(), "dense maps (B, C, H, W) moved like the input image"),
    "field": (lambda p: VectorFieldTask(), "2-D vector fields (B, 2, H, W): moved like the image, every vector turned"),
    "boxes": (lambda p: BoxesTask(), "one box (x1, y1, x2, y2) per input, plus optional class scores"),
    "embedding": (lambda p: EmbeddingTask(), "an embedding (B, ...): per element the map M_g with phi(g.x) ~ M_g phi(x), fitted and scored on held-out samples"),
}


@dataclass(frozen=True)
class OutputDecl:
    """One ``--output`` declaration: the output's name (None: by position), its type and its parameters."""

    name: str | None
    type: str
    params: dict
    text: str

    def task(self) -> Task:
        return OUTPUT_TYPES[self.type][0](self.params)


def parse_output(text: str) -> OutputDecl:
    """``"[NAME=]TYPE[:PARAMS]"`` -> OutputDecl; ConfigError (exit 2) for unknown types or bad parameters."""
    raw = text.strip()
    name, spec = None, raw
    head = raw.split("=", 1)[0]
    if "=" in raw and ":" not in head:
        name, spec = head.strip(), raw.split("=", 1)[1].strip()
        if not name:
            raise ConfigError(f"Expected --output NAME=TYPE with a name before '=', got {text!r}, do write e.g. --output energy=invariant")
    kind, _, params = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in OUTPUT_TYPES:
        close = difflib.get_close_matches(kind, OUTPUT_TYPES, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid types: {', '.join(OUTPUT_TYPES)}"
        raise ConfigError(f"Unknown output type {kind!r} in --output {text!r}; {hint}")
    if kind == "label-perm":
        return OutputDecl(name, kind, _parse_perms(params, text), raw)
    if params.strip():
        raise ConfigError(f"Expected no parameters for output type {kind!r}, got {params!r} in --output {text!r}, do write --output {kind}")
    return OutputDecl(name, kind, {}, raw)


def _parse_perms(params: str, text: str) -> dict[str, list[int]]:
    example = "do write e.g. --output 'label-perm:rot180=1,0' (a half turn exchanges classes 0 and 1)"
    perms: dict[str, list[int]] = {}
    for part in [p.strip() for p in re.split(r"[;/]", params) if p.strip()]:
        gen, eq, listing = part.partition("=")
        gen = gen.strip()
        if not eq or gen not in GENERATORS:
            raise ConfigError(f"Expected GEN=i,j,... with GEN one of {', '.join(GENERATORS)} in --output {text!r}, got {part!r}, {example}")
        try:
            perm = [int(v) for v in listing.split(",")]
        except ValueError:
            raise ConfigError(f"Expected class indices i,j,... for {gen} in --output {text!r}, got {listing!r}, {example}") from None
        if sorted(perm) != list(range(len(perm))):
            raise ConfigError(
                f"Expected a permutation of 0..{len(perm) - 1} for {gen} in --output {text!r}, got {listing!r} "
                "(every class must appear once), " + example
            )
        perms[gen] = perm
    if not perms:
        raise ConfigError(f"Expected at least one GEN=i,j,... after 'label-perm:' in --output {text!r}, {example}")
    return perms
