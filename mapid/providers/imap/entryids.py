"""Entry IDs of the IMAP store: the one place their bytes are built and parsed (pure).

After the 4 flag bytes and the store's MAPIUID (the file `mapid.uid` in the account's cache
directory), the provider-private bytes are version 0x01 and a kind letter:

- `store`: the store object; `R` the root folder; `T` the IPM subtree; `O` the local Outbox;
- `F` + the mailbox's server name (UTF-8): a server folder;
- `M` + UIDVALIDITY (4 bytes, big-endian) + UID (4 bytes) + the mailbox name: a message;
- `Q` + the file's key (ASCII): a message queued in the local Outbox.

A message's entry ID holds what IMAP promises to keep (RFC 3501 2.3.1.1): the UID within a
mailbox, valid while the mailbox's UIDVALIDITY stays. So it survives restarts, reconnects
and flag changes; after a UIDVALIDITY change it names nothing (MAPI_E_NOT_FOUND).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mapid.entryid import make, private_of, uid_of
from mapid.errors import ErrorCode, MapiError

__all__ = [
    "KIND_FOLDER",
    "KIND_MESSAGE",
    "KIND_OUTBOX",
    "KIND_QUEUED",
    "KIND_ROOT",
    "KIND_STORE",
    "KIND_SUBTREE",
    "Parsed",
    "compare_entryids",
    "folder_entryid",
    "message_entryid",
    "parse_entryid",
    "queued_entryid",
    "store_entryid",
]

KIND_STORE, KIND_ROOT, KIND_SUBTREE, KIND_OUTBOX, KIND_FOLDER, KIND_MESSAGE, KIND_QUEUED = (
    "store",
    "root",
    "subtree",
    "outbox",
    "folder",
    "message",
    "queued",
)
_FIXED = {
    KIND_STORE: b"\x01store",
    KIND_ROOT: b"\x01R",
    KIND_SUBTREE: b"\x01T",
    KIND_OUTBOX: b"\x01O",
}
_BY_BYTES = {value: kind for kind, value in _FIXED.items()}
_FOLDER = b"\x01F"
_MESSAGE = b"\x01M"
_QUEUED = b"\x01Q"
_NUMBERS = struct.Struct(">II")


@dataclass(frozen=True)
class Parsed:
    """What an entry ID names: its kind, the mailbox (server folders and messages), and
    a message's UIDVALIDITY and UID."""

    kind: str
    mailbox: str = ""
    """The mailbox of a server folder or message; the file's key of a queued message."""
    uidvalidity: int = 0
    uid: int = 0


def store_entryid(uid: bytes) -> bytes:
    return make(uid, _FIXED[KIND_STORE])


def folder_entryid(uid: bytes, kind: str, mailbox: str = "") -> bytes:
    """The entry ID of a folder: the root, the subtree, the Outbox, or a server mailbox."""
    if kind == KIND_FOLDER:
        return make(uid, _FOLDER + mailbox.encode("utf-8", "surrogateescape"))
    return make(uid, _FIXED[kind])


def message_entryid(uid: bytes, mailbox: str, uidvalidity: int, message_uid: int) -> bytes:
    return make(
        uid,
        _MESSAGE
        + _NUMBERS.pack(uidvalidity, message_uid)
        + mailbox.encode("utf-8", "surrogateescape"),
    )


def queued_entryid(uid: bytes, key: str) -> bytes:
    """A message of the local Outbox, by its file's key."""
    return make(uid, _QUEUED + key.encode("ascii"))


def parse_entryid(uid: bytes, entryid: bytes) -> Parsed:
    """What an entry ID of the store whose MAPIUID is `uid` names."""
    if not isinstance(entryid, bytes) or uid_of(entryid) != uid:
        raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "not an entry ID of this store")
    private = private_of(entryid)
    kind = _BY_BYTES.get(private)
    if kind is not None:
        return Parsed(kind)
    try:
        if private.startswith(_FOLDER) and len(private) > 2:
            return Parsed(KIND_FOLDER, private[2:].decode("utf-8", "surrogateescape"))
        if private.startswith(_MESSAGE) and len(private) > 2 + _NUMBERS.size:
            validity, number = _NUMBERS.unpack_from(private, 2)
            mailbox = private[2 + _NUMBERS.size :].decode("utf-8", "surrogateescape")
            if number > 0:
                return Parsed(KIND_MESSAGE, mailbox, validity, number)
        if private.startswith(_QUEUED) and len(private) > 2:
            key = private[2:].decode("ascii")
            if key.replace("-", "").isalnum():
                return Parsed(KIND_QUEUED, key)
    except (UnicodeDecodeError, struct.error):
        pass
    raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "no object with that entry ID in this store")


def compare_entryids(a: bytes, b: bytes) -> bool:
    """Same object, whatever the flag bytes say."""
    return a[4:] == b[4:]
