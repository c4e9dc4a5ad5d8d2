"""The measurement library: latency, throughput and FLOPs of any model source, returned as records.

No click and no printing here: `bench/commands/` parse options, call these and print tables.

    >>> import bench
    >>> records = bench.latency("resnet20", engines=["torch", "ort"], batches=[1, 8], iters=20)
    >>> [(r["engine"], r["batch"], r["latency_ms_p50"]) for r in records]

A source is anything `bench.sources.resolve_source` takes: a zoo name, an `nn.Module`,
`torchvision:NAME`, `package.module:callable`, an `.onnx` file or a TensorRT engine file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.errors import EnvironmentProblem, UsageProblem

#: Timed runs per batch when neither iters nor a duration is given.
DEFAULT_ITERS = 50
#: on_progress(engine, batch) -> on_iteration(done, elapsed_s) or None.
ProgressFactory = Callable[[str, int], Callable[[int, float], None] | None]


@dataclass
class Settings:
    """How to measure: everything a latency run depends on besides the model and the engines."""

    precision: str = "fp32"
    device: str = "cpu"
    warmup: int = 10
    warmup_s: float = 0.0
    iters: int | None = None
    duration_s: float | None = None
    include_transfers: bool = False
    threads: int | None = None
    compile: bool = False
    channels_last: bool = False
    cuda_graph: bool = False
    provider: str | None = None
    graph_optimization: str = "all"

    def validate(self) -> None:
        if self.warmup < 0 or self.warmup_s < 0:
            raise UsageProblem("warm-up must be zero or more runs / seconds")
        if self.iters is not None and self.duration_s is not None:
            raise UsageProblem("give --iters or --duration, not both")
        if self.iters is not None and self.iters < 1:
            raise UsageProblem(f"--iters must be at least 1, got {self.iters}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise UsageProblem(f"--duration must be positive, got {self.duration_s}")
        if self.threads is not None and self.threads < 1:
            raise UsageProblem(f"--threads must be at least 1, got {self.threads}")

    def engine_options(self, engine: str) -> dict[str, Any]:
        """The options `engine` takes, from these settings (`create_engine` refuses any other)."""
        if engine == "torch":
            return {"threads": self.threads, "compile": self.compile, "channels_last": self.channels_last,
                    "cuda_graph": self.cuda_graph}
        if engine == "ort":
            return {"threads": self.threads, "provider": self.provider, "graph_optimization": self.graph_optimization}
        return {"cuda_graph": self.cuda_graph}

    def as_record(self) -> dict[str, Any]:
        """The settings a record keeps: only those that are set."""
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}


def settings_from(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    """`settings` (default: Settings()) with keyword overrides; an unknown name is a UsageProblem."""
    names = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UsageProblem(f"unknown measurement setting(s) {', '.join(map(repr, unknown))}; "
                           f"choose from {', '.join(sorted(names))}")
    return dataclasses.replace(settings or Settings(), **overrides)


def check_environment(engines: Sequence[str], settings: Settings) -> None:
    """Fail before any work when this machine cannot serve the request (exit 1) or it is malformed (2)."""
    settings.validate()
    if settings.provider is not None and "ort" not in engines:
        raise UsageProblem("--provider applies to --engine ort")
    if settings.device == "cuda" or "trt" in engines:
        if "trt" in engines:
            from export.tensorrt import import_tensorrt

            import_tensorrt()
        from bench.engines.torch_engine import check_cuda

        check_cuda()
    elif settings.precision != "fp32":
        from bench.engines.torch_engine import cpu_precision_support

        ok, why = cpu_precision_support(settings.precision)
        if not ok:
            raise EnvironmentProblem(f"{settings.precision} on CPU: {why}")
    if "ort" in engines:
        from bench.engines.ort_engine import resolve_provider

        if settings.precision == "bf16":
            raise UsageProblem("onnxruntime runs fp32 or fp16 models; bf16 is for --engine torch")
        resolve_provider(settings.provider, settings.device)
    if settings.cuda_graph and settings.device != "cuda" and "trt" not in engines:
        raise UsageProblem("--cuda-graph needs --device cuda")


def parse_engines(engines: str | Sequence[str]) -> list[str]:
    """'torch,ort' or ['torch', 'onnxruntime'] -> ['torch', 'ort']; an unknown name is a UsageProblem."""
    from bench.engines import ALIASES, ENGINES

    parts = engines.split(",") if isinstance(engines, str) else list(engines)
    names = []
    for part in parts:
        key = ALIASES.get(str(part).strip().lower(), str(part).strip().lower())
        if key not in ENGINES:
            raise UsageProblem(f"unknown engine {str(part).strip()!r}; choose from {', '.join(ENGINES)} (comma-separated)")
        names.append(key)
    if not names:
        raise UsageProblem(f"name at least one engine: {', '.join(ENGINES)}")
    return list(dict.fromkeys(names))


def parse_batches(batches: str | int | Sequence[int]) -> list[int]:
    """'1,8,32', 8 or [1, 8] -> [1, 8, 32]; zero, negative or non-integer sizes are a UsageProblem."""
    parts = str(batches).split(",") if isinstance(batches, (str, int)) else list(batches)
    sizes = []
    for part in parts:
        try:
            size = int(str(part).strip())
        except ValueError:
            raise UsageProblem(f"batch sizes are positive integers like 1,8,32, got {str(part).strip()!r}") from None
        if size < 1:
            raise UsageProblem(f"batch size must be at least 1, got {size}")
        sizes.append(size)
    return list(dict.fromkeys(sizes))


# -- what a model costs ------------------------------------------------------------------------
def model_costs(source) -> dict[str, Any]:
    """params, MACs, FLOPs per image and the counters behind them, for any resolved source.

    A PyTorch model: thop (MACs) and torch's flop counter (FLOPs), which check each other. An
    ONNX file: the graph's Conv/Gemm/MatMul multiply-accumulates after shape inference. A
    TensorRT engine: unknown (count its ONNX file instead).
    """
    if source.has_module:
        from bench.flops import profile_model

        report = profile_model(source.module(), source.input_shape, batch=1)
        return {"params": int(report.params), "macs": int(report.macs), "flops": int(report.flops),
                "counters_agree": bool(report.agrees), "counters_warning": report.warning,
                "counters": {"macs": "thop", "flops": "torch.utils.flop_counter", "params": "torch"}, "report": report}
    if source.kind == "onnx":
        from bench.onnx_flops import count_onnx_flops

        try:
            report = count_onnx_flops(source.path, batch=1, input_shape=source.input_shape)
        except ValueError as exc:
            raise UsageProblem(f"{source.path}: {exc}") from None
        warning = None if report.complete else \
            f"shapes of {', '.join(report.uncounted)} could not be inferred; those ops are not counted"
        return {"params": report.params, "macs": report.macs, "flops": report.flops, "counters_agree": None,
                "counters_warning": warning, "counters": {"macs": "ONNX graph", "flops": "ONNX graph (2 per MAC)",
                                                          "params": "ONNX initializers"}, "report": report}
    return {"params": None, "macs": None, "flops": None, "counters_agree": None,
            "counters_warning": "a TensorRT engine does not expose its arithmetic; count its ONNX file",
            "counters": {}, "report": None}


def profile(source, *, detail: bool = False, context: dict[str, Any] | None = None, command: str | None = None,
            **source_options: Any) -> dict[str, Any]:
    """A "flops" record: params, MACs and FLOPs of one image of `source`.

    `source_options` go to `resolve_source` (input_size, in_chans, num_classes, act, checkpoint,
    input_shape). With `detail`, a per-module breakdown (PyTorch) or per-op-type one (ONNX).
    """
    from bench.records import flops_record
    from bench.sources import resolve_source

    src = resolve_source(source, **source_options)
    if src.kind == "trt":
        raise UsageProblem(f"{src.path} is a TensorRT engine, which does not expose its arithmetic; count its ONNX file")
    per_module = None
    if detail and src.has_module:
        from bench.flops import profile_model

        report = profile_model(src.module(), src.input_shape, batch=1, detail=True)
        per_module = {str(k): {"flops": int(v), "macs": report.macs_by_module.get(k)}
                      for k, v in (report.flops_by_module or {}).items()}
    costs = model_costs(src)
    if detail and src.kind == "onnx":
        per_module = {op: {"flops": int(v), "macs": int(v) // 2} for op, v in costs["report"].by_op_type.items()}
    return flops_record(source=src.describe(), model_config=src.config or None, input_shape=src.input_shape,
                        params=costs["params"], macs=costs["macs"], flops=costs["flops"],
                        counters_agree=costs["counters_agree"], counters_warning=costs["counters_warning"],
                        counters=costs["counters"], context=context, command=command, per_module=per_module)


# -- latency and throughput ---------------------------------------------------------------------
def cached_peak(settings: Settings, engine: str) -> dict[str, Any] | None:
    """The device peak `rbench device` measured and cached; never measured here (that takes seconds)."""
    from bench.device import cache_path

    device = "cuda" if settings.device == "cuda" or engine == "trt" else "cpu"
    path = cache_path(device)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_average() -> list[float] | None:
    """The 1/5/15-minute load average: on a shared machine it says how busy it was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


#: Keyword arguments of `latency`/`throughput` that describe the source rather than the measurement.
SOURCE_OPTIONS = ("input_shape", "input_size", "in_chans", "num_classes", "act", "checkpoint", "name")


def latency(source, engines: str | Sequence[str] = ("torch",), batches: str | int | Sequence[int] = (1,),
            settings: Settings | None = None, *, on_progress: ProgressFactory | None = None,
            context: dict[str, Any] | None = None, command: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """One "latency" record per engine x batch size of `source`; every raw latency is kept.

    Args:
        source: a zoo name, `nn.Module`, `torchvision:NAME`, `package.module:callable`, ONNX or
            engine path, or a `bench.sources.ModelSource`.
        engines: torch | ort | trt, as a list or 'torch,ort'.
        batches: batch sizes, as a list or '1,8,32'.
        settings: how to measure.
        options: `Settings` fields to override (iters=20, threads=1, ...) and `resolve_source`
            options (`SOURCE_OPTIONS`: input_shape, input_size, in_chans, num_classes, act, checkpoint, name).
        context: study fields added to every record (see `bench.records.STUDY_FIELDS`).

    A batch that runs out of memory gives a record with `error` set and the sweep goes on.
    """
    import numpy as np
    import torch

    from bench.device import peak_flops_for
    from bench.engines import create_engine
    from bench.records import latency_record
    from bench.sources import check_engine_fits, resolve_source
    from bench.stats import summarize
    from bench.timing import is_out_of_memory, measure_latency

    engines, batches = parse_engines(engines), parse_batches(batches)
    source_options = {k: options.pop(k) for k in SOURCE_OPTIONS if k in options}
    settings = settings_from(settings, options)
    if settings.iters is None and settings.duration_s is None:
        settings = dataclasses.replace(settings, iters=DEFAULT_ITERS)
    src = resolve_source(source, **source_options)
    for name in engines:
        check_engine_fits(src, name)
    check_environment(engines, settings)
    if src.file_batch is not None and batches != [src.file_batch]:
        raise UsageProblem(f"{src.path} has a fixed batch of {src.file_batch}; measure --batch {src.file_batch}")
    costs = model_costs(src)
    rng = np.random.default_rng(0)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rbench-measure-") as workdir:
        for engine_name in engines:
            peak = cached_peak(settings, engine_name)
            peak_flops = peak_flops_for(peak, settings.precision)
            engine = create_engine(engine_name, src, device=settings.device, precision=settings.precision,
                                   workdir=Path(workdir), max_batch=max(batches), **settings.engine_options(engine_name))
            with engine:
                info = engine.describe()
                for batch_size in batches:
                    base = dict(source=src.describe(), model_config=src.config or None, engine=engine_name,
                                engine_info=info, precision=settings.precision, device=engine.device,
                                batch=batch_size, input_shape=engine.input_shape, profile=costs,
                                settings=settings.as_record(), peak_flops_s=peak_flops,
                                peak_source="rbench device (cached)" if peak else "not measured: run `rbench device`",
                                context=context, command=command)
                    batch = rng.standard_normal((batch_size, *engine.input_shape), dtype=np.float32)
                    # torch.compile recompiles for a new batch shape: keep that inside the untimed warm-up.
                    warmup = max(settings.warmup, 2) if settings.compile and engine_name == "torch" else settings.warmup
                    try:
                        run = measure_latency(engine, batch, warmup=warmup, warmup_s=settings.warmup_s,
                                              iters=settings.iters, duration_s=settings.duration_s,
                                              include_transfers=settings.include_transfers,
                                              on_iteration=on_progress(engine_name, batch_size) if on_progress else None)
                    except Exception as exc:  # noqa: BLE001 - only out-of-memory is survivable
                        if not is_out_of_memory(exc):
                            raise
                        if settings.device == "cuda":
                            torch.cuda.empty_cache()
                        records.append(latency_record(**base, load_average=load_average(),
                                                      error=f"out of memory at batch {batch_size}"))
                        continue
                    summary = summarize(run["latencies_ms"], batch_size, costs["flops"], peak_flops)
                    records.append(latency_record(**base, run=run, summary=summary, load_average=load_average()))
    return records


def throughput_records(latency_records: Sequence[dict[str, Any]], *, context: dict[str, Any] | None = None,
                       command: str | None = None) -> list[dict[str, Any]]:
    """Per engine, a "throughput" record: the batch with the best img/s of a sweep, with the sweep."""
    from bench.records import throughput_record

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
