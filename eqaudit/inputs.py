"""Several named model inputs: which data array feeds which input, and how one symmetry moves them all.

A model with several inputs is fed a dict {input name: tensor (R, ...)} in the model's declared
order. The symmetry acts on the inputs named by ``--act-on`` (the first of them is the sweep's x:
what symmetries check, what thumbnails show); every other input is repeated for each element in the
same element-major (E, B) row order, except that a point permutation (``permute``, or a product that
contains it) also permutes every other input with the same point axis (axis 1 of length P).

How the group moves each acted-on input is declared with it (``--act-on pos,vel=vector``, the types in
``MOVED_TYPES``, named like ``--output`` types): ``positions`` (the default) take the whole action,
shifts included; ``vector`` inputs (velocities, forces, displacements) are rotated, reflected and
permuted with the points but never shifted; ``pseudovector`` inputs are also multiplied by det(R).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError
from .layouts import Layout
from .symmetries.outputs import parity, point_action, point_permutation, sample_permutation

Batch = Union[Tensor, dict]  # one tensor (B, ...) or {input name: tensor (B, ...)}


@dataclass
class InputBinding:
    """How the data feeds a multi-input model: ``names`` in the model's order, ``keys`` the array
    that feeds each input, ``act_on`` the inputs the symmetry moves (``act_on[0]`` is the sweep's x)
    and ``arrays`` every input other than ``act_on[0]``: name -> (N_total, ...)."""

    names: list[str]
    keys: dict[str, str]
    act_on: list[str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    extras: list[str] = field(default_factory=list)  # FIELD_NAMES in the file that the model does not take
    layouts: dict[str, Layout] = field(default_factory=dict)  # inputs other than act_on[0] stored in a layout (--layout NAME=...)
    kinds: dict[str, str] = field(default_factory=dict)  # how the group moves an acted-on input, where not ``positions``

    @property
    def moved(self) -> dict[str, str]:
        """{acted-on input: its type in MOVED_TYPES}, in ``act_on`` order: what ``orbit`` takes as ``act_on``."""
        return {name: self.kinds.get(name, "positions") for name in self.act_on}

    @property
    def main(self) -> str:
        return self.act_on[0]

    def feed(self, x: Tensor, rows: np.ndarray, device) -> dict[str, Tensor]:
        """{name: (b, ...)} for the data rows ``rows``, with ``x`` (b, ...) as the main input; float arrays
        become float32, integer and bool arrays keep their dtype. The fixed-meaning arrays the model does
        not take (``extras``) ride along for the symmetry; adapters pass only the model's own inputs. Inputs
        with a declared layout (``layouts``) are handed out canonical, like ``x``."""
        out = {}
        for name in [*self.names, *self.extras]:
            out[name] = x if name == self.main else to_tensor(self.arrays[name][rows], device)
            if name in self.layouts:
                out[name] = self.layouts[name].to_canonical(out[name])
        return out


def to_tensor(raw, device) -> Tensor:
    """A numpy slice as a torch tensor on ``device``: floats as float32, integers and bools as they are
    (unsigned integers that torch lacks as int64)."""
    arr = np.asarray(raw)
    if not arr.dtype.isnative:  # big-endian files: torch takes native byte order only
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
    elif arr.dtype.kind == "u" and arr.dtype != np.uint8:
        arr = arr.astype(np.int64)
    return torch.as_tensor(np.ascontiguousarray(arr)).to(device)


def check_names(given: list[str], names: list[str], option: str) -> None:
    """Raise ConfigError for a name in ``given`` that is not one of the model's inputs ``names``."""
    for name in given:
        if name not in names:
            raise ConfigError(f"Expected {option} to name an input of the model ({', '.join(names)}), got {name!r}, do use one of those names.")


MOVED_TYPES = {
    "positions": "the whole action: rotated, reflected, permuted and shifted (the default)",
    "vector": "rotated, reflected and permuted with the points, never shifted (velocities, forces)",
    "pseudovector": "like vector, and multiplied by det(R) (angular velocities, magnetic fields)",
}
"""How the group acts on an input it moves (``--act-on NAME=TYPE``)."""


def split_act_on(act_on: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """``["pos", "vel=vector"]`` -> (["pos", "vel"], {"vel": "vector"}); ConfigError for an unknown type."""
    names, kinds = [], {}
    for item in act_on or []:
        name, sep, kind = (s.strip() for s in item.partition("="))
        if sep:
            if kind.lower() not in MOVED_TYPES or not name:
                raise ConfigError(f"Expected --act-on NAME or NAME=TYPE with TYPE one of {', '.join(MOVED_TYPES)}, got {item!r}, "
                                  "do write e.g. --act-on pos,vel=vector (positions shift, vectors only turn)")
            kinds[name] = kind.lower()
        names.append(name)
    return names, kinds


def resolve_act_on(names: list[str], act_on: list[str] | None) -> list[str]:
    """The inputs the symmetry moves: ``act_on`` (``NAME`` or ``NAME=TYPE``) checked against the model's
    ``names`` (default: the first)."""
    given, _ = split_act_on(act_on)
    if not given:
        return names[:1]
    check_names(given, names, "--act-on")
    return list(dict.fromkeys(given))


FIELD_NAMES = ("mask", "edge_index", "edge_mask")
"""Arrays with a fixed meaning wherever they appear: ``mask`` (N, P) marks the real points of padded
systems, ``edge_index`` (N, 2, M) lists edges as point indices (relabelled when points are permuted),
``edge_mask`` (N, M) marks the real edges. They are read from the data file whether or not the model
takes them, and travel with every batch under these names."""


def _repeat(t: Tensor, e: int, perm: Tensor | None) -> Tensor:
    """t (B, ...) -> (E, B, ...), permuted along the point axis when ``perm`` (E, B or 1, P) fits axis 1."""
    out = t.unsqueeze(0).expand(e, *t.shape)
    if perm is None or t.dim() < 2 or t.shape[1] != perm.shape[-1]:
        return out
    b, p, rest = t.shape[0], t.shape[1], t.shape[2:]
    index = perm.to(t.device).view(e, perm.shape[1], p, *([1] * len(rest))).expand(e, b, p, *rest)
    return torch.gather(out, 2, index)


def _relabel(edges: Tensor, e: int, perm: Tensor | None) -> Tensor:
    """edge_index (B, 2, M) -> (E, B, 2, M): point i of the input becomes point inv[i] of the permuted
    input (inv the inverse permutation), so every edge joins the same two atoms; edge order is kept."""
    out = edges.unsqueeze(0).expand(e, *edges.shape)
    if perm is None:
        return out
    b, m = edges.shape[0], edges.shape[-1]
    inv = torch.argsort(perm.to(edges.device), dim=-1).expand(e, b, perm.shape[-1])
    flat = out.reshape(e, b, 2 * m).to(torch.int64).clamp(0, perm.shape[-1] - 1)
    return torch.gather(inv, 2, flat).view(e, b, 2, m).to(edges.dtype)


def _move_masked(sym, t: Tensor, elements: Tensor, mask: Tensor, perm: Tensor | None) -> Tensor:
    """The action on one acted-on input (B, P, ...) of padded systems: the real points permuted among
    themselves (``perm`` (E, B, P) per sample) and moved by ``sym``; padded rows keep their values."""
    e = int(elements.shape[0])
    base = t.unsqueeze(0).expand(e, *t.shape)
    if perm is not None:  # pre-gather so that sym's own permutation lands on the per-sample one
        plain = torch.argsort(point_permutation(sym, elements).to(t.device), dim=1)  # (E, P) inverse
        pre = torch.gather(perm.to(t.device), 2, plain.unsqueeze(1).expand_as(perm))
        b, p, rest = t.shape[0], t.shape[1], t.shape[2:]
        base = torch.gather(base, 2, pre.view(e, b, p, *([1] * len(rest))).expand(e, b, p, *rest))
    moved = sym.apply(base, elements)
    keep = mask.to(t.device).view(1, *mask.shape, *([1] * (t.dim() - 2)))
    return torch.where(keep, moved, t.unsqueeze(0))


def _move_vectors(sym, t: Tensor, elements: Tensor, mask: Tensor | None, pseudo: bool, round_trip: bool) -> Tensor:
    """The action on a vector input (B, P, 3) (velocities): rows permuted with the points (per sample among
    the real points of ``mask``) and turned by the linear part, never shifted (times det(R) for
    pseudovectors); padded rows keep their values. ``round_trip``: there and back."""
    e = int(elements.shape[0])
    base = t.unsqueeze(0).expand(e, *t.shape)
    moved = point_action(sym, base, elements, mask=mask)
    if round_trip:
        moved = point_action(sym, moved, elements, inverse=True, mask=mask)
    elif pseudo:
        moved = moved * parity(sym, elements).to(moved).view(-1, *([1] * (moved.dim() - 1)))
    moved = moved.to(t.dtype)
    if mask is None:
        return moved
    return torch.where(mask.to(t.device).view(1, *mask.shape, *([1] * (t.dim() - 2))), moved, t.unsqueeze(0))


def orbit(sym, batch: Batch, elements: Tensor, act_on: list[str] | dict[str, str] | None = None, *, round_trip: bool = False) -> Batch:
    """g.x for every element: a tensor (B, ...) -> (E, B, ...), or a dict of them -> a dict of (E, B, ...).

    In a dict, the inputs in ``act_on`` (names, or {name: type in MOVED_TYPES}: ``InputBinding.moved``;
    ``vector`` and ``pseudovector`` inputs are turned, not shifted) are moved by ``sym`` (``round_trip``: there and back, for the
    floor); the others are repeated per element, permuted with the points when the action permutes them
    (not on a round trip, which permutes nothing). A ``mask`` (B, P) in the dict marks padded systems:
    permutations reorder only the real points of each sample (the same per-sample permutations that the
    tasks apply to the outputs, given the same mask: ``point_mask``); padded rows of acted-on inputs keep
    their values. An ``edge_index`` (B, 2, M) is relabelled under permutations. Nothing is stored on
    ``sym``: the orbit depends on its arguments only."""
    move = sym.round_trip if round_trip else sym.act
    if not isinstance(batch, dict):
        return move(batch, elements)
    mask = point_mask(batch)
    e = int(elements.shape[0])
    perm = None if round_trip else sample_permutation(sym, elements, mask)
    out = {}
    kinds = act_on if isinstance(act_on, dict) else {}
    for name, t in batch.items():
        if kinds.get(name, "positions") != "positions":
            out[name] = _move_vectors(sym, t, elements, mask, kinds[name] == "pseudovector", round_trip)
        elif name in act_on:
            masked = mask is not None and not round_trip and t.dim() >= 2 and t.shape[1] == mask.shape[1]
            out[name] = _move_masked(sym, t, elements, mask, perm) if masked else move(t, elements)
        elif name == "edge_index":
            out[name] = _relabel(t, e, perm)
        elif name == "edge_mask":
            out[name] = t.unsqueeze(0).expand(e, *t.shape)
        else:
            out[name] = _repeat(t, e, perm)
    return out


def point_mask(batch: Batch) -> Tensor | None:
    """The batch's point mask (B, P) bool (True: a real point) when it has a ``mask`` input, else None."""
    mask = batch.get("mask") if isinstance(batch, dict) else None
    return None if mask is None else mask != 0


def flatten(xg: Batch) -> Batch:
    """(E, B, ...) -> (E*B, ...), for a tensor or every tensor of a dict."""
    if isinstance(xg, dict):
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in xg.items()}
    return xg.reshape(-1, *xg.shape[2:])


def lead_shape(xg: Batch) -> tuple[int, int]:
    """(E, B) of an orbit batch."""
    t = next(iter(xg.values())) if isinstance(xg, dict) else xg
    return int(t.shape[0]), int(t.shape[1])


def describe(batch: Batch) -> str:
    """The shape(s) of a batch, for error messages."""
    if isinstance(batch, dict):
        return "{" + ", ".join(f"{k}: {tuple(v.shape)}" for k, v in batch.items()) + "}"
    return str(tuple(batch.shape))
