"""Accuracy through any engine: evaluation (`evaluate`), metrics, and int8 calibration data (`calibration`).

`bench.accuracy` was one module before it became this package; its names are still reachable here,
loaded from `bench.accuracy.evaluate` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    module = importlib.import_module("bench.accuracy.evaluate")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'bench.accuracy' has no attribute {name!r}") from None
