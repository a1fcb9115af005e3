"""The scan facade: settings -> model + data + symmetries -> sweep -> AuditResult, written to the output folder."""

from __future__ import annotations

import io
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import __version__
from .config import Settings, parse_input_map, parse_input_shape, read_toml, resolve, sidecar_for
from .data import Dataset, load_dataset
from .errors import ConfigError, EqauditError, PathNotFoundError
from .gates import Comparison, check_gates_matched, check_settings_gates, check_tolerance_metrics, compare_results, gates_for, parse_tolerances
from .layouts import LayoutInput
from .levels import element_levels, estimate_level, extent, flip_points, per_sample_floor, varying_column
from .models import ReshapedInput, load_model, resolve_device
from .models.base import check_declared_shape
from .report.io import write_bytes_atomic, write_text_atomic
from .result import ORBITS_FILE, AuditResult, DataInfo, ModelInfo, SymmetryResult
from .sweep import Progress, SweepOutput, sweep
from .symmetries import Symmetry, parse_symmetry
from .tasks import Task, task_for

WORST_SAMPLES = 8


def scan(
    models: str | Path | list[str | Path],
    *,
    config: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    write: bool = True,
    **options: Any,
) -> AuditResult:
    """Audit ``models`` with options named as in the settings table (``data=``, ``symmetry=[...]``,
    ``fail_over={"flip_rate": 0.05}``, ...); config files and ``EQAUDIT_*`` apply as on the CLI."""
    paths = [Path(m) for m in ([models] if isinstance(models, (str, Path)) else models)]
    settings = resolve(options, models=paths, config_file=Path(config) if config else None, env=env)
    result, _, _ = run_scan(paths, settings, progress=progress, write=write)
    return result


def default_out(models: list[Path]) -> Path:
    stems = [m.name[: -len(m.suffix)] if m.suffix else m.name for m in models]
    return Path("reports") / "__".join(dict.fromkeys(stems))


def run_scan(
    models: list[Path], settings: Settings, *, progress: Progress | None = None, write: bool = True
) -> tuple[AuditResult, Path, Comparison | None]:
    """Run the audit described by ``settings``; write result.json and the orbit table after each model.

    With a baseline (``settings.baseline``), the finished result is compared with it metric by metric;
    regressions are recorded in ``result.baseline`` and fail ``result.passed`` like a gate. Returns the
    result, its folder and the comparison (None without a baseline)."""
    if not models:
        raise ConfigError("No model given; pass at least one model file: eqaudit scan MODEL.")
    for path in models:  # before anything else: a mistyped model path is the likeliest mistake
        if not Path(path).exists():
            raise PathNotFoundError(f"Model file {str(path)!r} does not exist; check the path.")
    if not settings.data:
        raise ConfigError("No data given; pass --data PATH (or set data in MODEL.eqaudit.toml).")
    if not settings.symmetry:
        raise ConfigError("No symmetry given; pass --symmetry SPEC (see `eqaudit symmetries`).")
    if settings.batch_size <= 0:
        raise ConfigError(f"Expected --batch-size to be a positive number of rows, got {settings.batch_size}.")
    if settings.floor_samples < 0:
        raise ConfigError(f"Expected --floor-samples to be a number of samples >= 0 (0: all), got {settings.floor_samples}.")
    base_result, tolerances = _load_baseline(settings)
    device = resolve_device(settings.device)
    symmetries = [parse_symmetry(spec, seed=settings.seed) for spec in settings.symmetry]
    input_shape = parse_input_shape(settings.input_shape) if settings.input_shape else None
    factory_dirs = [settings.bases["model_factory"]] if "model_factory" in settings.bases else []
    input_map = parse_input_map(settings.input)
    task, out_names = task_for(settings.task, settings.output)
    if out_names is not None and len(out_names) > 1 and (settings.local or settings.layers):
        raise ConfigError("Expected one output for --local/--layers, got several --output declarations, do audit one output at a time.")
    # the first model's input names say whether it takes one tensor or several, fed from arrays by name
    first = _load(models[0], settings, device, factory_dirs, out_names)
    dataset = load_dataset(settings.data, limit=settings.limit, seed=settings.seed, input_shape=input_shape,
                           targets_key=settings.targets_key, layout=settings.layout, model_inputs=first[0].info.input_names, input_map=input_map,
                           act_on=settings.act_on)
    binding = dataset.binding
    if binding is not None and (settings.local or settings.layers):
        raise ConfigError(f"Expected --local/--layers only for models with one input, got a model with inputs "
                          f"{', '.join(binding.names)}, do drop --local and --layers for this model.")
    for sym in symmetries:
        for name in (binding.act_on[1:] if binding is not None else []):  # x last: permute binds to its points
            sym.check_input(dataset.input_shape(name))
        sym.check_input(dataset.sample_shape)
    task.check_reference(settings.reference, dataset.has_labels, dataset.has_targets, dataset.targets_key)
    check_settings_gates(settings, symmetries, dataset.has_labels, task.label_metrics)
    out_dir = Path(settings.out) if settings.out else default_out(models)

    result = AuditResult(
        eqaudit_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seed=settings.seed,
        device=str(device),
        models=[],
        data=DataInfo(
            path=dataset.path,
            key=dataset.key,
            n_samples=len(dataset),
            n_total=dataset.n_total,
            has_labels=dataset.has_labels,
            has_targets=dataset.has_targets,
            targets_key=dataset.targets_key if dataset.has_targets else None,
            sample_shape=list(dataset.sample_shape),
            classes=dataset.classes,
            layout=dataset.layout.name,
            inputs=dict(binding.keys) if binding is not None else None,
            act_on=list(binding.act_on) if binding is not None else None,
        ),
        symmetries=[],
        timing={"seconds": 0.0, "model_seconds": 0.0, "model_evals": 0, "evals_per_second": 0.0},
        settings={"values": _jsonable(settings.values), "sources": dict(settings.sources)},
        complete=False,
    )
    orbits: dict[str, np.ndarray] = {"sample_index": dataset.indices.astype(np.int64)}
    if dataset.has_labels:
        orbits["labels"] = dataset.y[dataset.indices]

    for m, path in enumerate(models):
        adapter, factory, dirs = first if m == 0 else _load(path, settings, device, factory_dirs, out_names)
        _check_inputs(adapter, dataset)
        model = _as_called(adapter, dataset, input_shape is not None)
        try:
            named = None if progress is None else (lambda d, t, w, name=Path(path).name: progress(d, t, f"{name} {w}"))
            swept = sweep(model, dataset, symmetries, task, batch_size=settings.batch_size, output_kind=settings.output_kind,
                          seed=settings.seed, progress=named, reference=settings.reference,
                          floor_samples=settings.floor_samples, prefetch=settings.prefetch)
        except (EqauditError, KeyboardInterrupt) as exc:
            if write:
                _write_partial(result, orbits, out_dir, m, adapter, dataset, symmetries, task, settings, getattr(exc, "partial", None))
            raise
        result.models.append(_model_info(adapter, dataset, swept.output_kind, settings.output))
        _add_symmetries(result, orbits, m, symmetries, swept, dataset, task, settings)
        if settings.local or settings.layers:
            _add_local(result, orbits, model, symmetries, dataset, task, settings)
        if settings.level_at_init:
            _add_level_at_init(result, adapter, factory, dirs, dataset, symmetries, task, settings, input_shape is not None)
        _apply_gates(result.symmetries[-len(symmetries):], symmetries, settings)  # once every summary key exists
        check_gates_matched([s.summary for s in result.symmetries[-len(symmetries):]], settings)
        t = result.timing
        t["seconds"] += swept.seconds
        t["model_seconds"] += swept.model_seconds
        t["model_evals"] += swept.model_evals
        t["evals_per_second"] = t["model_evals"] / t["seconds"] if t["seconds"] > 0 else 0.0
        result.passed = all(s.passed for s in result.symmetries)
        if write:
            result.complete = m == len(models) - 1
            write_outputs(result, orbits, out_dir)
    result.complete = True
    comparison = None
    if base_result is not None:
        comparison = compare_results(base_result, result, tolerances)
        result.baseline = {
            "path": str(settings.baseline),
            "passed": comparison.passed,
            "compared": len(comparison.rows),
            "regressions": [asdict(r) for r in comparison.regressions],
            "missing": list(comparison.missing),
        }
        result.passed = result.passed and comparison.passed
        if write:
            result.save(out_dir / "result.json")
    return result, out_dir, comparison


def _load(path: Path, settings: Settings, device, factory_dirs: list[Path], out_names: list[str | None] | None = None):
    """(adapter, factory, search dirs) for one model file; ``out_names``: the declared outputs (--output)."""
    factory, dirs = _factory_for(path, settings, factory_dirs)
    single = out_names[0] if out_names and len(out_names) == 1 else None
    adapter = load_model(path, device, factory=factory, search_dirs=dirs, trust=settings.trust,
                         output_name=settings.output_name or single, outputs=out_names)
    return adapter, factory, dirs


def _check_inputs(adapter, dataset: Dataset) -> None:
    """The model takes the inputs the data was bound to, each in the shape the model file declares."""
    binding = dataset.binding
    if binding is None:
        if len(adapter.info.input_names) > 1:
            raise ConfigError(f"Expected the models of one scan to take the same inputs, got {adapter.info.path!r} with inputs "
                              f"{', '.join(adapter.info.input_names)} after a model with one, do scan it separately.")
        check_declared_shape(adapter.info, dataset.stored_shape)
        return
    if adapter.info.input_names != binding.names:
        raise ConfigError(f"Expected the models of one scan to take the same inputs ({', '.join(binding.names)}), got "
                          f"{adapter.info.path!r} with inputs {', '.join(adapter.info.input_names) or 'one unnamed'}, do scan it separately.")
    for name in binding.names:
        check_declared_shape(adapter.info, dataset.input_shape(name), name)


def _load_baseline(settings: Settings):
    """The baseline result and the allowed regressions, checked before any model runs."""
    if not settings.baseline:
        return None, None
    base = AuditResult.load(Path(settings.baseline))
    tolerances = parse_tolerances(settings.max_regression)
    check_tolerance_metrics(tolerances, base)
    return base, tolerances


def _apply_gates(results: list[SymmetryResult], symmetries: list[Symmetry], settings) -> None:
    for s, sym in zip(results, symmetries):
        s.gates = gates_for(s.summary, sym, settings, s.per_element)
        s.passed = all(g.passed for g in s.gates)


def _write_partial(result, orbits, out_dir, m, adapter, dataset, symmetries, task, settings, partial) -> None:
    """After a failure mid-sweep: write every measurement finished so far (complete: false)."""
    if partial is not None and partial.tables:
        result.models.append(_model_info(adapter, dataset, partial.output_kind))
        done = symmetries[: len(partial.tables)]
        _add_symmetries(result, orbits, m, done, partial, dataset, task, settings)
        _apply_gates(result.symmetries[-len(done):], done, settings)
    if result.symmetries:
        result.complete = False
        result.passed = False
        write_outputs(result, orbits, out_dir)


def _as_called(adapter, dataset: Dataset, reshape: bool):
    """The adapter as the sweep calls it: canonical batches in, moved to the model's own layout
    (--layout) and reshaped to its flat rows (--input-shape) before each call."""
    model = ReshapedInput(adapter, dataset.stored_shape) if reshape else adapter
    return model if dataset.layout.is_identity else LayoutInput(model, dataset.layout)


def _model_info(adapter, dataset: Dataset, output_kind: str, outputs: list[str] | None = None) -> ModelInfo:
    return ModelInfo(
        path=adapter.info.path,
        backend=adapter.info.backend,
        sha256=adapter.info.sha256,
        input_shape=list(dataset.sample_shape),
        format=adapter.info.format,
        output_name=adapter.info.output_name,
        output_kind=output_kind,
        notes=list(adapter.info.notes),
        outputs=list(outputs or []),
    )


def _add_level_at_init(result, adapter, factory, dirs, dataset: Dataset, symmetries, task: Task, settings, reshape: bool) -> None:
    """The same levels for freshly initialised weights of the same architecture (seeded), so the
    report separates what the architecture gives from what training added."""
    import torch

    from .models.base import AdapterInfo
    from .models.factory import resolve_factory
    from .models.torch_backend import TorchAdapter

    first = len(result.symmetries) - len(symmetries)
    if adapter.info.format != "state_dict" or factory is None:
        for s in result.symmetries[first:]:
            s.summary["level_at_init"] = None
            s.summary["level_at_init_reason"] = "needs a state dict and its model factory to re-initialise the architecture"
        return
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's global RNG
        torch.manual_seed(settings.seed)
        module = resolve_factory(factory, dirs)()
    info = AdapterInfo(adapter.info.path, "torch", "init", "", str(adapter.device), input_names=list(adapter.info.input_names))
    fresh = TorchAdapter(module.to(adapter.device).eval(), info, adapter.device)
    model = _as_called(fresh, dataset, reshape)
    init = sweep(model, dataset, symmetries, task_for(settings.task, settings.output)[0], batch_size=settings.batch_size, output_kind=settings.output_kind, seed=settings.seed,
                 floor_samples=settings.floor_samples, prefetch=settings.prefetch)
    for s, sym, table in zip(result.symmetries[first:], symmetries, init.tables):
        floor = per_sample_floor(table, task.main_metric, sym.identity_index)
        lv = estimate_level(table[task.main_metric], floor, init.null, sym.identity_index, seed=settings.seed)
        s.summary["level_at_init"] = lv["level"]
        s.summary["level_at_init_ci"] = lv["level_ci"]
        if lv["level"] is None:
            s.summary["level_at_init_reason"] = lv.get("level_reason")
    result.timing["init_seconds"] = result.timing.get("init_seconds", 0.0) + init.seconds


def _add_local(result, orbits, model, symmetries: list[Symmetry], dataset: Dataset, task: Task, settings) -> None:
    """Lie derivatives (--local) and per-layer shares (--layers) for the model's symmetries just added."""
    import time

    from .lie import layer_attribution, lie_derivative

    t0 = time.perf_counter()
    first = len(result.symmetries) - len(symmetries)
    for j, sym in enumerate(symmetries, start=first):
        summary = result.symmetries[j].summary
        local, per_sample = lie_derivative(model, dataset, sym, task, batch_size=settings.batch_size)
        summary.update(local)
        if per_sample is not None:
            orbits[f"s{j}.lie"] = per_sample
        if settings.layers:
            summary.update(layer_attribution(model, dataset, sym, task))
    result.timing["local_seconds"] = result.timing.get("local_seconds", 0.0) + time.perf_counter() - t0


def _factory_for(path: Path, settings: Settings, default_dirs: list[Path]) -> tuple[str | None, list[Path]]:
    """The architecture for one model: a factory given on the command line, in the environment or in
    --config applies to every model; otherwise each model's own sidecar names its own."""
    source = settings.sources.get("model_factory", "default")
    if source == "default" or source.startswith("sidecar"):
        sidecar = sidecar_for(Path(path))
        if sidecar.is_file():
            own = read_toml(sidecar).get("model_factory")
            if own is not None:
                return str(own), [sidecar.parent.resolve()]
    return settings.model_factory, default_dirs


def _add_symmetries(result, orbits, m, symmetries: list[Symmetry], swept: SweepOutput, dataset: Dataset, task: Task, settings) -> None:
    for sym, table in zip(symmetries, swept.tables):
        j = len(result.symmetries)
        summary, per_element = task.summarize(table, sym.identity_index)
        _add_levels(summary, per_element, orbits, j, sym, table, swept, task, settings)
        elements = sym.elements.tolist()
        for e, row in enumerate(per_element):
            row["element"] = elements[e]
            row["label"] = sym.labels[e]
        desc = sym.describe()
        result.symmetries.append(
            SymmetryResult(
                model=m,
                name=desc["name"],
                spec=desc["spec"],
                exact=desc["exact"],
                domain=desc["domain"],
                param_names=desc["param_names"],
                units=desc["units"],
                layout=desc["layout"],
                identity_index=desc["identity_index"],
                elements=elements,
                labels=list(sym.labels),
                summary=summary,
                per_element=per_element,
                task=task.name,
                reference=settings.reference,
                main_metric=task.main_metric,
                notes=list(desc.get("notes", [])),
            )
        )
        for key, arr in table.items():
            orbits[f"s{j}.{key}"] = arr
        worst = _worst(table, sym.identity_index, task.main_metric)
        orbits[f"s{j}.worst_index"] = worst
        orbits[f"s{j}.worst_x"] = dataset.take(worst).numpy()


def _add_levels(summary, per_element, orbits, j, sym: Symmetry, table, swept: SweepOutput, task: Task, settings) -> None:
    """Level, its CI and status, null, per-element levels, and for one-parameter symmetries the
    extent and per-sample flip points (see eqaudit.levels)."""
    metric = task.main_metric
    floor = per_sample_floor(table, metric, sym.identity_index)
    summary.update(estimate_level(table[metric], floor, swept.null, sym.identity_index, seed=settings.seed))
    null_mean = summary["null"] if summary["level_status"] == "ok" else None
    levels = element_levels(table[metric], floor, null_mean)
    for row, lv in zip(per_element, levels.tolist()):
        row["level"] = lv
    if sym.layout in ("polar", "line"):  # a one-parameter orbit (translate:axis=y varies its second column)
        col = varying_column(sym.elements.numpy())
        params = sym.elements[:, col].numpy()
        summary["extent"] = extent(params, levels, sym.identity_index, settings.extent_tolerance, sym.units[col])
        if "flipped" in table:
            up, down = flip_points(table["flipped"], params, sym.identity_index)
            orbits[f"s{j}.flip_up"], orbits[f"s{j}.flip_down"] = up, down


def _worst(table: dict[str, np.ndarray], identity_index: int, metric: str, k: int = WORST_SAMPLES) -> np.ndarray:
    """Rows of the orbit table ranked worst first by the orbit mean of the task's main metric (plus flips)."""
    err = np.delete(table[metric], identity_index, axis=1) if table[metric].shape[1] > 1 else table[metric]
    score = err.mean(1) + (table["flipped"].mean(1) if "flipped" in table else 0.0)
    return np.argsort(-score, kind="stable")[:k].astype(np.int64)


def write_outputs(result: AuditResult, orbits: dict[str, np.ndarray], out_dir: Path) -> None:
    """Write the orbit table, the per-element CSV, then result.json, each atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **orbits)
    write_bytes_atomic(out_dir / ORBITS_FILE, buf.getvalue())
    write_text_atomic(out_dir / "elements.csv", elements_frame(result).to_csv(index=False))
    result.save(out_dir / "result.json")


def elements_frame(result: AuditResult):
    """One row per (model, symmetry, group element) with every per-element metric: a pandas DataFrame
    (written as elements.csv, for spreadsheets and CI artifacts)."""
    import pandas as pd

    rows = []
    for s in result.symmetries:
        for e, pe in enumerate(s.per_element):
            row = {"model": Path(result.models[s.model].path).name, "symmetry": s.spec, "element": pe.get("label", str(e)),
                   "identity": e == s.identity_index}
            row.update({name: value for name, value in zip(s.param_names, s.elements[e])})
            row.update({k: v for k, v in pe.items() if k not in ("label", "element") and not isinstance(v, (list, dict))})
            rows.append(row)
    return pd.DataFrame(rows)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
