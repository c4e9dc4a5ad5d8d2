"""Result records: the schema (`schema`), append/read and the machine (`io`), one builder per kind (`builders`).

`bench.records` was one module before it became this package; its names are still reachable here,
loaded from `bench.records.builders` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    module = importlib.import_module("bench.records.builders")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'bench.records' has no attribute {name!r}") from None
