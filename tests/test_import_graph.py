"""The packages' shape: no import circle among bench/, export/ and nets/, no oversized module.

The import graph is read from the source with `ast`, so an import inside a function counts as much as
one at the top of a file: a circle hidden in a function still ties two floors together.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "export", "nets")
MAX_LINES = 600
MAX_BENCH_TOP_MODULES = 8  # bench/'s own modules beside its sub-packages (facade, CLI, errors, ...)


def _modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES (a package is its __init__.py)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _imported_names(tree: ast.AST, package: str) -> set[str]:
    """Every dotted name an `import` or `from` statement anywhere in `tree` may load; `package` resolves
    relative imports. `from pkg import name` yields both `pkg` and `pkg.name` (name may be a submodule)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of PACKAGES it imports (a name resolves to its longest known module prefix)."""
    modules = _modules(root)
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for target in _imported_names(ast.parse(path.read_text(), str(path)), package):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
    return sorted(cycles)


def _a_circle(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete circle through the component's first module (breadth-first), for the failure message."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return component


def test_the_graph_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "bench"
    (pkg / "sub").mkdir(parents=True)
    for name in ("export", "nets"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "sub" / "b.py").write_text("from bench.sub.a import f\n")
    (pkg / "c.py").write_text("def g():\n    import nets\n")
    graph = import_graph(tmp_path)
    assert graph["bench.sub.a"] == {"bench.sub", "bench.sub.b"}
    assert graph["bench.c"] == {"nets"}
    assert import_cycles(graph) == [["bench.sub.a", "bench.sub.b"]]


def test_no_import_circle():
    graph = import_graph()
    cycles = import_cycles(graph)
    assert not cycles, "import circles (a lower floor must not import a higher one):\n" + "\n".join(
        " -> ".join(_a_circle(component, graph)) + f"   [{len(component)} modules]" for component in cycles)


def _long_modules() -> dict[str, int]:
    return {str(path.relative_to(ROOT)): n for path in _modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}


def test_no_module_over_the_line_limit():
    long = _long_modules()
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_bench_top_level_stays_small():
    top = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_BENCH_TOP_MODULES, (
        f"bench/ holds {len(top)} modules beside its sub-packages (at most {MAX_BENCH_TOP_MODULES}): {top}")

