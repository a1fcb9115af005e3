"""The front door, fuzzed (hypothesis, derandomized, bounded): every input either works or raises
eqaudit's own error type (EqauditError), never anything else; config files that are not UTF-8 or not
TOML are configuration errors (exit 2)."""

from __future__ import annotations

import json
import math
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eqaudit.config import SETTINGS, parse_input_shape, resolve
from eqaudit.data import load_dataset
from eqaudit.errors import ConfigError, EqauditError
from eqaudit.gates import gate_specs, parse_gate, parse_tolerances
from eqaudit.symmetries import parse_symmetry
from eqaudit.symmetries.catalogue import symmetry_names

# fixed seed, bounded examples: the suite stays fast and every run tries the same inputs
FUZZ = settings(derandomize=True, max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FUZZ_FILES = settings(FUZZ, max_examples=60)

NAMES = sorted(symmetry_names())
WORDS = NAMES + ["step", "max", "min", "n", "axis", "mode", "steps", "grid", "seed", "points", "h", "v", "x", "y", "zero",
                 "reflect", "both", "octahedral", "flip_rate", "prob_tv", "level", "level_ci_low", "accuracy", "*", "rot90[180]"]
PUNCT = ":=,;*<>=% .-+[]()e"
tokens = st.one_of(st.sampled_from(WORDS), st.sampled_from(list(PUNCT)), st.integers(-10**7, 10**7).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=4))
structured = st.lists(tokens, min_size=1, max_size=10).map("".join)
texts = st.one_of(structured, st.text(max_size=40))
numbers = st.one_of(st.integers(-200, 200).map(str), st.floats(-1e3, 1e3, allow_nan=False).map(lambda f: f"{f:g}"),
                    st.sampled_from(["0", "1e9", "-0", "nan", "inf", "1e-12", "100000", "99999", ""]))
param = st.tuples(st.sampled_from(WORDS[len(NAMES):]), st.one_of(numbers, st.sampled_from(WORDS))).map("=".join)
one_spec = st.tuples(st.sampled_from(NAMES), st.lists(param, max_size=3)).map(lambda t: t[0] + (":" + ",".join(t[1]) if t[1] else ""))
specs = st.one_of(one_spec, st.lists(one_spec, min_size=2, max_size=3).map("*".join), texts)
METRICS = ["flip_rate", "prob_tv", "level", "level_ci_low", "accuracy", "equivariance_error", "floor", "bogus"]
gates_text = st.one_of(
    st.tuples(st.one_of(st.just(""), one_spec.map(lambda t: t + ":"), st.sampled_from(["rot90[180]:", "flip[h]:", "*:"])),
              st.sampled_from(METRICS), st.sampled_from(["<=", ">=", "<", "=", " <= ", "=="]), numbers,
              st.sampled_from(["", "%"])).map("".join),
    texts)


def works_or_ours(fn, *args, **kw):
    """Call fn; an EqauditError is an answer, any other exception fails the test."""
    try:
        return fn(*args, **kw)
    except EqauditError:
        return None


@FUZZ
@given(specs)
def test_symmetry_specs(text):
    sym = works_or_ours(parse_symmetry, text)
    if sym is not None:  # a parsed spec reads back as itself
        assert 1 <= sym.n_elements <= 100_000
        again = parse_symmetry(sym.spec)
        assert again.spec == sym.spec and again.n_elements == sym.n_elements


@FUZZ
@given(gates_text)
def test_gate_text(text):
    works_or_ours(parse_gate, text)
    works_or_ours(gate_specs, text)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.one_of(texts, st.sampled_from(NAMES)), inner, max_size=3)),
                      max_leaves=8)


@FUZZ
@given(values)
def test_gates_and_tolerances_of_any_structure(value):
    works_or_ours(gate_specs, value)
    works_or_ours(parse_tolerances, value)


@FUZZ
@given(st.one_of(st.lists(st.one_of(st.integers(-3, 10**6).map(str), st.sampled_from(list("x*, -+.e"))), max_size=8).map("".join),
                 st.text(max_size=12)))
def test_input_shape(text):
    dims = works_or_ours(parse_input_shape, text)
    if dims is not None:
        assert dims and all(isinstance(d, int) and d > 0 for d in dims)


# ---- config files ----------------------------------------------------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string (or, with lone surrogates, invalid TOML: also fair game)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    return '""'


keys = st.one_of(st.sampled_from(sorted(SETTINGS)), st.sampled_from([k.replace("_", "-") for k in SETTINGS]), st.text(string.ascii_lowercase + "_-", min_size=1, max_size=12))
tables = st.dictionaries(keys, values.filter(lambda v: v is not None), max_size=5).map(
    lambda d: "\n".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in d.items()).encode("utf-8", "surrogatepass"))
file_bytes = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")), tables)


def _resolve(folder: Path, kind: str, content: bytes):
    model = folder / "models" / "net.pt"
    model.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.rglob("*.toml"):
        stale.unlink()
    if kind == "sidecar":
        (model.parent / "net.eqaudit.toml").write_bytes(content)
        return resolve({}, models=[model], env={}, cwd=folder)
    if kind == "config":
        (folder / "c.toml").write_bytes(content)
        return resolve({}, models=[model], config_file=folder / "c.toml", env={}, cwd=folder)
    (folder / "pyproject.toml").write_bytes(b"[tool.eqaudit]\n" + content if kind == "pyproject" else content)  # or raw
    return resolve({}, models=[model], env={}, cwd=folder)


@FUZZ_FILES
@given(st.sampled_from(["sidecar", "config", "pyproject", "pyproject-raw"]), file_bytes)
def test_config_sidecar_and_pyproject_files(kind, content):
    with tempfile.TemporaryDirectory() as d:
        try:
            _resolve(Path(d), kind, content)
        except EqauditError as exc:
            assert isinstance(exc, ConfigError) and exc.exit_code == 2, exc  # a bad config file is a usage error


@pytest.mark.parametrize("content", [b"seed = 1\n\xff\xfe bad", "seed = 'é'\n".encode("latin-1"), b"seed = = 3", b"\x00\x01\x02"])
@pytest.mark.parametrize("kind", ["sidecar", "config", "pyproject"])
def test_non_utf8_or_invalid_toml_is_a_config_error_naming_the_file(tmp_path, kind, content):
    with pytest.raises(ConfigError) as info:
        _resolve(tmp_path, kind, content)
    assert info.value.exit_code == 2
    assert ("UTF-8" in str(info.value)) or ("not valid TOML" in str(info.value))
    assert ".toml" in str(info.value)


def test_non_utf8_sidecar_through_the_cli_exits_2(tmp_path):
    from typer.testing import CliRunner

    from eqaudit.cli import app

    model = tmp_path / "net.pt"
    model.write_bytes(b"")
    (tmp_path / "net.eqaudit.toml").write_bytes(b"data = \"\xe9\"\n")
    res = CliRunner().invoke(app, ["scan", str(model)])
    assert res.exit_code == 2, res.output
    assert "net.eqaudit.toml" in res.output and "UTF-8" in res.output and "Traceback" not in res.output


# ---- data loaders ----------------------------------------------------------------------------------

dtypes = st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.boolean_dtypes(),
                   hnp.complex_number_dtypes(), hnp.unicode_string_dtypes(max_len=3), hnp.datetime64_dtypes())
arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))


def _load_and_read(path: Path, **kw):
    """Load the file and, when it loads, read every batch as the sweep would."""
    ds = load_dataset(str(path), **kw)
    for _pos, x, y in ds.batches(3):
        assert x.dtype == torch.float32 and x.shape[0] == (y.shape[0] if y is not None else x.shape[0])
    return ds


@FUZZ_FILES
@given(st.sampled_from([".npz", ".npy", ".pt"]), st.binary(max_size=300))
def test_arbitrary_bytes_as_data(suffix, content):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"data{suffix}"
        path.write_bytes(content)
        works_or_ours(_load_and_read, path)


def test_random_bytes_npz_does_not_repeat_numpys_pickle_advice(tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(EqauditError) as info:
        load_dataset(str(path))
    text = str(info.value)
    assert "allow_pickle" not in text and "not a valid .npz file" in text and "np.savez" in text


@FUZZ_FILES
@given(arrays, st.one_of(st.none(), arrays), st.one_of(st.none(), arrays), st.sampled_from(["npz", "npy", "pt"]),
       st.one_of(st.none(), st.sampled_from(["1x2x2", "4", "2x2"])), st.one_of(st.none(), st.integers(1, 5)))
def test_arbitrary_arrays_as_data(x, y, classes, fmt, input_shape, limit):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        if fmt == "npz":
            path = folder / "data.npz"
            np.savez(path, x=x, **({"y": y} if y is not None else {}), **({"classes": classes} if classes is not None else {}))
        elif fmt == "npy":
            path = folder / "data.npy"
            np.save(path, x)
        else:
            assume(x.dtype.kind in "fiub" and (y is None or y.dtype.kind in "fiub"))  # what torch can hold
            path = folder / "data.pt"
            obj = {"x": torch.from_numpy(np.ascontiguousarray(x).astype(x.dtype.newbyteorder("=")))}
            if y is not None:
                obj["y"] = torch.from_numpy(np.ascontiguousarray(y).astype(y.dtype.newbyteorder("=")))
            torch.save(obj, path)
        shape = parse_input_shape(input_shape) if input_shape else None
        works_or_ours(_load_and_read, path, input_shape=shape, limit=limit)


@FUZZ_FILES
@given(arrays, arrays)
def test_arbitrary_arrays_for_a_model_with_two_inputs(a, b):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.npz"
        np.savez(path, pos=a, h=b)
        works_or_ours(_load_and_read, path, model_inputs=["pos", "h"])
