"""Read a dataset file once, pick a seeded subset, and hand out float32 batches on a device.

Inputs keep their stored values (cast to float32; uint8 images are NOT rescaled, since the model
may expect either range). ``x`` is (N, ...) (images (N, C, H, W), point clouds (N, P, 3)); ``y`` (N,)
integer labels; ``classes`` (K,) names; ``targets`` (N, ...) optional ground-truth outputs for
``--reference label`` with the non-classifier tasks (flows, boxes, maps, per-point vectors), read from
the array named by ``targets_key`` (default ``targets``). ``.npy`` files are memory-mapped, so only
the rows of a batch are read. Rows are stored in the model's layout (``--layout``, see
eqaudit.layouts); ``take`` and ``batches`` hand them out in the canonical form symmetries act on
(images (B, C, H, W), signals (B, C, 1, L), points (B, P, D)). A model with several inputs is fed from an .npz or .pt dict by name
(``binding``, see eqaudit.inputs): ``x`` is then the first input the symmetry acts on.
"""

from __future__ import annotations

import math
import mmap
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError, PathNotFoundError
from ..layouts import Layout, get_layout, parse_layouts
from ..inputs import FIELD_NAMES, InputBinding, check_names, resolve_act_on, split_act_on

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class Dataset:
    path: str
    key: str | None
    x: np.ndarray | Tensor  # (N_total, *stored_shape), possibly memory-mapped
    y: np.ndarray | None  # (N_total,) int64
    classes: list[str] | None
    indices: np.ndarray  # (N,) selected rows, ascending
    sample_shape: tuple[int, ...]  # canonical shape symmetries act on (after --input-shape and --layout)
    targets: np.ndarray | None = None  # (N_total, ...) ground-truth outputs, numeric and finite
    targets_key: str = "targets"  # the array they were read from (or looked for)
    layout: Layout = Layout("auto")  # the model's layout of one sample (--layout)
    model_shape: tuple[int, ...] | None = None  # one sample in the model's layout (after --input-shape); None: sample_shape
    binding: InputBinding | None = None  # several model inputs: which array feeds which (None: x is the only input)
    checked: np.ndarray | None = field(default=None, repr=False, compare=False)  # (N_total,) rows found finite so far

    @property
    def stored_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def n_total(self) -> int:
        return int(self.x.shape[0])

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    @property
    def has_targets(self) -> bool:
        return self.targets is not None

    def targets_at(self, positions: np.ndarray, device: torch.device | str = "cpu") -> Tensor | None:
        """Ground-truth outputs at ``positions`` of the selection: (b, ...) float64 on ``device``, or None."""
        if self.targets is None:
            return None
        rows = self.indices[np.asarray(positions)]
        return torch.as_tensor(np.asarray(self.targets[rows], dtype=np.float64)).to(device)

    def take(self, positions: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
        """Inputs at ``positions`` of the selection: (b, *sample_shape) float32 on ``device``, canonical."""
        rows = self.indices[np.asarray(positions)]
        raw = self.x[torch.as_tensor(rows)] if isinstance(self.x, Tensor) else self.x[rows]
        if isinstance(self.x, np.memmap) and len(rows):
            release_rows(self.x, int(rows.min()), int(rows.max()) + 1)
        if not isinstance(raw, Tensor):
            raw = np.asarray(raw)
            raw = raw if raw.dtype.isnative else raw.astype(raw.dtype.newbyteorder("="))  # big-endian files
        t = torch.as_tensor(raw).to(device=device, dtype=torch.float32)
        self._check_finite(rows, t)
        if self.layout.is_identity:
            return t.reshape(t.shape[0], *self.sample_shape)
        return self.layout.to_canonical(t.reshape(t.shape[0], *(self.model_shape or self.sample_shape)))

    def _check_finite(self, rows: np.ndarray, t: Tensor) -> None:
        """NaN or inf in rows ``rows`` (as read, float32 ``t``) raise DataError naming the first bad sample. Each
        stored row is checked once, by the first batch that reads it (the sweep reads every row once per
        symmetry), with numpy on the CPU: one thread, no idle torch workers to wake for a small check."""
        if self.checked is None:
            self.checked = np.zeros(self.n_total, dtype=bool)
        new = ~self.checked[rows]
        if not new.any():
            return
        part = t if new.all() else t[torch.from_numpy(np.nonzero(new)[0]).to(t.device)]
        flat = part.reshape(part.shape[0], -1)
        finite = np.isfinite(flat.numpy()).all(1) if flat.device.type == "cpu" else torch.isfinite(flat).all(1).cpu().numpy()
        if not finite.all():
            bad = int(rows[np.nonzero(new)[0][np.argmin(finite)]])
            raise DataError(f"Sample {bad} of {self.path!r} contains NaN or infinite values; clean or drop it.")
        self.checked[rows[new]] = True

    def feed(self, positions: np.ndarray, x: Tensor, device: torch.device | str = "cpu"):
        """What the model is called with for the rows at ``positions``: ``x`` itself, or for several
        inputs a dict {input name: (b, ...)} with ``x`` as the first acted-on input."""
        if self.binding is None:
            return x
        return self.binding.feed(x, self.indices[np.asarray(positions)], device)

    def input_shape(self, name: str) -> tuple[int, ...]:
        """Per-sample shape of one named model input."""
        if self.binding is None or name == self.binding.main:
            return self.sample_shape
        shape = tuple(int(d) for d in self.binding.arrays[name].shape[1:])
        lay = self.binding.layouts.get(name)
        return shape if lay is None else lay.canonical_shape(shape)

    def labels(self, positions: np.ndarray) -> Tensor | None:
        if self.y is None:
            return None
        return torch.as_tensor(self.y[self.indices[np.asarray(positions)]], dtype=torch.long)

    def batches(self, batch_size: int, device: torch.device | str = "cpu",
                which: range | None = None) -> Iterator[tuple[np.ndarray, Tensor, Tensor | None]]:
        """Yield (positions (b,), x (b, *sample_shape), y (b,) or None) over the selection, in order;
        ``which``: only these batches (numbers in that order; a rank's share, see eqaudit.distributed)."""
        n = len(self)
        starts = range(0, n, batch_size)
        for start in (starts if which is None else starts[which.start:which.stop]):
            pos = np.arange(start, min(start + batch_size, n))
            y = self.labels(pos)
            yield pos, self.take(pos, device), (y.to(device) if y is not None else None)


def release_rows(arr: np.memmap, start: int, stop: int) -> None:
    """Unmap rows start:stop of a read-only memory-mapped array from this process (``MADV_DONTNEED``)
    once they have been copied out: the kernel keeps the file's pages in its cache and maps them again
    on the next read, so the resident memory (RSS) of a sweep does not grow with the file's size. A
    no-op where ``madvise`` is missing (not Linux/macOS) or the array is not backed by its own map."""
    mm = getattr(arr, "_mmap", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if mm is None or advice is None or not hasattr(mm, "madvise") or arr.ndim == 0 or arr.mode != "r":
        return
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    row = arr.strides[0]
    lo = arr.ctypes.data - base + start * row
    hi = min(len(mm), arr.ctypes.data - base + stop * row)
    lo -= lo % mmap.PAGESIZE
    if hi > lo >= 0:
        mm.madvise(advice, lo, hi - lo)


def split_key(spec: str) -> tuple[Path, str | None]:
    """``data.npz:images`` -> (Path("data.npz"), "images"); a path that exists as given has no key."""
    p = Path(spec)
    if p.exists() or ":" not in spec:
        return p, None
    head, key = spec.rsplit(":", 1)
    return Path(head), (key or None)


def load_dataset(
    spec: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    targets_key: str | None = None,
    layout: str | None = None,
    model_inputs: list[str] | None = None,
    input_map: dict[str, str] | None = None,
    act_on: list[str] | None = None,
) -> Dataset:
    """Open ``spec`` (PATH[:KEY]) and select ``limit`` rows at random with ``seed`` (all rows if None).

    ``layout`` (``--layout``, default auto) names the axes of one row as the model takes it (after
    ``input_shape``); DataError when the rows do not have that layout's rank. Per input, ``NAME=LAYOUT``
    (eqaudit.layouts.parse_layouts); a bare layout is that of the inputs in ``act_on``; ConfigError for a
    name that is not one of ``model_inputs``.

    ``targets_key`` (default ``targets``) names the array of ground-truth outputs in .npz/.pt files;
    a file without it simply has no targets (``--reference label`` then says so). ``model_inputs``
    (the model's input names, in calling order), ``input_map`` (input name -> array key, ``--input``)
    and ``act_on`` (``--act-on``) bind a model with several inputs to arrays of the file by name."""
    tkey = targets_key or "targets"
    targets = None
    path, key = split_key(spec)
    if not path.exists():
        raise PathNotFoundError(f"Data file {str(path)!r} does not exist; check --data.")
    names, input_map = list(model_inputs or []), dict(input_map or {})
    if (input_map or act_on) and not names:
        raise ConfigError("Expected a model whose input names eqaudit can read for --input or --act-on, got one without "
                          "(TorchScript?), do drop --input/--act-on and name the array with --data PATH:KEY.")
    check_names(list(input_map), names, "--input")
    acted = resolve_act_on(names, act_on) if names else []
    kinds = split_act_on(act_on)[1]
    bare, named = parse_layouts(layout or "auto")
    if named and not names:
        raise ConfigError("Expected a model whose input names eqaudit can read for --layout NAME=LAYOUT, got one without "
                          "(TorchScript?), do pass one --layout without a name.")
    check_names(list(named), names, "--layout")
    binding = None
    if len(names) > 1:
        if input_shape is not None:
            raise ConfigError("Expected --input-shape only for models with one input, got a model with inputs "
                              f"{', '.join(names)}, do store each array in the shape its input takes.")
        x, y, classes, binding = _read_inputs(path, key, names, input_map, acted)
        targets = _read_npz_targets(path, tkey) if path.suffix.lower() == ".npz" else _read_pt_targets(path, tkey)
        key = binding.keys[binding.main]
    elif names and names[0] in input_map:
        key = input_map[names[0]]
    if binding is None and path.is_dir():
        x, y, classes = _read_image_folder(path)
    elif binding is None:
        suffix = path.suffix.lower()
        if suffix == ".npz":
            x, y, classes = _read_npz(path, key)
            targets = _read_npz_targets(path, tkey)
        elif suffix == ".npy":
            x, y, classes = _read_npy(path), None, None
        elif suffix in {".pt", ".pth"}:
            x, y, classes = _read_pt(path, key)
            targets = _read_pt_targets(path, tkey)
        else:
            raise DataError(f"Unknown data file type {suffix!r} for {str(path)!r}; expected .npz, .npy, .pt or a folder of images.")
    x, y, classes = _validate(path, x, y, classes)
    if targets is not None:
        targets = _validate_targets(path, tkey, targets, int(x.shape[0]))
    n = int(x.shape[0])
    if limit is not None:
        if limit <= 0:
            raise ConfigError(f"Expected --limit to be a positive number of samples, got {limit}.")
    if limit is not None and limit < n:
        indices = np.sort(np.random.default_rng(seed).permutation(n)[:limit])
    else:
        indices = np.arange(n)
    stored = tuple(int(d) for d in x.shape[1:])
    sample_shape = stored
    if input_shape is not None:
        if math.prod(input_shape) != math.prod(stored):
            raise ConfigError(
                f"Expected --input-shape with {math.prod(stored)} values per sample (data rows are {stored}), "
                f"got {'x'.join(map(str, input_shape))} = {math.prod(input_shape)} values."
            )
        sample_shape = tuple(input_shape)
    if kinds and binding is None:
        raise ConfigError(f"Expected --act-on NAME=TYPE only for models with several inputs, got {', '.join(f'{k}={v}' for k, v in kinds.items())} "
                          "for a model with one, do drop the type: its only input takes the whole action.")
    if binding is not None:
        binding.kinds = kinds
    lay = get_layout(named.get(acted[0] if acted else "", bare or "auto"))
    canonical = lay.canonical_shape(sample_shape)
    if binding is not None:
        for name in binding.names:
            own = named.get(name, bare if name in acted else None)
            if name != binding.main and own not in (None, "auto"):
                binding.layouts[name] = get_layout(own)
                binding.layouts[name].check(tuple(int(d) for d in binding.arrays[name].shape[1:]))
    return Dataset(str(path), key, x, y, classes, indices, canonical, targets, tkey, lay, sample_shape, binding)


def _read_inputs(path: Path, key: str | None, names: list[str], input_map: dict[str, str], acted: list[str]):
    """Arrays for every model input by name (``input_map`` renames; ``key`` from PATH:KEY names the
    first acted-on input's array): (x, y, classes, binding), all arrays checked for one row per sample."""
    suffix = path.suffix.lower()
    if path.is_dir() or suffix not in {".npz", ".pt", ".pth"}:
        raise DataError(
            f"Expected an .npz or .pt file of named arrays for a model with inputs {', '.join(names)}, got {str(path)!r}, "
            "do save one array per input (np.savez(PATH, NAME=array, ...))."
        )
    if suffix == ".npz":
        z = _np_open(path, "npz")
        files, get = sorted(z.files), (lambda k: _member(z, k, path))
        y = get("y") if "y" in z.files else None
        classes = _classes(get("classes"), path) if "classes" in z.files else None
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict):
            raise DataError(f"Expected a dict of named tensors in {str(path)!r} for a model with inputs {', '.join(names)}, "
                            f"got {type(obj).__name__}, do save {{NAME: tensor, ...}} with torch.save.")
        to_np = lambda v: v.numpy() if isinstance(v, Tensor) else np.asarray(v)  # noqa: E731
        files, get = sorted(map(str, obj)), (lambda k: to_np(obj[k]))
        y = to_np(obj["y"]) if "y" in obj else None
        classes = [str(c) for c in obj["classes"]] if "classes" in obj else None
    keys = {name: input_map.get(name, key if (name == acted[0] and key) else name) for name in names}
    arrays = {}
    for name in names:
        k = keys[name]
        if k not in files:
            raise DataError(
                f"Expected an array {k!r} in {str(path)!r} for the model input {name!r}, got arrays {', '.join(files)}, "
                f"do name the array {name!r} or pass --input {name}=KEY."
            )
        arr = get(k)
        if arr.dtype.kind not in "fiub" or arr.ndim < 1:
            raise DataError(f"Expected a numeric or boolean array (N, ...) for the model input {name!r}, got {k!r} of "
                            f"dtype {arr.dtype} and shape {tuple(arr.shape)} in {str(path)!r}, do store one row per sample.")
        if name != acted[0] and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int(np.nonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(1))[0][0])
            raise DataError(f"Sample {bad} of {k!r} in {str(path)!r} contains NaN or infinite values; clean or drop it.")
        arrays[name] = arr
    rows = {name: int(a.shape[0]) for name, a in arrays.items()}
    if len(set(rows.values())) > 1:
        shown = ", ".join(f"{keys[n]} {r}" for n, r in rows.items())
        raise DataError(f"Expected every input array in {str(path)!r} to have the same number of samples N (first axis), "
                        f"got {shown}, do store one row per sample in each array.")
    extras = [f for f in FIELD_NAMES if f not in names and f in files]
    for f in extras:
        arrays[f] = get(f)
    _check_fields(path, arrays, keys, acted[0])
    x = arrays.pop(acted[0])
    return x, y, classes, InputBinding(list(names), keys, list(acted), arrays, extras)


def _check_fields(path: Path, arrays: dict[str, np.ndarray], keys: dict[str, str], main: str) -> None:
    """The fixed-meaning arrays agree with the points they describe: ``mask`` (N, P) with P the main
    input's points, ``edge_index`` (N, 2, M) integer indices below P, ``edge_mask`` (N, M)."""
    by_key = {keys.get(n, n): a for n, a in arrays.items()}
    pos = arrays[main]
    p = int(pos.shape[1]) if pos.ndim >= 2 else None
    mask, edges, emask = by_key.get("mask"), by_key.get("edge_index"), by_key.get("edge_mask")
    if mask is not None and (mask.ndim != 2 or int(mask.shape[1]) != p):
        raise DataError(f"Expected 'mask' in {str(path)!r} of shape (N, {p}), one flag per point of {keys[main]!r}, "
                        f"got {tuple(mask.shape)}, do store True for real points and False for padding.")
    if mask is not None and not (mask.astype(bool).sum(1) >= 1).all():
        bad = int(np.nonzero(mask.astype(bool).sum(1) < 1)[0][0])
        raise DataError(f"Expected at least one real point per sample in 'mask' of {str(path)!r}, got none in sample {bad}, "
                        "do drop empty samples.")
    if edges is not None:
        if edges.ndim != 3 or edges.shape[1] != 2 or edges.dtype.kind not in "iu":
            raise DataError(f"Expected 'edge_index' in {str(path)!r} as integers of shape (N, 2, M), got {edges.dtype} "
                            f"{tuple(edges.shape)}, do store each edge as a (source, target) column of point indices.")
        if edges.size and (edges.min() < 0 or (p is not None and edges.max() >= p)):
            raise DataError(f"Expected 'edge_index' in {str(path)!r} to hold point indices in 0..{(p or 1) - 1}, got "
                            f"{int(edges.min())}..{int(edges.max())}, do point padded edges at point 0 and mark them in edge_mask.")
        if emask is not None and (emask.ndim != 2 or emask.shape[1] != edges.shape[2]):
            raise DataError(f"Expected 'edge_mask' in {str(path)!r} of shape (N, {edges.shape[2]}), one flag per edge, "
                            f"got {tuple(emask.shape)}, do store True for real edges.")


def _read_npz(path: Path, key: str | None):
    z = _np_open(path, "npz")
    files = set(z.files)
    xkey = key or "x"
    if xkey not in files:
        raise DataError(f"{str(path)!r} has no array {xkey!r} (it has {sorted(files)}); name the inputs with --data {path}:KEY.")
    x = _member(z, xkey, path)
    y = _member(z, "y", path) if "y" in files else None
    classes = _classes(_member(z, "classes", path), path) if "classes" in files else None
    return x, y, classes


def _read_npz_targets(path: Path, tkey: str) -> np.ndarray | None:
    z = _np_open(path, "npz")
    return _member(z, tkey, path) if tkey in z.files else None


NUMPY_MAGIC = {"npz": (b"PK\x03\x04", b"PK\x05\x06"), "npy": (b"\x93NUMPY",)}


def _np_open(path: Path, kind: str, **kw):
    """``np.load`` of an .npz/.npy file, refusing by its first bytes anything that is neither (numpy
    would try to unpickle it); a corrupt file or pickled arrays are a DataError."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    if not head.startswith(NUMPY_MAGIC[kind]):
        what = "a zip archive of .npy arrays" if kind == "npz" else "an .npy array"
        raise DataError(f"{str(path)!r} is not a valid .{kind} file (expected {what}, got a file starting with {head!r}); "
                        f"save the data with np.{'savez' if kind == 'npz' else 'save'} (eqaudit never loads pickled data).")
    try:
        return np.load(path, allow_pickle=False, **kw)
    except ValueError as exc:
        raise _numpy_error(path, None, exc) from exc
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise DataError(f"{str(path)!r} is not a readable .{kind} file ({exc}); it may be truncated or corrupt, save it again.") from exc


def _member(z, key: str, path: Path) -> np.ndarray:
    """One array of an open .npz archive; pickled objects or a corrupt member are a DataError."""
    try:
        return z[key]
    except ValueError as exc:
        raise _numpy_error(path, key, exc) from exc
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, RuntimeError, zlib.error) as exc:
        raise DataError(f"Array {key!r} in {str(path)!r} cannot be read ({exc}); the archive may be truncated or corrupt, save it again.") from exc


def _numpy_error(path: Path, key: str | None, exc: ValueError) -> DataError:
    where = f"Array {key!r} in {str(path)!r}" if key else repr(str(path))
    if "pickle" in str(exc) or "Python objects" in str(exc):
        return DataError(f"{where} stores Python objects (pickled arrays), which eqaudit does not load; save plain numeric or string arrays.")
    return DataError(f"{where} is not a valid numpy array ({exc}); it may be truncated or corrupt, save it again.")


def _classes(arr: np.ndarray, path: Path) -> list[str]:
    """Class names: a 1-D array of strings or numbers."""
    if arr.ndim != 1:
        raise DataError(f"Expected class names 'classes' in {str(path)!r} as a 1-D array, got shape {tuple(arr.shape)}; "
                        "save one name per class.")
    return [str(c) for c in arr.tolist()]


def _read_pt_targets(path: Path, tkey: str) -> np.ndarray | None:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or tkey not in obj:
        return None
    v = obj[tkey]
    return v.numpy() if isinstance(v, Tensor) else np.asarray(v)


def _read_npy(path: Path):
    return _np_open(path, "npy", mmap_mode="r")


def _read_pt(path: Path, key: str | None):
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(f"{str(path)!r} holds pickled Python objects, which eqaudit does not load; save a tensor or a dict of tensors.") from exc
    except Exception as exc:
        raise DataError(f"{str(path)!r} could not be read by torch.load ({exc}).") from exc
    if isinstance(obj, Tensor):
        return obj.numpy() if key is None else _fail_key(path, key)
    if not isinstance(obj, dict):
        raise DataError(f"{str(path)!r} holds {type(obj).__name__}; expected a tensor or a dict with keys x, y, classes.")
    xkey = key or "x"
    if xkey not in obj:
        raise DataError(f"{str(path)!r} has no entry {xkey!r} (it has {sorted(map(str, obj))}); name the inputs with --data {path}:KEY.")
    to_np = lambda v: v.numpy() if isinstance(v, Tensor) else np.asarray(v)  # noqa: E731
    y = to_np(obj["y"]) if "y" in obj else None
    classes = [str(c) for c in obj["classes"]] if "classes" in obj else None
    return to_np(obj[xkey]), y, classes


def _fail_key(path: Path, key: str):
    raise DataError(f"{str(path)!r} holds a single tensor, so it has no key {key!r}; drop ':{key}' from --data.")


def _read_image_folder(path: Path):
    """One sub-folder per class; all images the same size; grayscale stays 1 channel, others RGB; /255."""
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"Folder {str(path)!r} has no class sub-folders; expected one sub-folder of images per class.")
    files, labels = [], []
    for k, d in enumerate(class_dirs):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(k)
    if not files:
        raise DataError(f"Folder {str(path)!r} has class sub-folders but no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    imgs = []
    for f in files:
        try:
            with Image.open(f) as im:
                imgs.append(im.copy())
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"Image {str(f)!r} could not be read ({exc}).") from exc
    gray = all(im.mode in ("L", "1", "I;16", "I") for im in imgs)
    arrays = [np.asarray(im.convert("L" if gray else "RGB"), dtype=np.float32) / 255.0 for im in imgs]
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise DataError(f"Images in {str(path)!r} have different sizes {sorted(sizes)[:4]}; resize them to one size first.")
    x = np.stack(arrays)
    x = x[:, None] if gray else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), np.asarray(labels, dtype=np.int64), [d.name for d in class_dirs]


def _validate(path: Path, x, y, classes):
    if x.dtype.kind not in "fiub":
        raise DataError(f"Inputs in {str(path)!r} have dtype {x.dtype}; expected a numeric array.")
    if x.ndim < 2:
        raise DataError(f"Inputs in {str(path)!r} have shape {tuple(x.shape)}; expected (N, ...) with one row per sample.")
    if x.shape[0] == 0:
        raise DataError(f"{str(path)!r} holds no samples (shape {tuple(x.shape)}).")
    if y is not None:
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
                y = y.astype(np.int64)
            else:
                raise DataError(f"Labels y in {str(path)!r} have dtype {y.dtype}; expected integer class indices.")
        if y.shape != (x.shape[0],):
            raise DataError(f"Labels y in {str(path)!r} have shape {tuple(y.shape)}; expected ({x.shape[0]},), one per sample.")
        if (y < 0).any():
            raise DataError(f"Labels y in {str(path)!r} include {int(y.min())}; expected class indices >= 0.")
        y = y.astype(np.int64)
    return x, y, classes


def _validate_targets(path: Path, tkey: str, t: np.ndarray, n: int) -> np.ndarray:
    """Ground-truth outputs: numeric, one row per sample, finite; returned as stored (cast to float on use)."""
    t = np.asarray(t)
    if t.dtype.kind not in "fiub":
        raise DataError(f"Expected targets {tkey!r} in {str(path)!r} to be a numeric array, got dtype {t.dtype}, "
                        "do save the ground-truth outputs as numbers (float or integer class maps).")
    if t.ndim < 2 or t.shape[0] != n:
        raise DataError(f"Expected targets {tkey!r} in {str(path)!r} of shape ({n}, ...), one row per sample like the "
                        f"model's output, got {tuple(t.shape)}, do store one ground-truth output per input row.")
    if t.dtype.kind == "f" and not np.isfinite(t).all():
        bad = int(np.nonzero(~np.isfinite(t.reshape(n, -1)).all(1))[0][0])
        raise DataError(f"Expected finite targets {tkey!r} in {str(path)!r}, got NaN or infinite values in sample {bad}, "
                        "do clean or drop that sample.")
    return t
