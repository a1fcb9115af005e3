"""Local symmetry error at the identity (the Lie derivative) and its split into per-layer contributions.

For a continuous symmetry with generator X, the Lie derivative of the model is
  L_X f (x) = d/dt [ S_t^{-1} f(T_t x) ] at t = 0 = J_f(x) v - dS f(x),   v = d/dt T_t x at t = 0.
v comes from the symmetry (``Symmetry.tangents``); J_f(x) v from forward-mode autograd
(``torch.func.jvp``) for torch models, or from a central difference f(x + e v) - f(x - e v) for
other backends (labelled approximate). Invariant tasks (classify) have dS = 0. The number reported is
the mean over samples of the L2 norm of L_X p (p the task's compared output, e.g. probabilities),
root-sum-square over a symmetry's generators, per unit of t (per radian, pixel or log2 scale).

Per-layer attribution (torch modules): by the chain rule L_X f = sum_i J_{>i} L_X f_i over the leaf
modules f_i, where a layer's own Lie derivative L_X f_i(h) = J_{f_i}(h) X(h) - X(f_i(h)) uses the
same generator acting on its (B, C, H', W') feature maps (trivially on other tensors). Each term is
pushed to the output by forward-mode AD from a hook on that layer. Shares are each term's norm over
the sum of norms; ``layers_residual`` says how much of the total the leaf modules do not explain
(functional operations outside modules, such as ``torch.relu`` calls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from .data import Dataset
from .models import ReshapedInput
from .symmetries import Symmetry
from .tasks import Task

LAYER_SAMPLES = 64  # per-layer attribution uses at most this many samples (one forward pass per layer)
FD_RELATIVE_STEP = 1e-3  # central differences move the input by this share of its largest value


def _torch_parts(model) -> tuple[callable, nn.Module | None]:
    """A differentiable forward (sample-shaped input) and the nn.Module behind it, when the model has one."""
    inner = model.inner if isinstance(model, ReshapedInput) else model
    fwd = getattr(inner, "forward", None)
    if fwd is None or not getattr(inner, "supports_autograd", False):
        return None, None
    if isinstance(model, ReshapedInput):
        shape = model.model_shape
        return (lambda x: fwd(x.reshape(x.shape[0], *shape))), getattr(inner, "module", None)
    return fwd, getattr(inner, "module", None)


def _output_tangent(task: Task, sym: Symmetry, name: str, ref: Tensor) -> Tensor | None:
    fn = getattr(task, "output_tangent", None)
    return fn(sym, name, ref) if fn is not None else None


def directional_derivatives(model, task: Task, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor, str]:
    """(converted output at x, derivative of the converted output along v, method), x and v (B, ...)."""
    forward, _ = _torch_parts(model)
    if forward is not None:
        try:
            with torch.enable_grad():
                out, d = torch.func.jvp(lambda inp: task.lie_view(task.convert(forward(inp))), (x,), (v.to(x.dtype),))
            return out.detach(), d.detach(), "autograd (forward-mode jvp)"
        except (RuntimeError, NotImplementedError, TypeError):
            pass  # e.g. TorchScript or an op without forward-mode AD: fall back to differences
    scale = float(x.abs().max()) or 1.0
    vmax = float(v.abs().max())
    if vmax == 0.0:
        ref = task.lie_view(task.convert(model(x)))
        return ref, torch.zeros_like(ref), "central difference (approximate)"
    eps = FD_RELATIVE_STEP * scale / vmax
    step = (eps * v).to(x.dtype)
    view = lambda inp: task.lie_view(task.convert(model(inp)))  # noqa: E731
    plus, minus, ref = view(x + step), view(x - step), view(x)
    return ref, (plus - minus) / (2 * eps), "central difference (approximate)"


def lie_derivative(model, dataset: Dataset, sym: Symmetry, task: Task, *, batch_size: int) -> tuple[dict, np.ndarray | None]:
    """Summary entries (lie_derivative, its unit, method and per-generator parts) and the per-sample
    values (N,), or a reason when the symmetry has no continuous generator."""
    device = model.device
    probe = dataset.take(np.arange(1), device)
    if not sym.tangents(probe):
        return {"lie_derivative": None, "lie_derivative_reason": f"{sym.name} is a finite group: no generator"}, None
    n = len(dataset)
    names, unit, method = [], "", ""
    per_sample: np.ndarray | None = None
    for pos, x, _ in dataset.batches(batch_size, device):
        tangents = sym.tangents(x)
        if per_sample is None:
            names = [t[0] for t in tangents]
            unit = tangents[0][2]
            per_sample = np.zeros((n, len(tangents)))
        for g, (name, v, _) in enumerate(tangents):
            ref, d, method = directional_derivatives(model, task, x, v)
            dS = _output_tangent(task, sym, name, ref)
            if dS is not None:
                d = d - dS
            per_sample[pos, g] = d.reshape(d.shape[0], -1).norm(dim=1).cpu().numpy()
    total = np.sqrt((per_sample**2).sum(1))
    summary = {
        "lie_derivative": float(total.mean()),
        "lie_derivative_unit": f"per {unit}",
        "lie_derivative_method": method,
        "lie_derivative_parts": {name: float(per_sample[:, g].mean()) for g, name in enumerate(names)},
    }
    return summary, total


@dataclass
class _Spaces:
    """How the generator acts on the tensors between layers: as on the input for the model's input
    tensor, by the task's output action for the model's output tensor (trivially for invariant tasks),
    spatially on (B, C, H', W') image features in between (shifts scaled to the resolution), and
    trivially on anything else (vectors of per-point or pooled features)."""

    sym: Symmetry
    task: Task
    x: Tensor  # the input, sample-shaped (B, ...)

    def tangent(self, name: str, h: Tensor, role: str) -> Tensor:
        if not h.is_floating_point():
            return torch.zeros_like(h)
        if role == "input":
            return self._named(name, self.x).reshape(h.shape).to(h.dtype)
        if role == "output":
            out_tangent = getattr(self.task, "output_tangent", None)
            if out_tangent is None:
                return torch.zeros_like(h)
            return out_tangent(self.sym, name, self.task.lie_view(self.task.convert(h.detach()))).to(h.dtype)
        if self.sym.domain == "image" and h.ndim == 4 and h.shape[-1] > 1 and h.shape[-2] > 1:
            if self.sym.name == "rotate" and h.shape[-1] != h.shape[-2]:
                return torch.zeros_like(h)
            v = self._named(name, h)
            if name == "dx":
                v = v * (h.shape[-1] / self.x.shape[-1])
            elif name == "dy":
                v = v * (h.shape[-2] / self.x.shape[-2])
            return v
        return torch.zeros_like(h)

    def _named(self, name: str, h: Tensor) -> Tensor:
        found = {t[0]: t[1] for t in self.sym.tangents(h.detach())}
        return found[name].to(h.dtype) if name in found else torch.zeros_like(h)


def _role(t: Tensor, anchor: Tensor, role: str) -> str:
    """``role`` when ``t`` holds the same memory as ``anchor`` (the model's input or output), else "feature"."""
    same = t.data_ptr() == anchor.data_ptr() and t.numel() == anchor.numel()
    return role if same else "feature"


def layer_attribution(model, dataset: Dataset, sym: Symmetry, task: Task) -> dict:
    """Summary entries ``layers`` (name, share, norm; largest share first) and ``layers_residual``."""
    forward, module = _torch_parts(model)
    if forward is None or module is None:
        return {"layers": None, "layers_reason": "per-layer attribution needs a torch nn.Module (not ONNX or an export)"}
    device = model.device
    x = dataset.take(np.arange(min(len(dataset), LAYER_SAMPLES)), device)
    tangents = sym.tangents(x)
    if not tangents:
        return {"layers": None, "layers_reason": f"{sym.name} is a finite group: no generator"}
    units = computing_units(module)
    called: list[str] = []
    single: set[str] = set()

    def seen(mod, inp, out, name):
        called.append(name)
        if len(inp) == 1 and isinstance(inp[0], Tensor) and isinstance(out, Tensor):
            single.add(name)

    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: seen(mod, inp, out, name)) for name, m in units]
    try:
        with torch.no_grad():
            forward(x)
    finally:
        for h in handles:
            h.remove()
    used = [(name, m) for name, m in units if name in single]
    skipped = sorted({name for name in called if name not in single})
    if not used:
        return {"layers": None, "layers_reason": "the model has no modules of one tensor to attribute to (a flattened graph?)"}
    spaces = _Spaces(sym, task, x)
    sq = {name: 0.0 for name, _ in used}
    resid_sq, total_sq = 0.0, 0.0
    for gname, v, _ in tangents:
        ref, total, _ = directional_derivatives(model, task, x, v)
        dS = _output_tangent(task, sym, gname, ref)
        if dS is not None:
            total = total - dS
        summed = torch.zeros_like(total)
        for name, m in used:
            term = _term(forward, task, m, spaces, gname, x)
            sq[name] += float((term**2).sum())
            summed = summed + term
        resid_sq += float(((summed - total) ** 2).sum())
        total_sq += float((total**2).sum())
    norms = {k: math.sqrt(v) for k, v in sq.items()}
    z = sum(norms.values())
    layers = [{"name": k, "share": (v / z if z > 0 else 0.0), "norm": v / math.sqrt(len(x))} for k, v in norms.items()]
    layers.sort(key=lambda r: -r["share"])
    out = {"layers": layers, "layers_residual": math.sqrt(resid_sq / total_sq) if total_sq > 0 else 0.0}
    if out["layers_residual"] > 0.5:
        if skipped:
            out["layers_note"] = (f"the attributed modules explain little of the total; modules called with several inputs "
                                  f"or outputs could not be attributed ({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}) "
                                  "and may carry the rest, so read the shares with care")
        else:
            out["layers_note"] = ("the attributed modules explain little of the total: operations outside modules "
                                  "(functional calls, reshapes) carry most of it, so read the shares with care")
    return out


def computing_units(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules a Lie derivative is attributed to, each owning its computation: a module with its own
    parameters or buffers (an escnn R2Conv, whose child only builds the filter basis), or else a leaf;
    what lies below a unit is part of it. Export internals (``_guards_fn`` and other names starting
    with an underscore, which hold no weights) are left out."""
    units: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, m: nn.Module) -> None:
        for name, child in m.named_children():
            full = f"{prefix}.{name}" if prefix else name
            own = any(True for _ in child.parameters(recurse=False)) or any(True for _ in child.buffers(recurse=False))
            leaf = not any(True for _ in child.children())
            if name.startswith("_") and not own and not any(True for _ in child.parameters()):
                continue  # an export internal such as _guards_fn
            if own or leaf:
                units.append((full, child))
            else:
                visit(full, child)

    visit("", module)
    return units


def _term(forward, task: Task, layer: nn.Module, spaces: _Spaces, gname: str, x: Tensor) -> Tensor:
    """J_{>i} L_X f_i for one layer: its own Lie derivative, computed from the inputs it saw in a plain
    pass, injected as the forward-mode tangent of its output in a second pass (once per call)."""
    seen: list[tuple[Tensor, Tensor]] = []

    def record(mod, inputs, output):
        if len(inputs) == 1 and isinstance(inputs[0], Tensor) and isinstance(output, Tensor):
            seen.append((inputs[0].detach(), output.detach()))

    handle = layer.register_forward_hook(record)
    try:
        with torch.no_grad():
            final = forward(x)
    finally:
        handle.remove()
    own = []
    for h, out in seen:
        with torch.enable_grad():
            _, jv = torch.func.jvp(layer.forward, (h,), (spaces.tangent(gname, h, _role(h, x, "input")),))
        own.append(jv.detach() - spaces.tangent(gname, out, _role(out, final, "output")))
    if not own:
        return torch.zeros_like(task.lie_view(task.convert(forward(x))))
    calls = iter(own)

    def inject(mod, inputs, output):
        tangent = next(calls, None)
        if tangent is None:
            return None
        primal, existing = fwAD.unpack_dual(output)
        return fwAD.make_dual(primal, tangent if existing is None else existing + tangent)

    handle = layer.register_forward_hook(inject)
    try:
        with torch.no_grad(), fwAD.dual_level():
            out = task.lie_view(task.convert(forward(x)))
            tangent = fwAD.unpack_dual(out).tangent
    finally:
        handle.remove()
    return torch.zeros_like(out) if tangent is None else tangent.detach()
