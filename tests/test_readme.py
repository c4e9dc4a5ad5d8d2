"""README's Python example of measuring a module the reader defines runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _snippet(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    matches = [b for b in blocks if marker in b]
    assert len(matches) == 1, f"README should hold one python block with {marker!r}"
    return matches[0]


def test_measure_your_own_module_snippet(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path))
    code = _snippet("class TinyNet").replace("iters=20", "iters=2")
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in lines[:4]] == [["torch", "1"], ["ort", "1"], ["torch", "8"], ["ort", "8"]]
    assert int(lines[4]) > 0
