"""Reports, the generic parts: table cells (`cells`), rows and Markdown (`format`), seed summaries (`seeds`),
PNG plots (`plots`; those with intervals and their label check, `figures`), the summary table (`summary`), the
whole report around the studies' own sections (`render`), and the regression diff (`diff`).

Each study's section lives in its study's module (`bench.studies.depth`, ...); `bench.studies.reporting` renders
a run's report with them. `bench.report` was one module before it became this package; its generic names are
still reachable here, loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = ("bench.report.render", "bench.report.format", "bench.report.cells", "bench.report.seeds",
            "bench.report.plots", "bench.report.figures")


def __getattr__(name: str) -> Any:
    for module_name in _MODULES:
        module = importlib.import_module(module_name)
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'bench.report' has no attribute {name!r}")
