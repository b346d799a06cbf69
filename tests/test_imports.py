"""The package's import graph: no circles, and no module imports another module's private (_underscored) names."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "archsearch"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines under `if TYPE_CHECKING:`, whose imports never run."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def imports(name: str) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for every archsearch import of module `name`, the
    imports inside functions included (a lazy import is still a dependency)."""
    tree = ast.parse(MODULES[name].read_text())
    skip = type_checking_lines(tree)
    here = name if is_package(name) else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "archsearch"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "archsearch":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (base, a.name, node.lineno))
    return out


def test_no_module_imports_a_private_name_of_another_module():
    offences = [f"{name}:{line}: {target}.{taken}" for name in MODULES for target, taken, line in imports(name)
                if taken is not None and taken.startswith("_") and target != name]
    assert offences == []


def test_the_import_graph_has_no_circle():
    graph = {name: {t for t, _, _ in imports(name) if t in MODULES and t != name} for name in MODULES}
    state: dict[str, str] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert circles == []


def test_the_checker_sees_lazy_imports_and_relative_names():
    # the checks above would pass vacuously if imports were missed: the study package's lazy import of its runner,
    # and the runner's relative import of the run directory's owner, must both be seen
    assert ("archsearch.study._runner", None) in {(t, n) for t, n, _ in imports("archsearch.study")}
    assert ("archsearch.study._rundir", "RunDir") in {(t, n) for t, n, _ in imports("archsearch.study._runner")}
