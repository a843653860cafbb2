"""The package's import graph: no cycles, imports one way (commands -> methods -> policies, nn,
envs, data -> errors), and an import inside a function only where it defers a heavy optional
dependency, with a comment saying which."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import vla_kd

PACKAGE = Path(vla_kd.__file__).parent
#: each top-level part of the package and its layer: a module may import its own layer and below
LAYERS = {
    "errors": 0, "stats": 0, "config_checks": 0, "parallel": 0, "ray_engine": 0, "distributed": 0,
    "envs": 1, "data": 1, "nn": 1, "policies": 1, "evaluator": 1, "tracking": 1, "reporting": 1,
    "configs": 1,
    "trainer": 2, "methods": 2, "benchmarks": 2, "deploy": 2,
    "pipeline": 3, "reports": 3,
    "commands": 4, "cli_support": 4, "cli": 4,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(node: ast.ImportFrom | ast.Import, current: str, is_package: bool) -> set[str]:
    """The package modules an import statement loads (the most specific existing module of each
    name; a package's own ``__init__`` is not counted for its submodules, Python imports it first)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = current.split(".")[: None if is_package else -1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, *([base] if base else [])])
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    found = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name.startswith("vla_kd") and name != current:
            found.add(name)
    return found


def type_checking_blocks(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``: annotations only, never executed."""
    inside = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and getattr(test, "id", getattr(test, "attr", "")) == "TYPE_CHECKING":
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def imports() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """(module -> package modules it imports anywhere, function-level imports without a comment)."""
    graph: dict[str, set[str]] = defaultdict(set)
    uncommented = []
    for name, path in MODULES.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        skipped = type_checking_blocks(tree)
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in skipped:
                continue
            graph[name] |= resolve(node, name, path.name == "__init__.py")
            if id(node) not in top_level and not any(
                isinstance(parent, ast.If | ast.Try) and node in ast.walk(parent) for parent in tree.body
            ):
                if not says_why(lines, node.lineno - 1):
                    uncommented.append((name, node.lineno, lines[node.lineno - 1].strip()))
    return graph, uncommented


def says_why(lines: list[str], row: int) -> bool:
    """A comment on the import's line, or above the run of imports it belongs to."""
    if "#" in lines[row]:
        return True
    row -= 1
    while row >= 0 and lines[row].strip().startswith(("import ", "from ")):
        row -= 1
    return row >= 0 and lines[row].strip().startswith("#")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 0


def test_no_import_cycle_among_the_packages_modules():
    graph, _ = imports()
    assert sum(len(targets) for targets in graph.values()) > 200  # the graph was read
    assert cycles(graph) == []


def test_a_cycle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_go_one_way():
    graph, _ = imports()
    upward = [(m, t) for m, targets in graph.items() for t in targets if layer(t) > layer(m)]
    assert upward == []


def test_nothing_imports_the_commands_but_the_command_line():
    graph, _ = imports()
    importers = {m for m, targets in graph.items() for t in targets if t.startswith("vla_kd.commands")}
    assert importers <= {"vla_kd.cli"} | {m for m in graph if m.startswith("vla_kd.commands")}
    assert not any(t.startswith("vla_kd.commands") for m in graph if m.startswith("vla_kd.commands")
                   for t in graph[m])  # and no command imports another


def test_every_import_inside_a_function_says_why():
    _, uncommented = imports()
    assert uncommented == []
