"""The shape rules of the package: no function (or method) of ``so8t/`` over 60 lines, no module over
300 lines. A function's length runs from its ``def`` line (decorators excluded) to its last line, the
docstring included; a module's is its number of lines. A failure names every offender."""

from __future__ import annotations

import ast
from pathlib import Path

import so8t

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 300

ROOT = Path(so8t.__file__).parent


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function in ``source`` longer than ``limit`` lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def _modules() -> list[Path]:
    paths = sorted(ROOT.rglob("*.py"))
    assert len(paths) > 50  # the walk found the package
    return paths


def test_no_function_over_60_lines():
    offenders = [
        f"so8t/{path.relative_to(ROOT)}:{line}: {name} has {length} lines"
        for path in _modules()
        for name, line, length in long_functions(path.read_text())
    ]
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_no_module_over_300_lines():
    offenders = [
        f"so8t/{path.relative_to(ROOT)} has {n} lines"
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def test_long_function_is_found():
    body = "\n".join(f"        x{i} = {i}" for i in range(60))
    assert long_functions(f"def short():\n    pass\n\nclass C:\n    def long(self):\n{body}\n") == [
        ("long", 5, 61)
    ]
