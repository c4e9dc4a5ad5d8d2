"""Reading LoadGen's own output back: the detail log's result keys and the accuracy log's responses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import DataProblem

#: LoadGen's output files kept beside each serve record.
LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json")
#: LoadGen's percentile keys -> record field.
PERCENTILES = {"50.00": "latency_ms_p50", "90.00": "latency_ms_p90", "95.00": "latency_ms_p95",
               "97.00": "latency_ms_p97", "99.00": "latency_ms_p99", "99.90": "latency_ms_p999"}
_CHECKS = {"result_perf_constraints_met": "performance constraints (latency bound) not met",
           "result_min_duration_met": "min duration not met", "result_min_queries_met": "min queries not met",
           "early_stopping_met": "early stopping not satisfied"}


def read_detail(folder: str | Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """(last value of each key, error messages, warning messages) of `folder/mlperf_log_detail.txt`."""
    path = Path(folder) / "mlperf_log_detail.txt"
    if not path.is_file():
        raise DataProblem(f"LoadGen wrote no {path}")
    values: dict[str, Any] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG "):])
        except ValueError:
            continue
        values[entry.get("key")] = entry.get("value")
        meta = entry.get("metadata") or {}
        if meta.get("is_error"):
            errors.append(" ".join(str(entry.get("value")).split()))
        elif meta.get("is_warning"):
            warnings.append(" ".join(str(entry.get("value")).split()))
    return values, errors, warnings


def _ms(value: Any) -> float | None:
    return round(float(value) / 1e6, 4) if isinstance(value, (int, float)) else None


def summarize(folder: str | Path, scenario: str, samples_per_query: int) -> dict[str, Any]:
    """LoadGen's verdict and figures for one run, in record fields (latencies in ms, as LoadGen measured them)."""
    values, errors, warnings = read_detail(folder)
    result = values.get("result_validity")
    reasons = [why for key, why in _CHECKS.items() if values.get(key) is False]
    if values.get("result_invalid_reason"):
        reasons.append(" ".join(str(values["result_invalid_reason"]).split()))
    samples_per_s = values.get("result_completed_samples_per_sec")  # Server
    if samples_per_s is None:
        samples_per_s = values.get("result_samples_per_second")  # Offline
    if samples_per_s is None and values.get("result_qps_with_loadgen_overhead") is not None:  # SingleStream
        samples_per_s = values["result_qps_with_loadgen_overhead"] * samples_per_query
    if samples_per_s is None and values.get("result_mean_query_latency_ns"):  # MultiStream: queries back to back
        samples_per_s = samples_per_query * 1e9 / values["result_mean_query_latency_ns"]
    early = values.get("early_stopping_latency_ss") or values.get("early_stopping_latency_ms") or None
    out = {
        "result": result, "result_reasons": reasons, "samples_per_s": round(samples_per_s, 3) if samples_per_s else None,
        "queries": values.get("result_query_count"),
        "latency_ms_min": _ms(values.get("result_min_latency_ns")),
        "latency_ms_mean": _ms(values.get("result_mean_latency_ns")),
        "latency_ms_max": _ms(values.get("result_max_latency_ns")),
        "early_stopping_met": values.get("early_stopping_met"),
        "early_stopping_latency_ms": _ms(early),
        "early_stopping_note": " ".join(str(values.get("early_stopping_result") or "").split()) or None,
        "loadgen_version": values.get("loadgen_version"),
        "loadgen_errors": errors, "loadgen_warnings": warnings,
    }
    for key, field in PERCENTILES.items():
        out[field] = _ms(values.get(f"result_{key}_percentile_latency_ns"))
    if scenario == "multistream":
        out["query_latency_ms_p99"] = _ms(values.get("result_99.00_percentile_per_query_latency_ns"))
    return out


def read_accuracy_log(folder: str | Path, total: int) -> tuple[np.ndarray, np.ndarray]:
    """(qsl indices, float32 logits (N, classes)) of `folder/mlperf_log_accuracy.json`, one row per sample in
    index order; a sample LoadGen logged without data (the SUT failed on it) is a DataProblem."""
    path = Path(folder) / "mlperf_log_accuracy.json"
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataProblem(f"cannot read LoadGen's accuracy log {path}: {exc}") from None
    rows: dict[int, np.ndarray] = {}
    for entry in entries:
        data = bytes.fromhex(entry.get("data") or "")
        if not data:
            raise DataProblem(f"{path}: sample {entry.get('qsl_idx')} has no response data")
        rows[int(entry["qsl_idx"])] = np.frombuffer(data, dtype=np.float32)
    if len(rows) != total:
        raise DataProblem(f"{path} holds {len(rows)} of the {total} samples")
    order = np.array(sorted(rows), dtype=np.int64)
    return order, np.stack([rows[i] for i in order])
