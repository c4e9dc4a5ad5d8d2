"""export.tensorrt against a stand-in `tensorrt` module: the calls a build makes, per TensorRT version.

The stand-in (`tests/trt_standin.py`) mirrors the real bindings' names, argument names, enum values
and return types (IHostMemory, -1, None, bool), records what the builder is asked (network flags,
builder flags, profiles, workspace, timing cache) and returns fixed bytes, so the build logic (reuse
by cache key, timing cache round trip, fallback and merge, atomic outputs, errors, warnings) runs on
the CPU. Whether TensorRT accepts it is for the GPU tests in test_tensorrt.py.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

import export
import nets
from export import tensorrt as trt_export
from export.errors import DataProblem, EnvironmentProblem, UsageProblem
from tests.trt_standin import Behaviour, make_tensorrt

STACK = {"flavour": "tensorrt-cu12 10.13.3", "cuda_runtime": "12.8", "driver_cuda": "12.8", "warnings": []}


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
        behaviour = Behaviour(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version, behaviour))
        monkeypatch.setattr(trt_export, "_gpu_identity", lambda: ("Fake GPU", "9.0"))
        monkeypatch.setattr(trt_export, "cuda_stack", lambda: dict(STACK))
        return behaviour.calls

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
    assert ("network_flags", 0) in calls  # always strongly typed; the flag (0 on 11) is deprecated
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cache.lock", "m.engine", "m.engine.json"]
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
    # shared by every model under exports/, one per TensorRT version and GPU
    assert (tmp_path / "exports" / "trt-timing-10.13.3-sm90.cache").exists()
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
    strongly_typed = 1 << 1 if version.startswith("10.") else 0  # STRONGLY_TYPED: 1 on 10.x; 11.x always is
    assert ("network_flags", strongly_typed) in calls and not [c for c in calls if c[0] == "set_flag"]
    assert report.precision_plan["strongly_typed"] and "explicit quantization" in report.precision_plan["note"]
    with pytest.raises(UsageProblem, match="Q/DQ"):  # an fp32 file is no int8 engine
        export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "x.engine", precision="int8")
    with pytest.raises(UsageProblem, match="--precision int8"):  # nor an int8 file an fp32 one
        export.build_trt_engine(int8, tmp_path / "y.engine", precision="fp32")
    quantize_onnx(onnx_files / "m.onnx", tmp_path / "m-u8.onnx", calibration, activations="u8")
    with pytest.raises(UsageProblem, match="--activations s8"):  # uint8 with a zero point: not for TensorRT
        export.build_trt_engine(tmp_path / "m-u8.onnx", tmp_path / "z.engine", precision="int8")
    assert not any((tmp_path / name).exists() for name in ("x.engine", "y.engine", "z.engine"))


# -- what a first run on a GPU would hit ------------------------------------------------

def test_timing_cache_lost_after_the_build_is_a_warning_not_a_crash(fake, onnx_files, tmp_path):
    fake("10.13.3", cache="lost")  # get_timing_cache() returns None: the old code called .serialize() on it
    (tmp_path / "t.cache").write_bytes(b"OLD")
    report = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", timing_cache=tmp_path / "t.cache")
    assert report.warnings == [f"TensorRT returned no timing cache after the build; {tmp_path / 't.cache'} was left "
                               "as it was"]
    assert (tmp_path / "m.engine").read_bytes() == b"ENGINE" and (tmp_path / "t.cache").read_bytes() == b"OLD"


def test_a_cache_written_by_another_build_meanwhile_is_merged_not_overwritten(fake, onnx_files, tmp_path):
    calls = fake("10.13.3")
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"MINE")
    builder = sys.modules["tensorrt"].Builder
    build = builder.build_serialized_network

    def build_while_another_saves(self, network, config):
        cache.write_bytes(b"THEIRS")  # a concurrent build finished first
        return build(self, network, config)

    builder.build_serialized_network = build_while_another_saves
    report = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", timing_cache=cache)
    assert ("combine", b"THEIRS", False) in calls and report.warnings == []
    assert cache.read_bytes() == b"THEIRS|MINE+tactics"  # both builds' tactics kept


def test_default_timing_cache_is_named_by_tensorrt_version_and_gpu(fake, tmp_path):
    fake("10.13.3")
    assert trt_export.default_timing_cache(tmp_path) == tmp_path / "trt-timing-10.13.3-sm90.cache"


def test_cli_keeps_the_verified_onnx_when_only_the_engine_fails(fake, run_cli, tmp_path):
    fake("10.13.3", build_ok=False)
    out = tmp_path / "exports" / "template_cnn"
    code, stdout, err = run_cli("export", "template_cnn", "--engine", "trt", "--batch-range", "1,4,8", "--out", out,
                                "--exporter", "torchscript")
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["template_cnn.onnx", "template_cnn.onnx.json"]
    manifest = json.loads((out / "template_cnn.onnx.json").read_text())
    assert "could not build an engine" in manifest["tensorrt_error"]
    last = err.strip().splitlines()[-1]
    assert "could not build an engine" in last and "template_cnn.onnx and its manifest were kept" in last


def test_tensorrt_logs_go_to_stderr_and_name_the_error(fake, onnx_files, tmp_path, capsys):
    fake("10.13.3", build_ok=False)
    with pytest.raises(EnvironmentProblem, match=r"could not build an engine for m.onnx \(fp32, batch 1,8,64\): "
                                                 r"Internal Error \(could not find any implementation"):
        export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine")
    out, err = capsys.readouterr()
    assert out == ""  # stdout carries --json records only
    assert "[TensorRT ERROR] Internal Error" in err


@pytest.mark.parametrize("version", ["10.13.3", "11.1.0"])
def test_fp32_is_strict_unless_tf32_is_asked(fake, onnx_files, tmp_path, version):
    calls = fake(version)
    strict = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "a.engine")
    assert ("clear_flag", "TF32") in calls and ("set_flag", "TF32") not in calls and not strict.tf32
    calls.clear()
    relaxed = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "b.engine", tf32=True)
    assert ("set_flag", "TF32") in calls and ("clear_flag", "TF32") not in calls
    assert relaxed.tf32 and relaxed.cache_key != strict.cache_key and "TF32 on" in relaxed.precision_plan["note"]


def test_a_refused_optimization_profile_is_an_error_not_a_silent_build(fake, onnx_files, tmp_path):
    calls = fake("10.13.3", profile_ok=False)  # add_optimization_profile returns -1
    with pytest.raises(UsageProblem, match=r"TensorRT refused optimization profile 0 \(min \(1, 3, 32, 32\)"):
        export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine")
    assert ("build",) not in calls and not (tmp_path / "m.engine").exists()


def test_one_profile_per_measured_batch(fake, onnx_files, tmp_path):
    calls = fake("10.13.3")
    report = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine", batch_range="1,8,64",
                                     opt_batches=[1, 8, 64])
    shapes = [c[1] for c in calls if c[0] == "profile"]
    assert [s[2][0] for s in shapes] == [8, 1, 64]  # the range's own profile first, then opt = each other batch
    assert all(s[1][0] == 1 and s[3][0] == 64 for s in shapes)
    assert [p["opt"][0] for p in report.profiles] == [8, 1, 64]
    single = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "s.engine", batch_range="1,8,64")
    assert single.cache_key != report.cache_key and len(single.profiles) == 1
    with pytest.raises(UsageProblem, match="outside the batch range 1..64"):
        export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "x.engine", batch_range="1,8,64", opt_batches=[128])


def test_manifest_records_the_tensorrt_wheel_and_cuda(fake, onnx_files, tmp_path, monkeypatch):
    fake("10.13.3")
    first = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine")
    assert first.tensorrt_flavour == "tensorrt-cu12 10.13.3" and first.cuda_version == "12.8"
    assert first.recipe_version == trt_export.BUILD_RECIPE_VERSION
    monkeypatch.setattr(trt_export, "cuda_stack", lambda: {**STACK, "flavour": "tensorrt-cu13 10.13.3",
                                                           "cuda_runtime": "13.0"})
    other = export.build_trt_engine(onnx_files / "m.onnx", tmp_path / "m.engine")
    assert not other.reused and other.cache_key != first.cache_key  # another wheel: rebuilt, not reused


def test_the_standin_refuses_what_the_real_bindings_refuse():
    trt = make_tensorrt("10.13.3")
    assert int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1 and int(trt.BuilderFlag.INT8) == 1
    assert int(trt.BuilderFlag.TF32) == 6 and int(make_tensorrt("11.1.0").NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    assert not hasattr(make_tensorrt("11.1.0").BuilderFlag, "FP16")
    with pytest.raises(TypeError):
        trt.Logger(severity=trt.Logger.WARNING)  # the argument is min_severity
    serialized = trt.Builder(trt.Logger()).build_serialized_network(None, None)
    assert not isinstance(serialized, bytes) and bytes(serialized) == b"ENGINE"  # an IHostMemory


def test_cli_export_tf32_reaches_the_build_and_needs_trt(fake, run_cli, tmp_path):
    calls = fake("10.13.3")
    out = tmp_path / "exports" / "template_cnn"
    code, _, err = run_cli("export", "template_cnn", "--engine", "trt", "--batch-range", "1,4,8", "--out", out,
                           "--exporter", "torchscript", "--tf32")
    assert code == 0, err
    assert ("set_flag", "TF32") in calls and json.loads((out / "template_cnn.engine.json").read_text())["tf32"] is True
    code, _, err = run_cli("export", "template_cnn", "--out", tmp_path / "x", "--tf32")
    assert code == 2 and "--tf32 applies to --engine trt" in err and not (tmp_path / "x").exists()
