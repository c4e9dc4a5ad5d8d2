"""The precision ladder: speed and task accuracy of one trained model for every (engine, precision) here.

    >>> result = run_ladder("runs/resnet20/best.pt", workdir="/tmp/ladder")
    >>> [(r["engine"], r["precision"], r["p50_ms"], r["top1"], r["speedup"]) for r in result.rows]

The question a deployment engineer asks is "how much accuracy do I trade for how much speed".
For each rung (`RUNGS`) this machine can run, one row holds: batch-1 p50 latency with its
interval, images/s at the throughput batch, the model file's size, top-1 and macro-F1 on the
test split, agreement with torch fp32, and the speedup over torch fp32 with its interval. Rungs
that cannot run here are rows too, with the reason. Every rung's latency is timed interleaved
in one run, so the speedups compare figures taken under the same conditions.

Accuracy is judged as MLPerf's accuracy mode judges it (`bench.accuracy.evaluate.accuracy_mode`): each rung's
top-1 as a ratio to torch fp32's, and a pass when it keeps at least `threshold` (99%) of it. An
evaluation-only image folder (an ImageNet `val/`) works as `dataset`, with torchvision's evaluation
transform (`eval_transform`) and the int8 calibration images from another folder (`calibration`).

The int8 rungs run a calibrated Q/DQ file (`bench.accuracy.calibration.int8_export`: calibration images
from the training split, the task check on the test split): uint8 activations for onnxruntime
and OpenVINO, a second, symmetric file for TensorRT. OpenVINO's bf16 is a compile setting on
the fp32 file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import RbenchError, UsageProblem

#: Every rung rbench knows, cheapest to set up first; torch fp32 is the reference.
RUNGS: tuple[tuple[str, str], ...] = (
    ("torch", "fp32"), ("torch", "bf16"),
    ("ort", "fp32"), ("ort", "int8"),
    ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
    ("trt", "fp32"), ("trt", "fp16"), ("trt", "int8"),
)
REFERENCE = ("torch", "fp32")


def parse_rungs(spec: str | Sequence[str] | None) -> list[tuple[str, str]]:
    """`"ort:int8,openvino:bf16"` -> [("ort", "int8"), ...]; None: every rung. torch fp32 always comes first."""
    if spec is None:
        return list(RUNGS)
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:  # an empty list would quietly measure the reference alone
        known = ", ".join(f"{e}:{p}" for e, p in RUNGS)
        raise UsageProblem(f"--rungs names no rung; name at least one of {known}, or leave --rungs out for all")
    rungs = []
    for item in items:
        engine, _, precision = item.partition(":")
        pair = (engine.lower(), (precision or "fp32").lower())
        if pair not in RUNGS:
            known = ", ".join(f"{e}:{p}" for e, p in RUNGS)
            raise UsageProblem(f"unknown rung {item!r}; choose from {known}")
        if pair not in rungs:
            rungs.append(pair)
    return [REFERENCE] + [r for r in rungs if r != REFERENCE]


def rung_status(engine: str, precision: str, device: str = "cpu") -> tuple[bool, str]:
    """(can run here, why or why not) for one rung, without building anything."""
    if engine == "torch":
        from bench.engines.torch_engine import cpu_precision_support

        return cpu_precision_support(precision) if device == "cpu" else (True, "cuda")
    if engine == "ort":
        try:
            import onnxruntime
        except ImportError:
            return False, "onnxruntime is not installed: pip install onnxruntime"
        return True, f"onnxruntime {onnxruntime.__version__}"
    if engine == "openvino":
        from bench.engines.openvino_engine import bf16_support, openvino_status

        ok, why = openvino_status()
        if ok and precision == "bf16":
            return bf16_support()
        return ok, why
    if engine == "trt":
        from export.tensorrt import trt_status

        return trt_status()
    return False, f"unknown engine {engine!r}"


@dataclass
class LadderResult:
    """What `run_ladder` measured: the rows a person reads and the records the results folder keeps."""

    rows: list[dict[str, Any]]
    latency: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    int8: dict[str, Any] | None = None  # the int8 QuantReport as a dict, with its check (None: no int8 rung ran)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [*self.latency, *self.comparisons, *self.accuracy]


def contention_notes(records: Sequence[dict[str, Any]]) -> list[str]:
    """One line per timing that other work competed with (its record says `contention.contended`).

    Such figures are likely slow, and the speedups built on them unreliable: the ladder's printout and
    its ladder.md say so, as `rbench latency` does.
    """
    notes = []
    for record in records:
        contention = record.get("contention") or {}
        if contention.get("contended"):
            reasons = "; ".join(contention.get("reasons") or ()) or "see the record's contention field"
            notes.append(f"{record.get('engine')} {record.get('precision')} batch {record.get('batch')}: other work "
                         f"competed for the CPU ({reasons}); these figures are likely slow (records say contended)")
    return notes


def pareto_front(rows: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of measured rows no other row beats on both latency (lower) and top-1 (higher)."""
    measured = [(i, r["p50_ms"], r["top1"]) for i, r in enumerate(rows)
                if r.get("p50_ms") is not None and r.get("top1") is not None]
    front = []
    for i, lat, acc in measured:
        dominated = any(lat2 <= lat and acc2 >= acc and (lat2 < lat or acc2 > acc) for j, lat2, acc2 in measured if j != i)
        if not dominated:
            front.append(i)
    return front


def _state_bytes(model) -> int:
    return int(sum(t.numel() * t.element_size() for t in model.state_dict().values()))


def run_ladder(checkpoint: str | Path, *, workdir: str | Path, rungs: Sequence[tuple[str, str]] | None = None,
               model_name: str | None = None,
               dataset: str | None = None, data_root: str | None = None, calibration: str | None = None,
               method: str = "minmax", activations: str = "u8", batch: int = 1, throughput_batch: int | None = 32,
               settings=None, throughput_settings=None,
               test_limit: int | None = None, device: str = "cpu",
               on_stage: Callable[[str], None] = lambda stage: None, on_progress=None,
               command: str | None = None, eval_transform: str | None = None, class_index: str | None = None,
               skip_bad_images: bool = False, workers: int = 0, threshold: float | None = None) -> LadderResult:
    """Export, quantize, evaluate and time every runnable rung of `checkpoint`'s model (see the module doc).

    Args:
        checkpoint: an `rbench train` checkpoint (weights, config, normalization, data set).
        model_name: the architecture the checkpoint must hold (None: whatever it holds).
        workdir: where the fp32 and int8 ONNX files (and TensorRT engines) are written.
        rungs: (engine, precision) pairs (default `RUNGS`); torch fp32 is always measured first.
        dataset, data_root: the data set (default: the checkpoint's own) and its folder.
        calibration: `DATASET[:N]` for the int8 calibration (default: 512 training images).
        method: int8 calibration method (minmax | entropy | percentile).
        activations: the int8 file's activations for ort and openvino: u8 (zero point) or s8 (symmetric).
        batch: the latency batch (1: what a single request waits).
        throughput_batch: a second interleaved timing at this batch for images/s (None: skip it).
        settings: `bench.measure.run.Settings` (iterations, threads, rounds, ...).
        throughput_settings: the same for the throughput batch (None: `settings`).
        test_limit: evaluate on at most this many test images (stratified; None: all of them).
        eval_transform, class_index, skip_bad_images: how an image folder is read (`dataset_for_checkpoint`).
        workers: DataLoader processes decoding a lazy image folder.
        threshold: a rung passes when its top-1 is at least this share of torch fp32's (default 0.99, MLPerf).
    """
    from bench.accuracy.calibration import int8_export
    from bench.accuracy.evaluate import (
        MLPERF_THRESHOLD,
        accuracy_mode,
        batches_for_checkpoint,
        dataset_for_checkpoint,
        evaluate_engine,
        load_trained_model,
    )
    from bench.accuracy.metrics import compare_predictions
    from bench.engines import create_engine
    from bench.measure.run import Settings, time_pairs
    from bench.records.builders import accuracy_record
    from export.onnx import to_onnx

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rungs = list(rungs) if rungs is not None else list(RUNGS)
    if REFERENCE not in rungs:
        rungs.insert(0, REFERENCE)
    settings = settings or Settings()
    on_stage("load")
    threshold = MLPERF_THRESHOLD if threshold is None else threshold
    accuracy_mode([], threshold)  # a bad threshold: one line before any work
    ckpt = load_trained_model(checkpoint, model_name)
    data_options = dict(eval_transform=eval_transform, class_index=class_index, skip_bad_images=skip_bad_images)
    bundle = dataset_for_checkpoint(ckpt, dataset, root=data_root, **data_options)
    test = batches_for_checkpoint(ckpt, bundle, 256, workers=workers)
    if test_limit is not None:
        from bench.accuracy.calibration import test_set

        images, labels = test_set(ckpt, bundle, test_limit, workers=workers)
        test = [(_tensor(images[i:i + 256]), _tensor(labels[i:i + 256])) for i in range(0, len(labels), 256)]
    name = ckpt.config.get("name", "model")

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    files: dict[str, Path] = {}
    result = LadderResult(rows=[])
    for engine, precision in rungs:
        ok, why = rung_status(engine, precision, device if engine in ("torch",) else "cpu")
        rows[(engine, precision)] = {"engine": engine, "precision": precision, "runs": ok,
                                     "reason": None if ok else why, "note": why if ok else None}
    needs_onnx = any(r["runs"] and e != "torch" for (e, _), r in rows.items())
    if needs_onnx:
        on_stage("export fp32 ONNX")
        files["fp32"] = workdir / f"{name}.onnx"
        to_onnx(ckpt.model, files["fp32"], ckpt.input_shape, model_name=name)
    if calibration is None and dataset is not None:
        calibration = dataset  # evaluated on another data set: calibrate on its training split too
    if any(r["runs"] and p == "int8" for (_, p), r in rows.items()):
        on_stage("calibrate int8")
        # The file is kept even when it misses the int8 check: the ladder shows its figures, marked.
        # The int8 check runs on the ladder's own test images, wherever the calibration images come from.
        int8_data = dict(data_root=data_root, test_limit=test_limit, enforce=False, workers=workers,
                         dataset=dataset or ckpt.dataset.get("name"), min_accuracy_ratio=threshold, **data_options)
        report = int8_export(ckpt, files["fp32"], workdir / f"{name}-int8.onnx", calibration, method=method,
                             activations=activations, **int8_data)
        files["int8"] = Path(report.path)
        result.int8 = report.to_dict()
        if rows.get(("trt", "int8"), {}).get("runs"):  # TensorRT reads only symmetric int8: a second file
            on_stage("calibrate int8 (symmetric, for TensorRT)")
            symmetric = int8_export(ckpt, files["fp32"], workdir / f"{name}-int8-s8.onnx", calibration, method=method,
                                    activations="s8", **int8_data)
            files["int8-s8"] = Path(symmetric.path)
            rows[("trt", "int8")]["int8_check"] = symmetric.check.to_dict()
            if not symmetric.check.passed:
                rows[("trt", "int8")]["note"] = f"int8 check failed: {symmetric.check.summary()}"
        if not report.check.passed:
            for (e, p), row in rows.items():
                if p == "int8" and e != "trt":
                    row["note"] = f"int8 check failed: {report.check.summary()}"

    # Accuracy: every runnable rung on the same test images; torch fp32 is the reference.
    reference_logits = None
    data = {k: v for k, v in bundle.describe().items() if k not in ("mean", "std", "class_names")}
    for (engine, precision), row in rows.items():
        if not row["runs"]:
            continue
        on_stage(f"accuracy {engine} {precision}")
        artifact = _artifact(engine, precision, ckpt, files)
        row["file"] = artifact if isinstance(artifact, str) else None
        row["size_bytes"] = Path(artifact).stat().st_size if isinstance(artifact, str) else _state_bytes(ckpt.model)
        try:
            with create_engine(engine, artifact, input_shape=ckpt.input_shape, device=device if engine != "openvino" else "cpu",
                               precision=precision, workdir=workdir,
                               **_engine_options(engine, settings)) as runner:
                metrics, logits = evaluate_engine(runner, test, bundle.num_classes, bundle.class_names)
                info = runner.describe()
        except RbenchError as exc:
            row.update(runs=False, reason=str(exc))
            continue
        reference_logits = logits if reference_logits is None else reference_logits
        agreement = compare_predictions(reference_logits, logits)
        row.update(top1=metrics["top1"], top5=metrics.get("top5"), f1_macro=metrics["f1_macro"],
                   agreement=agreement["agreement"], samples=metrics.get("samples"), seconds=metrics.get("seconds"))
        skipped = getattr(test, "skipped", None)
        if skipped:
            row["skipped_images"] = len(skipped)
        result.accuracy.append(accuracy_record(
            {**metrics, "engine": engine, "engine_info": info, "precision": precision, "device": device, "batch": 256,
             "input_shape": list(ckpt.input_shape), "reference_engine": "torch fp32", **agreement,
             "top1_delta": metrics["top1"] - rows[REFERENCE].get("top1", metrics["top1"])},
            model=name, model_config=dict(ckpt.config), dataset=data, checkpoint=str(checkpoint),
            checkpoint_epoch=ckpt.epoch, context={"study": "ladder"}, command=command))

    # MLPerf's accuracy mode: each rung's top-1 against torch fp32's, pass at `threshold` of it.
    judged = [row for row in rows.values() if row.get("top1") is not None]
    if judged and judged[0] is rows[REFERENCE]:
        for row, verdict in zip(judged, accuracy_mode(judged, threshold)):
            row.update(top1_ratio=verdict["top1_ratio"], top5_ratio=verdict["top5_ratio"], threshold=threshold,
                       passed=verdict["passed"])

    # Speed: every rung that ran, interleaved, at the latency batch and then the throughput batch.
    runnable = [(e, p) for (e, p), row in rows.items() if row["runs"]]
    items = [(_artifact(e, p, ckpt, files), e, p) for e, p in runnable]
    for timed_batch, key, timed_settings in ((batch, "latency", settings),
                                             (throughput_batch, "throughput", throughput_settings or settings)):
        if timed_batch is None:
            continue
        on_stage(f"time {len(items)} rungs at batch {timed_batch}")
        latency, comparisons = time_pairs(items, timed_batch, timed_settings, input_shape=ckpt.input_shape, name=name,
                                          workdir=workdir, on_progress=on_progress, command=command,
                                          context={"study": "ladder"})
        result.latency += latency
        result.comparisons += comparisons
        for (engine, precision), record in zip(runnable, latency):
            row = rows[(engine, precision)]
            if key == "latency":
                row.update(p50_ms=record.get("latency_ms_p50"), p50_ci=record.get("latency_ms_p50_ci"),
                           batch=timed_batch, error=record.get("error"))
            else:
                row.update(images_per_s=record.get("throughput_img_s"), throughput_batch=timed_batch)
        if key == "latency":
            for engine_precision, comparison in zip(runnable[1:], comparisons):
                modes = comparison.get("ratio_modes") if comparison["verdict"] == "unstable" else None
                rows[engine_precision].update(speedup=1.0 / comparison["ratio"] if comparison["ratio"] else None,
                                              speedup_ci=[1.0 / comparison["ratio_ci"][1], 1.0 / comparison["ratio_ci"][0]],
                                              verdict=comparison["verdict"],
                                              speedup_modes=sorted(1.0 / m for m in modes if m) if modes else None)
            rows[REFERENCE].update(speedup=1.0, speedup_ci=[1.0, 1.0], verdict="reference")
    result.rows = [rows[r] for r in rungs]
    for index in pareto_front(result.rows):
        result.rows[index]["pareto"] = True
    return result


def _tensor(array: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def _artifact(engine: str, precision: str, ckpt, files: dict[str, Path]):
    """What a rung runs: the module (torch), an int8 file (symmetric for TensorRT), or the fp32 file."""
    if engine == "torch":
        return ckpt.model
    if precision == "int8" and engine == "trt":
        return str(files["int8-s8"])
    if precision == "int8":
        return str(files["int8"])
    return str(files["fp32"])


def _engine_options(engine: str, settings) -> dict[str, Any]:
    if engine == "openvino":
        return {"threads": settings.threads}
    return {k: v for k, v in settings.engine_options(engine).items() if v is not None}


def ladder_rows_table(rows: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The rows as text cells: engine, precision, p50 [interval], img/s, size, top-1, F1, agreement, speedup."""
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    out = []
    for row in rows:
        if not row.get("runs"):
            out.append((row["engine"], row["precision"], "not run here", *[""] * (len(LADDER_COLUMNS) - 4),
                        row.get("reason") or ""))
            continue
        ci = row.get("p50_ci") or [None, None]
        p50 = f"{fmt(row.get('p50_ms'), '.3f')} [{fmt(ci[0], '.3f')}, {fmt(ci[1], '.3f')}]"
        speed = row.get("speedup")
        sci = row.get("speedup_ci") or [None, None]
        speedup = "1.00 (reference)" if (row["engine"], row["precision"]) == REFERENCE else \
            f"{fmt(speed, '.2f')}x [{fmt(sci[0], '.2f')}, {fmt(sci[1], '.2f')}] {row.get('verdict', '')}"
        if row.get("speedup_modes"):  # the ratio differed between worker processes: give each value it took
            speedup += f" ({' or '.join(f'{m:.2f}x' for m in row['speedup_modes'])} by process)"
        failed = (row.get("note") or "").startswith("int8 check failed")
        label = row["precision"] + (" (check failed)" if failed else "") + (" *" if row.get("pareto") else "")
        verdict = "-" if row.get("passed") is None else \
            f"{fmt(row.get('top1_ratio'), '.3f')} {'pass' if row['passed'] else 'FAIL'}"
        out.append((row["engine"], label, p50,
                    fmt(row.get("images_per_s"), ".0f"), fmt((row.get("size_bytes") or 0) / 2**20, ".2f"),
                    fmt(row.get("top1"), ".2%"), verdict, fmt(row.get("f1_macro"), ".3f"),
                    fmt(row.get("agreement"), ".2%"), speedup))
    return out


LADDER_COLUMNS = ("engine", "precision", "p50 ms [95% CI]", "img/s", "MiB", "top-1", "top-1 ratio (MLPerf)",
                  "macro-F1", "agrees w/ torch fp32", "speedup vs torch fp32")


def plot_ladder(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Accuracy against latency, one point per rung: the report's Pareto plot (`bench.report.figures.build_pareto`),
    with the latency interval and the test accuracy's Wilson interval as bars and every rung named in the legend, not
    beside its point, where rungs that tie on accuracy would overlap. None when no rung was both timed and scored."""
    from bench.report.figures import plot_pareto

    return plot_pareto(rows, path, title)


def write_ladder(result: LadderResult, out: str | Path, model: str, checkpoint: str | Path, settings) -> list[Path]:
    """Into `out`: the records appended; `ladder.md`, `ladder.png` (when some rung was both timed and scored) and
    `ladder.json` written whole (atomic).

    Returns the written paths.
    """
    from bench.atomic import write_text
    from bench.records.io import append_record, describe_machine, to_json

    out = Path(out)
    for record in result.records:
        append_record(record, out)
    machine = describe_machine()
    png = plot_ladder(result.rows, out / "ladder.png", f"{model} precision ladder on {machine['cpu']}")
    lines = [f"# {model}: precision ladder", "",
             f"Machine: {machine['cpu']}, {machine['cores_usable']} usable cores. Checkpoint: `{checkpoint}`.",
             f"Timing: {settings.rounds} interleaved rounds, {settings.iters} timed runs per rung. '*' marks the "
             "Pareto front. Speedups compare figures taken in this one run; only their ratios carry to other machines.",
             ""]
    notes = contention_notes(result.latency)
    if notes:
        lines += ["**Warning: contended timings.** Other work competed for the CPU while these rungs were timed; "
                  "their latencies and speedups are likely off. Rerun on a quiet machine.", "",
                  *(f"- {note}" for note in notes), ""]
    check = (result.int8 or {}).get("check")
    if check:
        ratio = "-" if check["accuracy_ratio"] is None else f"{check['accuracy_ratio']:.3f}"
        lines += [f"int8 file: {result.int8['activation_type']} activations, int8 per-channel weights, "
                  f"{result.int8['method']} calibration on {result.int8['calibration_images']} training images; "
                  f"check on {check['images']} test images {'passed' if check['passed'] else 'FAILED'} "
                  f"(agreement {check['top1_agreement']:.2%}, accuracy ratio {ratio}).", ""]
    lines += ["| " + " | ".join(LADDER_COLUMNS) + " |", "|" + "---|" * len(LADDER_COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in ladder_rows_table(result.rows)]
    write_text(out / "ladder.md", "\n".join(lines) + "\n")
    payload: dict[str, Any] = {"model": model, "checkpoint": str(checkpoint), "machine": machine,
                               "settings": settings.as_record(), "rows": result.rows, "int8": result.int8}
    write_text(out / "ladder.json", to_json(payload) + "\n")
    return [path for path in (out / "ladder.md", png, out / "ladder.json") if path is not None]
