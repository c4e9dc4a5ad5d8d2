"""The measuring core: timing loops, statistics, memory, contention, devices and FLOPs; `run` drives engines
(latency, throughput, compare, profile).

`bench.measure` was one module before it became this package; its names are still reachable here,
loaded from `bench.measure.run` on first use.
"""

from bench import _names_from

__getattr__ = _names_from(__name__, "bench.measure.run")
