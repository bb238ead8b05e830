"""Size limits of the package's code: no module over 600 lines, no function over 80 lines (its
docstring excluded), so that each file holds one concern and each function one step."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mlsim_live"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the function's last line, its docstring left out."""
    assert node.end_lineno is not None
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        assert first.end_lineno is not None
        lines -= first.end_lineno - first.lineno + 1
    return lines


def oversized(source: str, name: str) -> list[str]:
    """What in ``source`` breaks the limits, one line each."""
    problems = []
    n_lines = len(source.splitlines())
    if n_lines > MAX_MODULE_LINES:
        problems.append(f"{name}: {n_lines} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = function_lines(node)
            if n > MAX_FUNCTION_LINES:
                problems.append(
                    f"{name}:{node.lineno} {node.name}: {n} lines without its docstring "
                    f"(at most {MAX_FUNCTION_LINES})"
                )
    return problems


def test_counts_function_lines_without_the_docstring() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    doc = '    """A docstring\n\n    of four lines.\n    """\n'
    fits = f"def f():\n{doc}{body}\n"
    too_long = f"def g():\n{doc}{body}\n    x = 0\n"
    assert oversized(fits, "fits.py") == []
    assert oversized(too_long, "long.py") == [
        f"long.py:1 g: {MAX_FUNCTION_LINES + 1} lines without its docstring "
        f"(at most {MAX_FUNCTION_LINES})"
    ]
    nested = "class A:\n" + textwrap.indent(too_long, "    ")
    assert len(oversized(nested, "nested.py")) == 1
    assert oversized("x = 1\n" * (MAX_MODULE_LINES + 1), "big.py") == [
        f"big.py: {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})"
    ]


def test_package_modules_and_functions_are_within_the_limits() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        problems += oversized(path.read_text(encoding="utf-8"), name)
    assert not problems, "\n".join(problems)
