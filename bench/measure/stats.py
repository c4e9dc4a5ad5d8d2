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
    """Everything a latency record reports about one run: percentiles and their intervals, CV,
    throughput, efficiency.

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
    summary["latency_ms_p50_ci"] = _interval(latencies_ms, 50)
    summary["latency_ms_p99_ci"] = _interval(latencies_ms, 99)
    summary["ci_method"] = QUANTILE_CI_METHOD
    if summary["latency_ms_p99_ci"] is None:
        summary["ci_note"] = (f"no p99 interval: a distribution-free 95% interval for p99 needs at least "
                              f"{runs_needed_for_quantile_interval(99)} runs, this run had {len(latencies_ms)}")
    else:
        summary["ci_note"] = None
    return summary


def _interval(values: Sequence[float], q: float) -> list[float] | None:
    bounds = quantile_interval(values, q)
    return None if bounds is None else [bounds[0], bounds[1]]


# -- intervals and verdicts ----------------------------------------------------------------------
CONFIDENCE = 0.95
QUANTILE_CI_METHOD = "order-statistic interval (binomial, distribution-free), 95%"
RATIO_CI_METHOD = "bootstrap of the ratio of medians over paired rounds (2000 resamples, percentile), 95%"
INDEPENDENT_RATIO_CI_METHOD = "bootstrap of the ratio of medians, each sample resampled (2000 resamples, percentile), 95%"
#: A ratio whose interval stays within 1 +/- this is "no measurable difference".
DEFAULT_THRESHOLD = 0.03


def runs_needed_for_quantile_interval(q: float, confidence: float = CONFIDENCE) -> int:
    """The fewest runs for which `quantile_interval` can bound the q-th percentile on both sides."""
    alpha = (1 - confidence) / 2
    p = q / 100.0
    return max(math.ceil(math.log(alpha) / math.log(max(p, 1 - p))), 1)


def quantile_interval(values: Sequence[float], q: float, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """A distribution-free interval for the q-th percentile: two order statistics that cover it with
    probability >= `confidence` whatever the distribution (the binomial argument), or None when
    there are too few values to bound it on both sides."""
    from scipy.stats import binom

    n, p, alpha = len(values), q / 100.0, (1 - confidence) / 2
    if n == 0:
        return None
    low = int(binom.ppf(alpha, n, p))  # P(true quantile < x_(low)) = F(low - 1) < alpha
    high = int(binom.ppf(1 - alpha, n, p)) + 1  # P(true quantile >= x_(high)) = 1 - F(high - 1) <= alpha
    if low < 1 or high > n:
        return None
    ordered = sorted(values)
    return float(ordered[low - 1]), float(ordered[high - 1])


def ratio_interval(base_rounds: Sequence[Sequence[float]], new_rounds: Sequence[Sequence[float]],
                   confidence: float = CONFIDENCE, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(ratio, low, high): the ratio of medians new/base and its bootstrap interval over paired rounds.

    The two were measured interleaved, round by round, so a round is the unit that drift and
    neighbours hit alike: each resample draws rounds with replacement (the same rounds for
    both) and compares the medians of the pooled latencies.
    """
    import numpy as np

    if len(base_rounds) != len(new_rounds) or not base_rounds:
        raise ValueError("ratio_interval needs the same (non-zero) number of rounds on both sides")
    ratio = float(np.median(np.concatenate(new_rounds)) / np.median(np.concatenate(base_rounds)))
    rng = np.random.default_rng(seed)
    rounds = len(base_rounds)
    picks = rng.integers(0, rounds, size=(resamples, rounds))
    if len({len(r) for r in base_rounds}) == 1 and len({len(r) for r in new_rounds}) == 1:
        # Equal rounds (iterations split evenly): gather all resamples at once.
        base = np.asarray(base_rounds, dtype=float)[picks].reshape(resamples, -1)
        new = np.asarray(new_rounds, dtype=float)[picks].reshape(resamples, -1)
        ratios = np.median(new, axis=1) / np.median(base, axis=1)
    else:  # rounds of a --duration run differ in length
        ratios = np.array([np.median(np.concatenate([new_rounds[j] for j in pick])) /
                           np.median(np.concatenate([base_rounds[j] for j in pick])) for pick in picks])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return ratio, float(low), float(high)


def independent_ratio_interval(base: Sequence[float], new: Sequence[float], confidence: float = CONFIDENCE,
                               resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(ratio, low, high) of medians new/base for two samples taken apart (two records of two runs):
    each sample is resampled on its own. Drift between the runs is not in this interval."""
    import numpy as np

    base, new = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    if base.size == 0 or new.size == 0:
        raise ValueError("independent_ratio_interval needs latencies on both sides")
    rng = np.random.default_rng(seed)
    base_medians = np.median(rng.choice(base, size=(resamples, base.size)), axis=1)
    new_medians = np.median(rng.choice(new, size=(resamples, new.size)), axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(new_medians / base_medians, [alpha, 1 - alpha])
    return float(np.median(new) / np.median(base)), float(low), float(high)


def verdict(low: float, high: float, threshold: float = DEFAULT_THRESHOLD) -> str:
    """'slower' / 'faster' when the whole interval of new/base lies beyond 1 +/- threshold,
    else 'no measurable difference' (at that threshold)."""
    if low > 1 + threshold:
        return "slower"
    if high < 1 - threshold:
        return "faster"
    return "no measurable difference"


def split_rounds(latencies: Sequence[float], rounds: int | None) -> list[list[float]] | None:
    """The rounds of an interleaved run back from its pooled latencies (equal rounds, in order), or None."""
    if not rounds or rounds < 2 or len(latencies) % rounds:
        return None
    size = len(latencies) // rounds
    return [list(latencies[i * size:(i + 1) * size]) for i in range(rounds)]


def compare_latencies(base: Sequence[float], new: Sequence[float], base_rounds: int | None = None,
                      new_rounds: int | None = None, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """new/base median ratio with its interval and verdict: over paired rounds when both were timed
    interleaved in the same rounds, else with each sample resampled on its own."""
    paired = base_rounds == new_rounds and split_rounds(base, base_rounds) and split_rounds(new, new_rounds)
    if paired:
        ratio, low, high = ratio_interval(split_rounds(base, base_rounds), split_rounds(new, new_rounds))
        method = RATIO_CI_METHOD
    else:
        ratio, low, high = independent_ratio_interval(base, new)
        method = INDEPENDENT_RATIO_CI_METHOD
    return {"ratio": ratio, "low": low, "high": high, "verdict": verdict(low, high, threshold), "method": method,
            "threshold": threshold}
