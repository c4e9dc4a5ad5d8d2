"""Measure one unit: train, count FLOPs, export + parity, evaluate on every engine; return its records.

`measure_unit` computes and returns records; it writes only its scratch files (checkpoint, ONNX)
into the work folder it is given.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.report.seeds import DIVERGED
from bench.studies.base import UnitSpec, plain_json
from bench.studies.context import RunContext

__all__ = ["CHECKPOINT", "DIVERGED", "ONNX", "WEIGHTS", "build_unit_model", "measure_unit", "unit_context",
           "unit_seed", "unit_train_config"]

def artifact_path(out_dir: Path, spec: UnitSpec) -> Path:
    """Where a prepared unit keeps its weights and ONNX file until its studies are timed."""
    return Path(out_dir) / "artifacts" / spec.unit_id


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
        # A recipe that diverges is a result (the optimizer seed report's Adam/VGG19 case): recorded, and the study goes on.
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
    record = train_record(result, model=spec.model, model_config=plain_json(model.config), dataset=data,
                          train_config={**config.to_dict(), DIVERGED: message},
                          params=sum(p.numel() for p in model.parameters()),
                          train_images_per_epoch=min(len(bundle.train), config.batch_size * (spec.max_batches or 10**9)),
                          context=context, command=ctx.command)
    record["checkpoint"] = None
    return record




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
    # last epoch's (`restore_best=False`: the recipe ladder's rungs before early stopping, as Keras without it).
    if config.restore_best:
        model.load_state_dict(load_training_checkpoint(result.best_checkpoint)["state_dict"])
    model.eval()
    shutil.copyfile(result.best_checkpoint, work_dir / CHECKPOINT)
    data = {k: v for k, v in bundle.describe().items() if k not in ("mean", "std", "class_names")}
    return train_record(result, model=spec.model, model_config=plain_json(model.config), dataset=data,
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
    exported = export_record(report, source=source.describe(), model_config=plain_json(source.config), engine="onnx",
                             input_shape=source.input_shape, batch=None, context=context, command=ctx.command)
    return [flops, exported]



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
        records.append(accuracy_record(result, model=source.name, model_config=plain_json(source.config), dataset=data,
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
            records.append(accuracy_record(result, model=source.name, model_config=plain_json(source.config), dataset=data,
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
        records.append(accuracy_record(result, model=source.name, model_config=plain_json(source.config), dataset=data,
                                       context={**context, "eval_channels": subset, "eval_channel_mode": "select"},
                                       command=ctx.command))
    return records


def unit_source(spec: UnitSpec, ctx: RunContext, out_dir: Path):
    """(model source, data bundle) of a prepared unit: its trained weights in its net, its ONNX file reused."""
    import torch

    from bench.engines.sources import resolve_source

    folder = artifact_path(out_dir, spec)
    bundle = ctx.bundle(channels=spec.channels or ("RGB" if spec.rgb else None))
    model = build_unit_model(spec, bundle)
    model.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
    source = resolve_source(model.eval(), input_shape=tuple(bundle.input_shape), name=spec.model)
    source.exported[("fp32", None)] = folder / ONNX
    return source, bundle
