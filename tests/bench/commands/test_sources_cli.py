"""Every model source on the CLI: a plain ONNX file, a torchvision model, a module a user wrote; bad ones in one line."""

from __future__ import annotations

import pytest
import torch

import nets
from bench.records.io import read_records, validate_record

FAST = ("--warmup", "1", "--iters", "2", "--threads", "1")
CALLABLE = "tests.bench.user_models:tiny_net"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def plain_onnx(tmp_path):
    """resnet20 written by plain torch.onnx.export with a symbolic batch (not by rbench)."""
    path = tmp_path / "r20.onnx"
    torch.onnx.export(nets.create_model("resnet20").eval(), torch.randn(1, 3, 32, 32), str(path), dynamo=False,
                      input_names=["pixels"], output_names=["logits"], dynamic_axes={"pixels": {0: "n"}})
    return path


def test_latency_of_a_plain_onnx_file(run_cli, results_dir, plain_onnx):
    code, out, err = run_cli("latency", plain_onnx, "--engine", "ort", "--batch", "1,2", *FAST, "--out", results_dir)
    assert code == 0, err
    records = read_records(results_dir / "latency.jsonl")
    assert [r["batch"] for r in records] == [1, 2]
    for record in records:
        validate_record(record)
        assert record["source"]["kind"] == "onnx" and len(record["source"]["sha256"]) == 64
        assert record["input_shape"] == [3, 32, 32] and record["engine_info"]["options"]["onnx"] == str(plain_onnx)
        assert record["flops"] == 2 * record["macs"] > 0  # counted from the graph


def test_flops_of_an_onnx_file_equals_the_torch_count(run_cli, results_dir, plain_onnx):
    code, _, err = run_cli("flops", plain_onnx, "--out", results_dir)
    assert code == 0, err
    code, _, err = run_cli("flops", "resnet20", "--out", results_dir)
    assert code == 0, err
    onnx, torch_count = read_records(results_dir / "flops.jsonl")
    assert onnx["flops"] == torch_count["flops"]
    assert onnx["source"]["kind"] == "onnx" and torch_count["counters"]["flops"] == "torch.utils.flop_counter"


def test_torchvision_and_a_users_module(run_cli, results_dir):
    code, out, err = run_cli("latency", "torchvision:resnet18", "--input-size", "32", "--engine", "torch,ort", *FAST,
                             "--out", results_dir)
    assert code == 0, err
    code, out, err = run_cli("throughput", CALLABLE, "--input-size", "16", "--batch", "1,2", *FAST, "--out", results_dir)
    assert code == 0, err
    latency = read_records(results_dir / "latency.jsonl")
    assert {(r["model"], r["engine"]) for r in latency} == {("torchvision:resnet18", "torch"),
                                                           ("torchvision:resnet18", "ort")}
    assert all(r["model_config"]["num_classes"] == 1000 for r in latency)
    (best,) = read_records(results_dir / "throughput.jsonl")
    assert best["source"]["kind"] == "callable" and best["input_shape"] == [3, 16, 16]


def test_compare_mixes_sources(run_cli, results_dir, plain_onnx):
    code, out, err = run_cli("compare", "resnet20", plain_onnx, "--engine", "ort", *FAST, "--out", results_dir)
    assert code == 0, err
    assert "resnet20" in out and "r20" in out


@pytest.mark.parametrize("args, code, message", [
    (("latency", "mobilenet_v2"), 2, "torchvision:mobilenet_v2"),
    (("latency", "torchvision:resnet19"), 2, "did you mean"),
    (("latency", "nowhere/model.onnx", "--engine", "ort"), 2, "no ONNX file"),
    (("latency", "nowhere/model.engine", "--engine", "trt"), 2, "no TensorRT engine file"),
    (("latency", "tests.bench.user_models:not_a_module", "--input-size", "8"), 2, "not a torch.nn.Module"),
    (("latency", "tests.bench.nothing_here:net"), 2, "importing tests.bench.nothing_here failed"),
    (("flops", "nowhere/model.engine"), 2, "no TensorRT engine file"),
    (("export", "nowhere/model.onnx"), 2, "already a file"),
])
def test_bad_sources_are_one_line_and_write_nothing(run_cli, results_dir, args, code, message):
    got, out, err = run_cli(*args, "--out", results_dir)
    assert got == code, err
    assert err.startswith("rbench: error:") and message in err and len(err.strip().splitlines()) == 1
    assert list(results_dir.iterdir()) == []


def test_a_corrupt_onnx_file(run_cli, results_dir, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 20)
    code, _, err = run_cli("latency", bad, "--engine", "ort", "--out", results_dir)
    assert code == 1 and "not a readable ONNX model" in err and list(results_dir.iterdir()) == []
