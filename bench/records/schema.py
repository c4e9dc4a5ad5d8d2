"""The record schema in one place: the header every record has, the record kinds and each kind's fields.

`validate_record` checks a record against it. Both `bench.records.io` (which writes and reads records)
and `bench.records.builders` (one builder per kind) stand on this module; it imports neither.
"""

from __future__ import annotations

import json
import re
from typing import Any

SCHEMA = "rbench.record/1"

#: Every record has these keys; `validate_record` checks them and their types.
REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "kind": str,
    "timestamp": str,
    "machine": dict,
    "rbench_version": str,
    "git_commit": (str, type(None)),
    "command": (str, type(None)),
}

#: Metric names whose values must be finite numbers (or null) when present; the unit is in the name.
#: Descriptive fields beside them (`memory_kind`, `counters_warning`) are free-form.
NUMERIC_METRIC = re.compile(
    r"^(latency_ms_(min|mean|std|max|p\d+)|latency_cv|throughput_img_s|macs|flops|params|top[15]|top1_delta"
    r"|flops_s_achieved|flops_per_mac|percent_of_peak|memory_peak_bytes|memory_bandwidth_bytes_s)$"
)

KINDS = {"export", "engine_build", "latency", "throughput", "flops", "accuracy", "train", "device", "parity",
         "comparison", "cost_split", "serve"}

#: The fields each kind carries beyond the header; `validate_record` checks them.
FIELDS: dict[str, tuple[str, ...]] = {
    "latency": (
        "model", "source", "model_config", "engine", "engine_info", "precision", "device", "batch", "input_shape",
        "params", "macs", "flops", "settings", "latency_ms_min", "latency_ms_mean", "latency_ms_std",
        "latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "latency_ms_max", "latency_cv",
        "latency_ms_p50_ci", "latency_ms_p99_ci", "ci_method", "ci_note", "rounds", "high_variation",
        "throughput_img_s", "flops_s_achieved", "percent_of_peak", "peak_flops_s", "peak_source",
        "iters", "warmup_iters", "warmup_s", "timed_wall_s", "include_transfers", "timer", "memory_peak_bytes",
        "peak_memory_source", "latencies_ms", "load_average_after", "contention", "error",
    ),
    "throughput": (
        "model", "source", "model_config", "engine", "engine_info", "precision", "device", "batch", "input_shape",
        "params", "macs", "flops", "settings", "throughput_img_s", "latency_ms_p50", "latency_ms_p50_ci", "flops_s_achieved",
        "percent_of_peak", "peak_flops_s", "memory_peak_bytes", "load_average_after", "contention", "sweep", "error",
    ),
    "flops": (
        "model", "source", "model_config", "input_shape", "batch", "params", "macs", "flops", "flops_per_mac",
        "counters_agree", "counters_warning", "counters", "units",
    ),
    "export": (
        "model", "source", "model_config", "engine", "precision", "batch", "input_shape", "opset", "exporter",
        "fallback_reason", "onnx_sha256", "onnx_bytes", "export_seconds", "parity", "parity_passed",
        "parity_max_abs_err", "parity_max_rel_err", "parity_min_cosine", "parity_top1_agreement", "warnings",
        "engine_build_seconds",
    ),
    "accuracy": (
        "model", "model_config", "engine", "engine_info", "precision", "device", "batch", "input_shape", "split",
        "dataset", "checkpoint", "checkpoint_epoch", "samples", "top1", "top5", "precision_macro", "recall_macro",
        "f1_macro", "per_class", "confusion_matrix", "seconds", "reference_engine", "top1_delta", "agreement",
        "max_abs_logit_diff", "mean_abs_logit_diff",
        # Per-image correctness in test-split order (`bench.accuracy.metrics.encode_correct`): the paired bootstrap of
        # an accuracy difference (`bench.report.stats`); None in records written before it, or beyond 200,000 images.
        "correct_bits",
        # Accuracy mode (MLPerf's rule, `bench.accuracy.evaluate.accuracy_mode`) and the data pass: set by `rbench accuracy`.
        "top1_ratio", "top5_ratio", "threshold", "passed", "images_per_s", "wall_s", "skipped_images",
    ),
    "train": (
        "model", "model_config", "engine", "device", "dataset", "train_config", "batch", "history", "epochs",
        "best_epoch", "best_val_acc", "stopped_early", "train_img_s", "train_seconds", "train_images_per_epoch",
        "final_train_error", "final_val_error", "params", "checkpoint", "curves_png", "resumed",
        # Data-parallel training (`bench.train.distributed`): 1 / None / batch in one process.
        "world_size", "backend", "batch_per_process", "rank_train_img_s", "lr_rule",
    ),
    "device": ("slug", "peaks", "cache"),
    "engine_build": (
        "model", "source", "model_config", "engine", "precision", "input_shape", "tensorrt_version", "gpu",
        "compute_capability", "batch_range", "cache_key", "reused", "engine_build_seconds", "timing_cache_hit",
        "warnings",
    ),
    # Where a dynamic-conv net's latency goes, per DynamicConv2d part (`bench.scenarios.dynamic_cost`).
    "cost_split": (
        "model", "model_config", "engine", "device", "batch", "input_shape", "threads", "iters", "rounds", "layers",
        "total_ms", "total_flops", "parts_sum_ms", "other_ms", "extra_ms", "extra_ms_by_part", "extra_share",
    ),
    "comparison": (
        "baseline", "candidate", "batch", "precision", "device", "metric", "ratio", "ratio_ci", "ci_method",
        "verdict", "threshold", "rounds", "interleaved", "settings_differ",
    ),
    # one LoadGen run (`bench.scenarios.serve`): its settings, LoadGen's verdict and files
    "serve": (
        "model", "source", "model_config", "engine", "engine_info", "precision", "device", "input_shape", "dataset",
        "scenario", "mode", "options", "loadgen_settings", "workers", "threads", "max_batch", "batch_timeout_ms",
        "pinned_cores", "batch_sizes", "warmup_ms", "target_qps", "latency_bound_ms", "samples_per_query",
        # LoadGen's verdict as it reports it, and whether MLPerf's rules would accept the run (not shortened).
        "result", "result_reasons", "mlperf_valid", "shortened", "samples_per_s", "queries", "latency_ms_min",
        "latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p97", "latency_ms_p99",
        "latency_ms_p999", "latency_ms_max", "query_latency_ms_p99", "early_stopping_met", "early_stopping_latency_ms",
        "early_stopping_note", "loadgen_version", "loadgen_errors", "loadgen_warnings", "loadgen_dir", "loadgen_files",
        # accuracy mode: LoadGen's accuracy log scored against the labels and against torch fp32
        "samples", "top1", "top5", "reference_engine", "agreement", "max_abs_logit_diff", "mean_abs_logit_diff",
        # --find-peak: the highest VALID target QPS, its neighbours and every step
        "peak_qps", "peak_valid_below", "peak_invalid_above", "peak_search",
    ),
}

#: Fields a kind's builder always writes but older records lack (`validate_record` does not require them):
#: how the figures were timed (in fresh worker processes, or in this process) and what the workers showed.
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "latency": ("timing_mode", "workers", "worker_rounds", "worker_medians_ms", "unstable", "modes_ms", "mode_workers",
                "slow_periods", "period_modes_ms", "period_rounds", "precision_target", "target_met", "thread_check"),
    "comparison": ("timing_mode", "workers", "unstable", "note", "ratio_modes", "precision_target", "target_met"),
}

#: What a study adds to any record: which unit, study and settings it belongs to.
STUDY_FIELDS = ("unit", "study", "label", "group", "preset", "act", "channels", "eval_channels", "eval_channel_mode",
                "unit_seconds", "accuracy_only")


def validate_record(record: dict[str, Any]) -> None:
    """Raise ValueError if `record` breaks the schema: missing header or kind fields, wrong types, NaN metrics."""
    for key, types in REQUIRED_FIELDS.items():
        if key not in record:
            raise ValueError(f"record lacks {key!r}")
        if not isinstance(record[key], types):
            raise ValueError(f"record field {key!r} has type {type(record[key]).__name__}")
    if record["schema"] != SCHEMA:
        raise ValueError(f"record schema {record['schema']!r} is not {SCHEMA!r}")
    if record["kind"] not in KINDS:
        raise ValueError(f"record kind {record['kind']!r} is unknown")
    for key in ("cpu", "cores_logical", "versions"):
        if key not in record["machine"]:
            raise ValueError(f"record machine description lacks {key!r}")
    missing = [key for key in FIELDS.get(record["kind"], ()) if key not in record]
    if missing:
        raise ValueError(f"{record['kind']} record lacks {', '.join(map(repr, missing))} (build it with bench.records.builders)")
    for key, value in record.items():
        if NUMERIC_METRIC.match(key) and value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"metric {key!r} must be a number, got {type(value).__name__}")
            if value != value:  # NaN
                raise ValueError(f"metric {key!r} is NaN")
    json.dumps(record, allow_nan=False)  # must be plain JSON
