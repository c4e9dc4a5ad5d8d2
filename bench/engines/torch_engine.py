"""PyTorch eager (optionally torch.compile'd) inference: eval mode, inference_mode, autocast."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from bench.engines.base import Engine
from bench.errors import EnvironmentProblem, UsageProblem

_AUTOCAST_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def cpu_precision_support(precision: str) -> tuple[bool, str]:
    """Whether this CPU runs `precision` natively, and why (or why not).

    bf16 autocast runs on every CPU torch supports (emulated without avx512_bf16/amx_bf16, so
    slower, but correct), so it is allowed and the record says whether it is native. fp16
    on CPU is refused unless the CPU has fp16 arithmetic (avx512_fp16 or amx_fp16): elsewhere
    torch converts every op and the "fp16 latency" would measure the conversions.
    """
    if precision == "fp32":
        return True, "fp32 runs everywhere"
    flags = _cpu_flags()
    if precision == "bf16":
        native = flags & {"avx512_bf16", "amx_bf16"}
        return True, f"native ({', '.join(sorted(native))})" if native else "emulated (no avx512_bf16/amx_bf16)"
    if precision == "fp16":
        native = flags & {"avx512_fp16", "amx_fp16"}
        if not native:
            return False, "this CPU has no fp16 arithmetic (avx512_fp16/amx_fp16); use --precision bf16 or --device cuda"
        try:  # the flag is there; check that torch's kernels accept it too
            import torch

            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):
                torch.nn.functional.conv2d(torch.ones(1, 2, 4, 4), torch.ones(2, 2, 3, 3))
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot"
            return False, f"torch cannot run fp16 on this CPU: {exc}"
        return True, f"native ({', '.join(sorted(native))})"
    return False, f"unknown precision {precision!r}"


def check_cuda() -> None:
    """Raise EnvironmentProblem unless torch sees a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda
        why = "torch was built without CUDA" if built is None else f"torch (CUDA {built}) sees no GPU"
        raise EnvironmentProblem(f"--device cuda needs an NVIDIA GPU: {why}; use --device cpu")


class TorchEngine(Engine):
    """A `torch.nn.Module` in eval mode under `torch.inference_mode()`.

    Options: `compile` (torch.compile, compiled at activation, untimed), `channels_last`,
    `cuda_graph` (capture one forward per batch shape and replay it; CUDA only), `threads`
    (torch intra-op threads on CPU, restored when the engine deactivates), `tf32` (on CUDA, let
    fp32 convolutions and matmuls use TF32). fp16/bf16 run under autocast, on CUDA always, on CPU
    when the CPU can (see `cpu_precision_support`).

    fp32 on CUDA is strict fp32 unless `tf32`: torch's cuDNN convolutions default to TF32, while
    TensorRT clears it, so without this the "fp32" of two engines would be two precisions.
    """

    backend = "torch"
    OPTIONS = ("compile", "channels_last", "cuda_graph", "threads", "tf32")

    def __init__(self, model, *, input_shape, device: str = "cpu", precision: str = "fp32", name: str | None = None,
                 compile: bool = False, channels_last: bool = False, cuda_graph: bool = False, threads: int | None = None,
                 tf32: bool = False):
        import torch.nn as nn

        super().__init__(input_shape=input_shape, device=device, precision=precision, name=name)
        if not isinstance(model, nn.Module):
            raise UsageProblem(f"the torch engine runs an nn.Module, not a {type(model).__name__}")
        if self.input_shape is None:
            raise UsageProblem("the torch engine needs input_shape=(C, H, W)")
        if precision == "int8":
            raise UsageProblem("the torch engine runs fp32, fp16 or bf16; int8 is a Q/DQ ONNX file for "
                               "--engine ort, openvino or trt")
        if cuda_graph and device != "cuda":
            raise UsageProblem("CUDA graphs need --device cuda")
        self._model_in = model
        self.compile = bool(compile)
        self.channels_last = bool(channels_last)
        self.cuda_graph = bool(cuda_graph)
        self.threads = threads
        self.tf32 = bool(tf32)
        self._tf32_before: tuple[bool, bool] | None = None
        self.precision_note = None
        self._graphs: dict[tuple, tuple] = {}
        self._threads_before: int | None = None

    def _activate_impl(self) -> None:
        import torch

        if self.device == "cuda":
            check_cuda()
            # Global switches: set for this engine's life, put back on deactivate.
            self._tf32_before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
            torch.backends.cudnn.allow_tf32 = self.tf32
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
        elif self.precision != "fp32":
            ok, why = cpu_precision_support(self.precision)
            if not ok:
                raise EnvironmentProblem(f"{self.precision} on CPU: {why}")
            self.precision_note = why
        if self.threads and self.device == "cpu":
            self._threads_before = torch.get_num_threads()  # a global setting: put it back on deactivate
            torch.set_num_threads(int(self.threads))
        model = self._model_in.eval().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._torch = torch
        self._model = model
        self._forward = model
        if self.compile:
            try:
                self._forward = torch.compile(model)
                self._run(self._prepare_impl(np.zeros((1, *self.input_shape), np.float32)))  # compile now, untimed
                self.synchronize()
            except Exception as exc:  # noqa: BLE001 - inductor failures have many types
                raise EnvironmentProblem(f"torch.compile failed on this machine: {' '.join(str(exc).split())[:200]}") from exc

    def _deactivate_impl(self) -> None:
        self._graphs.clear()
        self._model = self._forward = None
        if self._threads_before is not None:
            self._torch.set_num_threads(self._threads_before)
            self._threads_before = None
        if self._tf32_before is not None:
            self._torch.backends.cudnn.allow_tf32, self._torch.backends.cuda.matmul.allow_tf32 = self._tf32_before
            self._tf32_before = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()

    def _prepare_impl(self, batch: np.ndarray):
        torch = self._torch
        x = torch.from_numpy(batch).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _run(self, x):
        torch = self._torch
        if self.precision == "fp32" and torch.is_inference_mode_enabled():
            return self._forward(x)  # inside `timing_context` (or the caller's own): the bare loop's call, no more
        with torch.inference_mode():
            if self.precision == "fp32":
                return self._forward(x)
            with torch.autocast(self.device, dtype=getattr(torch, _AUTOCAST_DTYPES[self.precision])):
                return self._forward(x)

    def timing_context(self):
        """inference_mode, entered once by the timing loop: a bare `with torch.inference_mode(): for ...: model(x)`
        enters it once too, so each timed run is the forward alone, not the forward plus a context's enter and exit."""
        return self._torch.inference_mode()

    def _run_prepared_impl(self, x):
        if not self.cuda_graph:
            return self._run(x)
        key = tuple(x.shape)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_in, static_out = self._graphs[key]
        if x.data_ptr() != static_in.data_ptr():
            static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x):
        torch = self._torch
        static_in = x.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm the allocator and cuDNN autotuning outside the graph
                self._run(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._run(static_in)
        return graph, static_in, static_out

    def _to_numpy_impl(self, output) -> np.ndarray:
        return output.detach().float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device == "cuda" and self.is_active:
            self._torch.cuda.synchronize()

    def _describe_impl(self) -> dict[str, Any]:
        import torch

        device = self.device
        if self.device == "cuda" and torch.cuda.is_available():
            device = f"cuda ({torch.cuda.get_device_name()})"
        threads = torch.get_num_threads() if self.device == "cpu" else None
        return {
            "version": torch.__version__,
            "device": device,
            "options": {"mode": "compile" if self.compile else "eager", "channels_last": self.channels_last,
                        "cuda_graph": self.cuda_graph, "threads": threads,
                        "tf32": self.tf32 if self.device == "cuda" else None,
                        "autocast": None if self.precision == "fp32" else _AUTOCAST_DTYPES[self.precision],
                        "precision_note": self.precision_note},
        }
