"""Atomic, durable file output for export: a crash never leaves a half-written engine, manifest or cache.

Also the file locks and locked scratch folders (`work_dir`, `remove_stale_work_dirs`) that let several
rbench processes share one output folder without losing or deleting each other's work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:
    msvcrt = None  # type: ignore[assignment]

#: The marker and lock file inside every `work_dir` folder.
LOCK_NAME = ".rbench-lock"

#: Windows byte-range locks are mandatory: lock a byte far past any real data so readers are never blocked.
_MSVCRT_LOCK_OFFSET = 2**62


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    # The rename lives in the folder's entry table: without this a power cut can undo it.
    with contextlib.suppress(OSError):  # some file systems (and Windows) cannot open a folder for fsync
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the real suffix unless `suffix` is given (some writers, e.g. torch.onnx,
    look at it). Readers of `path` see the old file or the new one, never a mix. On an exception the
    temporary file is removed and `path` is untouched; after the rename the folder is fsynced, so the
    new name survives a power cut. The folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target: os.replace is atomic only within one file system.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix if suffix is None else suffix,
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            # mkstemp makes 0600 files; give the result the mode an ordinary open() would.
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically: a temporary file in the same folder, flushed and fsynced, then renamed
    (see `atomic_path`)."""
    with atomic_path(path, suffix=".tmp") as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (see `write_bytes`)."""
    write_bytes(path, text.encode(encoding))


# --------------------------------------------------------------------------- locks


def try_lock(fd: int, *, blocking: bool = True) -> bool:
    """Take an exclusive lock on the open file `fd`; False when `blocking=False` and someone else holds it.

    flock where the platform has it (the lock belongs to this open file and ends when it is closed, or
    when the process dies, so a killed process never leaves a lock behind); msvcrt byte-range locks on
    Windows. Where neither exists the lock is granted at once: rbench then runs as before, unlocked,
    rather than refusing to run.
    """
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except (BlockingIOError, PermissionError):
            return False
        return True
    if msvcrt is not None:  # pragma: no cover - Windows
        os.lseek(fd, _MSVCRT_LOCK_OFFSET, os.SEEK_SET)
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not blocking:
                    return False
                # LK_LOCK gives up after ten seconds; a results file may stay busy longer than that.
                with contextlib.suppress(OSError):
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                    return True
    return True


def unlock(fd: int) -> None:
    """Release a lock taken with `try_lock` (closing `fd` releases it too)."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    elif msvcrt is not None:  # pragma: no cover - Windows
        os.lseek(fd, _MSVCRT_LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def can_prove_unlocked() -> bool:
    """Whether a failed-to-block lock attempt means "no live process holds it" on this platform."""
    return fcntl is not None or msvcrt is not None


# --------------------------------------------------------------------------- work folders


def _new_lock_file(folder: Path) -> int:
    """Create `folder/LOCK_NAME` already locked and return its descriptor.

    The file is made and locked under a temporary name, then renamed: a sweeper never sees the
    marker without its lock, so it cannot mistake a folder being set up for a dead one.
    """
    fd, tmp = tempfile.mkstemp(prefix=".rbench-lock.", dir=folder)
    try:
        try_lock(fd)
        os.write(fd, f"rbench work folder of process {os.getpid()}\n".encode())
        os.replace(tmp, folder / LOCK_NAME)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def work_dir(parent: str | os.PathLike, prefix: str) -> Iterator[Path]:
    """A hidden scratch folder `parent/.{prefix}.XXXX/` (tempfile.mkdtemp) holding an exclusive flock on
    its `.rbench-lock` file while the block runs; the folder is removed on exit, success or failure.

    A folder left behind by a killed process is recognised later by its marker and unheld lock
    (see `remove_stale_work_dirs`). The folder sits in `parent` so that results renamed out of it
    stay on one file system. A removal that fails is not an error: the marked folder is swept later.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{prefix}.", dir=parent))
    fd = None
    try:
        fd = _new_lock_file(folder)
        yield folder
    finally:
        # Remove while still locked, so no sweeper races us; again after closing, for Windows,
        # which cannot delete a file that is still open.
        shutil.rmtree(folder, ignore_errors=True)
        if fd is not None:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)


def _is_stale(folder: Path) -> bool:
    """True when `folder` has the rbench marker and no live process holds its lock."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(folder / LOCK_NAME, flags)
    except OSError:  # no marker (or not a plain file): not provably ours
        return False
    try:
        if not try_lock(fd, blocking=False):
            return False
        # Nobody can take this lock again: work_dir never reuses a folder. Unlocked at close.
        return True
    finally:
        os.close(fd)


def remove_stale_work_dirs(parent: str | os.PathLike, prefix: str | None = None) -> list[Path]:
    """Remove hidden work folders in `parent` (names starting with '.', optionally '.{prefix}.') that contain
    LOCK_NAME and whose lock no live process holds (try a non-blocking flock). Never removes a folder
    without the marker (rbench cannot prove it wrote it). Returns the removed paths; missing parent -> [].

    On a platform with no lock at all nothing is removed: a live folder could not be told from a dead one.
    """
    if not can_prove_unlocked():  # pragma: no cover - exotic platforms
        return []
    start = f".{prefix}." if prefix is not None else "."
    try:
        entries = sorted(Path(parent).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        if not entry.name.startswith(start) or entry.is_symlink() or not entry.is_dir():
            continue
        if _is_stale(entry):
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                removed.append(entry)
    return removed
