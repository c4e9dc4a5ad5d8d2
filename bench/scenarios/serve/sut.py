"""The system under test: rbench engines behind LoadGen, with dynamic batching and a pool of workers.

LoadGen hands queries to `issue` on its own thread; they go into one queue. Each worker thread owns an
engine session (made and activated in that thread, so the threads of its intra-op pool inherit the
worker's CPU affinity), takes the first waiting sample, gathers more until it has `max_batch` or
`batch_timeout_ms` has passed since the first, runs the batch and completes every sample with its logits.

A failure inside the model never leaves LoadGen waiting: the batch's samples are completed with empty
responses, every later sample is completed at once without inference, and `errors` keeps the first
message; the caller raises it after LoadGen's run returns (`ModelFailure`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.errors import RbenchError
from bench.scenarios.serve.qsl import SampleLibrary

_STOP = object()
#: Warm-up inferences per worker and batch size before LoadGen starts (untimed by LoadGen).
WARMUP_RUNS = 5


class ModelFailure(RbenchError):
    """The model failed inside the SUT (at warm-up, or on a batch LoadGen issued)."""

    exit_code = 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, RbenchError) else text


def core_slices(workers: int, cores: list[int] | None = None) -> list[list[int] | None]:
    """The CPU cores each worker is pinned to: equal disjoint slices of the usable cores, or None for all
    workers (unpinned) when there are more workers than cores."""
    cores = sorted(cores if cores is not None else (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity")
                                                    else range(os.cpu_count() or 1)))
    if workers > len(cores):
        return [None] * workers
    per = len(cores) // workers
    return [cores[i * per:(i + 1) * per] for i in range(workers)]


class ServingSystem:
    """A pool of `workers` engine sessions serving `library`'s samples in batches of at most `max_batch`.

    `make_engine(threads)` returns an inactive engine; it is called once per worker, in that worker's thread.
    Use `start()` (warm-up; raises `ModelFailure` if a worker cannot run the model), then hand
    `construct(lg)` to LoadGen, then `stop()`.
    """

    def __init__(self, make_engine: Callable[[int | None], Any], library: SampleLibrary, *, workers: int = 1,
                 max_batch: int = 1, batch_timeout_ms: float = 0.0, threads: int | None = None, pin: bool = True):
        self.make_engine, self.library = make_engine, library
        self.workers, self.max_batch, self.batch_timeout_s = int(workers), int(max_batch), batch_timeout_ms / 1000
        self.slices = core_slices(self.workers) if pin else [None] * self.workers
        first = self.slices[0]
        self.threads = threads or (len(first) if first else 1)
        self.queue: queue.Queue = queue.Queue()
        self.errors: list[str] = []
        self.batch_sizes: Counter = Counter()
        self.engine_info: dict[str, Any] | None = None
        self.warmup: dict[str, float] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._ready: list[threading.Event] = []
        self._startup_errors: list[str | None] = [None] * self.workers
        self._lg = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, lg) -> dict[str, float]:
        """Start the workers, each making and warming up its engine; returns the warm-up timings
        (`latency_s` of one sample, `batch_s` of a full batch), the hints LoadGen's query sizing reads."""
        self._lg = lg
        for index in range(self.workers):
            ready = threading.Event()
            thread = threading.Thread(target=self._work, args=(index, ready), name=f"rbench-sut-{index}", daemon=True)
            self._ready.append(ready)
            self._threads.append(thread)
            thread.start()
        for ready in self._ready:
            ready.wait()
        failed = [e for e in self._startup_errors if e]
        if failed:
            self.stop()
            raise ModelFailure(f"the model failed in the SUT before LoadGen started: {failed[0]}")
        return dict(self.warmup)

    def stop(self) -> None:
        """Stop every worker after the samples already queued, and release the engines."""
        for _ in self._threads:
            self.queue.put(_STOP)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def construct(self, lg) -> Any:
        """The LoadGen SUT handle (destroy it with `lg.DestroySUT`)."""
        return lg.ConstructSUT(self.issue, self.flush)

    # -- LoadGen's callbacks: never raise, never block ------------------------------------------
    def issue(self, samples) -> None:
        """LoadGen's IssueQuery: queue every sample of the query."""
        for sample in samples:
            self.queue.put((sample.id, sample.index))

    def flush(self) -> None:
        """LoadGen's FlushQueries: nothing is held back beyond the batch timeout, so nothing to do."""

    # -- workers ----------------------------------------------------------------------------
    def _work(self, index: int, ready: threading.Event) -> None:
        engine = None
        try:
            cores = self.slices[index]
            if cores:
                os.sched_setaffinity(0, cores)  # this thread only; the engine's pool threads inherit it
            engine = self.make_engine(self.threads)
            engine.activate()
            self._warm_up(engine, index)
        except Exception as exc:
            self._startup_errors[index] = _one_line(exc)
            ready.set()
            if engine is not None:
                engine.deactivate()
            return
        ready.set()
        try:
            self._serve(engine)
        finally:
            engine.deactivate()

    def _warm_up(self, engine: Any, index: int) -> None:
        one = self.library.first()
        timings = {}
        for label, batch in (("latency_s", one), ("batch_s", np.repeat(one, self.max_batch, axis=0))):
            spent = []
            for _ in range(WARMUP_RUNS):
                start = time.perf_counter()
                logits = engine.infer(batch)
                spent.append(time.perf_counter() - start)
            if len(logits) != len(batch):
                raise ModelFailure(f"the engine returned {len(logits)} outputs for a batch of {len(batch)}")
            timings[label] = float(np.median(spent))
        if index == 0:
            self.warmup = timings
            self.engine_info = engine.describe()

    def _next_batch(self) -> tuple[list[tuple[int, int]], bool]:
        """Up to max_batch queued samples, waiting at most the batch timeout after the first; and whether
        this worker's stop signal came."""
        first = self.queue.get()
        if first is _STOP:
            return [], True
        batch, deadline = [first], time.monotonic() + self.batch_timeout_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _serve(self, engine: Any) -> None:
        lg = self._lg
        while True:
            batch, stopping = self._next_batch()
            if batch:
                ids = [sample_id for sample_id, _ in batch]
                rows = None
                try:
                    if not self.errors:
                        rows = np.ascontiguousarray(engine.infer(self.library.batch([i for _, i in batch])),
                                                    dtype=np.float32)
                        if len(rows) != len(ids):
                            raise ModelFailure(f"the engine returned {len(rows)} outputs for a batch of {len(ids)}")
                except Exception as exc:
                    with self._lock:
                        if not self.errors:
                            self.errors.append(f"batch of {len(ids)}: {_one_line(exc)}")
                    rows = None
                finally:
                    # Every sample is completed, with its logits or, after a failure, empty: LoadGen never waits.
                    if rows is not None:
                        responses = [lg.QuerySampleResponse(i, row.ctypes.data, row.nbytes) for i, row in zip(ids, rows)]
                    else:
                        responses = [lg.QuerySampleResponse(i, 0, 0) for i in ids]
                    lg.QuerySamplesComplete(responses)
                    with self._lock:
                        self.batch_sizes[len(ids)] += 1
            if stopping:
                return
