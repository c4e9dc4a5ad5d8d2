"""Model export: verified ONNX files (`to_onnx`, `verify_onnx`) and TensorRT engines (`build_trt_engine`).

    >>> import nets, export
    >>> model = nets.create_model("resnet20")
    >>> report = export.to_onnx(model, "exports/resnet20/model.onnx", (3, 32, 32))
    >>> report.parity.summary()

TensorRT is imported only by `export.tensorrt.import_tensorrt`, when a build needs it, so this package
imports without it. Every error raised on purpose is an `export.errors.ExportError` with an `exit_code`.
"""

from export.errors import ExportError
from export.onnx import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCES,
    MAX_OPSET,
    MIN_OPSET,
    BatchParity,
    ExportReport,
    ParityFailure,
    ParityReport,
    Tolerances,
    check_onnx,
    check_opset,
    compare_outputs,
    sha256_files,
    to_onnx,
    verify_onnx,
)


def build_trt_engine(*args, **kwargs):
    """Build a TensorRT engine from an ONNX file; see `export.tensorrt.build_trt_engine`."""
    from export.tensorrt import build_trt_engine as _build

    return _build(*args, **kwargs)


__all__ = [
    "DEFAULT_OPSET", "DEFAULT_TOLERANCES", "MAX_OPSET", "MIN_OPSET", "BatchParity", "ExportError", "ExportReport",
    "ParityFailure", "ParityReport", "Tolerances", "build_trt_engine", "check_onnx", "check_opset",
    "compare_outputs", "sha256_files", "to_onnx", "verify_onnx",
]
