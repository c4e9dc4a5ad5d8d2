"""The export manifest: the JSON written beside an exported ONNX file, saying what it is and how well it matched.

Its schema lives here, in the library, so that a Python user of `export` gets the same manifest as
`rbench export` writes, without click.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The manifest's schema name; it changes when a field changes meaning.
MANIFEST_SCHEMA = "rbench.export/1"


def build_manifest(*, model_name: str, model_config: dict[str, Any], checkpoint: Any, report: Any,
                   input_size: int, machine: dict[str, Any], engine: Any = None) -> dict[str, Any]:
    """The JSON written beside the ONNX file: what was exported, how, and how well it matched.

    `report` is an `export.onnx.ExportReport`, `checkpoint` an `export.checkpoint.Checkpoint` (or None),
    `engine` a TensorRT build report (or None), and `machine` the description of the machine that made it
    (`bench.records.io.describe_machine()`: CPU, GPU, versions), passed in because export reads no
    machine itself.
    """
    return {
        "schema": MANIFEST_SCHEMA,
        "model": model_name,
        "model_config": model_config,
        "input_size": input_size,
        "checkpoint": None if checkpoint is None else {
            "path": checkpoint.path, "sha256": checkpoint.sha256,
            **{k: v for k, v in checkpoint.extra.items()
               if k in ("normalization", "dataset", "epoch", "val_acc", "torchvision", "eval_transform")},
        },
        "onnx": {
            "file": Path(report.path).name,
            "sha256": report.onnx_sha256,
            "bytes": report.onnx_bytes,
            "external_data": Path(report.external_data).name if report.external_data else None,
            "opset": report.opset,
            "exporter": report.exporter,
            "fallback_reason": report.fallback_reason,
            "precision": report.precision,
            "io_dtype": "float16" if report.precision == "fp16" else "float32",
            "inputs": [{"name": n, "shape": s} for n, s in zip(report.input_names, report.input_shapes)],
            "outputs": [{"name": n, "shape": s} for n, s in zip(report.output_names, report.output_shapes)],
            "dynamic_axes": {k: {str(a): d for a, d in v.items()} for k, v in report.dynamic_axes.items()},
            "traced_batch": report.traced_batch,
            "folded_batchnorm": report.folded_batchnorm,
            "export_seconds": report.export_seconds,
        },
        "parity": report.parity.to_dict() if report.parity is not None else None,
        "tensorrt": engine.to_dict() if engine is not None else None,
        "versions": {k: machine["versions"].get(k) for k in ("rbench", "torch", "onnx", "onnxscript", "onnxruntime",
                                                             "tensorrt")},
        "machine": machine,
    }
