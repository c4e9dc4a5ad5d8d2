"""The measurement library: latency, throughput and FLOPs of any model source, returned as records.

No click and no printing here: `bench/commands/` parse options, call these and print tables.

    >>> import bench
    >>> records = bench.latency("resnet20", engines=["torch", "ort"], batches=[1, 8], iters=20)
    >>> [(r["engine"], r["batch"], r["latency_ms_p50"]) for r in records]

A source is anything `bench.engines.sources.resolve_source` takes: a zoo name, an `nn.Module`,
`torchvision:NAME`, `package.module:callable`, an `.onnx` file or a TensorRT engine file.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import EnvironmentProblem, UsageProblem
from bench.measure.settings import (  # noqa: F401  (public here too: the measuring library's face)
    DEFAULT_ITERS,
    ORT_CPU_FP16,
    ProgressFactory,
    Settings,
    cached_peak,
    check_environment,
    layer_macs,
    load_average,
    parse_batches,
    parse_engines,
    settings_from,
)


# -- what a model costs ------------------------------------------------------------------------
def weighted_layers(module) -> int:
    """The layers of a module that hold a weight matrix or kernel (conv, linear, dynamic conv): the ops torch's
    threads share the work of."""
    return sum(1 for m in module.modules() if getattr(getattr(m, "weight", None), "ndim", 0) >= 2)


def model_costs(source) -> dict[str, Any]:
    """params, MACs, FLOPs per image, weighted layers and the counters behind them, for any resolved source.

    A PyTorch model: thop (MACs) and torch's flop counter (FLOPs), which check each other. An
    ONNX file: the graph's Conv/Gemm/MatMul multiply-accumulates after shape inference. A
    TensorRT engine: unknown (count its ONNX file instead).
    """
    if source.has_module:
        from bench.measure.flops import profile_model

        module = source.module()
        report = profile_model(module, source.input_shape, batch=1, name=source.name)
        return {"params": int(report.params), "macs": int(report.macs), "flops": int(report.flops),
                "layers": weighted_layers(module),
                "counters_agree": bool(report.agrees), "counters_warning": report.warning,
                "counters": {"macs": "thop", "flops": "torch.utils.flop_counter", "params": "torch"}, "report": report}
    if source.kind == "onnx":
        from bench.measure.onnx_flops import count_onnx_flops

        try:
            report = count_onnx_flops(source.path, batch=1, input_shape=source.input_shape)
        except ValueError as exc:
            raise UsageProblem(f"{source.path}: {exc}") from None
        warning = None if report.complete else \
            f"shapes of {', '.join(report.uncounted)} could not be inferred; those ops are not counted"
        return {"params": report.params, "macs": report.macs, "flops": report.flops, "layers": report.layers,
                "counters_agree": None,
                "counters_warning": warning, "counters": {"macs": "ONNX graph", "flops": "ONNX graph (2 per MAC)",
                                                          "params": "ONNX initializers"}, "report": report}
    return {"params": None, "macs": None, "flops": None, "layers": None, "counters_agree": None,
            "counters_warning": "a TensorRT engine does not expose its arithmetic; count its ONNX file",
            "counters": {}, "report": None}


def profile(source, *, detail: bool = False, context: dict[str, Any] | None = None, command: str | None = None,
            **source_options: Any) -> dict[str, Any]:
    """A "flops" record: params, MACs and FLOPs of one image of `source`.

    `source_options` go to `resolve_source` (input_size, in_chans, num_classes, act, checkpoint,
    input_shape). With `detail`, a per-module breakdown (PyTorch) or per-op-type one (ONNX).
    """
    from bench.engines.sources import resolve_source
    from bench.records.builders import flops_record

    src = resolve_source(source, **source_options)
    if src.kind == "trt":
        raise UsageProblem(f"{src.path} is a TensorRT engine, which does not expose its arithmetic; count its ONNX file")
    if src.has_module:  # the counters run one image through the module
        refused = check_memory([src], ["torch"], [1], Settings())
        if refused:
            raise EnvironmentProblem(refused[1])
    per_module = None
    if detail and src.has_module:
        from bench.measure.flops import profile_model

        report = profile_model(src.module(), src.input_shape, batch=1, detail=True, name=src.name)
        per_module = {str(k): {"flops": int(v), "macs": report.macs_by_module.get(k)}
                      for k, v in (report.flops_by_module or {}).items()}
    costs = model_costs(src)
    if detail and src.kind == "onnx":
        per_module = {op: {"flops": int(v), "macs": int(v) // 2} for op, v in costs["report"].by_op_type.items()}
    return flops_record(source=src.describe(), model_config=src.config or None, input_shape=src.input_shape,
                        params=costs["params"], macs=costs["macs"], flops=costs["flops"],
                        counters_agree=costs["counters_agree"], counters_warning=costs["counters_warning"],
                        counters=costs["counters"], context=context, command=command, per_module=per_module)


#: Keyword arguments of `latency`/`throughput` that describe the source rather than the measurement.
SOURCE_OPTIONS = ("input_shape", "input_size", "in_chans", "num_classes", "act", "checkpoint", "name")
#: Untimed runs that re-warm an engine at the start of each later round (every entry gets the same).
REWARM_RUNS = 2
#: What an in-process record says of its timing (`bench.measure.workers` fills the worker fields).
IN_PROCESS = {"timing_mode": "in-process", "workers": 1}


@dataclass
class _Entry:
    """One thing being timed: a source on an engine, opened."""

    source: Any
    engine_name: str
    engine: Any
    costs: dict[str, Any]
    info: dict[str, Any]
    peak: dict[str, Any] | None
    failed: dict[int, str] = dataclasses.field(default_factory=dict)  # batch -> error
    precision: str | None = None  # this entry's own precision (a ladder's rungs differ); None: the settings'

    @property
    def label(self) -> str:
        return self.engine_name if self.precision is None else f"{self.engine_name} {self.precision}"


def _open_entries(stack, sources, costs: list[dict[str, Any]], engines: list[str], settings: Settings, workdir: Path,
                  max_batch: int, batch: int) -> list[_Entry]:
    from bench.engines import create_engine

    entries = []
    for src, cost in zip(sources, costs):
        for name in engines:
            engine = create_engine(name, src, device=settings.device, precision=settings.precision, workdir=workdir,
                                   max_batch=max_batch, batch=batch,
                                   **settings.engine_options(name, layer_macs(cost, batch)))
            stack.enter_context(engine)
            entries.append(_Entry(src, name, engine, cost, engine.describe(), cached_peak(settings, name)))
    return entries


def _merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run out of a run per round: latencies pooled, counts and times summed, the memory peak kept."""
    merged = dict(runs[0])
    merged["latencies_ms"] = [v for run in runs for v in run["latencies_ms"]]
    for key in ("iters", "warmup_iters", "warmup_s", "timed_wall_s"):
        merged[key] = sum(run[key] for run in runs)
    merged["memory_peak_bytes"] = max(run["memory_peak_bytes"] for run in runs)
    merged["rounds"] = len(runs)
    merged["round_latencies_ms"] = [run["latencies_ms"] for run in runs]
    return merged


def _time_entries(entries: list[_Entry], batch_size: int, settings: Settings, rng,
                  on_progress: ProgressFactory | None) -> list[dict[str, Any] | None]:
    """Time every entry at `batch_size`, interleaved in rounds when there are several.

    Round 1 warms each entry up fully; each later round visits the entries in a new random
    order, re-warms each with the same few runs and times its share of the iterations, so drift
    and neighbours hit every entry alike. An entry that runs out of memory gets None.
    """
    import numpy as np

    from bench.measure.timing import is_out_of_memory, measure_latency

    rounds = settings.rounds if len(entries) > 1 else 1
    iters = settings.iters or (None if settings.duration_s else DEFAULT_ITERS)
    per_round = {"iters": -(-iters // rounds) if iters else None,
                 "duration_s": settings.duration_s / rounds if settings.duration_s else None}
    runs: list[list[dict[str, Any]]] = [[] for _ in entries]
    by_shape: dict[tuple, Any] = {}  # entries of one input shape time the very same batch
    for entry in entries:
        shape = (batch_size, *entry.engine.input_shape)
        if shape not in by_shape:
            by_shape[shape] = rng.standard_normal(shape, dtype=np.float32)
    batches = [by_shape[(batch_size, *entry.engine.input_shape)] for entry in entries]
    # One progress task per entry, counting its timed runs across all rounds.
    trackers = [on_progress(e.label, batch_size) if on_progress else None for e in entries]

    def tracker(index: int):
        update, done_before = trackers[index], sum(len(run["latencies_ms"]) for run in runs[index])
        return None if update is None else (lambda done, elapsed: update(done_before + done, elapsed))

    for round_index in range(rounds):
        order = list(range(len(entries))) if round_index == 0 else list(rng.permutation(len(entries)))
        for index in order:
            entry = entries[index]
            if batch_size in entry.failed:
                continue
            first = round_index == 0
            warmup = settings.warmup if first else REWARM_RUNS
            if first and settings.compile and entry.engine_name == "torch":
                warmup = max(warmup, 2)  # torch.compile recompiles for a new batch shape: keep that untimed
            try:
                run = measure_latency(
                    entry.engine, batches[index], warmup=warmup, warmup_s=settings.warmup_s if first else 0.0,
                    include_transfers=settings.include_transfers, **per_round,
                    on_iteration=tracker(index))
                run.update(entry.engine.memory_usage() or {})  # TensorRT and onnxruntime hold memory torch does not see
                runs[index].append(run)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is survivable
                if not is_out_of_memory(exc):
                    raise
                _release_memory(settings)
                entry.failed[batch_size] = f"out of memory at batch {batch_size}"
    return [_merge_runs(r) if r and batch_size not in e.failed else None for e, r in zip(entries, runs)]


def _timed_phase(entries: list[_Entry], batch_size: int, settings: Settings, rng, on_progress):
    """(runs, contention): `_time_entries` between two readings of how busy the machine was."""
    from bench.measure import contention

    return contention.watched(lambda: _time_entries(entries, batch_size, settings, rng, on_progress),
                              settings.require_quiet, settings.threads)


def _latency_records(entries: list[_Entry], runs, batch_size: int, settings: Settings, context, command,
                     contention: dict[str, Any] | None = None):
    from bench.measure.device import peak_flops_for
    from bench.measure.stats import summarize
    from bench.records.builders import latency_record

    records = []
    for entry, run in zip(entries, runs):
        precision = entry.precision or settings.precision
        peak_flops = peak_flops_for(entry.peak, precision)
        # Described again after timing: a CUDA graph that could not be captured, the profile a batch ran on.
        info = entry.engine.describe() if getattr(entry.engine, "is_active", False) else entry.info
        base = dict(source=entry.source.describe(), model_config=entry.source.config or None, engine=entry.engine_name,
                    engine_info=info, precision=precision, device=entry.engine.device, batch=batch_size,
                    input_shape=entry.engine.input_shape, profile=entry.costs, settings=settings.as_record(),
                    peak_flops_s=peak_flops,
                    peak_source="rbench device (cached)" if entry.peak else "not measured: run `rbench device`",
                    load_average=load_average(), contention=contention, context=context, command=command)
        if run is None:
            records.append(latency_record(**base, error=entry.failed[batch_size], timing=IN_PROCESS))
        else:
            summary = summarize(run["latencies_ms"], batch_size, entry.costs["flops"], peak_flops)
            records.append(latency_record(**base, run=run, summary=summary, timing=IN_PROCESS))
    return records


def _prepare(engines, batches, settings, options):
    engines, batches = parse_engines(engines), parse_batches(batches)
    source_options = {k: options.pop(k) for k in SOURCE_OPTIONS if k in options}
    settings = settings_from(settings, options)
    return engines, batches, settings, source_options


def _in_workers(settings: Settings, several: bool) -> bool:
    """Whether to time in worker processes: always with timing="workers", never with "in-process", and with
    "auto" when entries are compared (several, or a comparison)."""
    return settings.timing == "workers" or (settings.timing == "auto" and several)


def check_memory(sources, engines: Sequence[str], batches: Sequence[int], settings: Settings) -> dict[int, str]:
    """{batch: why it cannot fit} for the batches of `sources` this machine's memory cannot hold.

    A lower-bound estimate made before anything is allocated (`bench.measure.memory`): a refused batch
    would certainly fail, or get the process killed under a container memory limit.
    """
    from bench.measure.memory import check_fits

    refused: dict[int, str] = {}
    for src in sources:
        found = check_fits(src, batches, engines, precision=settings.precision, device=settings.device,
                           compile=settings.compile)
        for batch, why in found.items():
            refused.setdefault(batch, why)
    return refused


def _release_memory(settings: Settings) -> None:
    """Give back what a failed allocation left behind, before the next batch."""
    import gc

    gc.collect()
    if settings.device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _failed_records(src, cost: dict[str, Any], engines: list[str], batch_size: int, settings: Settings, error: str,
                    context, command) -> list[dict[str, Any]]:
    """One error record per engine for a batch that was not measured (no engine was opened for it)."""
    from bench.records.builders import latency_record

    return [latency_record(source=src.describe(), model_config=src.config or None, engine=name,
                           engine_info={"backend": name, "version": None, "device": settings.device,
                                        "precision": settings.precision, "providers": None, "options": {}},
                           precision=settings.precision, device=settings.device, batch=batch_size,
                           input_shape=src.input_shape or [], profile=cost, settings=settings.as_record(),
                           load_average=load_average(), error=error, context=context, command=command)
            for name in engines]


def _check_sources(sources, engines: list[str], batches: list[int], settings: Settings) -> None:
    from bench.engines.sources import check_engine_fits

    for src in sources:
        for name in engines:
            check_engine_fits(src, name)
        if src.file_batch is not None and batches != [src.file_batch]:
            raise UsageProblem(f"{src.path} has a fixed batch of {src.file_batch}; measure --batch {src.file_batch}")
    check_environment(engines, settings)


def latency(source, engines: str | Sequence[str] = ("torch",), batches: str | int | Sequence[int] = (1,),
            settings: Settings | None = None, *, on_progress: ProgressFactory | None = None,
            context: dict[str, Any] | None = None, command: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """One "latency" record per engine x batch size of `source`; every raw latency is kept.

    Args:
        source: a zoo name, `nn.Module`, `torchvision:NAME`, `package.module:callable`, ONNX or
            engine path, or a `bench.engines.sources.ModelSource`.
        engines: torch | ort | trt, as a list or 'torch,ort'. Several engines are timed
            interleaved, in `settings.rounds` rounds.
        batches: batch sizes, as a list or '1,8,32'.
        settings: how to measure.
        options: `Settings` fields to override (iters=20, threads=1, ...) and `resolve_source`
            options (`SOURCE_OPTIONS`: input_shape, input_size, in_chans, num_classes, act, checkpoint, name).
        context: study fields added to every record (see `bench.records.builders.STUDY_FIELDS`).

    Memory: before any work, each batch is estimated (`check_memory`). When no batch can fit, an
    EnvironmentProblem says so; in a sweep, a batch that cannot fit, or that fails to allocate
    while it runs (CPU or GPU), gives a record with `error` set and the sweep goes on, keeping the
    batches already measured.
    """
    import contextlib

    import numpy as np

    from bench.engines.sources import resolve_source
    from bench.measure.timing import is_out_of_memory

    engines, batches, settings, source_options = _prepare(engines, batches, settings, options)
    src = resolve_source(source, **source_options)
    _check_sources([src], engines, batches, settings)
    refused = check_memory([src], engines, batches, settings)
    if len(refused) == len(batches):
        raise EnvironmentProblem(refused[min(refused)])
    rng = np.random.default_rng(0)
    costs = [model_costs(src)]
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rbench-measure-") as workdir:
        for batch_size in batches:  # engines per batch: a dynamic-conv net runs a graph made for that batch
            if batch_size in refused:
                records += _failed_records(src, costs[0], engines, batch_size, settings,
                                           f"out of memory at batch {batch_size}, not run: "
                                           f"{getattr(refused[batch_size], 'short', refused[batch_size])}",
                                           context, command)
                continue
            if _in_workers(settings, len(engines) > 1):
                from bench.measure import workers

                timed = workers.measure([(src, costs[0], e, settings.precision) for e in engines], batch_size, settings,
                                        Path(workdir), rng, threshold=0.03, on_progress=on_progress, context=context,
                                        command=command)
                if timed is not None:
                    records += timed[0]
                    continue
            try:
                with contextlib.ExitStack() as stack:
                    entries = _open_entries(stack, [src], costs, engines, settings, Path(workdir), max(batches),
                                            batch_size)
                    runs, state = _timed_phase(entries, batch_size, settings, rng, on_progress)
                    batch_records = _latency_records(entries, runs, batch_size, settings, context, command, state)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is survivable
                if not is_out_of_memory(exc):
                    raise
                _release_memory(settings)
                batch_records = _failed_records(src, costs[0], engines, batch_size, settings,
                                                f"out of memory at batch {batch_size}", context, command)
            records += batch_records
    return records


def compare(sources: Sequence[Any], engines: str | Sequence[str] = ("torch",), batch: int = 1,
            settings: Settings | None = None, *, threshold: float | None = None,
            on_progress: ProgressFactory | None = None, command: str | None = None,
            **options: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Time every source x engine interleaved in rounds; compare each with the first.

    Returns (one "latency" record per source x engine, one "comparison" record per entry after
    the first: its p50 over the first's, with a bootstrap interval over the paired rounds and a
    verdict: faster, slower or no measurable difference beyond `threshold` (default 3%)).
    The same source given twice is timed as two entries (an A/A check).
    """
    import contextlib

    import numpy as np

    from bench.engines.sources import resolve_source
    from bench.measure.stats import DEFAULT_THRESHOLD
    from bench.measure.timing import is_out_of_memory

    if not sources:
        raise UsageProblem("name at least one model to compare")
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    if not 0 <= threshold < 1:
        raise UsageProblem(f"--threshold is a fraction like 0.03, got {threshold}")
    engines, batches, settings, source_options = _prepare(engines, batch, settings, options)
    srcs = [resolve_source(s, **source_options) for s in sources]
    _check_sources(srcs, engines, batches, settings)
    refused = check_memory(srcs, engines, batches, settings)
    if refused:
        raise EnvironmentProblem(refused[batches[0]])
    rng = np.random.default_rng(0)
    costs = [model_costs(s) for s in srcs]
    if _in_workers(settings, True):
        from bench.measure import workers

        with tempfile.TemporaryDirectory(prefix="rbench-compare-") as workdir:
            timed = workers.measure([(s, c, e, settings.precision) for s, c in zip(srcs, costs) for e in engines],
                                    batches[0], settings, Path(workdir), rng, threshold=threshold,
                                    on_progress=on_progress, command=command)
        if timed is not None:
            return timed
    try:
        with tempfile.TemporaryDirectory(prefix="rbench-compare-") as workdir, contextlib.ExitStack() as stack:
            entries = _open_entries(stack, srcs, costs, engines, settings, Path(workdir),
                                    batches[0], batches[0])
            runs, state = _timed_phase(entries, batches[0], settings, rng, on_progress)
            records = _latency_records(entries, runs, batches[0], settings, None, command, state)
    except Exception as exc:  # noqa: BLE001 - one line for an allocation failure outside the timed runs
        if not is_out_of_memory(exc):
            raise
        _release_memory(settings)
        raise EnvironmentProblem(f"out of memory at batch {batches[0]} before timing "
                                 f"({' '.join((str(exc) or type(exc).__name__).split())[:160]}); "
                                 "use a smaller --batch or --input-size") from None
    return records, _comparisons(records, runs, threshold, None, command)


def time_pairs(items: Sequence[tuple[Any, str, str]], batch: int = 1, settings: Settings | None = None, *,
               input_shape: Sequence[int] | None = None, name: str | None = None, workdir: str | Path | None = None,
               threshold: float | None = None, on_progress: ProgressFactory | None = None,
               command: str | None = None, context: dict[str, Any] | None = None
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Time (source, engine, precision) items interleaved in rounds; compare each with the first.

    `compare` times every source on every engine at one precision; a precision ladder needs
    each item its own: torch fp32 on the module, ort int8 on the Q/DQ file, openvino bf16 on the
    fp32 file. Returns (one "latency" record per item, one "comparison" record per item after the
    first, with the bootstrap interval over paired rounds and a verdict), as `compare` does.
    """
    import contextlib

    import numpy as np

    from bench.engines import create_engine
    from bench.engines.sources import resolve_source
    from bench.measure.stats import DEFAULT_THRESHOLD

    if not items:
        raise UsageProblem("name at least one (source, engine, precision) to time")
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    settings = settings or Settings()
    settings.validate()
    batch = parse_batches(batch)[0]
    rng = np.random.default_rng(0)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="rbench-pairs-"))
        resolved = []
        costs_of: dict[Any, dict[str, Any]] = {}
        for spec, engine_name, precision in items:
            src = resolve_source(spec, input_shape=input_shape, **({"name": name} if name and not isinstance(spec, (str, Path)) else {}))
            key = str(spec) if isinstance(spec, (str, Path)) else id(spec)  # items often share a file or module
            if key not in costs_of:
                costs_of[key] = model_costs(src)
            resolved.append((src, costs_of[key], engine_name, precision))
        if _in_workers(settings, True):
            from bench.measure import workers

            timed = workers.measure(resolved, batch, settings, Path(workdir), rng, own_precision=True,
                                    threshold=threshold, on_progress=on_progress, context=context, command=command)
            if timed is not None:
                return timed
        entries = []
        for src, costs, engine_name, precision in resolved:
            engine = create_engine(engine_name, src, device=settings.device, precision=precision, workdir=workdir,
                                   max_batch=batch, batch=batch,
                                   **settings.engine_options(engine_name, layer_macs(costs, batch)))
            stack.enter_context(engine)
            entries.append(_Entry(src, engine_name, engine, costs, engine.describe(),
                                  cached_peak(settings, engine_name), precision=precision))
        runs, state = _timed_phase(entries, batch, settings, rng, on_progress)
        records = _latency_records(entries, runs, batch, settings, context, command, state)
    return records, _comparisons(records, runs, threshold, context, command)


def _comparisons(records: list[dict[str, Any]], runs, threshold: float, context, command) -> list[dict[str, Any]]:
    """One "comparison" record per timed entry after the first: its p50 over the first's, with the
    bootstrap interval over the paired rounds and a verdict (none when the first entry failed)."""
    from bench.measure.stats import RATIO_CI_METHOD, ratio_interval, verdict
    from bench.records.builders import comparison_record

    if runs[0] is None:
        return []
    comparisons = []
    for record, run in zip(records[1:], runs[1:]):
        if run is None:
            continue
        ratio, low, high = ratio_interval(runs[0]["round_latencies_ms"], run["round_latencies_ms"])
        comparisons.append(comparison_record(
            records[0], record, ratio=ratio, low=low, high=high, ci_method=RATIO_CI_METHOD,
            verdict=verdict(low, high, threshold), threshold=threshold, rounds=run["rounds"], interleaved=True,
            context=context, command=command, timing=IN_PROCESS))
    return comparisons


def throughput_records(latency_records: Sequence[dict[str, Any]], *, context: dict[str, Any] | None = None,
                       command: str | None = None) -> list[dict[str, Any]]:
    """Per engine, a "throughput" record: the batch with the best img/s of a sweep, with the sweep."""
    from bench.records.builders import throughput_record

    engines = list(dict.fromkeys(r["engine"] for r in latency_records))
    return [throughput_record([r for r in latency_records if r["engine"] == e], context=context, command=command)
            for e in engines]


def throughput(source, engines: str | Sequence[str] = ("torch",), batches: str | int | Sequence[int] = (1, 8, 32),
               settings: Settings | None = None, **kwargs: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(latency records of the sweep, one "throughput" record per engine) of `source` over `batches`.

    Takes the keyword arguments of `latency`.
    """
    sweep = latency(source, engines, batches, settings, **kwargs)
    return sweep, throughput_records(sweep, context=kwargs.get("context"), command=kwargs.get("command"))
