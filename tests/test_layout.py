"""The layout's import rules (DESIGN.md 1): the CLI only speaks the protocol, providers
never import the daemon, and the shared modules import neither.

Each package's `__init__.py` says what it may import; this reads every module's imports,
the ones inside functions too, and fails on a rule broken.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mapid"

FORBIDDEN = {
    "cli": ("mapid.daemon", "mapid.providers"),
    "providers": ("mapid.daemon", "mapid.cli"),
    "": ("mapid.daemon", "mapid.cli", "mapid.providers"),  # the shared modules
}
ALLOWED = {"__main__.py"}
"""`python -m mapid` starts the daemon."""


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def broken(folder: str) -> list[str]:
    root = PACKAGE / folder if folder else PACKAGE
    files = root.rglob("*.py") if folder else root.glob("*.py")
    found = []
    for path in sorted(files):
        if path.name in ALLOWED and not folder:
            continue
        for name in sorted(imported(path)):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[folder]):
                found.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_package_imports_what_its_rules_forbid(folder: str) -> None:
    assert broken(folder) == []


def test_every_package_says_what_it_holds_and_may_import() -> None:
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"{init.relative_to(PACKAGE.parent)} has no docstring"
