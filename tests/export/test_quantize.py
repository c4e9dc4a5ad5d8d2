"""INT8 QDQ export: what gets quantized, the task-level check, and every bad input refused with no file."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import nets
from export.errors import ParityFailure, UsageProblem
from export.onnx import to_onnx
from export.quantize import (
    CALIBRATION_METHODS,
    QuantCheck,
    activation_encoding,
    check_int8,
    is_quantized,
    quantize_and_check,
    quantize_onnx,
    read_input,
)

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def fp32_file(tmp_path_factory):
    torch.manual_seed(0)
    model = nets.create_model("resnet20", num_classes=10).eval()
    path = tmp_path_factory.mktemp("q") / "resnet20.onnx"
    to_onnx(model, path, SHAPE)
    return path


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((32, *SHAPE), dtype=np.float32)
    test = rng.standard_normal((64, *SHAPE), dtype=np.float32)
    return calibration, test


def _fp32_labels(path, images):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": images})[0].argmax(1)


@pytest.mark.parametrize("method", CALIBRATION_METHODS)
def test_quantize_writes_a_symmetric_per_channel_qdq_file(fp32_file, data, tmp_path, method):
    out = tmp_path / "int8.onnx"
    report = quantize_onnx(fp32_file, out, data[0], method=method, calibration_info={"dataset": "noise"})
    assert out.is_file() and is_quantized(out) and not is_quantized(fp32_file)
    onnx.checker.check_model(str(out))
    convs = sum(node.op_type == "Conv" for node in onnx.load(str(fp32_file)).graph.node)
    assert convs == 19 and report.quantized_ops.get("Conv") == convs  # every conv of resnet20 (option-A shortcuts)
    assert report.quantized_ops.get("Gemm") == 1
    assert report.method == method and report.calibration_images == 32 and report.calibration == {"dataset": "noise"}
    assert report.size_bytes < 0.6 * report.source_size_bytes  # int8 weights: about a quarter, plus scales
    assert activation_encoding(out) == "u8" and activation_encoding(fp32_file) is None
    assert report.activation_type == "uint8 (asymmetric)"
    assert read_input(out)[1][1:] == list(SHAPE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]  # no scratch left behind


def test_symmetric_int8_activations_for_tensorrt(fp32_file, data, tmp_path):
    out = tmp_path / "int8-s8.onnx"
    report = quantize_onnx(fp32_file, out, data[0], activations="s8")
    assert activation_encoding(out) == "s8" and report.activation_type == "int8 (symmetric)"
    model = onnx.load(str(out))
    zero_points = [init for init in model.graph.initializer if init.name.endswith("_zero_point")]
    # int8 activations and weights; biases are int32 (scale = input scale x weight scale), as ONNX's QDQ asks.
    assert zero_points and all(onnx.numpy_helper.to_array(z).dtype == (np.int32 if "bias" in z.name else np.int8)
                               for z in zero_points)
    assert all(not onnx.numpy_helper.to_array(z).any() for z in zero_points)  # symmetric: zero point 0 (TensorRT)
    with pytest.raises(UsageProblem, match="u8 .* or s8"):
        quantize_onnx(fp32_file, tmp_path / "x.onnx", data[0], activations="u4")


def test_check_compares_on_the_task(fp32_file, data, tmp_path):
    calibration, test = data
    labels = _fp32_labels(fp32_file, test)
    out = tmp_path / "int8.onnx"
    report = quantize_and_check(fp32_file, out, calibration, test, labels, min_agreement=0.5)
    check = report.check
    assert check.images == 64 and check.fp32_accuracy == 1.0  # labels are fp32's own predictions
    assert check.int8_accuracy == pytest.approx(check.top1_agreement)
    assert check.accuracy_delta == pytest.approx(check.int8_accuracy - 1.0)
    assert 0.9 < check.cosine_mean <= 1.0 + 1e-6 and check.cosine_min <= check.cosine_mean
    assert "int8 check" in check.summary() and check.to_dict()["passed"] == check.passed


def test_a_failed_check_writes_nothing(fp32_file, data, tmp_path):
    calibration, test = data
    labels = _fp32_labels(fp32_file, test)
    # Calibrated on near-zero inputs, every activation range is tiny: real inputs clip, predictions change.
    with pytest.raises(ParityFailure, match="int8 check FAILED"):
        quantize_and_check(fp32_file, tmp_path / "int8.onnx", calibration * 1e-4, test, labels, min_agreement=1.0)
    assert list(tmp_path.iterdir()) == []


def test_check_fails_below_the_accuracy_ratio(fp32_file, data, tmp_path):
    calibration, test = data
    labels = _fp32_labels(fp32_file, test)
    same = check_int8(fp32_file, fp32_file, test, labels)
    assert same.passed and same.top1_agreement == 1.0 and same.accuracy_ratio == 1.0
    poor = tmp_path / "poor.onnx"
    quantize_onnx(fp32_file, poor, calibration * 1e-4)  # clipped activations: predictions change
    check = check_int8(fp32_file, poor, test, labels, min_agreement=0.01, min_accuracy_ratio=0.99)
    assert check.accuracy_ratio < 0.99 and not check.meets_accuracy and not check.passed
    # The rule alone: agreement above its bar, accuracy below MLPerf's 99% of fp32 -> fails.
    rule = QuantCheck(images=100, top1_agreement=0.97, fp32_accuracy=0.80, int8_accuracy=0.78, accuracy_delta=-0.02,
                      accuracy_ratio=0.975, cosine_mean=0.99, cosine_min=0.9, min_agreement=0.95)
    assert not rule.passed and "needs >= 0.99" in rule.summary()
    assert QuantCheck(**{**rule.__dict__, "int8_accuracy": 0.795, "accuracy_ratio": 0.994}).passed


@pytest.mark.parametrize("images, match", [
    (np.zeros((4, 1, 16, 16), np.float32), "1 channels"),
    (np.zeros((4, 3, 8, 8), np.float32), "8 height"),
    (np.zeros((0, 3, 16, 16), np.float32), "non-empty"),
    (np.zeros((4, 3, 16, 16), np.uint8), "floats"),
    (np.full((4, 3, 16, 16), np.nan, np.float32), "NaN"),
])
def test_bad_calibration_sets_are_refused(fp32_file, tmp_path, images, match):
    with pytest.raises(UsageProblem, match=match):
        quantize_onnx(fp32_file, tmp_path / "int8.onnx", images)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_refused(fp32_file, data, tmp_path):
    with pytest.raises(UsageProblem, match="calibration method"):
        quantize_onnx(fp32_file, tmp_path / "a.onnx", data[0], method="kl")
    quantize_onnx(fp32_file, tmp_path / "int8.onnx", data[0])
    with pytest.raises(UsageProblem, match="already quantized"):
        quantize_onnx(tmp_path / "int8.onnx", tmp_path / "b.onnx", data[0])
    with pytest.raises(UsageProblem, match="no ONNX file"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "c.onnx", data[0])
    with pytest.raises(UsageProblem, match="labelled"):
        check_int8(fp32_file, fp32_file, data[1], np.zeros(3))
    torch.manual_seed(0)
    half = tmp_path / "half.onnx"
    to_onnx(nets.create_model("resnet20").eval(), half, SHAPE, precision="fp16")
    with pytest.raises(UsageProblem, match="float16 input"):
        quantize_onnx(half, tmp_path / "d.onnx", data[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.onnx", "int8.onnx"]


def test_corrupt_file_is_one_line(tmp_path, data):
    from export.errors import DataProblem

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(DataProblem, match="not a readable ONNX file"):
        quantize_onnx(bad, tmp_path / "int8.onnx", data[0])
