"""Accuracy through any engine: evaluation (`evaluate`), metrics, and int8 calibration data (`calibration`).

`bench.accuracy` was one module before it became this package; its names are still reachable here,
loaded from `bench.accuracy.evaluate` on first use.
"""

from bench import _names_from

__getattr__ = _names_from(__name__, "bench.accuracy.evaluate")
