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
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first use).
_PUBLIC = {
    "resolve_source": "bench.engines.sources", "ModelSource": "bench.engines.sources",
    "latency": "bench.measure.run", "throughput": "bench.measure.run", "profile": "bench.measure.run", "Settings": "bench.measure.run",
    "create_engine": "bench.engines",
    "read_records": "bench.records.io", "validate_record": "bench.records.io",
}

__all__ = ["__version__", *_PUBLIC]


#: Module paths README once named, now elsewhere: importing the old path gives the new module.
_MOVED_MODULES = {"bench.results": "bench.records.io", "bench.dynamic_cost": "bench.scenarios.dynamic_cost"}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    _own_specs: dict[str, Any] = {}

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201 (importlib's protocol)
        if fullname in _MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):  # noqa: ANN001, ANN201
        warnings.warn(f"{spec.name} moved to {_MOVED_MODULES[spec.name]}", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(_MOVED_MODULES[spec.name])
        self._own_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module) -> None:  # noqa: ANN001
        # The import system stamped the old name's spec on the module; give it back its own.
        module.__spec__ = self._own_specs[module.__name__]


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def _names_from(package: str, module: str):  # noqa: ANN202 (a module __getattr__)
    """The `__getattr__` of a package that was one module before: its old names, from `module` on first use."""
    def __getattr__(name: str) -> Any:
        try:
            return getattr(importlib.import_module(module), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
    return __getattr__


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
