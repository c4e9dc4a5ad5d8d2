"""The one folder where rbench keeps what it can rebuild: exported ONNX files, engines, counts, peaks.

`$RBENCH_CACHE` names it; otherwise `$XDG_CACHE_HOME/rbench`, else `~/.cache/rbench`. Deleting it
only costs time.

A cached file is trusted only with its record (`<file>.json`, written after the file: size and sha256):
`checked_entry` verifies both before reuse, and a truncated, changed or unrecorded file is made again
(with a `CacheEntryRebuilt` warning) instead of breaking every later run.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

from export.onnx import sha256_files

CACHE_ENV = "RBENCH_CACHE"


def cache_root() -> Path:
    """The cache folder (not created here: writers create what they need)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rbench"


# --------------------------------------------------------------------------- checked entries

#: A cache entry's record: `<file>.json` beside it, written after the file, holding its size and sha256.
RECORD_SCHEMA = "rbench.cache-entry/1"


class CacheEntryRebuilt(UserWarning):
    """A cached file was missing its record, cut short or changed, so it is made again (the CLI shows one line)."""


def _record_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.json")


def _side_files(path: Path) -> list[Path]:
    """The file and the side files it needs (an ONNX file's `<name>.data` weights, when there is one)."""
    data = path.with_name(f"{path.name}.data")
    return [path, data] if data.is_file() else [path]


def record_entry(path: str | os.PathLike) -> None:
    """Write `path`'s record (size and sha256 of it and its side files), atomically, after `path` is complete."""
    from bench.atomic import write_text

    path = Path(path)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_files(p)} for p in _side_files(path)}
    write_text(_record_path(path), json.dumps({"schema": RECORD_SCHEMA, "files": files}, indent=1) + "\n")


def entry_problem(path: str | os.PathLike) -> str | None:
    """None when `path` is a complete cache entry (its record exists and every size and sha256 in it matches),
    else what is wrong, as a phrase ("cut short: 120 of 1164116 bytes", ...). The size is checked first."""
    path = Path(path)
    record_path = _record_path(path)
    if not record_path.is_file():
        return f"unverifiable (no record {record_path.name} of its size and sha256)"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        files = {str(name): (int(entry["bytes"]), str(entry["sha256"])) for name, entry in record["files"].items()}
        if record.get("schema") != RECORD_SCHEMA or path.name not in files:
            raise ValueError(record.get("schema"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"unverifiable (its record {record_path.name} is unreadable)"
    for name, (size, _) in files.items():
        file = path.with_name(name)
        have = file.stat().st_size if file.is_file() else None
        if have is None:
            return f"incomplete ({name} is missing)"
        if have != size:
            return f"corrupt ({name} has {have} bytes, {size} were written)"
    for name, (_, sha) in files.items():
        if sha256_files(path.with_name(name)) != sha:
            return f"corrupt ({name} differs from what was written: sha256 mismatch)"
    return None


def discard_entry(path: str | os.PathLike) -> None:
    """Remove a bad cache entry: its record first (so a crash midway leaves an unverifiable file, never a
    record vouching for a missing one), then the file and its side files."""
    path = Path(path)
    for file in (_record_path(path), path, path.with_name(f"{path.name}.data")):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            file.unlink()


def checked_entry(path: str | os.PathLike, what: str = "cached file") -> bool:
    """True when the cache entry at `path` exists and is complete; a bad one is discarded with a
    `CacheEntryRebuilt` warning (so the caller makes it again) and False is returned."""
    path = Path(path)
    if not path.exists():
        return False
    problem = entry_problem(path)
    if problem is None:
        return True
    warnings.warn(f"{what} {path} is {problem}; rebuilding it", CacheEntryRebuilt, stacklevel=3)
    discard_entry(path)
    return False
