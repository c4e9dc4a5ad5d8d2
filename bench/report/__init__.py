"""Reports: records rendered into Markdown tables and plots (`render`), and the regression diff (`diff`).

`bench.report` was one module before it became this package; its names are still reachable here,
loaded from `bench.report.render` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    module = importlib.import_module("bench.report.render")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'bench.report' has no attribute {name!r}") from None
