"""ONNX Runtime inference on a finished ONNX file: CPU, CUDA or TensorRT execution provider.

On a GPU (written against onnxruntime-gpu's provider options, NOT yet run on real hardware):
- the provider asked for must be the one the session runs: onnxruntime falls back to the CPU
  silently when a GPU provider cannot start, so the engine checks `get_providers()` and refuses;
- the CUDA provider gets `device_id` and `use_tf32` (fp32 is strict fp32 unless `tf32`);
- the TensorRT provider gets an engine cache, a timing cache and explicit min/opt/max shapes
  (`trt_profile_*_shapes`), so no TensorRT engine is built inside a timed loop;
- memory: free device memory is read before the session is made and after runs
  (`torch.cuda.mem_get_info`), since onnxruntime's arena is invisible to torch's allocator.
"""

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


def _free_device_bytes(device_id: int) -> int | None:
    """Free memory of CUDA device `device_id` (cudaMemGetInfo through torch), or None when unknown."""
    try:
        import torch

        return int(torch.cuda.mem_get_info(device_id)[0])
    except Exception:  # noqa: BLE001 - no CUDA, a broken driver: unknown, not a crash
        return None


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
    tensorrt), `threads` (intra-op), `graph_optimization` (disable | basic | extended | all),
    `device_id` (the CUDA device), `tf32` (CUDA provider: let fp32 use TF32). On CUDA the input
    is bound in device memory through IO binding, so a timed run copies nothing between host and
    device. `batch_range` (min, opt, max) is the TensorRT provider's profile (`create_engine` sets it).
    """

    backend = "ort"
    OPTIONS = ("provider", "threads", "graph_optimization", "device_id", "tf32")

    def __init__(self, onnx, *, input_shape=None, device: str = "cpu", precision: str = "fp32", name: str | None = None,
                 provider: str | None = None, threads: int | None = None, graph_optimization: str = "all",
                 device_id: int | None = None, tf32: bool = False, batch_range: tuple[int, int, int] | None = None,
                 cache_dir: str | os.PathLike | None = None):
        super().__init__(input_shape=input_shape, device=device, precision=precision, name=name)
        if device_id is not None and (device != "cuda" or int(device_id) < 0):
            raise UsageProblem(f"--device-id {device_id} needs --device cuda and a device number of 0 or more")
        self.device_id = int(device_id or 0)
        self.tf32 = bool(tf32)
        self.batch_range = tuple(int(b) for b in batch_range) if batch_range else (1, 8, 64)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._free_before: int | None = None
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
            self._free_before = _free_device_bytes(self.device_id) if self.device == "cuda" else None
            self.session = self._open_session(ort)
            active = self.session.get_providers()
            if not active or active[0] != self.provider:  # onnxruntime fell back without a word
                raise EnvironmentProblem(f"onnxruntime did not start {self.provider} (the session runs "
                                         f"{', '.join(active) or 'nothing'}): check the CUDA/cuDNN/TensorRT libraries "
                                         f"it needs (onnxruntime's log on stderr says which failed); {_GPU_HINT}")
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
        # A failed run comes back as an exception, reported as one line (Engine.run_prepared); onnxruntime's
        # own logger would print it to stderr first, in colour, with its source location. Fatal only.
        options.log_severity_level = 4
        providers = [(name, self.provider_options(name)) for name in
                     [self.provider] + (["CUDAExecutionProvider"] if self.provider == "TensorrtExecutionProvider" else [])]
        try:
            return ort.InferenceSession(str(self.onnx_path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            first = " ".join(str(exc).split())[:200]
            raise DataProblem(f"onnxruntime cannot load {self.onnx_path}: {first}") from None

    def provider_options(self, provider: str) -> dict[str, str]:
        """The options of `provider` (onnxruntime's names, as strings: its Python API converts them)."""
        if provider == "CUDAExecutionProvider":
            return {"device_id": str(self.device_id), "use_tf32": "1" if self.tf32 else "0"}
        if provider != "TensorrtExecutionProvider":
            return {}
        from bench.cache import cache_root

        name, shape = self._onnx_input()
        folder = self.cache_dir or cache_root() / "ort-trt"
        folder.mkdir(parents=True, exist_ok=True)
        dims = {key: f"{name}:{batch}x{'x'.join(map(str, shape))}"
                for key, batch in zip(("min", "opt", "max"), self.batch_range)}
        return {"device_id": str(self.device_id), "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(folder),
                "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(folder),
                "trt_profile_min_shapes": dims["min"], "trt_profile_opt_shapes": dims["opt"],
                "trt_profile_max_shapes": dims["max"]}

    def _onnx_input(self) -> tuple[str, tuple[int, ...]]:
        """(name, (C, H, W)) of the file's input, for the TensorRT provider's explicit profile."""
        import onnx

        proto = onnx.load(str(self.onnx_path), load_external_data=False)
        initializers = {t.name for t in proto.graph.initializer}
        vi = next(v for v in proto.graph.input if v.name not in initializers)
        self.input_name = vi.name
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]
        return vi.name, self._shape_from(dims)

    def memory_usage(self) -> dict[str, Any] | None:
        """On CUDA: device memory taken since before the session was made (weights, arena, TensorRT engines)."""
        if self.device != "cuda" or self._free_before is None:
            return None
        now = _free_device_bytes(self.device_id)
        if now is None:
            return None
        return {"memory_peak_bytes": max(0, self._free_before - now),
                "memory_kind": "ort: device memory taken since before the session (cudaMemGetInfo free bytes; "
                               "other processes on the GPU count too)"}

    def _deactivate_impl(self) -> None:
        self.session = None
        self._binding = None

    def _prepare_impl(self, batch: np.ndarray):
        batch = batch.astype(self.input_dtype, copy=False)
        if self.device == "cpu":
            return {self.input_name: batch}
        # Device-resident input bound once; the output stays on the device until to_numpy.
        value = self._ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.device_id)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_name, "cuda", self.device_id)
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
                        "io_binding": self.device == "cuda", "onnx": str(self.onnx_path) if self.onnx_path else None,
                        "device_id": self.device_id if self.device == "cuda" else None,
                        "tf32": self.tf32 if self.device == "cuda" else None,
                        "tensorrt_profile": list(self.batch_range) if providers and providers[0] ==
                        "TensorrtExecutionProvider" else None},
        }
