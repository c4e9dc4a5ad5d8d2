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
    """Train, profile, export and measure one unit on every engine; return its records.

    Every record comes from the same builder (`bench.records`) and the same library calls
    (`bench.measure`) as the CLI's, plus the unit's study context.
    """
    import torch

    import nets

    torch.manual_seed(ctx.seed)
    bundle = ctx.bundle(channels=spec.channels or ("RGB" if spec.rgb else None))
    model = nets.create_model(spec.model, num_classes=bundle.num_classes, in_chans=bundle.in_chans, act=spec.act,
                              **spec.builder_kwargs())
    context = {"unit": spec.unit_id, "preset": ctx.preset.name, "act": spec.act, "channels": spec.channels}
    records = [_train_unit(spec, ctx, model, bundle, work_dir, context, on_stage)]
    from bench.sources import resolve_source

    source = resolve_source(model, input_shape=tuple(bundle.input_shape), name=spec.model)
    records += _measure_costs_and_export(source, ctx, work_dir, context, on_stage)
    records += _measure_engines(source, ctx, context, on_stage)
    accuracy, best_engine = _accuracy_per_engine(source, ctx, bundle, context, on_stage, records)
    records += accuracy
    if spec.eval_subsets:
        records += _accuracy_on_subsets(source, spec, ctx, bundle, best_engine, context, on_stage)
    return records


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
    report = export.to_onnx(source.module(), work_dir / "model.onnx", source.input_shape, batch=1, dynamic_batch=True,
                            verify=True, model_name=source.name, exporter=ctx.preset.exporter)
    source.exported["fp32"] = Path(report.path)
    exported = export_record(report, source=source.describe(), model_config=_plain(source.config), engine="onnx",
                             input_shape=source.input_shape, batch=None, context=context, command=ctx.command)
    return [flops, exported]


def _measure_engines(source, ctx: RunContext, context: dict[str, Any],
                     on_stage: Callable[[str], None]) -> list[dict[str, Any]]:
    """Latency at batch 1 and throughput at the preset's batch, per engine."""
    from bench.measure import Settings, latency, throughput_records

    preset = ctx.preset
    records: list[dict[str, Any]] = []
    for engine in ctx.engines:
        on_stage(f"latency/{engine}")
        settings = Settings(device=ctx.device, warmup=preset.warmup, iters=preset.iters)
        records += latency(source, [engine], [1], settings, context=context, command=ctx.command)
        on_stage(f"throughput/{engine}")
        settings = Settings(device=ctx.device, warmup=max(1, preset.warmup // 5), iters=preset.throughput_iters)
        sweep = latency(source, [engine], [preset.throughput_batch], settings, context=context, command=ctx.command)
        records += throughput_records(sweep, context=context, command=ctx.command)
    return records


def _accuracy_per_engine(source, ctx: RunContext, bundle, context: dict[str, Any], on_stage: Callable[[str], None],
                         measured: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Test accuracy through each engine, the first engine the reference; and the fastest engine."""
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
    throughputs = [r for r in measured if r["kind"] == "throughput"]
    fastest = max(throughputs, key=lambda r: r["throughput_img_s"] or 0)["engine"] if throughputs else ctx.engines[0]
    return records, fastest


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
        if (out_dir / "units").exists():
            shutil.rmtree(out_dir / "units")
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


def run_plans(plans: Sequence[StudyPlan], ctx: RunContext, out_dir: Path,
              on_event: EventHook = lambda kind, payload: None, keep_artifacts: bool = False) -> list[dict[str, Any]]:
    """Measure every unit not yet complete in `out_dir`, then return all study records.

    Each unit's records are written in one atomic step when the unit is complete; its scratch
    files (checkpoint, ONNX) live in a temporary folder removed afterwards unless `keep_artifacts`.
    """
    from bench.atomic import write_text
    from bench.results import to_json, validate_record

    out_dir = Path(out_dir)
    units = unique_units(plans)
    for index, spec in enumerate(units):
        payload = {"unit": spec.unit_id, "index": index, "total": len(units)}
        if unit_path(out_dir, spec).exists():
            on_event("unit-skip", payload)
            continue
        on_event("unit-start", payload)
        start = time.perf_counter()
        (out_dir / "units").mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{spec.unit_id}.", dir=out_dir / "units"))
        try:
            records = measure_unit(spec, ctx, work, on_stage=lambda stage, p=payload: on_event("stage", {**p, "stage": stage}))
            for record in records:
                validate_record(record)
                record["unit_seconds"] = round(time.perf_counter() - start, 3)
            write_text(unit_path(out_dir, spec), "".join(to_json(r) + "\n" for r in records))
        finally:
            if keep_artifacts:
                target = out_dir / "artifacts" / spec.unit_id
                if target.exists():
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(work), target)
            else:
                shutil.rmtree(work, ignore_errors=True)
        on_event("unit-done", {**payload, "seconds": time.perf_counter() - start})
    return collect_records(plans, out_dir)


def collect_records(plans: Sequence[StudyPlan], out_dir: Path) -> list[dict[str, Any]]:
    """Every finished unit's records, once per study that uses the unit, tagged study/label/group."""
    out = []
    for plan in plans:
        for unit in plan.units:
            for record in load_unit(out_dir, unit.spec) or []:
                out.append({**record, "study": plan.name, "label": unit.label, "group": unit.group})
    return out

