"""Run studies: measure each unit (train, FLOPs, export + parity, latency, throughput, accuracy per engine).

`measure_unit` computes and returns records; it writes only its scratch files (checkpoint, ONNX)
into the work folder it is given. `run_plans` is the I/O layer: it skips units already complete,
writes each finished unit's records in one atomic step (so an interrupted run resumes where it
stopped and never leaves half a unit behind), measures again a unit whose file is unsound, and
assembles `records.jsonl`. `check_run_folder` refuses a folder holding files rbench did not write,
and deletes only rbench's own files when a run starts afresh.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import suppress as _suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import DataProblem, EnvironmentProblem, UsageProblem
from bench.studies.plans import StudyPlan, UnitSpec, timed_units
from bench.studies.presets import Preset

#: on_event(kind, payload): 'unit-start', 'unit-skip', 'unit-redo' (payload 'reason'), 'stage', 'unit-done',
#: 'timing-start', 'timing-skip', 'timing-redo' (payload 'reason'), 'timing-done'.
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


def check_device(device: str) -> None:
    """Refuse, before anything is written, a device this machine cannot train and measure on."""
    if device == "cpu":
        return
    if device != "cuda":
        raise UsageProblem(f"unknown device {device!r}; choose cpu, cuda or auto")
    from bench.engines import engine_availability

    row = next(r for r in engine_availability() if r["engine"] == "torch" and r["device"] == "cuda")
    if not row["available"]:
        raise EnvironmentProblem(f"--device cuda needs a CUDA GPU that torch can use: {row['reason'] or 'none found'}; "
                                 "use --device cpu (or auto)")


def _why_not(name: str, device: str, rows: list[dict[str, Any]]) -> str:
    """Why engine `name` does not work on `device` here: its own reason, or the devices it runs on."""
    mine = [r for r in rows if r["engine"] == name]
    here = [r["reason"] for r in mine if r["device"] == device and r["reason"]]
    if here:
        return here[0]
    devices = sorted({r["device"] for r in mine})
    if not devices:
        return "it is not available on this machine"
    why = f"{name} runs only on {' or '.join(devices)} (--device {devices[0]})"
    usable = [r for r in mine if r["available"]]
    if not usable and mine[0]["reason"]:
        why += f", and not on this machine either: {mine[0]['reason']}"
    return why


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
                raise UsageProblem(f"engine {name!r} does not work on {device} here: {_why_not(name, device, rows)}")
        return tuple(requested)
    found = tuple(e for e in ("torch", "ort", "trt") if e in works)
    if not found:
        raise EnvironmentProblem(f"no engine works on {device} here; see `rbench engines`")
    return found


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
    shard: str | None = None  # 'I/N' when this run is one shard of a suite (bench.studies.shard)
    _bundles: dict[tuple, Any] = field(default_factory=dict, repr=False)
    #: unit id -> its training, done before by every process of a distributed run (`bench.studies.data_parallel`)
    trained: dict[str, Any] = field(default_factory=dict, repr=False)

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
        fingerprint = {"dataset": self.dataset, "preset": dataclasses.asdict(self.preset), "device": self.device,
                       "engines": list(self.engines), "seed": self.seed}
        if self.shard:  # only then: run folders written before sharding existed still resume
            fingerprint["shard"] = self.shard
        return fingerprint


# --------------------------------------------------------------------------- measuring one unit


def _plain(value: Any) -> Any:
    """A JSON-safe copy (dataclasses, tuples, paths, numpy scalars)."""
    return json.loads(json.dumps(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value,
                                 default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def measure_unit(spec: UnitSpec, ctx: RunContext, work_dir: Path,
                 on_stage: Callable[[str], None] = lambda stage: None) -> list[dict[str, Any]]:
    """Train, profile, export and evaluate one unit on every engine; return its records.

    Leaves `work_dir/weights.pt` (the best weights), `work_dir/model.onnx` (the verified export)
    and `work_dir/checkpoint.pt` (the training's best checkpoint, as `rbench train` writes it) for
    the timing phase (`time_study`), which times every unit of a study together.
    Every record comes from the same builder (`bench.records.builders`) and library calls
    (`bench.measure.run`) as the CLI's, plus the unit's study context.
    """
    import torch

    from bench.engines.sources import resolve_source
    from bench.train.loop import TrainingDiverged

    torch.manual_seed(unit_seed(spec, ctx))
    bundle = ctx.bundle(channels=spec.channels or ("RGB" if spec.rgb else None))
    model = build_unit_model(spec, bundle)
    context = unit_context(spec, ctx)
    try:
        records = [_train_unit(spec, ctx, model, bundle, work_dir, context, on_stage)]
    except TrainingDiverged as exc:
        if not spec.accuracy_only:
            raise  # a net every engine must measure cannot be measured without weights
        # A recipe that diverges is a result (the 004 seed's Adam/VGG19 case): recorded, and the study goes on.
        return [_diverged_record(spec, ctx, model, bundle, work_dir, context, str(exc))]
    torch.save(model.state_dict(), work_dir / WEIGHTS)
    source = resolve_source(model, input_shape=tuple(bundle.input_shape), name=spec.model)
    if spec.accuracy_only:
        return records + _accuracy_per_engine(source, ctx, bundle, context, on_stage, engines=("torch",),
                                              test_size=spec.test_size)
    records += _measure_costs_and_export(source, ctx, work_dir, context, on_stage)
    accuracy = _accuracy_per_engine(source, ctx, bundle, context, on_stage)
    records += accuracy
    if spec.eval_subsets:
        # Every engine agrees on accuracy (the records above say by how much): the first evaluates the subsets.
        # A channel-agnostic net takes each subset natively; any other is fed it the naive way.
        subsets = _accuracy_on_native_subsets if spec.any_chans else _accuracy_on_subsets
        records += subsets(source, spec, ctx, bundle, ctx.engines[0], context, on_stage)
    return records


WEIGHTS = "weights.pt"
ONNX = "model.onnx"
#: The training's best-validation checkpoint (`bench.train.loop` format: weights, model config, normalization,
#: data set), kept for the ladder study, whose `bench.scenarios.ladder.run_ladder` takes an `rbench train` checkpoint.
CHECKPOINT = "checkpoint.pt"


def build_unit_model(spec: UnitSpec, bundle):
    """The unit's net, shaped for its data (classes, channels), with random weights."""
    import nets

    in_chans = "any" if spec.any_chans else bundle.in_chans  # "any": one net for every channel subset
    return nets.create_model(spec.model, num_classes=bundle.num_classes, in_chans=in_chans, act=spec.act,
                             **spec.builder_kwargs())


def unit_seed(spec: UnitSpec, ctx: RunContext) -> int:
    """The seed of a unit's weights, shuffling and augmentation: its own, else the run's (the data split is the run's)."""
    return ctx.seed if spec.seed is None else spec.seed


def unit_train_config(spec: UnitSpec, ctx: RunContext):
    """The preset's training with the unit's overrides (`UnitSpec.train`) and seed: a `bench.train.loop.TrainConfig`."""
    from bench.train.loop import TrainConfig

    preset = ctx.preset
    base = dict(epochs=preset.epochs, batch_size=preset.batch_size, optimizer=preset.optimizer, lr=preset.lr,
                device=ctx.device, max_batches=spec.max_batches, channel_dropout=spec.channel_dropout)
    return TrainConfig(**{**base, **spec.train_overrides(), "seed": unit_seed(spec, ctx)})


def _diverged_record(spec: UnitSpec, ctx: RunContext, model, bundle, work_dir: Path, context: dict[str, Any],
                     message: str) -> dict[str, Any]:
    """The train record of a unit whose loss became nan/inf: the epochs it finished, and why it stopped
    (`train_config.diverged`; no weights, so no accuracy record)."""
    from types import SimpleNamespace

    from bench.records.builders import train_record

    history_file = work_dir / "train" / "history.json"
    history = json.loads(history_file.read_text(encoding="utf-8")) if history_file.is_file() else []
    best = max(history, key=lambda h: h["val_acc"], default=None)
    result = SimpleNamespace(history=history, best_epoch=best["epoch"] if best else 0,
                             best_val_acc=best["val_acc"] if best else None, stopped_early=False,
                             train_img_s=sum(h["img_s"] for h in history) / len(history) if history else 0.0,
                             seconds=sum(h["seconds"] for h in history), best_checkpoint=None, curves_png=None)
    config = unit_train_config(spec, ctx)
    data = {k: v for k, v in bundle.describe().items() if k not in ("mean", "std", "class_names")}
    record = train_record(result, model=spec.model, model_config=_plain(model.config), dataset=data,
                          train_config={**config.to_dict(), DIVERGED: message},
                          params=sum(p.numel() for p in model.parameters()),
                          train_images_per_epoch=min(len(bundle.train), config.batch_size * (spec.max_batches or 10**9)),
                          context=context, command=ctx.command)
    record["checkpoint"] = None
    return record


#: The key of a train record's `train_config` that says the training diverged (nan/inf loss), and where.
DIVERGED = "diverged"


def unit_context(spec: UnitSpec, ctx: RunContext) -> dict[str, Any]:
    """The study fields every record of a unit carries (`accuracy_only` marks a unit trained for its accuracy alone,
    such as a timed study's extra seed, so that tables of measured nets leave its records out)."""
    context = {"unit": spec.unit_id, "preset": ctx.preset.name, "act": spec.act, "channels": spec.channels}
    return {**context, "accuracy_only": True} if spec.accuracy_only else context


def _train_unit(spec: UnitSpec, ctx: RunContext, model, bundle, work_dir: Path, context: dict[str, Any],
                on_stage: Callable[[str], None]) -> dict[str, Any]:
    from bench.records.builders import train_record
    from bench.train.loop import load_training_checkpoint, train_model

    on_stage("train")
    config = unit_train_config(spec, ctx)
    result = (_trained_before(spec, ctx, model, work_dir / "train")
              or train_model(model, bundle, config, work_dir / "train", progress=False))
    # Measure the best validation epoch's weights, as `rbench train` keeps them, unless the unit's recipe keeps the
    # last epoch's (`restore_best=False`: the 001 ladder's rungs before early stopping, as Keras without it).
    if config.restore_best:
        model.load_state_dict(load_training_checkpoint(result.best_checkpoint)["state_dict"])
    model.eval()
    shutil.copyfile(result.best_checkpoint, work_dir / CHECKPOINT)
    data = {k: v for k, v in bundle.describe().items() if k not in ("mean", "std", "class_names")}
    return train_record(result, model=spec.model, model_config=_plain(model.config), dataset=data,
                        train_config=config.to_dict(), params=sum(p.numel() for p in model.parameters()),
                        train_images_per_epoch=min(len(bundle.train), config.batch_size * (spec.max_batches or 10**9)),
                        context=context, command=ctx.command)


def _trained_before(spec: UnitSpec, ctx: RunContext, model, folder: Path):
    """The unit's training that every process of a distributed run did before (`ctx.trained`): its files moved to
    `folder` and `model` left as `train_model` leaves it; None when it was not trained so. A training that diverged
    raises its TrainingDiverged here, as `train_model` would have."""
    from dataclasses import replace

    from bench.train.loop import current_temperature
    from nets import set_temperature

    done = ctx.trained.pop(spec.unit_id, None)
    if done is None:
        return None
    if done.folder.exists():  # a training that diverged in its first batch may have written nothing
        shutil.move(str(done.folder), folder)
    if done.error is not None:
        raise done.error
    model.load_state_dict(done.model.state_dict())
    temperature = current_temperature(done.model)  # a dynamic-conv net's, a plain attribute
    if temperature is not None:
        set_temperature(model, temperature)
    curves = folder / done.result.curves_png.name if done.result.curves_png else None
    return replace(done.result, best_checkpoint=folder / "best.pt", last_checkpoint=folder / "last.pt",
                   curves_png=curves)


def _measure_costs_and_export(source, ctx: RunContext, work_dir: Path, context: dict[str, Any],
                              on_stage: Callable[[str], None]) -> list[dict[str, Any]]:
    """The FLOPs record, and the verified ONNX export the ort/trt engines then run."""
    import export
    from bench.measure.run import profile
    from bench.records.builders import export_record

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
    (`bench.measure.run.compare`), so the study's latency ratios compare figures that drift and
    other work hit alike. Reads the weights and ONNX file `measure_unit` left in
    `out_dir/artifacts/<unit>/`. The ladder study times each net's rungs instead (`time_ladder`).
    """
    if plan.name == LADDER:
        return time_ladder(plan, ctx, out_dir, on_stage)
    if not plan.timed:
        return []
    import torch

    from bench.engines.sources import resolve_source
    from bench.measure.run import Settings, compare, throughput_records

    specs = list({unit.spec.unit_id: unit.spec for unit in timed_units(plan)}.values())
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
    if plan.name == "dynamic" and "torch" in ctx.engines:
        on_stage("cost-split/torch")
        records += dynamic_cost_records(plan, sources, contexts, ctx)
    return records


#: The dynamic study's units whose latency the report splits into attention, aggregation and convolution.
COST_SPLIT_GROUPS = ("VGG dynamic", "ResNet dynamic")


def dynamic_cost_records(plan: StudyPlan, sources, contexts: list[dict[str, Any]], ctx: RunContext) -> list[dict[str, Any]]:
    """The cost split (`bench.scenarios.dynamic_cost`) of the dynamic study's main dynamic nets at batch 1, eager torch."""
    from bench.records.builders import cost_split_record
    from bench.scenarios.dynamic_cost import dynamic_cost_split

    wanted = {unit.spec.unit_id for unit in plan.units if unit.group in COST_SPLIT_GROUPS}
    iters = max(2, ctx.preset.iters // 20)  # quick: 10 calls of each part per round, 5 rounds
    records = []
    for source, context in zip(sources, contexts):
        if context["unit"] not in wanted:
            continue
        split = dynamic_cost_split(source.module(), source.input_shape, 1, warmup=min(3, ctx.preset.warmup),
                                   iters=iters, rounds=5 if iters >= 5 else 2)
        records.append(cost_split_record(split, model=source.name, model_config=_plain(source.config),
                                         device=ctx.device, context=context, command=ctx.command))
    return records


LADDER = "ladder"
#: The field every record of the ladder's timing phase carries: its rung ('ort int8'; a comparison's candidate).
RUNG_FIELD = "rung"
#: The field of each net's reference latency record (torch fp32, batch 1) that holds the ladder's rows
#: (every rung, those not run here with the reason), the int8 check and the settings: what the report draws.
LADDER_FIELD = "ladder"


def time_ladder(plan: StudyPlan, ctx: RunContext, out_dir: Path,
                on_stage: Callable[[str], None] = lambda stage: None) -> list[dict[str, Any]]:
    """The precision ladder (`bench.scenarios.ladder.run_ladder`) of every unit of `plan`, at the preset's budget.

    Each net's ladder starts from the training checkpoint `measure_unit` left in
    `out_dir/artifacts/<unit>/checkpoint.pt`; its ONNX, int8 and engine files go to a locked work
    folder in `artifacts/` that is removed when the net is done. Returns the ladder's latency,
    comparison and accuracy records with the unit's context and their rung; the first (torch
    fp32 at batch 1) also carries the rows, int8 check and settings under `LADDER_FIELD`.
    """
    from bench.atomic import work_dir
    from bench.measure.run import Settings
    from bench.scenarios.ladder import parse_rungs, run_ladder

    preset = ctx.preset
    rungs = parse_rungs(preset.ladder_rungs)
    settings = Settings(device=ctx.device, warmup=preset.ladder_warmup, iters=preset.ladder_iters,
                        rounds=preset.ladder_rounds)
    records: list[dict[str, Any]] = []
    for spec in list({unit.spec.unit_id: unit.spec for unit in plan.units}.values()):
        checkpoint = artifact_path(out_dir, spec) / CHECKPOINT
        if not checkpoint.is_file():
            raise DataProblem(f"{checkpoint} is missing: the ladder needs the unit's training checkpoint; "
                              "run the same command again to prepare the unit again")
        with work_dir(out_dir / "artifacts", f"{LADDER}-{spec.unit_id}") as work:
            result = run_ladder(checkpoint, workdir=work, rungs=rungs, model_name=spec.model, data_root=ctx.data_root,
                                calibration=str(preset.ladder_calibration), batch=1,
                                throughput_batch=preset.ladder_throughput_batch, settings=settings,
                                test_limit=preset.ladder_test_limit, device=ctx.device,
                                on_stage=lambda stage, u=spec.unit_id: on_stage(f"ladder {u}: {stage}"),
                                command=ctx.command)
        records += _ladder_records(result, spec, ctx, checkpoint.relative_to(out_dir).as_posix(), settings)
    return records


def _ladder_records(result, spec: UnitSpec, ctx: RunContext, checkpoint: str, settings) -> list[dict[str, Any]]:
    """`result`'s records with the unit's context and rung; the first carries the rows (`LADDER_FIELD`)."""
    context = unit_context(spec, ctx)
    records = []
    for record in result.records:
        if record["kind"] == "comparison":
            rung = f"{record['candidate'].get('engine')} {record['candidate'].get('precision')}"
        else:
            rung = f"{record.get('engine')} {record.get('precision')}"
        if record["kind"] == "accuracy":
            record = {**record, "checkpoint": checkpoint}  # not the work folder's path: it is gone
        records.append(_with_context(record, {**context, RUNG_FIELD: rung}))
    if not records:
        raise DataProblem(f"the precision ladder of {spec.unit_id} measured nothing")
    rows = [{k: v for k, v in row.items() if k != "file"} for row in result.rows]  # its files are gone
    int8 = dict(result.int8) if result.int8 else None
    for key in ("path", "source_path"):
        if int8 and int8.get(key):
            int8[key] = Path(int8[key]).name
    preset = ctx.preset
    payload = {"rows": rows, "int8": int8, "test_limit": preset.ladder_test_limit,
               "calibration_images": preset.ladder_calibration, "throughput_batch": preset.ladder_throughput_batch,
               "settings": settings.as_record()}
    first = records[0]
    records[0] = _with_context(first, {LADDER_FIELD: _finite(_plain(payload))})
    return records


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None (records are strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _with_context(record: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    from bench.records.io import validate_record

    record = {**record, **context}
    validate_record(record)
    return record


def _accuracy_per_engine(source, ctx: RunContext, bundle, context: dict[str, Any],
                         on_stage: Callable[[str], None], engines: Sequence[str] | None = None,
                         test_size: int | None = None) -> list[dict[str, Any]]:
    """Test accuracy through each engine (default: the run's) on `test_size` test images (default: the preset's),
    the first engine the reference."""
    from bench.accuracy.evaluate import evaluate_engine, reference_differences
    from bench.data import Batches
    from bench.engines import create_engine
    from bench.records.builders import accuracy_record

    data = {k: v for k, v in bundle.describe().items() if k not in ("mean", "std", "class_names")}
    records, reference = [], None
    for name in engines or ctx.engines:
        on_stage(f"accuracy/{name}")
        with create_engine(name, source, device=ctx.device) as engine:
            test = Batches(ctx.test_split(bundle, test_size), 256, bundle.mean, bundle.std)
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
    from bench.accuracy.evaluate import evaluate_engine
    from bench.data import Batches
    from bench.engines import create_engine
    from bench.records.builders import accuracy_record

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


def _accuracy_on_native_subsets(source, spec: UnitSpec, ctx: RunContext, bundle, engine_name: str,
                                context: dict[str, Any], on_stage: Callable[[str], None]) -> list[dict[str, Any]]:
    """The channel-agnostic net on each subset, fed only the kept channels (channel mode 'select'), normalized
    with the statistics of those channels on the same training split; its one ONNX file serves every subset
    (its channel axis is symbolic)."""
    from bench.accuracy.evaluate import evaluate_engine
    from bench.data import Batches
    from bench.engines import create_engine
    from bench.engines.sources import resolve_source
    from bench.records.builders import accuracy_record

    records = []
    for subset in spec.eval_subsets:
        on_stage(f"subset {subset}")
        native = ctx.bundle(channels=subset, channel_mode="select")
        shape = (native.in_chans, *source.input_shape[1:])
        fed = resolve_source(source.module(), input_shape=shape, name=source.name)
        fed.exported.update(source.exported)
        with create_engine(engine_name, fed, device=ctx.device) as engine:
            test = Batches(ctx.test_split(native, ctx.preset.subset_test_size), 256, native.mean, native.std)
            metrics, _ = evaluate_engine(engine, test, bundle.num_classes, bundle.class_names)
            info = engine.describe()
        data = {k: v for k, v in native.describe().items() if k not in ("mean", "std", "class_names")}
        result = {**metrics, "engine": engine_name, "engine_info": info, "precision": "fp32", "device": ctx.device,
                  "batch": 256, "input_shape": list(shape)}
        records.append(accuracy_record(result, model=source.name, model_config=_plain(source.config), dataset=data,
                                       context={**context, "eval_channels": subset, "eval_channel_mode": "select"},
                                       command=ctx.command))
    return records


# --------------------------------------------------------------------------- I/O: the run folder
#
# A run folder holds what rbench writes and nothing rbench deletes unless it can prove it wrote it:
#   settings.json            the run's settings, with "tool": "rbench" (what makes a folder a run folder)
#   units/<unit>.jsonl       a prepared unit's records           timing/<study>.jsonl  a study's timings
#   artifacts/<unit>/        weights.pt, model.onnx(.data), checkpoint.pt (a ladder's net)
#                            run.json, records.jsonl, report.md, figures/
#   .<name>.XXXX/            hidden work folders (bench.atomic.work_dir), locked while their process lives

TOOL = "rbench"
SETTINGS = "settings.json"
RUN_JSON = "run.json"
SUBFOLDERS = ("units", "timing", "artifacts")
ARTIFACT_FILES = (WEIGHTS, ONNX, f"{ONNX}.data", CHECKPOINT)
#: The keys of settings.json before it carried "tool" (still recognised as rbench's).
_FINGERPRINT_KEYS = ("dataset", "preset", "device", "engines", "seed")
#: Keys every run.json rbench has written carries.
_RUN_KEYS = ("title", "preset", "dataset", "engines", "device", "unit_seconds")
_TIMING_KINDS = ("latency", "throughput")


def unit_path(out_dir: Path, spec: UnitSpec) -> Path:
    return Path(out_dir) / "units" / f"{spec.unit_id}.jsonl"


def timing_path(out_dir: Path, plan: StudyPlan) -> Path:
    return Path(out_dir) / "timing" / f"{plan.name}.jsonl"


def artifact_path(out_dir: Path, spec: UnitSpec) -> Path:
    """Where a prepared unit keeps its weights and ONNX file until its studies are timed."""
    return Path(out_dir) / "artifacts" / spec.unit_id


def _read_records_file(path: Path, units: Sequence[str], every_unit: bool = False,
                       ) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(records, None) for a sound file; (None, why) for a bad one; (None, None) when there is none.

    Sound: not empty, every line a record that validates, every record's unit one of `units` (and,
    with `every_unit`, every one of `units` present), the last line complete.
    """
    from bench.records.io import validate_record

    if not path.is_file():
        return None, (f"{path.name} is not a file" if path.exists() or path.is_symlink() else None)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name} cannot be read ({exc.__class__.__name__})"
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            return None, f"{path.name} line {number} is not JSON (cut short?)"
        if not isinstance(record, dict):
            return None, f"{path.name} line {number} is not a record"
        try:
            validate_record(record)
        except (ValueError, TypeError, KeyError) as exc:
            return None, f"{path.name} line {number}: {exc}"
        if record.get("unit") not in units:
            return None, f"{path.name} line {number} is a record of unit {record.get('unit')!r}"
        records.append(record)
    if not records:
        return None, f"{path.name} is empty"
    if not text.endswith("\n"):
        return None, f"{path.name} ends in a cut-short line"
    if every_unit:
        missing = sorted(set(units) - {r["unit"] for r in records})
        if missing:
            return None, f"{path.name} lacks unit(s) {', '.join(missing)}"
    return records, None


def unit_state(out_dir: Path, spec: UnitSpec) -> tuple[list[dict[str, Any]] | None, str | None]:
    """A unit's records and None when its file is sound; None and why it is not; (None, None) when absent."""
    return _read_records_file(unit_path(out_dir, spec), [spec.unit_id])


def timing_state(out_dir: Path, plan: StudyPlan) -> tuple[list[dict[str, Any]] | None, str | None]:
    """A study's timing records and None when its file is sound (every unit of the study timed); else as `unit_state`."""
    if not plan.timed:
        return [], None  # an accuracy study times nothing: never missing
    ids = list(dict.fromkeys(unit.spec.unit_id for unit in timed_units(plan)))
    return _read_records_file(timing_path(out_dir, plan), ids, every_unit=True)


def load_unit(out_dir: Path, spec: UnitSpec) -> list[dict[str, Any]] | None:
    """A finished unit's records, or None when it has not finished (no file, or a bad one)."""
    return unit_state(out_dir, spec)[0]


def _is_rbench_settings(path: Path) -> tuple[dict[str, Any] | None, bool]:
    """(settings, True) when `path` is a settings.json rbench wrote; (None, False) otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, False
    if isinstance(data, dict) and (data.get("tool") == TOOL or all(k in data for k in _FINGERPRINT_KEYS)):
        return {k: v for k, v in data.items() if k != "tool"}, True
    return None, False


def _is_rbench_run(path: Path) -> bool:
    """Whether `path` is a run.json rbench wrote (valid JSON carrying rbench's marker or keys)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and (data.get("tool") == TOOL or all(k in data for k in _RUN_KEYS))


def known_unit_ids(plans: Sequence[StudyPlan] = ()) -> set[str]:
    """Every unit id some study of some preset makes, and those of `plans`: the unit files rbench names."""
    from bench.studies.plans import STUDIES, study_plan
    from bench.studies.presets import PRESETS

    ids = {spec.unit_id for spec in unique_units(plans)}
    for preset in PRESETS.values():
        for name in STUDIES:
            try:
                ids |= {unit.spec.unit_id for unit in study_plan(name, preset).units}
            except UsageProblem:  # a preset whose roles name no model here: its units are no names of ours
                continue
    return ids


def _is_our_artifact_dir(entry: Path, ids: set[str]) -> bool:
    return (entry.name in ids and entry.is_dir() and not entry.is_symlink()
            and all(f.name in ARTIFACT_FILES and f.is_file() and not f.is_symlink() for f in entry.iterdir()))


def _is_our_hidden(entry: Path, names: set[str]) -> bool:
    """A hidden entry rbench leaves: a work folder with its lock file, or a temporary `.NAME.XXXX[.tmp]`
    of one of `names` (an interrupted atomic write, an older rbench's scratch folder)."""
    from bench.atomic import LOCK_NAME

    if not entry.name.startswith(".") or entry.is_symlink():
        return False
    if entry.is_dir() and (entry / LOCK_NAME).is_file():
        return True
    return any(entry.name.startswith(f".{name}.") for name in names)


@dataclass
class _Inventory:
    """What a run folder's units/, timing/ and artifacts/ hold."""

    ours: list[Path] = field(default_factory=list)  # files and artifact folders rbench wrote
    foreign: list[Path] = field(default_factory=list)  # anything rbench cannot prove it wrote
    measured: int = 0  # unit and timing files (what a fresh start would lose)


def _inventory(out_dir: Path, plans: Sequence[StudyPlan]) -> _Inventory:
    from bench.studies.plans import STUDIES

    inv = _Inventory()
    ids = known_unit_ids(plans)
    units = out_dir / "units"
    if units.is_dir() and not units.is_symlink():
        # A unit file of a unit no preset makes today is still ours when its records say so.
        for entry in units.glob("*.jsonl"):
            if entry.stem not in ids and _read_records_file(entry, [entry.stem])[0] is not None:
                ids.add(entry.stem)
    names = {"units": ids | {f"{i}.jsonl" for i in ids}, "timing": {f"{s}.jsonl" for s in STUDIES},
             "artifacts": ids}
    for sub in SUBFOLDERS:
        folder = out_dir / sub
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            inv.foreign.append(folder)
            continue
        if not folder.exists():
            continue
        for entry in sorted(folder.iterdir()):
            if _is_our_hidden(entry, names[sub]):
                continue  # work folders are swept by remove_stale_work_dirs; temporaries are harmless
            if sub == "artifacts":
                ours = _is_our_artifact_dir(entry, ids)
            else:
                ours = entry.name in names[sub] and entry.suffix == ".jsonl" and entry.is_file() and not entry.is_symlink()
                inv.measured += ours
            (inv.ours if ours else inv.foreign).append(entry)
    run = out_dir / RUN_JSON
    if run.exists() or run.is_symlink():
        if run.is_file() and not run.is_symlink() and _is_rbench_run(run):
            inv.ours.append(run)
        else:
            inv.foreign.append(run)
    return inv


def _listing(paths: Sequence[Path], root: Path, most: int = 3) -> str:
    shown = [str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in paths[:most]]
    more = f" and {len(paths) - most} more" if len(paths) > most else ""
    return ", ".join(shown) + more


def _remove_artifact_dir(folder: Path) -> None:
    """Remove an artifacts/<unit>/ folder: rbench's files in it, then the folder if nothing else is left."""
    if not folder.exists():
        return
    for name in ARTIFACT_FILES:
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        raise UsageProblem(f"{folder} holds files rbench did not write ({_listing(sorted(folder.iterdir()), folder)}); "
                           "move them out and run the same command again") from None


def _sweep(out_dir: Path) -> list[Path]:
    """Remove the work folders a killed run left in the run folder (those no live process holds)."""
    from bench.atomic import remove_stale_work_dirs

    removed = []
    for sub in SUBFOLDERS:
        removed += remove_stale_work_dirs(out_dir / sub)
    return removed


def _remove_empty_subfolders(out_dir: Path) -> None:
    for sub in SUBFOLDERS:
        try:
            (out_dir / sub).rmdir()
        except OSError:  # missing, or holds something (a live work folder): leave it
            pass


def check_run_folder(out_dir: Path, ctx: RunContext, resume: bool, plans: Sequence[StudyPlan] = ()) -> str | None:
    """Make `out_dir` a run folder for `ctx`; refuse to mix settings or to touch files rbench did not write.

    `out_dir` must be missing, empty, or a run folder (its settings.json is rbench's) whose units/,
    timing/ and artifacts/ hold only rbench's files and whose run.json, if any, is rbench's;
    anything else is refused before a byte is written. Resuming continues an interrupted run only.
    A folder whose run finished (it has rbench's `run.json`, written last) is measured again from
    scratch: rerunning the main job must produce new numbers, not re-render old ones. Starting
    afresh deletes rbench's own unit, timing and artifact files and run.json, nothing else.
    Returns a note saying why a run starts afresh, or None.
    """
    from bench.atomic import write_text

    out_dir = Path(out_dir)
    settings = out_dir / SETTINGS
    current = json.loads(json.dumps(ctx.fingerprint()))  # tuples become lists, as on disk
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageProblem(f"--out {out_dir} is a file, not a folder")
    entries = sorted(out_dir.iterdir()) if out_dir.exists() else []
    note = None
    if entries:
        previous, ours = _is_rbench_settings(settings) if settings.is_file() else (None, False)
        if not ours:
            why = "its settings.json is not rbench's" if settings.exists() else "it has no rbench settings.json"
            raise UsageProblem(f"--out {out_dir} is not empty and is not an rbench run folder ({why}; it holds "
                               f"{_listing(entries, out_dir)}); choose another --out or move those files")
        inv = _inventory(out_dir, plans)
        if inv.foreign:
            raise UsageProblem(f"{out_dir} holds files rbench did not write ({_listing(inv.foreign, out_dir)}); "
                               "move them out of the run folder or choose another --out")
        if resume and (out_dir / RUN_JSON).exists():
            resume = False
            note = f"{out_dir} holds a finished run: measuring again (use another --out to keep it)"
        if resume and previous != current:
            differs = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            if inv.measured:
                raise UsageProblem(f"{out_dir} holds a run with other settings ({', '.join(differs)} differ); "
                                   "use another --out or --no-resume to start over")
            resume = False  # nothing measured under the old settings: nothing to lose
        if not resume:
            for path in inv.ours:
                if path.is_dir():
                    _remove_artifact_dir(path)
                else:
                    path.unlink(missing_ok=True)
            _sweep(out_dir)
            _remove_empty_subfolders(out_dir)
    write_text(settings, json.dumps({"tool": TOOL, **current}, indent=1) + "\n")
    return note


def unique_units(plans: Sequence[StudyPlan]) -> list[UnitSpec]:
    """Every unit of `plans` once, in first-use order."""
    seen: dict[str, UnitSpec] = {}
    for plan in plans:
        for unit in plan.units:
            seen.setdefault(unit.spec.unit_id, unit.spec)
    return list(seen.values())


def run_plans(plans: Sequence[StudyPlan], ctx: RunContext, out_dir: Path,
              on_event: EventHook = lambda kind, payload: None, keep_artifacts: bool = False) -> list[dict[str, Any]]:
    """Prepare every unit not yet done, time every study not yet timed, then return all records.

    Phase 1, per unit: train, count, export, evaluate (`measure_unit`); its records are written in
    one atomic step, its weights and ONNX file kept in `artifacts/<unit>/`. Phase 2, per study:
    time all its units together (`time_study`), written in one atomic step to `timing/<study>.jsonl`.
    An interruption anywhere resumes at the first unit or study not written. A unit or timing file
    that is empty, cut short or otherwise unsound is measured again ('unit-redo' / 'timing-redo'
    events say why). Every record carries `unit_seconds`: how long the work that wrote it took (the
    unit's preparation; for a timing record, its study's timing phase). Work folders a killed run
    left are removed first; the artifacts are removed at the end unless `keep_artifacts`.
    """
    out_dir = Path(out_dir)
    _sweep(out_dir)
    units = unique_units(plans)
    pending = {spec.unit_id for spec in pending_units(plans, out_dir)}
    laddered = _laddered(plans, out_dir)
    for index, spec in enumerate(units):
        payload = {"unit": spec.unit_id, "index": index, "total": len(units)}
        if spec.unit_id not in pending:
            on_event("unit-skip", payload)
            continue
        bad = unit_state(out_dir, spec)[1]
        if bad:
            on_event("unit-redo", {**payload, "reason": f"units/{bad}"})
        on_event("unit-start", payload)
        start = time.perf_counter() - _seconds_trained_before(ctx, spec)
        _prepare_unit(spec, ctx, out_dir, lambda stage, p=payload: on_event("stage", {**p, "stage": stage}),
                      keep_checkpoint=spec.unit_id in laddered)
        on_event("unit-done", {**payload, "seconds": time.perf_counter() - start})
    for plan in plans:
        if not plan.timed:
            continue
        payload = {"study": plan.name, "units": len(plan.units)}
        records, bad = timing_state(out_dir, plan)
        if records is not None:
            on_event("timing-skip", payload)
            continue
        if bad:
            on_event("timing-redo", {**payload, "reason": f"timing/{bad}"})
        on_event("timing-start", payload)
        start = time.perf_counter()
        timed = time_study(plan, ctx, out_dir, lambda stage, p=payload: on_event("stage", {**p, "stage": stage}))
        seconds = round(time.perf_counter() - start, 3)
        _write_records(timing_path(out_dir, plan), [{**record, "unit_seconds": seconds} for record in timed])
        on_event("timing-done", {**payload, "seconds": time.perf_counter() - start})
    if not keep_artifacts:
        _remove_artifacts(out_dir, units)
    return collect_records(plans, out_dir)


def _laddered(plans: Sequence[StudyPlan], out_dir: Path) -> set[str]:
    """The units whose training checkpoint a ladder still to run needs."""
    return {unit.spec.unit_id for plan in plans if plan.name == LADDER and timing_state(out_dir, plan)[0] is None
            for unit in plan.units}


def pending_units(plans: Sequence[StudyPlan], out_dir: Path) -> list[UnitSpec]:
    """The units `run_plans` prepares (trains, then measures): those not measured yet, and those whose weights or
    checkpoint a study still to time needs and no longer has."""
    # A prepared unit's weights are needed again only by studies not timed yet; its checkpoint only by a ladder.
    untimed = {unit.spec.unit_id for plan in plans if timing_state(out_dir, plan)[0] is None
               for unit in timed_units(plan)}  # an extra seed is never timed: its weights are not kept
    laddered = _laddered(plans, out_dir)
    pending = []
    for spec in unique_units(plans):
        folder = artifact_path(out_dir, spec)
        needs_weights = spec.unit_id in untimed and not (folder / WEIGHTS).exists()
        needs_weights |= spec.unit_id in laddered and not (folder / CHECKPOINT).exists()
        if unit_state(out_dir, spec)[0] is None or needs_weights:
            pending.append(spec)
    return pending


def _seconds_trained_before(ctx: RunContext, spec: UnitSpec) -> float:
    """How long the unit's distributed training took (`ctx.trained`), counted in its preparation's time."""
    done = ctx.trained.get(spec.unit_id)
    return done.seconds if done is not None else 0.0


def _remove_artifacts(out_dir: Path, units: Sequence[UnitSpec]) -> None:
    """Remove every artifacts/<unit>/ folder rbench made (of these units or earlier ones), then artifacts/ if empty."""
    folder = out_dir / "artifacts"
    if not folder.is_dir():
        return
    ids = known_unit_ids() | {spec.unit_id for spec in units}
    for entry in sorted(folder.iterdir()):
        if _is_our_artifact_dir(entry, ids):
            _remove_artifact_dir(entry)
    with _suppress(OSError):
        folder.rmdir()


def _prepare_unit(spec: UnitSpec, ctx: RunContext, out_dir: Path, on_stage: Callable[[str], None],
                  keep_checkpoint: bool = False) -> None:
    """measure_unit in a locked scratch folder; then its artifacts, then its records, each moved into place whole.

    The training checkpoint is kept only with `keep_checkpoint` (a ladder still to run needs it)."""
    from bench.atomic import work_dir

    start = time.perf_counter() - _seconds_trained_before(ctx, spec)
    with work_dir(out_dir / "units", spec.unit_id) as work:
        records = measure_unit(spec, ctx, work, on_stage=on_stage)
        for record in records:
            record["unit_seconds"] = round(time.perf_counter() - start, 3)
        target = artifact_path(out_dir, spec)
        with work_dir(target.parent, spec.unit_id) as staging:
            folder = staging / spec.unit_id
            folder.mkdir()
            for name in ARTIFACT_FILES:
                if (work / name).exists() and (name != CHECKPOINT or keep_checkpoint):
                    shutil.move(str(work / name), folder / name)
            _remove_artifact_dir(target)
            folder.rename(target)
        _write_records(unit_path(out_dir, spec), records)


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    from bench.atomic import write_text
    from bench.records.io import to_json, validate_record

    for record in records:
        validate_record(record)
    write_text(path, "".join(to_json(r) + "\n" for r in records))


def collect_records(plans: Sequence[StudyPlan], out_dir: Path) -> list[dict[str, Any]]:
    """Every finished unit's records, once per study that uses the unit, and the study's own timings,
    each tagged study/label/group. A unit or timing file that is missing or unsound is a DataProblem."""
    out = []
    for plan in plans:
        timings, bad = timing_state(out_dir, plan)
        if timings is None:
            raise DataProblem(f"{timing_path(out_dir, plan)}: {bad or 'missing'}; run the same command again to time "
                              f"the {plan.name} study again")
        for unit in plan.units:
            records, bad = unit_state(out_dir, unit.spec)
            if records is None:
                raise DataProblem(f"{unit_path(out_dir, unit.spec)}: {bad or 'missing'}; run the same command again "
                                  "to measure the unit again")
            tags = {"study": plan.name, "label": unit.label, "group": unit.group}
            out += [{**record, **tags} for record in records]
            out += [{**record, **tags} for record in timings if record.get("unit") == unit.spec.unit_id]
    return out


def run_seconds(plans: Sequence[StudyPlan], out_dir: Path) -> dict[str, float]:
    """How long each unit's preparation and each study's timing took, whichever invocation ran it (from the
    `unit_seconds` of the records on disk): unit id -> seconds, 'timing:<study>' -> seconds."""
    seconds: dict[str, float] = {}
    for spec in unique_units(plans):
        for record in unit_state(out_dir, spec)[0] or []:
            if isinstance(record.get("unit_seconds"), (int, float)):
                seconds[spec.unit_id] = max(seconds.get(spec.unit_id, 0.0), record["unit_seconds"])
    for plan in plans:
        for record in timing_state(out_dir, plan)[0] or []:
            if isinstance(record.get("unit_seconds"), (int, float)):
                key = f"timing:{plan.name}"
                seconds[key] = max(seconds.get(key, 0.0), record["unit_seconds"])
    return {key: round(value, 1) for key, value in seconds.items()}
