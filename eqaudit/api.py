"""The scan facade: settings -> model + data + symmetries -> sweep -> AuditResult, written to the output folder."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from . import __version__, cache, distributed, outdir
from .config import Settings, parse_input_map, parse_input_shape, read_toml, resolve, sidecar_for
from .data import Dataset, load_dataset
from .errors import ConfigError, EqauditError, PathNotFoundError
from .fingerprint import audit_fingerprint, differences
from .gates import Comparison, check_gates, check_gates_matched, check_tolerance_metrics, compare_results, gates_for, parse_tolerances
from .layouts import LayoutInput
from .levels import element_levels, estimate_level, extent, flip_points, per_sample_floor, varying_column
from .models import ReshapedInput, load_model
from .models.base import check_declared_shape
from .report.base import Outcome, file_reporters, selected as selected_formats
from .report.csvfile import elements_frame  # noqa: F401  (re-exported: api.elements_frame)
from .report.thumbs import pack as pack_thumbs, thumb_elements
from .result import AuditResult, DataInfo, ModelInfo, OrbitTable, SymmetryResult
from .sweep import Progress, sweep, sweep_tables
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
    resume: bool = False,
    **options: Any,
) -> AuditResult:
    """Audit ``models`` with options named as in the settings table (``data=``, ``symmetry=[...]``,
    ``fail_over={"flip_rate": 0.05}``, ...); config files and ``EQAUDIT_*`` apply as on the CLI.
    ``resume=True`` continues the interrupted audit checkpointed in the output folder."""
    paths = [Path(m) for m in ([models] if isinstance(models, (str, Path)) else models)]
    settings = resolve(options, models=paths, config_file=Path(config) if config else None, env=env)
    result, _, _ = run_scan(paths, settings, progress=progress, write=write, resume=resume)
    return result


def default_out(models: list[Path]) -> Path:
    stems = [m.name[: -len(m.suffix)] if m.suffix else m.name for m in models]
    return Path("reports") / "__".join(dict.fromkeys(stems))


@dataclass
class ScanPlan:
    """What every model of one scan shares: settings, symmetries, task, data, device and the hooks."""

    settings: Settings
    symmetries: list[Symmetry]
    task: Task
    dataset: Dataset
    device: Any  # torch.device
    reshape: bool  # --input-shape: canonical batches are reshaped to the model's flat rows
    factory_dirs: list[Path]
    out_names: list[str | None] | None
    progress: Progress | None = None
    stop: Callable[[], None] | None = None  # called between batches; raises to stop the audit
    ranks: distributed.Ranks | None = None  # several processes (torchrun): this one's place among them
    batch_size: int = 256  # rows per model call (--batch-size, or what auto chose)
    batch_search: dict | None = None  # --batch-size auto: how the size was chosen (eqaudit.models.batching.BatchChoice)


@dataclass
class ModelAudit:
    """One model's audit: its info, one SymmetryResult per symmetry (in plan order), the null its levels
    were estimated from, and its share of the timing. ``finished``: levels at init and gates are in."""

    info: ModelInfo | None = None
    symmetries: list[SymmetryResult] = field(default_factory=list)
    null: np.ndarray | None = None
    timing: dict[str, float] = field(default_factory=dict)
    finished: bool = False


def run_scan(
    models: list[Path], settings: Settings, *, progress: Progress | None = None, write: bool = True, resume: bool = False,
    stop: Callable[[], None] | None = None, notify: Callable[[str], None] | None = None,
) -> tuple[AuditResult, Path, Comparison | None]:
    """Run the audit described by ``settings``, checkpointing result.json and the orbit table
    (``complete: false``) after each finished (model, symmetry).

    ``resume`` continues the checkpoint in the output folder after checking that model files, data and
    measurement settings are those it was measured with (eqaudit.fingerprint); the final result is the
    one an uninterrupted run gives (timing aside). ``stop`` is called between batches and raises to stop
    (whatever finished stays on disk); ``notify`` receives one-line warnings (an unfinished earlier run).
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
    if settings.batch_size != "auto" and settings.batch_size <= 0:
        raise ConfigError(f"Expected --batch-size to be a positive number of rows, got {settings.batch_size}.")
    out_dir = Path(settings.out) if settings.out else default_out(models)
    if write:
        outdir.check_writable(out_dir)
    elif resume:
        raise ConfigError("Expected an output folder to resume from, got write=False; drop resume or write the result.")
    ranks = distributed.ranks()  # several processes: rank 0 alone reads and writes --out (eqaudit.distributed)
    lead = ranks is None or ranks.lead
    write, resume = write and lead, resume and lead
    saved = _read_checkpoint(out_dir) if resume else None
    with _from_files(settings, "baseline", "max_regression"):
        base_result, tolerances = _load_baseline(settings)
    device = distributed.rank_device(settings.device, ranks)
    with _from_files(settings, "symmetry"):
        symmetries = [parse_symmetry(spec, seed=settings.seed) for spec in settings.symmetry]
    input_shape = parse_input_shape(settings.input_shape) if settings.input_shape else None
    factory_dirs = [settings.bases["model_factory"]] if "model_factory" in settings.bases else []
    input_map = parse_input_map(settings.input)
    with _from_files(settings, "task", "output"):
        task, out_names = task_for(settings.task, settings.output)
    if out_names is not None and len(out_names) > 1 and (settings.local or settings.layers):
        raise ConfigError("Expected one output for --local/--layers, got several --output declarations, do audit one output at a time.")
    if getattr(task, "reduces", False) and (settings.local or settings.layers):
        raise ConfigError("Expected no --local/--layers with --output embedding (a Lie derivative of the raw embedding measures its "
                          "invariance, not how it transforms), do drop them, or run `eqaudit discover` for the local picture.")
    factories = [_factory_for(m, settings, factory_dirs)[:2] for m in models] if write else None
    known: dict[str, str] = {}  # each file hashed once, by the cache lookup or the fingerprint
    if write and settings.cache and saved is None:
        hit = cache.lookup(out_dir, models, settings.values, __version__, factories=factories, known=known,
                           need_orbits="orbits" in selected_formats(settings.format))
        if hit is not None:
            if ranks is not None:
                ranks.tell("cached")
            return _serve_cached(*hit, out_dir, settings, symmetries, task, base_result, tolerances)
    if ranks is not None and ranks.tell("measure") == "cached":
        return None, out_dir, None  # rank 0 serves the audit from its cache: nothing to measure here
    # the first model's input names say whether it takes one tensor or several, fed from arrays by name
    with _from_files(settings, "model_factory", "output_name", "output_kind"):
        first = _load(models[0], settings, device, factory_dirs, out_names)
    with _from_files(settings, "data", "limit", "input_shape", "targets_key", "layout", "input", "act_on"):
        dataset = load_dataset(settings.data, limit=settings.limit, seed=settings.seed, input_shape=input_shape,
                               targets_key=settings.targets_key, layout=settings.layout, model_inputs=first[0].info.input_names,
                               input_map=input_map, act_on=settings.act_on)
    binding = dataset.binding
    if binding is not None and (settings.local or settings.layers):
        raise ConfigError(f"Expected --local/--layers only for models with one input, got a model with inputs "
                          f"{', '.join(binding.names)}, do drop --local and --layers for this model.")
    with _from_files(settings, "symmetry", "data", "layout", "act_on"):
        for sym in symmetries:
            for name in (binding.act_on[1:] if binding is not None else []):  # x last: permute binds to its points
                sym.check_input(dataset.input_shape(name))
            sym.check_input(dataset.sample_shape)
    with _from_files(settings, "reference", "targets_key", "data"):
        task.check_reference(settings.reference, dataset.has_labels, dataset.has_targets, dataset.targets_key)
    with _from_files(settings, "gates", "fail_over"):
        check_gates([*settings.fail_over, *settings.gates], symmetries=symmetries, has_labels=dataset.has_labels,
                    label_metrics=task.label_metrics)
    plan = ScanPlan(settings, symmetries, task, dataset, device, input_shape is not None, factory_dirs, out_names, progress, stop, ranks)
    _choose_batch_size(plan, first[0])
    fp = audit_fingerprint(models, dataset.path, dataset.key, settings.values, __version__, factories, known) if write else None

    if saved is not None:
        result, orbits = _resume_from(saved, out_dir, fp, settings, device, len(symmetries))
        result.batch_size, result.batch_search = plan.batch_size, plan.batch_search
    else:
        result, orbits = _new_result(plan, fp), OrbitTable.start(dataset.indices, dataset.y[dataset.indices] if dataset.has_labels else None)
        if lead:
            _add_small_inputs(orbits, dataset, symmetries)
    if write:
        previous = outdir.start(out_dir, keep=saved is not None)
        if previous is not None and saved is None and notify is not None:
            notify(outdir.describe_marker(out_dir, previous) + "; its outputs were removed (pass --resume to continue such a run instead)")

    n_sym = len(symmetries)
    finished = result.checkpoint["models_finished"] if result.checkpoint else 0
    if ranks is not None:
        finished, measured = ranks.tell((finished, len(result.symmetries)))
        if not lead:  # another rank: measures its share of what rank 0's checkpoint lacks and hands it over
            for m in range(finished, len(models)):
                prior = ModelAudit(symmetries=[None] * max(0, measured - m * n_sym))
                audit_model(plan, m, models[m], orbits, loaded=first if m == 0 else None, prior=prior)
            return result, out_dir, None
    result.timing["world_size"] = ranks.world if ranks is not None else 1  # processes this run measured with
    for m in range(finished):  # gates are re-read from this run's settings; measurements are kept
        _apply_gates(result.symmetries[m * n_sym:(m + 1) * n_sym], symmetries, settings)
    for m in range(finished, len(models)):
        prior = ModelAudit(info=result.models[m] if m < len(result.models) else None, symmetries=result.symmetries[m * n_sym:],
                           null=orbits.null(m))
        base = len(result.symmetries) - len(prior.symmetries)

        def checkpoint(audit: ModelAudit, m=m, base=base) -> None:
            _merge(result, m, base, audit)
            if write:
                result.complete = False
                result.passed = False  # nothing passes before it is complete
                result.checkpoint = {"fingerprint": fp, "models_finished": m + (1 if audit.finished else 0)}
                write_outputs(result, orbits, out_dir, formats=plan.settings.format)

        audit_model(plan, m, models[m], orbits, loaded=first if m == 0 else None, prior=prior, on_progress=checkpoint)
    result.checkpoint = {"fingerprint": fp, "models_finished": len(models)} if write else None
    return _conclude(result, orbits, out_dir, settings, base_result, tolerances, write)


def _serve_cached(result: AuditResult, orbits: OrbitTable, out_dir: Path, settings: Settings, symmetries: list[Symmetry], task: Task,
                  base_result: AuditResult | None, tolerances) -> tuple[AuditResult, Path, Comparison | None]:
    """A result from the cache (eqaudit.cache) completed as this run asks: its measurements kept, gates,
    baseline and outputs from this run's settings; no model is loaded or called."""
    check_gates([*settings.fail_over, *settings.gates], symmetries=symmetries, has_labels=result.data.has_labels,
                label_metrics=task.label_metrics)
    n_sym = len(symmetries)
    for m in range(len(result.models)):
        _apply_gates(result.symmetries[m * n_sym:(m + 1) * n_sym], symmetries, settings)
        check_gates_matched([s.summary for s in result.symmetries[m * n_sym:(m + 1) * n_sym]], [*settings.fail_over, *settings.gates])
    result.settings = {"values": _jsonable(settings.values), "sources": dict(settings.sources)}
    result.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result.baseline = None
    cache.mark_hit(result)
    outdir.start(out_dir, keep=False)  # what this run's --format leaves out goes, as after a fresh scan
    return _conclude(result, orbits, out_dir, settings, base_result, tolerances, True)


def _conclude(result: AuditResult, orbits: OrbitTable, out_dir: Path, settings: Settings, base_result: AuditResult | None,
              tolerances, write: bool) -> tuple[AuditResult, Path, Comparison | None]:
    """A measured (or cached) result made complete: passed from its gates, the baseline comparison, the files written."""
    result.complete = True
    result.passed = all(s.passed for s in result.symmetries)
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
        write_outputs(result, orbits, out_dir, formats=settings.format)
        outdir.finish(out_dir)
    return result, out_dir, comparison


def audit_model(plan: ScanPlan, m: int, path: Path, orbits: OrbitTable, *, loaded=None, prior: ModelAudit | None = None,
                on_progress: Callable[[ModelAudit], None] | None = None) -> ModelAudit:
    """Audit model ``m`` (file ``path``) on every symmetry of the plan, continuing ``prior`` (the
    symmetries a checkpoint already holds, and the null they were measured with). Each finished
    symmetry's per-sample arrays go into ``orbits`` and ``on_progress`` sees the audit so far; then
    levels at init (--level-at-init) and the gates complete it (``finished``)."""
    settings, symmetries, dataset, task = plan.settings, plan.symmetries, plan.dataset, plan.task
    audit = prior if prior is not None else ModelAudit()
    done = len(audit.symmetries)
    adapter, factory, dirs = loaded if loaded is not None else _load(path, settings, plan.device, plan.factory_dirs, plan.out_names)
    _check_inputs(adapter, dataset)
    model = _as_called(adapter, dataset, plan.reshape, settings.dtype)
    _bind_shapes(symmetries[done:], model, dataset, plan.device)
    named = None if plan.progress is None else (lambda d, t, w, name=Path(path).name: plan.progress(d, t, f"{name} {w}"))
    tables = sweep_tables(model, dataset, symmetries[done:], task, batch_size=plan.batch_size, output_kind=settings.output_kind,
                          seed=settings.seed, progress=named, reference=settings.reference, stop=plan.stop,
                          floor_samples=settings.floor_samples, prefetch=settings.prefetch, ranks=plan.ranks)
    if plan.ranks is not None and not plan.ranks.lead:
        for _ in tables:  # this rank's rows go to rank 0 inside the sweep; it yields None tables here
            pass
        return audit
    j0 = m * len(symmetries)
    for st in tables:
        if done == 0 and st.index == 0:
            audit.null = st.null  # measured here; a resumed audit keeps the one its first symmetries used
            orbits.put_null(m, st.null)
        si = done + st.index
        sym = symmetries[si]
        audit.info = _model_info(adapter, dataset, st.output_kind, settings.output)
        audit.symmetries.append(_symmetry_result(m, j0 + si, sym, st.table, audit.null, orbits, plan, st.reduced))
        _add_thumb_outputs(orbits, j0 + si, model, task, dataset, plan.device)
        _add_point_errors(orbits, j0 + si, model, sym, plan)
        _add_timing(audit.timing, seconds=st.seconds, model_seconds=st.model_seconds, model_evals=st.model_evals)
        if settings.local or settings.layers:
            _add_local(audit.symmetries[-1], j0 + si, orbits, model, sym, plan, audit.timing)
        if on_progress is not None:
            on_progress(audit)
    _add_sample_outputs(orbits, m, model, task, dataset, plan.device)
    if settings.level_at_init:
        _add_level_at_init(audit, adapter, factory, dirs, plan)
    with _from_files(settings, "gates", "fail_over"):
        _apply_gates(audit.symmetries, symmetries, settings)  # once every summary key exists
        check_gates_matched([s.summary for s in audit.symmetries], [*settings.fail_over, *settings.gates])
    audit.finished = True
    if on_progress is not None:
        on_progress(audit)
    return audit


def _new_result(plan: ScanPlan, fp: dict | None) -> AuditResult:
    dataset, binding, settings = plan.dataset, plan.dataset.binding, plan.settings
    return AuditResult(
        eqaudit_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seed=settings.seed,
        device=str(plan.device),
        dtype=settings.dtype,
        batch_size=plan.batch_size,
        batch_search=plan.batch_search,
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
        checkpoint={"fingerprint": fp, "models_finished": 0} if fp is not None else None,
    )


def _read_checkpoint(out_dir: Path) -> AuditResult:
    """The interrupted audit in ``out_dir`` (--resume), or a ConfigError saying why there is none."""
    path = out_dir / "result.json"
    if not path.is_file():
        marker = outdir.read_marker(out_dir)
        why = outdir.describe_marker(out_dir, marker) + " before its first checkpoint" if marker is not None else "no scan has written there"
        raise ConfigError(f"Nothing to resume in {str(out_dir)!r} ({why}); run the scan without --resume.")
    saved = AuditResult.load(path)
    if not saved.checkpoint or not saved.checkpoint.get("fingerprint"):
        raise ConfigError(f"{str(path)!r} holds no checkpoint to resume (written by an older eqaudit); run the scan without --resume.")
    return saved


def _resume_from(saved: AuditResult, out_dir: Path, fp: dict, settings: Settings, device, n_sym: int) -> tuple[AuditResult, OrbitTable]:
    """The checkpointed result and orbit table to continue, once the fingerprint says it is the same audit."""
    changed = differences(saved.checkpoint["fingerprint"], fp)
    if changed:
        raise ConfigError(f"Cannot resume the audit in {str(out_dir)!r}: {'; '.join(changed)}. "
                          "Run the scan without --resume to start over (or restore what changed).")
    orbits = OrbitTable.load(out_dir / saved.orbits_file) if (out_dir / saved.orbits_file).is_file() else None
    finished = saved.checkpoint.get("models_finished", 0)
    if orbits is None or len(saved.symmetries) < finished * n_sym:
        raise ConfigError(f"The checkpoint in {str(out_dir)!r} is incomplete (orbit table missing or fewer symmetries than "
                          "finished models); run the scan without --resume to start over.")
    orbits.keep_first(len(saved.symmetries), len(saved.models))
    saved.settings = {"values": _jsonable(settings.values), "sources": dict(settings.sources)}
    saved.device = str(device)
    return saved, orbits


def _merge(result: AuditResult, m: int, base: int, audit: ModelAudit) -> None:
    """Put model ``m``'s audit so far into ``result``: its info, its symmetries from index ``base``, its timing."""
    if audit.info is not None:
        if len(result.models) > m:
            result.models[m] = audit.info
        else:
            result.models.append(audit.info)
    result.symmetries[base:] = audit.symmetries
    t = result.timing
    for key, v in audit.timing.items():
        t[key] = t.get(key, 0) + v
    audit.timing.clear()  # counted once
    t["evals_per_second"] = t["model_evals"] / t["seconds"] if t.get("seconds", 0) > 0 else 0.0


def _add_timing(timing: dict[str, float], **parts: float) -> None:
    for key, v in parts.items():
        timing[key] = timing.get(key, 0) + v


def _load(path: Path, settings: Settings, device, factory_dirs: list[Path], out_names: list[str | None] | None = None):
    """(adapter, factory, search dirs) for one model file; ``out_names``: the declared outputs (--output)."""
    factory, dirs, check = _factory_for(path, settings, factory_dirs)
    single = out_names[0] if out_names and len(out_names) == 1 else None
    adapter = load_model(path, device, factory=factory, search_dirs=dirs, trust=settings.trust,
                         output_name=settings.output_name or single, outputs=out_names, check_factory=check)
    return adapter, factory, dirs


def _choose_batch_size(plan: ScanPlan, adapter) -> None:
    """plan.batch_size from --batch-size, or for ``auto`` from eqaudit.models.batching.auto_batch_size
    (the first model, called as the sweep calls it, on the first samples of the data)."""
    if plan.settings.batch_size != "auto":
        plan.batch_size = int(plan.settings.batch_size)
        return
    from .models.batching import auto_batch_size

    _check_inputs(adapter, plan.dataset)
    choice = auto_batch_size(_as_called(adapter, plan.dataset, plan.reshape, plan.settings.dtype), plan.dataset, plan.device)
    plan.batch_size, plan.batch_search = choice.size, choice.describe()
    if plan.ranks is not None:  # one chunk plan for every rank: rank 0's choice
        plan.batch_size, plan.batch_search = plan.ranks.tell((plan.batch_size, plan.batch_search))


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
        s.gates = gates_for(s.summary, sym, [*settings.fail_over, *settings.gates], s.per_element)
        s.passed = all(g.passed for g in s.gates)


def _as_called(adapter, dataset: Dataset, reshape: bool, dtype: str = "float32"):
    """The adapter as the sweep calls it: canonical batches in, moved to the model's own layout
    (--layout) and reshaped to its flat rows (--input-shape) before each call, run in ``dtype`` (--dtype)."""
    from .models.precision import with_dtype

    adapter = with_dtype(adapter, dtype)
    model = ReshapedInput(adapter, dataset.stored_shape) if reshape else adapter
    binding = dataset.binding
    if binding is not None and (binding.layouts or not dataset.layout.is_identity):  # several inputs, each in its own layout
        return LayoutInput(model, dataset.layout, binding.main, binding.layouts)
    return model if dataset.layout.is_identity else LayoutInput(model, dataset.layout)


def _bind_shapes(symmetries: list[Symmetry], model, dataset: Dataset, device) -> None:
    """Quarter turns of non-square images (rot90, d4): one call of this model on one sample turned to the
    transposed shape decides whether they run on the full group, in two shape groups (the call
    succeeds), or on the shape-keeping subgroup with its note (it fails; models with several inputs
    always). Per model, since models of one scan may differ (eqaudit.symmetries.images)."""
    import torch

    wanting = [s for s in symmetries if s.other_input_shape() is not None]
    if not wanting:
        return
    accepted = False
    if dataset.binding is None and len(dataset):
        x = torch.rot90(dataset.take(np.arange(1), device), 1, (-2, -1))
        try:
            with torch.inference_mode():
                out = model(x)
            accepted = all(bool(torch.isfinite(o).all()) for o in ((out,) if isinstance(out, torch.Tensor) else out))
        except Exception:  # noqa: BLE001 - a model that rejects the other shape keeps the subgroup
            accepted = False
    for s in wanting:
        s.use_both_shapes(accepted)


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


def _add_level_at_init(audit: ModelAudit, adapter, factory, dirs, plan: ScanPlan) -> None:
    """The same levels for freshly initialised weights of the same architecture (seeded), so the
    report separates what the architecture gives from what training added."""
    import torch

    from .models.base import AdapterInfo
    from .models.factory import resolve_factory
    from .models.torch_backend import TorchAdapter

    settings, task = plan.settings, plan.task
    if getattr(task, "reduces", False):
        for s in audit.symmetries:
            s.summary["level_at_init"] = None
            s.summary["level_at_init_reason"] = "not measured for fitted embedding maps"
        return
    if adapter.info.format != "state_dict" or factory is None:
        for s in audit.symmetries:
            s.summary["level_at_init"] = None
            s.summary["level_at_init_reason"] = "needs a state dict and its model factory to re-initialise the architecture"
        return
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's global RNG
        torch.manual_seed(settings.seed)
        module = resolve_factory(factory, dirs)()
    info = AdapterInfo(adapter.info.path, "torch", "init", "", str(adapter.device), input_names=list(adapter.info.input_names))
    fresh = TorchAdapter(module.to(adapter.device).eval(), info, adapter.device)
    model = _as_called(fresh, plan.dataset, plan.reshape, settings.dtype)
    init = sweep(model, plan.dataset, plan.symmetries, task_for(settings.task, settings.output)[0], batch_size=plan.batch_size,
                 output_kind=settings.output_kind, seed=settings.seed, stop=plan.stop,
                 floor_samples=settings.floor_samples, prefetch=settings.prefetch)
    for s, sym, table in zip(audit.symmetries, plan.symmetries, init.tables):
        floor = per_sample_floor(table, task.main_metric, sym.identity_index)
        lv = estimate_level(table[task.main_metric], floor, init.null, sym.identity_index, seed=settings.seed)
        s.summary["level_at_init"] = lv["level"]
        s.summary["level_at_init_ci"] = lv["level_ci"]
        if lv["level"] is None:
            s.summary["level_at_init_reason"] = lv.get("level_reason")
    _add_timing(audit.timing, init_seconds=init.seconds)


def _add_local(s: SymmetryResult, j: int, orbits: OrbitTable, model, sym: Symmetry, plan: ScanPlan, timing: dict[str, float]) -> None:
    """Lie derivative (--local) and per-layer shares (--layers) of one finished symmetry ``s`` (index j)."""
    import time

    from .lie import layer_attribution, lie_derivative

    t0 = time.perf_counter()
    local, per_sample = lie_derivative(model, plan.dataset, sym, plan.task, batch_size=plan.batch_size)
    s.summary.update(local)
    if per_sample is not None:
        orbits.put(j, "lie", per_sample)
    if plan.settings.layers:
        s.summary.update(layer_attribution(model, plan.dataset, sym, plan.task))
    _add_timing(timing, local_seconds=time.perf_counter() - t0)


def _factory_for(path: Path, settings: Settings, default_dirs: list[Path]):
    """The architecture for one model: a factory given on the command line, in the environment or in
    --config applies to every model; otherwise each model's own sidecar names its own. The third value
    refuses, before import, factory code that came with the model (a sidecar or --config), unless trusted."""
    from functools import partial

    from .models.factory import check_vouched

    source = settings.sources.get("model_factory", "default")
    factory, dirs = settings.model_factory, default_dirs
    if source == "default" or source.startswith("sidecar"):
        sidecar = sidecar_for(Path(path))
        if sidecar.is_file():
            own = read_toml(sidecar).get("model_factory")
            if own is not None:
                factory, dirs, source = str(own), [sidecar.parent.resolve()], f"sidecar {sidecar}"
    vouched = settings.trust or not source.startswith(("sidecar", "config"))
    return factory, dirs, None if vouched else partial(check_vouched, origin=source, project=settings.project)


def _symmetry_result(m: int, j: int, sym: Symmetry, table: dict[str, np.ndarray], null: np.ndarray | None, orbits: OrbitTable,
                     plan: ScanPlan, reduced=None) -> SymmetryResult:
    """Summary, per-element rows and levels of one finished symmetry (index j of ``symmetries[]``);
    its per-sample arrays and worst samples go into ``orbits``. ``reduced``: the task's accumulator
    (Task.accumulator), whose ``finish`` gives the level instead of the per-sample table."""
    task, settings = plan.task, plan.settings
    summary, per_element = task.summarize(table, sym.identity_index)
    if reduced is None:
        _add_levels(summary, per_element, orbits, j, sym, table, null, task, settings)
    else:
        _add_reduced(summary, per_element, orbits, j, sym, reduced, null, task, settings)
    elements = sym.elements.tolist()
    for e, row in enumerate(per_element):
        row["element"] = elements[e]
        row["label"] = sym.labels[e]
    desc = sym.describe()
    for key, arr in table.items():
        orbits.put(j, key, arr)
    worst = _worst(table, sym.identity_index, task.main_metric)
    orbits.put(j, "worst_index", worst)
    orbits.put(j, "worst_x", plan.dataset.take(worst).numpy())
    binding = plan.dataset.binding
    masks = None
    if binding is not None and "mask" in binding.arrays:  # padded systems: which atoms of the worst samples are real
        masks = np.asarray(binding.arrays["mask"][plan.dataset.indices[worst]]) != 0
        orbits.put(j, "worst_mask", masks)
    _add_thumbs(orbits, j, sym, table[task.main_metric][worst], orbits.get(j, "worst_x"), masks)
    _add_point_moves(orbits, j, sym)
    return SymmetryResult(
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


def _add_levels(summary, per_element, orbits: OrbitTable, j, sym: Symmetry, table, null: np.ndarray | None, task: Task, settings) -> None:
    """Level, its CI and status, null, per-element levels, and for one-parameter symmetries the
    extent and per-sample flip points (see eqaudit.levels)."""
    metric = task.main_metric
    floor = per_sample_floor(table, metric, sym.identity_index)
    resolved = [row.get("resolved") for row in per_element]  # a resampled orbit's: nothing resolved = floor-limited
    resolved = np.array(resolved, bool) if not sym.exact and None not in resolved else None
    summary.update(estimate_level(table[metric], floor, null, sym.identity_index, seed=settings.seed, resolved=resolved))
    null_mean = summary["null"] if summary["level_status"] in ("ok", "floor-limited") else None
    levels = element_levels(table[metric], floor, null_mean)
    for row, lv in zip(per_element, levels.tolist()):
        row["level"] = lv
    if sym.layout in ("polar", "line"):  # a one-parameter orbit (translate:axis=y varies its second column)
        col = varying_column(sym.elements.numpy())
        params = sym.elements[:, col].numpy()
        summary["extent"] = extent(params, levels, sym.identity_index, settings.extent_tolerance, sym.units[col])
        if "flipped" in table:
            up, down = flip_points(table["flipped"], params, sym.identity_index)
            orbits.put(j, "flip_up", up)
            orbits.put(j, "flip_down", down)


def _add_reduced(summary, per_element, orbits: OrbitTable, j, sym: Symmetry, reduced, null: np.ndarray | None, task: Task, settings) -> None:
    """Summary keys and levels from the task's finished reduction (``Task.finish``), its arrays into
    ``orbits``; for one-parameter symmetries the extent from its per-element levels."""
    for key, arr in task.finish(reduced, sym, summary, per_element, null).items():
        orbits.put(j, key, arr)
    if sym.layout in ("polar", "line"):
        col = varying_column(sym.elements.numpy())
        levels = np.array([np.nan if row.get("level") is None else row["level"] for row in per_element], dtype=np.float64)
        summary["extent"] = extent(sym.elements[:, col].numpy(), levels, sym.identity_index, settings.extent_tolerance, sym.units[col])


def _worst(table: dict[str, np.ndarray], identity_index: int, metric: str, k: int = WORST_SAMPLES) -> np.ndarray:
    """Rows of the orbit table ranked worst first by the orbit mean of the task's main metric (plus flips)."""
    err = np.delete(table[metric], identity_index, axis=1) if table[metric].shape[1] > 1 else table[metric]
    score = err.mean(1) + (table["flipped"].mean(1) if "flipped" in table else 0.0)
    return np.argsort(-score, kind="stable")[:k].astype(np.int64)


def write_outputs(result: AuditResult, orbits: OrbitTable, out_dir: Path, *, formats: list[str] | None = None) -> None:
    """Write the scan's files, each atomically: the orbit table, the per-element CSV, then result.json
    (always, and last: a checkpoint never lists a symmetry whose arrays are not on disk; ``formats`` as
    --format, None: all; see eqaudit.report.base)."""
    outcome = Outcome(result, Path(out_dir), orbits=orbits.arrays)
    for reporter in file_reporters(formats):
        reporter.write(outcome)
    if "html" in selected_formats(formats):
        from .report import pool

        pool.submit_checkpoint(result, out_dir)  # the report's figures, drawn ahead where the CLI asked for it


SMALL_INPUT_CHUNK = 512


def _add_small_inputs(orbits: OrbitTable, dataset, symmetries) -> None:
    """Every sample's untransformed input for the report's sample explorer: images small and 8-bit, point
    clouds a few points of each."""
    from .report.thumbs import small_images

    n = len(dataset.indices)
    if (len(dataset.sample_shape) == 2 and dataset.sample_shape[-1] == 3 and dataset.binding is None
            and any(sym.domain == "points" for sym in symmetries)):
        from .report.thumbs import small_points

        parts = [small_points(dataset.take(np.arange(i, min(i + SMALL_INPUT_CHUNK, n))).numpy())
                 for i in range(0, n, SMALL_INPUT_CHUNK)]
        if parts:
            orbits.put_small_points(np.concatenate(parts))
        return
    if len(dataset.sample_shape) != 3 or not any(sym.domain == "image" for sym in symmetries):
        return
    n = len(dataset.indices)
    small = None  # filled chunk by chunk of samples: large images never all sit in float32, no list to concatenate
    for i in range(0, n, SMALL_INPUT_CHUNK):
        part = small_images(dataset.take(np.arange(i, min(i + SMALL_INPUT_CHUNK, n))).numpy())
        if small is None:
            small = np.empty((n, *part.shape[1:]), dtype=np.uint8)
        small[i : i + len(part)] = part
    if small is not None:
        orbits.put_small_inputs(small)


def _add_thumbs(orbits: OrbitTable, j: int, sym: Symmetry, values: np.ndarray, xs: np.ndarray, masks: np.ndarray | None = None) -> None:
    """The worst samples' orbits as thumbnails: ``thumb_elements`` (k, T) element rows (-1: none) and
    ``thumb_x`` (k, T, ...) those samples moved by those elements (images (C, H, W), point structures
    (P, 3)), so the report draws them without torch or the symmetry code. ``masks`` (k, P) marks the
    real atoms of padded systems: they are moved as the sweep moves them (permuted among themselves,
    padded rows left in place), and the report draws only them (``worst_mask``)."""
    import torch

    from .inputs import orbit

    image = sym.domain == "image" and xs.ndim == 4
    points = sym.domain == "points" and xs.ndim == 3 and xs.shape[-1] == 3
    if not (image or points) or not len(xs):
        return
    el = sym.elements.numpy()
    col = varying_column(el) if sym.layout in ("polar", "line") and el.shape[1] > 1 else 0
    picks = [thumb_elements(sym.layout, el[:, col], sym.identity_index, v.astype(np.float64)) for v in values]
    index = pack_thumbs(picks)
    turned = sym.transposes(sym.elements).numpy()
    if image and turned.any():  # quarter turns of non-square images: each thumbnail centred on a square canvas
        _add_turned_thumbs(orbits, j, sym, xs, picks, index, turned)
        return
    out = np.zeros(index.shape + xs.shape[1:], dtype=xs.dtype)
    with torch.no_grad():
        for r, (x, sel) in enumerate(zip(xs, picks)):  # at most WORST_SAMPLES samples
            if points and masks is not None:
                batch = {"x": torch.from_numpy(x[None]), "mask": torch.from_numpy(masks[r][None])}
                out[r, : len(sel)] = orbit(sym, batch, sym.elements[sel], ["x"])["x"][:, 0].numpy()
                continue
            out[r, : len(sel)] = sym.act(torch.from_numpy(x[None]), sym.elements[sel])[:, 0].numpy()
    orbits.put(j, "thumb_elements", index)
    orbits.put(j, "thumb_x", out)


SAMPLE_FLOW_SIDE = 6  # the explorer's flows: arrows on this many block means a side


def _add_sample_outputs(orbits: OrbitTable, m: int, model, task: Task, dataset, device) -> None:
    """Box and flow models: what model ``m`` outputs on every sample's untransformed input, small, so the
    report's sample explorer draws it over any sample's thumbnail: ``box`` (N, 4) float32 in input pixels
    or ``flow`` (N, 2, 6, 6) float16 block means (OrbitTable.put_sample_output). One pass over the data."""
    import torch

    from .report.thumbs import box_means

    key = {"boxes": "box", "vector-field": "flow"}.get(task.name)
    if key is None or dataset.binding is not None or OrbitTable.SMALL_INPUTS not in orbits.arrays:
        return
    n, parts = len(dataset.indices), []
    with torch.no_grad():
        for i in range(0, n, SMALL_INPUT_CHUNK):
            out = model(dataset.take(np.arange(i, min(i + SMALL_INPUT_CHUNK, n)), device))
            if not isinstance(out, torch.Tensor):
                return
            out = out.detach().cpu().to(torch.float32).numpy()
            if key == "box" and out.ndim == 2 and out.shape[1] >= 4:
                parts.append(out[:, :4])
            elif key == "flow" and out.ndim == 4 and out.shape[1] == 2:
                parts.append(box_means(box_means(out, 2, SAMPLE_FLOW_SIDE), 3, SAMPLE_FLOW_SIDE).astype(np.float16))
            else:
                return
    if parts:
        orbits.put_sample_output(m, key, np.concatenate(parts))


THUMB_FLOW_SIDE = 12  # flow thumbnails: arrows on at most this many block means a side


def _add_thumb_outputs(orbits: OrbitTable, j: int, model, task: Task, dataset, device) -> None:
    """What box, flow and map models output on the worst samples' thumbnails (``thumb_x``), so the report's
    cards draw it: ``thumb_box`` (k, T, 4) boxes, ``thumb_flow`` (k, T, 2, h, w) flows as block means or
    ``thumb_map`` (k, T, H', W') argmax classes (one channel: the map), in float32 / int16. One model call."""
    import torch

    from .report.thumbs import box_means

    xs = orbits.get(j, "thumb_x")
    if task.name not in ("boxes", "vector-field", "dense") or xs is None or xs.ndim != 5 or dataset.binding is not None:
        return
    k, t = xs.shape[:2]
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(xs.reshape(k * t, *xs.shape[2:]), dtype=np.float32)).to(device))
    if not isinstance(out, torch.Tensor):
        return
    out = out.detach().cpu().to(torch.float32).numpy()
    if task.name == "boxes" and out.ndim == 2 and out.shape[1] >= 4:
        orbits.put(j, "thumb_box", out[:, :4].reshape(k, t, 4))
    elif task.name == "vector-field" and out.ndim == 4 and out.shape[1] == 2:
        flow = box_means(box_means(out, 2, THUMB_FLOW_SIDE), 3, THUMB_FLOW_SIDE)
        orbits.put(j, "thumb_flow", flow.reshape(k, t, *flow.shape[1:]).astype(np.float32))
    elif task.name == "dense" and out.ndim == 4:
        maps = out.argmax(1).astype(np.int16) if out.shape[1] > 1 else out[:, 0]
        orbits.put(j, "thumb_map", maps.reshape(k, t, *maps.shape[1:]))


def _add_point_moves(orbits: OrbitTable, j: int, sym: Symmetry) -> None:
    """A point symmetry's action on coordinates, per element: ``point_matrix`` (E, 3, 3) and ``point_shift``
    (E, 3), so the report's sample explorer moves its small clouds without torch or the symmetry code."""
    if sym.domain != "points" or OrbitTable.SMALL_POINTS not in orbits.arrays or not hasattr(sym, "point_matrix"):
        return
    orbits.put(j, "point_matrix", sym.point_matrix(sym.elements).numpy().astype(np.float32))
    shift = sym.point_shift(sym.elements)
    orbits.put(j, "point_shift", np.zeros((sym.n_elements, 3), np.float32) if shift is None else shift.numpy().astype(np.float32))


def _add_point_errors(orbits: OrbitTable, j: int, model, sym: Symmetry, plan: ScanPlan) -> None:
    """Per-atom errors of the worst samples for per-point vector outputs (forces): ``worst_point_error``
    (k, E, P) float32, |f(g.x)_p - (S_g f(x))_p| for every element, 0 on padded atoms, and
    ``worst_point_output`` the output's name; the report draws them as error bars per atom. A few extra
    model calls on the k worst samples only (identity reference; nothing for other outputs)."""
    import torch

    from .inputs import orbit, point_mask
    from .sweep import ModelCaller, _evaluate

    worst = orbits.get(j, "worst_index")
    if sym.domain != "points" or plan.settings.reference != "identity" or worst is None or not len(worst):
        return
    dataset, task, device = plan.dataset, plan.task, plan.device
    caller = ModelCaller(model, device)
    parts, name = [], None
    with torch.inference_mode():
        x = dataset.take(worst, device)
        feed = dataset.feed(worst, x, device)
        ref = task.convert(caller(feed))
        step = max(1, plan.settings.batch_size // len(worst))
        for s in range(0, sym.n_elements, step):
            el = sym.elements[s : s + step].to(device)
            out = _evaluate(caller, task, orbit(sym, feed, el, dataset.binding.moved if dataset.binding is not None else None))
            got = task.point_errors(ref, out, sym, el, point_mask(feed))
            if got is None:
                return
            name = got[0]
            parts.append(got[1].transpose(0, 1).to(torch.float32).cpu())
    orbits.put(j, "worst_point_error", torch.cat(parts, 1).numpy())
    orbits.put(j, "worst_point_output", np.array(name or ""))


def _add_turned_thumbs(orbits: OrbitTable, j: int, sym: Symmetry, xs: np.ndarray, picks: list[list[int]], index: np.ndarray,
                       turned: np.ndarray) -> None:
    """Thumbnails of images whose orbit holds both H x W and W x H (rot90, d4 in two shape groups): every
    moved image centred on a (C, S, S) canvas, S = max(H, W), filled with the sample's lowest value."""
    import torch

    c, h, w = xs.shape[1:]
    side = max(h, w)
    out = np.zeros(index.shape + (c, side, side), dtype=xs.dtype)
    with torch.no_grad():
        for r, (x, sel) in enumerate(zip(xs, picks)):  # at most WORST_SAMPLES samples, two shape groups each
            out[r] = x.min()
            for group in (False, True):
                cols = [i for i, e in enumerate(sel) if bool(turned[e]) == group]
                if not cols:
                    continue
                moved = sym.act(torch.from_numpy(x[None]), sym.elements[[sel[i] for i in cols]])[:, 0].numpy()
                mh, mw = moved.shape[-2:]
                top, left = (side - mh) // 2, (side - mw) // 2
                out[r, cols, :, top : top + mh, left : left + mw] = moved
    orbits.put(j, "thumb_elements", index)
    orbits.put(j, "thumb_x", out)


FILE_SOURCES = ("sidecar ", "config ", "[tool.eqaudit] in ")


@contextmanager
def _from_files(settings, *keys: str):
    """An eqaudit error raised while using settings ``keys`` names the sidecar or config file (and key)
    any of them came from, so a value the user did not type on this command line can be found."""
    try:
        yield
    except EqauditError as exc:
        by_file: dict[str, list[str]] = {}
        for k in keys:
            source = settings.sources.get(k, "")
            if source.startswith(FILE_SOURCES) and settings.values.get(k) not in (None, [], {}):
                by_file.setdefault(source, []).append(k)
        if by_file and exc.args and isinstance(exc.args[0], str) and not any(f in exc.args[0] for f in by_file):
            named = "; ".join(f"{', '.join(ks)} from {source}" for source, ks in by_file.items())
            exc.args = (f"{exc.args[0].rstrip()} (setting {named})", *exc.args[1:])
        raise


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    from .config import plain_values

    return plain_values(values)
