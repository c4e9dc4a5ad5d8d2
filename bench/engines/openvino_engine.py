"""OpenVINO inference on a finished ONNX file, on the CPU: fp32, bf16, or int8 from a QDQ file.

OpenVINO's CPU plugin runs bf16 by default on CPUs that have it (benchmark_app says so only in
its log). rbench always states the precision: fp32 compiles with `INFERENCE_PRECISION_HINT=f32`,
bf16 with `bf16` (refused where the CPU lacks avx512_bf16/amx_bf16), and int8 runs a QDQ file
(`rbench export --precision int8`) whose Q/DQ pairs the plugin folds into int8 kernels, with f32
for the rest. The model is reshaped to each batch it runs and compiled once per batch, outside
any timed loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.engines.base import Engine
from bench.errors import DataProblem, EnvironmentProblem, MissingDependency, UsageProblem

#: --hint -> OpenVINO's PERFORMANCE_HINT.
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependency("openvino", "pip install 'rbench[openvino]' (or pip install openvino)") from exc
    return openvino


def openvino_status() -> tuple[bool, str]:
    """(usable, why) for `rbench engines`: the version and CPU, or what to install."""
    try:
        ov = import_openvino()
    except MissingDependency as exc:
        return False, str(exc)
    try:
        core = ov.Core()
        name = core.get_property("CPU", "FULL_DEVICE_NAME")
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # noqa: BLE001 - a broken install raises RuntimeError from its plugins
        return False, f"openvino {ov.__version__} cannot open its CPU plugin: {' '.join(str(exc).split())[:120]}"
    return True, f"openvino {ov.__version__.split('-')[0]} on {name} ({', '.join(caps)})"


def bf16_support() -> tuple[bool, str]:
    """Whether this CPU has bf16 arithmetic (OpenVINO would otherwise emulate nothing and refuse)."""
    from bench.engines.torch_engine import _cpu_flags

    native = _cpu_flags() & {"avx512_bf16", "amx_bf16"}
    if native:
        return True, f"native ({', '.join(sorted(native))})"
    return False, "this CPU has no bf16 arithmetic (avx512_bf16/amx_bf16); use --precision fp32 or int8"


def _conversion_failure(exc: BaseException) -> str:
    """The useful part of OpenVINO's multi-line frontend error: its summary of the ops it could not convert."""
    text = str(exc)
    for marker in ("Conversion is failed for:", "Summary:"):
        if marker in text:
            text = text[text.index(marker):]
            break
    return " ".join(text.split())[:200]


class OpenVinoEngine(Engine):
    """An OpenVINO `CompiledModel` on the CPU, compiled from an ONNX file per batch size.

    Options: `threads` (INFERENCE_NUM_THREADS; default: OpenVINO's own choice, the usable cores),
    `hint` (latency | throughput: PERFORMANCE_HINT), `streams` (NUM_STREAMS).
    """

    backend = "openvino"
    OPTIONS = ("threads", "hint", "streams")

    def __init__(self, onnx, *, input_shape=None, device: str = "cpu", precision: str = "fp32", name: str | None = None,
                 threads: int | None = None, hint: str = "latency", streams: int | None = None):
        super().__init__(input_shape=input_shape, device=device, precision=precision, name=name)
        if device != "cpu":
            raise UsageProblem("the openvino engine runs on the CPU here; drop --device cuda")
        if precision == "fp16":
            raise UsageProblem("the openvino engine runs fp32, bf16 or int8 on the CPU, not fp16")
        if hint not in HINTS:
            raise UsageProblem(f"unknown openvino hint {hint!r}; choose one of {', '.join(HINTS)}")
        for label, value in (("threads", threads), ("streams", streams)):
            if value is not None and int(value) < 1:
                raise UsageProblem(f"openvino {label} must be positive, got {value}")
        self.onnx_path = Path(onnx)
        if not self.onnx_path.is_file():
            raise UsageProblem(f"no ONNX file at {self.onnx_path}; run `rbench export` first")
        self.threads, self.hint, self.streams = threads, hint, streams

    def _activate_impl(self) -> None:
        from export.quantize import is_quantized, read_input

        ov = import_openvino()
        if self.precision == "bf16":
            ok, why = bf16_support()
            if not ok:
                raise EnvironmentProblem(f"openvino bf16: {why}")
        name, dims, elem = read_input(self.onnx_path)
        if elem != "float":
            raise UsageProblem(f"{self.onnx_path.name} takes {elem} input; the openvino engine runs fp32 ONNX files "
                               "(bf16 is a compile setting, int8 a QDQ file)")
        quantized = is_quantized(self.onnx_path)
        if self.precision == "int8" and not quantized:
            raise UsageProblem(f"{self.onnx_path.name} holds no Q/DQ nodes; make an int8 file with "
                               "`rbench export MODEL --precision int8 --checkpoint CKPT --calibration DATA`")
        if self.precision != "int8" and quantized:
            raise UsageProblem(f"{self.onnx_path.name} is an int8 (QDQ) file; measure it with --precision int8")
        self.input_name = name
        self.input_shape = self._shape_from(dims)
        self._ov = ov
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(self.onnx_path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses for bad files
            raise DataProblem(f"openvino cannot read {self.onnx_path}: {_conversion_failure(exc)}") from None
        self._compiled: dict[int, Any] = {}
        self._fixed_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None

    def config(self) -> dict[str, Any]:
        """The compile properties: the precision always explicit, the rest only when asked for."""
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _PRECISION_HINT[self.precision],
                                  "PERFORMANCE_HINT": HINTS[self.hint]}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.streams:
            config["NUM_STREAMS"] = int(self.streams)
        return config

    def _request_for(self, batch: int):
        """The infer request of the model compiled at `batch` (compiled on first use: untimed, in prepare)."""
        if batch not in self._compiled:
            if self._fixed_batch is not None and batch != self._fixed_batch:
                raise UsageProblem(f"{self.onnx_path.name} has a fixed batch of {self._fixed_batch}, not {batch}")
            model = self._model.clone()
            model.reshape({self.input_name: [batch, *self.input_shape]})
            try:
                compiled = self._core.compile_model(model, "CPU", self.config())
            except Exception as exc:  # noqa: BLE001
                raise EnvironmentProblem(f"openvino cannot compile {self.onnx_path.name} at batch {batch}: "
                                         f"{' '.join(str(exc).split())[:200]}") from None
            self._compiled[batch] = (compiled, compiled.create_infer_request())
        return self._compiled[batch][1]

    def _deactivate_impl(self) -> None:
        self._compiled = {}
        self._model = None
        self._core = None

    def _prepare_impl(self, batch: np.ndarray):
        request = self._request_for(int(batch.shape[0]))
        # The input is bound to the request once; a timed run only computes.
        request.set_input_tensor(self._ov.Tensor(batch))
        return request, batch  # keep the array alive: the tensor shares its memory

    def _run_prepared_impl(self, prepared):
        request, _batch = prepared
        request.infer()
        return request

    def _to_numpy_impl(self, output) -> np.ndarray:
        return np.array(output.get_output_tensor(0).data, copy=True)

    def _describe_impl(self) -> dict[str, Any]:
        ov = import_openvino()
        compiled = next(iter(self._compiled.values()), (None,))[0] if getattr(self, "_compiled", None) else None
        actual = {}
        if compiled is not None:
            for key in ("INFERENCE_PRECISION_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT"):
                try:
                    value = compiled.get_property(key)
                    actual[key] = value.to_string() if hasattr(value, "to_string") else str(value)  # ov.Type -> "f32"
                except Exception:  # noqa: BLE001 - a property this version does not report
                    pass
        device_name = None
        try:
            device_name = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
        except Exception:  # noqa: BLE001
            pass
        return {
            "version": ov.__version__,
            "providers": ["CPU"],
            "options": {"requested": self.config(), "compiled": actual or None, "cpu": device_name,
                        "onnx": str(self.onnx_path), "batches_compiled": sorted(getattr(self, "_compiled", {}) or [])},
        }
