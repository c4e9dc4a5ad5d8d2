"""The measuring commands: engines, latency, throughput, flops, device, compare.

They parse options, call the measurement library (`bench.measure.run`), print tables and append the
records to results/; no measuring happens here. torch, onnxruntime and TensorRT are imported
inside functions so `rbench --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from bench.commands._options import SECONDS, SECONDS_OR_ZERO, THREADS, Number, count
from bench.commands.compare_table import _fmt, _p50_with_interval
from bench.engines.sources import SOURCE_HELP
from bench.errors import EnvironmentProblem, UsageProblem
from bench.measure.settings import TORCH_ONE_THREAD_LAYER_MACS

MEASUREMENT_HELP = f"""
\b
MODEL is {SOURCE_HELP}.
An ONNX file's input name, shape and dtype come from the file (--input-size only where it
leaves height/width symbolic); a TensorRT engine's from the engine.

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
  memory      on a GPU: TensorRT's context + IO buffers + engine, onnxruntime's device
              memory taken (free bytes before and after), torch's max_memory_allocated;
              on CPU the process's peak RSS. The record's peak_memory_source names it.
              Before any run, each batch's memory need is estimated (a lower bound: input,
              weights, the activations one op holds); a batch that cannot fit is refused,
              and in a sweep recorded as out of memory, as is one that fails to allocate.
"""


# -- presentation ------------------------------------------------------------------------------
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


def _progress_callback(progress, settings):
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
    for col in ("engine", "batch", "p50 ms (95% CI)", "p90 ms", "p99 ms", "mean ms", "std ms", "CV", "img/s",
                "GFLOP/s", "% peak", "mem MiB"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for r in records:
        if r.get("error"):
            table.add_row(r["engine"], str(r["batch"]), r["error"], *[""] * 9)
            continue
        cv = f"{100 * r['latency_cv']:.1f}%" + (" !" if r["high_variation"] else "")
        table.add_row(r["engine"], str(r["batch"]), _p50_with_interval(r), _fmt(r["latency_ms_p90"]),
                      _fmt(r["latency_ms_p99"]), _fmt(r["latency_ms_mean"]), _fmt(r["latency_ms_std"]), cv,
                      _fmt(r["throughput_img_s"], ".1f"), _gflops(r.get("flops_s_achieved")),
                      _fmt(r.get("percent_of_peak"), ".1f"), _mib(r.get("memory_peak_bytes")))
    return table


def _warn_noise(records: list[dict[str, Any]]) -> None:
    contended = {(r["model"], r["engine"], r["batch"]): r["contention"]["reasons"] for r in records
                 if (r.get("contention") or {}).get("contended")}
    for (model, engine, batch), reasons in contended.items():
        click.echo(f"rbench: warning: {model} {engine} batch {batch}: other work competed for the CPU "
                   f"({'; '.join(reasons)}); these figures are likely slow (records say contended; --require-quiet "
                   "refuses such runs)", err=True)
    from bench.measure.intervals import describe_periods

    for r in records:
        if r.get("slow_periods"):
            click.echo(f"rbench: warning: {r['model']} {r['engine']} batch {r['batch']}: its rounds ran at more than "
                       f"one speed ({describe_periods(r['period_modes_ms'], r['period_rounds'])}): the p50 mixes "
                       "them; ratios pair rounds timed together", err=True)
    for r in records:
        note = thread_note(r.get("thread_check") or {})
        if note:
            click.echo(f"rbench: note: {r['model']} {r['engine']} batch {r['batch']}: {note}", err=True)
    noisy = [r for r in records if r.get("high_variation")]
    for r in noisy:
        click.echo(f"rbench: warning: {r['model']} {r['engine']} batch {r['batch']}: CV {100 * r['latency_cv']:.0f}% (> 10%): "
                   "the machine was busy or clocks changed; rerun with more --iters or --warmup-s", err=True)
    if records and not any(r.get("peak_flops_s") for r in records if not r.get("error")):
        click.echo("rbench: note: no measured device peak yet, so no '% peak'; run `rbench device` once", err=True)


def thread_note(check: dict[str, Any]) -> str | None:
    """What the thread check (`bench.measure.workers.thread_check`) tells a user, or None: whether more threads
    than one were measurably faster, either way round the default went."""
    if "verdict" not in check:
        return None
    threads, other = check["threads"], check["other_threads"]
    ci = check["ratio_ci"]
    measured = (f"{other} thread{'s' if other > 1 else ''}: p50 {_fmt(check['other_p50_ms'])} ms, "
                f"{check['ratio_other_over_default']:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}] the default's, timed in the "
                "same workers")
    if threads == 1:  # torch's default for a small batch
        if check["more_threads_faster"]:
            return (f"{other} threads were faster than the default 1 here ({measured}); "
                    f"--threads {other} times with them")
        return (f"1 thread, the default for a batch this small: {other} threads were not measurably faster "
                f"({measured})")
    if check["more_threads_faster"]:
        return None
    than = "slower than" if check["verdict"] == "faster" else "not measurably faster than"  # the twin's verdict
    return (f"the default {threads} threads are {than} 1 here ({measured}); --threads 1 leaves the other cores free")


def _emit(records: list[dict[str, Any]], out: Path, as_json: bool) -> None:
    from bench.records.io import append_record, to_json

    for record in records:
        append_record(record, out)
        if as_json:
            click.echo(to_json(record))


def check_out_folder(out: Path, filenames: tuple[str, ...] = (), *, what: str = "--out",
                     fix: str = "choose another --out", error: type[Exception] = UsageProblem) -> None:
    """Fail before any measuring when records could not be written to `out`: one line, nothing created.

    `out` must be a folder or creatable as one (its nearest existing ancestor a writable folder),
    and none of `filenames` in it may be a folder. Records are appended in place under a lock
    (`bench.atomic.append_line`) to files the folder holds or gets, so a writable folder is what
    matters. A path of the
    wrong kind raises `error` (exit 2 for an option); a folder this user cannot write, an
    EnvironmentProblem (exit 1).
    """
    out = Path(out)

    def exists(path: Path) -> bool:
        try:
            return path.exists()
        except OSError:  # e.g. no permission to look inside a parent
            return True

    if exists(out) and not out.is_dir():
        raise error(f"{what} {out} is a file, not a folder; {fix}")
    probe = out if exists(out) else out.absolute()
    while not exists(probe) and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise error(f"{what} {out} cannot be made: {probe} is a file, not a folder; {fix}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EnvironmentProblem(f"{what} {out} is not writable: this user cannot write in {probe}; {fix}")
    for name in filenames:
        if (out / name).is_dir():
            raise error(f"{what} {out}: {out / name} is a folder, so records cannot be appended to it; {fix}")


def _check_measured(records: list[dict[str, Any]]) -> None:
    """Nothing measured (every batch of every engine out of memory): one line and exit 1, nothing written."""
    if records and all(r.get("error") for r in records):
        raise EnvironmentProblem(f"nothing could be measured: {records[0]['error']}; use a smaller --batch or "
                                 "--input-size")


# -- shared options ---------------------------------------------------------------------------
def _measure_options(fn):
    options = [
        click.option("--engine", "engine", default="torch", show_default=True,
                     help="torch | ort | openvino | trt, or several comma-separated (torch,ort)."),
        click.option("--precision", default="fp32", show_default=True,
                     type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
                     help="fp16/bf16: autocast (torch), a half-precision export (ort, trt) or a compile setting "
                          "(openvino bf16). int8: an int8 .onnx file from `rbench export --precision int8` "
                          "(ort, openvino, trt)."),
        click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"])),
        click.option("--warmup", default=10, show_default=True, type=count(0), help="Untimed warm-up runs."),
        click.option("--warmup-s", default=0.0, show_default=True, type=SECONDS_OR_ZERO,
                     help="Keep warming up at least this many seconds."),
        click.option("--iters", type=count(1), default=None, help="Timed runs per batch size [default: 50; throughput 20; "
                     "compare 30]."),
        click.option("--duration", "duration_s", type=SECONDS, default=None,
                     help="Time runs for this many seconds instead of --iters."),
        click.option("--rounds", type=count(1), default=10, show_default=True,
                     help="Several models or engines are timed interleaved: this many rounds, each in a new random "
                          "order, the iterations split among them."),
        click.option("--timing", type=click.Choice(["auto", "workers", "in-process"]), default=None,
                     help="Where to time: fresh worker processes per entry, or this process. auto: workers for "
                          "compare and several engines (a process can settle into a slow thread mode for its whole "
                          "life, which rounds inside it cannot see), in-process for one engine [default: auto, or $RBENCH_TIMING]."),
        click.option("--workers", type=count(1), default=4, show_default=True,
                     help="Worker processes per entry at least; more follow until --precision-target is met."),
        click.option("--precision-target", type=Number(0, 1, min_open=True, max_open=True), default=0.03,
                     show_default=True, help="Add workers until every ratio's 95%% interval is within +/- this."),
        click.option("--max-time", "max_time_s", type=SECONDS, default=60.0, show_default=True,
                     help="...or until this many seconds of worker timing have passed (the record says which)."),
        click.option("--require-quiet", is_flag=True,
                     help="Refuse to measure while other work competes for the CPU (load, stolen time, a "
                          "calibration kernel), and keep nothing if it starts during the run."),
        click.option("--include-transfers", is_flag=True, help="Time host->device input and device->host output copies too."),
        click.option("--threads", type=THREADS, default=None,
                     help="Intra-op threads (torch and onnxruntime), at most the usable cores [default: every "
                          "core, but torch on a CPU takes 1 thread for a batch of at most "
                          f"{TORCH_ONE_THREAD_LAYER_MACS / 1e6:g}M multiply-accumulates per conv/linear layer; timed in "
                          "workers at batch 1, each "
                          "engine's first entry is also timed at the other count (1 thread, or every core) and a "
                          "note says when more threads were not measurably faster]."),
        click.option("--input-size", type=count(1), default=None,
                     help="Image side [default: a zoo net's design size; 224 for torchvision; an ONNX file's own]."),
        click.option("--in-chans", type=count(1), default=None, help="Input channels [default: 3, or the file's own]."),
        click.option("--num-classes", type=count(1), default=None, help="Classifier outputs [default: 10 zoo, 1000 torchvision]."),
        click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Weights for a PyTorch model source (.pt, loaded weights-only)."),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (compiled during warm-up, untimed)."),
        click.option("--channels-last", is_flag=True, help="NHWC memory format for torch."),
        click.option("--cuda-graph", is_flag=True, help="Replay a captured CUDA graph (torch, trt; --device cuda)."),
        click.option("--tf32", is_flag=True,
                     help="Let fp32 use TF32 on the GPU (torch, onnxruntime CUDA, TensorRT) [default: strict fp32 "
                          "everywhere]."),
        click.option("--device-id", type=count(0), default=None,
                     help="CUDA device onnxruntime runs on (--engine ort --device cuda) [default: 0]."),
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


def _settings(kw: dict[str, Any], default_iters: int | None):
    """The measurement Settings from the shared options (popped from `kw`)."""
    from bench.measure.run import Settings

    iters = kw.pop("iters")
    if iters is None and kw["duration_s"] is None and default_iters is not None:
        iters = default_iters
    # With the default threads, batch-1 timing in workers also times one thread and says when it is as fast.
    return Settings(thread_check=kw["threads"] is None, precision=kw.pop("precision"), device=kw.pop("device"),
                    warmup=kw.pop("warmup"), warmup_s=kw.pop("warmup_s"), iters=iters, duration_s=kw.pop("duration_s"),
                    include_transfers=kw.pop("include_transfers"), threads=kw.pop("threads"),
                    compile=kw.pop("compile_"), channels_last=kw.pop("channels_last"), cuda_graph=kw.pop("cuda_graph"),
                    provider=kw.pop("provider"), graph_optimization=kw.pop("graph_optimization"), rounds=kw.pop("rounds"),
                    require_quiet=kw.pop("require_quiet"), tf32=kw.pop("tf32"), device_id=kw.pop("device_id"),
                    workers=kw.pop("workers"), precision_target=kw.pop("precision_target"),
                    max_time_s=kw.pop("max_time_s"), **({"timing": kw.pop("timing")} if kw["timing"] else {}))


def _source_options(kw: dict[str, Any]) -> dict[str, Any]:
    return {"input_size": kw["input_size"], "in_chans": kw["in_chans"], "num_classes": kw["num_classes"],
            "checkpoint": kw["checkpoint"]}


def _run(models: list[str], engines: list[str], batches: list[int], settings, kw: dict[str, Any]) -> list[dict[str, Any]]:
    """Latency records of every model (resolved and checked before any is measured)."""
    from bench.engines.sources import resolve_source
    from bench.measure.run import check_environment, latency

    sources = [resolve_source(m, **_source_options(kw)) for m in models]  # a bad source fails before any work
    check_environment(engines, settings)
    expected = settings.iters * len(batches) * len(engines) * len(models) if settings.iters else None
    records = []
    with _progress(expected) as progress:
        for source in sources:
            records += latency(source, engines, batches, settings, on_progress=_progress_callback(progress, settings))
    return records


def _measure_batches(model: str, batch: str, kw: dict[str, Any], *, default_iters: int, kind: str):
    """(latency records, Settings) of MODEL at every --batch on every --engine: the options checked, the
    results folder checked for `<kind>.jsonl`, then measured; nothing measured at all is one line, exit 1."""
    from bench.measure.run import parse_batches, parse_engines

    engines = parse_engines(kw.pop("engine"))
    batches = parse_batches(batch)
    settings = _settings(kw, default_iters=default_iters)
    check_out_folder(kw["out"], (f"{kind}.jsonl",))
    records = _run([model], engines, batches, settings, kw)
    _check_measured(records)
    return records, settings


def _shape_text(records: list[dict[str, Any]]) -> str:
    return "x".join(map(str, records[0]["input_shape"])) if records else "?"


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
        warned = "".join(f"\n[yellow]warning:[/] {escape(w)}" for w in r.get("warnings") or ())
        table.add_row(r["engine"], r["device"], r["provider"] or "-", "[green]yes[/]" if r["available"] else "[red]no[/]",
                      escape(r["reason"]) + warned)
    _console().print(table)
    for r in rows:  # mismatches also as plain lines on stderr, where scripts and logs see them
        for warning in r.get("warnings") or ():
            click.echo(f"warning: {r['engine']}: {warning}", err=True)


@click.command("latency", epilog=MEASUREMENT_HELP)
@click.argument("model", metavar="MODEL")
@click.option("--batch", default="1", show_default=True, help="Batch sizes, comma-separated (1,8,32).")
@_measure_options
def latency_command(model: str, batch: str, **kw: Any) -> None:
    """Latency percentiles of MODEL per engine, precision and batch size; one record per run.

    \b
    Examples:
      rbench latency resnet20 --engine torch,ort --batch 1,8
      rbench latency exports/resnet20/resnet20.onnx --engine ort
      rbench latency torchvision:mobilenet_v2 --input-size 224 --engine torch,ort
      rbench latency mypackage.models:build_net --input-size 64
      rbench latency resnet50 --engine trt --precision fp16 --batch 1,32 --duration 10
    """
    records, settings = _measure_batches(model, batch, kw, default_iters=50, kind="latency")
    shape = _shape_text(records)
    if not kw["as_json"]:
        title = f"{model} {shape} {settings.precision} on {settings.device} (warm-up {settings.warmup}, " \
                f"{settings.iters or str(settings.duration_s) + ' s'} timed runs)"
        _console().print(latency_table(records, title))
    _warn_noise(records)
    _emit(records, kw["out"], kw["as_json"])


@click.command("throughput", epilog=MEASUREMENT_HELP)
@click.argument("model", metavar="MODEL")
@click.option("--batch", default="1,8,32", show_default=True, help="Batch sizes to sweep, comma-separated.")
@_measure_options
def throughput_command(model: str, batch: str, **kw: Any) -> None:
    """Best images/s of MODEL over a batch sweep, per engine (one "throughput" record per engine)."""
    from rich.table import Table

    from bench.measure.run import throughput_records

    latency, settings = _measure_batches(model, batch, kw, default_iters=20, kind="throughput")
    records = throughput_records(latency)
    if not kw["as_json"]:
        console = _console()
        console.print(latency_table(latency, f"{model} {_shape_text(latency)}: batch sweep ({settings.precision}, "
                                             f"{settings.device})"))
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
@click.argument("model", metavar="MODEL")
@click.option("--input-size", type=count(1), default=None,
              help="Image side [default: a zoo net's design size; 224 for torchvision; an ONNX file's own].")
@click.option("--in-chans", type=count(1), default=None, help="Input channels [default: 3, or the file's own].")
@click.option("--num-classes", type=count(1), default=None,
              help="Classifier outputs [default: 10 zoo, 1000 torchvision].")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Weights for a PyTorch model source (counts do not depend on them).")
@click.option("--detail", is_flag=True, help="Per-module (PyTorch) or per-op-type (ONNX) FLOPs breakdown.")
@click.option("--json", "as_json", is_flag=True, help="Also print the record as one JSON line on stdout.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True)
def flops_command(model: str, input_size: int | None, in_chans: int | None, num_classes: int | None,
                  checkpoint: Path | None, detail: bool, as_json: bool, out: Path) -> None:
    """Params, MACs and FLOPs of MODEL for one image.

    \b
    MODEL is a zoo name, torchvision:NAME, package.module:callable or a .onnx file.
    MACs are multiply-accumulates (what papers and torchvision call "FLOPs"); FLOPs count 2
    per MAC. A PyTorch model is counted twice, independently: MACs by thop (which also counts
    norms, activations and pools) and FLOPs by torch's flop counter (convolutions and matrix
    products, including functional ones thop may miss); a warning says when FLOPs != 2 x MACs
    and which way. An ONNX file is counted from its graph: Conv/Gemm/MatMul MACs after shape
    inference.
    """
    from rich.table import Table

    from bench.measure.run import profile

    check_out_folder(out, ("flops.jsonl",))
    record = profile(model, detail=detail, input_size=input_size, in_chans=in_chans, num_classes=num_classes,
                     checkpoint=checkpoint)
    if not as_json:
        console = _console()
        counters = record["counters"]
        table = Table(title=f"{record['model']} at {'x'.join(map(str, record['input_shape']))}, batch 1",
                      title_justify="left")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_column("unit")
        table.add_row("params", f"{record['params'] / 1e6:.3f} M", "parameters, all of them")
        table.add_row("MACs", f"{record['macs'] / 1e6:.2f} M", f"multiply-accumulates ({counters['macs']})")
        table.add_row("FLOPs", f"{record['flops'] / 1e6:.2f} M", f"floating-point ops ({counters['flops']})")
        table.add_row("FLOPs / MAC", _fmt(record["flops_per_mac"], ".3f"), "2.000 when the counters agree")
        console.print(table)
        if detail and record.get("per_module"):
            per = Table(title="FLOPs by module (top two levels; the record has every one)", title_justify="left")
            for col in ("module / op", "MFLOPs", "MMACs", "share"):
                per.add_column(col, justify="left" if col == "module / op" else "right")
            for name, value in record["per_module"].items():
                if name.count(".") > 1:
                    continue
                macs = value.get("macs")
                per.add_row(name or "(whole net)", f"{value['flops'] / 1e6:.2f}", _fmt(macs / 1e6 if macs else None, ".2f"),
                            f"{100 * value['flops'] / max(record['flops'], 1):.1f}%")
            console.print(per)
    if record.get("counters_warning"):
        click.echo(f"rbench: warning: {record['counters_warning']}", err=True)
    _emit([record], out, as_json)


@click.command("device")
@click.option("--refresh", is_flag=True, help="Measure again instead of using the cached peak.")
@click.option("--budget-s", default=1.0, show_default=True, type=SECONDS, help="Seconds per peak measurement.")
@click.option("--json", "as_json", is_flag=True, help="Also print the record as one JSON line on stdout.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True)
def device_command(refresh: bool, budget_s: float, as_json: bool, out: Path) -> None:
    """Describe this machine and measure its peak: matmul FLOP/s (fp32; fp16/bf16 on a GPU) and copy bandwidth.

    The peak is cached per machine (under $RBENCH_CACHE or ~/.cache/rbench) and latency records
    use it for '% of peak'; --refresh measures again. On a CPU it takes a few seconds.
    """
    import torch
    from rich.table import Table

    from bench.measure.device import cache_path, describe_device, device_peak
    from bench.records.builders import device_record

    check_out_folder(out, ("device.jsonl",))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:  # a peak that cannot be cached is never used: say so before measuring it
        check_out_folder(cache_path(device).parent, (cache_path(device).name,), what="the cache folder",
                         fix="set RBENCH_CACHE to a writable folder", error=EnvironmentProblem)
    machine = describe_device()
    peaks = {device: device_peak(device, refresh=refresh, budget_s=budget_s) for device in devices}
    for device, peak in peaks.items():
        if peak.get("cache_error"):
            raise EnvironmentProblem(f"measured the {device} peak but {peak['cache_error']}; latency records read "
                                     "the peak from that cache: set RBENCH_CACHE to a writable folder and run "
                                     "`rbench device` again")
    record = device_record(slug=machine["slug"], peaks=peaks, cache={d: str(cache_path(d)) for d in peaks})
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
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--batch", default=1, show_default=True, type=count(1), help="Batch size of every latency run.")
@click.option("--threshold", default=0.03, show_default=True, type=Number(0, 1, min_open=True, max_open=True),
              help="A ratio whose 95% interval stays within 1 +/- this is 'no measurable difference'.")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (for results/*.md) instead of a rich one.")
@_measure_options
def compare_command(models: tuple[str, ...], batch: int, threshold: float, markdown: bool, **kw: Any) -> None:
    """Time MODELS x engines interleaved and compare each with the first, with intervals and verdicts.

    \b
    Every entry runs in fresh worker processes (--workers at least, more until the ratio's
    interval is within --precision-target or --max-time has passed), one worker per entry at a
    time, timed in --rounds rounds in a new random order each, so drift and other work hit all
    entries alike. The ratio is the entry's median latency over the first entry's, with a
    hierarchical bootstrap 95% interval (workers, then rounds); worker pairs whose own ratios
    settle into separate values make the verdict "unstable" with both. The verdict is faster /
    slower when the whole interval lies beyond 1 +/- --threshold, else "no measurable
    difference". Naming a model twice is an A/A check.

    \b
    Example:
      rbench compare resnet20 plain20 resnet56 plain56 --engine torch,ort --markdown
    """
    # In workers each round lasts a tenth of a second unless --iters or --duration says otherwise.
    from dataclasses import replace

    from bench.commands.compare_table import COMPARE_COLUMNS, compare_markdown, compare_rows
    from bench.measure.run import compare

    settings = _settings(kw, default_iters=None)
    if settings.timing == "in-process" and settings.iters is None and settings.duration_s is None:
        settings = replace(settings, iters=30)
    check_out_folder(kw["out"], ("latency.jsonl", "comparison.jsonl"))
    expected = settings.iters * len(models) * len(kw["engine"].split(",")) if settings.iters else None
    with _progress(expected) as progress:
        records, comparisons = compare(list(models), kw.pop("engine"), batch, settings, threshold=threshold,
                                       on_progress=_progress_callback(progress, settings), **_source_options(kw))
    _check_measured(records)
    rows = compare_rows(records, comparisons)
    if markdown:
        click.echo(compare_markdown(rows, records, settings, batch))
    elif not kw["as_json"]:
        from rich.table import Table

        table = Table(title=f"compare at batch {batch} ({settings.precision}, {settings.device}; "
                            f"{settings.rounds} interleaved rounds; ratios against the first row)", title_justify="left")
        for col in COMPARE_COLUMNS:
            table.add_column(col, justify="left" if col in ("model", "engine", "verdict") else "right")
        for row in rows:
            table.add_row(*row)
        _console().print(table)
    _warn_noise(records)
    _emit(records + comparisons, kw["out"], kw["as_json"] and not markdown)
