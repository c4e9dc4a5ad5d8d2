"""The timing loop: warm-up is never timed, every timed run is kept, transfers only when asked."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.measure.timing import is_out_of_memory, measure_latency


class CountingEngine:
    """A stand-in engine that counts what the timing loop calls."""

    device = "cpu"

    def __init__(self, run_s: float = 0.0):
        self.run_s = run_s
        self.calls = {"prepare": 0, "run": 0, "sync": 0, "to_numpy": 0}

    def prepare(self, batch):
        self.calls["prepare"] += 1
        return batch

    def run_prepared(self, prepared):
        self.calls["run"] += 1
        if self.run_s:
            time.sleep(self.run_s)
        return prepared

    def synchronize(self):
        self.calls["sync"] += 1

    def to_numpy(self, out):
        self.calls["to_numpy"] += 1
        return out


BATCH = np.zeros((2, 3, 4, 4), np.float32)


def test_counts_warmup_and_iters():
    engine = CountingEngine()
    run = measure_latency(engine, BATCH, warmup=4, iters=7)
    assert run["warmup_iters"] == 4 and run["iters"] == 7 and len(run["latencies_ms"]) == 7
    assert engine.calls["run"] == 11 and engine.calls["sync"] == 11  # every run ends with a synchronize
    assert engine.calls["prepare"] == 1 and engine.calls["to_numpy"] == 0  # input placed once, untimed
    assert run["batch"] == 2 and run["include_transfers"] is False
    assert run["memory_kind"] == "process_rss_peak" and run["memory_peak_bytes"] > 0


def test_include_transfers_prepares_and_copies_back_every_run():
    engine = CountingEngine()
    measure_latency(engine, BATCH, warmup=2, iters=3, include_transfers=True)
    assert engine.calls["prepare"] == 5 and engine.calls["to_numpy"] == 5


def test_warmup_by_duration_and_timing_by_duration():
    engine = CountingEngine(run_s=0.002)
    run = measure_latency(engine, BATCH, warmup=1, warmup_s=0.03, duration_s=0.03)
    assert run["warmup_s"] >= 0.03 and run["warmup_iters"] > 1
    assert run["timed_wall_s"] >= 0.03 and run["iters"] >= 1
    assert all(ms >= 1.5 for ms in run["latencies_ms"])  # each sleep of 2 ms is inside its timed run


def test_latencies_are_the_runs_not_the_warmup():
    class SlowFirst(CountingEngine):
        def run_prepared(self, prepared):
            super().run_prepared(prepared)
            if self.calls["run"] <= 2:
                time.sleep(0.02)  # a cold start that warm-up must absorb
            return prepared

    run = measure_latency(SlowFirst(), BATCH, warmup=2, iters=5)
    assert max(run["latencies_ms"]) < 15


def test_bad_iters():
    with pytest.raises(ValueError):
        measure_latency(CountingEngine(), BATCH, iters=0)


def test_out_of_memory_detection():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("onnxruntime: Failed to allocate memory for requested buffer"))
    assert not is_out_of_memory(ValueError("shape mismatch"))


def test_time_interleaved_runs_every_callable_per_round_in_a_seeded_order():
    from bench.measure.timing import time_interleaved

    log: list[str] = []
    calls = {name: (lambda name=name: log.append(name)) for name in "abc"}
    times = time_interleaved(calls, warmup=2, iters=3, rounds=4, seed=7)
    assert log[:6] == ["a", "a", "b", "b", "c", "c"], "warm-up first, untimed"
    timed = log[6:]
    assert len(timed) == 4 * 3 * 3 and all(timed[i] == timed[i - i % 3] for i in range(len(timed))), "iters in a row"
    orders = [tuple(timed[r * 9:(r + 1) * 9:3]) for r in range(4)]
    assert all(sorted(o) == ["a", "b", "c"] for o in orders) and len(set(orders)) > 1, "each round, a new order"
    assert {k: [len(r) for r in v] for k, v in times.items()} == {k: [3, 3, 3, 3] for k in "abc"}
    assert all(ms >= 0 for v in times.values() for r in v for ms in r)
    log.clear()
    time_interleaved(calls, warmup=0, iters=3, rounds=4, seed=7)
    assert log == timed, "the same seed, the same order"


def test_torch_threads_are_put_back():
    import torch

    from bench.measure.timing import torch_threads

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
