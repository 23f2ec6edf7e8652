"""The package's import graph: no cycles, and the process contract stays a skel.

Every import counts, including those inside functions and under
TYPE_CHECKING: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[2] / "egress_router_cni"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the package modules it imports anywhere in its source."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            graph[module].update(t for t in targets if t in files and t != module)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected sets of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_layers_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_no_import_cycle_in_the_package() -> None:
    assert cycles(import_graph()) == []


def test_layers_protocol_never_imports_the_commands() -> None:
    """As Go's skel: __main__ hands the handlers to protocol.run."""
    graph = import_graph()
    assert not graph["egress_router_cni.protocol"] & {
        "egress_router_cni.plugin",
        "egress_router_cni.add",
        "egress_router_cni.teardown",
        "egress_router_cni.delete",
        "egress_router_cni.check",
    }


def test_layers_cmdargs_and_state_are_leaves() -> None:
    graph = import_graph()
    # record.py (the NamedTuple stand-in) and jsonio.py (the JSON codec) are leaves themselves.
    assert graph["egress_router_cni.record"] == set()
    assert graph["egress_router_cni.jsonio"] == set()
    assert graph["egress_router_cni.cmdargs"] <= {"egress_router_cni.result", "egress_router_cni.record"}
    assert graph["egress_router_cni.state"] <= {"egress_router_cni.record", "egress_router_cni.jsonio"}
