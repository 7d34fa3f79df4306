"""The server's mailboxes -> MAPI's folder tree: roles, display names, parents (pure).

INBOX is the Inbox. The special-use mailboxes (RFC 6154 attributes in LIST, or Gmail's
XLIST ones) are Sent Items, Deleted Items, Drafts and Junk; a server that marks none gets
the usual names (Sent, Trash, Drafts, Junk and their kin) taken for them. The rest keep
their names and hierarchy: a mailbox's parent is the longest listed prefix of its name
before the LIST delimiter; special folders and mailboxes without a listed parent sit in the
IPM subtree itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mapid.errors import ErrorCode, MapiError

__all__ = [
    "INBOX",
    "ROLES",
    "ROLE_NAMES",
    "FolderInfo",
    "Tree",
    "build_tree",
    "check_folder_name",
]

INBOX = "INBOX"
ROLES = ("inbox", "sent", "trash", "drafts", "junk")
ROLE_NAMES = {
    "inbox": "Inbox",
    "outbox": "Outbox",
    "sent": "Sent Items",
    "trash": "Deleted Items",
    "drafts": "Drafts",
    "junk": "Junk",
}
"""MAPI display names of the special folders; the Outbox is mapid's own, not the server's."""
ORDER = ("inbox", "outbox", "sent", "trash", "drafts", "junk")
"""The order the IPM subtree lists the special folders in (the others follow by name)."""
_ATTRIBUTES = {
    b"\\sent": "sent",
    b"\\trash": "trash",
    b"\\drafts": "drafts",
    b"\\junk": "junk",
    b"\\spam": "junk",  # XLIST
    b"\\inbox": "inbox",  # XLIST
}
_USUAL_NAMES = {
    "sent": ("sent", "sent items", "sent messages", "sent mail"),
    "trash": ("trash", "deleted items", "deleted messages", "bin"),
    "drafts": ("drafts", "draft"),
    "junk": ("junk", "spam", "junk e-mail", "junk email"),
}


@dataclass(frozen=True)
class FolderInfo:
    """One server mailbox as MAPI shows it."""

    name: str
    """The server's name (decoded from modified UTF-7), what entry IDs hold."""
    display: str
    role: str | None
    parent: str | None
    """The server name of the parent folder; None: the IPM subtree."""
    selectable: bool
    delimiter: str


@dataclass(frozen=True)
class Tree:
    """The account's folders, by server name, with the special ones by role."""

    folders: dict[str, FolderInfo]
    roles: dict[str, str]
    """role -> server name."""

    def children(self, parent: str | None) -> list[FolderInfo]:
        """The folders directly below `parent` (None: the IPM subtree), in table order."""
        kids = [f for f in self.folders.values() if f.parent == parent]
        kids.sort(key=_order)
        return kids

    def has_children(self, name: str) -> bool:
        return any(f.parent == name for f in self.folders.values())


def _order(info: FolderInfo) -> tuple[int, str, str]:
    rank = ORDER.index(info.role) if info.role in ORDER else len(ORDER)
    return rank, info.display.casefold(), info.name


def _flags(raw: Iterable[bytes | str]) -> set[bytes]:
    return {(f.encode() if isinstance(f, str) else bytes(f)).lower() for f in raw}


def build_tree(listing: Sequence[tuple[Sequence[bytes | str], bytes | str | None, str]]) -> Tree:
    """The tree from IMAPClient's list_folders (or xlist_folders): (flags, delim, name)."""
    entries: dict[str, tuple[set[bytes], str]] = {}
    for flags, delim, name in listing:
        flagset = _flags(flags)
        if b"\\nonexistent" in flagset:
            continue
        if name.upper() == INBOX:
            name = INBOX
        text = delim.decode() if isinstance(delim, bytes) else (delim or "")
        entries[name] = (flagset, text)
    entries.setdefault(INBOX, (set(), next((d for _, d in entries.values() if d), "")))
    roles: dict[str, str] = {"inbox": INBOX}
    for name, (flagset, _) in sorted(entries.items()):
        for attribute, special in _ATTRIBUTES.items():
            if attribute in flagset and special not in roles:
                roles[special] = name
    for special, usual in _USUAL_NAMES.items():
        if special in roles:
            continue
        for name, (_, delim) in sorted(entries.items()):
            leaf = name.rsplit(delim, 1)[-1] if delim else name
            if name != INBOX and leaf.casefold() in usual and name not in roles.values():
                roles[special] = name
                break
    role_of = {name: role for role, name in roles.items()}
    folders: dict[str, FolderInfo] = {}
    for name, (flagset, delim) in entries.items():
        role: str | None = role_of.get(name)
        parent = None if role is not None else _parent(name, delim, entries)
        leaf = name.rsplit(delim, 1)[-1] if delim else name
        folders[name] = FolderInfo(
            name=name,
            display=ROLE_NAMES[role] if role is not None else (leaf or name),
            role=role,
            parent=parent,
            selectable=b"\\noselect" not in flagset,
            delimiter=delim,
        )
    return Tree(folders, roles)


def _parent(name: str, delim: str, entries: dict[str, tuple[set[bytes], str]]) -> str | None:
    if not delim:
        return None
    parts = name.split(delim)
    for end in range(len(parts) - 1, 0, -1):
        candidate = delim.join(parts[:end])
        if candidate in entries:
            return candidate
        if candidate.upper() == INBOX:
            return INBOX
    return None


def check_folder_name(name: object, delimiter: str) -> str:
    """A new folder's name: not empty, no hierarchy delimiter, no LIST wildcard."""
    if not isinstance(name, str) or not name.strip():
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "a folder name must not be empty")
    bad = [ch for ch in {delimiter, "/", "\\", "*", "%"} if ch and ch in name]
    if bad or any(ord(ch) < 0x20 for ch in name):
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            f"folder name {name!r} holds {bad[0] if bad else 'a control character'!r}: the "
            f"server puts {delimiter!r} between folder levels, and '/', '\\', '*' and '%' "
            "cannot be in a name",
        )
    if name != name.strip():
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER, f"folder name {name!r} starts or ends with a space"
        )
    return name
