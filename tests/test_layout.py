"""The shape of the code, as the project promises it (issue 9, DESIGN.md §2): every file one job,
short enough to read, every function short enough to read at once.

These are tests rather than a linter setting because the exceptions need a reason a reader can
see: a module may pass the size limit only when its docstring says why ("Long because: …").
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE_LINES = 500
FUNCTION_LINES = 60
GENERATED = ("outreach/store/migrations/versions/",)


def _sources() -> Iterator[Path]:
    for top in ("outreach", "workers"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(GENERATED):
                yield path


SOURCES = list(_sources())


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_module_is_short_or_says_why(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = len(text.splitlines())
    if lines <= MODULE_LINES:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert "Long because:" in doc, (
        f"{_rel(path)} has {lines} lines (limit {MODULE_LINES}): split it by job, "
        "or say in its docstring 'Long because: …'"
    )


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_functions_read_at_once(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, from line {node.lineno})"
        for node in _functions(tree)
        if node.end_lineno is not None and node.end_lineno - node.lineno + 1 > FUNCTION_LINES
    ]
    assert not long, f"{_rel(path)}: functions over {FUNCTION_LINES} lines: {', '.join(long)}"


def test_the_rooms_of_design_section_2_exist() -> None:
    """A newcomer finds each part of the data flow (DESIGN.md §1) as a folder of the engine."""
    rooms = ("store", "campaigns", "ingest", "plan", "send", "providers", "listen", "outcomes", "apps")
    missing = [room for room in rooms if not (ROOT / "outreach" / room / "__init__.py").is_file()]
    assert not missing, f"missing rooms under outreach/: {missing}"
    assert (ROOT / "outreach" / "keywords.py").is_file()
