"""ONNX Runtime inference on a finished ONNX file: CPU, CUDA or TensorRT execution provider."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.engines.base import Engine
from bench.errors import DataProblem, EnvironmentProblem, MissingDependency, UsageProblem

#: --provider short names -> onnxruntime execution providers.
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
GRAPH_OPTIMIZATION = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                      "all": "ORT_ENABLE_ALL"}
_GPU_HINT = "install onnxruntime-gpu instead of onnxruntime (pip uninstall -y onnxruntime && pip install 'rbench[gpu]')"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependency("onnxruntime", "pip install onnxruntime (CPU) or 'rbench[gpu]' (CUDA)") from exc
    return onnxruntime


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_provider(provider: str | None, device: str) -> str:
    """The execution provider for `--provider` (short or full name) or, if none, for the device."""
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    if provider is None:
        provider = "cuda" if device == "cuda" else "cpu"
    full = PROVIDERS.get(provider.lower(), provider)
    if full not in PROVIDERS.values():
        raise UsageProblem(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if full not in available:
        hint = _GPU_HINT if full != "CPUExecutionProvider" else "reinstall onnxruntime"
        raise EnvironmentProblem(f"onnxruntime {ort.__version__} has no {full} here (it has {', '.join(available)}); {hint}")
    if full != "CPUExecutionProvider" and device != "cuda":
        raise UsageProblem(f"provider {provider!r} runs on the GPU; add --device cuda")
    if full == "CPUExecutionProvider" and device == "cuda":
        raise UsageProblem("provider 'cpu' runs on the CPU; drop --device cuda or pick --provider cuda")
    return full


class OnnxRuntimeEngine(Engine):
    """An `onnxruntime.InferenceSession` on a finished ONNX file (or a session the caller made).

    The input name, shape and dtype come from the model itself; `input_shape` is needed only
    where the file leaves channels, height or width symbolic. Options: `provider` (cpu | cuda |
    tensorrt), `threads` (intra-op), `graph_optimization` (disable | basic | extended | all). On
    CUDA the input is bound in device memory through IO binding, so a timed run copies nothing
    between host and device.
    """

    backend = "ort"
    OPTIONS = ("provider", "threads", "graph_optimization")

    def __init__(self, onnx, *, input_shape=None, device: str = "cpu", precision: str = "fp32", name: str | None = None,
                 provider: str | None = None, threads: int | None = None, graph_optimization: str = "all"):
        super().__init__(input_shape=input_shape, device=device, precision=precision, name=name)
        if precision == "bf16":
            raise UsageProblem("onnxruntime runs fp32, fp16 or int8 models; bf16 is for --engine torch or openvino")
        if graph_optimization not in GRAPH_OPTIMIZATION:
            raise UsageProblem(f"unknown graph optimization {graph_optimization!r}; choose one of {', '.join(GRAPH_OPTIMIZATION)}")
        if isinstance(onnx, (str, os.PathLike)):
            self.onnx_path, self._session_in = Path(onnx), None
            if not self.onnx_path.is_file():
                raise UsageProblem(f"no ONNX file at {self.onnx_path}; run `rbench export` first")
        elif hasattr(onnx, "get_inputs") and hasattr(onnx, "run"):
            self.onnx_path, self._session_in = None, onnx
        else:
            raise UsageProblem(f"the ort engine runs an ONNX path or an InferenceSession, not a {type(onnx).__name__}")
        self.provider_request = provider
        self.threads = threads
        self.graph_optimization = graph_optimization

    def _activate_impl(self) -> None:
        ort = import_onnxruntime()
        self._ort = ort
        self._binding = None
        if self._session_in is not None:  # the caller's own session, with its own providers and options
            self.session = self._session_in
            self.provider = self.session.get_providers()[0]
        else:
            self.provider = resolve_provider(self.provider_request, self.device)
            self.session = self._open_session(ort)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.output_name = self.session.get_outputs()[0].name
        self.input_dtype = np.float16 if "float16" in first.type else np.float32
        file_precision = "fp16" if self.input_dtype == np.float16 else "fp32"
        if self.onnx_path is not None:
            from export.quantize import is_quantized

            if is_quantized(self.onnx_path):  # a Q/DQ file takes float32 input; its precision is int8
                file_precision = "int8"
        if file_precision != self.precision:
            what = "is an int8 (Q/DQ) model" if file_precision == "int8" else \
                f"takes {np.dtype(self.input_dtype).name} input"
            hint = "" if self.precision != "int8" else \
                " (int8 runs a Q/DQ file from `rbench export MODEL --precision int8 --checkpoint CKPT --calibration DATA`)"
            raise UsageProblem(f"the ONNX model {what}; measure it with --precision {file_precision}{hint}")
        self.input_shape = self._shape_from(first.shape)

    def _open_session(self, ort):
        if self.precision == "fp16" and self.device == "cpu":
            from bench.engines.torch_engine import cpu_precision_support

            ok, why = cpu_precision_support("fp16")
            if not ok:  # onnxruntime would run it through Cast nodes and time the casts
                raise EnvironmentProblem(f"fp16 on CPU: {why}")
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION[self.graph_optimization])
        # onnxruntime sizes its pool by the machine's cores, not this process's CPU affinity: respect the affinity.
        options.intra_op_num_threads = int(self.threads) if self.threads else _usable_cores()
        providers = [self.provider] + (["CUDAExecutionProvider"] if self.provider == "TensorrtExecutionProvider" else [])
        try:
            return ort.InferenceSession(str(self.onnx_path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            first = " ".join(str(exc).split())[:200]
            raise DataProblem(f"onnxruntime cannot load {self.onnx_path}: {first}") from None

    def _deactivate_impl(self) -> None:
        self.session = None
        self._binding = None

    def _prepare_impl(self, batch: np.ndarray):
        batch = batch.astype(self.input_dtype, copy=False)
        if self.device == "cpu":
            return {self.input_name: batch}
        # Device-resident input bound once; the output stays on the device until to_numpy.
        value = self._ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_name, "cuda")
        return binding, value

    def _run_prepared_impl(self, prepared):
        if self.device == "cpu":
            return self.session.run([self.output_name], prepared)[0]
        binding, _value = prepared
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return binding

    def _to_numpy_impl(self, output) -> np.ndarray:
        if self.device == "cpu":
            return output
        return output.copy_outputs_to_cpu()[0]

    def _describe_impl(self) -> dict[str, Any]:
        ort = import_onnxruntime()
        providers = self.session.get_providers() if getattr(self, "session", None) else None
        return {
            "version": ort.__version__,
            "providers": providers,
            "options": {"graph_optimization": self.graph_optimization,
                        "intra_op_threads": self.threads or f"{_usable_cores()} (usable cores)",
                        "io_binding": self.device == "cuda", "onnx": str(self.onnx_path) if self.onnx_path else None},
        }
