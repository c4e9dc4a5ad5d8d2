"""`rbench ladder`: speed and task accuracy of a trained model for every (engine, precision) rung here."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from bench.commands._options import THREADS, Number, count, int8_data_options
from bench.errors import UsageProblem


@click.command("ladder")
@click.argument("model")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="An `rbench train` checkpoint of MODEL (best.pt): weights, normalization, data set; or a "
                   "torchvision state dict (resnet50-11ad3fa6.pth), with --dataset.")
@click.option("--dataset", default=None,
              help="Evaluate (and calibrate) on this data set (default: the checkpoint's). An image folder may hold "
                   "only val/; then --calibration names another folder.")
@click.option("--class-index", type=click.Path(dir_okay=False), default=None,
              help="JSON giving the label order of the folder's classes (ImageNet's imagenet_class_index.json).")
@click.option("--skip-bad-images", is_flag=True, help="Skip unreadable image files (counted) instead of stopping.")
@click.option("--workers", type=count(0), default=0, show_default=True,
              help="DataLoader processes decoding a lazy image folder.")
@click.option("--threshold", type=Number(0, 1, min_open=True), default=0.99, show_default=True,
              help="A rung passes when it keeps this share of torch fp32's top-1 (MLPerf: 99%); int8's check too.")
@int8_data_options(
    data_root_help="Folder with the data files (default: the data set's usual place).",
    eval_transform_help="torchvision's evaluation preprocessing for an image folder (see `rbench accuracy --help`). "
                        "[default: the checkpoint's own]",
    calibration_help="int8 calibration images from the TRAINING split (default: the checkpoint's data set, 512); "
                     "a folder without train/ gives all its images (never the folder evaluated on).",
    activations_default="u8",
    activations_help="Activations of the ort/openvino int8 file: uint8 with a zero point, or symmetric int8 "
                     "(TensorRT always gets a symmetric file).")
@click.option("--rungs", default=None, metavar="ENGINE:PRECISION,...",
              help="Only these rungs (e.g. ort:int8,openvino:bf16); torch:fp32, the reference, is always measured.")
@click.option("--batch", default=1, show_default=True, type=count(1), help="Latency batch.")
@click.option("--throughput-batch", default=32, show_default=True, type=count(0),
              help="Batch of the images/s timing (0: skip it).")
@click.option("--test-limit", default=None, type=count(1),
              help="Evaluate on at most N test images (stratified); default: the whole test split.")
@click.option("--iters", default=30, show_default=True, type=count(1), help="Timed runs per rung.")
@click.option("--warmup", default=5, show_default=True, type=count(0), help="Untimed runs first.")
@click.option("--rounds", default=5, show_default=True, type=count(1),
              help="Interleaved rounds: each visits every rung in a new random order.")
@click.option("--threads", default=None, type=THREADS,
              help="Intra-op threads of every engine, at most the usable cores.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for ladder.md, ladder.png, ladder.json and the records (default: results/ladder-MODEL).")
@click.option("--keep-files", is_flag=True, help="Keep the fp32 and int8 ONNX files in --out/files/.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@click.option("-q", "--quiet", is_flag=True, help="No stage lines.")
def ladder_command(model: str, checkpoint: Path, dataset: str | None, eval_transform: str | None,
                   class_index: str | None, skip_bad_images: bool, workers: int, threshold: float,
                   data_root: Path | None, calibration: str | None, calibration_method: str, activations: str,
                   rungs: str | None, batch: int, throughput_batch: int,
                   test_limit: int | None, iters: int, warmup: int, rounds: int, threads: int | None,
                   out: Path | None, keep_files: bool, as_json: bool, quiet: bool) -> None:
    """Speed against task accuracy of MODEL for every engine and precision this machine runs.

    \b
    Rungs: torch fp32 (the reference) and bf16; onnxruntime fp32 and int8; OpenVINO fp32, bf16
    and int8; TensorRT fp32, fp16 and int8 on a GPU. int8 is one Q/DQ file, calibrated on
    training images and checked on the test split (see `rbench export --precision int8`); a
    file that misses the check is still measured and marked. A rung this machine cannot run is
    a row with the reason, never silently dropped.

    \b
    Each row: batch-1 p50 with its 95% interval, images/s at --throughput-batch, file size,
    top-1 and macro-F1 on the test split, agreement with torch fp32, and the speedup over torch
    fp32 with its interval (all rungs timed interleaved in one run). '*' marks the Pareto front
    (no other rung both faster and more accurate).

    \b
    Examples:
      rbench train resnet20 --epochs 2 --out runs/r20
      rbench ladder resnet20 --checkpoint runs/r20/best.pt
      rbench ladder resnet20 --checkpoint runs/r20/best.pt --rungs ort:int8,openvino:bf16 --test-limit 2000
      rbench ladder resnet50 --checkpoint resnet50-0676ba61.pth --dataset imagefolder:/data/imagenet \\
          --eval-transform imagenet --calibration imagefolder:/data/imagenet-cal:500 --workers 8
    """
    from bench.accuracy.calibration import parse_calibration
    from bench.commands.measure import _console, check_out_folder
    from bench.data import parse_eval_transform
    from bench.measure.run import Settings
    from bench.scenarios.ladder import (
        LADDER_COLUMNS,
        contention_notes,
        ladder_rows_table,
        parse_rungs,
        run_ladder,
        write_ladder,
    )

    parse_calibration(calibration)  # a bad spec: one line before any work
    parse_eval_transform(eval_transform)
    chosen = parse_rungs(rungs)
    if not checkpoint.is_file():
        raise UsageProblem(f"no checkpoint at {checkpoint}; train one with `rbench train {model}`")
    out = out or Path("results") / f"ladder-{model}"
    check_out_folder(out, ("latency.jsonl", "comparison.jsonl", "accuracy.jsonl"))
    settings = Settings(iters=iters, warmup=warmup, rounds=rounds, threads=threads)
    say = (lambda stage: None) if quiet or as_json else (lambda stage: click.echo(f"  {stage}", err=True))
    with tempfile.TemporaryDirectory(prefix="rbench-ladder-") as scratch:
        workdir = out / "files" if keep_files else Path(scratch)
        result = run_ladder(checkpoint, workdir=workdir, rungs=chosen, model_name=model, dataset=dataset,
                            data_root=str(data_root) if data_root else None, calibration=calibration,
                            method=calibration_method, activations=activations, batch=batch, throughput_batch=throughput_batch or None,
                            settings=settings, test_limit=test_limit, on_stage=say, eval_transform=eval_transform,
                            class_index=class_index, skip_bad_images=skip_bad_images, workers=workers,
                            threshold=threshold)
        if not keep_files:  # the scratch folder goes now: the rows must not name its files
            for row in result.rows:
                row.pop("file", None)
    write_ladder(result, out, model, checkpoint, settings)
    for note in contention_notes(result.latency):  # also in ladder.md; on stderr, where scripts see it
        click.echo(f"rbench: warning: {note}", err=True)
    if as_json:
        click.echo(json.dumps(result.rows, default=str))
        return
    from rich.table import Table

    table = Table(title=f"{model}: precision ladder (batch {batch}; {rounds} interleaved rounds; * Pareto front)",
                  title_justify="left")
    for col in LADDER_COLUMNS:
        table.add_column(col, justify="left" if col in ("engine", "precision", "speedup vs torch fp32") else "right")
    from rich.markup import escape

    for row in ladder_rows_table(result.rows):
        table.add_row(*(escape(cell) for cell in row))  # reasons hold brackets: pip install 'rbench[trt]'
    _console().print(table)
    check = (result.int8 or {}).get("check")
    if check:
        verdict = "passed" if check["passed"] else "FAILED (its rungs are measured anyway, marked)"
        ratio = "-" if check["accuracy_ratio"] is None else f"{check['accuracy_ratio']:.3f}"
        click.echo(f"int8 file: {result.int8['method']} calibration on {result.int8['calibration_images']} training "
                   f"images; check on {check['images']} test images {verdict}: agreement "
                   f"{check['top1_agreement']:.2%}, accuracy ratio {ratio}")
    failed = [f"{r['engine']} {r['precision']}" for r in result.rows if r.get("passed") is False]
    click.echo(f"MLPerf accuracy rule ({threshold:.0%} of torch fp32's top-1): "
               + (f"below it: {', '.join(failed)}" if failed else "every measured rung passes"))
    click.echo(f"  {out / 'ladder.md'}, {out / 'ladder.png'}, {out / 'ladder.json'}")
