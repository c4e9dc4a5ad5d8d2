"""bench.engines.trt_engine against the TensorRT stand-in and a CPU stand-in for CUDA.

Binding, shapes, dtype mapping, the user-managed context and its memory, profile choice per batch,
the CUDA-graph fallback and every failure path the real API reports by a return value (None,
False), so that a first run on a GPU meets none of them as a traceback.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from bench.engines import trt_engine
from bench.engines.trt_engine import TensorRTEngine
from bench.errors import EnvironmentProblem, UsageProblem
from export import tensorrt as trt_export
from tests.trt_standin import Behaviour, CpuCuda, EngineSpec, make_tensorrt


@pytest.fixture
def standin(monkeypatch, tmp_path):
    """install(behaviour=..., spec=..., manifest=...) -> (engine path, calls, cuda stand-in)."""

    def install(version="10.13.3", *, spec=None, manifest=None, capture_error=None, **behaviour):
        b = Behaviour(**behaviour)
        memory: dict = {}
        monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version, b, spec, memory))
        cuda = CpuCuda(memory, b.calls, capture_error)
        monkeypatch.setattr(trt_engine, "cuda_device", lambda device_index=None: cuda)
        path = tmp_path / "m.engine"
        path.write_bytes(b"ENGINE" * 10)
        if manifest is not None:
            (tmp_path / "m.engine.json").write_text(json.dumps(manifest))
        return path, b.calls, cuda

    return install


def _batch(n, chw=(3, 8, 8)):
    return np.arange(n * int(np.prod(chw)), dtype=np.float32).reshape(n, *chw) / 1000


def test_binds_buffers_and_reads_the_logits(standin):
    path, calls, _ = standin()
    batch = _batch(2)
    with TensorRTEngine(path) as engine:
        assert engine.input_shape == (3, 8, 8) and (engine.min_batch, engine.max_batch) == (1, 64)
        logits = engine.infer(batch)
    expected = batch.reshape(2, -1).sum(axis=1)[:, None] * (1 + np.arange(4))
    np.testing.assert_allclose(logits, expected, rtol=1e-5)
    assert ("set_tensor_address", "input") in calls and ("set_tensor_address", "logits") in calls
    assert ("set_input_shape", "input", (2, 3, 8, 8)) in calls


def test_fp16_engine_gets_fp16_buffers_and_gives_float32_logits(standin):
    path, calls, _ = standin(spec=EngineSpec(input_dtype="float16"))
    with TensorRTEngine(path, precision="fp16") as engine:
        logits = engine.infer(_batch(1))
        assert engine.describe()["options"]["precision_check"] == "input dtype (float16)"
    assert logits.dtype == np.float32
    assert ("alloc", (1, 3, 8, 8), "torch.float16") in calls and ("alloc", (1, 4), "torch.float16") in calls


def test_user_managed_context_memory_is_counted(standin):
    path, calls, _ = standin(spec=EngineSpec(device_memory=4096))
    with TensorRTEngine(path) as engine:
        engine.infer(_batch(2))
        memory = engine.memory_usage()
    assert ("create_context", "USER_MANAGED") in calls and ("set_device_memory", 4096) in calls
    io_bytes = 2 * 3 * 8 * 8 * 4 + 2 * 4 * 4
    assert memory["memory_peak_bytes"] == 4096 + io_bytes + path.stat().st_size
    assert memory["memory_kind"].startswith("trt: context 4096 + IO buffers")


def test_no_execution_context_is_an_out_of_memory_problem(standin):
    from bench.measure.timing import is_out_of_memory

    path, _, _ = standin(context_ok=False)  # create_execution_context returns None
    with pytest.raises(EnvironmentProblem, match="could not create an execution context for m.engine: out of memory") as caught:
        TensorRTEngine(path).activate()
    assert is_out_of_memory(caught.value)  # so a batch sweep records it and goes on


@pytest.mark.parametrize("failure, message", [
    ({"address_ok": False}, "TensorRT refused the address of tensor 'input'"),
    ({"enqueue_ok": False}, "TensorRT execute_async_v3 failed"),
    ({"shape_ok": False}, "batch 2 does not fit the engine's optimization profile"),
])
def test_false_returns_are_one_line_errors(standin, failure, message):
    path, _, _ = standin(**failure)
    with TensorRTEngine(path) as engine, pytest.raises((EnvironmentProblem, UsageProblem), match=message) as caught:
        engine.infer(_batch(2))
    assert "\n" not in str(caught.value)


def test_an_engine_it_cannot_load_names_tensorrts_reason(standin):
    path, _, _ = standin(deserialize_ok=False)
    with pytest.raises(EnvironmentProblem, match=r"could not load .*m.engine .*\(TensorRT: Serialization assertion"):
        TensorRTEngine(path).activate()


def test_broken_tensorrt_libraries_at_runtime_are_one_line(standin, monkeypatch):
    path, _, _ = standin()

    def broken(logger):
        raise OSError("libnvinfer_plugin.so.10: cannot open shared object file")

    monkeypatch.setattr(sys.modules["tensorrt"], "Runtime", broken)
    with pytest.raises(EnvironmentProblem, match="cannot start a runtime: libnvinfer_plugin.so.10"):
        TensorRTEngine(path).activate()


def test_batch_outside_every_profile_is_a_usage_problem(standin):
    path, _, _ = standin(spec=EngineSpec(profiles=((1, 4, 8),)))
    with TensorRTEngine(path) as engine, pytest.raises(UsageProblem, match=r"batch 9 is outside .*\(1..8\)"):
        engine.infer(_batch(9))


def test_each_batch_runs_on_the_profile_made_for_it(standin):
    spec = EngineSpec(profiles=((1, 8, 64), (1, 1, 64), (1, 64, 64)))
    path, calls, _ = standin(spec=spec)
    with TensorRTEngine(path) as engine:
        assert engine.profiles == [(1, 8, 64), (1, 1, 64), (1, 64, 64)]
        engine.infer(_batch(64))
        assert engine.describe()["options"]["profile"] == {"index": 2, "min": 1, "opt": 64, "max": 64}
        engine.infer(_batch(1))
        assert engine.profile_index == 1
        engine.infer(_batch(5))  # no profile made for 5: the first that admits it
        assert engine.profile_index == 0
        assert engine.describe()["options"]["profile_policy"] == "one profile per measured batch"
    runs = [c for c in calls if c[0] == "execute"]
    assert [r[2] for r in runs] == [2, 1, 0]
    assert [c for c in calls if c[0] == "set_profile"] == [("set_profile", 2), ("set_profile", 1), ("set_profile", 0)]


def test_a_profile_switch_tensorrt_refuses_is_an_error(standin):
    path, _, _ = standin(spec=EngineSpec(profiles=((1, 8, 64), (1, 64, 64))), profile_switch_ok=False)
    with TensorRTEngine(path) as engine, pytest.raises(EnvironmentProblem, match="could not switch to optimization profile 1"):
        engine.infer(_batch(64))


def test_cuda_graph_is_captured_once_and_replayed(standin):
    path, calls, cuda = standin()
    with TensorRTEngine(path, cuda_graph=True) as engine:
        first = engine.infer(_batch(2))
        second = engine.infer(_batch(2))
        assert engine.describe()["options"]["cuda_graph"] == "on"
    np.testing.assert_allclose(first, second)
    assert cuda.captures == 1 and calls.count(("replay",)) == 2
    assert [c[1] for c in calls if c[0] == "execute"] == ["eager", "capture", "eager", "eager"]  # warm, capture, replays


@pytest.mark.parametrize("failure", [{"enqueue_ok_in_capture": False},
                                     {"capture_error": "operation not permitted when stream is capturing"}])
def test_cuda_graph_falls_back_to_eager_where_capture_fails(standin, failure):
    path, calls, cuda = standin(**failure)
    batch = _batch(2)
    with TensorRTEngine(path, cuda_graph=True) as engine:
        logits = engine.infer(batch)
        engine.infer(batch)
        state = engine.describe()["options"]["cuda_graph"]
    assert state.startswith("unsupported: ")
    assert calls.count(("replay",)) == 0 and cuda.captures == 0
    np.testing.assert_allclose(logits, batch.reshape(2, -1).sum(axis=1)[:, None] * (1 + np.arange(4)), rtol=1e-5)


def test_deactivation_waits_for_the_stream_first(standin):
    path, calls, _ = standin()
    engine = TensorRTEngine(path).activate()
    engine.infer(_batch(1))
    stream = engine._stream
    before = stream.synchronized
    engine.deactivate()
    assert stream.synchronized == before + 1 and engine._buffers == {}


def test_prepare_waits_on_the_engine_stream_not_the_whole_device(standin, monkeypatch):
    import torch

    path, calls, _ = standin()

    def whole_device():
        raise AssertionError("torch.cuda.synchronize() waits for every stream on the device")

    monkeypatch.setattr(torch.cuda, "synchronize", whole_device)
    with TensorRTEngine(path) as engine:
        engine.infer(_batch(1))
    assert ("copy_in", (1, 3, 8, 8)) in calls and ("sync",) in calls


@pytest.mark.parametrize("spec, precision, manifest, message", [
    (EngineSpec(input_dtype="float16"), "fp32", None, "takes float16 input, so it is an fp16 engine"),
    (EngineSpec(), "fp32", {"precision": "fp16"}, "is a fp16 engine \\(its manifest says so\\)"),
    (EngineSpec(), "fp32", {"precision": "fp32", "tf32": True}, "was built with TF32 on; add --tf32"),
])
def test_a_given_engine_is_checked_against_the_precision_asked(standin, spec, precision, manifest, message):
    path, _, _ = standin(spec=spec, manifest=manifest)
    with pytest.raises(UsageProblem, match=message):
        TensorRTEngine(path, precision=precision).activate()


def test_an_engine_without_manifest_says_its_precision_is_unverified(standin):
    path, _, _ = standin()
    with TensorRTEngine(path, precision="fp16") as engine:
        check = engine.describe()["options"]["precision_check"]
    assert check == "unverified: no manifest, float32 input; labelled fp16 by --precision"


def test_engine_with_two_inputs_is_refused(standin):
    path, _, _ = standin(spec=EngineSpec(extra_input=True))
    with pytest.raises(UsageProblem, match="one input"):
        TensorRTEngine(path).activate()


def test_runtime_logger_writes_to_stderr(standin, capsys):
    path, _, _ = standin(deserialize_ok=False)
    with pytest.raises(EnvironmentProblem):
        TensorRTEngine(path).activate()
    out, err = capsys.readouterr()
    assert out == "" and "[TensorRT ERROR] Serialization assertion" in err


def test_logger_keeps_the_last_error_and_filters_by_severity(capsys):
    trt = make_tensorrt("10.13.3")
    logger = trt_export.make_logger(trt)
    logger.log(trt.ILogger.Severity.INFO, "chatty")
    logger.log(trt.ILogger.Severity.ERROR, "first")
    logger.log(trt.ILogger.Severity.WARNING, "careful")
    assert logger.last_error == "first"
    out, err = capsys.readouterr()
    assert out == "" and "chatty" not in err and "careful" in err
