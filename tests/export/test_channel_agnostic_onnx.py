"""A channel-agnostic net (in_chans="any") exports with a symbolic channel axis and matches PyTorch in onnxruntime
at 1, 2 and 3 channels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import export
import nets
from export.errors import UsageProblem

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name,exporter", [("resnet20", "dynamo"), ("dy_resnet20", "torchscript")])
def test_symbolic_channel_axis_runs_one_two_and_three_channels(tmp_path, name, exporter):
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = nets.create_model(name, num_classes=10, in_chans="any").eval()
    path = tmp_path / f"{name}.onnx"
    report = export.to_onnx(model, path, (3, 16, 16), exporter=exporter, opset=18 if exporter == "dynamo" else 17)
    assert report.input_shapes == [[export.onnx.BATCH_DIM, export.onnx.CHANNEL_DIM, 16, 16]]
    assert report.dynamic_axes["input"] == {0: "batch", 1: "channels"}
    assert report.parity.passed, report.parity.summary()
    assert {b.channels for b in report.parity.batches} == {1, 2, 3}
    # Independently of verify_onnx: onnxruntime against PyTorch on fresh inputs, and the order of the channels.
    for channels in (1, 2, 3):
        x = torch.randn(2, channels, 16, 16)
        expected = model(x).detach().numpy()
        actual = run_onnx(path, x.numpy())
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
        flipped = run_onnx(path, x.flip(1).numpy())
        np.testing.assert_allclose(flipped, actual, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_a_fixed_channel_net_cannot_take_a_symbolic_channel_axis(tmp_path):
    with pytest.raises(UsageProblem, match="in_chans='any'"):
        export.to_onnx(nets.create_model("resnet20"), tmp_path / "r.onnx", (3, 8, 8), dynamic_channels=True)


def test_fixed_channel_export_is_unchanged(tmp_path):
    report = export.to_onnx(nets.create_model("resnet20"), tmp_path / "r.onnx", (3, 8, 8), exporter="torchscript",
                            opset=17)
    assert report.input_shapes == [["batch", 3, 8, 8]]
    assert all(b.channels is None for b in report.parity.batches)


def test_cli_export_in_chans_any(tmp_path, run_cli):
    out = tmp_path / "out"
    code, stdout, err = run_cli("export", "resnet20", "--in-chans", "any", "--input-size", "8", "--exporter",
                                "torchscript", "--opset", "17", "--out", out)
    assert code == 0, err
    manifest = json.loads((out / "resnet20.onnx.json").read_text())
    assert manifest["model_config"]["in_chans"] == "any"
    assert manifest["onnx"]["inputs"][0]["shape"] == ["batch", "channels", 8, 8]
    assert sorted({b["channels"] for b in manifest["parity"]["batches"]}) == [1, 2, 3]


@pytest.mark.parametrize("args,message", [
    (["keras_resnet", "--in-chans", "any"], "keras_resnet has no channel-agnostic stem"),
    (["resnet20", "--in-chans", "zero"], "positive number of channels or 'any'"),
    (["resnet20", "--in-chans", "0"], "positive number of channels or 'any'"),
])
def test_cli_export_refuses_bad_in_chans_in_one_line(tmp_path, run_cli, args, message):
    code, _, err = run_cli("export", *args, "--out", tmp_path / "o")
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
