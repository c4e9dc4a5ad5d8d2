"""Bad inputs and leftovers end as one line, a non-zero exit and nothing half-written.

Corrupt cache entries are rebuilt, corrupt .onnx files are one line, stale scratch folders are swept,
bad --device / one-class folders / tiny --subset are refused before training, a failed manifest write
keeps no ONNX file, and RBENCH_DEBUG keeps the exit code.
"""

from __future__ import annotations

import json
import re
import warnings

import click
import numpy as np
import pytest

from bench.errors import DataProblem
from tests.bench.conftest import make_synthetic_imagefolder


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default runs/, results/, exports/ folders never land in the checkout


def _one_line_error(code: int, err: str, expected_code: int) -> str:
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbench: error:"), err
    return lines[0]


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --------------------------------------------------------------------------- 1: cache entries and .onnx files


def _ort_runs(path, size: int = 8) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    (logits,) = session.run(None, {session.get_inputs()[0].name: x})
    assert logits.shape == (2, 10) and np.isfinite(logits).all()


def test_a_cut_short_cached_onnx_is_rebuilt_and_runs(tmp_path, monkeypatch, run_cli, results_dir):
    from bench.cache import CacheEntryRebuilt, entry_problem
    from bench.engines.sources import onnx_file, resolve_source

    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))
    path = onnx_file(resolve_source("resnet20", input_size=8))
    assert path.is_relative_to(tmp_path / "cache") and entry_problem(path) is None
    record = json.loads(path.with_name(path.name + ".json").read_text())
    assert record["files"][path.name]["bytes"] == path.stat().st_size

    path.write_bytes(path.read_bytes()[:1000])  # a killed copy, a full disk: cut short
    with pytest.warns(CacheEntryRebuilt, match="cut short|corrupt"):
        again = onnx_file(resolve_source("resnet20", input_size=8))
    assert again == path and entry_problem(path) is None
    _ort_runs(path)

    # Through the CLI: an emptied entry is rebuilt with one warning line, and the ort run works.
    size = path.stat().st_size
    path.write_bytes(b"")
    code, out, err = run_cli("latency", "resnet20", "--input-size", "8", "--engine", "ort", "--batch", "1",
                             "--warmup", "1", "--iters", "2", "--threads", "1", "--out", results_dir)
    assert code == 0, err
    assert [line for line in err.splitlines() if "rebuilding" in line] == [
        f"rbench: warning: cached ONNX file {path} is corrupt ({path.name} has 0 bytes, "
        f"{size} were written); rebuilding it"]
    assert "Traceback" not in err and entry_problem(path) is None


@pytest.mark.parametrize("damage, problem", [
    ("empty", "corrupt (m.onnx has 0 bytes"),
    ("truncate", "corrupt (m.onnx has 5 bytes"),
    ("flip", "sha256 mismatch"),
    ("no-record", "unverifiable (no record"),
    ("bad-record", "unverifiable (its record"),
    ("missing-side-file", "incomplete (m.onnx.data is missing)"),
])
def test_cache_entries_are_checked_by_size_then_sha256(tmp_path, damage, problem):
    from bench.cache import CacheEntryRebuilt, checked_entry, entry_problem, record_entry

    path = tmp_path / "m.onnx"
    path.write_bytes(b"0123456789" * 10)
    path.with_name("m.onnx.data").write_bytes(b"weights")
    record_entry(path)
    assert entry_problem(path) is None and checked_entry(path)
    record = path.with_name("m.onnx.json")
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncate":
        path.write_bytes(b"01234")
    elif damage == "flip":
        path.write_bytes(b"X" + path.read_bytes()[1:])  # same size: only the hash can tell
    elif damage == "no-record":
        record.unlink()
    elif damage == "bad-record":
        record.write_text("{not json")
    else:
        path.with_name("m.onnx.data").unlink()
    assert problem in entry_problem(path)
    with pytest.warns(CacheEntryRebuilt, match="rebuilding it"):
        assert not checked_entry(path)
    assert not path.exists() and not record.exists()  # discarded, to be made again


@pytest.mark.parametrize("content, message", [
    (b"", "is empty (0 bytes)"),
    (b"\x08\x08\x12\x07pytorch", "no graph"),  # cut short at a field boundary: parses, as nothing
])
def test_a_corrupt_user_onnx_is_one_data_problem(tmp_path, run_cli, results_dir, content, message):
    from bench.engines.sources import resolve_source

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(DataProblem, match=re.escape(message)) as info:
        resolve_source(str(bad))
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    code, _, err = run_cli("latency", bad, "--engine", "ort", "--out", results_dir)
    assert message in _one_line_error(code, err, 1)
    assert list(results_dir.iterdir()) == []


# --------------------------------------------------------------------------- 2: stale scratch folders


def _stale_work_dir(parent, name: str):
    from bench.atomic import LOCK_NAME

    folder = parent / name
    folder.mkdir(parents=True)
    (folder / LOCK_NAME).write_text("rbench work folder of process 999999\n")  # nobody holds its lock
    (folder / "resnet20.onnx").write_bytes(b"half an export")
    return folder


def test_the_next_export_removes_stale_stage_folders_and_keeps_foreign_ones(run_cli, tmp_path):
    out = tmp_path / "out"
    stale = _stale_work_dir(out, ".resnet20.onnx.k1ll3d")
    stale_probe = _stale_work_dir(out, ".rbench-write-test.x9")
    foreign = out / ".resnet20.onnx.mine"  # hidden, same pattern, but no marker: not provably rbench's
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, _, err = run_cli("export", "resnet20", "--out", out, "--exporter", "torchscript")
    assert code == 0, err
    assert not stale.exists() and not stale_probe.exists()
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert _files(out) == [".resnet20.onnx.mine", ".resnet20.onnx.mine/notes.txt", "resnet20.onnx",
                           "resnet20.onnx.json"]


def test_the_next_module_export_removes_stale_stage_folders(tmp_path):
    import torch

    from bench.engines.sources import onnx_file, resolve_source

    work = tmp_path / "work"
    stale = _stale_work_dir(work, ".TinyNet-fp32.onnx.k1ll3d")
    foreign = work / ".other"
    foreign.mkdir()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    path = onnx_file(resolve_source(net, input_size=8, name="TinyNet"), workdir=work)
    assert path == work / "TinyNet-fp32.onnx" and path.is_file()
    assert not stale.exists() and foreign.is_dir()
    assert sorted(p.name for p in work.iterdir()) == [".other", "TinyNet-fp32.onnx"]  # no stage left either


# --------------------------------------------------------------------------- 3-5: train refuses bad input early


@pytest.mark.parametrize("device", ["tpu", "mps", "meta", "cpu:1", "gpu"])
def test_train_rejects_unsupported_devices(run_cli, results_dir, device):
    code, _, err = run_cli("train", "resnet20", "--dataset", "digits", "--subset", "100", "--device", device,
                           "--results", results_dir, "-q")
    line = _one_line_error(code, err, 2)
    assert f"--device {device} is not supported" in line and "cpu" in line and "cuda" in line
    assert list(results_dir.iterdir()) == [] and not (results_dir.parent / "runs").exists()


def test_train_config_rejects_unsupported_devices():
    from bench.errors import UsageProblem
    from bench.train.loop import TrainConfig, parse_device

    assert parse_device("CUDA:1") == "cuda:1" and parse_device("cpu") == "cpu"
    with pytest.raises(UsageProblem, match="--device mps is not supported"):
        TrainConfig(device="mps")


def test_a_one_class_imagefolder_is_refused(run_cli, tmp_path, results_dir):
    root = make_synthetic_imagefolder(tmp_path / "one", per_split=(("train", 4), ("val", 2)), classes=("cat",))
    code, _, err = run_cli("train", "resnet20", "--dataset", f"imagefolder:{root}", "--out", tmp_path / "run",
                           "--results", results_dir, "-q")
    line = _one_line_error(code, err, 1)
    assert "at least 2 classes" in line and "'cat'" in line and str(root / "train") in line
    assert list(results_dir.iterdir()) == [] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("subset", ["2", "5", "19"])
def test_a_subset_too_small_is_refused_not_blamed_on_the_lr(run_cli, tmp_path, results_dir, subset):
    code, _, err = run_cli("train", "resnet20", "--dataset", "digits", "--subset", subset, "--input-size", "8",
                           "--out", tmp_path / "run", "--results", results_dir, "-q")
    line = _one_line_error(code, err, 2)
    assert f"--subset {subset} is too small" in line and "--subset 20 or more" in line and "lr" not in line
    assert list(results_dir.iterdir()) == [] and not (tmp_path / "run").exists()


def test_the_smallest_subset_leaves_every_split_an_image():
    from bench.data import load_dataset
    from bench.train.loop import check_splits

    bundle = load_dataset("digits", subset=20, input_size=8)
    check_splits(bundle)
    assert len(bundle.val) >= 1 and len(bundle.train) >= bundle.num_classes and len(bundle.test) >= 1


# --------------------------------------------------------------------------- 7: the manifest write


def test_a_failed_manifest_write_keeps_no_onnx(run_cli, tmp_path, monkeypatch):
    import bench.atomic

    def full_disk(path, text, encoding="utf-8"):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bench.atomic, "write_text", full_disk)
    out = tmp_path / "out"
    code, _, err = run_cli("export", "resnet20", "--out", out, "--exporter", "torchscript")
    line = _one_line_error(code, err, 1)
    assert "cannot write the manifest" in line and "No space left on device" in line
    assert _files(out) == []  # the ONNX file went with its manifest


def test_a_folder_in_the_manifests_place_fails_before_the_export(run_cli, tmp_path):
    out = tmp_path / "out"
    (out / "resnet20.onnx.json").mkdir(parents=True)
    code, _, err = run_cli("export", "resnet20", "--out", out, "--exporter", "torchscript")
    assert "resnet20.onnx.json: a folder of that name is in the way" in _one_line_error(code, err, 1)
    assert _files(out) == ["resnet20.onnx.json"]


# --------------------------------------------------------------------------- 8: RBENCH_DEBUG


@pytest.mark.parametrize("args", [("train", "resnet20", "--device", "tpu"), ("export", "resnet2o"),
                                  ("list", "--no-such-option")])
def test_debug_prints_the_traceback_and_keeps_the_exit_code(run_cli, monkeypatch, args):
    monkeypatch.delenv("RBENCH_DEBUG", raising=False)
    code, _, err = run_cli(*args)
    assert code == 2 and "Traceback" not in err
    monkeypatch.setenv("RBENCH_DEBUG", "1")
    debug_code, _, debug_err = run_cli(*args)
    assert debug_code == 2
    assert "Traceback" in debug_err and debug_err.strip().splitlines()[-1] == err.strip()


@click.command("warn")
def warn_command():
    """Emits one rbench warning (for the test below)."""
    from bench.cache import CacheEntryRebuilt

    warnings.warn("cached thing is corrupt; rebuilding it", CacheEntryRebuilt, stacklevel=1)


def test_rbench_warnings_are_one_line(run_cli, monkeypatch):
    import bench.cli

    monkeypatch.setitem(bench.cli.COMMANDS, "warn", (f"{__name__}:warn_command", "warn"))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, _, err = run_cli("warn")
    assert code == 0 and err == "rbench: warning: cached thing is corrupt; rebuilding it\n"
