"""Atomic file output: a crash or a bad input never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# One careful writer (temp file, fsync, rename, fsync the folder) for export and bench alike.
from export._atomic import _umask, write_bytes, write_text

__all__ = ["append_line", "atomic_path", "write_bytes", "write_text"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the real suffix (some writers, e.g. torch.onnx, look at it).
    On an exception the temporary file, and any `.data` side file a writer put next to it,
    are removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
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


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a text file so that readers see either the old file or the new one.

    The file is rewritten through a temporary copy and renamed, so an interrupted append
    never leaves a half line (an O_APPEND write can be cut short by a crash).
    """
    path = Path(path)
    if "\n" in line.rstrip("\n"):
        raise ValueError("append_line takes a single line")
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    write_bytes(path, old + line.rstrip("\n").encode() + b"\n")
