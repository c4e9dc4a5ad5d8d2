"""The int8 and OpenVINO rungs: ort and openvino run a Q/DQ file, openvino runs fp32 and bf16, bad requests refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nets
from bench.errors import EnvironmentProblem, UsageProblem
from export.onnx import to_onnx
from export.quantize import quantize_onnx

SHAPE = (3, 16, 16)
openvino = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'rbench[openvino]')")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    model = nets.create_model("resnet20", num_classes=10).eval()
    fp32 = folder / "resnet20.onnx"
    to_onnx(model, fp32, SHAPE)
    int8 = folder / "resnet20-int8.onnx"
    quantize_onnx(fp32, int8, np.random.default_rng(0).standard_normal((32, *SHAPE), dtype=np.float32))
    return fp32, int8


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(1).standard_normal((4, *SHAPE), dtype=np.float32)


def _ort(path, precision, batch):
    from bench.engines.ort_engine import OnnxRuntimeEngine

    with OnnxRuntimeEngine(path, precision=precision) as engine:
        return engine.infer(batch)


def test_openvino_fp32_matches_onnxruntime(files, batch):
    from bench.engines.openvino_engine import OpenVinoEngine

    reference = _ort(files[0], "fp32", batch)
    with OpenVinoEngine(files[0], precision="fp32", threads=1) as engine:
        out = engine.infer(batch)
        again = engine.infer(batch[:1])  # another batch size: compiled once more, outside any timing
        info = engine.describe()
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(again, reference[:1], rtol=1e-4, atol=1e-4)
    assert info["backend"] == "openvino" and info["precision"] == "fp32"
    assert info["options"]["requested"]["INFERENCE_PRECISION_HINT"] == "f32"  # stated, never OpenVINO's default
    assert "f32" in info["options"]["compiled"]["INFERENCE_PRECISION_HINT"]
    assert info["options"]["requested"]["INFERENCE_NUM_THREADS"] == 1
    assert info["options"]["batches_compiled"] == [1, 4]


def test_int8_file_runs_in_ort_and_openvino_alike(files, batch):
    from bench.engines.openvino_engine import OpenVinoEngine

    fp32 = _ort(files[0], "fp32", batch)
    ort8 = _ort(files[1], "int8", batch)
    with OpenVinoEngine(files[1], precision="int8") as engine:
        ov8 = engine.infer(batch)
    scale = np.abs(fp32).max()
    assert np.abs(ort8 - fp32).max() < 0.25 * scale and np.abs(ov8 - fp32).max() < 0.25 * scale
    assert not np.array_equal(ort8, fp32)  # it really ran the quantized graph


def test_openvino_bf16_where_the_cpu_has_it(files, batch):
    from bench.engines.openvino_engine import OpenVinoEngine, bf16_support

    ok, why = bf16_support()
    engine = OpenVinoEngine(files[0], precision="bf16")
    if not ok:
        with pytest.raises(EnvironmentProblem, match="bf16"):
            engine.activate()
        return
    with engine:
        out = engine.infer(batch)
        info = engine.describe()
    reference = _ort(files[0], "fp32", batch)
    assert "bf16" in info["options"]["compiled"]["INFERENCE_PRECISION_HINT"]
    assert np.abs(out - reference).max() < 0.1 * np.abs(reference).max()  # bf16 keeps ~3 significant digits


@pytest.mark.parametrize("kwargs, match", [
    ({"precision": "fp16"}, "not fp16"),
    ({"device": "cuda"}, "on the CPU"),
    ({"hint": "fast"}, "unknown openvino hint"),
    ({"threads": 0}, "threads must be positive"),
])
def test_openvino_refuses_bad_options(files, kwargs, match):
    from bench.engines.openvino_engine import OpenVinoEngine

    with pytest.raises(UsageProblem, match=match):
        OpenVinoEngine(files[0], **kwargs)


@pytest.mark.parametrize("engine_name", ["ort", "openvino"])
def test_precision_must_match_the_file(files, engine_name):
    from bench.engines import engine_class

    cls = engine_class(engine_name)
    with pytest.raises(UsageProblem, match="Q/DQ"):
        cls(files[0], precision="int8").activate()  # an fp32 file is not int8
    with pytest.raises(UsageProblem, match="--precision int8"):
        cls(files[1], precision="fp32").activate()  # an int8 file is not fp32


def test_int8_needs_a_calibrated_file():
    from bench.engines import create_engine

    with pytest.raises(UsageProblem, match="--calibration"):
        create_engine("ort", "resnet20", precision="int8")
    from bench.engines.torch_engine import TorchEngine

    with pytest.raises(UsageProblem, match="int8 is a Q/DQ ONNX file"):
        TorchEngine(nets.create_model("resnet20"), input_shape=SHAPE, precision="int8")


def test_engines_table_reports_openvino():
    from bench.engines import engine_availability

    rows = {row["engine"]: row for row in engine_availability()}
    assert rows["openvino"]["available"] and "openvino" in rows["openvino"]["reason"]
    assert "openvino bf16" in rows


def test_an_unconvertible_graph_names_the_ops_in_one_line():
    from bench.engines.openvino_engine import _conversion_failure

    message = ("Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'false' failed at ...\n-- MaxPool-18 with a "
               "message:\nKernel after dilation ...\n\nSummary:\n-- Conversion is failed for: MaxPool-18, ReduceMean-18\n")
    assert _conversion_failure(RuntimeError(message)) == "Conversion is failed for: MaxPool-18, ReduceMean-18"
