"""The folder tree of a Maildir++ root: which dot directories are folders.

A Maildir++ folder is a directory `.<name>` of the root that holds `cur/` and `new/`. Two
other kinds of dot directory are met in real trees, and both are sorted out here, so the
hierarchy table, entry-ID look-ups and folder notifications all agree:

- A missing parent. Dovecot's `CREATE Work.Projects` makes only `.Work.Projects`; mutt and
  Dovecot still show `Work` holding `Projects`. Every name that is a proper prefix of a
  folder's name (`Work` of `Work.Projects`) is a folder too, holding nothing, whether its
  directory is missing or lacks `cur/` and `new/`. The first message put into it makes its
  directory (`make_folder_dirs`), as mapid makes a folder it creates.
- Somebody else's data. notmuch keeps its database in `.notmuch/` (with `xapian/`), other
  tools keep caches beside the mail: a directory without `cur/` and `new/` that is no
  folder's parent is not a folder.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from mapid.providers.maildir.names import INBOX

__all__ = [
    "FolderTree",
    "folder_path",
    "is_ready",
    "list_folders",
    "list_ready_folders",
    "make_folder_dirs",
    "scan_tree",
]

_SUBDIRS = ("cur", "new", "tmp")
FOLDER_MARK = "maildirfolder"
"""The empty file Maildir++ puts in every folder (Courier and Dovecot write it)."""


def folder_path(root: Path, name: str) -> Path:
    return root if name == INBOX else root / f".{name}"


def is_ready(path: Path) -> bool:
    """Whether `path` holds a Maildir's `cur/` and `new/`."""
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _dot_directories(root: Path) -> list[str]:
    """Names (without the dot) of the root's dot directories, Dovecot's `.INBOX` left out
    (its name for the root itself)."""
    names: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for item in os.scandir(root):
            name = item.name
            if len(name) < 2 or name[0] != "." or name[1] == "." or not item.is_dir():
                continue
            if name[1:].upper() == "INBOX":
                continue
            names.append(name[1:])
    return names


def _parents(name: str) -> list[str]:
    """The proper prefixes of a folder name that are folder names themselves (`a`, `a.b` of
    `a.b.c`); `INBOX` is the Inbox, so `INBOX.x` has no parent here."""
    parts = name.split(".")
    out: list[str] = []
    for end in range(1, len(parts)):
        head = parts[:end]
        if not all(head):
            break  # `a..b`: no folder is named by an empty level
        if end == 1 and head[0].upper() == "INBOX":
            continue
        out.append(".".join(head))
    return out


@dataclass(frozen=True)
class FolderTree:
    """The folders of a root: `ready` hold cur/ and new/, `virtual` are missing parents."""

    ready: frozenset[str]
    virtual: frozenset[str]

    @property
    def names(self) -> frozenset[str]:
        return self.ready | self.virtual


def scan_tree(root: Path) -> FolderTree:
    """List the root once and sort its dot directories into folders (two stats each)."""
    ready = frozenset(n for n in _dot_directories(root) if is_ready(folder_path(root, n)))
    virtual = frozenset(p for n in ready for p in _parents(n) if p not in ready)
    return FolderTree(ready, virtual)


def list_folders(root: Path) -> list[str]:
    """Every folder name under the root (without the leading dot), missing parents
    included, sorted."""
    return sorted(scan_tree(root).names)


def list_ready_folders(root: Path) -> list[str]:
    """The folders that hold cur/ and new/ (a folder being created has not yet)."""
    return sorted(scan_tree(root).ready)


def make_folder_dirs(root: Path, name: str) -> bool:
    """Give a folder its directory, `cur/`, `new/`, `tmp/` and `maildirfolder` where they
    are missing (a missing parent about to hold its first message); True when anything
    was made."""
    path = folder_path(root, name)
    made = False
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
        made = True
    for sub in _SUBDIRS:
        with contextlib.suppress(FileExistsError):
            (path / sub).mkdir(mode=0o700)
            made = True
    if name != INBOX and not (path / FOLDER_MARK).exists():
        (path / FOLDER_MARK).touch()
        made = True
    return made
