"""Appends that lose nothing: concurrent writers, a crash's partial line, and reading damaged files."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import atomic
from bench.errors import DataProblem
from bench.records.io import read_records
from export import _atomic

WRITERS, APPENDS = 4, 200

# Each writer waits for the go file so that all four append at the same time; the padding makes a
# line long enough that unlocked writers would visibly interleave or overwrite each other.
_WRITER = """
import json, sys, time
from pathlib import Path
from bench.atomic import append_line
path, go, writer, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
while not go.exists():
    time.sleep(0.002)
for i in range(count):
    append_line(path, json.dumps({"writer": writer, "i": i, "pad": "x" * 1500}))
"""


def test_concurrent_appends_keep_every_line(tmp_path):
    """4 processes x 200 appends to one file: exactly 800 whole, distinct lines (the old copy-and-rename kept 219)."""
    path, go = tmp_path / "r.jsonl", tmp_path / "go"
    root = Path(__file__).resolve().parents[3]
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(go), str(w), str(APPENDS)], cwd=root)
             for w in range(WRITERS)]
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    lines = path.read_bytes().split(b"\n")
    assert lines.pop() == b""  # ends in a newline
    assert len(lines) == WRITERS * APPENDS
    seen = {(r["writer"], r["i"]) for r in map(json.loads, lines)}
    assert seen == {(w, i) for w in range(WRITERS) for i in range(APPENDS)}
    assert len(read_records(path)) == WRITERS * APPENDS


def test_partial_last_line_is_set_aside_before_the_next_append(tmp_path):
    """A crash's unterminated fragment goes to a .partial-* sidecar with a warning; the new line starts whole."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2, "b')
    with pytest.warns(RuntimeWarning, match=r"partial line .*moved it to r\.jsonl\.partial-"):
        atomic.append_line(path, '{"a": 3}')
    assert path.read_text() == '{"a": 1}\n{"a": 3}\n'
    [sidecar] = tmp_path.glob("r.jsonl.partial-*")
    assert sidecar.read_bytes() == b'{"a": 2, "b'
    assert read_records(path) == [{"a": 1}, {"a": 3}]


def test_fragment_longer_than_a_read_chunk_and_file_without_newline(tmp_path, monkeypatch):
    """The last newline is found however far back it is; a file with no newline at all is all fragment."""
    monkeypatch.setattr(atomic, "_CHUNK", 4)
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"first\n" + b"y" * 37)
    with pytest.warns(RuntimeWarning):
        atomic.append_line(path, "second")
    assert path.read_bytes() == b"first\nsecond\n"
    only = tmp_path / "only.jsonl"
    only.write_bytes(b"no newline here")
    with pytest.warns(RuntimeWarning):
        atomic.append_line(only, "whole")
    assert only.read_bytes() == b"whole\n"
    kept = sorted(p.read_bytes() for p in tmp_path.glob("*.partial-*"))
    assert kept == [b"no newline here", b"y" * 37]


def test_append_waits_for_the_lock_and_follows_a_replaced_file(tmp_path):
    """An append blocks while another holder has the lock, and lands in the file that is at `path` by then."""
    path = tmp_path / "r.jsonl"
    path.write_text("old\n")
    with open(path, "rb") as holder:
        assert _atomic.try_lock(holder.fileno(), blocking=False)
        worker = threading.Thread(target=atomic.append_line, args=(path, "new"))
        worker.start()
        time.sleep(0.2)
        assert worker.is_alive() and path.read_text() == "old\n"
        _atomic.write_text(path, "replaced\n")  # a rename onto path while the appender waits on the old file
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert path.read_text() == "replaced\nnew\n"


def test_append_without_any_lock_still_appends(tmp_path, monkeypatch):
    """On a platform with neither fcntl nor msvcrt the append runs unlocked rather than failing."""
    monkeypatch.setattr(_atomic, "fcntl", None)
    monkeypatch.setattr(_atomic, "msvcrt", None)
    path = tmp_path / "r.jsonl"
    atomic.append_line(path, "a")
    atomic.append_line(path, "b")
    assert path.read_text() == "a\nb\n"


def test_read_records_skips_an_unfinished_last_line_with_a_warning(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    with pytest.warns(RuntimeWarning, match=r"r\.jsonl:3 is an unfinished last line"):
        assert read_records(path) == [{"a": 1}, {"a": 2}]
    assert path.read_text().endswith('{"a": ')  # reading never changes the file


@pytest.mark.parametrize("body, line", [
    ('{"a": 1}\n{"a": \n{"a": 3}\n', 2),  # truncated in the middle
    ('{"a": 1}\n\n[1, 2]\n', 3),  # JSON, but not a record
    ('{"a": 1}\n{"a": 2}\nnot json\n', 3),  # a whole last line that is garbage is corruption, not a partial write
])
def test_read_records_names_the_corrupt_line(tmp_path, body, line):
    path = tmp_path / "r.jsonl"
    path.write_text(body)
    with pytest.raises(DataProblem) as info:
        read_records(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line} ") and "\n" not in message


def test_read_records_of_a_bad_encoding_is_a_data_problem(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n\xff\xfe\n')
    with pytest.raises(DataProblem, match=r"r\.jsonl:2 "):
        read_records(path)


def test_read_records_of_empty_or_missing_file_is_empty(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_bytes(b"\n\n")
    assert read_records(tmp_path / "empty.jsonl") == []
    assert read_records(tmp_path / "blank.jsonl") == []
    assert read_records(tmp_path / "missing.jsonl") == []
