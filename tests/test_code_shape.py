"""The package's shape rule: no function over 80 lines, no class over 300 (data tables aside).

Long functions were where the planner's rules hid (a 197-line `plan`, a 138-line
`device_with_records`); this keeps the next one from growing back. Lines are counted
from the `def`/`class` line to the node's last line, decorators excluded, as `ast`
reports them. Only data tables may be longer, and only when listed below with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "controller" / "fleetwave"
MAX_FUNCTION = 80
MAX_CLASS = 300

DATA_TABLES: dict[str, str] = {
    "api/openapi.py:build_openapi": "the OpenAPI document's paths as one literal, plus a "
                                    "loop over the control operations",
    "cli/run.py:_controller_flags": "the table of the controller's flags, one row each",
}
"""Exempt definitions: data tables only (a document or a table of rows as literals)."""

NOT_YET_SPLIT: dict[str, str] = {}
"""Known logic over the limit, each with the plan that removes it. Not an exemption for
new code: the list may only shrink, and an entry that no longer violates must go."""


def oversized(tree: ast.AST, relative: str) -> list[str]:
    """`path:qualname: N lines (limit L)` for each definition over its limit."""
    found: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                limit = MAX_CLASS if isinstance(child, ast.ClassDef) else MAX_FUNCTION
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                key = f"{relative}:{name}"
                if length > limit and key not in DATA_TABLES and key not in NOT_YET_SPLIT:
                    found.append(f"{key}: {length} lines (limit {limit})")
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def package_violations() -> list[str]:
    out: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        out.extend(oversized(ast.parse(path.read_text(), str(path)), relative))
    return out


def test_the_counter_sees_a_long_function_and_a_long_method() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION))
    method_body = body.replace("    ", "        ")
    source = f"def long():\n{body}\n\nclass C:\n    def m(self):\n{method_body}\n"
    assert oversized(ast.parse(source), "m.py") == [
        f"m.py:long: {MAX_FUNCTION + 1} lines (limit {MAX_FUNCTION})",
        f"m.py:C.m: {MAX_FUNCTION + 1} lines (limit {MAX_FUNCTION})",
    ]


def test_no_function_over_80_lines_and_no_class_over_300() -> None:
    assert package_violations() == []


def test_every_exemption_still_exists_and_is_long() -> None:
    """A stale entry would silently exempt whatever takes the name next."""
    saved = dict(DATA_TABLES), dict(NOT_YET_SPLIT)
    DATA_TABLES.clear()
    NOT_YET_SPLIT.clear()
    try:
        long_ones = {v.split(": ")[0] for v in package_violations()}
    finally:
        DATA_TABLES.update(saved[0])
        NOT_YET_SPLIT.update(saved[1])
    assert set(DATA_TABLES) | set(NOT_YET_SPLIT) <= long_ones
