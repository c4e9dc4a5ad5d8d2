"""Honest by construction: rbench's median for ONNX Runtime on CPU equals a bare perf_counter loop's.

`nox -s bench` runs this (pytest -m benchmark tests/benchmarks). pytest-benchmark times the
bare `session.run` for the report; the assertion compares rbench's `measure_latency` median
against a bare `time.perf_counter()` loop around `session.run` in the same process. The two
are interleaved in rounds so that a neighbour loading the CPU hits both alike.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from bench.engines import create_engine
from bench.measure.timing import measure_latency

pytestmark = pytest.mark.benchmark

ROUNDS = 20
ITERS = 30
#: Within 2%; the absolute term covers the timer calls themselves on sub-millisecond runs.
REL_TOL = 0.02
ABS_TOL_MS = 0.002  # 2 µs: two perf_counter calls and a Python call, not a share of the run


@pytest.fixture(scope="module")
def ort_engine(tmp_path_factory):
    import os

    os.environ.setdefault("RBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    engine = create_engine("ort", "resnet20", threads=1)
    with engine:
        yield engine


def _bare_loop(session, output_name, feed, iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        session.run([output_name], feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def test_rbench_median_matches_a_bare_loop(ort_engine, benchmark):
    batch = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    session, output_name = ort_engine.session, ort_engine.output_name
    feed = {ort_engine.input_name: batch}
    _bare_loop(session, output_name, feed, 20)  # warm-up for both

    bare, harness = [], []
    for _ in range(ROUNDS):
        bare += _bare_loop(session, output_name, feed, ITERS)
        harness += measure_latency(ort_engine, batch, warmup=2, iters=ITERS)["latencies_ms"]
    bare_p50, harness_p50 = statistics.median(bare), statistics.median(harness)

    benchmark.extra_info.update(bare_p50_ms=bare_p50, rbench_p50_ms=harness_p50, ratio=harness_p50 / bare_p50)
    benchmark(session.run, [output_name], feed)  # the bare call, for pytest-benchmark's table
    print(f"ort resnet20 batch 1: rbench p50 {harness_p50:.4f} ms, bare loop p50 {bare_p50:.4f} ms")

    assert abs(harness_p50 - bare_p50) <= REL_TOL * bare_p50 + ABS_TOL_MS, (
        f"rbench p50 {harness_p50:.4f} ms vs bare loop p50 {bare_p50:.4f} ms: the harness adds overhead")


def test_torch_engine_median_matches_a_bare_loop(benchmark):
    """The same check for the torch engine, at one intra-op thread as the ONNX Runtime check: rbench's timed run is
    the forward alone (measure_latency enters inference_mode once, untimed, as the bare loop does), on the same kind
    of input tensor. Bare and rbench blocks alternate in rounds, in a shuffled order, and the statistic is the median
    over rounds of each round's ratio of medians: a per-run overhead shows in every round, while a neighbour's load
    that changes from one round to the next (eager torch on a shared CPU) cancels within a round."""
    import random

    import torch

    import nets

    model = nets.create_model("resnet20").eval()
    batch = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    order = random.Random(0)
    with create_engine("torch", model, threads=1) as engine:
        bare, harness, ratios = [], [], []
        with torch.inference_mode():
            x = engine.prepare(batch)  # as measure_latency prepares its input: inside the same mode

            def bare_block() -> list[float]:
                times = []
                for _ in range(10):
                    t0 = time.perf_counter()
                    model(x)
                    times.append((time.perf_counter() - t0) * 1000.0)
                return times

            def harness_block() -> list[float]:
                return measure_latency(engine, batch, warmup=0, iters=10)["latencies_ms"]

            for _ in range(5):
                model(x)
            for _ in range(4 * ROUNDS):  # short blocks: eager torch on a shared CPU drifts between blocks
                times = {block: block() for block in order.sample([bare_block, harness_block], 2)}
                bare += times[bare_block]
                harness += times[harness_block]
                ratios.append(statistics.median(times[harness_block]) / statistics.median(times[bare_block]))
        bare_p50, harness_p50, ratio = statistics.median(bare), statistics.median(harness), statistics.median(ratios)
        benchmark.extra_info.update(bare_p50_ms=bare_p50, rbench_p50_ms=harness_p50, paired_ratio=ratio)
        benchmark.pedantic(engine.run_prepared, args=(x,), rounds=20, iterations=1)
    print(f"torch resnet20 batch 1: rbench p50 {harness_p50:.4f} ms, bare loop p50 {bare_p50:.4f} ms "
          f"(pooled ratio {harness_p50 / bare_p50:.4f}), median per-round ratio {ratio:.4f}")
    assert abs(ratio - 1) <= REL_TOL + ABS_TOL_MS / bare_p50, (
        f"rbench/bare median per-round ratio {ratio:.4f} (p50 {harness_p50:.4f} vs {bare_p50:.4f} ms): the harness "
        "adds overhead")
