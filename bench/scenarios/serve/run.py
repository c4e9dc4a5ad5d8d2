"""`serve`: one LoadGen run (or a Server peak search) of a model on an engine, returned as a `serve` record.

    >>> from bench.scenarios.serve import ServeConfig, serve
    >>> record = serve("resnet20", "ort", ServeConfig(scenario="server", target_qps=200, min_duration_s=5), out="o")
    >>> record["result"], record["samples_per_s"], record["latency_ms_p99"]

LoadGen drives the run (its scenarios, its query schedule, its timing and its verdict); rbench supplies the
SUT (`sut.ServingSystem`) and the QSL (`qsl.SampleLibrary`). LoadGen's files stay in the output folder.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UsageProblem
from bench.scenarios.serve.data import ServedModel, load_served
from bench.scenarios.serve.loadgen_log import LOG_FILES, read_accuracy_log, summarize
from bench.scenarios.serve.settings import ServeConfig, import_loadgen, loadgen_settings, read_settings
from bench.scenarios.serve.sut import ModelFailure, ServingSystem

#: Queries of a peak-search step unless --min-queries says otherwise: Server's early stopping needs about 460
#: queries to pass at the 99th percentile even when none is over the bound.
SEARCH_MIN_QUERIES = 1000


def _engine_factory(served: ServedModel, engine: str, precision: str, device: str, workdir: Path, max_batch: int):
    from bench.engines import create_engine
    from bench.measure.run import Settings

    def make(threads: int | None):
        options = {k: v for k, v in Settings(precision=precision, device=device, threads=threads)
                   .engine_options(engine).items() if v is not None}
        return create_engine(engine, served.source, input_shape=served.source.input_shape, device=device,
                             precision=precision, workdir=workdir, max_batch=max_batch, **options)
    return make


def _start_test(lg, system: ServingSystem, library, settings, folder: Path) -> None:
    """One LoadGen run into `folder`; raises ModelFailure after it when the model failed inside the SUT."""
    folder.mkdir(parents=True, exist_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = str(folder)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    sut, qsl = system.construct(lg), library.construct(lg)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if system.errors:
        raise ModelFailure(f"the model failed inside the SUT ({system.errors[0]}); every query was completed "
                           f"empty, LoadGen's logs are in {folder}")


def _one_run(lg, system, served, config: ServeConfig, model_key: str, hints: dict[str, float], folder: Path,
             **overrides: Any) -> dict[str, Any]:
    settings, shortened = loadgen_settings(config, model_key, performance_samples=served.library.performance_count,
                                           expected_latency_s=hints.get("latency_s"),
                                           expected_qps=hints.get("qps"), **overrides)
    effective = read_settings(settings)
    _start_test(lg, system, served.library, settings, folder)
    spq = effective["samples_per_query"] if config.scenario == "multistream" else 1
    result = summarize(folder, config.scenario, spq)
    result.update(loadgen_settings=effective, shortened=shortened, mlperf_valid=result["result"] == "VALID"
                  and not shortened, loadgen_files={name: str(folder / name) for name in LOG_FILES
                                                    if (folder / name).exists()},
                  target_qps=effective["target_qps"] if config.scenario == "server" else None,
                  latency_bound_ms=effective["latency_bound_ms"] if config.scenario == "server" else None,
                  samples_per_query=spq)
    return result


def score_accuracy(served: ServedModel, folder: Path, engine: str, reference_logits: np.ndarray | None) -> dict[str, Any]:
    """Top-1 / top-5 of LoadGen's accuracy log against the test labels, and agreement with the reference
    (PyTorch) logits of the same samples, as `rbench accuracy` and the ladder report them."""
    from bench.accuracy.metrics import classification_metrics, compare_predictions, topk_accuracy

    order, logits = read_accuracy_log(folder, served.library.total_count)
    if logits.ndim != 2 or logits.shape[1] != served.num_classes:
        raise UsageProblem(f"the model gives {logits.shape[-1]} outputs, {served.dataset['name']} has "
                           f"{served.num_classes} classes: top-1 needs a model of its classes (--checkpoint)")
    labels = served.library.labels[order]
    metrics = classification_metrics(labels, logits.argmax(1), served.num_classes, served.class_names, logits=logits)
    out = {"top1": metrics["top1"], "top5": topk_accuracy(logits, labels, 5), "samples": int(len(labels)),
           "correct": int((logits.argmax(1) == labels).sum())}
    if reference_logits is not None:
        out.update(reference_engine="torch fp32", **compare_predictions(reference_logits[order], logits))
    return out


def reference_logits(served: ServedModel, batch: int = 256) -> np.ndarray | None:
    """torch fp32 logits of every sample (None for a file source, which has no PyTorch module)."""
    from bench.engines import create_engine

    if not served.source.has_module:
        return None
    library, rows = served.library, []
    with create_engine("torch", served.source, input_shape=served.source.input_shape) as engine:
        for start in range(0, library.total_count, batch):
            indices = list(range(start, min(start + batch, library.total_count)))
            library.load(indices)
            rows.append(engine.infer(library.batch(indices)))
            library.unload(indices)
    return np.concatenate(rows)


def _peak_search(lg, system, served, config: ServeConfig, model_key: str, hints: dict[str, float], out: Path,
                 capacity_qps: float, on_step=None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Binary search over Server target QPS, each step its own LoadGen PerformanceOnly run in `out/peak/`.

    Starts at half the warm-up capacity, doubles (or halves) until one step is VALID and one INVALID,
    then bisects (geometrically) until they are within `search_tolerance`. Returns (the highest VALID
    step, or the last step when none is, and every step)."""
    step_config = dataclasses.replace(config, min_queries=config.min_queries or SEARCH_MIN_QUERIES,
                                      min_duration_s=config.min_duration_s or config.search_duration_s)
    valid: dict[str, Any] | None = None
    invalid: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = []
    qps = max(round(capacity_qps / 2, 1), 1.0)
    while len(steps) < config.search_steps:
        folder = out / "peak" / f"step-{len(steps) + 1:02d}-qps-{qps:g}"
        result = _one_run(lg, system, served, step_config, model_key, hints, folder, target_qps=qps)
        steps.append(result)
        if on_step is not None:
            on_step(len(steps), qps, result["result"])
        if result["result"] == "VALID":
            valid = result if valid is None or qps > valid["target_qps"] else valid
        else:
            invalid = result if invalid is None or qps < invalid["target_qps"] else invalid
        if valid is None:
            qps = round(qps / 2, 2)
            if qps < 0.5:
                break
        elif invalid is None:
            qps = round(qps * 2, 1)
        elif invalid["target_qps"] / valid["target_qps"] - 1 <= config.search_tolerance:
            break
        else:
            qps = round(math.sqrt(valid["target_qps"] * invalid["target_qps"]), 1)
    return (valid or steps[-1]), steps


def serve(model: Any, engine: str = "ort", config: ServeConfig | None = None, *, out: str | Path,
          checkpoint: str | Path | None = None, dataset: str | None = None, data_root: str | Path | None = None,
          eval_transform: str | None = None, samples: int | None = None, precision: str = "fp32",
          device: str = "cpu", on_stage=None, command: str | None = None) -> dict[str, Any]:
    """Serve `model` on `engine` under LoadGen in `config.scenario` and return the `serve` record.

    Args:
        model: any model source (zoo name, module, .onnx file, ...); with `checkpoint`, its zoo name; or a
            `ServedModel` already holding its source and samples (a study's trained unit on its own test split).
        engine: torch | ort | openvino | trt.
        config: the scenario and its settings (`ServeConfig`; MLPerf's defaults where unset).
        out: the folder LoadGen's files go to (a subfolder per peak-search step).
        checkpoint / dataset / data_root / eval_transform / samples: the samples served (`load_served`).
        precision / device: the engine's.
        on_stage(text): told what is happening (warm-up, each LoadGen run).

    Raises:
        UsageProblem for a setting that cannot be served; ModelFailure when the model fails in the SUT
        (after LoadGen has finished its run: every query is completed, with an empty response).
    """
    from bench.engines import ALIASES
    from bench.measure.run import Settings, check_environment
    from bench.records.builders import serve_record

    config = config or ServeConfig()
    config.validate()
    engine = ALIASES.get(engine.lower(), engine.lower())
    check_environment([engine], Settings(precision=precision, device=device, threads=config.threads))
    lg = import_loadgen()
    stage = on_stage or (lambda text: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    served = model if isinstance(model, ServedModel) else load_served(
        model, checkpoint=checkpoint, dataset=dataset, data_root=data_root, eval_transform=eval_transform,
        samples=samples)
    model_key = served.source.name
    spq = config.samples_per_query or read_settings(loadgen_settings(config, model_key)[0])["samples_per_query"]
    max_batch, timeout_ms = config.batching(spq if config.scenario == "multistream" else 1)
    with tempfile.TemporaryDirectory(prefix="rbench-serve-") as workdir:
        make = _engine_factory(served, engine, precision, device, Path(workdir), max_batch)
        system = ServingSystem(make, served.library, workers=config.workers, max_batch=max_batch,
                               batch_timeout_ms=timeout_ms, threads=config.threads)
        stage(f"warming up {config.workers} {engine} worker(s)")
        warm = system.start(lg)
        try:
            capacity = config.workers * max_batch / warm["batch_s"]
            hints = {"latency_s": warm["latency_s"], "qps": capacity}
            peak_steps = None
            if config.find_peak:
                result, peak_steps = _peak_search(lg, system, served, config, model_key, hints, out, capacity,
                                                  on_step=lambda i, q, r: stage(f"peak search step {i}: {q:g} QPS {r}"))
            else:
                stage(f"LoadGen {config.loadgen_scenario} {'accuracy' if config.accuracy else 'performance'} run")
                result = _one_run(lg, system, served, config, model_key, hints, out)
        finally:
            system.stop()
    accuracy = None
    if config.accuracy:
        stage("scoring LoadGen's accuracy log")
        accuracy = score_accuracy(served, out, engine, reference_logits(served))
    return serve_record(
        source=served.source.describe(), model_config=dict(served.source.config) or None, engine=engine,
        engine_info=system.engine_info, precision=precision, device=device,
        input_shape=list(served.source.input_shape), dataset=served.dataset, scenario=config.scenario,
        mode="accuracy" if config.accuracy else "find_peak" if config.find_peak else "performance",
        options=config.as_record(), workers=config.workers, threads=system.threads, max_batch=max_batch,
        batch_timeout_ms=timeout_ms, pinned_cores=system.slices, batch_sizes=dict(sorted(system.batch_sizes.items())),
        warmup={k: round(v * 1000, 4) for k, v in warm.items()}, result=result, accuracy=accuracy,
        peak_steps=peak_steps, out=str(out), command=command)
