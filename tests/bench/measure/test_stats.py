"""bench.measure.stats against numpy, the independent reference."""

from __future__ import annotations

import numpy as np
import pytest

from bench.measure.stats import HIGH_CV, efficiency, latency_summary, percentile, summarize

SAMPLES = [
    [5.0],
    [1.0, 2.0],
    [3.0, 1.0, 2.0, 10.0],
    list(np.random.default_rng(0).lognormal(0.0, 0.5, size=101)),
    list(np.random.default_rng(1).exponential(2.0, size=1000)),
]


@pytest.mark.parametrize("values", SAMPLES, ids=lambda v: f"n{len(v)}")
@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_percentile_matches_numpy(values, q):
    assert percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("values", SAMPLES[1:], ids=lambda v: f"n{len(v)}")
def test_summary_matches_numpy(values):
    s = latency_summary(values)
    a = np.asarray(values)
    assert s["latency_ms_min"] == a.min() and s["latency_ms_max"] == a.max()
    assert s["latency_ms_mean"] == pytest.approx(a.mean(), rel=1e-12)
    assert s["latency_ms_std"] == pytest.approx(a.std(), rel=1e-9)  # population std, numpy's ddof=0
    for q in (50, 90, 95, 99):
        assert s[f"latency_ms_p{q}"] == pytest.approx(np.percentile(a, q), rel=1e-12)
    assert s["latency_cv"] == pytest.approx(a.std() / a.mean(), rel=1e-9)


def test_throughput_flops_and_peak():
    out = summarize([2.0, 2.0, 2.0, 2.0], batch=8, flops_per_image=1e9, peak_flops_s=8e12)
    assert out["throughput_img_s"] == pytest.approx(8 / 0.002)
    assert out["flops_s_achieved"] == pytest.approx(8e9 / 0.002)
    assert out["percent_of_peak"] == pytest.approx(50.0)
    assert out["high_variation"] is False
    assert efficiency(1, 4.0)["throughput_img_s"] == pytest.approx(250.0)
    assert "flops_s_achieved" not in efficiency(1, 4.0)


def test_high_variation_is_flagged():
    noisy = summarize([1.0, 1.0, 1.0, 3.0], batch=1)
    assert noisy["latency_cv"] > HIGH_CV and noisy["high_variation"] is True


def test_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        latency_summary([])
