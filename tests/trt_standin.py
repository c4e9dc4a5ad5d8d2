"""A stand-in `tensorrt` module, and a CPU stand-in for the CUDA work of `TensorRTEngine`.

Only what rbench calls, with the real bindings' names, argument names, enum values and return
types, so a test fails where the real API would. Taken from NVIDIA/TensorRT (read, not copied):
- `python/src/infer/pyCore.cpp`: `Logger(min_severity=...)`, `ILogger.log(severity, msg)`,
  `set_memory_pool_limit(pool, pool_size)`, `add_optimization_profile(profile) -> int` (-1 on
  failure), `create_timing_cache(serialized_timing_cache) -> ITimingCache | None`,
  `set_timing_cache(cache, ignore_mismatch) -> bool`, `get_timing_cache() -> ITimingCache | None`,
  `ITimingCache.combine(input_cache, ignore_mismatch) -> bool`,
  `build_serialized_network(network, config) -> IHostMemory | None`,
  `deserialize_cuda_engine(serialized_engine) -> ICudaEngine | None`,
  `create_execution_context(strategy=ExecutionContextAllocationStrategy.STATIC) -> IExecutionContext | None`,
  `device_memory_size_v2`, `set_device_memory(memory, size)`, `set_input_shape(name, shape) -> bool`,
  `set_tensor_address(name, memory) -> bool`, `execute_async_v3(stream_handle) -> bool`,
  `set_optimization_profile_async(profile_index, stream_handle) -> bool`,
  `get_tensor_profile_shape(name, profile_index)`.
- `python/src/parsers/pyOnnx.cpp`: `OnnxParser(network, logger)`, `parse_from_file(model) -> bool`.
- `include/NvInfer.h` (10.x and 11.1): `NetworkDefinitionCreationFlag.STRONGLY_TYPED` is 1 on 10.x
  (EXPLICIT_BATCH 0) and 0 on 11.x; `BuilderFlag` FP16 0, INT8 1 (both gone in 11), TF32 6;
  `MemoryPoolType.WORKSPACE` 0.
- `include/NvInferRuntime.h`: `ILogger.Severity` INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3,
  VERBOSE 4; `ExecutionContextAllocationStrategy` STATIC 0, ON_PROFILE_CHANGE 1, USER_MANAGED 2;
  `DataType` FLOAT 0, HALF 1, INT8 2, INT32 3, BOOL 4.
- `python/src/infer/pyFoundationalTypes.cpp`: `TensorIOMode` NONE 0, INPUT 1, OUTPUT 2.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass, field

import numpy as np


def _strict(cls_name: str, **allowed):
    """Raise TypeError like pybind11 when a call passes an argument name the real binding lacks."""
    def check(kwargs):
        unknown = set(kwargs) - set(allowed)
        if unknown:
            raise TypeError(f"{cls_name}(): incompatible function arguments: {sorted(unknown)}")
    return check


class IHostMemory:
    """What `build_serialized_network` returns: not bytes; readable through the buffer protocol (here `bytes()`)."""

    def __init__(self, data: bytes):
        self._data = data
        self.nbytes = len(data)

    def __bytes__(self) -> bytes:
        return self._data


@dataclass
class Behaviour:
    """How the stand-in fails, per call (everything succeeds by default)."""

    parse_ok: bool = True
    build_ok: bool = True
    cache: str = "ok"  # ok | rejected | corrupt | broken | lost (get_timing_cache() is None after the build)
    profile_ok: bool = True  # add_optimization_profile returns -1 when False
    deserialize_ok: bool = True
    context_ok: bool = True  # create_execution_context returns None (out of memory) when False
    address_ok: bool = True
    shape_ok: bool = True
    enqueue_ok: bool = True
    enqueue_ok_in_capture: bool = True
    profile_switch_ok: bool = True
    log_on_build_failure: str = "Internal Error (could not find any implementation for node /conv1/Conv)"
    calls: list = field(default_factory=list)


@dataclass
class EngineSpec:
    """What the stand-in's deserialized engine holds: one NCHW input, one logits output."""

    input_dtype: str = "float32"  # float32 | float16
    chw: tuple[int, int, int] = (3, 8, 8)
    classes: int = 4
    profiles: tuple[tuple[int, int, int], ...] = ((1, 8, 64),)  # (min, opt, max) batch per profile
    fixed_batch: int | None = None
    device_memory: int = 4096
    extra_input: bool = False


def make_tensorrt(version: str = "10.13.3", behaviour: Behaviour | None = None, spec: EngineSpec | None = None,
                  memory: dict | None = None):
    """A `tensorrt` module of `version` (10.x or 11.x). `memory` maps data_ptr -> tensor (filled by `CpuCuda`)."""
    b = behaviour or Behaviour()
    spec = spec or EngineSpec()
    memory = memory if memory is not None else {}
    calls = b.calls
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self):
            self._initialised = True

        def log(self, severity, msg):  # pure virtual in the real binding
            raise NotImplementedError

    class Logger(ILogger):
        """TensorRT's own logger: prints to stdout (which is why rbench does not use it)."""

        def __init__(self, min_severity=Severity.WARNING, **kwargs):
            _strict("Logger", min_severity=1)(kwargs)
            super().__init__()
            self.min_severity = min_severity

        def log(self, severity, msg):
            if severity <= self.min_severity:
                print(f"[TRT] {msg}")

    ILogger.Severity = Logger.Severity = Severity
    Logger.WARNING = Severity.WARNING
    Logger.ERROR = Severity.ERROR
    trt.ILogger, trt.Logger = ILogger, Logger

    def _log(logger, severity, msg):
        if not getattr(logger, "_initialised", False):
            raise TypeError("ILogger.__init__ was not called")  # pybind11's error for an uninitialised base
        logger.log(severity, msg)

    if major >= 11:
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {
            "STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2})
        trt.BuilderFlag = enum.IntEnum("BuilderFlag", {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "TF32": 6})
    else:
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {
            "EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
        trt.BuilderFlag = enum.IntEnum("BuilderFlag", {"FP16": 0, "INT8": 1, "DEBUG": 2, "TF32": 6})
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    trt.ExecutionContextAllocationStrategy = enum.IntEnum(
        "ExecutionContextAllocationStrategy", {"STATIC": 0, "ON_PROFILE_CHANGE": 1, "USER_MANAGED": 2})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4})
    trt.float32, trt.float16, trt.int8, trt.int32, trt.bool = (trt.DataType.FLOAT, trt.DataType.HALF,
                                                               trt.DataType.INT8, trt.DataType.INT32, trt.DataType.BOOL)

    # -- builder --------------------------------------------------------------------------------
    class Network:
        def __init__(self, flags):
            self.flags = flags

        def get_input(self, index):
            return types.SimpleNamespace(name="input")

    class OnnxParser:
        def __init__(self, network, logger):
            self.logger = logger
            self.num_errors = 0

        def parse_from_file(self, model):
            calls.append(("parse", model))
            if not b.parse_ok:
                self.num_errors = 1
            return b.parse_ok

        def get_error(self, index):
            return types.SimpleNamespace(desc=lambda: "Unsupported operator FancyOp")

    class ITimingCache:
        def __init__(self, data: bytes):
            self.data = data

        def serialize(self):
            return IHostMemory(self.data + b"+tactics" if not self.data.endswith(b"+tactics") else self.data)

        def combine(self, input_cache, ignore_mismatch):
            calls.append(("combine", input_cache.data, ignore_mismatch))
            self.data = input_cache.data + b"|" + self.data
            return True

    class IBuilderConfig:
        def __init__(self):
            self.cache = None
            self.profiles = 0

        def set_memory_pool_limit(self, pool, pool_size):
            calls.append(("workspace", int(pool), pool_size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag.name))

        def clear_flag(self, flag):
            calls.append(("clear_flag", flag.name))

        def add_optimization_profile(self, profile):
            calls.append(("profile", profile.shapes))
            if not b.profile_ok:
                return -1
            self.profiles += 1
            return self.profiles - 1

        def create_timing_cache(self, serialized_timing_cache):
            data = bytes(serialized_timing_cache)
            calls.append(("load_cache", data))
            if b.cache == "broken" or (b.cache == "corrupt" and data):
                return None  # what TensorRT returns for bytes it cannot deserialize
            return ITimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            if b.cache == "rejected" and cache.data:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return None if b.cache == "lost" else self.cache

    class IOptimizationProfile:
        def set_shape(self, input, min, opt, max):  # noqa: A002 - the binding's argument names
            self.shapes = (input, tuple(min), tuple(opt), tuple(max))

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            calls.append(("network_flags", flags))
            return Network(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            calls.append(("build",))
            if not b.build_ok:
                _log(self.logger, Severity.ERROR, b.log_on_build_failure)
                return None
            return IHostMemory(b"ENGINE")

    trt.Builder, trt.OnnxParser = Builder, OnnxParser

    # -- runtime --------------------------------------------------------------------------------
    io_dtype = trt.float16 if spec.input_dtype == "float16" else trt.float32

    class IExecutionContext:
        def __init__(self):
            self.shape = None
            self.addresses = {}
            self.profile = 0
            self.device_memory = None

        def set_device_memory(self, memory, size):
            calls.append(("set_device_memory", size))
            self.device_memory = (memory, size)

        def set_optimization_profile_async(self, profile_index, stream_handle):
            calls.append(("set_profile", profile_index))
            if not b.profile_switch_ok or not 0 <= profile_index < len(spec.profiles):
                return False
            self.profile = profile_index
            return True

        def set_input_shape(self, name, shape):
            calls.append(("set_input_shape", name, tuple(shape)))
            lo, _, hi = spec.profiles[self.profile] if spec.fixed_batch is None else (spec.fixed_batch,) * 3
            if not b.shape_ok or name != "input" or not lo <= shape[0] <= hi:
                return False
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return (self.shape[0], spec.classes) if name == "logits" else self.shape

        def set_tensor_address(self, name, memory):
            calls.append(("set_tensor_address", name))
            if not b.address_ok:
                return False
            self.addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle):
            capturing = bool(getattr(stream_handle, "capturing", False))
            calls.append(("execute", "capture" if capturing else "eager", self.profile))
            if not b.enqueue_ok or (capturing and not b.enqueue_ok_in_capture):
                return False
            if self.device_memory is None:
                raise AssertionError("a USER_MANAGED context ran without set_device_memory")
            x = memory[self.addresses["input"]]
            out = memory[self.addresses["logits"]]
            # A known function of the input, so a test sees the right buffers were bound.
            sums = x.float().reshape(x.shape[0], -1).sum(dim=1)
            out.copy_((sums[:, None] * (1 + x.new_tensor(np.arange(spec.classes), dtype=sums.dtype))).to(out.dtype))
            return True

    class ICudaEngine:
        device_memory_size_v2 = spec.device_memory
        num_optimization_profiles = len(spec.profiles)

        @property
        def num_io_tensors(self):
            return 3 if spec.extra_input else 2

        def get_tensor_name(self, index):
            return ["input", "logits", "mask"][index]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.OUTPUT if name == "logits" else trt.TensorIOMode.INPUT

        def get_tensor_dtype(self, name):
            return io_dtype

        def get_tensor_shape(self, name):
            if name == "logits":
                return (-1, spec.classes)
            return (spec.fixed_batch or -1, *spec.chw)

        def get_tensor_profile_shape(self, name, profile_index):
            lo, opt, hi = spec.profiles[profile_index]
            return [(lo, *spec.chw), (opt, *spec.chw), (hi, *spec.chw)]

        def create_execution_context(self, strategy=trt.ExecutionContextAllocationStrategy.STATIC):
            calls.append(("create_context", strategy.name))
            return IExecutionContext() if b.context_ok else None

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            calls.append(("deserialize", bytes(serialized_engine)))
            if not b.deserialize_ok:
                _log(self.logger, Severity.ERROR, "Serialization assertion: version tag does not match")
                return None
            return ICudaEngine()

    trt.Runtime = Runtime
    return trt


class _Stream:
    """A CPU stand-in stream: a handle that knows whether it is being captured."""

    def __init__(self):
        self.capturing = False
        self.synchronized = 0


class CpuCuda:
    """`bench.engines.trt_engine.TorchCuda` on the CPU: tensors in host memory, registered by address."""

    def __init__(self, memory: dict, calls: list, capture_error: str | None = None):
        import torch

        self.torch, self.memory, self.calls, self.capture_error = torch, memory, calls, capture_error
        self.captures = 0

    def name(self):
        return "Stand-in GPU"

    def stream(self):
        return _Stream()

    @staticmethod
    def handle(stream):
        return stream

    def empty(self, shape, dtype, stream):
        tensor = self.torch.zeros(tuple(shape), dtype=dtype)
        self.memory[tensor.data_ptr()] = tensor
        self.calls.append(("alloc", tuple(shape), str(dtype)))
        return tensor

    def copy_in(self, batch, target, stream):
        target.copy_(self.torch.from_numpy(batch).to(target.dtype))
        self.calls.append(("copy_in", tuple(batch.shape)))

    def to_host(self, tensor, stream):
        return tensor.float().numpy().copy()

    def synchronize(self, stream):
        stream.synchronized += 1
        self.calls.append(("sync",))

    def capture(self, stream, enqueue):
        stream.capturing = True
        try:
            ok = enqueue()
        finally:
            stream.capturing = False
        if self.capture_error:
            raise RuntimeError(self.capture_error)
        if not ok:
            raise RuntimeError("execute_async_v3 returned False during capture")
        self.captures += 1
        return ("graph", enqueue)

    def replay(self, graph, stream):
        self.calls.append(("replay",))
        graph[1]()

    def free_bytes(self):
        return 1 << 30
