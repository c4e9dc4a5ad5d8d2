"""The statistics behind intervals and verdicts, checked by simulation (seeded, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.measure.stats import (
    independent_ratio_interval,
    quantile_interval,
    ratio_interval,
    runs_needed_for_quantile_interval,
    summarize,
    verdict,
)


def skewed(rng, size, scale=1.0, sigma=0.1):
    """Latency-like samples: lognormal (a CV near 10%, noisier than the 2-5% measured on quiet runs
    here), with 3% outliers 3-10x slower."""
    x = scale * rng.lognormal(0.0, sigma, size)
    outliers = rng.random(size) < 0.03
    return np.where(outliers, x * rng.uniform(3, 10, size), x)


def test_order_statistic_interval_covers_the_true_median_at_least_95_percent():
    rng = np.random.default_rng(1)
    true_median = np.median(skewed(np.random.default_rng(99), 2_000_000))
    trials = 2000
    covered = sum(lo <= true_median <= hi for lo, hi in (quantile_interval(skewed(rng, 50), 50) for _ in range(trials)))
    coverage = covered / trials
    assert 0.93 <= coverage <= 0.995, coverage  # the binomial interval is exact or slightly conservative


def test_p99_needs_enough_runs_and_then_covers():
    assert runs_needed_for_quantile_interval(99) == 368
    rng = np.random.default_rng(2)
    assert quantile_interval(skewed(rng, 367), 99) is None
    true_p99 = np.quantile(skewed(np.random.default_rng(98), 2_000_000), 0.99)
    covered = sum(lo <= true_p99 <= hi for lo, hi in (quantile_interval(skewed(rng, 400), 99) for _ in range(500)))
    assert covered / 500 >= 0.93


def test_summary_carries_the_intervals_and_says_why_p99_has_none():
    summary = summarize(list(skewed(np.random.default_rng(3), 50)), batch=1)
    lo, hi = summary["latency_ms_p50_ci"]
    assert lo <= summary["latency_ms_p50"] <= hi
    assert summary["latency_ms_p99_ci"] is None and "368 runs" in summary["ci_note"]
    assert "order-statistic" in summary["ci_method"]


def interleaved(rng, scale_b, rounds=10, per_round=5, drift=0.15):
    """Two entries timed in rounds; each round's drift (other work, clocks) hits both alike."""
    base, new = [], []
    for _ in range(rounds):
        level = 1 + drift * rng.random()
        base.append(list(level * skewed(rng, per_round)))
        new.append(list(level * skewed(rng, per_round, scale_b)))
    return base, new


def test_a_against_a_is_rarely_called_different():
    """rbench compare's defaults (10 rounds, 5 runs each): the interval of an A/A ratio excludes 1
    about as often as a 95% interval should, and the verdict (which also needs 3%) almost never errs."""
    rng = np.random.default_rng(4)
    trials = 300
    intervals = [ratio_interval(*interleaved(rng, 1.0), resamples=400, seed=i)[1:] for i in range(trials)]
    excludes_one = sum(lo > 1 or hi < 1 for lo, hi in intervals) / trials
    false_positive = sum(verdict(lo, hi) != "no measurable difference" for lo, hi in intervals) / trials
    assert excludes_one <= 0.10, excludes_one
    assert false_positive <= 0.05, false_positive


def test_a_20_percent_shift_is_detected_at_the_presets_sample_sizes():
    rng = np.random.default_rng(5)
    for rounds, per_round in ((10, 5), (10, 3)):  # 50 runs (latency's default); 30 (compare's)
        verdicts = [verdict(*ratio_interval(*interleaved(rng, 1.2, rounds, per_round), resamples=400, seed=i)[1:])
                    for i in range(200)]
        assert sum(v == "slower" for v in verdicts) / 200 >= 0.95, (rounds, per_round)
        verdicts = [verdict(*ratio_interval(*interleaved(rng, 1 / 1.2, rounds, per_round), resamples=400, seed=i)[1:])
                    for i in range(200)]
        assert sum(v == "faster" for v in verdicts) / 200 >= 0.95


def test_ratio_interval_of_uneven_rounds_and_of_independent_samples():
    rng = np.random.default_rng(6)
    base = [list(skewed(rng, n)) for n in (8, 12, 9)]
    new = [list(2 * skewed(rng, n)) for n in (11, 7, 10)]
    ratio, lo, hi = ratio_interval(base, new, resamples=300)
    assert lo <= ratio <= hi and 1.5 < ratio < 2.7
    ratio, lo, hi = independent_ratio_interval(skewed(rng, 60), 1.5 * skewed(rng, 60), resamples=500)
    assert lo < ratio < hi and lo > 1.2
    with pytest.raises(ValueError):
        ratio_interval([[1.0]], [[1.0], [2.0]])


@pytest.mark.parametrize("low, high, expected", [
    (1.05, 1.10, "slower"), (0.90, 0.96, "faster"), (0.98, 1.02, "no measurable difference"),
    (1.01, 1.02, "no measurable difference"), (0.80, 1.30, "no measurable difference"),
])
def test_verdict_needs_the_whole_interval_beyond_the_threshold(low, high, expected):
    assert verdict(low, high, 0.03) == expected
