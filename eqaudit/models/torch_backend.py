"""PyTorch adapters: state dicts with a factory, torch.export programs, and (with --trust) pickles and TorchScript."""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ModelLoadError, ModelRunError
from .base import AdapterInfo, sha256_of
from .batching import call_fixed_batch
from .factory import importable, resolve_factory
from .sniff import ZIP_MAGIC, check_not_foreign, zip_kind

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights", "ema")
PREFIXES = ("module.", "_orig_mod.")


class TorchAdapter:
    """Runs an ``nn.Module`` (or an exported program's module) in inference mode on one device."""

    supports_autograd = True
    input_dtypes: dict = {}  # input name -> the dtype a .pt2 program declares (several inputs are cast to it)

    def __init__(self, module: Any, info: AdapterInfo, device: torch.device, fixed_batch: int | None = None):
        self.module = module
        self.info = info
        self.device = device
        self.fixed_batch = fixed_batch

    def forward(self, batch) -> Tensor:
        """Differentiable call (no inference mode), for Lie derivatives and per-layer attribution; a dict
        {input name: (B, ...)} is passed positionally in the order of ``info.input_names``."""
        if isinstance(batch, dict):
            args = [batch[name] for name in self.info.input_names]
            if self.input_dtypes:
                args = [a.to(self.input_dtypes.get(name, a.dtype)) for name, a in zip(self.info.input_names, args)]
            return self._run(*args)
        return self._run(batch)

    def _run(self, *args) -> Tensor:
        """The module's output picked by ``_pick``; when ``info.output_name`` names a submodule (not an
        output key), that submodule's output on its first call in the forward pass (an intermediate
        output: ``--output backbone=embedding``)."""
        layer = self._layer()
        if layer is None:
            return self._pick(self.module(*args))
        got: list = []
        handle = layer.register_forward_hook(lambda _m, _i, o: got.append(o) if not got else None)
        try:
            out = self.module(*args)
        finally:
            handle.remove()
        if isinstance(out, dict) and self.info.output_name in out:
            return out[self.info.output_name]
        first = got[0] if got else None
        if isinstance(first, (tuple, list)) and first and isinstance(first[0], Tensor):
            first = first[0]
        if not isinstance(first, Tensor):
            raise ModelRunError(f"Expected a tensor from module {self.info.output_name!r} (--output-name), got "
                                f"{type(first).__name__}; do name a module that returns a tensor.")
        return first

    def _layer(self):
        """The submodule ``info.output_name`` names (an intermediate output), or None."""
        name = self.info.output_name
        if not name or self.wanted is not None or str(name).isdigit() or not isinstance(self.module, nn.Module):
            return None
        try:
            return self.module.get_submodule(name)
        except AttributeError:
            return None

    autograd_inside = False  # set on the first call that needs autograd (see __call__)

    def __call__(self, batch) -> Tensor:
        """Outputs for a batch, in inference mode. A model that computes an output by autograd inside its
        forward (forces = -dE/dpos: ``with torch.enable_grad(): pos.requires_grad_(); ... torch.autograd.grad``)
        cannot run in inference mode; when the first call fails for that reason, this and every later
        call run under ``torch.no_grad()`` instead, on clones of the inputs (inference tensors made by
        the sweep cannot enter autograd), so ``torch.enable_grad()`` inside forward works."""
        if not self.autograd_inside:
            try:
                with torch.inference_mode():
                    return call_fixed_batch(self.forward, self._to_device(batch), self.fixed_batch)
            except RuntimeError as exc:
                if not _needs_autograd(exc):
                    raise
                self.autograd_inside = True
                self.info.notes.append("the model calls autograd inside forward: run under no_grad, not inference mode")
        with torch.inference_mode(False), torch.no_grad():
            batch = self._to_device(batch)
            batch = {k: v.clone() for k, v in batch.items()} if isinstance(batch, dict) else batch.clone()
            return call_fixed_batch(self.forward, batch, self.fixed_batch)

    def _to_device(self, batch):
        if isinstance(batch, dict):
            return {k: v.to(self.device) for k, v in batch.items()}
        return batch.to(self.device)

    wanted: list[str | None] | None = None  # several declared outputs, returned as a tuple (select())

    def select(self, names: list[str | None]) -> None:
        """Return several outputs as a tuple, one per declared name: a dict output by key (None: the i-th
        key), a tuple output by position (a name that is a number picks that index)."""
        self.wanted = list(names)
        self.info.outputs = [n if n is not None else f"#{i}" for i, n in enumerate(names)]

    def _pick(self, out: Any) -> Tensor | tuple[Tensor, ...]:
        if self.wanted is not None:
            return tuple(self._pick_one(out, n, i) for i, n in enumerate(self.wanted))
        return self._pick_one(out, self.info.output_name, None)

    def _pick_one(self, out: Any, name: str | None, position: int | None) -> Tensor:
        if position is not None:
            if isinstance(out, dict):
                keys = list(out)
                if name is None and position < len(keys):
                    return out[keys[position]]
                if name not in out:
                    raise ConfigError(f"Expected an output named {name!r} (--output), got a model returning {keys}; do name one of those.")
                return out[name]
            if isinstance(out, (tuple, list)):
                idx = int(name) if name is not None and str(name).isdigit() else position
                if idx >= len(out):
                    raise ModelRunError(
                        f"Expected at least {idx + 1} outputs for the declared --output list, got a model returning {len(out)}; "
                        "do declare one --output per model output."
                    )
                return out[idx]
            raise ModelRunError(f"Expected several outputs (a tuple or dict) for {len(self.wanted)} declared --output types, "
                                "got one tensor; do declare a single --output.")
        if isinstance(out, Tensor):
            return out
        if isinstance(out, dict):
            if name is None:
                name = next(iter(out))
            if name not in out:
                raise ConfigError(f"--output-name {name!r} is not an output of the model; it returns {sorted(out)}.")
            return out[name]
        if isinstance(out, (tuple, list)):
            idx = int(name) if name is not None and str(name).isdigit() else 0
            if idx >= len(out):
                raise ConfigError(f"--output-name {name!r}: the model returns {len(out)} outputs; use 0..{len(out) - 1}.")
            return out[idx]
        raise ModelRunError(f"The model returned {type(out).__name__}; expected a tensor, a tuple or a dict of tensors.")


def _needs_autograd(exc: BaseException) -> bool:
    """True for the errors autograd raises when a forward that differentiates runs in inference mode."""
    text = str(exc)
    return "does not require grad" in text or "nference tensor" in text


def load_torch(
    path: Path,
    device: torch.device,
    *,
    factory: str | None = None,
    search_dirs: list[Path] | None = None,
    trust: bool = False,
    output_name: str | None = None,
    check_factory=None,
) -> TorchAdapter:
    """Load ``path`` as safely as its format allows (see the module docstring) and move it to ``device``;
    ``check_factory(factory, search_dirs)`` may refuse a factory before it is imported."""
    path = Path(path)
    first = check_not_foreign(path, "a PyTorch model file", "pass a .pt/.pth state dict, a .pt2 export or an .onnx file")
    kind = zip_kind(path) if first.startswith(ZIP_MAGIC) else ("pickle" if first[:1] == b"\x80" else None)
    if kind is None and first.startswith(ZIP_MAGIC):
        raise ModelLoadError(
            f"{str(path)!r} starts like a zip archive (as torch.save files do) but cannot be read as one: "
            "it is truncated or corrupt; download or save it again."
        )
    if kind is None:
        raise ModelLoadError(
            f"{str(path)!r} is not a PyTorch file (no zip archive or pickle header; it starts with {first[:8]!r}); "
            "it may be truncated or in another format."
        )
    sha = sha256_of(path)
    search_dirs = list(search_dirs or []) + [path.parent]
    if kind == "export":
        return _load_export(path, device, sha, output_name)
    if kind == "torchscript":
        if not trust:
            raise ModelLoadError(
                f"{str(path)!r} is TorchScript, which runs code from the file when loaded; "
                "pass --trust if you vouch for it, or export it with torch.export (.pt2) or to ONNX."
            )
        try:
            module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:
            raise ModelLoadError(f"Loading TorchScript {str(path)!r} failed: {exc}") from exc
        info = AdapterInfo(str(path), "torch", "torchscript", sha, str(device), output_name, input_names=forward_inputs(module))
        return TorchAdapter(module.eval(), info, device)

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        fmt = "state_dict"
    except pickle.UnpicklingError as exc:
        if not trust:
            raise ModelLoadError(
                f"{str(path)!r} holds pickled Python objects (a whole module?), which can run code when loaded; "
                "pass --trust if you vouch for the file, or save a state_dict and pass --model-factory."
            ) from exc
        try:
            with importable(search_dirs):  # a pickled module needs its class's module: look beside the model
                obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise ModelLoadError(
                f"Loading {str(path)!r} with --trust failed: {exc2}; the module that defines the model's class must be "
                "importable (beside the model file or on PYTHONPATH)."
            ) from exc2
        fmt = "pickle"
    except Exception as exc:
        raise ModelLoadError(f"{str(path)!r} could not be read by torch.load ({exc}); it may be truncated or corrupt.") from exc

    if isinstance(obj, nn.Module):
        module = obj
        fmt = "pickle"
    else:
        state = _unwrap_state_dict(obj, path)
        if factory is None:
            raise ConfigError(
                f"{str(path)!r} is a state dict ({len(state)} tensors) without its architecture; "
                "pass --model-factory module:callable (or set model_factory in the sidecar MODEL.eqaudit.toml)."
            )
        if check_factory is not None:
            check_factory(factory, search_dirs)
        build = resolve_factory(factory, search_dirs)
        try:
            module = build()
        except Exception as exc:
            raise ModelLoadError(f"Calling model factory {factory!r} failed: {exc!r}") from exc
        if not isinstance(module, nn.Module):
            raise ModelLoadError(f"Model factory {factory!r} returned {type(module).__name__}, expected a torch.nn.Module.")
        _load_state(module, state, path, factory)
    info = AdapterInfo(str(path), "torch", fmt, sha, str(device), output_name, input_names=forward_inputs(module))
    return TorchAdapter(module.to(device).eval(), info, device)


def forward_inputs(module: Any) -> list[str]:
    """The names of the tensors ``module.forward`` takes: its positional parameters without defaults
    (all its named positional parameters when none lacks a default); [] when it has no signature."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError, AttributeError):
        return []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in positional if p.default is p.empty]
    return required or [p.name for p in positional]


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelLoadError(
            f"{str(path)!r} holds {type(obj).__name__}, not a state dict of tensors (also looked under "
            f"{', '.join(WRAPPER_KEYS)}); save model.state_dict(), or the whole module and pass --trust."
        )
    state = dict(obj)
    for prefix in PREFIXES:
        torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, prefix)
    return state


def _load_state(module: nn.Module, state: dict[str, Tensor], path: Path, factory: str) -> None:
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelLoadError(
            f"Weights in {str(path)!r} do not fit the architecture from {factory!r}: {' '.join(first[:3])}"
        ) from None
    if missing or unexpected:
        def few(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = []
        if missing:
            parts.append(f"missing keys {few(list(missing))}")
        if unexpected:
            parts.append(f"unexpected keys {few(list(unexpected))}")
        raise ModelLoadError(
            f"Weights in {str(path)!r} do not match {factory!r}: {'; '.join(parts)}; check that the factory builds the trained architecture."
        )


def _load_export(path: Path, device: torch.device, sha: str, output_name: str | None) -> TorchAdapter:
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"{str(path)!r} could not be loaded with torch.export.load: {exc}") from exc
    fixed, declared = None, None
    user_inputs = [str(u) for u in ep.graph_signature.user_inputs]
    if not user_inputs:
        raise ModelLoadError(f"{str(path)!r} takes no tensor inputs; expected a program exported with at least one input.")
    shapes: dict[str, list[int | None] | None] = {}
    dtypes: dict[str, torch.dtype] = {}
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            val = node.meta.get("val")
            if val is None:
                continue
            shape = getattr(val, "shape", None)
            if shape is None:
                raise ModelLoadError(
                    f"Expected tensor inputs in {str(path)!r}, got input {node.name!r} that is not a tensor, "
                    "do export the program with tensor arguments only."
                )
            if node.name == user_inputs[0]:
                if len(shape) and isinstance(shape[0], int):
                    fixed = int(shape[0])
                declared = [int(d) if isinstance(d, int) else None for d in shape[1:]]
            shapes[node.name] = [int(d) if isinstance(d, int) else None for d in shape[1:]]
            dtypes[node.name] = val.dtype
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        ep = move_to_device_pass(ep, device)
    info = AdapterInfo(str(path), "torch", "export", sha, str(device), output_name, declared_shape=declared,
                       input_names=user_inputs, input_shapes=shapes)
    if fixed is not None:
        info.notes.append(f"exported with a fixed batch size of {fixed}; called in slices of {fixed}")
    adapter = TorchAdapter(ep.module(), info, device, fixed_batch=fixed)
    adapter.input_dtypes = dtypes if len(user_inputs) > 1 else {}
    return adapter
