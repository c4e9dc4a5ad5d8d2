"""Memory: the up-front estimate, what the machine has, and allocation failures caught per batch.

Nothing here allocates much: availability is monkeypatched to small figures, and absurd sizes
must be refused before any allocation.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn as nn

import bench.measure.memory
from bench.errors import EnvironmentProblem, UsageProblem
from bench.measure.memory import (
    Available,
    activation_profile,
    available,
    cgroup_available,
    check_fits,
    estimate_bytes,
    meminfo_available,
)
from bench.measure.timing import is_out_of_memory
from bench.records.io import read_records

FAST = {"iters": 2, "warmup": 0, "threads": 1}
CLI_FAST = ("--warmup", "0", "--iters", "2", "--threads", "1")
MB = 10**6


@pytest.fixture
def pretend_available(monkeypatch):
    """pretend_available(bytes): the CPU has that much memory free, whatever the machine says."""

    def set_to(nbytes: int) -> None:
        monkeypatch.setattr(bench.measure.memory, "available",
                            lambda device="cpu": Available(nbytes, "pretend") if device == "cpu" else None)

    return set_to


# -- what the machine has --------------------------------------------------------------------------
def test_meminfo_and_cgroup_figures(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1000 kB\nMemFree:         10 kB\nMemAvailable:    500 kB\n")
    assert meminfo_available(str(meminfo)) == 500 * 1024
    assert meminfo_available(str(tmp_path / "none")) is None

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("1000000\n")
    (v2 / "memory.current").write_text("400000\n")
    assert cgroup_available(str(v2)) == 600000
    (v2 / "memory.max").write_text("max\n")  # no limit
    assert cgroup_available(str(v2)) is None

    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("2000000\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("500000\n")
    assert cgroup_available(str(v1)) == 1500000
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert cgroup_available(str(v1)) is None


def test_available_takes_the_smaller_of_meminfo_and_the_container_limit(monkeypatch):
    monkeypatch.setattr(bench.measure.memory, "meminfo_available", lambda: 8 * 2**30)
    monkeypatch.setattr(bench.measure.memory, "cgroup_available", lambda: 2**30)
    assert available("cpu") == Available(2**30, "container memory limit")
    monkeypatch.setattr(bench.measure.memory, "cgroup_available", lambda: None)
    assert available("cpu") == Available(8 * 2**30, "MemAvailable")
    assert bench.measure.memory.available_bytes("cpu") == 8 * 2**30


# -- the estimate ----------------------------------------------------------------------------------
def test_activation_profile_counts_what_one_op_holds_and_scales_with_batch():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    found = activation_profile(net, (3, 8, 8))
    per_map = 8 * 8 * 8 * 4  # one conv output, fp32
    assert found.method == "meta device"
    # eager: the ReLU reads the conv output and writes a new one; the model input is counted apart
    assert found.live_bytes(1) == 2 * per_map and found.live_bytes(100) == 200 * per_map
    # a graph engine may write the ReLU in place: the conv output is all that must be there
    assert found.live_bytes(100, graph_engine=True) == 100 * per_map
    assert found.total_bytes(10) == 10 * 2 * per_map
    inplace = activation_profile(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True)), (3, 8, 8))
    assert inplace.live_bytes(10) == 10 * per_map
    assert any(p.device.type == "cpu" for p in net.parameters()), "the real weights are untouched"


def test_estimate_parts_precision_and_engine():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    fp32 = estimate_bytes(net, 64, input_shape=(3, 8, 8))
    assert fp32.parts["input"] == 64 * 3 * 8 * 8 * 4
    assert fp32.required == fp32.parts["input"] + fp32.parts["activations live at once"]
    assert "weights" not in fp32.parts, "the torch module is already in host memory"
    half = estimate_bytes(net, 64, input_shape=(3, 8, 8), precision="bf16")
    assert half.parts["activations live at once"] == fp32.parts["activations live at once"] // 2
    ort = estimate_bytes(net, 64, input_shape=(3, 8, 8), engine="ort")
    weights = sum(p.numel() * 4 for p in net.parameters())
    assert ort.parts["weights (engine copy)"] == weights
    assert ort.activations_total >= ort.parts["activations live at once"]


def test_resnet50_estimate_is_fast_and_refuses_batch_4096_on_a_small_machine():
    from bench.engines.sources import resolve_source

    src = resolve_source("torchvision:resnet50")
    start = time.perf_counter()
    estimate = estimate_bytes(src, 4096)
    assert time.perf_counter() - start < 3.0  # ~0.1 s on one core
    assert estimate.required > 16 * 2**30  # activations of 4096 images of 224x224
    host = Available(8 * 2**30, "pretend")
    why = bench.measure.memory.refusal(estimate, src.name, host=host)
    assert why.startswith("torchvision:resnet50 at batch 4096 needs at least") and "8.0 GiB is available" in why
    assert "--batch" in why and "--input-size" in why
    assert bench.measure.memory.refusal(estimate_bytes(src, 1), src.name, host=host) is None


def test_a_module_that_cannot_run_on_meta_is_skipped_not_blocked(pretend_available):
    class DataDependent(nn.Module):
        def forward(self, x):
            if x.sum().item() > 0:  # data-dependent: neither meta nor fake tensors have values
                return x * 2
            return x

    assert activation_profile(DataDependent(), (3, 4, 4)) is None
    estimate = estimate_bytes(DataDependent(), 2, input_shape=(3, 4, 4))
    assert estimate.required == estimate.parts["input"] == 2 * 3 * 4 * 4 * 4
    pretend_available(10 * MB)
    assert check_fits(DataDependent(), [1, 2], ["torch"]) == {}


def test_tensors_made_on_the_cpu_inside_forward_fall_back_to_fake_tensors():
    class MakesCpuTensors(nn.Module):
        def forward(self, x):
            return x + torch.ones(x.shape[1:])  # a CPU tensor, which the meta device cannot mix with

    found = activation_profile(MakesCpuTensors(), (3, 4, 4))
    assert found is not None and found.method == "FakeTensorMode"
    assert found.live_bytes(10) >= 10 * 3 * 4 * 4 * 4


def test_absurd_sizes_are_refused_before_any_forward_pass(monkeypatch, pretend_available):
    def no_forward(*args, **kwargs):
        raise AssertionError("the module must not run for an input that cannot fit")

    monkeypatch.setattr(bench.measure.memory, "activation_profile", no_forward)
    monkeypatch.setattr(bench.measure.memory, "_PROFILES", bench.measure.memory.weakref.WeakKeyDictionary())
    pretend_available(2**30)
    net = nn.Conv2d(3, 8, 3)
    huge = (3, 10**20, 10**20)
    estimate = estimate_bytes(net, 1, input_shape=huge, profile=False)
    assert estimate.required == 3 * 10**40 * 4
    from bench.engines.sources import resolve_source

    src = resolve_source(net, input_shape=(3, 10**20, 10**20), name="net")
    refused = check_fits(src, [1, 2**31 - 1], ["torch"])
    assert set(refused) == {1, 2**31 - 1} and "about 10^41 bytes" in refused[1]


# -- allocation failures -----------------------------------------------------------------------------
OOM = [
    MemoryError(),
    MemoryError("Unable to allocate 745. GiB for an array with shape (100000, 1000000) and data type float64"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 1228800000000 bytes. Error code 12 (Cannot allocate memory)"),
    RuntimeError("[enforce fail at C:\\cb\\alloc_cpu.cpp:72] data. DefaultCPUAllocator: not enough memory: you tried "
                 "to allocate 8589934592 bytes."),
    RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node. "
                 "Name:'/conv1/Conv' Status Message: Failed to allocate memory for requested buffer of size 4294967296"),
    RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Exception during initialization: std::bad_alloc"),
    RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    RuntimeError("CUDA error: cudaErrorMemoryAllocation"),
    torch.OutOfMemoryError("CUDA out of memory."),
]
NOT_OOM = [ValueError("shape mismatch"), RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"),
           KeyError("memory"), RuntimeError("Given groups=1, weight of size [8, 3, 3, 3], expected input")]


@pytest.mark.parametrize("exc", OOM, ids=lambda e: f"{type(e).__name__}:{str(e)[:40]}")
def test_allocation_failures_on_cpu_and_gpu_are_out_of_memory(exc):
    assert is_out_of_memory(exc)


@pytest.mark.parametrize("exc", NOT_OOM, ids=lambda e: f"{type(e).__name__}:{str(e)[:40]}")
def test_other_errors_are_not_out_of_memory(exc):
    assert not is_out_of_memory(exc)


# -- a sweep keeps what it measured ----------------------------------------------------------------------
def test_sweep_records_a_batch_the_estimate_refuses_and_goes_on(pretend_available):
    import bench

    pretend_available(200 * MB)  # resnet20 batch 1 needs ~0.2 MB, batch 4096 ~0.8 GB
    records = bench.latency("resnet20", batches=[1, 4096, 2], **FAST)
    assert [r["batch"] for r in records] == [1, 4096, 2]
    assert records[0]["latency_ms_p50"] > 0 and records[2]["latency_ms_p50"] > 0
    assert records[1]["latency_ms_p50"] is None
    assert records[1]["error"].startswith("out of memory at batch 4096, not run: needs at least")
    assert set(records[1]) == set(records[0])


def test_a_single_batch_the_estimate_refuses_is_one_error(pretend_available):
    import bench
    from bench.measure.run import compare

    pretend_available(200 * MB)
    with pytest.raises(EnvironmentProblem, match="resnet20 at batch 4096 needs at least .* 190.7 MiB is available"):
        bench.latency("resnet20", batches=[4096], **FAST)
    with pytest.raises(EnvironmentProblem, match="at batch 4096"):
        compare(["resnet20", "plain20"], batch=4096, **FAST)


def test_an_allocation_error_while_timing_keeps_the_sweep(monkeypatch):
    import bench
    import bench.measure.timing

    real = bench.measure.timing.measure_latency

    def fake(engine, batch, **kw):
        if batch.shape[0] == 2:
            raise MemoryError()
        return real(engine, batch, **kw)

    monkeypatch.setattr(bench.measure.timing, "measure_latency", fake)
    records = bench.latency("resnet20", batches=[1, 2, 3], **FAST)
    assert [r["batch"] for r in records] == [1, 2, 3]
    assert records[1]["error"] == "out of memory at batch 2"
    assert records[0]["latency_ms_p50"] > 0 and records[2]["latency_ms_p50"] > 0


def test_an_allocation_error_opening_the_engine_keeps_the_sweep(monkeypatch):
    import bench
    import bench.engines

    real = bench.engines.create_engine

    def fake(name, source, **kw):
        if kw.get("batch") == 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes")
        return real(name, source, **kw)

    monkeypatch.setattr(bench.engines, "create_engine", fake)
    records = bench.latency("resnet20", batches=[1, 2, 3], **FAST)
    assert [r["error"] for r in records] == [None, "out of memory at batch 2", None]
    assert records[1]["engine"] == "torch" and records[1]["input_shape"] == [3, 32, 32]


def test_other_errors_still_stop_the_sweep(monkeypatch):
    import bench
    import bench.measure.timing

    def fake(engine, batch, **kw):
        raise ValueError("a real bug")

    monkeypatch.setattr(bench.measure.timing, "measure_latency", fake)
    with pytest.raises(ValueError, match="a real bug"):
        bench.latency("resnet20", batches=[1], **FAST)


# -- the command line --------------------------------------------------------------------------------
def test_cli_sweep_keeps_the_batches_that_fit(run_cli, results_dir, pretend_available):
    pretend_available(200 * MB)
    code, out, err = run_cli("latency", "resnet20", "--batch", "1,4096", *CLI_FAST, "--out", results_dir)
    assert code == 0, err
    records = read_records(results_dir / "latency.jsonl")
    assert [r["batch"] for r in records] == [1, 4096] and records[1]["error"] and not records[0]["error"]


@pytest.mark.parametrize("args, code, message", [
    (("--input-size", "100000"), 1, "use a smaller --batch or --input-size"),
    (("--input-size", "10" + "0" * 22), 1, "use a smaller --batch or --input-size"),
    (("--batch", "4096"), 1, "at batch 4096 needs at least"),
    (("--batch", "99999999999999999999"), 2, "too large"),
    (("--batch", "1," + "9" * 5000), 2, "positive integers"),
], ids=["input-size 1e5", "input-size 1e23", "batch 4096", "batch 1e20", "batch of 5000 digits"])
def test_cli_refuses_what_cannot_fit_in_one_line(run_cli, results_dir, pretend_available, args, code, message):
    pretend_available(200 * MB)
    got, out, err = run_cli("latency", "resnet20", *args, *CLI_FAST, "--out", results_dir)
    assert got == code, err
    assert err.startswith("rbench: error:") and message in err and len(err.strip().splitlines()) == 1
    assert len(err) < 400
    assert list(results_dir.iterdir()) == []


def test_cli_huge_batch_for_compare_and_flops_input_size(run_cli, results_dir, pretend_available):
    pretend_available(8 * 2**30)
    code, out, err = run_cli("compare", "resnet20", "--batch", "99999999999999999999", "--out", results_dir)
    assert code == 2 and "too large" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli("flops", "resnet20", "--input-size", "100000", "--out", results_dir)
    assert code == 1 and "needs at least" in err and len(err.strip().splitlines()) == 1
    assert list(results_dir.iterdir()) == []


def test_cli_nothing_measured_is_one_error_and_writes_nothing(run_cli, results_dir, monkeypatch):
    import bench.measure.timing

    def fake(engine, batch, **kw):
        raise MemoryError()

    monkeypatch.setattr(bench.measure.timing, "measure_latency", fake)
    code, out, err = run_cli("latency", "resnet20", "--batch", "1,2", *CLI_FAST, "--out", results_dir)
    assert code == 1 and "nothing could be measured: out of memory at batch 1" in err
    assert len(err.strip().splitlines()) == 1 and list(results_dir.iterdir()) == []


def test_parse_batches_bounds():
    from bench.measure.run import parse_batches

    assert parse_batches("1,2147483647") == [1, 2147483647]
    for bad in ("2147483648", "99999999999999999999", [10**20]):
        with pytest.raises(UsageProblem, match="too large"):
            parse_batches(bad)
