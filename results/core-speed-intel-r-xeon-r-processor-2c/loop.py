"""resnet20 at batch 1 on one torch thread, this process pinned to the CPU given: the median ms of 2 s of runs after
20 warm-up runs. Usage: python loop.py CPU (from the repository root, or with it on PYTHONPATH)."""

import os
import statistics
import sys
import time

cpu = int(sys.argv[1])
os.sched_setaffinity(0, {cpu})  # before torch loads: every thread it starts inherits the one CPU

import torch  # noqa: E402

from bench.engines.sources import resolve_source  # noqa: E402

torch.set_num_threads(1)
model = resolve_source("resnet20").module().eval()
x = torch.randn(1, 3, 32, 32)
with torch.inference_mode():
    for _ in range(20):
        model(x)
    times = []
    end = time.perf_counter() + 2.0
    while time.perf_counter() < end:
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1e3)
print(f"cpu {cpu} {statistics.median(times):.3f} ms")
