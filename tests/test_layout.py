"""The package's layers and their direction: kernels -> core -> tasks; datasets -> core; no import
circles anywhere in ``eventssm`` (an import inside a function or a module ``__getattr__`` counts:
it only hides a circle)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "eventssm"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """eventssm modules that ``name`` imports anywhere in its file (absolute or relative)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import submodule` needs the submodule, not (again) the package's init
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        out |= {t for t in targets if t in known and t != name}
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _layer(name: str) -> str:
    for sub in ("kernels", "datasets", "tasks"):
        if name == f"eventssm.{sub}" or name.startswith(f"eventssm.{sub}."):
            return sub
    return "core"


def test_no_import_circles():
    cycles = _cycles(_graph())
    print(cycles)
    assert not cycles


def test_the_cycle_finder_sees_a_lazy_import():
    """The check above is not vacuous: a two-module circle is found."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_no_module_getattr():
    hiding = [name for name, path in _modules().items()
              if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
                     for n in ast.parse(path.read_text()).body)]
    assert not hiding, hiding


def test_layers_point_one_way():
    allowed = {"kernels": {"kernels"}, "core": {"core", "kernels"},
               "datasets": {"datasets", "core"}, "tasks": {"tasks", "core", "datasets"}}
    wrong = [f"{a} -> {b}" for a, targets in _graph().items() for b in targets
             if _layer(b) not in allowed[_layer(a)]]
    print(wrong)
    assert not wrong
