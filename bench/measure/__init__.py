"""The measuring core: timing loops, statistics, memory, contention, devices and FLOPs; `run` drives engines
(latency, throughput, compare, profile).

`bench.measure` was one module before it became this package; its names are still reachable here,
loaded from `bench.measure.run` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    module = importlib.import_module("bench.measure.run")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'bench.measure' has no attribute {name!r}") from None
