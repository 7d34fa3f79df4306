"""mapid calls no private API of its dependencies (issue 13).

tomlkit 0.15 removed `Container._insert_after`, which the profile writer called, and every
new install broke. This walks mapid's source: an `obj._name` whose `_name` mapid does not
define itself is a reach into someone else's internals, and fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mapid"

PUBLIC_UNDERSCORE = {"_exit"}
"""Underscore names that are documented public API (`os._exit`)."""


def _own_names(trees: list[ast.AST]) -> set[str]:
    """Names mapid defines: functions, classes, variables, `self.`/`cls.` attributes, slots."""
    own = set(PUBLIC_UNDERSCORE)
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                own.add(node.value)  # __slots__ = ("_values",)
    return own


def foreign_private_uses(sources: dict[str, str]) -> list[str]:
    """`where: ._name` for each `x._name` (x not self/cls) whose name mapid never defines."""
    trees = {where: ast.parse(source) for where, source in sources.items()}
    own = _own_names(list(trees.values()))
    found = set()
    for where, tree in trees.items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                and node.attr not in own
            ):
                found.add(f"{where}: .{node.attr}")
    return sorted(found)


def test_the_check_finds_the_calls_that_broke_installs() -> None:
    sample = (
        "def insert(body, conn, host):\n"
        "    body._insert_after('a', 'b', 1)\n"
        "    conn._host = host\n"
    )
    assert foreign_private_uses({"sample.py": sample}) == [
        "sample.py: ._host",
        "sample.py: ._insert_after",
    ]


def test_no_private_attribute_of_a_dependency_is_used() -> None:
    sources = {
        str(path.relative_to(PACKAGE.parent)): path.read_text(encoding="utf-8")
        for path in PACKAGE.rglob("*.py")
    }
    assert foreign_private_uses(sources) == []
