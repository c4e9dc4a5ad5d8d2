"""Atomic writes: a failure inside the block leaves neither the target nor a temporary behind."""

from __future__ import annotations

import pytest

from bench import atomic


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "model.onnx"
    with atomic.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".onnx" and tmp != target
        tmp.write_bytes(b"ok")
    assert target.read_bytes() == b"ok"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_append_line_appends_whole_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    atomic.append_line(path, '{"a": 1}')
    atomic.append_line(path, '{"a": 2}\n')
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'
    with pytest.raises(ValueError):
        atomic.append_line(path, "two\nlines")
    assert path.read_text().count("\n") == 2


def test_results_get_ordinary_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "m.json", "{}")
        assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)


def test_writer_and_work_folder_helpers_are_shared_with_export():
    """bench and export write, sweep and lock the same way: one implementation in export, re-exported by bench."""
    from export import _atomic

    for name in ("LOCK_NAME", "work_dir", "remove_stale_work_dirs", "atomic_path", "write_bytes", "write_text"):
        assert name in atomic.__all__
        assert getattr(atomic, name) is getattr(_atomic, name)
