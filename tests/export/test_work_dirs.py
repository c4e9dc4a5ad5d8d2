"""Locked scratch folders: removed after use, swept when their process died, never taken from a live one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from export import _atomic
from export._atomic import LOCK_NAME, remove_stale_work_dirs, work_dir

ROOT = Path(__file__).resolve().parents[2]

# Makes a work folder, prints its path, then sleeps until killed.
_HOLDER = """
import sys, time
from export._atomic import work_dir
with work_dir(sys.argv[1], "exp") as folder:
    print(folder, flush=True)
    time.sleep(120)
"""


def _holder(parent: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(parent)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def _fake_stale(parent: Path, name: str, marker: bool = True) -> Path:
    """A folder as a killed process leaves it: the marker, but nobody holding its lock."""
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "engine.plan.tmp").write_bytes(b"half")
    if marker:
        (folder / LOCK_NAME).write_text("")
    return folder


def test_work_dir_exists_with_marker_and_is_removed_after(tmp_path):
    with work_dir(tmp_path / "out", "exp") as folder:
        assert folder.parent == tmp_path / "out" and folder.name.startswith(".exp.")
        assert (folder / LOCK_NAME).is_file()
        (folder / "model.onnx").write_bytes(b"x")
    assert not folder.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_work_dir_is_removed_after_an_exception(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with work_dir(tmp_path, "exp") as folder:
            (folder / "half").write_bytes(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_live_work_dir_is_never_swept(tmp_path):
    """Even from the same process: the lock, not the process id, says the folder is in use."""
    with work_dir(tmp_path, "exp") as folder:
        assert remove_stale_work_dirs(tmp_path) == []
        assert remove_stale_work_dirs(tmp_path, "exp") == []
        assert (folder / LOCK_NAME).is_file()


def test_killed_process_folder_is_swept_live_one_kept(tmp_path):
    """SIGKILL skips every cleanup: the folder stays, its lock dies with the process, the sweep removes it."""
    live, live_folder = _holder(tmp_path)
    dead, dead_folder = _holder(tmp_path)
    try:
        dead.kill()
        dead.wait(timeout=30)
        assert dead_folder.is_dir() and live_folder.is_dir()
        assert remove_stale_work_dirs(tmp_path, "other") == []  # another prefix: not ours to sweep
        assert remove_stale_work_dirs(tmp_path, "exp") == [dead_folder]
        assert not dead_folder.exists() and (live_folder / LOCK_NAME).is_file()
        assert remove_stale_work_dirs(tmp_path) == []
    finally:
        live.kill()
        live.wait(timeout=30)
        live.stdout.close()
        dead.stdout.close()


def test_sweep_removes_only_marked_hidden_unlocked_folders(tmp_path):
    stale = _fake_stale(tmp_path, ".exp.abc123")
    other_stale = _fake_stale(tmp_path, ".train.xyz")
    unmarked = _fake_stale(tmp_path, ".exp.nomarker", marker=False)
    visible = _fake_stale(tmp_path, "exp.visible")
    (tmp_path / ".exp.file").write_text("a file, not a folder")
    (tmp_path / ".exp.link").symlink_to(_fake_stale(tmp_path / "elsewhere", ".exp.target"))
    assert remove_stale_work_dirs(tmp_path, "exp") == [stale]
    assert remove_stale_work_dirs(tmp_path) == [other_stale]
    assert unmarked.is_dir() and visible.is_dir() and (tmp_path / ".exp.file").is_file()
    assert (tmp_path / "elsewhere" / ".exp.target" / LOCK_NAME).is_file()


def test_sweep_of_a_missing_folder_is_empty(tmp_path):
    assert remove_stale_work_dirs(tmp_path / "missing") == []
    (tmp_path / "file").write_text("")
    assert remove_stale_work_dirs(tmp_path / "file") == []


def test_without_locks_work_dirs_work_and_nothing_is_swept(tmp_path, monkeypatch):
    """With no way to tell a live folder from a dead one, the sweep removes nothing."""
    monkeypatch.setattr(_atomic, "fcntl", None)
    monkeypatch.setattr(_atomic, "msvcrt", None)
    stale = _fake_stale(tmp_path, ".exp.abc")
    with work_dir(tmp_path, "exp") as folder:
        assert (folder / LOCK_NAME).is_file()
    assert not folder.exists()
    assert remove_stale_work_dirs(tmp_path) == [] and stale.is_dir()


def test_export_imports_nothing_from_bench_but_its_errors():
    code = ("import sys, export._atomic; "
            "sys.exit(any(m.split('.')[0] == 'bench' and m not in ('bench', 'bench.errors') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
