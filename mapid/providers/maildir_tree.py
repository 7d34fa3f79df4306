"""The folder tree of a Maildir++ root: which dot directories are folders (maildir_tree.py).

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

import base64
import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mapid.errors import ErrorCode, MapiError

__all__ = [
    "INBOX",
    "FolderTree",
    "check_folder_name",
    "folder_path",
    "is_ready",
    "list_folders",
    "list_ready_folders",
    "make_folder_dirs",
    "mutf7_decode",
    "mutf7_encode",
    "parent_of",
    "scan_tree",
]

INBOX = ""
"""The Inbox's folder name: the Maildir root itself."""
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


# --- Folder names ---------------------------------------------------------------------------

_MUTF7_RUN = re.compile(r"&([A-Za-z0-9+,]*)-")


def mutf7_encode(text: str) -> str:
    """IMAP's modified UTF-7 (RFC 3501 5.1.3), as Dovecot names Maildir++ folders."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ","))
            out.append("-")
            run.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(text: str) -> str:
    """The inverse of mutf7_encode; a name that is not valid modified UTF-7 stays as it is
    (mutt writes raw UTF-8 names)."""

    def one(match: re.Match[str]) -> str:
        body = match.group(1)
        if not body:
            return "&"
        data = body.replace(",", "/")
        data += "=" * (-len(data) % 4)
        return base64.b64decode(data).decode("utf-16-be")

    try:
        return _MUTF7_RUN.sub(one, text)
    except (ValueError, UnicodeDecodeError):
        return text


def parent_of(name: str, names: set[str]) -> str | None:
    """The folder a folder is listed under: its nearest existing ancestor, the Inbox for
    `INBOX.x`, or None for the IPM subtree."""
    if name == INBOX:
        return None
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:end])
        if end == 1 and candidate.upper() == "INBOX":
            return INBOX
        if candidate in names:
            return candidate
    return None


def check_folder_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "a folder name must not be empty")
    bad = [ch for ch in (".", "/", "\\") if ch in name]
    if bad or any(ord(ch) < 0x20 for ch in name):
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            f"folder name {name!r} holds {bad[0] if bad else 'a control character'!r}: Maildir++"
            " uses '.' between folder levels, so '.', '/' and '\\' cannot be in a name",
        )
    if name != name.strip():
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            f"folder name {name!r} starts or ends with a space",
        )
    return name
