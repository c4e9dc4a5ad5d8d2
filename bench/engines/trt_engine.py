"""Native TensorRT inference: a serialized engine, device buffers, execute_async_v3 on its own stream.

Written against the TensorRT 10/11 name-based tensor API (`num_io_tensors`, `get_tensor_name`,
`get_tensor_mode`, `set_input_shape`, `set_tensor_address`, `execute_async_v3`,
`set_optimization_profile_async`) and NOT yet run on real hardware. Device memory is torch's (no
pycuda/cuda-python), reached through `TorchCuda`, the one class here that touches CUDA, so a test
can hand the engine a CPU stand-in. TensorRT is imported lazily.

What the engine does, and why:
- The execution context is user-managed (`ExecutionContextAllocationStrategy.USER_MANAGED`): its
  scratch memory (`device_memory_size_v2`) is a torch allocation, so the memory figure counts it,
  with the IO buffers and the engine's size, instead of torch's buffers alone.
- Everything runs on the engine's stream: buffers are allocated there, the input is copied from
  pinned host memory there, the default stream waits for it before reading the output, and only
  that stream is synchronized, never the whole device.
- An engine with several optimization profiles (one per measured batch) runs each batch on the
  profile whose opt batch it is, else the first one that admits it; `describe()` says which.
- CUDA graphs: captured with `capture_error_mode="thread_local"`; a failed enqueue or capture falls
  back to eager execution, with `cuda_graph: "unsupported: ..."` in the record (as trtexec does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.engines.base import Engine
from bench.errors import EnvironmentProblem, MissingDependency, UsageProblem
from export.tensorrt import import_tensorrt, make_logger, read_engine_manifest  # lazy: imports no tensorrt


def _torch_dtype(trt, torch, dtype):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if dtype not in table:
        raise UsageProblem(f"the engine has a tensor of type {dtype}, which rbench does not feed or read")
    return table[dtype]


class TorchCuda:
    """The CUDA work of the engine, through torch: streams, allocation, copies, graphs, free memory."""

    def __init__(self, device_index: int | None = None):
        import torch

        if not torch.cuda.is_available():
            raise EnvironmentProblem("the trt engine needs an NVIDIA GPU: torch sees none (check `nvidia-smi`)")
        self.torch = torch
        self.device = torch.device("cuda", torch.cuda.current_device() if device_index is None else device_index)

    def name(self) -> str:
        return self.torch.cuda.get_device_name(self.device)

    def stream(self):
        return self.torch.cuda.Stream(self.device)

    @staticmethod
    def handle(stream) -> int:
        return stream.cuda_stream

    def empty(self, shape, dtype, stream):
        with self.torch.cuda.stream(stream):  # allocated for the stream that uses it
            return self.torch.empty(tuple(shape), dtype=dtype, device=self.device)

    def copy_in(self, batch: np.ndarray, target, stream) -> None:
        host = self.torch.from_numpy(batch).to(target.dtype).pin_memory()  # pinned: a true async copy
        with self.torch.cuda.stream(stream):
            target.copy_(host, non_blocking=True)
        stream.synchronize()  # prepare is untimed: the input is in place when it returns

    def to_host(self, tensor, stream) -> np.ndarray:
        current = self.torch.cuda.current_stream(self.device)
        current.wait_stream(stream)  # the default stream reads what the engine's stream wrote
        tensor.record_stream(current)
        return tensor.float().cpu().numpy()

    @staticmethod
    def synchronize(stream) -> None:
        stream.synchronize()

    def capture(self, stream, enqueue):
        """A CUDA graph of `enqueue()` on `stream`; raises RuntimeError when the enqueue or capture fails."""
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            ok = enqueue()
        if not ok:
            raise RuntimeError("execute_async_v3 returned False during capture")
        return graph

    def replay(self, graph, stream) -> None:
        with self.torch.cuda.stream(stream):
            graph.replay()

    def free_bytes(self) -> int:
        return int(self.torch.cuda.mem_get_info(self.device)[0])


def cuda_device(device_index: int | None = None):
    """The CUDA helper the engine uses (tests replace this function with a CPU stand-in)."""
    return TorchCuda(device_index)


class TensorRTEngine(Engine):
    """A deserialized TensorRT engine file with one user-managed execution context and torch buffers.

    The input name, dtype, (C, H, W), batch range and optimization profiles come from the engine.
    Options: `cuda_graph` (capture one `execute_async_v3` per input shape and replay it; falls back
    to eager where capture fails), `tf32` (what the engine must have been built with: its manifest
    is checked). `precision` is checked against the engine: its manifest when there is one, else its
    input dtype (an fp16 input is an fp16 engine); an engine that cannot be checked says so.
    """

    backend = "trt"
    OPTIONS = ("cuda_graph", "tf32")

    def __init__(self, engine_path, *, input_shape=None, device: str = "cuda", precision: str = "fp32",
                 name: str | None = None, cuda_graph: bool = False, tf32: bool = False):
        if device == "cpu":
            device = "cuda"  # TensorRT has no CPU mode; the request for trt implies the GPU
        super().__init__(input_shape=input_shape, device=device, precision=precision, name=name)
        if precision == "bf16":
            raise UsageProblem("the trt engine builds fp32 or fp16 engines; bf16 is for --engine torch")
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise UsageProblem(f"no TensorRT engine at {self.engine_path}; build one with `rbench export MODEL --engine trt`")
        self.cuda_graph = bool(cuda_graph)
        self.cuda_graph_state: str | None = "on" if cuda_graph else None
        self.tf32 = bool(tf32)
        self.max_batch: int | None = None
        self.precision_check: str | None = None
        self.profiles: list[tuple[int, int, int]] = []
        self.profile_index: int | None = None
        self._memory: dict[str, int] = {}

    # -- activation ----------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        trt = import_tensorrt()  # no TensorRT, or broken libraries: MissingDependency naming the extra
        import torch

        self._trt, self._torch = trt, torch
        self._cuda = cuda_device()
        self._logger = make_logger(trt)
        try:
            self._runtime = trt.Runtime(self._logger)
        except Exception as exc:  # noqa: BLE001 - a driver or library mismatch
            raise EnvironmentProblem(f"TensorRT {trt.__version__} cannot start a runtime: {' '.join(str(exc).split())[:160]}") from None
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise EnvironmentProblem(f"TensorRT {trt.__version__} could not load {self.engine_path} "
                                     f"(built by another TensorRT version or for another GPU?): rebuild it here"
                                     f"{self._last_error()}")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.input_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.input_names) != 1:
            raise UsageProblem(f"expected an engine with one input, {self.engine_path} has {self.input_names}")
        self.input_dtype = _torch_dtype(trt, torch, self._engine.get_tensor_dtype(self.input_names[0]))
        self._check_build()
        self._read_profiles()
        self._stream = self._cuda.stream()
        self._graphs: dict[tuple, Any] = {}
        self._buffers: dict[tuple, dict[str, Any]] = {}
        self._bound_shape: tuple | None = None
        self._open_context()

    def _last_error(self) -> str:
        error = getattr(self._logger, "last_error", None)
        return f" (TensorRT: {error})" if error else ""

    def _check_build(self) -> None:
        """`precision` and `tf32` against what the engine was built with: its manifest, else its input dtype."""
        manifest = read_engine_manifest(self.engine_path)
        fp16_input = self.input_dtype == self._torch.float16
        if manifest and manifest.get("precision"):
            built = manifest["precision"]
            if built != self.precision:
                raise UsageProblem(f"{self.engine_path.name} is a {built} engine (its manifest says so); "
                                   f"measure it with --precision {built}")
            if bool(manifest.get("tf32")) != self.tf32:
                state = "on" if manifest.get("tf32") else "off"
                raise UsageProblem(f"{self.engine_path.name} was built with TF32 {state}; "
                                   f"{'add' if manifest.get('tf32') else 'drop'} --tf32, or rebuild it")
            self.precision_check = "manifest"
        elif fp16_input and self.precision != "fp16":
            raise UsageProblem(f"{self.engine_path.name} takes float16 input, so it is an fp16 engine; "
                               "measure it with --precision fp16")
        elif fp16_input:
            self.precision_check = "input dtype (float16)"
        else:
            # A float32 input fits fp32, a weakly typed fp16 engine and an int8 Q/DQ engine alike.
            self.precision_check = f"unverified: no manifest, float32 input; labelled {self.precision} by --precision"

    def _read_profiles(self) -> None:
        """(C, H, W), the batch range and every optimization profile's (min, opt, max) batch."""
        name = self.input_names[0]
        dims = list(self._engine.get_tensor_shape(name))
        if len(dims) != 4:
            raise UsageProblem(f"{self.engine_path}: input {name!r} has rank {len(dims)}, not an NCHW batch")
        count = int(getattr(self._engine, "num_optimization_profiles", 1) or 1)
        shapes = [self._engine.get_tensor_profile_shape(name, i) for i in range(count)]
        if -1 in dims[1:]:  # symbolic C/H/W: the first profile's opt shape is what the engine was tuned for
            dims = list(shapes[0][1])
        shape = tuple(int(d) for d in dims[1:])
        if self.input_shape is not None and self.input_shape != shape:
            raise UsageProblem(f"{self.engine_path} takes {shape}, not {self.input_shape}")
        self.input_shape = shape
        if dims[0] == -1:
            self.profiles = [tuple(int(s[0]) for s in p) for p in shapes]
        else:
            self.profiles = [(int(dims[0]),) * 3]
        self.min_batch = min(p[0] for p in self.profiles)
        self.max_batch = max(p[2] for p in self.profiles)

    def _open_context(self) -> None:
        """A user-managed execution context whose scratch memory is a torch allocation we can count."""
        trt = self._trt
        strategy = getattr(getattr(trt, "ExecutionContextAllocationStrategy", None), "USER_MANAGED", None)
        context = self._engine.create_execution_context(strategy) if strategy is not None else \
            self._engine.create_execution_context()
        if context is None:  # TensorRT's answer when the context's memory cannot be had
            raise EnvironmentProblem(f"TensorRT could not create an execution context for {self.engine_path.name}: "
                                     f"out of memory on the GPU{self._last_error()}")
        self._context = context
        if strategy is None:
            return
        size = int(getattr(self._engine, "device_memory_size_v2", 0) or getattr(self._engine, "device_memory_size", 0))
        self._scratch = self._cuda.empty((max(size, 1),), self._torch.uint8, self._stream)
        if hasattr(context, "set_device_memory"):  # TensorRT 10.1+
            context.set_device_memory(self._scratch.data_ptr(), size)
        else:  # 10.0: the write-only property, sized by device_memory_size
            context.device_memory = self._scratch.data_ptr()
        self._memory["context"] = size

    def _deactivate_impl(self) -> None:
        if getattr(self, "_stream", None) is not None:
            self._cuda.synchronize(self._stream)  # queued work still reads these buffers and graphs
        self._graphs.clear()
        self._buffers.clear()
        self._bound_shape = None
        self._context = self._engine = self._runtime = None
        self._scratch = None

    # -- inference ---------------------------------------------------------------------------
    def _profile_for(self, batch: int) -> int:
        """The profile made for `batch` (opt == batch), else the first whose range admits it."""
        for index, (_, opt, _) in enumerate(self.profiles):
            if opt == batch:
                return index
        for index, (lo, _, hi) in enumerate(self.profiles):
            if lo <= batch <= hi:
                return index
        raise UsageProblem(f"batch {batch} is outside the engine's optimization profiles "
                           f"({self.min_batch}..{self.max_batch}); rebuild it with a wider --batch-range")

    def _use_profile(self, index: int) -> None:
        if index == self.profile_index:
            return
        if len(self.profiles) > 1 or index != 0:
            if not self._context.set_optimization_profile_async(index, self._cuda.handle(self._stream)):
                raise EnvironmentProblem(f"TensorRT could not switch to optimization profile {index}{self._last_error()}")
        self.profile_index = index
        self._bound_shape = None

    def _bind(self, shape: tuple) -> dict[str, Any]:
        """Input/output device buffers for one input shape, with their addresses set on the context."""
        self._use_profile(self._profile_for(shape[0]))
        if self._bound_shape == shape:  # rebinding costs Python calls; skip it inside timed runs
            return self._buffers[shape]
        if not self._context.set_input_shape(self.input_names[0], shape):
            raise UsageProblem(f"batch {shape[0]} does not fit the engine's optimization profile "
                               f"{self.profile_index} ({self.min_batch}..{self.max_batch}){self._last_error()}")
        if shape not in self._buffers:
            torch, trt = self._torch, self._trt
            buffers = {self.input_names[0]: self._cuda.empty(shape, self.input_dtype, self._stream)}
            for name in self.output_names:
                out_shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
                if any(d < 0 for d in out_shape):
                    raise UsageProblem(f"output {name!r} has no fixed shape {out_shape} for input {shape}")
                dtype = _torch_dtype(trt, torch, self._engine.get_tensor_dtype(name))
                buffers[name] = self._cuda.empty(out_shape, dtype, self._stream)
            self._buffers[shape] = buffers
        for name, tensor in self._buffers[shape].items():
            if not self._context.set_tensor_address(name, tensor.data_ptr()):
                raise EnvironmentProblem(f"TensorRT refused the address of tensor {name!r}{self._last_error()}")
        self._bound_shape = shape
        return self._buffers[shape]

    def _prepare_impl(self, batch: np.ndarray):
        buffers = self._bind(tuple(batch.shape))
        self._cuda.copy_in(batch, buffers[self.input_names[0]], self._stream)
        return buffers

    def _enqueue(self) -> bool:
        return bool(self._context.execute_async_v3(self._cuda.handle(self._stream)))

    def _run_prepared_impl(self, buffers):
        shape = tuple(buffers[self.input_names[0]].shape)
        self._bind(shape)
        if self.cuda_graph and shape not in self._graphs:
            self._graphs[shape] = self._capture(shape)
        graph = self._graphs.get(shape) if self.cuda_graph else None
        if graph is not None:
            self._cuda.replay(graph, self._stream)
        elif not self._enqueue():
            raise EnvironmentProblem(f"TensorRT execute_async_v3 failed{self._last_error()}")
        return buffers[self.output_names[0]]

    def _capture(self, shape: tuple):
        """A CUDA graph of one enqueue at `shape`, or None (eager from then on) where it cannot be captured."""
        if not self._enqueue():  # one run before capture, as TensorRT advises (it may allocate lazily)
            raise EnvironmentProblem(f"TensorRT execute_async_v3 failed{self._last_error()}")
        self._cuda.synchronize(self._stream)
        try:
            return self._cuda.capture(self._stream, self._enqueue)
        except Exception as exc:  # noqa: BLE001 - capture failures come as RuntimeError or CUDA errors
            self._cuda.synchronize(self._stream)
            self.cuda_graph_state = f"unsupported: {' '.join(str(exc).split())[:120]}"
            self._bound_shape = None  # bind again outside the failed capture
            self._bind(shape)
            return None

    def synchronize(self) -> None:
        if self.is_active:
            self._cuda.synchronize(self._stream)

    def _to_numpy_impl(self, output) -> np.ndarray:
        return self._cuda.to_host(output, self._stream)

    def memory_usage(self) -> dict[str, Any] | None:
        """Device memory this engine holds: execution-context scratch + IO buffers + the engine (its size)."""
        if not self.is_active:
            return None
        buffers = sum(t.numel() * t.element_size() for b in self._buffers.values() for t in b.values())
        engine_bytes = self.engine_path.stat().st_size
        total = self._memory.get("context", 0) + buffers + engine_bytes
        return {"memory_peak_bytes": int(total),
                "memory_kind": f"trt: context {self._memory.get('context', 0)} + IO buffers {buffers} + "
                               f"engine size {engine_bytes} bytes"}

    def _describe_impl(self) -> dict[str, Any]:
        version = None
        device = "cuda"
        try:
            trt = import_tensorrt()
            version = trt.__version__
            if self.is_active:
                device = f"cuda ({self._cuda.name()})"
        except MissingDependency:
            pass
        profile = None
        if self.profile_index is not None:
            lo, opt, hi = self.profiles[self.profile_index]
            profile = {"index": self.profile_index, "min": lo, "opt": opt, "max": hi}
        return {"version": version, "device": device,
                "options": {"cuda_graph": self.cuda_graph_state if self.cuda_graph else False,
                            "max_batch": self.max_batch, "engine": str(self.engine_path),
                            "tf32": self.tf32, "precision_check": self.precision_check,
                            "profiles": len(self.profiles) or None, "profile": profile,
                            "profile_policy": "one profile per measured batch" if len(self.profiles) > 1
                            else "one profile for every batch"}}
