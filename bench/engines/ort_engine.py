"""ONNX Runtime inference on the exported ONNX model: CPU, CUDA or TensorRT execution provider."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.engines.base import Engine
from bench.errors import EnvironmentProblem, MissingDependency, UsageProblem

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


def cache_dir() -> Path:
    """Where engines keep ONNX files and TensorRT engines they had to build."""
    from bench.cache import cache_root

    return cache_root()


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


def export_for_engine(model, model_name: str | None, input_shape, precision: str, workdir: Path | None,
                      num_classes: int = 10) -> Path:
    """The ONNX file of a model: the cached export of a registry model, or a fresh one of `model`.

    A registry model (random weights: timing does not depend on them) is exported once into
    the cache; a given module (e.g. a trained one) is exported into `workdir` every time.
    """
    import export

    c, h, w = input_shape
    if model is None:
        import nets

        model = nets.create_model(model_name, num_classes=num_classes, in_chans=c)
        params = sum(p.numel() for p in model.parameters())  # a changed definition gets a new file
        path = cache_dir() / "onnx" / f"{model_name}-{c}x{h}x{w}-{num_classes}cls-{params}p-{precision}.onnx"
        if path.exists():
            return path
    else:
        path = Path(workdir) / f"{model_name or 'model'}-{precision}.onnx"
    report = export.to_onnx(model.eval().cpu(), path, input_shape=(c, h, w), batch=1, dynamic_batch=True,
                            precision=precision, verify=False)
    return Path(getattr(report, "path", path))


class OnnxRuntimeEngine(Engine):
    """An `onnxruntime.InferenceSession` on an ONNX file (exported on the fly when not given).

    Options: `provider` (cpu | cuda | tensorrt), `threads` (intra-op), `graph_optimization`
    (disable | basic | extended | all). On CUDA the input is bound in device memory through IO
    binding, so a timed run copies nothing between host and device.
    """

    backend = "ort"

    def __init__(self, model=None, *, model_name: str | None = None, onnx_path=None, input_shape=(3, 32, 32),
                 device: str = "cpu", precision: str = "fp32", provider: str | None = None, threads: int | None = None,
                 graph_optimization: str = "all", num_classes: int = 10, **unused: Any):
        super().__init__(input_shape=input_shape, device=device, precision=precision, name=model_name)
        if precision == "bf16":
            raise UsageProblem("onnxruntime runs fp32 or fp16 models; bf16 is for --engine torch")
        if graph_optimization not in GRAPH_OPTIMIZATION:
            raise UsageProblem(f"unknown graph optimization {graph_optimization!r}; choose one of {', '.join(GRAPH_OPTIMIZATION)}")
        if model is None and model_name is None and onnx_path is None:
            raise UsageProblem("the ort engine needs an ONNX file, a model or a model name")
        self._model_in = model
        self.model_name = model_name or getattr(model, "config", {}).get("name")
        self.onnx_path = Path(onnx_path) if onnx_path else None
        self.provider_request = provider
        self.threads = threads
        self.graph_optimization = graph_optimization
        self.num_classes = num_classes
        self._tmp = None

    def _activate_impl(self) -> None:
        ort = import_onnxruntime()
        self.provider = resolve_provider(self.provider_request, self.device)
        if self.precision == "fp16" and self.device == "cpu":
            from bench.engines.torch_engine import cpu_precision_support

            ok, why = cpu_precision_support("fp16")
            if not ok:  # onnxruntime would run it through Cast nodes and time the casts
                raise EnvironmentProblem(f"fp16 on CPU: {why}")
        if self.onnx_path is None:
            if self._model_in is not None:
                self._tmp = tempfile.TemporaryDirectory(prefix="rbench-ort-")
            self.onnx_path = export_for_engine(self._model_in, self.model_name, self.input_shape, self.precision,
                                               Path(self._tmp.name) if self._tmp else None, self.num_classes)
        if not self.onnx_path.exists():
            raise UsageProblem(f"no ONNX file at {self.onnx_path}; run `rbench export` first")
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION[self.graph_optimization])
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        providers = [self.provider] + (["CUDAExecutionProvider"] if self.provider == "TensorrtExecutionProvider" else [])
        self.session = ort.InferenceSession(str(self.onnx_path), sess_options=options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.input_dtype = np.float16 if "float16" in self.session.get_inputs()[0].type else np.float32
        self._ort = ort
        self._binding = None

    def _deactivate_impl(self) -> None:
        self.session = None
        self._binding = None
        if self._tmp is not None:  # the export of a given module lives only as long as the session
            self._tmp.cleanup()
            self._tmp = None
            self.onnx_path = None

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
            "options": {"graph_optimization": self.graph_optimization, "intra_op_threads": self.threads or "default",
                        "io_binding": self.device == "cuda", "onnx": str(self.onnx_path) if self.onnx_path else None},
        }
