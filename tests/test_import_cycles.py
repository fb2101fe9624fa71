"""No import cycle among app's modules, not even one that only type checkers follow.

Every `import` and `from ... import` in app/ counts, wherever it stands (inside functions, under
`if TYPE_CHECKING:`): a cycle that only a type checker or a lazy import sees is still two modules
that cannot be read apart.
"""

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.AST, name: str, modules: set[str]) -> set[str]:
    """The app modules a module imports (`from app.x import y` counts app.x.y when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own parents
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in APP.rglob("*.py")}
    return {name: imported_modules(ast.parse(path.read_text()), name, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of modules (first == last), or None: depth-first search with colours."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_app_has_no_import_cycle():
    graph = import_graph()
    assert "app.stacks.run" in graph["app.api.routes.layers"] and "app.layers.base" in graph["app.backends.base"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_and_codec_import_no_backend():
    """Arrows point one way: backends know layers, the codec knows neither."""
    graph = import_graph()
    for name, imports in graph.items():
        if name.startswith(("app.layers", "app.codec")):
            assert not {m for m in imports if m.startswith(("app.backends", "app.stacks", "app.api"))}, name
