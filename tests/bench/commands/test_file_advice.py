"""Advice for a model file names only what the file allows: no --input-size for a fixed-size file, no
`--batch 0` for a file whose batch axis is empty."""

from __future__ import annotations

from types import SimpleNamespace

import onnx
from onnx import TensorProto, helper

from bench.measure import memory


def _relu_file(path, shape):
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_zero_batch_file_is_refused_without_suggesting_batch_0(run_cli, tmp_path):
    path = _relu_file(tmp_path / "empty.onnx", [0, 3, 8, 8])
    code, _, err = run_cli("latency", path, "--engine", "ort", "--out", tmp_path / "results")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "zero-sized axis" in err and "--batch 0" not in err
    assert not (tmp_path / "results").exists()


def test_a_fixed_size_file_that_cannot_fit_is_told_only_to_use_a_smaller_batch(monkeypatch):
    estimate = memory.Estimate(batch=64, device="cpu", required=2**40, host=0, parts={"input": 2**40})
    monkeypatch.setattr(memory, "available", lambda device="cpu": memory.Available(2**30, "test"))
    monkeypatch.setattr(memory, "estimate_bytes", lambda *args, **kwargs: estimate)
    for kind, advice in (("onnx", "use a smaller --batch"), ("zoo", "use a smaller --batch or --input-size")):
        source = SimpleNamespace(kind=kind, name="big")
        why = memory.check_fits(source, [64], ["ort"])[64]
        assert str(why).endswith(advice), why
