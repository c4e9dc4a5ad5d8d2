"""onnxruntime on a GPU, against a stand-in `onnxruntime` module: provider check, provider options,
device id, memory; and the measuring plumbing around GPU engines (memory per engine, `rbench engines`).

The stand-in takes its option names from onnxruntime's docs of the CUDA and TensorRT execution
providers (`use_tf32`, `device_id`, `trt_engine_cache_enable`, `trt_engine_cache_path`,
`trt_timing_cache_enable`, `trt_timing_cache_path`, `trt_profile_{min,opt,max}_shapes`, in
`OrtTensorRTProviderOptionsV2` of `tensorrt_provider_options.h`) and refuses any other name, as
onnxruntime does.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from bench.engines import ort_engine
from bench.engines.ort_engine import OnnxRuntimeEngine
from bench.errors import EnvironmentProblem, UsageProblem

CUDA_OPTIONS = {"device_id", "use_tf32", "cudnn_conv_algo_search", "gpu_mem_limit", "arena_extend_strategy"}
TRT_OPTIONS = {"device_id", "trt_engine_cache_enable", "trt_engine_cache_path", "trt_timing_cache_enable",
               "trt_timing_cache_path", "trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes",
               "trt_fp16_enable", "trt_max_workspace_size"}


def make_onnxruntime(active: list[str] | None = None, version: str = "1.22.0"):
    """A GPU build of onnxruntime whose sessions run `active` providers (default: what was asked)."""
    ort = types.ModuleType("onnxruntime")
    ort.__version__ = version
    ort.sessions = []
    ort.values = []
    ort.get_available_providers = lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    ort.GraphOptimizationLevel = types.SimpleNamespace(ORT_ENABLE_ALL=99, ORT_DISABLE_ALL=0, ORT_ENABLE_BASIC=1,
                                                       ORT_ENABLE_EXTENDED=2)

    class SessionOptions:
        pass

    class Binding:
        def bind_ortvalue_input(self, name, value):
            self.input = (name, value)

        def bind_output(self, name, device_type="cpu", device_id=0):
            self.output = (name, device_type, device_id)

        def synchronize_inputs(self):
            pass

        def synchronize_outputs(self):
            pass

        def copy_outputs_to_cpu(self):
            return [np.zeros((1, 4), np.float32)]

    class InferenceSession:
        def __init__(self, path, sess_options=None, providers=None):
            for name, options in providers:
                allowed = CUDA_OPTIONS if name == "CUDAExecutionProvider" else TRT_OPTIONS
                unknown = set(options) - allowed
                if unknown:
                    raise RuntimeError(f"Unknown provider option: {sorted(unknown)}")
            self.providers = providers
            ort.sessions.append(self)

        def get_providers(self):
            return (active if active is not None else [p for p, _ in self.providers]) + ["CPUExecutionProvider"]

        def get_inputs(self):
            return [types.SimpleNamespace(name="x", type="tensor(float)", shape=["N", 3, 8, 8])]

        def get_outputs(self):
            return [types.SimpleNamespace(name="y")]

        def io_binding(self):
            return Binding()

        def run_with_iobinding(self, binding):
            pass

    class OrtValue:
        @staticmethod
        def ortvalue_from_numpy(array, device_type="cpu", device_id=0):
            ort.values.append((device_type, device_id))
            return ("value", device_type, device_id)

    ort.SessionOptions, ort.InferenceSession, ort.OrtValue = SessionOptions, InferenceSession, OrtValue
    return ort


@pytest.fixture
def onnx_path(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 192])
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.fixture
def fake_ort(monkeypatch):
    def install(**kwargs):
        ort = make_onnxruntime(**kwargs)
        monkeypatch.setitem(sys.modules, "onnxruntime", ort)
        monkeypatch.setattr(ort_engine, "_free_device_bytes", lambda device_id: 8 << 30)
        return ort

    return install


def test_a_silent_fall_back_to_the_cpu_is_refused(fake_ort, onnx_path):
    fake_ort(active=[])  # onnxruntime could not start CUDA and runs on the CPU without a word
    with pytest.raises(EnvironmentProblem, match="onnxruntime did not start CUDAExecutionProvider .*runs "
                                                 "CPUExecutionProvider"):
        OnnxRuntimeEngine(onnx_path, device="cuda", provider="cuda").activate()


def test_tensorrt_provider_falling_back_to_cuda_is_refused(fake_ort, onnx_path, tmp_path):
    fake_ort(active=["CUDAExecutionProvider"])
    with pytest.raises(EnvironmentProblem, match="did not start TensorrtExecutionProvider"):
        OnnxRuntimeEngine(onnx_path, device="cuda", provider="tensorrt", cache_dir=tmp_path / "c").activate()


def test_cuda_provider_gets_the_device_and_strict_fp32(fake_ort, onnx_path):
    ort = fake_ort()
    with OnnxRuntimeEngine(onnx_path, device="cuda", provider="cuda", device_id=1) as engine:
        engine.infer(np.zeros((1, 3, 8, 8), np.float32))
        info = engine.describe()["options"]
    (session,) = ort.sessions
    assert session.providers == [("CUDAExecutionProvider", {"device_id": "1", "use_tf32": "0"})]
    assert ort.values == [("cuda", 1)] and info["device_id"] == 1 and info["tf32"] is False
    with OnnxRuntimeEngine(onnx_path, device="cuda", provider="cuda", tf32=True):
        pass
    assert ort.sessions[-1].providers[0][1]["use_tf32"] == "1"


def test_tensorrt_provider_gets_an_engine_cache_and_explicit_shapes(fake_ort, onnx_path, tmp_path):
    ort = fake_ort()
    with OnnxRuntimeEngine(onnx_path, device="cuda", provider="tensorrt", batch_range=(1, 16, 64),
                           cache_dir=tmp_path / "cache") as engine:
        info = engine.describe()["options"]
    trt_options = dict(ort.sessions[0].providers)["TensorrtExecutionProvider"]
    assert trt_options["trt_engine_cache_enable"] == "True" and trt_options["trt_timing_cache_enable"] == "True"
    assert trt_options["trt_engine_cache_path"] == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
    assert (trt_options["trt_profile_min_shapes"], trt_options["trt_profile_opt_shapes"],
            trt_options["trt_profile_max_shapes"]) == ("x:1x3x8x8", "x:16x3x8x8", "x:64x3x8x8")
    assert info["tensorrt_profile"] == [1, 16, 64]


def test_device_memory_is_read_before_and_after(fake_ort, onnx_path, monkeypatch):
    fake_ort()
    free = iter([8 << 30, (8 << 30) - 300_000_000])
    monkeypatch.setattr(ort_engine, "_free_device_bytes", lambda device_id: next(free))
    with OnnxRuntimeEngine(onnx_path, device="cuda", provider="cuda") as engine:
        usage = engine.memory_usage()
    assert usage["memory_peak_bytes"] == 300_000_000 and usage["memory_kind"].startswith("ort: device memory")


def test_device_id_needs_cuda(onnx_path):
    with pytest.raises(UsageProblem, match="--device-id 1 needs --device cuda"):
        OnnxRuntimeEngine(onnx_path, device="cpu", device_id=1)


def test_device_id_option_of_the_cli_is_checked(run_cli):
    code, _, err = run_cli("latency", "template_cnn", "--engine", "torch", "--device-id", "1", "--iters", "1")
    assert code == 2 and "--device-id applies to --engine ort with --device cuda" in err


def test_measure_keeps_the_engines_own_memory_figure(monkeypatch):
    """The timing loop's torch.cuda.max_memory_allocated sees none of TensorRT's or onnxruntime's memory."""
    import bench.measure.timing
    from bench.measure import run as measure
    class Engine:
        input_shape = (3, 4, 4)
        is_active = True

        def memory_usage(self):
            return {"memory_peak_bytes": 123456789, "memory_kind": "trt: context ..."}

        def describe(self):
            return {"options": {"cuda_graph": "unsupported: capture failed"}}

    monkeypatch.setattr(bench.measure.timing, "measure_latency", lambda engine, batch, **kw: {
        "latencies_ms": [1.0], "iters": 1, "warmup_iters": 0, "warmup_s": 0.0, "timed_wall_s": 0.001,
        "memory_peak_bytes": 300_000, "memory_kind": "cuda_max_allocated"})
    entry = measure._Entry(source=None, engine_name="trt", engine=Engine(), costs={}, info={}, peak=None)
    (run,) = measure._time_entries([entry], 1, measure.Settings(iters=1), np.random.default_rng(0), None)
    assert run["memory_peak_bytes"] == 123456789 and run["memory_kind"] == "trt: context ..."


def test_settings_pass_tf32_and_device_id_to_the_engines():
    from bench.engines import engine_class
    from bench.measure.run import Settings

    settings = Settings(tf32=True, device_id=1)
    for name in ("torch", "ort", "trt"):
        options = settings.engine_options(name)
        assert options["tf32"] is True and set(options) <= set(engine_class(name).OPTIONS)
    assert settings.engine_options("ort")["device_id"] == 1


def test_torch_engine_describes_tf32_only_on_the_gpu():
    import nets
    from bench.engines.torch_engine import TorchEngine

    with TorchEngine(nets.create_model("template_cnn"), input_shape=(3, 32, 32), tf32=True) as engine:
        assert engine.describe()["options"]["tf32"] is None  # no TF32 on a CPU


# -- rbench engines: the TensorRT wheel, CUDA runtime and driver, and their mismatches -------------

def test_cuda_mismatches_are_named():
    from export.tensorrt import cuda_mismatches

    assert cuda_mismatches("tensorrt-cu12 10.13.3", "12.8", "12.9") == []
    notes = cuda_mismatches("tensorrt-cu13 11.1.0", "12.8", "12.4")
    assert notes[0].startswith("tensorrt-cu13 needs a CUDA 13 driver, this one supports CUDA 12.4")
    assert "two CUDA runtimes in one process" in notes[1]


def test_engines_command_warns_on_a_mismatch(monkeypatch, run_cli):
    from export import tensorrt as trt_export
    from tests.trt_standin import make_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt("11.1.0"))
    monkeypatch.setattr(trt_export, "_gpu_identity", lambda: ("Stand-in GPU", "9.0"))
    monkeypatch.setattr(trt_export, "cuda_stack", lambda: {
        "flavour": "tensorrt-cu13 11.1.0", "cuda_runtime": "12.8", "driver_cuda": "12.4",
        "warnings": trt_export.cuda_mismatches("tensorrt-cu13 11.1.0", "12.8", "12.4")})
    code, out, err = run_cli("engines")
    assert code == 0
    assert "warning: trt: tensorrt-cu13 needs a CUDA 13 driver" in err
    from bench.engines.availability import ort_tensorrt_warnings, trt_row

    row = trt_row()
    assert "wheel tensorrt-cu13 11.1.0, CUDA runtime 12.8, driver supports CUDA 12.4" in row["reason"]
    assert len(row["warnings"]) == 2
    assert ort_tensorrt_warnings("1.26.1") == [
        "TensorRT 11 needs onnxruntime-gpu>=1.27 for the tensorrt provider (this is 1.26.1)"]
    assert ort_tensorrt_warnings("1.27.0") == []
