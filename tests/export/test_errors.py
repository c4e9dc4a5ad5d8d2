"""export stands apart: its errors (with exit codes) subclass rbench's root error, its own atomic writes,
and of bench it imports the errors alone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

import bench.errors
from bench.errors import RbenchError
from export import _atomic
from export.errors import (
    DataProblem,
    EnvironmentProblem,
    ExportError,
    MissingDependency,
    ParityFailure,
    UsageProblem,
)


def test_export_imports_of_bench_only_its_root_errors():
    code = ("import sys, export, export.onnx, export.tensorrt, export.checkpoint, export.errors;"
            "print(sorted(m for m in sys.modules if m == 'bench' or m.startswith('bench.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['bench', 'bench.errors']"


@pytest.mark.parametrize("error, code", [
    (ExportError, 1), (UsageProblem, 2), (EnvironmentProblem, 1), (DataProblem, 1), (ParityFailure, 1),
])
def test_exit_codes(error, code):
    assert issubclass(error, ExportError) and error.exit_code == code


@pytest.mark.parametrize("error, kind", [
    (ExportError, RbenchError), (UsageProblem, bench.errors.UsageProblem),
    (EnvironmentProblem, bench.errors.EnvironmentProblem), (MissingDependency, bench.errors.MissingDependency),
    (DataProblem, bench.errors.DataProblem), (ParityFailure, RbenchError),
])
def test_export_errors_are_rbench_errors_of_their_kind(error, kind):
    assert issubclass(error, kind) and error.exit_code == kind.exit_code


def test_missing_dependency_names_what_to_install():
    error = MissingDependency("TensorRT", "pip install 'rbench[trt]'")
    assert isinstance(error, EnvironmentProblem) and error.exit_code == 1
    assert str(error) == "TensorRT is not available: pip install 'rbench[trt]'"
    assert error.what == "TensorRT" and error.install_hint == "pip install 'rbench[trt]'"


def test_the_cli_prints_export_errors_as_one_line_with_their_exit_code(run_cli, tmp_path):
    code, _, err = run_cli("export", "resnet20", "--opset", "9", "--out", tmp_path / "out")
    assert code == UsageProblem.exit_code and err.strip() == (
        "rbench: error: opset 9 is too old: rbench exports opset 13 to 23 (dynamo exporter 18+, TorchScript up to 20)")


def test_atomic_write_replaces_whole_files_with_an_ordinary_mode(tmp_path):
    target = tmp_path / "sub" / "engine.json"
    _atomic.write_text(target, "first\n")
    _atomic.write_bytes(target, b"second\n")
    assert target.read_bytes() == b"second\n"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert sorted(p.name for p in target.parent.iterdir()) == ["engine.json"]


def test_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "model.engine"
    target.write_bytes(b"old")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_atomic.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        _atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.engine"]
