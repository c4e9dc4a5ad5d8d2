"""`rbench export` end to end: files, manifest, checkpoints, and one-line errors that leave nothing behind."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import nets
from bench.records.io import read_records


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {err!r}"
    assert lines[0].startswith("rbench: error: ")
    return lines[0]


def _files(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_export_writes_model_and_manifest(run_cli, tmp_path, results_dir):
    out = tmp_path / "out"
    code, stdout, err = run_cli("export", "resnet20", "--out", out, "--results", results_dir)
    assert code == 0, err
    assert _files(out) == ["resnet20.onnx", "resnet20.onnx.json"]
    assert "parity OK" in stdout and "dynamo exporter" in stdout
    manifest = json.loads((out / "resnet20.onnx.json").read_text())
    assert manifest["model"] == "resnet20" and manifest["checkpoint"] is None
    assert manifest["model_config"] == {"name": "resnet20", "num_classes": 10, "in_chans": 3, "act": "relu"}
    onnx_part = manifest["onnx"]
    assert onnx_part["exporter"] == "dynamo" and onnx_part["opset"] == 18 and onnx_part["external_data"] is None
    assert onnx_part["inputs"] == [{"name": "input", "shape": ["batch", 3, 32, 32]}]
    assert onnx_part["outputs"] == [{"name": "logits", "shape": ["batch", 10]}]
    assert onnx_part["dynamic_axes"] == {"input": {"0": "batch"}, "logits": {"0": "batch"}}
    import export

    assert onnx_part["sha256"] == export.sha256_files(out / "resnet20.onnx")
    assert manifest["parity"]["passed"] and [b["batch"] for b in manifest["parity"]["batches"]] == [1, 3]
    assert manifest["parity"]["tolerances"]["rtol"] == 1e-4
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime"} and manifest["versions"]["torch"]
    assert "cpu" in manifest["machine"] and manifest["tensorrt"] is None
    (record,) = read_records(results_dir / "export.jsonl")
    assert record["kind"] == "export" and record["model"] == "resnet20" and record["parity_passed"]


def test_static_batch_export_of_a_dynamic_net_is_the_fast_form_with_its_batchnorms_folded(run_cli, tmp_path,
                                                                                           results_dir):
    out = tmp_path / "out"
    code, _, err = run_cli("export", "dy_resnet20", "--input-size", "16", "--static-batch", "--batch", "2",
                           "--out", out, "--results", results_dir)
    assert code == 0, err
    manifest = json.loads((out / "dy_resnet20.onnx.json").read_text())
    onnx_part = manifest["onnx"]
    assert onnx_part["inputs"] == [{"name": "input", "shape": [2, 3, 16, 16]}] and onnx_part["dynamic_axes"] == {}
    assert onnx_part["folded_batchnorm"] == 18 and manifest["parity"]["passed"]
    import onnx

    nodes = onnx.load(str(out / "dy_resnet20.onnx")).graph.node
    assert "BatchNormalization" not in [n.op_type for n in nodes]
    # The fast form: one grouped Conv per dynamic layer, the batch folded into the groups.
    groups = [a.i for n in nodes if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert groups.count(2) == 18


def test_trainer_checkpoint_gives_architecture_and_weights(run_cli, tmp_path):
    model = nets.create_model("resnet20", num_classes=5, in_chans=1, act="silu")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # weights a fresh model would not have
    ckpt = tmp_path / "best.pt"
    torch.save({"state_dict": model.state_dict(), "config": dict(model.config),
                "normalization": {"mean": [0.5], "std": [0.25]}, "epoch": 3}, ckpt)
    out = tmp_path / "out"
    code, _, err = run_cli("export", "resnet20", "--checkpoint", ckpt, "--out", out, "--exporter", "torchscript")
    assert code == 0, err
    manifest = json.loads((out / "resnet20.onnx.json").read_text())
    assert manifest["model_config"] == {"name": "resnet20", "num_classes": 5, "in_chans": 1, "act": "silu"}
    assert manifest["checkpoint"]["normalization"] == {"mean": [0.5], "std": [0.25]}
    import export

    assert manifest["checkpoint"]["sha256"] == export.sha256_files(ckpt)
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    got = ort.InferenceSession(str(out / "resnet20.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)  # the checkpoint's weights, not random ones


def test_fp16_export_by_cli(run_cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli("export", "template_cnn", "--precision", "fp16", "--out", out, "--exporter", "torchscript")
    assert code == 0, err
    assert _files(out) == ["template_cnn-fp16.onnx", "template_cnn-fp16.onnx.json"]
    manifest = json.loads((out / "template_cnn-fp16.onnx.json").read_text())
    assert manifest["onnx"]["io_dtype"] == "float16" and manifest["parity"]["tolerances"]["rtol"] == 2e-2
    assert "parity OK (fp16" in stdout


def test_help_teaches(run_cli):
    code, stdout, _ = run_cli("export", "--help")
    assert code == 0
    for phrase in ("--batch-range", "fp16", "float16", "tolerances", "strongly typed", "exports/MODEL"):
        assert phrase.lower() in stdout.lower(), phrase


def _bad_checkpoint_files(tmp_path):
    wrong = nets.create_model("resnet20", num_classes=100)
    torch.save(wrong.state_dict(), tmp_path / "wrong.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00not a zip or a pickle")
    torch.save({"state_dict": wrong.state_dict(), "config": {"name": "resnet32", "num_classes": 100}},
               tmp_path / "other.pt")


@pytest.mark.parametrize("args, code, message", [
    (["resnet2o"], 2, "unknown model 'resnet2o'; did you mean"),
    (["resnet20", "--checkpoint", "{tmp}/wrong.pt"], 2, "does not fit resnet20: 2 shape(s) differ"),
    (["resnet20", "--checkpoint", "{tmp}/corrupt.pt"], 1, "is not a readable PyTorch checkpoint"),
    (["resnet20", "--checkpoint", "{tmp}/missing.pt"], 1, "does not exist"),
    (["resnet20", "--checkpoint", "{tmp}/other.pt"], 2, "holds a resnet32, not a resnet20"),
    (["resnet20", "--opset", "9"], 2, "opset 9 is too old"),
    (["resnet20", "--act", "tanh"], 2, "unknown activation 'tanh'"),
    (["resnet20", "--engine", "trt", "--batch-range", "8,1,64"], 2, "MIN <= OPT <= MAX"),
    (["resnet20", "--engine", "trt", "--static-batch", "--batch", "2"], 2, "needs --batch-range 2"),
])
def test_bad_input_is_one_line_and_leaves_nothing(run_cli, tmp_path, args, code, message):
    _bad_checkpoint_files(tmp_path)
    out = tmp_path / "out"
    got, _, err = run_cli("export", *[a.format(tmp=tmp_path) for a in args], "--out", out, "--exporter", "torchscript")
    assert got == code
    assert message in _one_line(err)
    assert _files(out) == []


def test_unwritable_out_is_refused(run_cli, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    code, _, err = run_cli("export", "resnet20", "--out", blocker, "--exporter", "torchscript")
    assert code == 2 and "is a file" in _one_line(err)
    code, _, err = run_cli("export", "resnet20", "--out", blocker / "sub", "--exporter", "torchscript")
    assert code == 1 and "cannot write to --out" in _one_line(err)
    assert blocker.read_text() == "x" and _files(tmp_path) == ["taken"]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_engine_trt_without_tensorrt_names_the_extra(run_cli, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli("export", "resnet20", "--engine", "trt", "--out", out)
    assert code == 1 and "TensorRT is not available: pip install 'rbench[trt]'" in _one_line(err)
    assert _files(out) == []  # refused before exporting anything


def test_parity_failure_exits_nonzero_and_keeps_nothing(run_cli, tmp_path, monkeypatch):
    import export.onnx as export_onnx

    impossible = export_onnx.Tolerances(rtol=0.0, atol=0.0, min_cosine=1.5)
    monkeypatch.setitem(export_onnx.DEFAULT_TOLERANCES, "fp32", impossible)
    out = tmp_path / "out"
    code, _, err = run_cli("export", "resnet20", "--out", out, "--exporter", "torchscript")
    assert code == 1 and "parity FAILED" in _one_line(err) and "max abs err" in err
    assert _files(out) == []
