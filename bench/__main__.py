"""`python -m bench` is `rbench`."""

import os
import sys

if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
    # A torchrun worker: c10d's C++ log lines (retries with stack traces) would bury rbench's one-line errors;
    # they must be silenced before torch loads. TORCH_CPP_LOG_LEVEL=INFO brings them back.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")

from bench.cli import main  # noqa: E402

sys.exit(main())
