"""The package map holds: every module of ``ojd/`` and ``oj/`` has a layer in docs/DESIGN.md's
map, none imports from a layer above its own, and no import cycle exists. Imports inside
functions and under ``TYPE_CHECKING`` count the same as top-level ones: hiding an import
in a function does not remove the dependency."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "DESIGN.md"

def layer_map(text: str) -> list[tuple[str, list[str]]]:
    """The layers of DESIGN.md's "Map of the packages" table, lowest first: (layer, module
    patterns), where ``NAME.*`` is every module under package NAME."""
    section = text.split("\n## Map of the packages\n", 1)[1].split("\n## ", 1)[0]
    layers = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.match(r"L\d ", cells[0]):
            layers.append((cells[0], re.findall(r"`([\w.*]+)`", cells[1])))
    return layers


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    for n, (_, patterns) in enumerate(layers):
        for p in patterns:
            if module == p or (p.endswith(".*") and module.startswith(p[:-1])):
                return n
    return None


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted([*ROOT.glob("ojd/**/*.py"), *ROOT.glob("oj/**/*.py")]):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports, anywhere in its body.
    ``from P import X`` imports module P.X when there is one, else P."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{up}.{base}" if base else up
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer_in_the_design_map():
    layers = layer_map(DESIGN.read_text())
    assert [name.split()[0] for name, _ in layers] == [f"L{n}" for n in range(len(layers))]
    unplaced = [m for m in modules() if layer_of(m, layers) is None]
    assert unplaced == [], "add these to the map at the top of docs/DESIGN.md"


def test_the_design_map_names_no_module_twice():
    patterns = [p for _, ps in layer_map(DESIGN.read_text()) for p in ps]
    assert sorted(p for p in set(patterns) if patterns.count(p) > 1) == []


def test_no_module_imports_from_a_layer_above_its_own():
    layers = layer_map(DESIGN.read_text())
    upward = []
    for m, targets in sorted(graph().items()):
        for t in sorted(targets):
            here, there = layer_of(m, layers), layer_of(t, layers)
            if here is not None and there is not None and there > here:
                upward.append(f"{m} ({layers[here][0]}) imports {t} ({layers[there][0]})")
    assert upward == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_checker_sees_cycles_and_function_local_imports(tmp_path):
    # the checker itself: a cycle made of a top-level and a function-local import
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    known = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    edges = {n: imports(n, p, known) for n, p in known.items()}
    assert edges == {"a": {"b"}, "b": {"a"}}
    assert cycles(edges) == [["a", "b"]]


# -- imports inside functions ----------------------------------------------------------------

LAZY = "# lazy:"


def _reason_above(lines: list[str], lineno: int) -> bool:
    """Whether the comment block right above line ``lineno`` (1-based) gives a reason."""
    n = lineno - 2
    while n >= 0 and lines[n].strip().startswith("#"):
        if LAZY in lines[n]:
            return True
        n -= 1
    return False


def unexplained_imports(source: str, filename: str = "<source>") -> list[int]:
    """Lines of imports inside functions with no ``# lazy:`` reason: on the import's own
    line(s), in the comment right above it, or above the first of a run of consecutive
    imports it belongs to. ``if TYPE_CHECKING:`` at module level is not inside a function."""
    lines = source.splitlines()
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.AST):
                check_block(block, in_function)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
                continue  # reached through the blocks above
            visit(child, in_function)

    def check_block(block: list, in_function: bool) -> None:
        run_explained = False
        previous_import = False
        for stmt in block:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                own = any(LAZY in lines[n - 1]
                          for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
                above = _reason_above(lines, stmt.lineno)
                run_explained = (run_explained and previous_import) or above
                if in_function and not (own or above or run_explained):
                    found.append(stmt.lineno)
                previous_import = True
            else:
                previous_import = False
                run_explained = False
                inner = in_function or isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
                visit(stmt, inner)

    visit(ast.parse(source, filename), False)
    return found


def test_imports_inside_functions_say_why_they_are_lazy():
    # only the CLI's measured start-up path keeps imports in functions, each with its reason
    missing = []
    for path in sorted(modules().values()):
        for line in unexplained_imports(path.read_text(), str(path)):
            missing.append(f"{path.relative_to(ROOT)}:{line}")
    assert missing == [], ("import at the top of the module, or say why not with a "
                           "'# lazy: <reason>' comment")


def test_the_checker_sees_imports_inside_functions_without_a_reason():
    source = "\n".join([
        "import os",  # 1: top level
        "TYPE_CHECKING = False",
        "if TYPE_CHECKING:",
        "    import json",  # 4: module level, not in a function
        "def f():",
        "    import re",  # 6: no reason
        "    import sys  # lazy: on its own line",
        "    # lazy: heads the run of imports below",
        "    import csv",
        "",
        "    from os import path",  # 11: in the run headed above
        "    x = 1",
        "    import glob",  # 13: the run ended at x = 1
        "    class C:",
        "        def g(self):",
        "            if x:",
        "                import shlex",  # 17: nested, no reason
        "                # lazy: a reason",
        "                # that runs over two lines",
        "                import zlib",
        "    return C",
    ])
    assert unexplained_imports(source) == [6, 13, 17]
