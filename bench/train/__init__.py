"""Training: `config`, `checkpoint`, `evaluate` and the `loop`; data parallel: the processes (`parallel`, DDP) and
their launch under torchrun (`distributed`, the public face of both).

`bench.train` was one module before it became this package; its names are still reachable here,
loaded from `bench.train.loop` on first use.
"""

from bench import _names_from

__getattr__ = _names_from(__name__, "bench.train.loop")
