"""README and the docs/ site: the documented Python example runs as printed, the README stays a front page,
and every page and repository file they point at exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

#: The README is the front page; the reference lives in docs/.
README_MAX_LINES = 250

#: Where the example of measuring a module the reader defines is printed.
TINYNET_PAGES = [README, DOCS / "sources.md"]


def _snippet(page: Path, marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    matches = [b for b in blocks if marker in b]
    assert len(matches) == 1, f"{page.name} should hold one python block with {marker!r}"
    return matches[0]


@pytest.mark.parametrize("page", TINYNET_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_measure_your_own_module_snippet(page, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path))
    code = _snippet(page, "class TinyNet").replace("iters=20", "iters=2")
    exec(compile(code, str(page), "exec"), {"__name__": "readme"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in lines[:4]] == [["torch", "1"], ["ort", "1"], ["torch", "8"], ["ort", "8"]]
    assert int(lines[4]) > 0


def test_readme_is_a_front_page():
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference material to docs/ (at most {README_MAX_LINES})"


def test_readme_links_point_at_files_that_exist():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert any(t.startswith("docs/") for t in local)
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_every_docs_page_is_in_the_nav():
    # `mkdocs build --strict` (nox -s docs) checks this too; this keeps it checked where mkdocs is not installed.
    nav = set(re.findall(r"^\s*-\s*[^:\n]+:\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert nav == pages, f"only in the nav: {sorted(nav - pages)}; not in the nav: {sorted(pages - nav)}"
