"""Summary statistics of raw latencies: percentiles, spread, throughput, achieved FLOP/s.

Pure functions on lists of floats; the percentile is numpy's default ("linear") method,
written out so that the tests can check it against numpy as an independent reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: A coefficient of variation above this makes the CLI warn that the run was noisy.
#: trtexec warns above 1% on a quiet GPU; a shared CPU is rarely that quiet.
HIGH_CV = 0.10

PERCENTILES = (50, 90, 95, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def std(values: Sequence[float]) -> float:
    """Population standard deviation (ddof=0, numpy's default)."""
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / len(values))


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """min, mean, std, p50/p90/p95/p99, max (all in ms) and the coefficient of variation."""
    if not latencies_ms:
        raise ValueError("no latencies to summarize")
    m = mean(latencies_ms)
    s = std(latencies_ms)
    out = {"latency_ms_min": min(latencies_ms), "latency_ms_mean": m, "latency_ms_std": s}
    for q in PERCENTILES:
        out[f"latency_ms_p{q}"] = percentile(latencies_ms, q)
    out["latency_ms_max"] = max(latencies_ms)
    out["latency_cv"] = s / m if m > 0 else 0.0
    return out


def efficiency(batch: int, latency_ms: float, flops_per_image: float | None = None,
               peak_flops_s: float | None = None) -> dict[str, Any]:
    """Throughput at `latency_ms` per batch, and achieved FLOP/s and % of peak when known."""
    out: dict[str, Any] = {"throughput_img_s": batch * 1000.0 / latency_ms if latency_ms > 0 else None}
    if flops_per_image:
        achieved = flops_per_image * batch / (latency_ms / 1000.0)
        out["flops_s_achieved"] = achieved
        out["percent_of_peak"] = 100.0 * achieved / peak_flops_s if peak_flops_s else None
    return out


def summarize(latencies_ms: Sequence[float], batch: int, flops_per_image: float | None = None,
              peak_flops_s: float | None = None) -> dict[str, Any]:
    """Everything a latency record reports about one run: percentiles, CV, throughput, efficiency.

    Throughput is images over the summed timed latencies (the timed window, untimed gaps
    between iterations excluded); achieved FLOP/s uses the median, robust to stray outliers.
    """
    summary: dict[str, Any] = latency_summary(latencies_ms)
    window_s = math.fsum(latencies_ms) / 1000.0
    summary["throughput_img_s"] = batch * len(latencies_ms) / window_s if window_s > 0 else None
    eff = efficiency(batch, summary["latency_ms_p50"], flops_per_image, peak_flops_s)
    eff.pop("throughput_img_s")
    summary.update(eff)
    summary["high_variation"] = summary["latency_cv"] > HIGH_CV
    return summary
