"""Atomic file output: a crash or a bad input never leaves a half-written file behind, and
processes that share a file or a folder lose nothing of each other's."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

# One careful writer (temp file, fsync, rename, fsync the folder) and one kind of lock for export and bench alike:
# export sits below bench and imports nothing from it, so the writer lives there and bench adds appending.
from export._atomic import (
    LOCK_NAME,
    _fsync_folder,
    atomic_path,
    remove_stale_work_dirs,
    try_lock,
    unlock,
    work_dir,
    write_bytes,
    write_text,
)

__all__ = ["LOCK_NAME", "append_line", "atomic_path", "remove_stale_work_dirs", "work_dir", "write_bytes", "write_text"]

#: How far back `append_line` reads at a time when it looks for the last whole line.
_CHUNK = 64 * 1024


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a text file; safe when many processes append to the same file at once.

    Under an exclusive lock on the file, the line and its newline go out in one O_APPEND write,
    then flush and fsync: appenders never overwrite each other (rewriting the file through a copy,
    as rbench once did, lost records when two runs shared `--out`). The newline is the commit mark:
    a file that does not end in one holds a fragment of a write that was cut short (a crash, a
    full disk). That fragment is not built upon: it is moved to a sidecar `<name>.partial-<time>`
    beside the file, with a warning, and the file is cut back to its last whole line.
    """
    path = Path(path)
    if "\n" in line.rstrip("\n"):
        raise ValueError("append_line takes a single line")
    data = line.rstrip("\n").encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked_for_append(path) as fd:
        _set_aside_partial_line(path, fd)
        first = os.fstat(fd).st_size == 0
        _write_all(fd, data)
        os.fsync(fd)
    if first:  # a new file's name lives in the folder: make it durable too
        _fsync_folder(path.parent)


@contextlib.contextmanager
def _locked_for_append(path: Path) -> Iterator[int]:
    """An O_APPEND descriptor of `path`, exclusively locked, that is still the file at `path`.

    A writer that replaced the file by rename while we waited for the lock would leave us holding
    the old, unlinked copy; appending there would lose the line, so we open again.
    """
    # Read as well as write: a partial last line has to be read before it is set aside.
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
    while True:
        fd = os.open(path, flags, 0o666)
        try:
            try_lock(fd)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                try:
                    yield fd
                finally:
                    unlock(fd)
                return
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data`: one write normally, more only if the system cuts it short (we hold the lock)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _set_aside_partial_line(path: Path, fd: int) -> None:
    """If the locked file `fd` does not end in a newline, move its unterminated tail to a sidecar file.

    The sidecar is written (and fsynced) before the file is truncated, so a crash in between
    leaves the fragment in two places rather than in none.
    """
    size = os.fstat(fd).st_size
    if size == 0 or _read_at(fd, size - 1, 1) == b"\n":
        return
    keep = _end_of_last_line(fd, size)
    fragment = _read_at(fd, keep, size - keep)
    sidecar = _sidecar_name(path)
    write_bytes(sidecar, fragment)
    os.ftruncate(fd, keep)
    warnings.warn(
        f"{path} ended in a partial line ({len(fragment)} bytes from an interrupted write); "
        f"moved it to {sidecar.name} and appended after the last whole line",
        RuntimeWarning, stacklevel=3,  # the caller of append_line
    )


def _read_at(fd: int, offset: int, size: int) -> bytes:
    """`size` bytes of `fd` from `offset` (the O_APPEND writes that follow ignore the file position)."""
    os.lseek(fd, offset, os.SEEK_SET)
    chunks = []
    while size > 0:
        chunk = os.read(fd, size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _end_of_last_line(fd: int, size: int) -> int:
    """The offset just past the last newline of `fd` (0 when it has none), read backwards in chunks."""
    end = size
    while end > 0:
        start = max(0, end - _CHUNK)
        newline = _read_at(fd, start, end - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _sidecar_name(path: Path) -> Path:
    """A new `<name>.partial-<UTC time>` beside `path`; its name does not end in .jsonl, so readers skip it."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    sidecar = path.with_name(f"{path.name}.partial-{stamp}")
    n = 1
    while sidecar.exists():
        n += 1
        sidecar = path.with_name(f"{path.name}.partial-{stamp}-{n}")
    return sidecar
