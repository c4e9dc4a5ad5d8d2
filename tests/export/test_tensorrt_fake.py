"""export.tensorrt against a stand-in `tensorrt` module: the calls a build makes, per TensorRT version.

The stand-in records what the builder is asked (network flags, builder flags, profile, workspace,
timing cache) and returns fixed bytes, so the build logic (reuse by cache key, timing cache round
trip and fallback, atomic outputs, errors, warnings) runs on the CPU. It checks our side of the API only; whether TensorRT
accepts it is for the GPU test in test_tensorrt.py.
"""

from __future__ import annotations

import enum
import json
import re
import sys
import types

import pytest

import export
import nets
from export import tensorrt as trt_export
from export.errors import DataProblem, EnvironmentProblem, UsageProblem


def make_fake_trt(version: str, calls: list, *, parse_ok: bool = True, build_ok: bool = True,
                  cache: str = "ok"):
    """`cache`: "ok"; "rejected" (set_timing_cache refuses a loaded cache, as for another GPU or
    TensorRT version); "corrupt" (create_timing_cache cannot read the bytes); "broken" (no cache at all)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 5})
    flags = {"TF32": 1} if major >= 11 else {"FP16": 0, "TF32": 1, "INT8": 2}  # 11 removed the weak-typing flags
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})

    class Network:
        def __init__(self, flags):
            self.flags = flags

        def get_input(self, index):
            return types.SimpleNamespace(name="input")

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse", path))
            return parse_ok

        def get_error(self, index):
            return types.SimpleNamespace(desc=lambda: "Unsupported operator FancyOp")

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data + b"+tactics"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("workspace", int(pool), size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag.name))

        def clear_flag(self, flag):
            calls.append(("clear_flag", flag.name))

        def add_optimization_profile(self, profile):
            calls.append(("profile", profile.shapes))

        def create_timing_cache(self, data):
            calls.append(("load_cache", bytes(data)))
            if cache == "broken" or (cache == "corrupt" and data):
                return None  # what TensorRT returns for bytes it cannot deserialize
            return TimingCache(bytes(data))

        def set_timing_cache(self, timing_cache, ignore_mismatch):
            assert ignore_mismatch is False and timing_cache is not None
            if cache == "rejected" and timing_cache.data:
                return False
            self.cache = timing_cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            calls.append(("network_flags", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build",))
            return b"ENGINE" if build_ok else None

    trt.Builder = Builder
    trt.OnnxParser = Parser
    return trt


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    model = nets.create_model("resnet20")
    export.to_onnx(model, folder / "m.onnx", (3, 32, 32), exporter="torchscript", verify=False)
    export.to_onnx(model, folder / "m-fp16.onnx", (3, 32, 32), exporter="torchscript", verify=False, precision="fp16")
    return folder


@pytest.fixture
def fake(monkeypatch):
    def install(version, **kwargs):
        calls: list = []
        monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(version, calls, **kwargs))
        monkeypatch.setattr(trt_export, "_gpu_identity", lambda: ("Fake GPU", "9.0"))
        return calls

    return install


def test_tensorrt_10_fp16_uses_the_builder_flag(fake, onnx_files, tmp_path):
    calls = fake("10.13.3")
    report = export.build_trt_engine(onnx_files / "m-fp16.onnx", tmp_path / "m.engine", precision="fp16",
                                     batch_range="1,8,64", workspace_gib=2, timing_cache=tmp_path / "t.cache")
    assert ("network_flags", 0) in calls and ("set_flag", "FP16") in calls and ("clear_flag", "TF32") in calls
    assert ("profile", ("input", (1, 3, 32, 32), (8, 3, 32, 32), (64, 3, 32, 32))) in calls
    assert ("workspace", 0, 2 * 2**30) in calls
    assert (tmp_path / "m.engine").read_bytes() == b"ENGINE"
    manifest = json.loads((tmp_path / "m.engine.json").read_text())
    assert manifest["cache_key"] == report.cache_key and manifest["tensorrt_version"] == "10.13.3"
    assert manifest["gpu_name"] == "Fake GPU" and manifest["compute_capability"] == "9.0"
    assert manifest["precision_plan"]["set_flags"] == ["FP16"] and not report.reused
    assert report.warnings == [] and manifest["warnings"] == []


def test_tensorrt_11_builds_strongly_typed_without_precision_flags(fake, onnx_files, tmp_path):
    calls = fake("11.0.1")
    export.build_trt_engine(onnx_files / "m-fp16.onnx", tmp_path / "m.engine", precision="fp16")
    assert ("network_flags", 1 << 5) in calls
    assert not [c for c in calls if c[0] == "set_flag"]
    with pytest.raises(UsageProblem, match="--precision fp16"):  # an fp32 file cannot give fp16 on 11
        export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "x.engine", precision="fp16")
    assert not (tmp_path / "x.engine").exists()


def test_engine_reused_only_while_the_key_matches_and_timing_cache_round_trips(fake, onnx_files, tmp_path):
    calls = fake("10.13.3")
    kwargs = dict(precision="fp32", timing_cache=tmp_path / "t.cache")
    first = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", batch_range="1,8,64", **kwargs)
    assert (tmp_path / "t.cache").read_bytes() == b"+tactics" and first.timing_cache_loaded_bytes == 0
    again = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", batch_range="1,8,64", **kwargs)
    assert again.reused and calls.count(("build",)) == 1
    other = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", batch_range="1,16,64", **kwargs)
    assert not other.reused and other.cache_key != first.cache_key and calls.count(("build",)) == 2
    assert ("load_cache", b"+tactics") in calls and other.timing_cache_loaded_bytes == len(b"+tactics")
    forced = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", batch_range="1,16,64",
                                     force=True, **kwargs)
    assert not forced.reused and calls.count(("build",)) == 3


@pytest.mark.parametrize("cache, warning", [
    ("rejected", "TensorRT refused the timing cache .*t.cache \\(made by another TensorRT version or GPU\\); "
                 "started a fresh one, which replaces it"),
    ("corrupt", "TensorRT cannot read the timing cache .*t.cache \\(corrupt or from another version\\); "
                "started a fresh one, which replaces it"),
])
def test_unusable_timing_cache_is_replaced_by_a_fresh_one_with_a_warning(fake, onnx_files, tmp_path, cache, warning):
    calls = fake("10.13.3", cache=cache)
    (tmp_path / "t.cache").write_bytes(b"OTHER-GPU")
    report = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", timing_cache=tmp_path / "t.cache")
    assert ("load_cache", b"OTHER-GPU") in calls and ("load_cache", b"") in calls  # tried, then started afresh
    (message,) = report.warnings
    assert re.fullmatch(warning, message), message
    assert report.timing_cache_loaded_bytes == 0 and not report.timing_cache_hit
    assert (tmp_path / "t.cache").read_bytes() == b"+tactics" and report.timing_cache_saved_bytes == len(b"+tactics")
    assert (tmp_path / "m.engine").read_bytes() == b"ENGINE"
    assert json.loads((tmp_path / "m.engine.json").read_text())["warnings"] == [message]


def test_no_timing_cache_at_all_builds_without_one_and_keeps_the_file(fake, onnx_files, tmp_path):
    fake("10.13.3", cache="broken")
    (tmp_path / "t.cache").write_bytes(b"OLD")
    report = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", timing_cache=tmp_path / "t.cache")
    assert report.warnings[-1] == ("TensorRT could not create an empty timing cache; built without one and left "
                                   f"{tmp_path / 't.cache'} as it was")
    assert (tmp_path / "t.cache").read_bytes() == b"OLD" and report.timing_cache_saved_bytes == 0
    assert (tmp_path / "m.engine").read_bytes() == b"ENGINE"


def test_unwritable_timing_cache_is_a_warning_not_a_lost_engine(fake, onnx_files, tmp_path):
    fake("10.13.3")
    (tmp_path / "cache").mkdir()  # a folder where the cache file should go: the write fails
    report = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", timing_cache=tmp_path / "cache")
    (message,) = report.warnings
    assert message.startswith(f"timing cache {tmp_path / 'cache'} cannot be written") and "time tactics again" in message
    assert report.timing_cache_saved_bytes == 0 and (tmp_path / "m.engine").read_bytes() == b"ENGINE"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "m.engine", "m.engine.json"]
    assert list((tmp_path / "cache").iterdir()) == []  # no temporary file left behind


def test_tensorrt_10_fp16_from_an_fp32_file_warns_that_parity_did_not_cover_it(fake, onnx_files, tmp_path):
    calls = fake("10.13.3")
    report = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", precision="fp16")
    assert ("set_flag", "FP16") in calls
    (message,) = report.warnings
    assert message.startswith("fp16 engine from an fp32 ONNX file: TensorRT 10 chooses fp16 kernels layer by layer")
    assert "--precision fp16" in message
    again = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", precision="fp16")
    assert again.reused and again.warnings == [message]  # the manifest keeps what the build said


@pytest.mark.parametrize("failure, error, message", [
    ({"parse_ok": False}, DataProblem, "cannot parse m.onnx: Unsupported operator FancyOp"),
    ({"build_ok": False}, EnvironmentProblem, "could not build an engine"),
])
def test_failed_build_writes_nothing(fake, onnx_files, tmp_path, failure, error, message):
    fake("10.13.3", **failure)
    with pytest.raises(error, match=message):
        export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", timing_cache=tmp_path / "t.cache")
    assert list(tmp_path.iterdir()) == []


def test_cli_engine_trt_writes_engine_and_manifest(fake, run_cli, tmp_path):
    fake("10.13.3")
    out = tmp_path / "exports" / "template_cnn"
    code, stdout, err = run_cli("export", "template_cnn", "--engine", "trt", "--batch-range", "1,4,8", "--out", out,
                                "--exporter", "torchscript")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "template_cnn.engine", "template_cnn.engine.json", "template_cnn.onnx", "template_cnn.onnx.json"]
    assert (tmp_path / "exports" / "trt-timing.cache").exists()  # shared by every model under exports/
    manifest = json.loads((out / "template_cnn.onnx.json").read_text())
    assert manifest["tensorrt"]["profile"] == {"min": [1, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [8, 3, 32, 32]}
    assert "TensorRT 10.13.3 engine" in stdout


@pytest.mark.parametrize("version", ["10.13.3", "11.0.1"])
def test_int8_builds_strongly_typed_from_the_qdq_file(fake, onnx_files, tmp_path, version):
    import numpy as np

    from export.quantize import quantize_onnx

    calls = fake(version)
    int8 = tmp_path / "m-int8.onnx"
    calibration = np.random.default_rng(0).standard_normal((8, 3, 32, 32), dtype=np.float32)
    quantize_onnx(onnx_files / "m.onnx", int8, calibration, activations="s8")
    report = export.build_trt_engine(int8, tmp_path / "m.engine", precision="int8")
    # Explicit quantization: a strongly typed network, no precision flags (TensorRT's guide for Q/DQ files).
    assert ("network_flags", 1 << 5) in calls and not [c for c in calls if c[0] == "set_flag"]
    assert report.precision_plan["strongly_typed"] and "explicit quantization" in report.precision_plan["note"]
    with pytest.raises(UsageProblem, match="Q/DQ"):  # an fp32 file is no int8 engine
        export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "x.engine", precision="int8")
    with pytest.raises(UsageProblem, match="--precision int8"):  # nor an int8 file an fp32 one
        export.build_trt_engine(int8, tmp_path / "y.engine", precision="fp32")
    quantize_onnx(onnx_files / "m.onnx", tmp_path / "m-u8.onnx", calibration, activations="u8")
    with pytest.raises(UsageProblem, match="--activations s8"):  # uint8 with a zero point: not for TensorRT
        export.build_trt_engine(tmp_path / "m-u8.onnx", tmp_path / "z.engine", precision="int8")
    assert not any((tmp_path / name).exists() for name in ("x.engine", "y.engine", "z.engine"))
