"""The device peak: measured, positive, cached per machine, refreshed on request."""

from __future__ import annotations

import pytest

from bench.measure.device import cache_path, describe_device, device_peak, measure_peak, peak_flops_for


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path))
    return tmp_path


def test_cpu_peak_is_measured_and_cached(cache):
    first = device_peak("cpu", budget_s=0.02, size=256)
    assert first["cached"] is False
    assert first["peak_flops_s_fp32"] > 1e8 and first["memory_bandwidth_bytes_s"] > 1e8
    assert cache_path("cpu").parent == cache and cache_path("cpu").exists()
    second = device_peak("cpu", budget_s=0.02, size=256)
    assert second["cached"] is True and second["peak_flops_s_fp32"] == first["peak_flops_s_fp32"]
    third = device_peak("cpu", refresh=True, budget_s=0.02, size=256)
    assert third["cached"] is False


def test_peak_for_precision_falls_back_to_fp32():
    peak = {"peak_flops_s_fp32": 1.0, "peak_flops_s_fp16": 4.0}
    assert peak_flops_for(peak, "fp16") == 4.0
    assert peak_flops_for(peak, "bf16") == 1.0
    assert peak_flops_for(None, "fp32") is None


def test_describe_device_names_the_machine():
    machine = describe_device()
    assert machine["slug"] and machine["cpu"] and machine["cores_logical"] >= 1


@pytest.mark.gpu
def test_cuda_peak():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: torch.cuda.is_available() is False")
    peak = measure_peak("cuda", budget_s=0.05)
    assert peak["peak_flops_s_fp16"] > peak["peak_flops_s_fp32"] > 1e11


def test_a_peak_that_cannot_be_cached_says_so(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RBENCH_CACHE", str(blocker))  # the cache "folder" is a file
    peak = device_peak("cpu", budget_s=0.01, size=64)
    assert peak["cached"] is False and peak["peak_flops_s_fp32"] > 0
    assert "cannot save it to" in peak["cache_error"] and str(blocker) in peak["cache_error"]


def test_a_cached_peak_has_no_cache_error(cache):
    assert "cache_error" not in device_peak("cpu", budget_s=0.01, size=64)
