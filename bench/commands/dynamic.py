"""`rbench dynamic`: dynamic vs static convolution timed interleaved (latency per batch and engine, training speed)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bench.commands._options import THREADS, count
from bench.commands.measure import check_out_folder


@click.command("dynamic")
@click.option("--batch", "batches", default="1,8", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--engine", "engines", default="torch,ort", show_default=True, help="Engines, comma-separated.")
@click.option("--threads", type=THREADS, default=1, show_default=True,
              help="Intra-op threads of every engine and of the training steps.")
@click.option("--warmup", type=count(0), default=10, show_default=True, help="Untimed runs per entry.")
@click.option("--iters", type=count(1), default=60, show_default=True,
              help="Timed runs per entry at batch 1 (split over the rounds); larger batches get iters / batch, at least 2 a round.")
@click.option("--rounds", type=count(2), default=10, show_default=True, help="Interleaved rounds.")
@click.option("--train-batch", type=count(1), default=64, show_default=True,
              help="Training batch of the training-speed ratio (0 steps: --train-steps 0 skips it).")
@click.option("--train-steps", type=count(0), default=2, show_default=True,
              help="Optimizer steps per net per round for the training-speed ratio (0: skip it).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results/dynamic-conv"),
              show_default=True, help="Folder for latency.jsonl, comparison.jsonl, cost_split.jsonl, training.json, parameter_reads.json, "
                   "table.md.")
def dynamic_command(batches: str, engines: str, threads: int, warmup: int, iters: int, rounds: int,
                    train_batch: int, train_steps: int, out: Path) -> None:
    """Time dy_resnet20 / resnet20 and dy_vgg11 / vgg11_bn (small_input, 32x32) interleaved: p50 ratios per batch
    and engine with 95% intervals and verdicts, the training images/s ratio, each dynamic net's cost split, and
    how long reading each net's parameters once takes (a floor under any form of the dynamic net).

    \b
    Each pair is timed together in --rounds rounds (bench.measure.run.time_pairs), per batch and engine; onnxruntime
    runs each net exported for that batch (the dynamic net's fast fixed-batch graph). Training: one Adam step at
    --train-batch on random data per call, the two nets alternating round by round. The cost split times each
    DynamicConv2d's attention, aggregation and convolution apart (bench.scenarios.dynamic_cost), eager torch.
    """
    from bench.measure.run import parse_batches, parse_engines
    from bench.records.io import append_record, current_command
    from bench.scenarios.dynamic import compare_dynamic, dynamic_markdown

    batch_list, engine_list = parse_batches(batches), parse_engines(engines)
    check_out_folder(out, ("latency.jsonl", "comparison.jsonl", "cost_split.jsonl"))
    command = current_command()
    result = compare_dynamic(batch_list, engine_list, threads=threads, warmup=warmup, iters=iters, rounds=rounds,
                             train_batch=train_batch, train_steps=train_steps, command=command,
                             on_stage=lambda message: click.echo(message, err=True))
    out.mkdir(parents=True, exist_ok=True)
    for record in result.latencies + result.comparisons + result.splits:
        append_record(record, out)
    (out / "training.json").write_text(json.dumps({"command": command, "rows": result.training}, indent=1) + "\n")
    (out / "parameter_reads.json").write_text(json.dumps({"command": command, "rows": result.reads}, indent=1) + "\n")
    table = dynamic_markdown(result.latencies, result.comparisons, result.splits, result.training, threads, command,
                             result.reads)
    (out / "table.md").write_text(table + "\n")
    click.echo(table)
