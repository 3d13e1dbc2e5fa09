"""The core's layers hold: no core module imports a plug-in, the core's modules import each other
without cycles, and no stage imports another stage. Imports are read from the source (module level
and inside functions alike; ``if TYPE_CHECKING:`` blocks are not imports at run time)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO


def module_imports(path: Path, module: str) -> set[str]:
    """Every module name ``path`` (the module ``module``) imports at run time."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def core_graph(core: Path) -> dict[str, set[str]]:
    """sava_core module -> the sava_core modules it imports (names that are not modules are dropped)."""
    paths = {}
    for path in core.rglob("*.py"):
        rel = path.relative_to(core.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        paths[name] = path
    return {name: {m for m in module_imports(path, name) if m in paths and m != name} for name, path in paths.items()}


def layering_problems(core: Path, plugin_packages: set[str]) -> list[str]:
    """Readable violations of the three rules for the core package at ``core``."""
    graph = core_graph(core)
    problems = []
    for name in sorted(graph):
        path = core.parent / (name.replace(".", "/") + ".py")
        path = path if path.exists() else core.parent / name.replace(".", "/") / "__init__.py"
        for imported in sorted(module_imports(path, name)):
            if imported.split(".")[0] in plugin_packages:
                problems.append(f"{name} imports the plug-in {imported}")
        if name.startswith("sava_core.stages."):
            siblings = sorted(m for m in graph[name] if m.startswith("sava_core.stages."))
            problems += [f"the stage {name} imports {m}" for m in siblings]
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component with one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
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
                found.append([*sorted(component), sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


PLUGINS = {p.name for p in (REPO / "plugins").iterdir() if (p / "__init__.py").is_file()}


def test_the_core_knows_no_plugin_has_no_cycle_and_no_stage_imports_another():
    assert PLUGINS >= {"sava_synth", "sava_metrics", "sava_media"}
    assert layering_problems(REPO / "sava_core", PLUGINS) == []


def test_the_check_catches_a_plugin_import_a_cycle_and_a_stage_importing_a_stage(tmp_path):
    core = tmp_path / "sava_core"
    (core / "stages").mkdir(parents=True)
    for name in ("__init__.py", "stages/__init__.py"):
        (core / name).write_text("")
    (core / "a.py").write_text("def f():\n    from sava_synth.pretrain import Pretrain\n    from sava_core import b\n")
    (core / "b.py").write_text("from sava_core.a import f\n")
    (core / "stages" / "one.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sava_media\n"
    )
    (core / "stages" / "two.py").write_text("from . import one\n")
    assert layering_problems(core, PLUGINS) == [
        "sava_core.a imports the plug-in sava_synth.pretrain",
        "sava_core.a imports the plug-in sava_synth.pretrain.Pretrain",
        "the stage sava_core.stages.two imports sava_core.stages.one",
        "import cycle: sava_core.a -> sava_core.b -> sava_core.a",
    ]


def test_the_architecture_page_names_modules_and_functions_that_exist():
    import re

    page = (REPO / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`((?:sava_core|plugins|cli|tests)/[\w/]+\.py)", page))
    assert paths and [p for p in sorted(paths) if not (REPO / p).is_file()] == []
    for row in (line for line in page.splitlines() if line.startswith("| ") and ".py`" in line):
        cells = row.split("|")
        sources = "".join((REPO / p).read_text() for p in re.findall(r"`([\w/]+\.py)`", cells[2]))
        for name in re.findall(r"`([\w.]+)`", cells[3]):
            leaf = name.split(".")[-1]
            assert re.search(rf"(def|class) {leaf}\b", sources), f"{name} is not defined in {cells[2].strip()}"
