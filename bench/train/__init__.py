"""Training: `config`, `checkpoint`, `evaluate` and the `loop`; data parallel: the processes (`parallel`, DDP) and
their launch under torchrun (`distributed`, the public face of both).

`bench.train` was one module before it became this package; its names are still reachable here,
loaded from `bench.train.loop` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    module = importlib.import_module("bench.train.loop")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'bench.train' has no attribute {name!r}") from None
