"""`python -m bench` is `rbench`."""

import os
import sys

_TORCHRUN_WORKER = "RANK" in os.environ and "WORLD_SIZE" in os.environ
if _TORCHRUN_WORKER:
    # A torchrun worker: c10d's C++ log lines (retries with stack traces) would bury rbench's one-line errors;
    # they must be silenced before torch loads. TORCH_CPP_LOG_LEVEL=INFO brings them back.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")

from bench.cli import main  # noqa: E402

code = main()
if _TORCHRUN_WORKER:
    # The rank has left its process group and written what it writes (atomically, before this line). What is
    # left is the interpreter's teardown, where gloo's C++ threads can still be destroyed joinable or reach for
    # the GIL of a dying interpreter: std::terminate, SIGABRT ("terminate called without an active exception"),
    # and the whole run fails after it succeeded (seen once in CI under load). Skip the teardown.
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
