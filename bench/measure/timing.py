"""Timing loops: untimed warm-up, then every iteration timed and kept. Returns dicts, prints nothing.

What one timed iteration is (docs/measuring.md): one synchronous inference
on an input that is already where the engine reads it (`engine.prepare` ran before, untimed),
ended by `engine.synchronize()` so queued GPU work is inside the time. With
`include_transfers=True` an iteration also copies the batch in and the logits out.
"""

from __future__ import annotations

import contextlib
import random
import resource
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

import numpy as np

DEFAULT_WARMUP = 10
DEFAULT_ITERS = 50


def _step(engine, batch: np.ndarray, prepared, include_transfers: bool) -> Callable[[], None]:
    if include_transfers:
        def step() -> None:
            out = engine.run_prepared(engine.prepare(batch))
            engine.synchronize()
            engine.to_numpy(out)
    else:
        def step() -> None:
            engine.run_prepared(prepared)
            engine.synchronize()
    return step


def _rss_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def measure_latency(engine, batch: np.ndarray, *, warmup: int = DEFAULT_WARMUP, warmup_s: float = 0.0,
                    iters: int | None = None, duration_s: float | None = None, include_transfers: bool = False,
                    on_iteration: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Time `engine` on `batch`: warm up (at least `warmup` runs and `warmup_s` seconds), then time
    `iters` runs, or as many as fit in `duration_s` seconds (at least one).

    Returns raw latencies in ms (`latencies_ms`), the counts, the timer used and the peak memory:
    `torch.cuda.max_memory_allocated` for a CUDA engine, the process's peak RSS on the CPU (a
    high-water mark since the process started, so an upper bound for this run). An engine that
    knows its own device memory better (`Engine.memory_usage`: TensorRT's context and buffers,
    onnxruntime's free-memory difference) replaces this figure in the record; `memory_kind` says
    which one it is.
    """
    if iters is not None and iters < 1:
        raise ValueError("iters must be at least 1")
    if iters is None and duration_s is None:
        iters = DEFAULT_ITERS
    on_cuda = engine.device.startswith("cuda")
    if on_cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    prepared = None if include_transfers else engine.prepare(batch)
    step = _step(engine, batch, prepared, include_transfers)

    clock = time.perf_counter
    # Entered once, untimed (torch: inference_mode), as a bare loop would; an engine object that only duck-types the
    # contract (run_prepared/synchronize/prepare) has none.
    timing_context = getattr(engine, "timing_context", contextlib.nullcontext)
    with timing_context():
        warm_start = clock()
        warm_runs = 0
        while warm_runs < warmup or clock() - warm_start < warmup_s:  # burn-in, never timed
            step()
            warm_runs += 1
        warm_elapsed = clock() - warm_start

        latencies: list[float] = []
        timed_start = clock()
        while True:
            t0 = clock()
            step()
            t1 = clock()
            latencies.append((t1 - t0) * 1000.0)
            if on_iteration is not None:
                on_iteration(len(latencies), t1 - timed_start)
            if iters is not None and len(latencies) >= iters:
                break
            if iters is None and t1 - timed_start >= duration_s:
                break
        wall = clock() - timed_start

    if on_cuda:
        import torch

        memory = {"memory_peak_bytes": int(torch.cuda.max_memory_allocated()), "memory_kind": "cuda_max_allocated"}
    else:
        memory = {"memory_peak_bytes": _rss_peak_bytes(), "memory_kind": "process_rss_peak"}
    return {
        "batch": int(batch.shape[0]),
        "latencies_ms": latencies,
        "iters": len(latencies),
        "warmup_iters": warm_runs,
        "warmup_s": warm_elapsed,
        "timed_wall_s": wall,
        "include_transfers": include_transfers,
        "timer": "time.perf_counter around run + synchronize",
        **memory,
    }


#: Lower-case phrases of allocation failures: torch on CUDA and on the CPU (DefaultCPUAllocator: "can't
#: allocate memory" on Linux, "not enough memory" on Windows), onnxruntime ("Failed to allocate memory",
#: its BFC arena, std::bad_alloc from C++), CUDA libraries and TensorRT.
OUT_OF_MEMORY_PHRASES = (
    "out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
    "failed to allocate memory", "bad_alloc", "bfcarena", "cudaerrormemoryallocation", "alloc_failed",
    "outofmemory", "unable to allocate",
)


def time_interleaved(calls: Mapping[Hashable, Callable[[], Any]], *, warmup: int, iters: int, rounds: int,
                     seed: int = 0) -> dict[Hashable, list[list[float]]]:
    """Milliseconds per call of every callable, one list per round: each gets `warmup` untimed calls, then every
    round runs each `iters` times, in a new seeded random order, so drift and other work hit all of them alike.

    For callables that are not engines (the parts of a layer, training steps); `bench.measure.run` interleaves engines.
    """
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[Hashable, list[list[float]]] = {key: [] for key in calls}
    order = list(calls)
    rng = random.Random(seed)
    clock = time.perf_counter
    for _ in range(rounds):
        rng.shuffle(order)
        for key in order:
            fn, samples = calls[key], []
            for _ in range(iters):
                start = clock()
                fn()
                samples.append((clock() - start) * 1000.0)
            times[key].append(samples)
    return times


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` inside the block and put back after it (None: left as they are)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation failure, on the CPU or a GPU (torch, numpy, onnxruntime, TensorRT).

    A Python MemoryError (numpy's "Unable to allocate" is one), torch.OutOfMemoryError, or an error
    whose text names a failed allocation. Under a container memory limit the kernel may kill the
    process instead, with nothing to catch: `bench.measure.memory` estimates a run before it starts for that.
    """
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                      getattr(torch.cuda, "OutOfMemoryError", None)) if isinstance(t, type))
        if oom_types and isinstance(exc, oom_types):
            return True
    except ImportError:  # pragma: no cover
        pass
    text = str(exc).lower()
    return any(phrase in text for phrase in OUT_OF_MEMORY_PHRASES)
