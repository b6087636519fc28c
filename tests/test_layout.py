"""The house rules a reader relies on, checked on the source tree
(docs/architecture.md, "Where things live"):

- no two project modules import each other, directly or in a ring; imports
  inside functions count, since they are rings all the same;
- rlhf/ never imports Django (that the web process never imports torch is
  checked where the process is started, tests/annotate/test_schema.py);
- bench/ does not import tests/ (what both need is a module of the project);
- nothing cites a file outside the repository;
- a file over MAX_LINES lines says in its opening comment why it is one file.
"""
import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("annotate", "config", "frontend", "rlhf", "bench", "tests")
MAX_LINES = 450


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in out.stdout.splitlines() if line and (ROOT / line).is_file()]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in _tracked("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in PACKAGES or "migrations" in rel.parts:
            continue
        name = ".".join(rel.with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """{project module imported: line of its first import} for one module,
    at any depth (module level or inside a function)."""

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from a import b` may import the module a.b, or a name from a.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            module = resolve(target)
            if module and module != name:
                found.setdefault(module, node.lineno)
    return found


def _rings(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, rings = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            ring = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                ring.append(w)
                if w == v:
                    break
            if len(ring) > 1:
                rings.append(sorted(ring))

    for v in graph:
        if v not in index:
            visit(v)
    return rings


def test_no_two_modules_import_each_other():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    rings = _rings(graph)
    described = [
        " -> ".join(ring) + ": " + "; ".join(
            f"{a} imports {b} (line {graph[a][b]})" for a in ring for b in ring if b in graph[a]
        )
        for ring in rings
    ]
    assert not rings, "Modules that import each other (move the shared part into a module both import):\n" + "\n".join(described)


def test_no_django_import_anywhere_in_rlhf():
    root = Path(__file__).resolve().parents[1] / "rlhf"
    offenders = [p.name for p in root.rglob("*.py") if "import django" in p.read_text() or "from django" in p.read_text()]
    assert offenders == []


def test_bench_does_not_import_tests():
    modules = _modules()
    offenders = [
        f"{name} imports {target}"
        for name, path in modules.items()
        if name.startswith("bench.")
        for target in _imports(name, path, modules)
        if target.startswith("tests")
    ]
    assert not offenders, f"bench/ uses the project, not the test suite: {offenders}"


def test_nothing_cites_a_file_outside_the_repository():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _tracked("*.py", "*.md", "*.html", "*.js", "*.yml", "Makefile", "Dockerfile")
        if path.name != "test_layout.py"
        for line, text in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if re.search(r"DESIGN\.md|STYLE\.md|MODELS\.md|\.\./shared", text)
    ]
    assert not offenders, f"The project explains itself; cite docs/ instead: {offenders}"


@pytest.mark.parametrize("kind", ["*.py", "*.js", "*.html"])
def test_long_files_say_why_they_are_one_file(kind):
    offenders = []
    for path in _tracked(kind):
        rel = path.relative_to(ROOT)
        if "migrations" in rel.parts or "vendor" in rel.parts:
            continue
        text = path.read_text(errors="replace")
        if text.count("\n") <= MAX_LINES:
            continue
        opening = "\n".join(text.splitlines()[:40]).lower()
        if "one file" not in opening:
            offenders.append(f"{rel} ({text.count(chr(10))} lines)")
    assert not offenders, (
        f"Files over {MAX_LINES} lines: split them, or say in the opening comment why they are one file "
        f"(the words 'one file' and the reason): {offenders}"
    )
