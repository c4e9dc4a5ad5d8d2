"""Engines keep one contract, and agree with each other on outputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import nets
from bench.engines import ENGINES, create_engine, engine_availability
from bench.engines.torch_engine import cpu_precision_support
from bench.errors import EnvironmentProblem, MissingDependency, UsageProblem

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))


def _batch(n, shape=(3, 32, 32), seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)


@pytest.mark.parametrize("model_name", ["resnet20", "dy_resnet20"])
def test_torch_and_onnxruntime_agree(model_name):
    """The ONNX export is made at batch 1 and run at batch 3 (a dynamic batch)."""
    model = nets.create_model(model_name).eval()
    x = _batch(3)
    with create_engine("torch", model) as engine:
        reference = engine.infer(x)
    with create_engine("ort", model, threads=1) as engine:
        got = engine.infer(x)
        info = engine.describe()
    assert got.shape == reference.shape == (3, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)
    assert info["backend"] == "ort" and info["providers"] == ["CPUExecutionProvider"]
    assert info["options"]["graph_optimization"] == "all"


def test_prepared_path_equals_infer_and_contract():
    x = _batch(2)
    engine = create_engine("torch", "resnet20")
    with pytest.raises(RuntimeError, match="not active"):
        engine.infer(x)
    with engine as active:
        assert active is engine and engine.is_active
        expected = engine.infer(x)
        out = engine.run_prepared(engine.prepare(x))
        engine.synchronize()
        np.testing.assert_array_equal(engine.to_numpy(out), expected)
        with pytest.raises(UsageProblem, match="shape"):
            engine.infer(_batch(1, (3, 16, 16)))
        info = engine.describe()
    assert not engine.is_active
    assert {"backend", "version", "device", "precision", "providers", "options"} <= set(info)
    assert info["backend"] == "torch" and info["options"]["mode"] == "eager"


def test_channels_last_and_bf16_on_cpu():
    model = nets.create_model("resnet20").eval()
    x = _batch(2)
    with create_engine("torch", model) as engine:
        reference = engine.infer(x)
    with create_engine("torch", model, channels_last=True) as engine:
        np.testing.assert_allclose(engine.infer(x), reference, rtol=1e-4, atol=1e-4)
    with create_engine("torch", model, precision="bf16") as engine:
        got = engine.infer(x)  # bf16 autocast runs on every CPU (emulated without avx512_bf16)
        assert engine.describe()["options"]["autocast"] == "bfloat16"
    assert np.abs(got - reference).max() < 0.1 * max(1.0, np.abs(reference).max())


def test_fp16_on_a_cpu_without_fp16_is_refused():
    ok, why = cpu_precision_support("fp16")
    if ok:
        pytest.skip(f"this CPU runs fp16: {why}")
    with pytest.raises(EnvironmentProblem, match="fp16"):
        with create_engine("torch", "resnet20", precision="fp16"):
            pass


def test_factory_rejects_bad_requests():
    with pytest.raises(UsageProblem, match="unknown engine"):
        create_engine("tflite", "resnet20")
    with pytest.raises(UsageProblem, match="precision"):
        create_engine("torch", "resnet20", precision="int3")
    with pytest.raises(UsageProblem, match="device"):
        create_engine("torch", "resnet20", device="tpu")
    with pytest.raises(UsageProblem, match="provider"):
        with create_engine("ort", "resnet20", provider="bogus"):
            pass
    assert set(ENGINES) == {"torch", "ort", "trt", "openvino"}


def test_engines_import_without_heavy_optional_modules():
    code = ("import sys, bench.engines, bench.engines.trt_engine, bench.engines.ort_engine, "
            "bench.engines.openvino_engine, bench.measure.timing, bench.measure.stats;"
            "print('tensorrt' in sys.modules, 'onnxruntime' in sys.modules, 'openvino' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]


def test_availability_rows_say_why():
    rows = engine_availability()
    assert {r["engine"].split()[0] for r in rows} == {"torch", "ort", "trt", "openvino"}
    assert all(r["reason"] for r in rows)
    assert any(r["engine"] == "ort" and r["provider"] == "cpu" and r["available"] for r in rows)


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without a GPU")
def test_cuda_without_gpu_is_an_environment_problem():
    with pytest.raises(EnvironmentProblem, match="GPU"):
        with create_engine("torch", "resnet20", device="cuda"):
            pass


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU: torch.cuda.is_available() is False")
@pytest.mark.parametrize("options", [{}, {"precision": "fp16"}, {"cuda_graph": True}, {"channels_last": True}])
def test_torch_cuda_agrees_with_cpu(options):
    model = nets.create_model("resnet20").eval()
    x = _batch(4)
    with create_engine("torch", model) as engine:
        reference = engine.infer(x)
    with create_engine("torch", model, device="cuda", **options) as engine:
        got = engine.infer(x)
        got_again = engine.infer(x)
    tol = 5e-2 if options.get("precision") else 1e-3
    np.testing.assert_allclose(got, reference, rtol=tol, atol=tol)
    np.testing.assert_array_equal(got, got_again)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU: torch.cuda.is_available() is False")
@pytest.mark.parametrize("tf32", [False, True])
def test_torch_cuda_fp32_is_strict_unless_tf32(tf32):
    """cuDNN's TF32 default is switched off for fp32 (as TensorRT clears it), and put back."""
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with create_engine("torch", "resnet20", device="cuda", tf32=tf32) as engine:
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (tf32, tf32)
        assert engine.describe()["options"]["tf32"] is tf32
        engine.infer(_batch(2))
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def _trt_reason() -> str | None:
    from export.tensorrt import trt_status

    ok, why = trt_status()
    return None if ok else why


@pytest.mark.trt
def test_tensorrt_agrees_with_torch():
    reason = _trt_reason()
    if reason:
        pytest.skip(f"TensorRT engine unavailable: {reason}")
    model = nets.create_model("resnet20").eval()
    x = _batch(3)
    with create_engine("torch", model) as engine:
        reference = engine.infer(x)
    for cuda_graph in (False, True):
        with create_engine("trt", model, max_batch=8, cuda_graph=cuda_graph) as engine:
            np.testing.assert_allclose(engine.infer(x), reference, rtol=1e-2, atol=1e-2)
            assert engine.describe()["version"]


@pytest.mark.gpu
@pytest.mark.trt
def test_memory_is_measured_per_engine_on_the_gpu():
    """On hardware: each engine's own memory figure, labelled, not torch's buffers alone."""
    reason = _trt_reason()
    if reason:
        pytest.skip(f"TensorRT engine unavailable: {reason}")
    import onnxruntime

    import bench

    engines = ["torch", "trt"] + (["ort"] if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else [])
    records = bench.latency("resnet50", engines=engines, batches=[1, 8], device="cuda", iters=5, warmup=2,
                            input_size=224)
    kinds = {r["engine"]: r["peak_memory_source"] for r in records}
    assert kinds["torch"] == "cuda_max_allocated" and kinds["trt"].startswith("trt: context")
    if "ort" in kinds:
        assert kinds["ort"].startswith("ort: device memory")
    trt = [r for r in records if r["engine"] == "trt"]
    assert all(r["memory_peak_bytes"] > 20e6 for r in trt)  # resnet50's weights alone are ~100 MB fp32
    profiles = [r["engine_info"]["options"]["profile"] for r in trt]
    assert all(p is not None for p in profiles)


def test_tensorrt_missing_is_one_clear_error():
    if _trt_reason() is None:
        pytest.skip("TensorRT works here; this checks the error without it")
    with pytest.raises((MissingDependency, EnvironmentProblem), match="TensorRT|GPU"):
        with create_engine("trt", "resnet20"):
            pass


def test_an_option_the_engine_does_not_take_is_refused():
    """A typo is a one-line error naming what the engine takes, never silently swallowed."""
    with pytest.raises(UsageProblem, match=r"no option 'thredas'.*threads"):
        create_engine("ort", "resnet20", thredas=1)
    with pytest.raises(UsageProblem, match="no option 'provider'"):
        create_engine("torch", "resnet20", provider="cpu")


def test_torch_engine_puts_the_thread_count_back():
    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 1
    with create_engine("torch", "resnet20", threads=wanted) as engine:
        assert torch.get_num_threads() == wanted
        engine.infer(_batch(1))
    assert torch.get_num_threads() == before


def _plain_export(path, dynamic_axes, size=32):
    """An ONNX file written by plain torch.onnx.export, not by rbench."""
    model = nets.create_model("resnet20").eval()
    torch.onnx.export(model, torch.randn(1, 3, size, size), str(path), dynamo=False, input_names=["pixels"],
                      output_names=["logits"], dynamic_axes=dynamic_axes)
    return model


def test_onnxruntime_reads_name_shape_and_dtype_from_the_file(tmp_path):
    import onnxruntime

    path = tmp_path / "r20.onnx"
    model = _plain_export(path, {"pixels": {0: "n"}})
    x = _batch(2)
    with create_engine("torch", model) as engine:
        reference = engine.infer(x)
    with create_engine("ort", str(path)) as engine:  # no shape given: it comes from the file
        assert engine.input_shape == (3, 32, 32) and engine.input_name == "pixels"
        np.testing.assert_allclose(engine.infer(x), reference, rtol=1e-4, atol=1e-4)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with create_engine("ort", session) as engine:  # a session the caller made
        np.testing.assert_allclose(engine.infer(x), reference, rtol=1e-4, atol=1e-4)


def test_symbolic_height_and_width_need_an_input_shape(tmp_path):
    path = tmp_path / "any-size.onnx"
    _plain_export(path, {"pixels": {0: "n", 2: "h", 3: "w"}})
    with pytest.raises(UsageProblem, match="height/width symbolic"):
        create_engine("ort", str(path))
    with create_engine("ort", str(path), input_shape=(3, 24, 24)) as engine:
        assert engine.infer(_batch(1, (3, 24, 24))).shape == (1, 10)
