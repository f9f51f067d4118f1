"""The layout of docs/architecture.md, checked: which packages may import which (the arrows are
read from the page itself, so the page and this test cannot drift apart), no import cycles, and
file sizes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fmstore"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# numba kernels are long straight-line code that reads best in one file; the Recommender is one
# class read top to bottom (as implicit keeps one model per file), its math in plain functions
# elsewhere (fmstore.serving, recommend/explain.py)
LONG_FILES_ALLOWED = {
    "train/numba_kernels.py": 700,
    "train/ranking_kernels.py": 600,
    "recommend/recommender.py": 720,
}
MAX_LINES = 450


# ---- the arrows of docs/architecture.md ---------------------------------------------------------


def _names(text: str) -> set[str]:
    return {n.strip() for n in text.split(",") if n.strip()}


def read_arrows(page: Path = ARCHITECTURE) -> dict[str, set[str]]:
    """The "Who may import whom" block as {package: the packages (or package.module) it may
    import}. `a, b <- anyone` names what every package may import (and those may import each
    other); `x -> y, z` adds y and z for x; `(...)` is commentary; cli's line is not a rule
    here (it may import everything, and nothing imports it: checked below)."""
    section = page.read_text(encoding="utf-8").split("## Who may import whom", 1)[1]
    block = section.split("```", 2)[1]
    anyone: set[str] = set()
    arrows: dict[str, set[str]] = {}
    for line in block.splitlines():
        line = re.sub(r"\(.*?\)", "", line).strip()
        if "<-" in line:
            anyone = _names(line.split("<-", 1)[0])
        elif "->" in line:
            name, targets = (part.strip() for part in line.split("->", 1))
            if "everything" not in targets:
                arrows[name] = _names(targets)
    allowed = {name: targets | anyone for name, targets in arrows.items()}
    allowed.update({name: anyone - {name} for name in anyone})
    return allowed


ALLOWED = read_arrows()


def test_the_page_has_arrows():
    assert {"serving", "runs", "recommend", "train"} <= set(ALLOWED), sorted(ALLOWED)


# ---- what each file imports ----------------------------------------------------------------------

SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _module_of(path: Path) -> str:
    """fmstore/runs/load.py -> 'fmstore.runs.load'; a package's __init__.py -> the package."""
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {_module_of(p) for p in SOURCES}


def _imported_modules(path: Path) -> set[str]:
    """The fmstore modules a file imports (every `import` and `from` statement, also inside
    functions), each as its module's dotted name ('fmstore.runs.load'), or its package's when the
    name is not a module ('fmstore.runs' for `from fmstore.runs import save_run`). Imports under
    `if TYPE_CHECKING:` are left out: they never run, so they cannot make a cycle."""
    here = _module_of(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(_without_type_checking(ast.parse(path.read_text(encoding="utf-8")))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                up = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{up}.{base}" if base else up
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {m for n in names if (m := _existing_module(n)) and m != here}
    return found


def _without_type_checking(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        for field in ("body", "orelse"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                setattr(node, field, [s for s in block if not _is_type_checking(s)])
    return tree


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _existing_module(name: str) -> str | None:
    """`name` or its nearest enclosing package that is a module of fmstore; None outside it."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _top(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _allowed(importer: str, imported: str) -> bool:
    """Whether package `importer` may import fmstore module `imported` ('fmstore.catalog.readers'),
    by the page's arrows: the arrow names its package, or that module ('catalog.readers')."""
    inside = imported.removeprefix("fmstore.")
    return any(inside == a or inside.startswith(f"{a}.") for a in ALLOWED[importer])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_arrows(path: Path):
    top = _top(path)
    if top in ("cli", "__main__", "__init__"):
        return  # the CLI may import everything; nothing imports it (checked below)
    assert top in ALLOWED, f"{top} has no line in the arrows of docs/architecture.md"
    others = {m for m in _imported_modules(path) if m.split(".")[1:2] != [top]} - {"fmstore"}
    assert not {m for m in others if m.startswith("fmstore.cli")}, f"{path.name} imports the CLI"
    refused = sorted(m for m in others if not _allowed(top, m))
    assert not refused, f"{top} imports {refused}: not an arrow of docs/architecture.md"


# ---- no import cycles ----------------------------------------------------------------------------


def import_cycles(graph: dict[str, set[str]] | None = None) -> list[list[str]]:
    """The groups of fmstore modules that import each other in a circle (strongly connected
    components of more than one module, Tarjan's algorithm), each sorted. `graph`: module ->
    the modules it imports; fmstore's own when None."""
    if graph is None:
        graph = {_module_of(p): _imported_modules(p) for p in SOURCES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles():
    cycles = import_cycles()
    print(f"{len(cycles)} import cycles among {len(SOURCES)} modules")
    assert len(cycles) == 0, f"{len(cycles)} import cycles: {cycles}"


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


# ---- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_stay_small(path: Path):
    rel = str(path.relative_to(PACKAGE))
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= LONG_FILES_ALLOWED.get(rel, MAX_LINES), f"{rel}: {lines} lines"
