"""The layout's rules, read from the source (docs/architecture.md): the CLI only speaks the
protocol, providers never import the daemon, the daemon's rooms import only rooms below
them, no import cycles, no module over 1 000 lines, at most a dozen modules in a folder.

Imports are counted wherever they are: at the top, inside functions, and under
`if TYPE_CHECKING:` (a type-only import is still a dependency a reader must follow).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mapid"

FORBIDDEN = {
    "cli": ("mapid.daemon", "mapid.providers"),
    "providers": ("mapid.daemon", "mapid.cli"),
    "": ("mapid.daemon", "mapid.cli", "mapid.providers"),  # the shared modules
    "wire": ("mapid.daemon", "mapid.cli", "mapid.providers", "mapid.client", "mapid.mirror"),
}
ALLOWED = {"__main__.py"}
"""`python -m mapid` starts the daemon."""

ROOMS = ["system", "config", "sessions", "spool", "bus", "ops"]
"""The daemon's rooms, lowest first: each may import only the rooms before it (and
itself). `app.py` and `main.py`, on top, wire them together."""

MAX_LINES = 1000
MAX_MODULES = 12
"""Modules directly in one folder, `__init__.py` not counted."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def imports_of(path: Path) -> frozenset[str]:
    """Every mapid module `path` imports, anywhere in the file (TYPE_CHECKING too).

    `from a import b` counts as importing the module `a.b` when that is a module, else `a`;
    the package `a` of a submodule `a.b` is counted too, since importing `a.b` runs it."""
    known = modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return frozenset(name for name in found if name in known)


def _all_imports(path: Path) -> set[str]:
    """Also names that are not mapid modules, for the FORBIDDEN prefixes."""
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
        for name in sorted(_all_imports(path)):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[folder]):
                found.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_package_imports_what_its_rules_forbid(folder: str) -> None:
    assert broken(folder) == []


def room_of(module: str) -> int | None:
    """The rank of a daemon module's room; None outside the daemon's rooms."""
    parts = module.split(".")
    if parts[:2] != ["mapid", "daemon"] or len(parts) < 3 or parts[2] not in ROOMS:
        return None
    return ROOMS.index(parts[2])


def upward_imports() -> list[str]:
    found = []
    for name, path in modules().items():
        rank = room_of(name)
        if rank is None:
            continue
        for other in sorted(imports_of(path)):
            if other.startswith("mapid.daemon") and room_of(other) is None:
                if other != "mapid.daemon":  # the package itself holds nothing
                    found.append(f"{name} imports {other}, above every room")
            elif (other_rank := room_of(other)) is not None and other_rank > rank:
                found.append(f"{name} ({ROOMS[rank]}) imports {other} ({ROOMS[other_rank]})")
    return found


def test_daemon_rooms_import_only_rooms_below_them() -> None:
    assert upward_imports() == []


def test_room_rule_sees_an_upward_import() -> None:
    """The rule's own check: the spooler (spool) really is above logon (sessions)."""
    assert room_of("mapid.daemon.spool.spooler") == ROOMS.index("spool")
    assert (room_of("mapid.daemon.sessions.logon") or 0) < (
        room_of("mapid.daemon.spool.spooler") or 0
    )
    assert "mapid.daemon.sessions.session" in imports_of(modules()["mapid.daemon.spool.spooler"])
    assert set(ROOMS) == {
        p.name for p in (PACKAGE / "daemon").iterdir() if (p / "__init__.py").exists()
    }, "a new room of the daemon needs its place in ROOMS"


def test_every_package_says_what_it_holds_and_may_import() -> None:
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        where = init.relative_to(PACKAGE.parent)
        assert doc, f"{where} has no docstring"
        assert "import" in doc, f"{where} does not say what it may import"


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm).

    A package's own `__init__` importing its submodules is not a cycle with them: Python
    runs the package first either way, so those edges are left out."""
    paths = modules()
    graph = {
        name: {
            other
            for other in imports_of(path)
            if other != name and not (path.name == "__init__.py" and other.startswith(name + "."))
        }
        for name, path in paths.items()
    }
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


def test_no_import_cycles() -> None:
    """Where two rooms need each other, the lower one gets a small interface instead: the
    session holds a `Spooler` Protocol and is handed the factory (`SessionEnv.make_spooler`)."""
    assert import_cycles() == []


def test_no_module_over_a_thousand_lines() -> None:
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_at_most_a_dozen_modules_in_a_folder() -> None:
    crowded = {}
    for folder in [PACKAGE, *(p.parent for p in PACKAGE.rglob("__init__.py"))]:
        count = sum(1 for p in folder.glob("*.py") if p.name != "__init__.py")
        if count > MAX_MODULES:
            crowded[str(folder.relative_to(PACKAGE.parent))] = count
    assert crowded == {}
