"""Run studies: measure each unit (train, FLOPs, export + parity, latency, throughput, accuracy per engine).

`measure_unit` computes and returns records; it writes only its scratch files (checkpoint, ONNX)
into the work folder it is given. `run_plans` is the I/O layer: it skips units already complete,
writes each finished unit's records in one atomic step (so an interrupted run resumes where it
stopped and never leaves half a unit behind) and assembles `records.jsonl`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageProblem
from bench.studies.plans import StudyPlan, UnitSpec
from bench.studies.presets import Preset

#: on_event(kind, payload): 'unit-start', 'unit-skip', 'stage', 'unit-done'.
EventHook = Callable[[str, dict[str, Any]], None]

DATASET_AUTO = "auto"


def resolve_dataset(name: str, root: str | None = None) -> tuple[str, str]:
    """The data set `auto` means here, and why: Fashion-MNIST when its files are found, else digits."""
    from bench import data

    if name != DATASET_AUTO:
        known = [d for d in data.DATASETS if not d.endswith(":PATH")]
        if name not in known and not name.startswith("imagefolder:"):
            raise UsageProblem(f"unknown dataset {name!r}; choose auto or one of {', '.join(data.DATASETS)}")
        return name, f"{name} (asked for)"
    folder = data.find_fashion_mnist(root)
    if folder is not None:
        return "fashion-mnist", f"fashion-mnist (found in {folder})"
    return "digits", "digits (scikit-learn's bundled 8x8 digits; Fashion-MNIST is not installed here)"


def available_engines(requested: Sequence[str] | None, device: str) -> tuple[str, ...]:
    """The engines to measure: those asked for, or every engine that works on `device` here."""
    from bench.engines import ENGINES, engine_availability

    rows = engine_availability()
    works = {r["engine"] for r in rows if r["available"] and r["device"] == device}
    if requested:
        for name in requested:
            if name not in ENGINES:
                raise UsageProblem(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
            if name not in works:
                why = next((r["reason"] for r in rows if r["engine"] == name and r["device"] == device), "")
                raise UsageProblem(f"engine {name!r} does not work on {device} here: {why}")
        return tuple(requested)
    return tuple(e for e in ("torch", "ort", "trt") if e in works)


@dataclass
class RunContext:
    """Everything a unit needs besides its spec: data, preset, engines, device."""

    dataset: str
    preset: Preset
    engines: tuple[str, ...]
    device: str = "cpu"
    data_root: str | None = None
    seed: int = 0
    command: str | None = None
    _bundles: dict[tuple, Any] = field(default_factory=dict, repr=False)

    def bundle(self, channels: str | None = None, channel_mode: str = "select"):
        """The data set at this preset (cached): native channels, or a channel subset."""
        from bench.data import load_dataset

        key = (channels, channel_mode)
        if key not in self._bundles:
            self._bundles[key] = load_dataset(
                self.dataset, root=self.data_root, subset=self.preset.train_size, seed=self.seed,
                input_size=self.preset.input_size, channels=channels, channel_mode=channel_mode)
        return self._bundles[key]

    def test_split(self, bundle, size: int | None = None):
        """The first `size` (default `preset.test_size`) test images (the subset is already stratified and seeded)."""
        size = size or self.preset.test_size
        if size is None or size >= len(bundle.test):
            return bundle.test
        return bundle.test.take(range(size))

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a previous run's units to be reused."""
        return {"dataset": self.dataset, "preset": dataclasses.asdict(self.preset), "device": self.device,
                "engines": list(self.engines), "seed": self.seed}


# --------------------------------------------------------------------------- measuring one unit


def _plain(value: Any) -> Any:
    """A JSON-safe copy (dataclasses, tuples, paths, numpy scalars)."""
    return json.loads(json.dumps(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value,
                                 default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def measure_unit(spec: UnitSpec, ctx: RunContext, work_dir: Path,
                 on_stage: Callable[[str], None] = lambda stage: None) -> list[dict[str, Any]]:
    """Train, profile, export and evaluate one unit on every engine; return its records.

    Leaves `work_dir/weights.pt` (the best weights) and `work_dir/model.onnx` (the verified
    export) for the timing phase (`time_study`), which times every unit of a study together.
    Every record comes from the same builder (`bench.records`) and library calls
    (`bench.measure`) as the CLI's, plus the unit's study context.
    """
    import torch

    torch.manual_seed(ctx.seed)
    bundle = ctx.bundle(channels=spec.channels or ("RGB" if spec.rgb else None))
    model = build_unit_model(spec, bundle)
    context = unit_context(spec, ctx)
    records = [_train_unit(spec, ctx, model, bundle, work_dir, context, on_stage)]
    torch.save(model.state_dict(), work_dir / WEIGHTS)
    from bench.sources import resolve_source

    source = resolve_source(model, input_shape=tuple(bundle.input_shape), name=spec.model)
    records += _measure_costs_and_export(source, ctx, work_dir, context, on_stage)
    accuracy = _accuracy_per_engine(source, ctx, bundle, context, on_stage)
    records += accuracy
    if spec.eval_subsets:
        # Every engine agrees on accuracy (the records above say by how much): the first evaluates the subsets.
        records += _accuracy_on_subsets(source, spec, ctx, bundle, ctx.engines[0], context, on_stage)
    return records


WEIGHTS = "weights.pt"
ONNX = "model.onnx"


def build_unit_model(spec: UnitSpec, bundle):
    """The unit's net, shaped for its data (classes, channels), with random weights."""
    import nets

    return nets.create_model(spec.model, num_classes=bundle.num_classes, in_chans=bundle.in_chans, act=spec.act,
                             **spec.builder_kwargs())


def unit_context(spec: UnitSpec, ctx: RunContext) -> dict[str, Any]:
    """The study fields every record of a unit carries."""
    return {"unit": spec.unit_id, "preset": ctx.preset.name, "act": spec.act, "channels": spec.channels}


def _train_unit(spec: UnitSpec, ctx: RunContext, model, bundle, work_dir: Path, context: dict[str, Any],
                on_stage: Callable[[str], None]) -> dict[str, Any]:
    from bench.records import train_record
    from bench.train import TrainConfig, load_training_checkpoint, train_model

    on_stage("train")
    preset = ctx.preset
    config = TrainConfig(epochs=preset.epochs, batch_size=preset.batch_size, optimizer=preset.optimizer, lr=preset.lr,
                         seed=ctx.seed, device=ctx.device, max_batches=spec.max_batches)
    result = train_model(model, bundle, config, work_dir / "train", progress=False)
    # Measure the best validation epoch's weights, as `rbench train` keeps them.
    model.load_state_dict(load_training_checkpoint(result.best_checkpoint)["state_dict"])
    model.eval()
    data = {k: v for k, v in bundle.describe().items() if k not in ("mean", "std", "class_names")}
    return train_record(result, model=spec.model, model_config=_plain(model.config), dataset=data,
                        train_config=config.to_dict(), params=sum(p.numel() for p in model.parameters()),
                        train_images_per_epoch=min(len(bundle.train), preset.batch_size * (spec.max_batches or 10**9)),
                        context=context, command=ctx.command)


def _measure_costs_and_export(source, ctx: RunContext, work_dir: Path, context: dict[str, Any],
                              on_stage: Callable[[str], None]) -> list[dict[str, Any]]:
    """The FLOPs record, and the verified ONNX export the ort/trt engines then run."""
    import export
    from bench.measure import profile
    from bench.records import export_record

    on_stage("flops")
    flops = profile(source, context=context, command=ctx.command)
    on_stage("export")
    report = export.to_onnx(source.module(), work_dir / ONNX, source.input_shape, batch=1, dynamic_batch=True,
                            verify=True, model_name=source.name, exporter=ctx.preset.exporter)
    source.exported[("fp32", None)] = Path(report.path)
    exported = export_record(report, source=source.describe(), model_config=_plain(source.config), engine="onnx",
                             input_shape=source.input_shape, batch=None, context=context, command=ctx.command)
    return [flops, exported]


def time_study(plan: StudyPlan, ctx: RunContext, out_dir: Path,
               on_stage: Callable[[str], None] = lambda stage: None) -> list[dict[str, Any]]:
    """Latency at batch 1 and throughput at the preset's batch of every unit of `plan`, timed together.

    Per engine, all the study's nets are opened and timed interleaved in rounds
    (`bench.measure.compare`), so the study's latency ratios compare figures that drift and
    other work hit alike. Reads the weights and ONNX file `measure_unit` left in
    `out_dir/artifacts/<unit>/`.
    """
    import torch

    from bench.measure import Settings, compare, throughput_records
    from bench.sources import resolve_source

    specs = list({unit.spec.unit_id: unit.spec for unit in plan.units}.values())
    sources, contexts = [], []
    for spec in specs:
        folder = artifact_path(out_dir, spec)
        bundle = ctx.bundle(channels=spec.channels or ("RGB" if spec.rgb else None))
        model = build_unit_model(spec, bundle)
        model.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
        source = resolve_source(model.eval(), input_shape=tuple(bundle.input_shape), name=spec.model)
        source.exported[("fp32", None)] = folder / ONNX
        sources.append(source)
        contexts.append(unit_context(spec, ctx))
    preset = ctx.preset
    records: list[dict[str, Any]] = []
    for engine in ctx.engines:
        on_stage(f"latency/{engine}")
        settings = Settings(device=ctx.device, warmup=preset.warmup, iters=preset.iters,
                            rounds=max(1, min(10, preset.iters // 4)))
        latency, _ = compare(sources, [engine], 1, settings, command=ctx.command)
        records += [_with_context(r, c) for r, c in zip(latency, contexts)]
        on_stage(f"throughput/{engine}")
        settings = Settings(device=ctx.device, warmup=max(1, preset.warmup // 5), iters=preset.throughput_iters,
                            rounds=max(1, min(10, preset.throughput_iters // 2)))
        sweep, _ = compare(sources, [engine], preset.throughput_batch, settings, command=ctx.command)
        records += [_with_context(throughput_records([r], command=ctx.command)[0], c) for r, c in zip(sweep, contexts)]
    return records


def _with_context(record: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    from bench.results import validate_record

    record = {**record, **context}
    validate_record(record)
    return record


def _accuracy_per_engine(source, ctx: RunContext, bundle, context: dict[str, Any],
                         on_stage: Callable[[str], None]) -> list[dict[str, Any]]:
    """Test accuracy through each engine, the first engine the reference."""
    from bench.accuracy import evaluate_engine, reference_differences
    from bench.data import Batches
    from bench.engines import create_engine
    from bench.records import accuracy_record

    data = {k: v for k, v in bundle.describe().items() if k not in ("mean", "std", "class_names")}
    records, reference = [], None
    for name in ctx.engines:
        on_stage(f"accuracy/{name}")
        with create_engine(name, source, device=ctx.device) as engine:
            test = Batches(ctx.test_split(bundle), 256, bundle.mean, bundle.std)
            metrics, logits = evaluate_engine(engine, test, bundle.num_classes, bundle.class_names)
            info = engine.describe()
        reference = reference or (name, metrics, logits)
        result = {**metrics, "engine": name, "engine_info": info, "precision": "fp32", "device": ctx.device,
                  "batch": 256, "input_shape": list(source.input_shape), **reference_differences(reference, metrics, logits)}
        records.append(accuracy_record(result, model=source.name, model_config=_plain(source.config), dataset=data,
                                       context=context, command=ctx.command))
    return records


def _accuracy_on_subsets(source, spec: UnitSpec, ctx: RunContext, bundle, engine_name: str, context: dict[str, Any],
                         on_stage: Callable[[str], None]) -> list[dict[str, Any]]:
    """The naive channel-subset evaluation: each subset averaged and copied to 3 channels, normalized as in training."""
    from bench.accuracy import evaluate_engine
    from bench.data import Batches
    from bench.engines import create_engine
    from bench.records import accuracy_record

    records = []
    with create_engine(engine_name, source, device=ctx.device) as engine:
        info = engine.describe()
        for subset in spec.eval_subsets:
            on_stage(f"subset {subset}")
            naive = ctx.bundle(channels=subset, channel_mode="average")
            test = Batches(ctx.test_split(naive, ctx.preset.subset_test_size), 256, bundle.mean, bundle.std)
            metrics, _ = evaluate_engine(engine, test, bundle.num_classes, bundle.class_names)
            data = {k: v for k, v in naive.describe().items() if k not in ("mean", "std", "class_names")}
            result = {**metrics, "engine": engine_name, "engine_info": info, "precision": "fp32", "device": ctx.device,
                      "batch": 256, "input_shape": list(source.input_shape)}
            records.append(accuracy_record(result, model=source.name, model_config=_plain(source.config), dataset=data,
                                           context={**context, "eval_channels": subset, "eval_channel_mode": "average"},
                                           command=ctx.command))
    return records


# --------------------------------------------------------------------------- I/O: the run folder


def unit_path(out_dir: Path, spec: UnitSpec) -> Path:
    return Path(out_dir) / "units" / f"{spec.unit_id}.jsonl"


def load_unit(out_dir: Path, spec: UnitSpec) -> list[dict[str, Any]] | None:
    """A finished unit's records, or None when it has not finished."""
    from bench.results import read_records

    path = unit_path(out_dir, spec)
    return read_records(path) if path.exists() else None


def check_run_folder(out_dir: Path, ctx: RunContext, resume: bool) -> str | None:
    """Make `out_dir` a run folder for `ctx`; refuse to mix settings; with `resume=False` start afresh.

    Resuming continues an interrupted run only. A folder whose run finished (it has `run.json`,
    written last) is measured again from scratch: rerunning the main job must produce new numbers,
    not re-render old ones. Returns a note saying so, or None.
    """
    from bench.atomic import write_text

    out_dir = Path(out_dir)
    settings = out_dir / "settings.json"
    current = json.loads(json.dumps(ctx.fingerprint()))  # tuples become lists, as on disk
    note = None
    if resume and (out_dir / "run.json").exists():
        resume = False
        note = f"{out_dir} holds a finished run: measuring again (use another --out to keep it)"
    if settings.exists() and resume:
        previous = json.loads(settings.read_text())
        if previous != current:
            differs = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise UsageProblem(f"{out_dir} holds a run with other settings ({', '.join(differs)} differ); "
                               "use another --out or --no-resume to start over")
    if not resume:
        for folder in ("units", "timing", "artifacts"):
            shutil.rmtree(out_dir / folder, ignore_errors=True)
        (out_dir / "run.json").unlink(missing_ok=True)
    write_text(settings, json.dumps(current, indent=1) + "\n")
    return note


def unique_units(plans: Sequence[StudyPlan]) -> list[UnitSpec]:
    """Every unit of `plans` once, in first-use order."""
    seen: dict[str, UnitSpec] = {}
    for plan in plans:
        for unit in plan.units:
            seen.setdefault(unit.spec.unit_id, unit.spec)
    return list(seen.values())


def artifact_path(out_dir: Path, spec: UnitSpec) -> Path:
    """Where a prepared unit keeps its weights and ONNX file until its studies are timed."""
    return Path(out_dir) / "artifacts" / spec.unit_id


def timing_path(out_dir: Path, plan: StudyPlan) -> Path:
    return Path(out_dir) / "timing" / f"{plan.name}.jsonl"


def run_plans(plans: Sequence[StudyPlan], ctx: RunContext, out_dir: Path,
              on_event: EventHook = lambda kind, payload: None, keep_artifacts: bool = False) -> list[dict[str, Any]]:
    """Prepare every unit not yet done, time every study not yet timed, then return all records.

    Phase 1, per unit: train, count, export, evaluate (`measure_unit`); its records are written in
    one atomic step, its weights and ONNX file kept in `artifacts/<unit>/`. Phase 2, per study:
    time all its units together (`time_study`), written in one atomic step to `timing/<study>.jsonl`.
    An interruption anywhere resumes at the first unit or study not written. The artifacts are
    removed at the end unless `keep_artifacts`.
    """
    out_dir = Path(out_dir)
    units = unique_units(plans)
    # A prepared unit's weights are needed again only by studies not timed yet.
    untimed = {unit.spec.unit_id for plan in plans if not timing_path(out_dir, plan).exists() for unit in plan.units}
    for index, spec in enumerate(units):
        payload = {"unit": spec.unit_id, "index": index, "total": len(units)}
        needs_weights = spec.unit_id in untimed and not (artifact_path(out_dir, spec) / WEIGHTS).exists()
        if unit_path(out_dir, spec).exists() and not needs_weights:
            on_event("unit-skip", payload)
            continue
        on_event("unit-start", payload)
        start = time.perf_counter()
        _prepare_unit(spec, ctx, out_dir, lambda stage, p=payload: on_event("stage", {**p, "stage": stage}))
        on_event("unit-done", {**payload, "seconds": time.perf_counter() - start})
    for plan in plans:
        payload = {"study": plan.name, "units": len(plan.units)}
        if timing_path(out_dir, plan).exists():
            on_event("timing-skip", payload)
            continue
        on_event("timing-start", payload)
        start = time.perf_counter()
        _write_records(timing_path(out_dir, plan),
                       time_study(plan, ctx, out_dir, lambda stage, p=payload: on_event("stage", {**p, "stage": stage})))
        on_event("timing-done", {**payload, "seconds": time.perf_counter() - start})
    if not keep_artifacts:
        shutil.rmtree(out_dir / "artifacts", ignore_errors=True)
    return collect_records(plans, out_dir)


def _prepare_unit(spec: UnitSpec, ctx: RunContext, out_dir: Path, on_stage: Callable[[str], None]) -> None:
    """measure_unit in a scratch folder; then its artifacts, then its records, each moved into place whole."""
    start = time.perf_counter()
    (out_dir / "units").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{spec.unit_id}.", dir=out_dir / "units"))
    try:
        records = measure_unit(spec, ctx, work, on_stage=on_stage)
        for record in records:
            record["unit_seconds"] = round(time.perf_counter() - start, 3)
        target = artifact_path(out_dir, spec)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        keep = [name for name in (WEIGHTS, ONNX, f"{ONNX}.data") if (work / name).exists()]
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.unit_id}.", dir=target.parent))
        for name in keep:
            shutil.move(str(work / name), staging / name)
        staging.rename(target)
        _write_records(unit_path(out_dir, spec), records)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    from bench.atomic import write_text
    from bench.results import to_json, validate_record

    for record in records:
        validate_record(record)
    write_text(path, "".join(to_json(r) + "\n" for r in records))


def collect_records(plans: Sequence[StudyPlan], out_dir: Path) -> list[dict[str, Any]]:
    """Every finished unit's records, once per study that uses the unit, and the study's own timings,
    each tagged study/label/group."""
    from bench.results import read_records

    out = []
    for plan in plans:
        timings = read_records(timing_path(out_dir, plan))
        for unit in plan.units:
            tags = {"study": plan.name, "label": unit.label, "group": unit.group}
            out += [{**record, **tags} for record in load_unit(out_dir, unit.spec) or []]
            out += [{**record, **tags} for record in timings if record.get("unit") == unit.spec.unit_id]
    return out

