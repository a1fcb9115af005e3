"""Symmetry discovery (LieGG): the singular values of L[(n, o), g] = d/dt f_o(exp(t A_g) x_n) / (sqrt(N) s) over generator coefficients.

For generators A_1..A_G of a Lie algebra acting on the input (``--algebra``), the model f is
symmetric under the one-parameter group of A = sum_g c_g A_g iff d/dt f(exp(tA) x) = J_f(x) v_A(x) = 0
at t = 0 for every sample x, where v_A = sum_g c_g v_g is the input tangent. The condition is linear in
c, so stacking the Lie derivatives of every sample n and output o gives a matrix L with one column per
generator; ||L c|| for a unit vector c measures how far f is from being invariant under that
generator mixture. The singular values of L (smallest first) with their right singular vectors are the
symmetry spectrum: a singular value at the numerical floor is a learned symmetry and its vector says
which mixture of the named generators it is (Moskalev et al. 2022, "LieGG").

Normalisation: L is divided by sqrt(N) and by s, the RMS spread of the outputs about their mean
over the data (sqrt(mean_n ||f(x_n) - mean f||^2)), so a column's norm (a generator's own value)
and a singular value read as "RMS output change per unit of generator, in units of the outputs'
spread". Generators of the named algebras act in normalised coordinates in which a unit moves the
data by about its own size: image coordinates are pixels divided by max(H, W) / 2 (translations by
half the image, rotations in radians, scale, stretch and shear as e-folds); signals by L / 2; point
translations by the sample's RMS radius about its centroid (rotations in radians about the origin).
Catalogue symmetries named directly keep their own tangents and units (px, rad, log2).

J_f v comes from forward-mode autograd (torch.func.jvp) on torch models, or from a central
difference (f(x + h v) - f(x - h v)) / 2h with a per-sample step h (so results do not depend on the
batch) for other backends. L is accumulated as the R factor of a QR decomposition, batch by batch
(memory flat in the data). The floor is the same construction applied to the method's own error: for
jvp, J(a v) / a - J(v) with a = 0.7 (exact arithmetic gives 0: what is left is float noise); for central
differences, the difference quotients at steps h and 1.5 h (rounding noise of the quotient, plus its
truncation error); its largest singular value / sqrt(2) is the floor.

Verdicts per generator use the generator's own value (its column norm), never the singular vector it
dominates: ``learned`` at or below max(floor_factor x floor, learned_at), ``not`` at ``not_at`` or
more, ``partly`` between.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from . import __version__
from .config import plain_values
from .errors import ConfigError, DataError, ModelRunError, PathNotFoundError, SymmetryError
from .symmetries.images import spectral_derivative

LEARNED_AT = 1e-3  # a generator's value at or below max(FLOOR_FACTOR x floor, this) reads "learned"
NOT_AT = 0.1  # at or above this reads "not"
FLOOR_FACTOR = 10.0
FD_STEP = 1e-2  # central differences move each sample by this share of its largest value (float32: ~u^(1/3))
JVP_PROBE = 0.7  # the floor of jvp: J(a v) / a - J(v), a not a power of two so the rounding differs
LAYER_CHUNK = 32  # --layers keeps every leaf module's output for 2G passes: this many samples at a time
VECTOR_TERM_MIN = 0.01  # terms of a singular vector smaller than this are left out of its text

JVP_METHOD = "autograd (forward-mode jvp)"
FD_METHOD = "central difference (approximate)"


# ---------------------------------------------------------------------------------------------------------
# generators


@dataclass
class Generator:
    name: str
    unit: str
    description: str


@dataclass
class Algebra:
    """Named generators and how they act: ``tangents(x)`` -> (G, B, ...) float64 input tangents v_g(x)."""

    names: list[str]
    generators: list[Generator]
    tangents: Callable[[Tensor], Tensor]


def _image_grads(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Band-limited (Fourier) gradient of images x (B, C, H, W) in normalised coordinates (pixels over
    max(H, W) / 2), and the coordinate grids U (right) and V (down) about the image centre."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    c = max(h, w) / 2.0
    gu = spectral_derivative(x, -1) * c
    gv = spectral_derivative(x, -2) * c if h > 1 else torch.zeros_like(gu)
    u = ((torch.arange(w, dtype=torch.float64, device=x.device) - (w - 1) / 2.0) / c).view(1, 1, 1, w)
    v = ((torch.arange(h, dtype=torch.float64, device=x.device) - (h - 1) / 2.0) / c).view(1, 1, h, 1)
    return gu, gv, u, v


def _affine2d(x: Tensor) -> Tensor:
    """The six generators of aff(2) as v = -grad I . (A p + b), p = (U, V): the image moves along the
    flow A p + b (content at p goes to p + t (A p + b)). tx, ty: b = e_x, e_y; rot: A = [[0, 1], [-1, 0]]
    in (U, V-down) coordinates (right moves up: counter-clockwise as displayed, like ``rotate``); scale: A = I (>0
    enlarges); stretch: A = diag(1, -1) (wider, flatter); shear: A = [[0, 1], [1, 0]]."""
    gu, gv, u, v = _image_grads(x)
    return torch.stack([-gu, -gv, u * gv - v * gu, -(u * gu + v * gv), -(u * gu - v * gv), -(v * gu + u * gv)])


def _affine1d(x: Tensor) -> Tensor:
    """Signals (B, C, 1, L): shift t (to the right) and time stretch (>0 slows down), in units of L / 2."""
    gu, _, u, _ = _image_grads(x)
    return torch.stack([-gu, -(u * gu)])


def _point_radius(x: Tensor) -> Tensor:
    """(B, 1, 1): each cloud's RMS distance from its centroid (1 where it is 0)."""
    r = (x - x.mean(-2, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt().view(-1, 1, 1)
    return torch.where(r > 0, r, torch.ones_like(r))


def _so3(x: Tensor) -> Tensor:
    """Rotations about the x, y, z axes through the origin, per radian: v = x @ L_i^T."""
    from .symmetries.points import _generators

    xd = x.to(torch.float64)
    return torch.stack([xd @ g.to(x.device).T for g in _generators()])


def _translations3(x: Tensor) -> Tensor:
    r = _point_radius(x.to(torch.float64))
    eye = torch.eye(3, dtype=torch.float64, device=x.device)
    return torch.stack([(r * eye[i]).expand(*x.shape).to(torch.float64) for i in range(3)])


_TRANS_IMG = "half the image's larger side"
ALGEBRAS: dict[str, tuple[str, list[Generator], Callable[[Tensor], Tensor]]] = {
    "affine2d": ("image", [
        Generator("tx", _TRANS_IMG, "translation right"),
        Generator("ty", _TRANS_IMG, "translation down"),
        Generator("rot", "rad", "rotation, counter-clockwise as displayed"),
        Generator("scale", "e-fold", "isotropic zoom (>0 enlarges)"),
        Generator("stretch", "e-fold", "area-keeping stretch along x, squeeze along y"),
        Generator("shear", "e-fold", "symmetric shear (stretch along the diagonal)"),
    ], _affine2d),
    "shift1d": ("signal", [Generator("t", "half the signal's length", "shift to the right (later)")],
                lambda x: _affine1d(x)[:1]),
    "affine1d": ("signal", [Generator("t", "half the signal's length", "shift to the right (later)"),
                            Generator("stretch", "e-fold", "time stretch about the centre (>0 slows down)")], _affine1d),
    "so3": ("points", [Generator(n, "rad", f"rotation about the {n[1]} axis") for n in ("rx", "ry", "rz")], _so3),
    "se3": ("points", [Generator(n, "rad", f"rotation about the {n[1]} axis") for n in ("rx", "ry", "rz")]
            + [Generator(n, "RMS radius of the cloud", f"translation along {n[1]}") for n in ("tx", "ty", "tz")],
            lambda x: torch.cat([_so3(x), _translations3(x)])),
}


def data_domain(sample_shape: tuple[int, ...]) -> str:
    """"image" (C, H, W) with H > 1, "signal" (C, 1, L), "points" (P, 3), else "other"."""
    if len(sample_shape) == 3:
        return "signal" if sample_shape[1] == 1 else "image"
    if len(sample_shape) == 2 and sample_shape[-1] == 3:
        return "points"
    return "other"


DEFAULT_ALGEBRA = {"image": "affine2d", "signal": "affine1d", "points": "se3"}


def build_algebra(names: list[str] | None, sample_shape: tuple[int, ...], probe: Tensor, *, seed: int = 0) -> Algebra:
    """The generators ``names`` name (algebras above or catalogue symmetries with tangents), in order,
    checked against the data; the domain's default algebra when ``names`` is empty."""
    from .symmetries import parse_symmetry

    domain = data_domain(tuple(int(d) for d in sample_shape))
    if not names:
        if domain not in DEFAULT_ALGEBRA:
            raise ConfigError(f"Expected --algebra for data of shape {tuple(sample_shape)} (no default for it), got none, "
                              f"do name one: {', '.join(ALGEBRAS)} or a catalogue symmetry with generators")
        names = [DEFAULT_ALGEBRA[domain]]
    gens: list[Generator] = []
    parts: list[Callable[[Tensor], Tensor]] = []
    for name in names:
        if name in ALGEBRAS:
            want, g, fn = ALGEBRAS[name]
            if want != domain:
                fits = [a for a, (d, _, _) in ALGEBRAS.items() if d == domain]
                raise ConfigError(f"Expected {want} data for --algebra {name}, got samples of shape {tuple(sample_shape)} ({domain}), "
                                  f"do pick one for this data: {', '.join(fits) or 'a catalogue symmetry with generators'}"
                                  + (" (or --layout NCL/NLC for 1-D signals)" if domain == "image" and want == "signal" else ""))
            gens += g
            parts.append(fn)
            continue
        try:
            sym = parse_symmetry(name, seed=seed)
        except SymmetryError as exc:
            raise SymmetryError(f"Expected --algebra one of {', '.join(ALGEBRAS)} or a symmetry with generators, got {name!r} ({exc}), "
                                "do pick one of those algebras or a continuous symmetry such as rotate or translate") from None
        sym.check_input(tuple(sample_shape))
        found = sym.tangents(probe)
        if not found:
            raise SymmetryError(f"Expected --algebra to name a continuous symmetry, got {name!r} (a finite group: no generator), "
                                f"do use {', '.join(ALGEBRAS)} or one of rotate, scale, translate, so3, rotate-z, translate3d")
        gens += [Generator(n, unit, f"{sym.name} generator {n}") for n, _, unit in found]
        parts.append(lambda x, sym=sym: torch.stack([v.to(torch.float64) for _, v, _ in sym.tangents(x)]))
    seen = [g.name for g in gens]
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise ConfigError(f"Expected distinct generator names, got {', '.join(dup)} twice from --algebra {' '.join(names)}, "
                          "do name each algebra once")
    return Algebra(list(names), gens, lambda x: torch.cat([p(x) for p in parts]))


# ---------------------------------------------------------------------------------------------------------
# Lie derivatives


def differentiable_forward(model) -> Callable[[Tensor], Tensor] | None:
    """A differentiable forward taking canonical batches (through --layout and --input-shape wrappers),
    or None when the model is not a torch module (ONNX)."""
    from .layouts import LayoutInput
    from .models import ReshapedInput

    chain, inner = [], model
    while isinstance(inner, (LayoutInput, ReshapedInput)):
        chain.append(inner)
        inner = inner.inner
    if not getattr(inner, "supports_autograd", False) or not hasattr(inner, "forward"):
        return None

    def forward(x: Tensor) -> Tensor:
        for wrap in chain:
            x = wrap.layout.from_canonical(x) if isinstance(wrap, LayoutInput) else x.reshape(x.shape[0], *wrap.model_shape)
        return inner.forward(x)

    return forward


def _flat(out: Any) -> Tensor:
    if isinstance(out, (tuple, list)):
        raise ConfigError("Expected one model output for discover, got several, do pick one with --output-name")
    return out.reshape(out.shape[0], -1).to(torch.float64)


def _jvp_columns(forward, x: Tensor, tangents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """f (B, F) and, per generator, J v and J(a v)/a - J v: (B, F, G) each."""
    cols, errs, f = [], [], None
    with torch.enable_grad():
        for v in tangents:
            out, d = torch.func.jvp(forward, (x,), (v.to(x.dtype),))
            _, d2 = torch.func.jvp(forward, (x,), ((JVP_PROBE * v).to(x.dtype),))
            f = _flat(out.detach())
            d, d2 = _flat(d.detach()), _flat(d2.detach())
            cols.append(d)
            errs.append(d2 / JVP_PROBE - d)
    return f, torch.stack(cols, -1), torch.stack(errs, -1)


def _fd_columns(model, x: Tensor, tangents: Tensor, step: float) -> tuple[Tensor, Tensor, Tensor]:
    """Central differences with a per-sample step h_n = step * max|x_n| / max|v_n|, and the
    difference of the quotients at h and 1.5 h."""
    f = _flat(model(x))
    xd = x.to(torch.float64)
    b = x.shape[0]
    scale = xd.reshape(b, -1).abs().amax(1).clamp_min(1e-30)
    cols, errs = [], []
    for v in tangents:
        vmax = v.reshape(b, -1).abs().amax(1)
        moved = vmax > 0
        h = torch.where(moved, step * scale / torch.where(moved, vmax, torch.ones_like(vmax)), torch.ones_like(vmax))
        shape = (b,) + (1,) * (x.ndim - 1)
        quotients = []
        for hk in (h, 1.5 * h):
            hv = hk.view(shape) * v
            up, down = _flat(model((xd + hv).to(x.dtype))), _flat(model((xd - hv).to(x.dtype)))
            quotients.append(torch.where(moved.view(-1, 1), (up - down) / (2 * hk.view(-1, 1)), torch.zeros_like(up)))
        cols.append(quotients[0])
        errs.append(quotients[1] - quotients[0])
    return f, torch.stack(cols, -1), torch.stack(errs, -1)


def _stack_r(r: Tensor | None, rows: Tensor) -> Tensor:
    """The R factor of [R; rows] (G x G): the Gram matrix of every row seen so far, kept stably."""
    a = rows if r is None else torch.cat([r, rows])
    return torch.linalg.qr(a, mode="r").R[: a.shape[1]] if a.shape[0] >= a.shape[1] else a


class _Accumulator:
    """Lie-derivative rows, error rows and the outputs' mean and spread, merged batch by batch
    (R factors; Chan et al.'s update for the mean and squared deviations): memory flat in N."""

    def __init__(self, g: int):
        self.g, self.r_j, self.r_e = g, None, None
        self.n, self.mean, self.m2 = 0, None, 0.0

    def add(self, f: Tensor, jac: Tensor, err: Tensor) -> None:
        """f (B, F), jac and err (B, F, G)."""
        if not (torch.isfinite(jac).all() and torch.isfinite(f).all()):
            raise ModelRunError("Expected finite model outputs and derivatives, got NaN or infinite values on this data, "
                                "do check the model and the inputs (e.g. with eqaudit scan)")
        self.r_j = _stack_r(self.r_j, jac.reshape(-1, self.g).cpu())
        self.r_e = _stack_r(self.r_e, err.reshape(-1, self.g).cpu())
        fb = f.cpu()
        nb, mb = fb.shape[0], fb.mean(0)
        m2b = float((fb - mb).pow(2).sum())
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        delta = mb - self.mean
        self.m2 += m2b + float(delta.pow(2).sum()) * self.n * nb / (self.n + nb)
        self.mean = self.mean + delta * nb / (self.n + nb)
        self.n += nb

    def reduce(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, list[str]]:
        """(own values (G,), singular values ascending (G,), their vectors (G, G), floor, spread, notes)."""
        if self.n == 0:
            raise DataError("The data selection is empty; pass a dataset with at least one sample.")
        notes = []
        spread = math.sqrt(self.m2 / self.n)
        if spread == 0.0:
            notes.append("the outputs do not vary over the data: values are absolute output changes, not relative to the spread")
        z = math.sqrt(self.n) * (spread if spread > 0 else 1.0)
        rj, re = _square(self.r_j, self.g) / z, _square(self.r_e, self.g) / z
        _, s, vh = torch.linalg.svd(rj)
        order = torch.argsort(s)
        s, vh = s[order], vh[order]
        big = vh.abs().argmax(1)
        vh = vh * torch.sign(vh.gather(1, big.view(-1, 1)))
        floor = float(torch.linalg.matrix_norm(re, ord=2)) / math.sqrt(2.0)
        return rj.norm(dim=0).numpy(), s.numpy(), vh.numpy(), floor, spread, notes


@dataclass
class Spectrum:
    """What ``lie_spectrum`` measured (all normalised as the module docstring says)."""

    generators: list[Generator]
    values: np.ndarray  # (G,) each generator's own normalised Lie derivative
    singular_values: np.ndarray  # (G,) ascending
    vectors: np.ndarray  # (G, G) row k: the unit coefficient vector of singular_values[k] (largest |entry| positive)
    floor: float
    method: str
    spread: float
    n_samples: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    layers: list[tuple[str, Spectrum]] | None = None  # --layers: each leaf module's output, in module order
    layers_reason: str | None = None


def lie_spectrum(model, dataset, algebra: Algebra, *, batch_size: int, fd_step: float = FD_STEP,
                 layers: bool = False) -> Spectrum:
    """Lie derivatives of ``model`` along every generator of ``algebra`` over ``dataset`` (canonical
    batches), reduced to the normalised spectrum, the generators' own values and the floor; with
    ``layers``, the same for the output of every leaf module of a torch model."""
    t0 = time.perf_counter()
    forward = differentiable_forward(model)
    method = JVP_METHOD if forward is not None else FD_METHOD
    g = len(algebra.generators)
    total = _Accumulator(g)
    per_layer: dict[str, _Accumulator] = {}
    module = _module_of(model) if layers and forward is not None else None
    reason = None
    if layers and module is None:
        reason = "per-layer spectra need a torch nn.Module (not ONNX or an export)"
    for _, x, _ in dataset.batches(batch_size, model.device):
        tangents = algebra.tangents(x)
        if forward is not None:
            try:
                f, jac, err = _jvp_columns(forward, x, tangents)
            except (RuntimeError, NotImplementedError, TypeError):
                forward, method, module = None, FD_METHOD, None  # e.g. an op without forward-mode AD: differences from here on
                reason = reason or "per-layer spectra need forward-mode AD through the model"
        if forward is None:
            with torch.no_grad():
                f, jac, err = _fd_columns(model, x, tangents, fd_step)
        total.add(f, jac, err)
        for start in range(0, x.shape[0] if module is not None else 0, LAYER_CHUNK):  # memory: chunk x layers x 2G
            part = slice(start, start + LAYER_CHUNK)
            for name, cols in _layer_columns(forward, module, x[part], tangents[:, part]).items():
                per_layer.setdefault(name, _Accumulator(g)).add(*cols)

    def spectrum_of(acc: _Accumulator) -> Spectrum:
        values, s, vh, floor, spread, notes = acc.reduce()
        return Spectrum(algebra.generators, values, s, vh, floor, method, spread, acc.n, 0.0, notes)

    out = spectrum_of(total)
    if layers:
        out.layers_reason = reason
        if module is not None:
            out.layers = [(name, spectrum_of(acc)) for name, acc in per_layer.items()]
            if not out.layers:
                out.layers, out.layers_reason = None, "the model has no leaf modules with tensor outputs"
    out.seconds = time.perf_counter() - t0
    return out


def _module_of(model):
    """The nn.Module behind a (wrapped) torch adapter, or None."""
    inner = model
    while hasattr(inner, "inner"):
        inner = inner.inner
    module = getattr(inner, "module", None)
    return module if isinstance(module, torch.nn.Module) else None


def _layer_columns(forward, module: torch.nn.Module, x: Tensor, tangents: Tensor) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Per leaf module (its last call in a forward pass): its output (B, F) and the forward-mode
    tangents of that output along each generator, J_l v and J_l(a v)/a - J_l v (B, F, G)."""
    import torch.autograd.forward_ad as fwAD

    leaves = [(name, m) for name, m in module.named_modules() if name and not any(True for _ in m.children())]
    seen: dict[str, tuple[Tensor, Tensor | None]] = {}

    def record(name):
        def hook(mod, inputs, output):
            if isinstance(output, Tensor) and output.is_floating_point() and output.ndim >= 1 and output.shape[0] == x.shape[0]:
                primal, tangent = fwAD.unpack_dual(output)
                seen[name] = (primal.detach(), None if tangent is None else tangent.detach())
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in leaves]
    runs: list[dict[str, tuple[Tensor, Tensor | None]]] = []
    try:
        with torch.no_grad():
            for v in tangents:
                for scale in (1.0, JVP_PROBE):
                    seen.clear()
                    with fwAD.dual_level():
                        forward(fwAD.make_dual(x, (scale * v).to(x.dtype)))
                    runs.append(dict(seen))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, _ in leaves:
        if not all(name in r for r in runs):
            continue
        f = _flat(runs[0][name][0])
        tan = [torch.zeros_like(f) if r[name][1] is None else _flat(r[name][1]) for r in runs]
        jac = torch.stack(tan[0::2], -1)
        err = torch.stack(tan[1::2], -1) / JVP_PROBE - jac
        out[name] = (f, jac, err)
    return out


def _square(r: Tensor, g: int) -> Tensor:
    """R padded to G x G (fewer rows than generators: fewer than G output values in all)."""
    return r if r.shape[0] == g else torch.cat([r, torch.zeros(g - r.shape[0], g, dtype=r.dtype)])


# ---------------------------------------------------------------------------------------------------------
# verdicts and the result


def verdicts(values: np.ndarray, floor: float, *, learned_at: float = LEARNED_AT, not_at: float = NOT_AT,
             floor_factor: float = FLOOR_FACTOR) -> tuple[list[str], float]:
    """(verdict per value, the learned threshold max(floor_factor x floor, learned_at))."""
    learned = max(floor_factor * floor, learned_at)
    out = ["learned" if v <= learned else "not" if v >= not_at else "partly" for v in np.asarray(values).tolist()]
    return out, learned


def vector_text(vector: np.ndarray, names: list[str]) -> str:
    """A unit coefficient vector in named generators, largest first: "0.99 rot + 0.12 scale"."""
    order = np.argsort(-np.abs(vector), kind="stable")
    terms = [(float(vector[i]), names[i]) for i in order if abs(vector[i]) >= VECTOR_TERM_MIN] or [(float(vector[order[0]]), names[order[0]])]
    text = f"{terms[0][0]:.2f} {terms[0][1]}"
    for c, name in terms[1:]:
        text += f" {'-' if c < 0 else '+'} {abs(c):.2f} {name}"
    return text


def check_thresholds(learned_at: float, not_at: float, floor_factor: float) -> None:
    if not (learned_at > 0 and not_at > 0 and floor_factor > 0):
        raise ConfigError(f"Expected positive thresholds, got --learned-at {learned_at:g}, --not-at {not_at:g}, "
                          f"--floor-factor {floor_factor:g}, do pass positive numbers (defaults {LEARNED_AT:g}, {NOT_AT:g}, {FLOOR_FACTOR:g})")
    if learned_at >= not_at:
        raise ConfigError(f"Expected --learned-at below --not-at, got {learned_at:g} >= {not_at:g}, "
                          f"do pass e.g. --learned-at {LEARNED_AT:g} --not-at {NOT_AT:g}")


def _spectrum_entries(spec: Spectrum, learned_at: float, not_at: float, floor_factor: float) -> tuple[dict, float]:
    """The generators, spectrum and floor keys of one spectrum (the model's, or one layer's), and its
    learned threshold."""
    names = [g.name for g in spec.generators]
    verdict, learned = verdicts(spec.values, spec.floor, learned_at=learned_at, not_at=not_at, floor_factor=floor_factor)
    return {
        "floor": spec.floor,
        "output_spread": spec.spread,
        "generators": [{"name": g.name, "value": float(v), "verdict": vd, "unit": g.unit, "description": g.description}
                       for g, v, vd in zip(spec.generators, spec.values, verdict)],
        "spectrum": [{"value": float(s), "vector": dict(zip(names, (float(c) for c in vec))), "text": vector_text(vec, names),
                      "at_floor": bool(s <= learned)} for s, vec in zip(spec.singular_values, spec.vectors)],
    }, learned


def result_dict(spec: Spectrum, algebra: Algebra, *, model_info: dict, data_info: dict, settings: dict,
                learned_at: float = LEARNED_AT, not_at: float = NOT_AT, floor_factor: float = FLOOR_FACTOR) -> dict:
    """The JSON-ready result (``"kind": "discover"``); with per-layer spectra, ``layers`` holds one
    entry per leaf module ({"name", "floor", "output_spread", "generators", "spectrum"}, each value
    normalised by that layer's own output spread: is the layer's output invariant?)."""
    entries, learned = _spectrum_entries(spec, learned_at, not_at, floor_factor)
    notes = list(spec.notes)
    if learned >= not_at:
        notes.append(f"the floor ({spec.floor:.3g}) is so high that every generator below {learned:.3g} reads learned: "
                     "the method cannot resolve this model here (use a torch model for jvp)")
    out = {
        "kind": "discover",
        "eqaudit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model_info,
        "data": data_info,
        "algebra": list(algebra.names),
        "method": spec.method,
        "thresholds": {"learned": learned, "learned_at": learned_at, "floor_factor": floor_factor, "not_at": not_at},
        "normalisation": ("RMS output change per unit of generator over the RMS spread of the outputs about their mean "
                          f"(spread {spec.spread:.6g})"),
        **entries,
        "notes": notes,
        "settings": settings,
        "timing": {"seconds": spec.seconds},
    }
    if spec.layers is not None:
        out["layers"] = [{"name": name, **_spectrum_entries(layer, learned_at, not_at, floor_factor)[0]} for name, layer in spec.layers]
    elif spec.layers_reason is not None:
        out["layers"], out["layers_reason"] = None, spec.layers_reason
    return out


# ---------------------------------------------------------------------------------------------------------
# the command's facade


def run_discover(model_path: Path, settings, *, algebra: list[str] | None = None, learned_at: float = LEARNED_AT,
                 not_at: float = NOT_AT, floor_factor: float = FLOOR_FACTOR, layers: bool = False,
                 write: bool = True) -> tuple[dict, Path]:
    """Load the model and data ``settings`` name (as ``scan`` does), measure the spectrum, write
    result.json (and nothing else: the CLI renders the plot and page) to the output folder."""
    import json

    from .api import _as_called, _check_inputs, _load, default_out
    from .config import parse_input_map, parse_input_shape
    from .data import load_dataset
    from .models import resolve_device
    from .report.io import write_text_atomic

    model_path = Path(model_path)
    if not model_path.exists():
        raise PathNotFoundError(f"Model file {str(model_path)!r} does not exist; check the path.")
    if not settings.data:
        raise ConfigError("No data given; pass --data PATH (or set data in MODEL.eqaudit.toml).")
    if settings.batch_size != "auto" and settings.batch_size <= 0:
        raise ConfigError(f"Expected --batch-size to be a positive number of rows, got {settings.batch_size}.")
    check_thresholds(learned_at, not_at, floor_factor)
    device = resolve_device(settings.device)
    input_shape = parse_input_shape(settings.input_shape) if settings.input_shape else None
    factory_dirs = [settings.bases["model_factory"]] if "model_factory" in settings.bases else []
    adapter, _, _ = _load(model_path, settings, device, factory_dirs)
    dataset = load_dataset(settings.data, limit=settings.limit, seed=settings.seed, input_shape=input_shape,
                           layout=settings.layout, model_inputs=adapter.info.input_names,
                           input_map=parse_input_map(settings.input), act_on=settings.act_on)
    if dataset.binding is not None:
        raise ConfigError(f"Expected a model with one input for discover, got inputs {', '.join(dataset.binding.names)}, "
                          "do discover on a model that takes one tensor")
    _check_inputs(adapter, dataset)
    model = _as_called(adapter, dataset, input_shape is not None)
    probe = dataset.take(np.arange(1), device)
    alg = build_algebra(algebra, dataset.sample_shape, probe, seed=settings.seed)
    batch_size = settings.batch_size
    if batch_size == "auto":
        from .models.batching import auto_batch_size

        batch_size = auto_batch_size(model, dataset, device).size
    spec = lie_spectrum(model, dataset, alg, batch_size=batch_size, layers=layers)
    info = adapter.info
    out = result_dict(
        spec, alg,
        model_info={"path": info.path, "backend": info.backend, "format": info.format, "sha256": info.sha256,
                    "output_name": info.output_name, "device": str(device)},
        data_info={"path": dataset.path, "key": dataset.key, "n_samples": len(dataset), "n_total": dataset.n_total,
                   "sample_shape": list(dataset.sample_shape), "layout": dataset.layout.name},
        settings={"values": plain_values(settings.values),
                  "sources": dict(settings.sources)},
        learned_at=learned_at, not_at=not_at, floor_factor=floor_factor,
    )
    folder = Path(settings.out) if settings.out else default_out([model_path]) / "discover"  # beside, not over, a scan
    if write:
        write_text_atomic(folder / "result.json", json.dumps(out, indent=2, allow_nan=False) + "\n")
    return out, folder
