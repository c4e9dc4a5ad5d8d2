"""`rbench dynamic`: dynamic vs static convolution timed interleaved (latency per batch and engine, training speed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bench.commands.measure import check_out_folder


@click.command("dynamic")
@click.option("--batch", "batches", default="1,8", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--engine", "engines", default="torch,ort", show_default=True, help="Engines, comma-separated.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Intra-op threads of every engine and of the training steps.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed runs per entry.")
@click.option("--iters", type=click.IntRange(min=1), default=60, show_default=True,
              help="Timed runs per entry at batch 1 (split over the rounds); larger batches get iters / batch, at least 2 a round.")
@click.option("--rounds", type=click.IntRange(min=2), default=10, show_default=True, help="Interleaved rounds.")
@click.option("--train-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Training batch of the training-speed ratio (0 steps: --train-steps 0 skips it).")
@click.option("--train-steps", type=click.IntRange(min=0), default=2, show_default=True,
              help="Optimizer steps per net per round for the training-speed ratio (0: skip it).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results/dynamic-conv"),
              show_default=True, help="Folder for latency.jsonl, comparison.jsonl, cost_split.jsonl, training.json, table.md.")
def dynamic_command(batches: str, engines: str, threads: int, warmup: int, iters: int, rounds: int,
                    train_batch: int, train_steps: int, out: Path) -> None:
    """Time dy_resnet20 / resnet20 and dy_vgg11 / vgg11_bn (small_input, 32x32) interleaved: p50 ratios per batch
    and engine with 95% intervals and verdicts, the training images/s ratio, and each dynamic net's cost split.

    \b
    Each pair is timed together in --rounds rounds (bench.measure.time_pairs), per batch and engine; onnxruntime
    runs each net exported for that batch (the dynamic net's fast fixed-batch graph). Training: one Adam step at
    --train-batch on random data per call, the two nets alternating round by round. The cost split times each
    DynamicConv2d's attention, aggregation and convolution apart (bench.dynamic_cost), eager torch.
    """
    import torch

    from bench.dynamic_compare import TrainTiming, default_pairs, latency_table, training_ratio
    from bench.dynamic_cost import dynamic_cost_split
    from bench.measure import Settings, parse_batches, parse_engines
    from bench.records import cost_split_record
    from bench.results import append_record, current_command

    batch_list, engine_list = parse_batches(batches), parse_engines(engines)
    check_out_folder(out, ("latency.jsonl", "comparison.jsonl", "cost_split.jsonl"))
    command = current_command()
    pairs = default_pairs()
    torch.set_num_threads(threads)
    latencies, comparisons = [], []
    for batch in batch_list:
        per_round = max(2, iters // (rounds * batch))
        settings = Settings(threads=threads, warmup=max(2, warmup // batch), iters=per_round * rounds, rounds=rounds)
        click.echo(f"timing batch {batch} ({per_round * rounds} runs per entry in {rounds} rounds) ...", err=True)
        lat, comp = latency_table(pairs, [batch], engine_list, settings, command=command)
        latencies += lat
        comparisons += comp
    splits = []
    for pair in pairs:
        model = pair.build(pair.dynamic)
        for batch in batch_list:
            split = dynamic_cost_split(model, (3, pair.input_size, pair.input_size), batch, threads=threads)
            splits.append(cost_split_record(split, model=pair.dynamic, model_config=dict(model.config),
                                            context={"label": pair.label}, command=command))
    training = []
    if train_steps:
        click.echo("timing training steps ...", err=True)
        timing = TrainTiming(batch=train_batch, steps=train_steps, threads=threads)
        training = [training_ratio(pair, timing) for pair in pairs]
    out.mkdir(parents=True, exist_ok=True)
    for record in latencies + comparisons + splits:
        append_record(record, out)
    (out / "training.json").write_text(json.dumps({"command": command, "rows": training}, indent=1) + "\n")
    table = dynamic_markdown(latencies, comparisons, splits, training, threads, command)
    (out / "table.md").write_text(table + "\n")
    click.echo(table)


def dynamic_markdown(latencies: list[dict[str, Any]], comparisons: list[dict[str, Any]], splits: list[dict[str, Any]],
                     training: list[dict[str, Any]], threads: int, command: str | None) -> str:
    """The latency ratios, training ratios and cost split as Markdown, the command and load above them."""
    from bench.results import describe_machine

    machine = describe_machine()
    lines = [f"<!-- made by: {command} -->",
             f"Machine: {machine['cpu']}, {machine['cores_usable']} cores; torch {machine['versions']['torch']}, "
             f"onnxruntime {machine['versions']['onnxruntime']}; {threads} intra-op thread(s).", "",
             "| pair | engine | batch | static p50 ms | dynamic p50 ms | ratio (95% CI) | verdict |",
             "|---|---|---:|---:|---:|---:|---|"]
    for c in comparisons:
        lines.append(f"| {c.get('label')} | {c['candidate']['engine']} | {c['batch']} | "
                     f"{c['baseline']['latency_ms_p50']:.3f} | {c['candidate']['latency_ms_p50']:.3f} | "
                     f"{c['ratio']:.2f}x ({c['ratio_ci'][0]:.2f}-{c['ratio_ci'][1]:.2f}) | {c['verdict']} |")
    if training:
        lines += ["", "| pair | training batch | static img/s | dynamic img/s | dynamic / static img/s (95% CI) |",
                  "|---|---:|---:|---:|---:|"]
        for t in training:
            lines.append(f"| {t['label']} | {t['batch']} | {t['static_img_s']:.1f} | {t['dynamic_img_s']:.1f} | "
                         f"{t['ratio']:.2f} ({t['ratio_ci'][0]:.2f}-{t['ratio_ci'][1]:.2f}) |")
    if splits:
        lines += ["", "Cost split (eager torch; ms summed over the dynamic layers, each part timed apart; extra = "
                      "attention + aggregation + conv - static conv):", "",
                  "| net | batch | form | attention | aggregation | conv | other | layers total | static conv | "
                  "extra | shares attention / aggregation / conv |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for s in splits:
            t, share = s["total_ms"], s["extra_share"]
            forms = ", ".join(sorted({layer["mode"] for layer in s["layers"]}))
            shares = " / ".join("n/a" if share[k] is None else f"{100 * share[k]:.0f}%"
                                for k in ("attention", "aggregation", "conv"))
            lines.append(f"| {s['model']} | {s['batch']} | {forms} | {t['attention']:.2f} | {t['aggregation']:.2f} | "
                         f"{t['conv']:.2f} | {s['other_ms']:.2f} | {t['layer']:.2f} | {t['static_conv']:.2f} | "
                         f"{s['extra_ms']:.2f} | {shares} |")
    loads = [r["load_average_after"][0] for r in latencies if r.get("load_average_after")]
    contended = sum(bool((r.get("contention") or {}).get("contended")) for r in latencies)
    if loads:
        verdict = (f"{contended} of {len(latencies)} timings flagged as contended (bench.contention): the ratios are "
                   "interleaved, so both sides were hit alike, but intervals widen" if contended else
                   "no timing flagged as contended (bench.contention)")
        lines += ["", f"1-minute load average after each latency run: {min(loads):.1f} to {max(loads):.1f} on "
                      f"{machine['cores_usable']} cores, {threads} thread(s) timed; {verdict}."]
    return "\n".join(lines)
