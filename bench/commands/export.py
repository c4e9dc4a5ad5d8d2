"""`rbench export`: a model (and optionally its checkpoint) to verified ONNX, and a TensorRT engine."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import click

from bench.commands._options import Number, count, int8_data_options
from bench.errors import EnvironmentProblem, UsageProblem


def _check_writable(out: Path) -> None:
    """Fail before any work when `out` cannot hold files (it exists as a file, or is read-only)."""
    if out.exists() and not out.is_dir():
        raise EnvironmentProblem(f"--out {out} is a file, not a folder")
    from bench.atomic import remove_stale_work_dirs, work_dir

    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_work_dirs(out)  # scratch folders a killed export left (marked and unlocked) go
        with work_dir(out, "rbench-write-test"):  # a probe a kill cannot leave behind for good
            pass
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write to --out {out}: {exc.strerror or exc}") from None


def _model_settings(model_name: str, checkpoint_config: dict[str, Any] | None, num_classes: int | None,
                    in_chans: int | None, act: str | None) -> dict[str, Any]:
    """The create_model arguments: CLI options first, then the checkpoint's config, then defaults."""
    config = dict(checkpoint_config or {})
    trained_as = config.pop("name", None)
    if trained_as is not None and trained_as != model_name:
        raise UsageProblem(f"the checkpoint holds a {trained_as}, not a {model_name}; export {trained_as} instead")
    config.pop("input_size", None)
    settings = {"num_classes": 10, "in_chans": 3, "act": "relu"}
    settings.update({k: v for k, v in config.items()})
    for key, value in (("num_classes", num_classes), ("in_chans", in_chans), ("act", act)):
        if value is not None:
            settings[key] = value
    return settings


@click.command("export", context_settings={"max_content_width": 100})
@click.argument("model_name", metavar="MODEL")
@click.option("--checkpoint", type=click.Path(path_type=Path, dir_okay=False),
              help="Weights to export (.pt, loaded weights-only): a state dict, or a dict with 'state_dict' or "
                   "'model'. A checkpoint from `rbench train` also gives the architecture settings.")
@click.option("--input-size", type=count(1), help="Height = width of the input. [default: the "
              "checkpoint's, else the size the model is designed for: 32 CIFAR nets, 224 ImageNet nets]")
@click.option("--in-chans", metavar="N|any", help="Input channels; 'any': a channel-agnostic net (VGGs, ResNets, plain "
              "nets, dy_ twins) whose ONNX input is [batch, channels, H, W] with 'channels' symbolic, checked at "
              "1, 2 and 3 channels. [default: checkpoint's, else 3]")
@click.option("--num-classes", type=count(1), help="Outputs. [default: checkpoint's, else 10]")
@click.option("--act", help="Activation: relu, leaky_relu, silu. [default: checkpoint's, else relu]")
@click.option("--opset", type=int, default=18, show_default=True,
              help="ONNX opset, 13..23. 18+ uses the dynamo exporter; 13..17 the TorchScript exporter.")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True,
              help="auto: dynamo, falling back to TorchScript when dynamo fails (the manifest says which ran).")
@click.option("--dynamic-batch/--static-batch", default=True, show_default=True,
              help="Symbolic batch axis 'batch' on input and output, or a fixed batch (--batch).")
@click.option("--batch", type=count(1), default=1, show_default=True,
              help="The batch of a --static-batch graph.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="fp16 exports model.half(): weights, compute AND input/output are float16 (feed float16 "
                   "arrays); checked against the fp32 model with fp16 tolerances. int8: a Q/DQ file calibrated "
                   "on real training images (needs --checkpoint), checked on the test split.")
@int8_data_options(
    data_root_help="int8: folder with the calibration data set's files.",
    eval_transform_help="int8: torchvision's evaluation preprocessing of an image folder, for the calibration and "
                        "check images. [default: the checkpoint's own; a torchvision file carries its weights' preset]",
    calibration_help="int8: N calibration images from DATASET's TRAINING split. [default: the checkpoint's data "
                     "set, 512]",
    activations_default=None,
    activations_help="int8: activations as uint8 with a zero point (u8: fastest in onnxruntime and OpenVINO on x86) "
                     "or symmetric int8 (s8: what TensorRT reads). [default: s8 with --engine trt, else u8]")
@click.option("--min-agreement", type=Number(0, 1, min_open=True), default=None,
              help="int8: refuse the file when fewer test predictions agree with fp32. [default: 0.95]")
@click.option("--min-accuracy-ratio", type=Number(0, 1), default=None,
              help="int8: refuse the file below this share of fp32's test accuracy. [default: 0.99, MLPerf's rule]")
@click.option("--engine", "engine_kind", type=click.Choice(["onnx", "trt"]), default="onnx", show_default=True,
              help="trt also builds a TensorRT engine (needs `pip install -e .[trt]` and an NVIDIA GPU).")
@click.option("--batch-range", default="1,8,64", show_default=True,
              help="TensorRT optimization profile MIN,OPT,MAX batch.")
@click.option("--workspace-gib", type=Number(0, min_open=True), default=4.0, show_default=True,
              help="TensorRT workspace memory limit.")
@click.option("--timing-cache", type=click.Path(path_type=Path, dir_okay=False),
              help="TensorRT timing-cache file shared across builds (merged under a lock). "
                   "[default: OUT/../trt-timing-<TensorRT version>-sm<compute capability>.cache]")
@click.option("--force", is_flag=True, help="Rebuild the TensorRT engine even when a valid one is there.")
@click.option("--tf32", is_flag=True, help="Let the TensorRT engine's fp32 layers use TF32 [default: strict fp32, "
                                           "as torch and onnxruntime run it in rbench].")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Output folder. [default: exports/MODEL]")
@click.option("--results", "results_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Also append an 'export' record to RESULTS/export.jsonl.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights and test inputs.")
def export_command(model_name: str, checkpoint: Path | None, input_size: int | None, in_chans: int | None,
                   num_classes: int | None, act: str | None, opset: int, exporter: str, dynamic_batch: bool,
                   batch: int, precision: str, calibration: str | None, calibration_method: str,
                   activations: str | None, min_agreement: float | None, min_accuracy_ratio: float | None, data_root: Path | None,
                   eval_transform: str | None,
                   engine_kind: str, batch_range: str, workspace_gib: float,
                   timing_cache: Path | None, force: bool, tf32: bool, out: Path | None, results_dir: Path | None,
                   seed: int) -> None:
    """Export MODEL to ONNX, prove it matches PyTorch, and optionally build a TensorRT engine.

    MODEL is a zoo name, torchvision:NAME or package.module:callable (a PyTorch model).

    \b
    Writes to OUT (default exports/MODEL/):
      MODEL.onnx / MODEL-fp16.onnx   the model, weights inside (a .data side file only past 2 GB)
      <onnx>.json                    manifest: config, checkpoint and ONNX sha256, opset, exporter,
                                     IO names and shapes (dynamic axes), parity figures, versions,
                                     machine
      MODEL-int8.onnx                with --precision int8: the Q/DQ file (fp32 input and output)
      MODEL[-fp16].engine (+ .json)  with --engine trt: the serialized engine and its manifest

    \b
    Checks: onnx.checker (full), shape inference, then onnxruntime (CPU) against PyTorch in eval
    mode on fresh random inputs at batch 1 and 3 (the trace used batch 2): max abs error, max
    relative error (against the output's largest magnitude), cosine similarity, top-1 agreement.
    Tolerances: fp32 abs err <= 1e-5 + 1e-4*max|ref|, cosine >= 0.99999; fp16 abs err <= 1e-3 +
    2e-2*max|ref|, cosine >= 0.999. A miss exits 1 and keeps no file.

    \b
    int8 (onnxruntime's static quantization, QDQ): the verified fp32 file is pre-processed,
    calibrated on N images of the checkpoint's data set's training split (never the test split)
    and quantized: weights int8 per channel (symmetric); activations uint8 with a zero point
    (--activations u8: onnxruntime fuses every conv into QLinearConv on x86) or symmetric int8
    (s8: what TensorRT's explicit quantization reads; the default with --engine trt). Then it is
    checked on the task: top-1 agreement with fp32 on the test split (>= --min-agreement), the
    accuracy kept (>= --min-accuracy-ratio of fp32's) and logit cosine. A miss exits 1, no file.

    \b
    TensorRT: 10.x takes the precision as a builder flag (FP16); 11.x builds strongly typed
    networks, so an fp16 engine needs the fp16 ONNX file (--precision fp16). fp32 is strict fp32
    unless --tf32. The engine is reused only when ONNX hash, build recipe, TF32, TensorRT version
    and wheel, CUDA runtime, GPU, precision, profiles and workspace all match. When only the engine
    build fails, the verified ONNX file and its manifest are kept.

    \b
    Examples:
      rbench export resnet20
      rbench export resnet56 --checkpoint runs/resnet56/best.pt
      rbench export resnet50 --input-size 224 --precision fp16 --engine trt --batch-range 1,16,64
      rbench export resnet20 --checkpoint runs/r20/best.pt --precision int8 --calibration fashion-mnist:1000
    """
    from export.onnx import check_opset

    check_opset(opset, exporter)
    from export.tensorrt import parse_batch_range

    profile_range = parse_batch_range(batch_range) if engine_kind == "trt" else None
    if tf32 and engine_kind != "trt":
        raise UsageProblem("--tf32 applies to --engine trt (the ONNX file has no TF32 setting)")
    if profile_range is not None and not dynamic_batch and profile_range != (batch,) * 3:
        raise UsageProblem(f"a --static-batch graph of batch {batch} needs --batch-range {batch}; "
                           "or export with --dynamic-batch")
    int8 = None
    if precision == "int8":
        from bench.accuracy.calibration import parse_calibration

        if checkpoint is None:
            raise UsageProblem("int8 needs trained weights and their data: calibrating random weights is meaningless; "
                               "pass --checkpoint CKPT (and --calibration DATASET[:N] unless it names its data set)")
        parse_calibration(calibration)  # a bad spec: one line before the export
        if activations == "u8" and engine_kind == "trt":
            raise UsageProblem("TensorRT reads only symmetric int8 activations: use --activations s8 with --engine trt")
        int8 = {"calibration": calibration, "method": calibration_method, "min_agreement": min_agreement,
                "activations": activations or ("s8" if engine_kind == "trt" else "u8"),
                "min_accuracy_ratio": min_accuracy_ratio, "data_root": str(data_root) if data_root else None,
                "eval_transform": eval_transform}
        from bench.data import parse_eval_transform

        parse_eval_transform(eval_transform)  # a bad preset: one line before the export
    elif eval_transform is not None:
        raise UsageProblem("--eval-transform applies to --precision int8 (its calibration and check images)")
    elif calibration is not None or activations is not None:
        raise UsageProblem(f"--{'calibration' if calibration is not None else 'activations'} applies to --precision int8")
    if engine_kind == "trt":
        from export.tensorrt import precision_plan, require_trt, trt_major_of

        trt = require_trt()  # no TensorRT or no GPU: one line, before anything is written
        precision_plan(trt_major_of(trt.__version__), precision, "fp32" if precision == "int8" else precision,
                       quantized=precision == "int8")
    source, ckpt = _export_source(model_name, checkpoint, input_size, in_chans, num_classes, act, seed)
    out = out or Path("exports") / _file_stem(source.name)
    _check_writable(out)
    stem = _file_stem(source.name) + ("" if precision == "fp32" else f"-{precision}")
    onnx_path, manifest_path = out / f"{stem}.onnx", out / f"{stem}.onnx.json"
    report, engine_report, quant = _export_files(source, ckpt, onnx_path, manifest_path, opset=opset, exporter=exporter,
                                          dynamic_batch=dynamic_batch, batch=batch, precision=precision, seed=seed,
                                          engine_kind=engine_kind, profile_range=profile_range,
                                          workspace_gib=workspace_gib,
                                          timing_cache=timing_cache or _default_timing_cache(engine_kind, out.parent),
                                          force=force, tf32=tf32,
                                          int8=int8)
    _print_summary(source.name, onnx_path, manifest_path, report, engine_report, precision,
                   quant=quant)
    if results_dir is not None:
        for path in _append_records(source, report, engine_report, engine_kind, dynamic_batch, batch, results_dir):
            click.echo(f"  record: {path}")


def _file_stem(name: str) -> str:
    """A file-name-safe stem: torchvision:resnet18 -> torchvision-resnet18."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-")


def _export_source(model_name: str, checkpoint: Path | None, input_size: int | None, in_chans: int | None,
                   num_classes: int | None, act: str | None, seed: int):
    """(ModelSource, export.checkpoint.Checkpoint or None) with the weights loaded.

    A zoo model takes its architecture settings from a `rbench train` checkpoint (CLI options
    first); any other PyTorch source is built as given and then loaded.
    """
    import torch

    import nets
    from bench.engines.sources import resolve_source
    from export.checkpoint import apply_checkpoint, load_checkpoint

    if model_name.lower().endswith(".onnx") or ":" not in model_name and "/" in model_name:
        raise UsageProblem(f"{model_name} is already a file; `rbench export` takes a PyTorch model source "
                           "(a zoo name, torchvision:NAME or package.module:callable)")
    from bench.train.loop import parse_in_chans

    in_chans = parse_in_chans(in_chans)  # a count, or 'any' (a zoo net with a channel-agnostic stem)
    if in_chans == "any" and ":" in model_name:
        raise UsageProblem(f"--in-chans any takes a zoo net with a channel-agnostic stem, not {model_name}")
    torch.manual_seed(seed)
    if ":" in model_name:  # torchvision:NAME or package.module:callable
        source = resolve_source(model_name, input_size=input_size, in_chans=in_chans, num_classes=num_classes)
        ckpt = load_checkpoint(checkpoint) if checkpoint is not None else None
        if ckpt is not None:
            apply_checkpoint(source.module(), ckpt, source.name)
            source.checkpoint = str(checkpoint)
        return source, ckpt
    entry = nets.model_entry(model_name)  # unknown name: one line, exit 2
    ckpt = load_checkpoint(checkpoint) if checkpoint is not None else None
    ckpt_config = ckpt.config if ckpt is not None else None
    settings = _model_settings(model_name, ckpt_config, num_classes, in_chans, act)
    trained_on = dict((ckpt.extra or {}).get("dataset") or {}) if ckpt is not None else {}
    # An `rbench train` checkpoint says the size it was trained at in its data set (28 for Fashion-MNIST).
    size = input_size or (ckpt_config or {}).get("input_size") or trained_on.get("input_size") or entry.input_size
    model = nets.create_model(model_name, **settings)
    if ckpt is not None:
        apply_checkpoint(model, ckpt, model_name)
    chans = settings["in_chans"]
    if chans == "any":  # traced at the channels it was trained on (else 3); to_onnx keeps the axis symbolic
        chans = int(trained_on.get("in_chans") or 3)
    source = resolve_source(model, input_shape=(chans, size, size), name=model_name)
    source.kind, source.checkpoint = "zoo", str(checkpoint) if checkpoint else None
    return source, ckpt


def _default_timing_cache(engine_kind: str, folder: Path) -> Path | None:
    """One timing cache per TensorRT version and GPU beside the model folders (see `default_timing_cache`)."""
    if engine_kind != "trt":
        return None
    from export.tensorrt import default_timing_cache

    return default_timing_cache(folder)


def _export_files(source, ckpt, onnx_path: Path, manifest_path: Path, *, opset: int, exporter: str,
                  dynamic_batch: bool, batch: int, precision: str, seed: int, engine_kind: str, profile_range,
                  workspace_gib: float, timing_cache: Path, force: bool, int8: dict[str, Any] | None = None,
                  tf32: bool = False):
    """Write the verified ONNX, the engine (with --engine trt) and the manifest: all of them or nothing.

    int8: the verified fp32 export goes to a scratch folder, and its calibrated, checked Q/DQ form
    to `onnx_path` (`_int8_file`); the manifest keeps both the fp32 parity and the int8 check.

    The ONNX file is kept only with its manifest: when the manifest cannot be written, the ONNX file, its
    side file and any older manifest are removed, so no file looks verified without the record that says
    so. When only the TensorRT step fails (a rebuild costs minutes, the export did not fail), the verified
    ONNX file is kept with its manifest, which records the engine error, and the error is raised after.
    """
    from bench.atomic import write_text
    from bench.records.io import describe_machine
    from export.manifest import build_manifest
    from export.onnx import to_onnx

    for target in (onnx_path, manifest_path):
        if target.is_dir():  # checked before the export's minutes, not after
            raise EnvironmentProblem(f"cannot write {target}: a folder of that name is in the way")
    quant = None
    if int8 is not None:
        report, quant = _int8_file(source, ckpt, onnx_path, int8, opset=opset, exporter=exporter,
                                   dynamic_batch=dynamic_batch, batch=batch, seed=seed)
    else:
        report = to_onnx(source.module(), onnx_path, source.input_shape, batch=batch, opset=opset,
                         dynamic_batch=dynamic_batch, precision=precision, verify=True, exporter=exporter,
                         model_name=source.name, seed=seed)
    engine_report = engine_error = None
    try:
        if engine_kind == "trt":
            from bench.errors import RbenchError
            from export.tensorrt import build_trt_engine

            try:
                engine_report = build_trt_engine(
                    onnx_path, onnx_path.with_suffix(".engine"), precision=precision, batch_range=profile_range,
                    input_shape=source.input_shape, workspace_gib=workspace_gib, timing_cache=timing_cache,
                    force=force, tf32=tf32)
            except RbenchError as exc:  # the export is verified: keep it, say the engine failed
                engine_error = exc
        manifest = build_manifest(model_name=source.name, model_config=dict(source.config), checkpoint=ckpt,
                                  report=report, input_size=source.input_shape[1], engine=engine_report,
                                  machine=describe_machine())
        if engine_error is not None:
            manifest["tensorrt_error"] = str(engine_error)
        if quant is not None:
            manifest["int8"] = quant.to_dict()
            manifest["parity"]["of"] = "the fp32 export this file was quantized from (its sha256: int8.source_sha256)"
        try:
            write_text(manifest_path, json.dumps(manifest, indent=2, default=str) + "\n")
        except OSError as exc:
            raise EnvironmentProblem(f"cannot write the manifest {manifest_path}: {exc.strerror or exc}; "
                                     f"{onnx_path.name} was removed with it (nothing half-written is kept)") from None
    except BaseException:
        # A half-done export keeps nothing: the ONNX file without its manifest would look verified.
        for leftover in (onnx_path, Path(f"{onnx_path}.data"), manifest_path):
            if leftover.is_file() or leftover.is_symlink():
                with contextlib.suppress(OSError):  # never hide the error that got us here
                    leftover.unlink()
        raise
    if engine_error is not None:
        engine_error.args = (f"{engine_error}; the verified {onnx_path.name} and its manifest were kept",)
        raise engine_error
    return report, engine_report, quant


def _int8_file(source, ckpt, onnx_path: Path, int8: dict[str, Any], *, opset: int, exporter: str,
               dynamic_batch: bool, batch: int, seed: int):
    """(the fp32 ExportReport relabelled for the int8 file, the QuantReport): export fp32, verify, quantize, check."""
    import dataclasses
    from types import SimpleNamespace

    from bench.accuracy.calibration import int8_export
    from bench.atomic import work_dir
    from export.onnx import to_onnx

    extra = dict(getattr(ckpt, "extra", None) or {})
    # What bench.accuracy.calibration needs of a checkpoint: its input, normalization and data set (rbench train writes them).
    trained = SimpleNamespace(input_shape=tuple(source.input_shape), normalization=dict(extra.get("normalization") or {}),
                              dataset=dict(extra.get("dataset") or {}), config=dict(source.config),
                              path=Path(ckpt.path), eval_transform=extra.get("eval_transform"))
    with work_dir(onnx_path.parent, onnx_path.stem) as stage:
        fp32 = stage / "fp32.onnx"
        report = to_onnx(source.module(), fp32, source.input_shape, batch=batch, opset=opset,
                         dynamic_batch=dynamic_batch, precision="fp32", verify=True, exporter=exporter,
                         model_name=source.name, seed=seed)
        quant = int8_export(trained, fp32, onnx_path, int8["calibration"], method=int8["method"],
                            min_agreement=int8["min_agreement"], min_accuracy_ratio=int8["min_accuracy_ratio"],
                            data_root=int8["data_root"], activations=int8["activations"],
                            eval_transform=int8.get("eval_transform"))
    quant.source_path = "the verified fp32 export (scratch, not kept; see source_sha256)"
    relabelled = dataclasses.replace(report, path=str(onnx_path), precision="int8", onnx_sha256=quant.sha256,
                                     onnx_bytes=quant.size_bytes, external_data=None)
    return relabelled, quant


def _print_summary(name: str, onnx_path: Path, manifest_path: Path, report, engine_report, precision: str,
                   quant=None) -> None:
    click.echo(f"{name}: {onnx_path} ({report.exporter} exporter, opset {report.opset}, {precision}, "
               f"input {report.input_shapes[0]}, {report.onnx_bytes / 2**20:.1f} MiB, {report.export_seconds:.1f} s)")
    click.echo(f"  {report.parity.summary()}" + (" (the fp32 export it was quantized from)" if quant else ""))
    if quant is not None:
        cal = quant.calibration
        click.echo(f"  int8: {quant.method} calibration on {quant.calibration_images} {cal.get('dataset')} "
                   f"{cal.get('split')} images; {quant.check.summary()}")
    if report.fallback_reason:
        click.echo(f"  note: {report.fallback_reason}")
    for warning in getattr(report, "warnings", None) or []:
        click.echo(f"  warning: {warning}")
    if engine_report is not None:
        state = "reused (cache key matches)" if engine_report.reused else f"built in {engine_report.build_seconds:.1f} s"
        click.echo(f"  TensorRT {engine_report.tensorrt_version} engine {engine_report.engine_path}: {state}, "
                   f"profile {engine_report.profile['min'][0]},{engine_report.profile['opt'][0]},"
                   f"{engine_report.profile['max'][0]}, timing cache hit: {engine_report.timing_cache_hit}")
    click.echo(f"  manifest: {manifest_path}")


def _append_records(source, report, engine_report, engine_kind: str, dynamic_batch: bool, batch: int,
                    results_dir: Path) -> list[Path]:
    from bench.records.builders import engine_build_record, export_record
    from bench.records.io import append_record

    record = export_record(report, source=source.describe(), model_config=dict(source.config), engine=engine_kind,
                           input_shape=source.input_shape, batch=None if dynamic_batch else batch,
                           engine_report=engine_report)
    paths = [append_record(record, results_dir)]
    if engine_report is not None:
        build = engine_build_record(engine_report, source=source.describe(), model_config=dict(source.config),
                                    precision=report.precision, input_shape=source.input_shape)
        paths.append(append_record(build, results_dir))
    return paths
