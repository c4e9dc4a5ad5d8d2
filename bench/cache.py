"""The one folder where rbench keeps what it can rebuild: exported ONNX files, engines, counts, peaks.

`$RBENCH_CACHE` names it; otherwise `$XDG_CACHE_HOME/rbench`, else `~/.cache/rbench`. Deleting it
only costs time.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "RBENCH_CACHE"


def cache_root() -> Path:
    """The cache folder (not created here: writers create what they need)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rbench"
