"""Native TensorRT inference: a serialized engine, device buffers, execute_async_v3 on a stream.

Written against the TensorRT 10/11 name-based tensor API (`num_io_tensors`, `get_tensor_name`,
`get_tensor_mode`, `set_input_shape`, `set_tensor_address`, `execute_async_v3`). Device buffers
are torch CUDA tensors, so no pycuda/cuda-python is needed. TensorRT is imported lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.engines.base import Engine
from bench.errors import EnvironmentProblem, MissingDependency, UsageProblem
from export.tensorrt import import_tensorrt  # the one TensorRT import helper (lazy: imports no tensorrt)


def _torch_dtype(trt, torch, dtype):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    return table[dtype]


class TensorRTEngine(Engine):
    """A deserialized TensorRT engine file with one execution context and torch-allocated buffers.

    The input name, dtype, (C, H, W) and batch range come from the engine and its first
    optimization profile. Options: `cuda_graph` (capture one `execute_async_v3` per input shape
    and replay it). `precision` is what the record says the engine was built for.
    """

    backend = "trt"
    OPTIONS = ("cuda_graph",)

    def __init__(self, engine_path, *, input_shape=None, device: str = "cuda", precision: str = "fp32",
                 name: str | None = None, cuda_graph: bool = False):
        if device == "cpu":
            device = "cuda"  # TensorRT has no CPU mode; the request for trt implies the GPU
        super().__init__(input_shape=input_shape, device=device, precision=precision, name=name)
        if precision == "bf16":
            raise UsageProblem("the trt engine builds fp32 or fp16 engines; bf16 is for --engine torch")
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise UsageProblem(f"no TensorRT engine at {self.engine_path}; build one with `rbench export MODEL --engine trt`")
        self.cuda_graph = bool(cuda_graph)
        self.max_batch: int | None = None

    def _activate_impl(self) -> None:
        trt = import_tensorrt()  # no TensorRT: MissingDependency naming the extra
        import torch

        if not torch.cuda.is_available():
            raise EnvironmentProblem(f"the trt engine needs an NVIDIA GPU: TensorRT {trt.__version__} is here but torch sees none")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise EnvironmentProblem(f"TensorRT {trt.__version__} could not load {self.engine_path}; "
                                     "rebuild it on this GPU and TensorRT version")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.input_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.input_names) != 1:
            raise UsageProblem(f"expected an engine with one input, {self.engine_path} has {self.input_names}")
        self.input_dtype = _torch_dtype(trt, torch, self._engine.get_tensor_dtype(self.input_names[0]))
        self._read_profile()
        self._stream = torch.cuda.Stream()
        self._trt = trt
        self._torch = torch
        self._graphs: dict[tuple, Any] = {}
        self._buffers: dict[tuple, dict[str, Any]] = {}
        self._bound_shape: tuple | None = None

    def _read_profile(self) -> None:
        """(C, H, W) and the batch range from the engine: its input shape and first optimization profile."""
        name = self.input_names[0]
        dims = list(self._engine.get_tensor_shape(name))
        if len(dims) != 4:
            raise UsageProblem(f"{self.engine_path}: input {name!r} has rank {len(dims)}, not an NCHW batch")
        if -1 in dims[1:]:  # symbolic C/H/W: the profile's opt shape is what the engine was tuned for
            dims = list(self._engine.get_tensor_profile_shape(name, 0)[1])
        shape = tuple(int(d) for d in dims[1:])
        if self.input_shape is not None and self.input_shape != shape:
            raise UsageProblem(f"{self.engine_path} takes {shape}, not {self.input_shape}")
        self.input_shape = shape
        if dims[0] == -1:
            self.min_batch, _, self.max_batch = (int(s[0]) for s in self._engine.get_tensor_profile_shape(name, 0))
        else:
            self.min_batch = self.max_batch = int(dims[0])

    def _deactivate_impl(self) -> None:
        self._graphs.clear()
        self._buffers.clear()
        self._bound_shape = None
        self._context = self._engine = self._runtime = None

    # -- inference ---------------------------------------------------------------------------
    def _bind(self, shape: tuple) -> dict[str, Any]:
        """Input/output device buffers for one input shape, with their addresses set on the context."""
        if shape in self._buffers:
            buffers = self._buffers[shape]
        else:
            torch, trt = self._torch, self._trt
            if not self._context.set_input_shape(self.input_names[0], shape):
                raise UsageProblem(f"batch {shape[0]} is outside the engine's optimization profile "
                                   f"({self.min_batch}..{self.max_batch})")
            buffers = {self.input_names[0]: torch.empty(shape, dtype=self.input_dtype, device="cuda")}
            for name in self.output_names:
                out_shape = tuple(self._context.get_tensor_shape(name))
                dtype = _torch_dtype(trt, torch, self._engine.get_tensor_dtype(name))
                buffers[name] = torch.empty(out_shape, dtype=dtype, device="cuda")
            self._buffers[shape] = buffers
            self._bound_shape = None
        if self._bound_shape != shape:  # rebinding costs Python calls; skip it inside timed runs
            self._context.set_input_shape(self.input_names[0], shape)
            for name, tensor in buffers.items():
                self._context.set_tensor_address(name, tensor.data_ptr())
            self._bound_shape = shape
        return buffers

    def _prepare_impl(self, batch: np.ndarray):
        buffers = self._bind(tuple(batch.shape))
        host = self._torch.from_numpy(batch).to(self.input_dtype)
        buffers[self.input_names[0]].copy_(host)
        self._torch.cuda.synchronize()
        return buffers

    def _run_prepared_impl(self, buffers):
        shape = tuple(buffers[self.input_names[0]].shape)
        self._bind(shape)
        if not self.cuda_graph:
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise EnvironmentProblem("TensorRT execute_async_v3 failed; see the TensorRT log above")
        else:
            if shape not in self._graphs:
                self._context.execute_async_v3(self._stream.cuda_stream)  # one run before capture (TensorRT advice)
                self._stream.synchronize()
                graph = self._torch.cuda.CUDAGraph()
                with self._torch.cuda.graph(graph, stream=self._stream):
                    self._context.execute_async_v3(self._stream.cuda_stream)
                self._graphs[shape] = graph
            with self._torch.cuda.stream(self._stream):  # replay where synchronize() waits
                self._graphs[shape].replay()
        return buffers[self.output_names[0]]

    def synchronize(self) -> None:
        if self.is_active:
            self._stream.synchronize()

    def _to_numpy_impl(self, output) -> np.ndarray:
        return output.float().cpu().numpy()

    def _describe_impl(self) -> dict[str, Any]:
        version = None
        device = "cuda"
        try:
            import torch

            trt = import_tensorrt()
            version = trt.__version__
            if torch.cuda.is_available():
                device = f"cuda ({torch.cuda.get_device_name()})"
        except MissingDependency:
            pass
        return {"version": version, "device": device,
                "options": {"cuda_graph": self.cuda_graph, "max_batch": self.max_batch, "engine": str(self.engine_path)}}
