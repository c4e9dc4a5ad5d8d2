"""The measuring commands: engines, latency, throughput, flops, device, compare.

Measurement functions (`measure_model`, `sweep_throughput`, `flops_record`) build records and
print nothing; the click commands below print tables and append the records to results/.
torch, onnxruntime and TensorRT are imported inside functions so `rbench --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from bench.errors import EnvironmentProblem, UsageProblem

MEASUREMENT_HELP = """
\b
What a measurement means:
  latency     one synchronous inference of a batch whose input is already where the
              engine reads it (host->device copies excluded unless --include-transfers);
              each timed run ends with a device synchronize. Warm-up runs (--warmup N
              and/or --warmup-s S) are never timed. Every run is kept; the table shows
              p50/p90/p99, mean, std and the coefficient of variation (CV; a warning
              above 10% says the machine was noisy).
  throughput  images per second over the timed window at that batch size.
  GFLOP/s     FLOPs per image (torch flop counter, 2 per MAC) x batch / p50 latency;
              '% peak' divides it by this machine's measured matmul peak (`rbench device`).
  memory      peak torch.cuda.max_memory_allocated on a GPU; the process's peak RSS on CPU.
"""


# -- parsing ---------------------------------------------------------------------------------
def parse_batches(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; zero, negative or non-integer sizes are a usage problem."""
    sizes = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            size = int(part)
        except ValueError:
            raise UsageProblem(f"batch sizes are positive integers like 1,8,32, got {part!r}") from None
        if size < 1:
            raise UsageProblem(f"batch size must be at least 1, got {size}")
        sizes.append(size)
    return list(dict.fromkeys(sizes))


def parse_engines(text: str) -> list[str]:
    from bench.engines import ALIASES, ENGINES

    names = []
    for part in str(text).split(","):
        key = ALIASES.get(part.strip().lower(), part.strip().lower())
        if key not in ENGINES:
            raise UsageProblem(f"unknown engine {part.strip()!r}; choose from {', '.join(ENGINES)} (comma-separated)")
        names.append(key)
    return list(dict.fromkeys(names))


@dataclass
class Settings:
    """How to measure: everything a latency run depends on besides the model and engine."""

    precision: str = "fp32"
    device: str = "cpu"
    warmup: int = 10
    warmup_s: float = 0.0
    iters: int | None = None
    duration_s: float | None = None
    include_transfers: bool = False
    threads: int | None = None
    input_size: int | None = None
    in_chans: int = 3
    num_classes: int = 10
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
        if self.input_size is not None and self.input_size < 1:
            raise UsageProblem(f"--input-size must be positive, got {self.input_size}")
        if self.in_chans < 1:
            raise UsageProblem(f"--in-chans must be positive, got {self.in_chans}")

    def input_shape(self, model_name: str) -> tuple[int, int, int]:
        import nets

        size = self.input_size or nets.model_entry(model_name).input_size
        return (self.in_chans, size, size)

    def engine_options(self, engine: str) -> dict[str, Any]:
        options: dict[str, Any] = {"num_classes": self.num_classes, "threads": self.threads}
        if engine == "torch":
            options.update(compile=self.compile, channels_last=self.channels_last, cuda_graph=self.cuda_graph)
        elif engine == "ort":
            options.update(provider=self.provider, graph_optimization=self.graph_optimization)
        elif engine == "trt":
            options.update(cuda_graph=self.cuda_graph)
        return options


def check_environment(engines: list[str], settings: Settings) -> None:
    """Fail before any work when this machine cannot serve the request (exit 1) or it is malformed (2)."""
    settings.validate()
    if settings.provider is not None and "ort" not in engines:
        raise UsageProblem("--provider applies to --engine ort")
    if settings.device == "cuda" or "trt" in engines:
        if "trt" in engines:
            from bench.engines.trt_engine import import_tensorrt

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


# -- measuring (returns records, prints nothing) ---------------------------------------------
def model_profile(model, input_shape) -> dict[str, Any]:
    """params, MACs and FLOPs per image from bench.flops (None for each when it is unavailable)."""
    from bench.flops import profile_model

    report = profile_model(model, tuple(input_shape), batch=1)
    return {"params": int(report.params), "macs": int(report.macs), "flops": int(report.flops),
            "counters_warning": report.warning}


def _peak(settings: Settings, engine: str) -> dict[str, Any] | None:
    """The cached device peak when `rbench device` has measured it; never measured here (that takes seconds)."""
    from bench.device import cache_path

    device = "cuda" if settings.device == "cuda" or engine == "trt" else "cpu"
    path = cache_path(device)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def measure_model(model_name: str, engines: list[str], batches: list[int], settings: Settings,
                  on_progress=None, kind: str = "latency") -> list[dict[str, Any]]:
    """One latency record per engine x batch size. An out-of-memory batch gives a record with `error`."""
    import numpy as np
    import torch

    import nets
    from bench.device import peak_flops_for
    from bench.engines import create_engine
    from bench.results import make_record
    from bench.stats import summarize
    from bench.timing import is_out_of_memory, measure_latency

    input_shape = settings.input_shape(model_name)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    model = nets.create_model(model_name, num_classes=settings.num_classes, in_chans=settings.in_chans).eval()
    profile = model_profile(model, input_shape)
    rng = np.random.default_rng(0)
    records = []
    for engine_name in engines:
        peak = _peak(settings, engine_name)
        peak_flops = peak_flops_for(peak, settings.precision)
        # torch times the very module profiled; ort/trt export the registry model (cached by shape).
        source = {"model": model} if engine_name == "torch" else {"model_name": model_name}
        options = settings.engine_options(engine_name)
        if engine_name == "trt":
            options["max_batch"] = max(batches)  # the optimization profile must cover the sweep
        engine = create_engine(engine_name, **source, input_shape=input_shape, device=settings.device,
                               precision=settings.precision, **options)
        with engine:
            info = engine.describe()
            for batch_size in batches:
                batch = rng.standard_normal((batch_size, *input_shape), dtype=np.float32)
                base = dict(model=model_name, model_config=getattr(model, "config", None), engine=engine_name,
                            engine_info=info, precision=settings.precision, device=engine.device, batch=batch_size,
                            input_shape=list(input_shape), params=profile["params"], macs=profile["macs"],
                            flops=profile["flops"], settings=_settings_record(settings))
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
                    records.append(make_record(kind, **base, error=f"out of memory at batch {batch_size}"))
                    continue
                summary = summarize(run["latencies_ms"], batch_size, profile["flops"], peak_flops)
                records.append(make_record(
                    kind, **base, **summary,
                    peak_flops_s=peak_flops,
                    peak_source="rbench device (cached)" if peak else "not measured: run `rbench device`",
                    iters=run["iters"], warmup_iters=run["warmup_iters"], warmup_s=round(run["warmup_s"], 4),
                    timed_wall_s=round(run["timed_wall_s"], 4), include_transfers=run["include_transfers"],
                    timer=run["timer"], memory_peak_bytes=run["memory_peak_bytes"], peak_memory_source=run["memory_kind"],
                    latencies_ms=[round(v, 5) for v in run["latencies_ms"]],
                    load_average_after=_load_average(),
                ))
    return records


def _load_average() -> list[float] | None:
    """The 1/5/15-minute load average after a run: on a shared machine it says how busy it was."""
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _settings_record(settings: Settings) -> dict[str, Any]:
    return {k: v for k, v in asdict(settings).items() if v is not None and v is not False}


def throughput_records(latency_records: list[dict[str, Any]], command: str | None = None) -> list[dict[str, Any]]:
    """Per engine, the batch with the best img/s over the sweep, with the sweep itself."""
    from bench.results import make_record

    out = []
    engines = list(dict.fromkeys(r["engine"] for r in latency_records))
    for engine in engines:
        rows = [r for r in latency_records if r["engine"] == engine]
        ok = [r for r in rows if not r.get("error")]
        sweep = [{"batch": r["batch"], "throughput_img_s": r.get("throughput_img_s"),
                  "latency_ms_p50": r.get("latency_ms_p50"), "error": r.get("error")} for r in rows]
        first = rows[0]
        fields = {k: first[k] for k in ("model", "model_config", "engine", "engine_info", "precision", "device",
                                        "input_shape", "params", "macs", "flops", "settings")}
        if ok:
            best = max(ok, key=lambda r: r["throughput_img_s"])
            fields.update(batch=best["batch"], throughput_img_s=best["throughput_img_s"],
                          latency_ms_p50=best["latency_ms_p50"], flops_s_achieved=best.get("flops_s_achieved"),
                          percent_of_peak=best.get("percent_of_peak"), memory_peak_bytes=best.get("memory_peak_bytes"),
                          peak_flops_s=best.get("peak_flops_s"), load_average_after=best.get("load_average_after"))
        else:
            fields.update(batch=None, throughput_img_s=None, error="every batch size failed")
        out.append(make_record("throughput", **fields, sweep=sweep, command=command))
    return out


def flops_record(model_name: str, input_shape, num_classes: int = 10, detail: bool = False) -> dict[str, Any]:
    """params, MACs (thop), FLOPs (torch flop counter) of one model, as a "flops" record."""
    import nets
    from bench.results import make_record

    try:
        from bench.flops import profile_model
    except ImportError as exc:
        raise EnvironmentProblem("bench.flops is not available in this checkout") from exc
    model = nets.create_model(model_name, num_classes=num_classes, in_chans=input_shape[0]).eval()
    report = profile_model(model, tuple(input_shape), batch=1, detail=detail)
    fields: dict[str, Any] = dict(model=model_name, model_config=getattr(model, "config", None),
                                  input_shape=list(input_shape), batch=1, params=int(report.params),
                                  macs=int(report.macs), flops=int(report.flops),
                                  flops_per_mac=report.flops / report.macs if report.macs else None,
                                  agrees=bool(report.agrees), warning=report.warning,
                                  units={"macs": "multiply-accumulates (thop)", "flops": "FLOPs (torch FlopCounterMode)"})
    if detail:
        macs_by_module = getattr(report, "macs_by_module", None) or {}
        fields["per_module"] = {str(k): {"flops": int(v), "macs": macs_by_module.get(k)}
                                for k, v in (report.flops_by_module or {}).items()}
    return make_record("flops", **fields)


# -- presentation ------------------------------------------------------------------------------
def _fmt(value, spec: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _gflops(value) -> str:
    return "-" if value is None else f"{value / 1e9:.1f}"


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def _console(stderr: bool = False):
    """A rich console; wide when writing to a file or pipe, so tables keep one line per row."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200)


def _stderr_console():
    return _console(stderr=True)


def _progress(total_iters: int | None):
    """A rich progress bar on stderr for long runs; a no-op when stderr is not a terminal."""
    from contextlib import nullcontext

    if not sys.stderr.isatty() or (total_iters is not None and total_iters < 200):
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} runs"),
                    TimeElapsedColumn(), console=_stderr_console(), transient=True)


def _progress_callback(progress, settings: Settings):
    if progress is None:
        return None
    total = settings.iters

    def factory(engine: str, batch: int):
        task = progress.add_task(f"{engine} batch {batch}", total=total)

        def update(done: int, elapsed: float) -> None:
            progress.update(task, completed=done)

        return update

    return factory


def latency_table(records: list[dict[str, Any]], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("engine", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "CV", "img/s", "GFLOP/s",
                "% peak", "mem MiB"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for r in records:
        if r.get("error"):
            table.add_row(r["engine"], str(r["batch"]), r["error"], *[""] * 9)
            continue
        cv = f"{100 * r['latency_cv']:.1f}%" + (" !" if r["high_variation"] else "")
        table.add_row(r["engine"], str(r["batch"]), _fmt(r["latency_ms_p50"]), _fmt(r["latency_ms_p90"]),
                      _fmt(r["latency_ms_p99"]), _fmt(r["latency_ms_mean"]), _fmt(r["latency_ms_std"]), cv,
                      _fmt(r["throughput_img_s"], ".1f"), _gflops(r.get("flops_s_achieved")),
                      _fmt(r.get("percent_of_peak"), ".1f"), _mib(r.get("memory_peak_bytes")))
    return table


def _warn_noise(records: list[dict[str, Any]]) -> None:
    noisy = [r for r in records if r.get("high_variation")]
    for r in noisy:
        click.echo(f"rbench: warning: {r['model']} {r['engine']} batch {r['batch']}: CV {100 * r['latency_cv']:.0f}% (> 10%): "
                   "the machine was busy or clocks changed; rerun with more --iters or --warmup-s", err=True)
    if records and not any(r.get("peak_flops_s") for r in records if not r.get("error")):
        click.echo("rbench: note: no measured device peak yet, so no '% peak'; run `rbench device` once", err=True)


def _emit(records: list[dict[str, Any]], out: Path, as_json: bool) -> None:
    from bench.results import append_record, to_json

    for record in records:
        append_record(record, out)
        if as_json:
            click.echo(to_json(record))


# -- shared options ---------------------------------------------------------------------------
def _measure_options(fn):
    options = [
        click.option("--engine", "engine", default="torch", show_default=True,
                     help="torch | ort | trt, or several comma-separated (torch,ort)."),
        click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "bf16"]),
                     help="fp16/bf16: autocast (torch) or a half-precision export (ort, trt)."),
        click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"])),
        click.option("--warmup", default=10, show_default=True, type=int, help="Untimed warm-up runs."),
        click.option("--warmup-s", default=0.0, show_default=True, type=float,
                     help="Keep warming up at least this many seconds."),
        click.option("--iters", type=int, default=None, help="Timed runs per batch size [default: 50]."),
        click.option("--duration", "duration_s", type=float, default=None,
                     help="Time runs for this many seconds instead of --iters."),
        click.option("--include-transfers", is_flag=True, help="Time host->device input and device->host output copies too."),
        click.option("--threads", type=int, default=None, help="Intra-op threads (torch and onnxruntime) [default: all cores]."),
        click.option("--input-size", type=int, default=None, help="Image side [default: the model's design size]."),
        click.option("--in-chans", type=int, default=3, show_default=True),
        click.option("--num-classes", type=int, default=10, show_default=True),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (compiled during warm-up, untimed)."),
        click.option("--channels-last", is_flag=True, help="NHWC memory format for torch."),
        click.option("--cuda-graph", is_flag=True, help="Replay a captured CUDA graph (torch, trt; --device cuda)."),
        click.option("--provider", default=None,
                     help="onnxruntime execution provider: cpu | cuda | tensorrt [default: by --device]."),
        click.option("--graph-optimization", default="all", show_default=True,
                     type=click.Choice(["disable", "basic", "extended", "all"]), help="onnxruntime graph optimization level."),
        click.option("--json", "as_json", is_flag=True, help="Also print each record as one JSON line on stdout."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True,
                     help="Results folder; records append to <kind>.jsonl there."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _settings(kw: dict[str, Any], default_iters: int | None = None) -> Settings:
    iters = kw["iters"]
    if iters is None and kw["duration_s"] is None:
        iters = default_iters
    return Settings(precision=kw["precision"], device=kw["device"], warmup=kw["warmup"], warmup_s=kw["warmup_s"],
                    iters=iters, duration_s=kw["duration_s"], include_transfers=kw["include_transfers"],
                    threads=kw["threads"], input_size=kw["input_size"], in_chans=kw["in_chans"],
                    num_classes=kw["num_classes"], compile=kw["compile_"], channels_last=kw["channels_last"],
                    cuda_graph=kw["cuda_graph"], provider=kw["provider"], graph_optimization=kw["graph_optimization"])


def _run(model: str, engines: list[str], batches: list[int], settings: Settings, kind: str = "latency"):
    import nets

    nets.model_entry(model)  # an unknown name fails here, before any work
    check_environment(engines, settings)
    expected = settings.iters * len(batches) * len(engines) if settings.iters else None
    with _progress(expected) as progress:
        return measure_model(model, engines, batches, settings, on_progress=_progress_callback(progress, settings),
                             kind=kind)


# -- commands -----------------------------------------------------------------------------------
@click.command("engines")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def engines_command(as_json: bool) -> None:
    """Which engines, execution providers and devices work on this machine, and why the others don't."""
    from rich.markup import escape
    from rich.table import Table

    from bench.engines import engine_availability

    rows = engine_availability()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="rbench engines on this machine", title_justify="left")
    for col in ("engine", "device", "provider", "works", "why"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["engine"], r["device"], r["provider"] or "-", "[green]yes[/]" if r["available"] else "[red]no[/]",
                      escape(r["reason"]))
    _console().print(table)


@click.command("latency", epilog=MEASUREMENT_HELP)
@click.argument("model")
@click.option("--batch", default="1", show_default=True, help="Batch sizes, comma-separated (1,8,32).")
@_measure_options
def latency_command(model: str, batch: str, **kw: Any) -> None:
    """Latency percentiles of MODEL per engine, precision and batch size; one record per run.

    \b
    Examples:
      rbench latency resnet20 --engine torch,ort --batch 1,8
      rbench latency resnet50 --engine trt --precision fp16 --batch 1,32 --duration 10
    """

    engines = parse_engines(kw.pop("engine"))
    batches = parse_batches(batch)
    settings = _settings(kw, default_iters=50)
    records = _run(model, engines, batches, settings)
    shape = "x".join(map(str, settings.input_shape(model)))
    if not kw["as_json"]:
        title = f"{model} {shape} {settings.precision} on {settings.device} (warm-up {settings.warmup}, " \
                f"{settings.iters or str(settings.duration_s) + ' s'} timed runs)"
        _console().print(latency_table(records, title))
    _warn_noise(records)
    _emit(records, kw["out"], kw["as_json"])


@click.command("throughput", epilog=MEASUREMENT_HELP)
@click.argument("model")
@click.option("--batch", default="1,8,32", show_default=True, help="Batch sizes to sweep, comma-separated.")
@_measure_options
def throughput_command(model: str, batch: str, **kw: Any) -> None:
    """Best images/s of MODEL over a batch sweep, per engine (one "throughput" record per engine)."""
    from rich.table import Table

    engines = parse_engines(kw.pop("engine"))
    batches = parse_batches(batch)
    settings = _settings(kw, default_iters=20)
    latency = _run(model, engines, batches, settings)
    records = throughput_records(latency)
    if not kw["as_json"]:
        console = _console()
        console.print(latency_table(latency, f"{model}: batch sweep ({settings.precision}, {settings.device})"))
        table = Table(title="best throughput", title_justify="left")
        for col in ("engine", "best batch", "img/s", "p50 ms", "GFLOP/s", "% peak"):
            table.add_column(col, justify="left" if col == "engine" else "right")
        for r in records:
            table.add_row(r["engine"], str(r["batch"]), _fmt(r["throughput_img_s"], ".1f"), _fmt(r.get("latency_ms_p50")),
                          _gflops(r.get("flops_s_achieved")), _fmt(r.get("percent_of_peak"), ".1f"))
        console.print(table)
    _warn_noise(latency)
    _emit(records, kw["out"], kw["as_json"])


@click.command("flops")
@click.argument("model")
@click.option("--input-size", type=int, default=None, help="Image side [default: the model's design size].")
@click.option("--in-chans", type=int, default=3, show_default=True)
@click.option("--num-classes", type=int, default=10, show_default=True)
@click.option("--detail", is_flag=True, help="Per-module FLOPs breakdown.")
@click.option("--json", "as_json", is_flag=True, help="Also print the record as one JSON line on stdout.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True)
def flops_command(model: str, input_size: int | None, in_chans: int, num_classes: int, detail: bool, as_json: bool,
                  out: Path) -> None:
    """Params, MACs (thop) and FLOPs (torch flop counter) of MODEL for one image.

    MACs are multiply-accumulates (what papers and torchvision call "FLOPs"); FLOPs count 2
    per MAC and include functional ops thop misses. A warning says when FLOPs != 2 x MACs.
    """
    from rich.table import Table

    import nets

    entry = nets.model_entry(model)
    if input_size is not None and input_size < 1:
        raise UsageProblem(f"--input-size must be positive, got {input_size}")
    if in_chans < 1:
        raise UsageProblem(f"--in-chans must be positive, got {in_chans}")
    shape = (in_chans, input_size or entry.input_size, input_size or entry.input_size)
    record = flops_record(model, shape, num_classes=num_classes, detail=detail)
    if not as_json:
        console = _console()
        table = Table(title=f"{model} at {'x'.join(map(str, shape))}, batch 1", title_justify="left")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_column("unit")
        table.add_row("params", f"{record['params'] / 1e6:.3f} M", "parameters")
        table.add_row("MACs", f"{record['macs'] / 1e6:.2f} M", "multiply-accumulates (thop)")
        table.add_row("FLOPs", f"{record['flops'] / 1e6:.2f} M", "floating-point ops (FlopCounterMode)")
        table.add_row("FLOPs / MAC", _fmt(record["flops_per_mac"], ".3f"), "2.000 when they agree")
        console.print(table)
        if detail and record.get("per_module"):
            per = Table(title="FLOPs by module (top two levels; the record has every module)", title_justify="left")
            for col in ("module", "MFLOPs", "MMACs", "share"):
                per.add_column(col, justify="left" if col == "module" else "right")
            for name, value in record["per_module"].items():
                if name.count(".") > 1:
                    continue
                macs = value.get("macs")
                per.add_row(name or "(whole net)", f"{value['flops'] / 1e6:.2f}", _fmt(macs / 1e6 if macs else None, ".2f"),
                            f"{100 * value['flops'] / max(record['flops'], 1):.1f}%")
            console.print(per)
    if record.get("warning"):
        click.echo(f"rbench: warning: {record['warning']}", err=True)
    _emit([record], out, as_json)


@click.command("device")
@click.option("--refresh", is_flag=True, help="Measure again instead of using the cached peak.")
@click.option("--budget-s", default=1.0, show_default=True, type=float, help="Seconds per peak measurement.")
@click.option("--json", "as_json", is_flag=True, help="Also print the record as one JSON line on stdout.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True)
def device_command(refresh: bool, budget_s: float, as_json: bool, out: Path) -> None:
    """Describe this machine and measure its peak: matmul FLOP/s (fp32; fp16/bf16 on a GPU) and copy bandwidth.

    The peak is cached per machine (under $RBENCH_CACHE or ~/.cache/rbench) and latency records
    use it for '% of peak'; --refresh measures again. On a CPU it takes a few seconds.
    """
    import torch
    from rich.table import Table

    from bench.device import cache_path, describe_device, device_peak
    from bench.results import make_record

    if budget_s <= 0:
        raise UsageProblem(f"--budget-s must be positive, got {budget_s}")
    machine = describe_device()
    peaks = {"cpu": device_peak("cpu", refresh=refresh, budget_s=budget_s)}
    if torch.cuda.is_available():
        peaks["cuda"] = device_peak("cuda", refresh=refresh, budget_s=budget_s)
    record = make_record("device", slug=machine["slug"], peaks=peaks,
                         cache={d: str(cache_path(d)) for d in peaks})
    if not as_json:
        console = _console()
        table = Table(title=f"this machine: {machine['slug']}", title_justify="left")
        table.add_column("")
        table.add_column("value")
        gpu = machine.get("gpu") or {}
        rows = [("CPU", f"{machine['cpu']} ({machine['cores_usable']} usable of {machine['cores_logical']} cores)"),
                ("memory", f"{machine['memory_gib']} GiB"), ("OS", machine["os"]),
                ("GPU", f"{gpu['name']} (CC {gpu['compute_capability']}, {gpu['memory_gib']} GiB)" if gpu else "none"),
                ("driver / CUDA", f"{gpu.get('driver')} / {gpu.get('cuda')}" if gpu else "-")]
        rows += [(k, v) for k, v in machine["versions"].items() if v]
        for device, peak in peaks.items():
            for key, value in peak.items():
                if key.startswith("peak_flops_s_") and isinstance(value, (int, float)):
                    rows.append((f"{device} peak {key.rsplit('_', 1)[1]}", f"{value / 1e9:.1f} GFLOP/s"))
            for library, value in (peak.get("peak_flops_s_fp32_by_library") or {}).items():
                rows.append((f"  fp32 matmul in {library}", f"{value / 1e9:.1f} GFLOP/s"))
            rows.append((f"{device} copy bandwidth", f"{peak['memory_bandwidth_bytes_s'] / 1e9:.1f} GB/s"))
            rows.append((f"{device} peak source", ("cached " if peak.get("cached") else "measured ") + peak.get("measured_at", "")))
        for key, value in rows:
            table.add_row(key, str(value))
        console.print(table)
    _emit([record], out, as_json)


@click.command("compare", epilog=MEASUREMENT_HELP)
@click.argument("models", nargs=-1, required=True)
@click.option("--batch", default=1, show_default=True, type=int, help="Batch size of every latency run.")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (for results/*.md) instead of a rich one.")
@_measure_options
def compare_command(models: tuple[str, ...], batch: int, markdown: bool, **kw: Any) -> None:
    """One table of params, MACs, latency p50/p99, throughput and % of peak for MODELS x engines.

    \b
    Example:
      rbench compare resnet20 plain20 resnet56 plain56 --engine torch,ort --markdown
    """
    import nets

    engines = parse_engines(kw.pop("engine"))
    batches = parse_batches(str(batch))
    settings = _settings(kw, default_iters=30)
    for model in models:
        nets.model_entry(model)
    check_environment(engines, settings)
    records = []
    for model in models:
        records += _run(model, engines, batches, settings)
    rows = compare_rows(records)
    if markdown:
        click.echo(compare_markdown(rows, records, settings, batch))
    elif not kw["as_json"]:
        from rich.table import Table

        table = Table(title=f"compare at batch {batch} ({settings.precision}, {settings.device})", title_justify="left")
        for col in COMPARE_COLUMNS:
            table.add_column(col, justify="left" if col in ("model", "engine") else "right")
        for row in rows:
            table.add_row(*row)
        _console().print(table)
    _warn_noise(records)
    _emit(records, kw["out"], kw["as_json"] and not markdown)


COMPARE_COLUMNS = ("model", "engine", "params (M)", "MACs (M)", "p50 ms", "p99 ms", "CV", "img/s", "GFLOP/s", "% peak")


def compare_rows(records: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for r in records:
        params = _fmt(r["params"] / 1e6 if r.get("params") else None, ".3f")
        macs = _fmt(r["macs"] / 1e6 if r.get("macs") else None, ".1f")
        if r.get("error"):
            rows.append((r["model"], r["engine"], params, macs, r["error"], "", "", "", "", ""))
            continue
        rows.append((r["model"], r["engine"], params, macs, _fmt(r["latency_ms_p50"]), _fmt(r["latency_ms_p99"]),
                     f"{100 * r['latency_cv']:.1f}%", _fmt(r["throughput_img_s"], ".1f"), _gflops(r.get("flops_s_achieved")),
                     _fmt(r.get("percent_of_peak"), ".1f")))
    return rows


def compare_markdown(rows, records, settings: Settings, batch: int) -> str:
    """A Markdown table with the machine and the exact command above it."""
    from bench.results import current_command, describe_machine

    machine = describe_machine()
    gpu = machine.get("gpu")
    threads = settings.threads or f"default ({machine['cores_usable']} usable cores)"
    lines = [
        f"<!-- made by: {current_command()} -->",
        f"Machine: {machine['cpu']}, {machine['cores_usable']} cores" + (f", {gpu['name']}" if gpu else "") +
        f"; torch {machine['versions']['torch']}, onnxruntime {machine['versions']['onnxruntime']}.",
        f"Batch {batch}, {settings.precision}, {settings.device}; warm-up {settings.warmup} runs, "
        f"{settings.iters or str(settings.duration_s) + ' s of'} timed runs; intra-op threads: {threads}. "
        "Latency excludes host-device copies" + (" (included here)." if settings.include_transfers else "."),
        "",
        "| " + " | ".join(COMPARE_COLUMNS) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COMPARE_COLUMNS))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    loads = [r["load_average_after"][0] for r in records if r.get("load_average_after")]
    if loads:
        lines += ["", f"1-minute load average after each run: {min(loads):.1f} to {max(loads):.1f} on "
                      f"{machine['cores_usable']} cores (above the core count, other work shared the CPU)."]
    return "\n".join(lines)
