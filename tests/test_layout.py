"""The layout of docs/architecture.md, checked: which packages may import which, and file sizes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fmstore"

# The arrows of docs/architecture.md ("Who may import whom"): anything not listed is a new
# dependency that the page must explain first.
ALLOWED = {
    "config": {"errors"},
    "errors": set(),
    "serving": set(),
    "fileio": set(),
    "datasets": {"errors", "serving", "fileio"},
    "features": {"datasets", "errors"},
    "model": {"features", "serving"},
    "train": {"config", "datasets", "errors", "features", "model", "serving"},
    "artifact": {
        "errors",
        "features",
        "model",
        "datasets",
        "config",
        "serving",
        "fileio",
        "runfolder",
    },
    "runfolder": {"errors"},
    "catalog": {"errors"},
    "vectors": {"config", "errors", "fileio", "serving"},
    "publish": {"artifact", "catalog", "config", "errors", "serving", "vectors"},
    "recommend": {"artifact", "catalog", "errors", "serving", "vectors"},
    "evaluate": {"artifact", "config", "datasets", "errors", "features", "serving", "train"},
    "report": {"artifact", "datasets", "errors", "evaluate", "fileio"},
    "ranking_search": {"config", "datasets", "evaluate", "features", "train"},
    "pipeline": {"artifact", "config", "datasets", "evaluate", "ranking_search", "train"},
}
# numba kernels are long straight-line code that reads best in one file
LONG_FILES_ALLOWED = {"train/numba_kernels.py"}
MAX_LINES = 450


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = (
                [node.module]
                if node.module != "fmstore"
                else [f"fmstore.{a.name}" for a in node.names]
            )
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("fmstore.")}
    return found


def _top(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_arrows(path: Path):
    top = _top(path)
    if top in ("cli", "__main__", "__init__"):
        return  # the CLI may import everything; nothing imports it (checked below)
    others = _imported_packages(path) - {top, "__version__"}
    assert "cli" not in others, f"{path.name} imports the CLI"
    assert others <= ALLOWED[top], f"{top} imports {sorted(others - ALLOWED[top])}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_stay_small(path: Path):
    rel = str(path.relative_to(PACKAGE))
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert rel in LONG_FILES_ALLOWED or lines <= MAX_LINES, f"{rel}: {lines} lines"
