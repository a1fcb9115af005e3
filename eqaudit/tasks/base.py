"""The Task interface: how a kind of model output is compared along an orbit (what the sweep calls per chunk)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..symmetries import Symmetry

REFERENCES = ("identity", "label", "consensus")


class Task(ABC):
    """One kind of output (classifier logits, dense maps, vector fields, points, boxes).

    Shapes: E elements, B samples, K classes. The sweep calls, per batch: ``check_output`` and
    ``setup`` on the first reference output, ``convert`` on every raw output, ``compare`` on each
    chunk of the orbit, ``compare`` with identity elements on round-tripped inputs (the floor), and,
    after the sweep, ``summarize`` on the (N, E) per-sample table and ``null`` on reference outputs of
    different inputs.

    References (``--reference``): ``compare(ref, out, ...)`` always compares the outputs on the orbit
    with the reference ``ref`` (B, ...) moved by each element (S_g ref). ``ref`` is f(x) for
    ``identity``; the ground truth for ``label`` (``label_reference``: the integer labels y for tasks
    with ``supports_labels``, the data's ``targets`` (B, ...) for tasks with ``supports_targets``, so
    S_g moves the truth exactly as it moves f(x)); for ``consensus`` the orbit's outputs mapped back to the canonical frame
    (``canonical``) and averaged (``ConsensusAccumulator``), with the majority vote of the predicted
    classes (``class_scores``) passed as ``ref_class``.
    """

    name: str = ""
    main_metric: str = ""  # per-sample metric behind floor, null, level and worst-sample ranking
    label_metrics: frozenset[str] = frozenset()  # summary metrics that need labels
    supports_labels: bool = False  # can the integer labels y serve as the reference (--reference label)?
    supports_targets: bool = False  # can ground-truth outputs (the data's targets) serve as the reference?

    def check_output(self, out: Tensor, x: Tensor) -> None:
        """Raise ModelRunError when a raw output batch does not have this task's shape."""

    def setup(self, first: Tensor, output_kind: str) -> str:
        """Called once with the first raw reference output; returns the output kind recorded in the result."""
        return output_kind if output_kind != "auto" else "raw"

    def convert(self, out: Tensor) -> Tensor:
        """Raw model output (B, ...) or (E, B, ...) -> the representation that is compared (float64)."""
        return out.double()

    def lie_view(self, converted: Tensor) -> Tensor:
        """The part of a converted output that Lie derivatives differentiate (all of it by default)."""
        return converted

    @abstractmethod
    def compare(self, ref: Tensor, out: Tensor, sym: Symmetry, elements: Tensor, x: Tensor, y: Tensor | None,
                ref_class: Tensor | None = None, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Per-(element, sample) metrics: ref (B, ...) converted reference output in the canonical frame,
        out (E, B, ...) converted outputs on the transformed inputs, x (B, ...) the untransformed inputs,
        y (B,) labels or None, ref_class (B,) the reference's class where it is a vote (consensus) or a
        label (label reference), else None, mask (B, P) bool the batch's point mask (padded systems: True
        for real points; permutations reorder those only and per-point metrics leave the others out) or
        None. Returns (E, B) tensors, always including ``main_metric``."""

    def point_errors(self, ref: Tensor, out: Tensor, sym: Symmetry, elements: Tensor,
                     mask: Tensor | None = None) -> tuple[str, Tensor] | None:
        """(output name, (E, B, P) float64 per-point error norms |f(g.x)_p - (S_g f(x))_p|, 0 on padded points)
        for per-point vector outputs (forces, next positions), for the report's per-atom error bars; None
        for other outputs."""
        return None

    def floor_keys(self) -> dict[str, str]:
        """Which compare() results to keep from the round trip, and the table key to store them under."""
        return {self.main_metric: "floor"}

    def floor_pairs(self) -> list[tuple[str, str]]:
        """(compare() key, table key) pairs the sweep keeps from the round trip; one key may feed several."""
        return list(self.floor_keys().items())

    def accumulator(self, sym: Symmetry, n: int, seed: int, device):
        """A per-symmetry reduction over the whole sweep, or None (the default: per-sample tables only).
        The sweep calls ``add(pos, slice, ref (B, ...), out (E_c, B, ...))`` on every chunk and hands the
        accumulator back with the symmetry's table (``SymmetryTable.reduced``); the task's ``finish``
        turns it into summary keys (eqaudit.tasks.embedding)."""
        return None

    @abstractmethod
    def null(self, ref_a: Tensor, ref_b: Tensor) -> Tensor:
        """``main_metric`` between outputs of two different inputs: (M, ...), (M, ...) -> (M,)."""

    @abstractmethod
    def summarize(self, table: dict[str, np.ndarray], identity_index: int) -> tuple[dict, list[dict]]:
        """Summary over non-identity elements and per-element means from (N, E) per-sample arrays."""

    # ---- references ------------------------------------------------------------------------------------

    def check_reference(self, reference: str, has_labels: bool, has_targets: bool = False, targets_key: str = "targets") -> None:
        """Raise ConfigError (exit 2) when ``reference`` is unknown or cannot be used with this task and data."""
        if reference not in REFERENCES:
            raise ConfigError(f"Expected --reference to be one of {', '.join(REFERENCES)}, got {reference!r}.")
        if reference != "label":
            return
        if self.supports_labels:
            if not has_labels:
                raise ConfigError(
                    "Expected labels ('y' in the data) for --reference label, got data without labels; "
                    "add y or use --reference consensus."
                )
        elif self.supports_targets:
            if not has_targets:
                raise ConfigError(
                    f"Expected ground-truth targets (an array {targets_key!r} in the data, one true output per sample) for "
                    f"--reference label with --task {self.name}, got data without {targets_key!r} (class labels y alone are not ground-truth outputs of this task); "
                    "add the targets to the data file, name the array with --targets-key (e.g. --targets-key flow), or use --reference consensus."
                )
        else:
            raise ConfigError(
                f"Expected --reference identity or consensus for --task {self.name}, got label: this task has no "
                "ground-truth reference; use --reference consensus for unlabelled data."
            )

    def label_reference(self, y: Tensor | None, ref: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(reference in the output representation (B, ...), reference class (B,) or None) from labels y (B,)
        or, for tasks with ``supports_targets``, the ground-truth outputs ``targets`` (B, ...); ``ref``
        (B, ...) is f(x), for shape and dtype. The default takes targets of f(x)'s exact shape."""
        if not self.supports_targets or targets is None:
            raise NotImplementedError(f"task {self.name!r} has no label reference")
        check_target_shape(targets, ref, self.name)
        return targets.to(device=ref.device, dtype=torch.float64), None

    def canonical(self, out: Tensor, sym: Symmetry, elements: Tensor, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """S_g^-1 of each output, mapping it back to the canonical frame: out (E, B, ...) -> (E, B, ...),
        plus a weight broadcastable to it (0 where the mapped-back content is not valid) or None.
        The default is right for invariant outputs (classifiers)."""
        return out, None

    def class_scores(self, out: Tensor) -> Tensor | None:
        """(E, B, K) scores whose argmax is the predicted class, for majority votes; None when the output has no classes."""
        return None

    def consensus(self, mean: Tensor, votes: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """(reference (B, ...), reference class (B,) or None) from the orbit mean in the canonical frame
        and the vote counts (B, K): the class with most votes, ties broken by the mean's scores."""
        if votes is None:
            return mean, None
        scores = self.class_scores(mean.unsqueeze(0))
        tie = 0.5 * torch.softmax(scores[0], -1) if scores is not None else 0.0
        return mean, (votes + tie).argmax(-1)


def check_target_shape(targets: Tensor, ref: Tensor, task: str, expected: str | None = None) -> None:
    """Raise DataError when ground-truth targets (B, ...) do not have the shape of the outputs (B, ...)."""
    if tuple(targets.shape) != tuple(ref.shape):
        want = expected or f"(N, {', '.join(map(str, ref.shape[1:]))}), the shape of the model's output"
        raise DataError(
            f"Expected targets of shape {want} for --task {task}, got rows of shape {tuple(targets.shape[1:])}, "
            "do store one ground-truth output per sample in the output's layout (or pick the array with --targets-key)."
        )


class ConsensusAccumulator:
    """Running sums over the chunks of one batch's orbit for the consensus reference, so the answer
    does not depend on how elements are chunked: sum of weighted canonical outputs, sum of weights,
    and one-hot votes of the predicted classes."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.total: Tensor | None = None
        self.weight: Tensor | None = None
        self.votes: Tensor | None = None

    def add(self, out: Tensor, sym: Symmetry, elements: Tensor, x: Tensor, mask: Tensor | None = None) -> None:
        """out (E, B, ...) converted outputs of one chunk of elements; ``mask`` the batch's point mask (B, P) or None."""
        canon, w = self.task.canonical(out, sym, elements, x, mask=mask)
        canon = canon.to(torch.float64)
        w = torch.ones_like(canon) if w is None else torch.broadcast_to(w.to(canon), canon.shape)
        part, wpart = (canon * w).sum(0), w.sum(0)
        self.total = part if self.total is None else self.total + part
        self.weight = wpart if self.weight is None else self.weight + wpart
        scores = self.task.class_scores(canon)  # votes in the canonical frame (classes moved back for label-perm)
        if scores is not None:
            v = torch.nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).to(torch.float64).sum(0)
            self.votes = v if self.votes is None else self.votes + v

    def result(self, fallback: Tensor) -> tuple[Tensor, Tensor | None]:
        """(reference, reference class) for the batch; ``fallback`` (B, ...) fills entries no element covered."""
        mean = torch.where(self.weight > 0, self.total / self.weight.clamp_min(1e-300), fallback.to(torch.float64))
        return self.task.consensus(mean, self.votes)
