"""export.onnx: the export report, checks, parity arithmetic, fp16, side .data files, failures."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import export
import export.onnx as export_onnx
import nets
from export.errors import DataProblem, EnvironmentProblem, UsageProblem

SHAPE = (3, 32, 32)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return nets.create_model("resnet20")


def test_dynamo_export_report_and_dynamic_batch(tmp_path, resnet20):
    path = tmp_path / "m.onnx"
    report = export.to_onnx(resnet20, path, SHAPE, exporter="dynamo", model_name="resnet20")
    assert report.exporter == "dynamo" and report.opset == 18 and report.fallback_reason is None
    assert report.input_names == ["input"] and report.output_names == ["logits"]
    assert report.input_shapes == [["batch", 3, 32, 32]] and report.output_shapes == [["batch", 10]]
    assert report.dynamic_axes == {"input": {0: "batch"}, "logits": {0: "batch"}}
    # The trace ran at batch 2, so verifying at 1 and 3 exercises the symbolic batch.
    assert report.traced_batch == 2 and [b.batch for b in report.parity.batches] == [1, 3]
    assert report.parity.passed and report.external_data is None and report.warnings == []
    assert report.onnx_sha256 == export.sha256_files(path)
    # dynamo writes weights to a side .data file; rbench re-saves them inside the model.
    assert _files(tmp_path) == ["m.onnx"]
    proto = onnx.load(str(path), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert {p.key: p.value for p in proto.metadata_props}["rbench.model"] == "resnet20"
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": np.zeros((5, *SHAPE), np.float32)})[0]
    assert out.shape == (5, 10)
    assert resnet20.training  # the caller's training flag is restored


def test_torchscript_exporter_and_static_batch(tmp_path, resnet20):
    report = export.to_onnx(resnet20, tmp_path / "s.onnx", SHAPE, exporter="torchscript", dynamic_batch=False,
                            batch=4, opset=17)
    assert report.exporter == "torchscript" and report.opset == 17 and report.warnings == []
    assert report.input_shapes == [[4, 3, 32, 32]] and report.dynamic_axes == {}
    assert [b.batch for b in report.parity.batches] == [4]  # a fixed graph is checked at its batch only


def test_old_opset_uses_torchscript_and_too_old_is_refused(tmp_path, resnet20):
    assert export.check_opset(18) == "dynamo"
    assert export.check_opset(13) == "torchscript"
    with pytest.raises(UsageProblem, match="too old"):
        export.check_opset(11)
    with pytest.raises(UsageProblem, match="newer"):
        export.check_opset(99)
    with pytest.raises(UsageProblem, match="dynamo"):
        export.check_opset(17, "dynamo")
    with pytest.raises(UsageProblem, match="too old"):
        export.to_onnx(resnet20, tmp_path / "x.onnx", SHAPE, opset=9)
    assert _files(tmp_path) == []


def test_compare_outputs_against_hand_computed_figures():
    tol = export.Tolerances(rtol=1e-3, atol=0.0, min_cosine=0.99)
    ref = np.array([[1.0, 2.0, 4.0], [0.0, -2.0, 1.0]])
    act = ref.copy()
    act[0, 2] = 4.002  # abs err 0.002; scale max|ref| = 4 -> rel err 5e-4
    result = export.compare_outputs(act, ref, 2, tol)
    assert result.max_abs_err == pytest.approx(0.002)
    assert result.max_rel_err == pytest.approx(0.0005)
    assert result.top1_agreement == 1.0 and result.passed
    act[1] = [0.0, 1.0, -2.0]  # second sample points elsewhere: argmax and cosine change
    result = export.compare_outputs(act, ref, 2, tol)
    assert result.top1_agreement == 0.5 and result.min_cosine < 0 and not result.passed
    nan = export.compare_outputs(np.full_like(ref, np.nan), ref, 2, tol)
    assert not nan.passed and not nan.finite and nan.max_abs_err == float("inf")
    report = export.ParityReport("fp16", tol, [export.compare_outputs(np.full_like(ref, np.inf), ref * 1e5, 2, tol)])
    assert "inf/NaN" in report.summary() and "65504" in report.summary()


def test_parity_failure_says_by_how_much_and_keeps_nothing(tmp_path, resnet20):
    impossible = export.Tolerances(rtol=0.0, atol=0.0, min_cosine=1.5)
    with pytest.raises(export.ParityFailure, match=r"parity FAILED .*max abs err .*tolerance"):
        export.to_onnx(resnet20, tmp_path / "f.onnx", SHAPE, exporter="torchscript", tolerances=impossible)
    assert _files(tmp_path) == []


@pytest.mark.parametrize("name", ["dy_resnet20", "rrdb_attention_net"])
def test_fp16_runs_dynamic_conv_and_attention_on_onnxruntime_cpu(tmp_path, name):
    # Softmax, MatMul and the dynamic-conv mixing all need fp16 kernels in the CPU provider.
    report = export.to_onnx(nets.create_model(name), tmp_path / "h.onnx", SHAPE, precision="fp16",
                            exporter="torchscript")
    assert report.parity.passed, report.parity.summary()


@pytest.mark.parametrize("batch,dynamic_batch,precision,exporter", [
    (1, False, "fp32", "dynamo"), (2, False, "fp16", "dynamo"), (1, True, "fp32", "torchscript")])
def test_a_dynamic_conv_exports_with_its_batchnorms_folded(tmp_path, batch, dynamic_batch, precision, exporter):
    """A computed conv weight keeps its BatchNorm a node of its own unless rbench folds it in before export;
    parity is checked against the unfolded model, whose BatchNorms hold statistics far from the identity."""
    from tests.nets.test_layers import random_statistics

    model = random_statistics(nets.create_model("dy_resnet20"), seed=2)
    report = export.to_onnx(model, tmp_path / "dy.onnx", SHAPE, batch=batch, dynamic_batch=dynamic_batch,
                            precision=precision, exporter=exporter)
    assert report.parity.passed, report.parity.summary()
    assert report.folded_batchnorm == 18 and report.to_dict()["folded_batchnorm"] == 18
    ops = [n.op_type for n in onnx.load(str(tmp_path / "dy.onnx")).graph.node]
    # A fixed batch runs every dynamic conv as a Conv; a dynamic batch as im2col + MatMul (the stem stays a Conv).
    assert "BatchNormalization" not in ops and ops.count("Conv") == (1 if dynamic_batch else 19)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 19  # the caller's model keeps them


def test_fp16_export_has_fp16_io_and_passes_fp16_tolerance(tmp_path):
    model = nets.create_model("resnet20", act="silu")
    report = export.to_onnx(model, tmp_path / "h.onnx", SHAPE, precision="fp16", exporter="torchscript")
    assert report.precision == "fp16" and report.parity.passed
    assert report.parity.tolerances == export.DEFAULT_TOLERANCES["fp16"]
    proto = onnx.load(str(tmp_path / "h.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert next(p.dtype for p in model.parameters()) == torch.float32  # the caller's model stays fp32
    # fp16 really is looser than fp32: the same file misses fp32 tolerances.
    strict = export.verify_onnx(tmp_path / "h.onnx", model, SHAPE, tolerances=export.DEFAULT_TOLERANCES["fp32"])
    assert strict.worst.max_rel_err > export.DEFAULT_TOLERANCES["fp32"].rtol


def test_large_model_goes_to_a_side_data_file(tmp_path, resnet20, monkeypatch):
    monkeypatch.setattr(export_onnx, "SINGLE_FILE_LIMIT_BYTES", 0)  # pretend the weights pass 2 GB
    path = tmp_path / "big.onnx"
    report = export.to_onnx(resnet20, path, SHAPE, exporter="torchscript")
    assert _files(tmp_path) == ["big.onnx", "big.onnx.data"]
    assert report.external_data == str(tmp_path / "big.onnx.data")
    (warning,) = report.warnings
    assert "side file big.onnx.data" in warning and "beside big.onnx" in warning
    assert report.onnx_sha256 == export.sha256_files(path, tmp_path / "big.onnx.data")
    proto = onnx.load(str(path), load_external_data=False)
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"big.onnx.data"}  # names the final file, not a temporary one
    # A later small export of the same name removes the stale side file.
    monkeypatch.setattr(export_onnx, "SINGLE_FILE_LIMIT_BYTES", 2**31)
    export.to_onnx(resnet20, path, SHAPE, exporter="torchscript")
    assert _files(tmp_path) == ["big.onnx"]


def test_dynamo_failure_falls_back_to_torchscript_and_says_why(tmp_path, resnet20, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("pretend dynamo cannot trace this")

    monkeypatch.setattr(export_onnx, "_export_dynamo", broken)
    report = export.to_onnx(resnet20, tmp_path / "fb.onnx", SHAPE)
    assert report.exporter == "torchscript" and "pretend dynamo" in report.fallback_reason
    assert report.warnings == [f"fell back to the TorchScript exporter: {report.fallback_reason}"]
    assert report.parity.passed and _files(tmp_path) == ["fb.onnx"]
    with pytest.raises(DataProblem, match="dynamo export failed: pretend"):
        export.to_onnx(resnet20, tmp_path / "strict.onnx", SHAPE, exporter="dynamo")
    assert _files(tmp_path) == ["fb.onnx"]


def test_corrupt_or_missing_onnx_is_one_clear_error(tmp_path, resnet20):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(DataProblem, match="not a valid ONNX model"):
        export.verify_onnx(bad, resnet20, SHAPE)
    with pytest.raises(DataProblem, match="no ONNX file"):
        export.check_onnx(tmp_path / "missing.onnx")


def test_bad_arguments(tmp_path, resnet20):
    with pytest.raises(UsageProblem, match="precision"):
        export.to_onnx(resnet20, tmp_path / "a.onnx", SHAPE, precision="int8")
    with pytest.raises(UsageProblem, match=r"\.onnx"):
        export.to_onnx(resnet20, tmp_path / "a.txt", SHAPE)
    with pytest.raises(UsageProblem, match="input_shape"):
        export.to_onnx(resnet20, tmp_path / "a.onnx", (32, 32))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EnvironmentProblem, match="cannot write"):
        export.to_onnx(resnet20, blocker / "a.onnx", SHAPE)
