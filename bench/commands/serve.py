"""`rbench serve`: one MLPerf LoadGen scenario (or a Server peak search) of a model on an engine."""

from __future__ import annotations

from pathlib import Path

import click

from bench.scenarios.serve.settings import SCENARIOS, ServeConfig


def _help(name: str) -> str:
    return ServeConfig.__dataclass_fields__[name].metadata["help"]


@click.command("serve")
@click.argument("model")
@click.option("--scenario", type=click.Choice(list(SCENARIOS)), default="singlestream", show_default=True,
              help="LoadGen's scenario: one sample at a time, fixed-size queries back to back, Poisson arrivals at "
                   "--target-qps under a latency bound, or every sample at once.")
@click.option("--engine", default="ort", show_default=True, help="torch | ort | openvino | trt.")
@click.option("--precision", default="fp32", show_default=True, help="fp32 | fp16 | bf16 | int8 (as the engine allows).")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Serve trained weights; their data set is served (default: random weights on --dataset).")
@click.option("--dataset", default=None, help="Samples to serve: digits | fashion-mnist | cifar10 | imagefolder:PATH "
                                              "(test split). [default: the checkpoint's, else digits]")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with the data files (default: the data set's usual place).")
@click.option("--eval-transform", default=None, metavar="imagenet|imagenet:RESIZE:CROP",
              help="torchvision's evaluation preprocessing for an image folder.")
@click.option("--samples", type=click.IntRange(min=2), default=None, help="Serve at most N test images (stratified).")
@click.option("--target-qps", type=float, default=None, help=_help("target_qps"))
@click.option("--latency-bound-ms", type=float, default=None, help=_help("latency_bound_ms"))
@click.option("--samples-per-query", type=int, default=None, help=_help("samples_per_query"))
@click.option("--min-duration", "min_duration_s", type=float, default=None, help=_help("min_duration_s"))
@click.option("--min-queries", type=int, default=None, help=_help("min_queries"))
@click.option("--user-conf", default=None, help=_help("user_conf") + " Lines name MODEL or *.")
@click.option("--max-batch", type=int, default=None, help=_help("max_batch"))
@click.option("--batch-timeout-ms", type=float, default=None, help=_help("batch_timeout_ms"))
@click.option("--workers", type=int, default=1, show_default=True, help=_help("workers"))
@click.option("--threads", type=int, default=None, help=_help("threads"))
@click.option("--accuracy", is_flag=True, help=_help("accuracy"))
@click.option("--find-peak", is_flag=True, help=_help("find_peak") + " Each step is its own LoadGen run.")
@click.option("--search-duration", "search_duration_s", type=float, default=10.0, show_default=True,
              help=_help("search_duration_s"))
@click.option("--search-steps", type=int, default=10, show_default=True, help=_help("search_steps"))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for LoadGen's logs (default: results/serve/MODEL-ENGINE-SCENARIO).")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Where the serve record is appended (serve.jsonl).")
@click.option("--no-save", is_flag=True, help="Do not append the record.")
@click.option("-q", "--quiet", is_flag=True, help="No stage lines.")
def serve_command(model: str, scenario: str, engine: str, precision: str, device: str, checkpoint: Path | None,
                  dataset: str | None, data_root: Path | None, eval_transform: str | None, samples: int | None,
                  out: Path | None, results_dir: Path, no_save: bool, quiet: bool, **settings) -> None:
    """Serve MODEL under MLPerf LoadGen in one scenario and report LoadGen's verdict and latencies.

    \b
    Defaults are MLPerf's (10-minute runs); shorten with --min-duration / --min-queries, and the
    record says the run is then not valid under MLPerf's rules. LoadGen's own files
    (mlperf_log_summary.txt, _detail.txt, _accuracy.json) stay in --out.
    \b
      rbench serve resnet20 --scenario server --engine ort --find-peak
      rbench serve resnet20 --scenario offline --min-duration 10 --max-batch 32
      rbench serve resnet20 --checkpoint runs/r20/best.pt --accuracy
    """
    from bench.records.io import append_record
    from bench.scenarios.serve import serve

    config = ServeConfig(scenario=scenario, **settings)
    out = out or Path("results") / "serve" / f"{Path(model).stem}-{engine}-{scenario}"
    echo = (lambda text: None) if quiet else (lambda text: click.echo(f"serve: {text}", err=True))
    record = serve(model, engine, config, out=out, checkpoint=checkpoint, dataset=dataset, data_root=data_root,
                   eval_transform=eval_transform, samples=samples, precision=precision, device=device, on_stage=echo)
    _print(record)
    if not no_save:
        click.echo(f"record appended to {append_record(record, results_dir)}", err=True)


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _print(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{record['model']} on {record['engine']}: {record['scenario']} ({record['mode']})")
    for column in ("result", "samples/s", "p50 ms", "p90 ms", "p99 ms", "early-stop ms", "queries", "MLPerf-valid"):
        table.add_column(column, justify="right")
    rows = [(step["result"], step["samples_per_s"], None, None, step["latency_ms_p99"], None, step["queries"], None,
             f"{step['target_qps']:g} QPS") for step in record.get("peak_search") or []]
    rows.append((record["result"], record["samples_per_s"], record["latency_ms_p50"], record["latency_ms_p90"],
                 record["latency_ms_p99"], record["early_stopping_latency_ms"], record["queries"],
                 "yes" if record["mlperf_valid"] else "no", "final"))
    if rows[:-1]:
        table.add_column("step")
    for result, sps, p50, p90, p99, early, queries, valid, label in rows:
        cells = [result or "-", _fmt(sps, ".1f"), _fmt(p50), _fmt(p90), _fmt(p99), _fmt(early), _fmt(queries, "d"),
                 valid or ""]
        table.add_row(*cells, *([label] if rows[:-1] else []))
    console = Console(width=160)
    console.print(table)
    if record["result_reasons"]:
        console.print("LoadGen: " + "; ".join(record["result_reasons"]))
    if record["shortened"]:
        console.print("not valid under MLPerf's rules: " + "; ".join(record["shortened"]))
    if record.get("peak_search"):
        console.print(f"peak: {_fmt(record['peak_qps'], 'g')} QPS VALID; next below "
                      f"{_fmt(record['peak_valid_below'], 'g')}, INVALID above at {_fmt(record['peak_invalid_above'], 'g')}")
    if record.get("top1") is not None:
        console.print(f"top-1 {record['top1']:.4f} ({record['samples']} images), top-5 {record['top5']:.4f}"
                      + (f", agreement with {record['reference_engine']} {record['agreement']:.2%}"
                         if record.get("agreement") is not None else ""))
    console.print(f"LoadGen's logs: {record['loadgen_dir']}")
