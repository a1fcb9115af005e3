"""ONNX adapter: an onnxruntime session on the provider that --device asks for, checked after creation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ModelLoadError, ModelRunError
from .base import AdapterInfo, sha256_of
from .batching import call_fixed_batch
from .sniff import check_not_foreign

ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64, np.dtype(np.float16): torch.float16}
# the inputs of a multi-input model may also be integer (atom types, a sample rate) or boolean (masks)
ORT_INPUT_DTYPES = {
    **ORT_DTYPES,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


class OnnxAdapter:
    """Feeds float batches to one ONNX input (or a dict of batches to several inputs, by name, each
    cast to the dtype the session declares) and returns one named output as a torch tensor."""

    supports_autograd = False

    def __init__(self, session, info: AdapterInfo, device: torch.device, input_name: str, input_dtype, fixed_batch,
                 input_dtypes: dict | None = None):
        self.session = session
        self.info = info
        self.device = device
        self.input_name = input_name
        self.input_dtype = input_dtype
        self.fixed_batch = fixed_batch
        self.input_dtypes = input_dtypes or {input_name: input_dtype}

    run_names: list[str] | None = None  # several declared outputs, returned as a tuple (select())

    def select(self, names: list[str | None]) -> None:
        """Return several outputs as a tuple: each declared name must be an output of the file; an
        unnamed declaration takes the output at its position."""
        have = self.info.output_names
        chosen = []
        for i, n in enumerate(names):
            if n is None:
                if i >= len(have):
                    raise ConfigError(f"Expected at most {len(have)} --output declarations for {self.info.path!r} (outputs {have}), got {len(names)}.")
                n = have[i]
            elif n not in have:
                raise ConfigError(f"Expected --output NAME=TYPE to name an output of {self.info.path!r} ({', '.join(have)}), got {n!r}.")
            chosen.append(n)
        self.run_names = chosen
        self.info.outputs = chosen

    def _feed(self, batch) -> dict[str, np.ndarray]:
        if isinstance(batch, dict):
            return {name: np.ascontiguousarray(t.detach().to("cpu").numpy().astype(self.input_dtypes[name], copy=False))
                    for name, t in batch.items() if name in self.input_dtypes}  # extras (mask, ...) are not inputs
        return {self.input_name: np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy().astype(self.input_dtype, copy=False))}

    row_shape: tuple | None = None  # per-row shape of the output, learned on the first plain run (I/O binding) ...
    row_input: tuple | None = None  # ... for inputs whose rows have this shape
    output_dtype = None  # numpy dtype of the output (set by load_onnx)
    bind = True  # bind single-tensor inputs and the output by pointer (turned off for good if binding fails)

    def _run_bound(self, batch: Tensor) -> Tensor:
        """One run with I/O binding: the input tensor's memory and a preallocated torch output tensor are
        handed to onnxruntime by pointer, on the CPU or the CUDA device, so nothing is copied between
        torch, numpy and the device; same numbers as ``session.run``. On CUDA, onnxruntime runs on its
        own stream: the device is synchronised before the run (torch's kernels that wrote the input must
        be done) and the binding's outputs after it (``synchronize_outputs``), so torch reads a finished
        output; the CUDA provider runs on the torch tensors' device (``device_id``, see providers_for)."""
        kind, index = ort_device(self.device)
        x = batch.detach().to(self.device, TORCH_DTYPES[np.dtype(self.input_dtype)]).contiguous()
        out = torch.empty((x.shape[0], *self.row_shape), dtype=TORCH_DTYPES[np.dtype(self.output_dtype)], device=self.device)
        io = self.session.io_binding()
        io.bind_input(self.input_name, kind, index, np.dtype(self.input_dtype), tuple(x.shape), x.data_ptr())
        io.bind_output(self.info.output_name, kind, index, np.dtype(self.output_dtype), tuple(out.shape), out.data_ptr())
        if kind == "cuda":
            torch.cuda.synchronize(self.device)  # the input must be written before onnxruntime's stream reads it
        self.session.run_with_iobinding(io)
        if kind == "cuda":
            io.synchronize_outputs()
        return out

    def _run(self, batch) -> Tensor:
        if (self.bind and self.row_shape is not None and isinstance(batch, Tensor) and self.run_names is None
                and self.output_dtype is not None and tuple(batch.shape[1:]) == self.row_input):
            try:
                return self._run_bound(batch)
            except Exception:  # noqa: BLE001 - a shape the binding cannot express: run as usual from now on
                self.bind = False
        out = self._run_plain(batch)
        if isinstance(out, Tensor) and isinstance(batch, Tensor):
            self.row_shape, self.row_input = tuple(out.shape[1:]), tuple(batch.shape[1:])
        return out

    def _run_plain(self, batch) -> Tensor:
        feed = self._feed(batch)
        if self.run_names is not None:
            try:
                outs = self.session.run(self.run_names, feed)
            except Exception as exc:
                raise ModelRunError(f"onnxruntime failed on a batch: {str(exc).splitlines()[0]}") from exc
            return tuple(torch.from_numpy(np.asarray(o)).to(self.device) for o in outs)
        try:
            (out,) = self.session.run([self.info.output_name], feed)
        except Exception as exc:
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feed.items())
            raise ModelRunError(
                f"onnxruntime failed on a batch of shape {shapes if len(feed) > 1 else tuple(next(iter(feed.values())).shape)}: "
                f"{str(exc).splitlines()[0]}; check --input-shape and that the data matches the model's input."
            ) from exc
        return torch.from_numpy(np.asarray(out)).to(self.device)

    def __call__(self, batch) -> Tensor:
        return call_fixed_batch(self._run, batch, self.fixed_batch)


def ort_device(device: torch.device) -> tuple[str, int]:
    """onnxruntime's (device type, device id) for a torch device: ("cuda", N) for cuda:N, else ("cpu", 0)."""
    if device.type == "cuda":
        return "cuda", device.index if device.index is not None else torch.cuda.current_device()
    return "cpu", 0


def providers_for(device: torch.device) -> list:
    """Execution providers for ``device``: CUDA first (with the torch device's id, so bound tensors and
    the session share a GPU) when asked, CPU always last (for the operators CUDA lacks); DeviceError
    (exit 3) when this onnxruntime has no CUDA provider, and for MPS, which onnxruntime does not run."""
    import onnxruntime as ort

    from ..errors import DeviceError

    available = ort.get_available_providers()
    if device.type == "mps":
        raise DeviceError(f"Expected --device cpu or cuda for an ONNX model, got {device}: onnxruntime has no MPS provider; "
                          "do use --device cpu (or run the torch model on mps).")
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise DeviceError(
                f"--device {device} needs onnxruntime's CUDAExecutionProvider, but this onnxruntime offers {available}; "
                "install onnxruntime-gpu or use --device cpu."
            )
        return [("CUDAExecutionProvider", {"device_id": ort_device(device)[1]}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _not_float_message(path: Path, bad: list, outputs: list) -> str:
    """Why outputs that are not float tensors cannot be audited, and what to do; a sequence of maps is
    the ZipMap that skl2onnx adds to classifiers by default (probabilities as {class: p} dictionaries)."""
    shown = ", ".join(f"{o.name!r} ({o.type})" for o in bad)
    floats = [o.name for o in outputs if o.type in ORT_DTYPES]
    do = f"pick a float output with --output-name ({', '.join(floats)})" if floats else "re-export it with a float tensor output"
    if any(str(o.type).startswith("seq(map(") or str(o.type).startswith("map(") for o in bad):
        do = ("re-export the scikit-learn model without ZipMap, "
              "to_onnx(clf, X, options={id(clf): {'zipmap': False}}) (zipmap=False gives a float tensor of probabilities)"
              + (f", or pick a float output with --output-name ({', '.join(floats)})" if floats else ""))
    return f"Expected a float tensor output from {str(path)!r}, got {shown}; {do}."


def _expose_intermediate(path: Path, name: str) -> bytes | None:
    """The model with the intermediate value ``name`` (a node's output, not a graph output) added to
    the graph's outputs, serialised; None when no node produces it or the ``onnx`` package is missing."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(path))
        if not any(name in node.output for node in model.graph.node):
            return None
        inferred = onnx.shape_inference.infer_shapes(model)
        typed = next((v for v in inferred.graph.value_info if v.name == name), None)
        model.graph.output.append(typed if typed is not None else onnx.ValueInfoProto(name=name))
        return model.SerializeToString()
    except Exception:  # noqa: BLE001 - a graph onnx cannot read: report the name as not an output
        return None


def load_onnx(path: Path, device: torch.device, *, output_name: str | None = None) -> OnnxAdapter:
    import onnxruntime as ort

    path = Path(path)
    check_not_foreign(path, "an ONNX model", "export the model with torch.onnx.export")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # onnxruntime's workers spin after each run by default, stealing the cores from the orbit
    # building and metrics that torch does between calls; let them sleep instead
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers_for(device))
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"{str(path)!r} is not a loadable ONNX model (onnxruntime: {msg}); it may be truncated or corrupt.") from exc
    info = AdapterInfo(str(path), "onnx", "onnx", sha256_of(path), str(device))
    active = session.get_providers()
    if device.type == "cuda" and active[0] != "CUDAExecutionProvider":
        raise ModelLoadError(
            f"onnxruntime could not start the CUDA provider for {str(path)!r} (active: {active}); "
            "check the CUDA/cuDNN install or use --device cpu."
        )
    info.notes.append(f"onnxruntime providers: {', '.join(active)}")

    inputs = session.get_inputs()
    if not inputs:
        raise ModelLoadError(f"{str(path)!r} has no inputs; expected a model that takes at least one tensor.")
    inp = inputs[0]
    if len(inputs) == 1 and inp.type not in ORT_DTYPES:
        raise ModelLoadError(f"{str(path)!r} input {inp.name!r} has type {inp.type}; expected a float tensor.")
    for i in inputs:
        if i.type not in ORT_INPUT_DTYPES:
            raise ModelLoadError(
                f"Expected numeric or boolean tensor inputs, got {i.type} for input {i.name!r} of {str(path)!r}, "
                f"do export the model with inputs of types {', '.join(ORT_INPUT_DTYPES)}."
            )
    info.input_names = [i.name for i in inputs]
    info.input_shapes = {i.name: [d if isinstance(d, int) and d > 0 else None for d in i.shape[1:]] if i.shape else None
                         for i in inputs}
    outputs = session.get_outputs()
    info.output_names = [o.name for o in outputs]
    if output_name is not None and output_name not in info.output_names:
        exposed = _expose_intermediate(path, output_name)
        if exposed is not None:
            session = ort.InferenceSession(exposed, sess_options=opts, providers=providers_for(device))
            outputs = session.get_outputs()
            info.output_names = [o.name for o in outputs]
            info.notes.append(f"intermediate value {output_name!r} of the graph exposed as an output")
    if output_name is not None:
        if output_name not in info.output_names:
            raise ConfigError(f"--output-name {output_name!r} is not an output of {str(path)!r}; its outputs are {info.output_names} "
                              "(a node's intermediate value can be named too when the onnx package is installed).")
        chosen = next(o for o in outputs if o.name == output_name)
        if chosen.type not in ORT_DTYPES:
            raise ModelLoadError(_not_float_message(path, [chosen], outputs))
        info.output_name = output_name
    else:
        floats = [o.name for o in outputs if o.type in ORT_DTYPES]
        if not floats:
            raise ModelLoadError(_not_float_message(path, outputs, outputs))
        info.output_name = floats[0]
        if len(outputs) > 1:
            info.notes.append(f"using output {floats[0]!r} of {info.output_names}; pick another with --output-name")
    if inp.shape:
        info.declared_shape = [d if isinstance(d, int) and d > 0 else None for d in inp.shape[1:]]
    fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    if fixed is not None:
        info.notes.append(f"input {inp.name!r} has a fixed batch size of {fixed}; called in slices of {fixed}")
    dtypes = {i.name: ORT_INPUT_DTYPES[i.type] for i in inputs}
    adapter = OnnxAdapter(session, info, device, inp.name, dtypes[inp.name], fixed, dtypes)
    chosen = next(o for o in outputs if o.name == info.output_name)
    # I/O binding for one float input and a float output whose per-row shape is the same on every call
    if len(inputs) == 1 and dtypes[inp.name] in (np.float32, np.float64, np.float16) and chosen.type in ORT_DTYPES:
        adapter.output_dtype = ORT_DTYPES[chosen.type]
    return adapter
