"""One builder per record kind, used by the CLI and the studies alike, so their records agree key for key.

Each builder returns a validated record (`bench.records.io.make_record`) whose keys are exactly
`FIELDS[kind]`, plus the header (schema, time, machine, commit, command) and any study context
(`STUDY_FIELDS`: the suite says which unit and study a record belongs to). A missing value is
`None`, never a missing key, so tables and diffs can rely on the keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.records.io import make_record
from bench.records.schema import FIELDS, OPTIONAL_FIELDS, STUDY_FIELDS

_LATENCY_SUMMARY = ("latency_ms_min", "latency_ms_mean", "latency_ms_std", "latency_ms_p50", "latency_ms_p90",
                    "latency_ms_p95", "latency_ms_p99", "latency_ms_max", "latency_cv", "latency_ms_p50_ci",
                    "latency_ms_p99_ci", "ci_method", "ci_note", "high_variation", "throughput_img_s",
                    "flops_s_achieved", "percent_of_peak")


def _record(kind: str, values: dict[str, Any], context: dict[str, Any] | None, command: str | None) -> dict[str, Any]:
    allowed = FIELDS[kind] + OPTIONAL_FIELDS.get(kind, ())
    unknown = sorted(set(values) - set(allowed))
    if unknown:  # a builder bug, not a user error
        raise ValueError(f"{kind} record has no field(s) {unknown}")
    extra = dict(context or {})
    stray = sorted(set(extra) - set(STUDY_FIELDS))
    if stray:
        raise ValueError(f"study context has unknown field(s) {stray}; allowed: {STUDY_FIELDS}")
    fields = {key: values.get(key) for key in allowed}
    return make_record(kind, command=command, **fields, **extra)


def _model_fields(source: dict[str, Any], model_config: dict[str, Any] | None) -> dict[str, Any]:
    return {"model": source["name"], "source": source, "model_config": model_config}


def latency_record(*, source: dict[str, Any], model_config: dict[str, Any] | None, engine: str,
                   engine_info: dict[str, Any], precision: str, device: str, batch: int, input_shape: Sequence[int],
                   profile: dict[str, Any], settings: dict[str, Any], run: dict[str, Any] | None = None,
                   summary: dict[str, Any] | None = None, peak_flops_s: float | None = None,
                   peak_source: str | None = None, load_average: list[float] | None = None,
                   contention: dict[str, Any] | None = None, error: str | None = None,
                   context: dict[str, Any] | None = None, command: str | None = None,
                   timing: dict[str, Any] | None = None) -> dict[str, Any]:
    """One timed run (`bench.measure.timing.measure_latency`'s `run`, `bench.measure.stats.summarize`'s `summary`),
    or an `error` (out of memory at this batch) with every metric None. `timing`: how it was timed
    (`OPTIONAL_FIELDS["latency"]`: timing_mode "workers" or "in-process", per-worker medians, modes, target)."""
    values = {**(timing or {}), **_model_fields(source, model_config), "engine": engine, "engine_info": engine_info,
              "precision": precision, "device": device, "batch": batch, "input_shape": list(input_shape),
              "params": profile.get("params"), "macs": profile.get("macs"), "flops": profile.get("flops"),
              "settings": settings, "peak_flops_s": peak_flops_s, "peak_source": peak_source,
              "load_average_after": load_average, "contention": contention, "error": error}
    if run is not None and summary is not None:
        values.update({k: summary.get(k) for k in _LATENCY_SUMMARY})
        values.update(iters=run["iters"], warmup_iters=run["warmup_iters"], warmup_s=round(run["warmup_s"], 4),
                      timed_wall_s=round(run["timed_wall_s"], 4), include_transfers=run["include_transfers"],
                      timer=run["timer"], memory_peak_bytes=run["memory_peak_bytes"],
                      peak_memory_source=run["memory_kind"], latencies_ms=[round(v, 5) for v in run["latencies_ms"]],
                      rounds=run.get("rounds", 1))
    return _record("latency", values, context, command)


def throughput_record(latency_records: Sequence[dict[str, Any]], *, context: dict[str, Any] | None = None,
                      command: str | None = None) -> dict[str, Any]:
    """The best images/s of one engine over a batch sweep (its latency records), with the sweep itself."""
    first = latency_records[0]
    values = {k: first[k] for k in ("model", "source", "model_config", "engine", "engine_info", "precision", "device",
                                    "input_shape", "params", "macs", "flops", "settings")}
    values["sweep"] = [{"batch": r["batch"], "throughput_img_s": r["throughput_img_s"],
                        "latency_ms_p50": r["latency_ms_p50"], "error": r["error"]} for r in latency_records]
    ok = [r for r in latency_records if not r["error"]]
    if ok:
        best = max(ok, key=lambda r: r["throughput_img_s"])
        values.update({k: best[k] for k in ("batch", "throughput_img_s", "latency_ms_p50", "latency_ms_p50_ci",
                                            "flops_s_achieved",
                                            "percent_of_peak", "memory_peak_bytes", "peak_flops_s",
                                            "load_average_after", "contention")})
    else:
        values["error"] = "every batch size failed"
    return _record("throughput", values, context, command)


def flops_record(*, source: dict[str, Any], model_config: dict[str, Any] | None, input_shape: Sequence[int],
                 params: int | None, macs: int | None, flops: int | None, counters_agree: bool | None,
                 counters_warning: str | None, counters: dict[str, str], batch: int = 1,
                 context: dict[str, Any] | None = None, command: str | None = None,
                 per_module: dict[str, Any] | None = None) -> dict[str, Any]:
    """Params, MACs and FLOPs of one image; `counters` names the counter behind each figure."""
    values = {**_model_fields(source, model_config), "input_shape": list(input_shape), "batch": batch,
              "params": params, "macs": macs, "flops": flops,
              "flops_per_mac": flops / macs if flops is not None and macs else None,
              "counters_agree": counters_agree, "counters_warning": counters_warning, "counters": counters,
              "units": {"macs": "multiply-accumulates", "flops": "floating-point operations, 2 per multiply-accumulate",
                        "params": "every parameter, trainable or not"}}
    record = _record("flops", values, context, command)
    if per_module is not None:
        record["per_module"] = per_module
    return record


def export_record(report: Any, *, source: dict[str, Any], model_config: dict[str, Any] | None, engine: str,
                  input_shape: Sequence[int], batch: int | None, engine_report: Any = None,
                  context: dict[str, Any] | None = None, command: str | None = None) -> dict[str, Any]:
    """An ONNX export (`export.ExportReport`) with its parity figures, and the TensorRT build time if any."""
    parity = report.parity
    worst = parity.worst if parity is not None else None
    values = {**_model_fields(source, model_config), "engine": engine, "precision": report.precision, "batch": batch,
              "input_shape": list(input_shape), "opset": report.opset, "exporter": report.exporter,
              "fallback_reason": report.fallback_reason, "onnx_sha256": report.onnx_sha256,
              "onnx_bytes": report.onnx_bytes, "export_seconds": report.export_seconds,
              "parity": parity.to_dict() if parity is not None else None,
              "parity_passed": parity.passed if parity is not None else None,
              "parity_max_abs_err": worst.max_abs_err if worst else None,
              "parity_max_rel_err": worst.max_rel_err if worst else None,
              "parity_min_cosine": worst.min_cosine if worst else None,
              "parity_top1_agreement": min(b.top1_agreement for b in parity.batches) if parity is not None else None,
              "warnings": list(getattr(report, "warnings", None) or []),
              "engine_build_seconds": engine_report.build_seconds if engine_report is not None else None}
    return _record("export", values, context, command)


def engine_build_record(engine_report: Any, *, source: dict[str, Any], model_config: dict[str, Any] | None,
                        precision: str, input_shape: Sequence[int], command: str | None = None) -> dict[str, Any]:
    """A TensorRT engine build (`export.tensorrt.EngineReport`): what was built, where, reused or not."""
    values = {**_model_fields(source, model_config), "engine": "trt", "precision": precision,
              "input_shape": list(input_shape), "tensorrt_version": engine_report.tensorrt_version,
              "gpu": engine_report.gpu_name, "compute_capability": engine_report.compute_capability,
              "batch_range": [engine_report.profile[k][0] for k in ("min", "opt", "max")],
              "cache_key": engine_report.cache_key, "reused": engine_report.reused,
              "engine_build_seconds": engine_report.build_seconds, "timing_cache_hit": engine_report.timing_cache_hit,
              "warnings": list(getattr(engine_report, "warnings", None) or [])}
    return _record("engine_build", values, None, command)


#: Above this many classes an accuracy record leaves out the confusion matrix (its per-class figures stay).
MAX_CONFUSION_CLASSES = 100


def accuracy_record(result: dict[str, Any], *, model: str, model_config: dict[str, Any] | None,
                    dataset: dict[str, Any], checkpoint: str | None = None, checkpoint_epoch: int | None = None,
                    split: str = "test", context: dict[str, Any] | None = None,
                    command: str | None = None) -> dict[str, Any]:
    """One engine's accuracy (`bench.accuracy.evaluate.evaluate_checkpoint`'s result dict) on a data set."""
    values = {k: result.get(k) for k in FIELDS["accuracy"] if k in result}
    matrix = values.get("confusion_matrix")
    if matrix is not None and len(matrix) > MAX_CONFUSION_CLASSES:
        # ImageNet's 1000x1000 matrix would make each record line megabytes; per_class keeps each class's figures.
        values["confusion_matrix"] = None
    values.update(model=model, model_config=model_config, dataset=dataset, checkpoint=checkpoint,
                  checkpoint_epoch=checkpoint_epoch, split=split)
    return _record("accuracy", values, context, command)


def train_record(result: Any, *, model: str, model_config: dict[str, Any] | None, dataset: dict[str, Any],
                 train_config: dict[str, Any], params: int, train_images_per_epoch: int | None,
                 resumed: bool = False, context: dict[str, Any] | None = None,
                 command: str | None = None) -> dict[str, Any]:
    """A training run (`bench.train.loop.TrainResult`) with its learning curves and final errors."""
    history = [{k: v for k, v in dict(row).items() if isinstance(v, (int, float, str, type(None)))}
               for row in result.history or []]
    last = history[-1] if history else {}
    values = {"model": model, "model_config": model_config, "engine": "torch", "device": train_config.get("device"),
              "dataset": dataset, "train_config": train_config, "batch": train_config.get("batch_size"),
              "history": history, "epochs": len(history), "best_epoch": result.best_epoch,
              "best_val_acc": result.best_val_acc, "stopped_early": result.stopped_early,
              "train_img_s": round(result.train_img_s, 1), "train_seconds": round(result.seconds, 2),
              "train_images_per_epoch": train_images_per_epoch,
              "final_train_error": 1.0 - last["train_acc"] if "train_acc" in last else None,
              "final_val_error": 1.0 - last["val_acc"] if "val_acc" in last else None,
              "params": params, "checkpoint": str(result.best_checkpoint),
              "curves_png": str(result.curves_png) if result.curves_png else None, "resumed": resumed,
              "world_size": 1, "backend": None, "batch_per_process": train_config.get("batch_size"),
              "rank_train_img_s": None, "lr_rule": None}
    parallel = getattr(result, "distributed", None) or {}
    values.update({k: v for k, v in parallel.items() if k in FIELDS["train"]})
    return _record("train", values, context, command)


def device_record(*, slug: str, peaks: dict[str, Any], cache: dict[str, str], command: str | None = None) -> dict[str, Any]:
    """This machine's measured peaks (`bench.measure.device.device_peak`) and where they are cached."""
    return _record("device", {"slug": slug, "peaks": peaks, "cache": cache}, None, command)


def _entry(record: dict[str, Any]) -> dict[str, Any]:
    """What identifies one side of a comparison."""
    return {"model": record["model"], "source": record["source"], "engine": record["engine"],
            "precision": record["precision"], "batch": record["batch"], "input_shape": record["input_shape"],
            "latency_ms_p50": record["latency_ms_p50"], "latency_ms_p50_ci": record["latency_ms_p50_ci"]}


def comparison_record(baseline: dict[str, Any], candidate: dict[str, Any], *, ratio: float, low: float, high: float,
                      ci_method: str, verdict: str, threshold: float, rounds: int | None, interleaved: bool,
                      settings_differ: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
                      command: str | None = None, timing: dict[str, Any] | None = None) -> dict[str, Any]:
    """candidate / baseline p50 latency (two "latency" records) with its interval and verdict; `timing` as
    `OPTIONAL_FIELDS["comparison"]` (worker timing, "unstable" and its note)."""
    values = {**(timing or {}), "baseline": _entry(baseline), "candidate": _entry(candidate), "batch": candidate["batch"],
              "precision": candidate["precision"], "device": candidate["device"], "metric": "latency_ms_p50",
              "ratio": ratio, "ratio_ci": [low, high], "ci_method": ci_method, "verdict": verdict,
              "threshold": threshold, "rounds": rounds, "interleaved": interleaved,
              "settings_differ": settings_differ or {}}
    return _record("comparison", values, context, command)


def cost_split_record(split: dict[str, Any], *, model: str, model_config: dict[str, Any] | None, device: str = "cpu",
                      context: dict[str, Any] | None = None, command: str | None = None) -> dict[str, Any]:
    """A `bench.scenarios.dynamic_cost.dynamic_cost_split` result (eager PyTorch: engine "torch") as a record."""
    values = {key: split[key] for key in FIELDS["cost_split"] if key in split}
    values.update(model=model, model_config=model_config, engine="torch", device=device)
    return _record("cost_split", values, context, command)


# -- serve: one LoadGen run (`bench.scenarios.serve.run.serve`) ---------------------------------------------
def serve_record(*, source: dict[str, Any], model_config: dict[str, Any] | None, engine: str,
                 engine_info: dict[str, Any] | None, precision: str, device: str, input_shape: Sequence[int],
                 dataset: dict[str, Any], scenario: str, mode: str, options: dict[str, Any], workers: int,
                 threads: int | None, max_batch: int, batch_timeout_ms: float, pinned_cores: Any,
                 batch_sizes: dict[int, int], warmup: dict[str, float], result: dict[str, Any],
                 accuracy: dict[str, Any] | None = None, peak_steps: Sequence[dict[str, Any]] | None = None,
                 out: str | None = None, context: dict[str, Any] | None = None,
                 command: str | None = None) -> dict[str, Any]:
    """A LoadGen run's record: `result` is `bench.scenarios.serve.loadgen_log.summarize`'s dict plus the settings
    LoadGen ran with; `accuracy` the scored accuracy log; `peak_steps` every step of a Server peak search."""
    from pathlib import Path

    values = {**_model_fields(source, model_config), "engine": engine, "engine_info": engine_info,
              "precision": precision, "device": device, "input_shape": list(input_shape), "dataset": dataset,
              "scenario": scenario, "mode": mode, "options": options, "workers": workers, "threads": threads,
              "max_batch": max_batch, "batch_timeout_ms": batch_timeout_ms, "pinned_cores": pinned_cores,
              "batch_sizes": {str(k): v for k, v in batch_sizes.items()}, "warmup_ms": warmup, "loadgen_dir": out}
    values.update({k: v for k, v in result.items() if k in FIELDS["serve"]})
    values.update({k: v for k, v in (accuracy or {}).items() if k in FIELDS["serve"]})
    if peak_steps:
        values["peak_search"] = [{k: step.get(k) for k in ("target_qps", "result", "result_reasons", "samples_per_s",
                                                            "latency_ms_p99", "queries")}
                                 | {"loadgen_dir": str(Path(step["loadgen_files"]["mlperf_log_summary.txt"]).parent)
                                    if step.get("loadgen_files", {}).get("mlperf_log_summary.txt") else None}
                                 for step in peak_steps]
        valid = sorted(s["target_qps"] for s in peak_steps if s["result"] == "VALID")
        peak = valid[-1] if valid else None
        values["peak_qps"] = peak
        values["peak_valid_below"] = max((q for q in valid if q < peak), default=None) if peak else None
        values["peak_invalid_above"] = min((s["target_qps"] for s in peak_steps
                                            if s["result"] != "VALID" and (peak is None or s["target_qps"] > peak)),
                                           default=None)
        values["loadgen_dir"] = str(Path(result["loadgen_files"]["mlperf_log_summary.txt"]).parent) \
            if result.get("loadgen_files", {}).get("mlperf_log_summary.txt") else out
    return _record("serve", values, context, command)
