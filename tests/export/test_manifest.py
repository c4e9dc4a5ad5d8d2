"""The export manifest is library data: built without click, with the schema it names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from export.manifest import MANIFEST_SCHEMA, build_manifest

REPO = Path(__file__).resolve().parents[2]


def _report(**over):
    fields = dict(path="/x/resnet20.onnx", onnx_sha256="ab", onnx_bytes=10, external_data=None, opset=18,
                  exporter="dynamo", fallback_reason=None, precision="fp16", input_names=["input"],
                  input_shapes=[["batch", 3, 32, 32]], output_names=["logits"], output_shapes=[["batch", 10]],
                  dynamic_axes={"input": {0: "batch"}}, traced_batch=2, folded_batchnorm=True, export_seconds=1.5,
                  parity=None)
    fields.update(over)
    return SimpleNamespace(**fields)


def test_manifest_says_what_was_exported_and_on_what_machine():
    machine = {"cpu": "test cpu", "versions": {"rbench": "1", "torch": "2", "numpy": "9"}}
    manifest = build_manifest(model_name="resnet20", model_config={"num_classes": 10}, checkpoint=None,
                              report=_report(), input_size=32, machine=machine)
    assert manifest["schema"] == MANIFEST_SCHEMA
    assert manifest["onnx"]["file"] == "resnet20.onnx" and manifest["onnx"]["io_dtype"] == "float16"
    assert manifest["onnx"]["dynamic_axes"] == {"input": {"0": "batch"}}
    assert manifest["versions"]["torch"] == "2" and "numpy" not in manifest["versions"]
    assert manifest["checkpoint"] is None and manifest["tensorrt"] is None and manifest["machine"] is machine


def test_manifest_module_needs_neither_click_nor_bench_beyond_its_errors():
    code = ("import sys, export.manifest; "
            "sys.exit(any(m == 'click' or m.split('.')[0] == 'bench' and m not in ('bench', 'bench.errors') "
            "for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
