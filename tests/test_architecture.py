"""The package's shape: no import cycle (module-level and in-function imports both), and every
import goes down the layers the README's architecture section lists."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hwsearch"
# bottom to top; a module may import its own layer (without a cycle) and any layer below it
LAYERS = (
    ("errors", "policy", "space", "options", "imports", "results"),
    ("config",),
    ("runtime",),
    ("tables",),
    ("tasks",),
    ("families",),
    ("compress", "latency"),
    ("context",),
    ("search", "export"),
    ("dashboard",),
    ("cli", "testing", "__main__"),  # hwsearch.cli.__main__ belongs to cli
)
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every hwsearch module ``path`` imports, wherever the import statement is (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hwsearch")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hwsearch"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_has_a_layer():
    assert [m for m in _modules() if m != "hwsearch" and _layer(m) is None] == []


def test_imports_only_go_down():
    upward = [(m, dep) for m, deps in _graph().items() for dep in deps
              if _layer(m) is not None and _layer(dep) is not None and _layer(dep) > _layer(m)]
    assert upward == []


def test_only_families_import_torch_pruning():
    users = [name for name, path in _modules().items() if "torch_pruning" in path.read_text()]
    assert users and all(u.startswith("hwsearch.families.") for u in users)


def test_only_runtime_imports_onnxruntime():
    users = [name for name, path in _modules().items() if "import onnxruntime" in path.read_text() or "from onnxruntime" in path.read_text()]
    assert users and all(u.startswith("hwsearch.runtime.") for u in users)
