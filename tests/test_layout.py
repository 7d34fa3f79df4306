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


KNOWN_CYCLES = [
    # vcard.py imports vcard_write.py inside its methods; issue 14 makes vcard a package.
    ["mapid.providers.vcard", "mapid.providers.vcard_write"],
]
"""Import cycles still there, to be removed (never added to)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """mapid modules imported at run time: anywhere, lazily too, but not for type checking."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    names = set(paths)
    graph = {name: _runtime_imports(path, names) - {name} for name, path in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(groups)


def test_no_new_import_cycle() -> None:
    """The core's cycle (logon -> spooler -> logon, session_manager) is gone: the daemon
    hands logon its spooler factory (SessionEnv.make_spooler)."""
    assert import_cycles() == sorted(KNOWN_CYCLES)
