"""rbench: train, export and benchmark the CNNs of residual-learning studies.

The public Python surface, loaded lazily (`rbench --help` must not pay for importing torch):

    import bench
    records = bench.latency(my_module, engines=["torch", "ort"], batches=[1, 8], input_shape=(3, 32, 32))

- `resolve_source(spec, ...)` -> `ModelSource`: a zoo name, an nn.Module, `torchvision:NAME`,
  `package.module:callable`, an .onnx file or a TensorRT engine file, checked once.
- `latency(source, engines, batches, settings, **settings)` -> "latency" records.
- `throughput(source, engines, batches, ...)` -> (the sweep's latency records, "throughput" records).
- `profile(source, detail=False)` -> a "flops" record (params, MACs, FLOPs).
- `Settings`: how to measure (precision, device, warm-up, iters/duration, threads, ...).
- `create_engine(name, source, ...)`: one engine (torch | ort | trt) to drive by hand.
- `read_records(path)`, `validate_record(record)`: the JSON-lines results.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first use).
_PUBLIC = {
    "resolve_source": "bench.sources", "ModelSource": "bench.sources",
    "latency": "bench.measure", "throughput": "bench.measure", "profile": "bench.measure", "Settings": "bench.measure",
    "create_engine": "bench.engines",
    "read_records": "bench.results", "validate_record": "bench.results",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
