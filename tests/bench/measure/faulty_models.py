"""Modules that break inside a timing worker: imported there by pickle, from this importable module."""

from __future__ import annotations

import os
import time

from tests.bench.user_models import TinyNet


class CrashingNet(TinyNet):
    """Kills its process (no exception, no reply) once it has run a few times: a worker that crashes."""

    def forward(self, x):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > 3:
            os._exit(7)
        return super().forward(x)


class HangingNet(TinyNet):
    """Stops answering once it has run a few times: a worker that hangs."""

    def forward(self, x):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > 3:
            time.sleep(3600)
        return super().forward(x)
