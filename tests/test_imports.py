"""The package's import graph has no cycle (issue 17): every ``import`` / ``from ... import`` in
``lamo_ray``, at module level or inside a function, is an edge to the module it loads and to that
module's packages (whose ``__init__`` runs first), except a module's own enclosing packages, which
are already being imported. Imports under ``if TYPE_CHECKING:`` never run and are left out."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lamo_ray"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return skip


def _with_packages(name: str, importer: str) -> set[str]:
    """``name`` (if it is one of ours) and its enclosing packages, minus the importer's own."""
    own = {importer.rsplit(".", i)[0] for i in range(importer.count(".") + 1)}
    parts = name.split(".")
    found = {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)
    return found - own - {"lamo_ray"}


def imports_of(name: str) -> set[str]:
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    edges: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                edges |= _with_packages(alias.name, name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:   # `from pkg import mod` loads pkg.mod
                target = f"{base}.{alias.name}"
                edges |= _with_packages(target if target in MODULES else base, name)
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_lamo_ray():
    graph = {name: imports_of(name) for name in MODULES}
    assert graph["lamo_ray.envs"] >= {"lamo_ray.domains"}          # the scan sees real edges
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
