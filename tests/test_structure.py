"""The package's shape: no import cycle between nsmd's modules and packages (api, peer,
registry, manager, ...): each depends on lower layers only."""

from __future__ import annotations

import ast
import pathlib
from collections import defaultdict

NSMD = pathlib.Path(__file__).parents[1] / "nsmd"


def imports_between_parts() -> dict[str, set[str]]:
    """{part: parts it imports}, a part being a top-level module or package of nsmd."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in NSMD.rglob("*.py"):
        rel = path.relative_to(NSMD)
        if rel.parts[0] in ("fastpath", "plugins"):  # links to the Cython and plugin trees
            continue
        part = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nsmd."):
                target = node.module.split(".")[1]
                if target != part:
                    edges[part].add(target)
    return edges


def test_no_import_cycle_between_parts():
    edges = imports_between_parts()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted(f"{a} -> {b}" for a in edges for b in edges[a] if reaches(b, a))
    assert cycles == []
    assert "manager" in edges["api"] and "daemon" not in edges["api"]  # it looked at them


def module_imports() -> dict[str, set[str]]:
    """{module: nsmd modules it imports}, at any depth of its code (a TYPE_CHECKING import
    counts: it hides a cycle, it does not remove it); a package is its __init__."""
    modules = {".".join(("nsmd", *p.relative_to(NSMD).with_suffix("").parts)).removesuffix(
        ".__init__"): p for p in NSMD.rglob("*.py")
        if p.relative_to(NSMD).parts[0] not in ("fastpath", "plugins")}
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nsmd"):
                for alias in node.names:   # `from nsmd.manager import mechanisms`: a module
                    target = f"{node.module}.{alias.name}"
                    edges[name].add(target if target in modules else node.module)
    return {m: {t for t in ts if t in modules and t != m} for m, ts in edges.items()}


def test_no_import_cycle_between_modules():
    edges = module_imports()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted(f"{a} -> {b}" for a in edges for b in edges[a] if reaches(b, a))
    assert cycles == []
    assert "nsmd.manager.begin" in edges["nsmd.manager.liveness"]  # it looked at them
