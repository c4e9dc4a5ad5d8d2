"""export.tensorrt on the CPU: profile arithmetic, precision plans, cache keys, missing or broken TensorRT.

The build itself needs TensorRT and a CUDA GPU; that test skips with its reason elsewhere.
"""

from __future__ import annotations

import importlib.abc
import importlib.util

import pytest

import export
import nets
from export import tensorrt as trt_export
from export.errors import DataProblem, EnvironmentProblem, MissingDependency, UsageProblem

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.parametrize("text, expected", [
    ("1,8,64", (1, 8, 64)),
    (" 2, 2 ,4 ", (2, 2, 4)),
    ("16", (16, 16, 16)),
    ((1, 4, 8), (1, 4, 8)),
])
def test_parse_batch_range(text, expected):
    assert trt_export.parse_batch_range(text) == expected


@pytest.mark.parametrize("text, message", [
    ("0,8,64", "at least 1"),
    ("8,4,64", "MIN <= OPT <= MAX"),
    ("1,64,8", "MIN <= OPT <= MAX"),
    ("1,8", "three integers"),
    ("a,b,c", "integers"),
    ("", "three integers"),
])
def test_bad_batch_ranges(text, message):
    with pytest.raises(UsageProblem, match=message):
        trt_export.parse_batch_range(text)


def test_profile_shapes():
    assert trt_export.profile_shapes((3, 32, 32), "1,8,64") == {
        "min": (1, 3, 32, 32), "opt": (8, 3, 32, 32), "max": (64, 3, 32, 32)}
    with pytest.raises(UsageProblem):
        trt_export.profile_shapes((3, 32), "1,8,64")


def test_precision_plan_tensorrt_10_uses_builder_flags():
    fp16 = trt_export.precision_plan(10, "fp16", "fp16")
    assert not fp16.strongly_typed and fp16.set_flags == ("FP16",)
    assert trt_export.precision_plan(10, "fp16", "fp32").set_flags == ("FP16",)  # weak typing casts itself
    fp32 = trt_export.precision_plan(10, "fp32", "fp32")
    assert not fp32.strongly_typed and fp32.set_flags == () and "TF32" in fp32.clear_flags


@pytest.mark.parametrize("major", [11, 12])
def test_precision_plan_tensorrt_11_is_strongly_typed(major):
    plan = trt_export.precision_plan(major, "fp16", "fp16")
    assert plan.strongly_typed and plan.set_flags == ()  # FP16 flag no longer exists
    assert trt_export.precision_plan(major, "fp32", "fp32").strongly_typed
    with pytest.raises(UsageProblem, match="--precision fp16"):
        trt_export.precision_plan(major, "fp16", "fp32")  # precision must come from the file


def test_precision_plan_refusals():
    with pytest.raises(UsageProblem, match="fp16 ONNX file cannot give an fp32"):
        trt_export.precision_plan(10, "fp32", "fp16")
    with pytest.raises(MissingDependency, match="TensorRT 10 or newer"):
        trt_export.precision_plan(8, "fp32", "fp32")
    with pytest.raises(UsageProblem):
        trt_export.precision_plan(10, "int8", "fp32")
    assert trt_export.trt_major_of("10.13.3.9") == 10 and trt_export.trt_major_of("11.0.0") == 11


BASE_KEY = dict(onnx_sha256="a" * 64, trt_version="10.13.3", gpu_name="NVIDIA H100", compute_capability="9.0",
                precision="fp16", profile={"min": (1, 3, 32, 32), "opt": (8, 3, 32, 32), "max": (64, 3, 32, 32)},
                workspace_gib=4.0)


@pytest.mark.parametrize("field, other", [
    ("onnx_sha256", "b" * 64),
    ("trt_version", "11.0.0"),
    ("gpu_name", "NVIDIA A100"),
    ("compute_capability", "8.0"),
    ("precision", "fp32"),
    ("profile", {"min": (1, 3, 32, 32), "opt": (16, 3, 32, 32), "max": (64, 3, 32, 32)}),
    ("workspace_gib", 8.0),
    ("tf32", True),
    ("trt_flavour", "tensorrt-cu13 10.13.3"),
    ("cuda_version", "13.0"),
    ("recipe_version", 1),
    ("profiles", [{"min": (1, 3, 32, 32), "opt": (8, 3, 32, 32), "max": (64, 3, 32, 32)},
                  {"min": (1, 3, 32, 32), "opt": (64, 3, 32, 32), "max": (64, 3, 32, 32)}]),
])
def test_cache_key_changes_with_every_component(field, other):
    key = trt_export.engine_cache_key(**BASE_KEY)
    assert key == trt_export.engine_cache_key(**BASE_KEY)  # stable
    assert key != trt_export.engine_cache_key(**{**BASE_KEY, field: other})


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks the message without it")
def test_missing_tensorrt_is_one_line_and_writes_nothing(tmp_path):
    ok, reason = trt_export.trt_status()
    assert not ok and reason == f"TensorRT is not available: {trt_export.INSTALL_HINT}"
    assert "pip install 'rbench[trt]'" in reason
    onnx_path = tmp_path / "m.onnx"
    export.to_onnx(nets.create_model("resnet20"), onnx_path, (3, 32, 32), exporter="torchscript", verify=False)
    with pytest.raises(MissingDependency, match=r"TensorRT is not available: pip install 'rbench\[trt\]'"):
        export.build_trt_engine(onnx_path, tmp_path / "m.engine", precision="fp32", batch_range=(1, 8, 64),
                                timing_cache=tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_engine_arguments_are_checked_before_tensorrt(tmp_path):
    # These fail the same way with or without TensorRT: nothing touches a GPU for a bad request.
    with pytest.raises(DataProblem, match="no ONNX file"):
        export.build_trt_engine(tmp_path / "none.onnx", tmp_path / "e.engine")
    onnx_path = tmp_path / "static.onnx"
    export.to_onnx(nets.create_model("resnet20"), onnx_path, (3, 32, 32), exporter="torchscript",
                   dynamic_batch=False, batch=2, verify=False)
    with pytest.raises(UsageProblem, match="fixed batch of 2"):
        export.build_trt_engine(onnx_path, tmp_path / "e.engine", batch_range="1,8,64")
    with pytest.raises(UsageProblem, match="MIN <= OPT <= MAX"):
        export.build_trt_engine(onnx_path, tmp_path / "e.engine", batch_range="4,2,1")


def _cuda_ok() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.trt
def test_build_engine_on_a_gpu(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'rbench[trt]')")
    if not _cuda_ok():
        pytest.skip("TensorRT is installed but torch sees no CUDA GPU")
    onnx_path = tmp_path / "m.onnx"
    export.to_onnx(nets.create_model("resnet20"), onnx_path, (3, 32, 32), exporter="torchscript")
    cache = tmp_path / "timing.cache"
    first = export.build_trt_engine(onnx_path, tmp_path / "m.engine", precision="fp32", batch_range="1,4,8",
                                    timing_cache=cache, workspace_gib=1)
    assert not first.reused and first.engine_bytes > 0 and cache.stat().st_size > 0
    again = export.build_trt_engine(onnx_path, tmp_path / "m.engine", precision="fp32", batch_range="1,4,8",
                                    timing_cache=cache, workspace_gib=1)
    assert again.reused and again.cache_key == first.cache_key
    other = export.build_trt_engine(onnx_path, tmp_path / "m.engine", precision="fp32", batch_range="1,4,16",
                                    timing_cache=cache, workspace_gib=1)
    assert not other.reused and other.cache_key != first.cache_key and other.timing_cache_loaded_bytes > 0


def _require_trt_gpu():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'rbench[trt]')")
    if not _cuda_ok():
        pytest.skip("TensorRT is installed but torch sees no CUDA GPU")


@pytest.fixture(scope="module")
def resnet50_onnx(tmp_path_factory):
    """resnet50 at 224x224, fp32 and fp16 files with a dynamic batch (exported once for the GPU tests)."""
    _require_trt_gpu()  # before minutes of export on a machine that cannot use them
    folder = tmp_path_factory.mktemp("resnet50")
    model = nets.create_model("resnet50").eval()
    for precision in ("fp32", "fp16"):
        export.to_onnx(model, folder / f"r50-{precision}.onnx", (3, 224, 224), exporter="torchscript",
                       precision=precision, verify=False)
    return folder


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resnet50_builds_past_a_mismatched_timing_cache(resnet50_onnx, tmp_path, precision):
    """On hardware: a timing cache from another TensorRT/GPU is replaced, never fatal."""
    _require_trt_gpu()
    cache = trt_export.default_timing_cache(tmp_path)
    assert cache.name.startswith("trt-timing-") and "-sm" in cache.name
    stale = b"a timing cache from another TensorRT version or GPU" * 64
    cache.write_bytes(stale)
    report = export.build_trt_engine(resnet50_onnx / f"r50-{precision}.onnx", tmp_path / "r50.engine",
                                     precision=precision, batch_range="1,8,32", timing_cache=cache, workspace_gib=2)
    assert report.engine_bytes > 0 and report.timing_cache_loaded_bytes == 0
    assert any("timing cache" in w for w in report.warnings), report.warnings
    assert cache.stat().st_size > 0 and cache.read_bytes() != stale
    again = export.build_trt_engine(resnet50_onnx / f"r50-{precision}.onnx", tmp_path / "r50b.engine",
                                    precision=precision, batch_range="1,8,32", timing_cache=cache, workspace_gib=2)
    assert again.timing_cache_loaded_bytes > 0 and not [w for w in again.warnings if "timing cache" in w]


@pytest.mark.trt
def test_resnet50_batch_sweep_runs_each_batch_on_its_own_profile(resnet50_onnx, tmp_path):
    """On hardware: one profile per measured batch, switched at run time, outputs agree."""
    import numpy as np

    from bench.engines.trt_engine import TensorRTEngine

    _require_trt_gpu()
    batches = [1, 8, 32]
    report = export.build_trt_engine(resnet50_onnx / "r50-fp32.onnx", tmp_path / "r50.engine", batch_range="1,8,32",
                                     opt_batches=batches, workspace_gib=2)
    assert [p["opt"][0] for p in report.profiles] == [8, 1, 32]
    x = np.random.default_rng(0).standard_normal((32, 3, 224, 224), dtype=np.float32)
    with TensorRTEngine(report.engine_path) as engine:
        outputs = {}
        for batch in batches:
            outputs[batch] = engine.infer(x[:batch])
            assert engine.describe()["options"]["profile"]["opt"] == batch
        memory = engine.memory_usage()
    np.testing.assert_allclose(outputs[8], outputs[32][:8], rtol=1e-3, atol=1e-3)
    assert memory["memory_peak_bytes"] > report.engine_bytes


def test_no_gpu_and_old_tensorrt_are_named(monkeypatch, tmp_path):
    import sys
    import types

    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.9.0"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_export, "_gpu_identity", lambda: None)
    ok, reason = trt_export.trt_status()
    assert not ok and reason.startswith("no CUDA GPU: TensorRT 10.9.0 is installed but torch sees no GPU")
    with pytest.raises(EnvironmentProblem, match="no CUDA GPU: .*TensorRT needs an NVIDIA GPU"):
        trt_export.require_trt()
    assert trt_export.import_tensorrt() is fake  # importing needs no GPU
    monkeypatch.setattr(trt_export, "_gpu_identity", lambda: ("Fake GPU", "9.0"))
    assert trt_export.trt_status() == (True, "TensorRT 10.9.0 on Fake GPU (compute capability 9.0)")
    assert trt_export.require_trt() is fake
    fake.__version__ = "8.6.1"
    for call in (trt_export.import_tensorrt, trt_export.require_trt):
        with pytest.raises(MissingDependency, match=r"TensorRT 10 or newer \(found 8.6.1\) is not available: pip"):
            call()
    assert trt_export.trt_status() == (False, f"TensorRT 10 or newer (found 8.6.1) is not available: {trt_export.INSTALL_HINT}")


class _BrokenInstall(importlib.abc.MetaPathFinder):
    """Finds `tensorrt` and fails the way a broken install does: its shared libraries do not load."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorrt":
            raise OSError("libnvinfer.so.10: cannot open shared object file: No such file or directory")
        return None


@pytest.mark.parametrize("broken, message", [
    (None, r"TensorRT is not available: pip install 'rbench\[trt\]'"),
    (_BrokenInstall(), r"TensorRT \(it does not load: libnvinfer.so.10: cannot open .*\) is not available: pip"),
])
def test_missing_or_broken_tensorrt_is_one_missing_dependency(monkeypatch, broken, message):
    import sys

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    if broken is None:
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails as if not installed
    else:
        monkeypatch.setattr(sys, "meta_path", [broken, *sys.meta_path])
    with pytest.raises(MissingDependency, match=message) as caught:
        trt_export.import_tensorrt()
    assert caught.value.exit_code == 1 and "\n" not in str(caught.value)
    ok, reason = trt_export.trt_status()
    assert not ok and reason == str(caught.value)
