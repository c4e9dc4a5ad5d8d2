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
from bench.engines.ort_engine import cache_dir, export_for_engine
from bench.errors import EnvironmentProblem, MissingDependency, UsageProblem

_TRT_HINT = "pip install 'rbench[trt]' (tensorrt>=10) on a machine with an NVIDIA GPU"


def import_tensorrt():
    """The tensorrt module, or a one-line MissingDependency naming what to install."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependency("TensorRT", _TRT_HINT) from exc
    return tensorrt


def trt_status() -> tuple[bool, str]:
    """(usable, why): TensorRT needs the module and a CUDA GPU torch can see."""
    try:
        trt = import_tensorrt()
    except MissingDependency as exc:
        return False, str(exc)
    try:
        from export.tensorrt import trt_available

        ok, reason = trt_available()
        if not ok:
            return False, reason
    except ImportError:
        pass
    import torch

    if not torch.cuda.is_available():
        return False, f"TensorRT {trt.__version__} is installed but torch sees no CUDA GPU"
    return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name()}"


def _torch_dtype(trt, torch, dtype):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    return table[dtype]


class TensorRTEngine(Engine):
    """A deserialized TensorRT engine with one execution context and torch-allocated buffers.

    Options: `max_batch` (top of the optimization profile when the engine is built here),
    `cuda_graph` (capture one `execute_async_v3` per input shape and replay it).
    """

    backend = "trt"

    def __init__(self, model=None, *, model_name: str | None = None, engine_path=None, onnx_path=None,
                 input_shape=(3, 32, 32), device: str = "cuda", precision: str = "fp32", max_batch: int = 64,
                 cuda_graph: bool = False, num_classes: int = 10, **unused: Any):
        if device == "cpu":
            device = "cuda"  # TensorRT has no CPU mode; the request for trt implies the GPU
        super().__init__(input_shape=input_shape, device=device, precision=precision, name=model_name)
        if precision == "bf16":
            raise UsageProblem("the trt engine builds fp32 or fp16 engines; bf16 is for --engine torch")
        if model is None and model_name is None and engine_path is None and onnx_path is None:
            raise UsageProblem("the trt engine needs an engine file, an ONNX file, a model or a model name")
        self._model_in = model
        self.model_name = model_name or getattr(model, "config", {}).get("name")
        self.engine_path = Path(engine_path) if engine_path else None
        self.onnx_path = Path(onnx_path) if onnx_path else None
        self.max_batch = int(max_batch)
        self.cuda_graph = bool(cuda_graph)
        self.num_classes = num_classes
        self._tmp = None

    # -- activation: find or build the engine, deserialize, create the context -------------
    def _build_if_missing(self) -> Path:
        import tempfile

        import export

        c, h, w = self.input_shape
        if self.engine_path is not None and self.engine_path.exists():
            return self.engine_path  # the user's own engine, used as it is
        if self.onnx_path is None:
            if self._model_in is not None:
                self._tmp = tempfile.TemporaryDirectory(prefix="rbench-trt-")
            # TensorRT 11 takes the precision from the ONNX file (strong typing), so fp16 exports fp16.
            self.onnx_path = export_for_engine(self._model_in, self.model_name, self.input_shape, self.precision,
                                               Path(self._tmp.name) if self._tmp else None, self.num_classes)
        if self.engine_path is None:
            folder = Path(self._tmp.name) if self._tmp else cache_dir() / "trt"
            self.engine_path = folder / f"{self.onnx_path.stem}-{self.precision}-b{self.max_batch}.engine"
        # build_trt_engine reuses an engine whose cache key (ONNX hash, TensorRT, GPU, precision) matches.
        report = export.build_trt_engine(self.onnx_path, self.engine_path, precision=self.precision,
                                         batch_range=(1, min(8, self.max_batch), self.max_batch), input_shape=(c, h, w))
        self.engine_path = Path(getattr(report, "engine_path", None) or self.engine_path)
        return self.engine_path

    def _activate_impl(self) -> None:
        trt = import_tensorrt()  # no TensorRT: MissingDependency naming the extra
        import torch

        if not torch.cuda.is_available():
            raise EnvironmentProblem(f"the trt engine needs an NVIDIA GPU: TensorRT {trt.__version__} is here but torch sees none")
        path = self._build_if_missing()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise EnvironmentProblem(f"TensorRT {trt.__version__} could not load {path}; rebuild it on this GPU/version")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.input_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.input_names) != 1:
            raise UsageProblem(f"expected an engine with one input, {path} has {self.input_names}")
        self.input_dtype = _torch_dtype(trt, torch, self._engine.get_tensor_dtype(self.input_names[0]))
        self._stream = torch.cuda.Stream()
        self._trt = trt
        self._torch = torch
        self._graphs: dict[tuple, Any] = {}
        self._buffers: dict[tuple, dict[str, Any]] = {}
        self._bound_shape: tuple | None = None

    def _deactivate_impl(self) -> None:
        self._graphs.clear()
        self._buffers.clear()
        self._bound_shape = None
        self._context = self._engine = self._runtime = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.engine_path = self.onnx_path = None

    # -- inference ---------------------------------------------------------------------------
    def _bind(self, shape: tuple) -> dict[str, Any]:
        """Input/output device buffers for one input shape, with their addresses set on the context."""
        if shape in self._buffers:
            buffers = self._buffers[shape]
        else:
            torch, trt = self._torch, self._trt
            if not self._context.set_input_shape(self.input_names[0], shape):
                raise UsageProblem(f"batch {shape[0]} is outside the engine's optimization profile (max {self.max_batch})")
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
                "options": {"cuda_graph": self.cuda_graph, "max_batch": self.max_batch,
                            "engine": str(self.engine_path) if self.engine_path else None}}
