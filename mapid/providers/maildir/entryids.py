"""Entry IDs of the Maildir store: the one place their bytes are built and parsed.

Layout of the provider-private bytes of an entry ID (after the 4 flag bytes and the
store's MAPIUID): version 0x01, then a kind letter: `store` (the store object), `R` the root
folder, `T` the IPM subtree, `F` + folder name (UTF-8; empty for the Inbox), `M` + folder
name + NUL + Maildir key (a message). A message's entry ID names its folder and its Maildir
key (the file name without the flags), so it stays valid across restarts, profile edits,
flag changes and the move from new/ to cur/.

The functions take the store's MAPIUID (`mapid.uid` of the Maildir root); MaildirStore
passes its own.
"""

from __future__ import annotations

from mapid.entryid import make, private_of, uid_of
from mapid.errors import ErrorCode, MapiError
from mapid.providers.maildir.names import INBOX, display_of

__all__ = [
    "KIND_FOLDER",
    "KIND_MESSAGE",
    "KIND_ROOT",
    "KIND_STORE",
    "KIND_SUBTREE",
    "compare_entryids",
    "folder_entryid",
    "message_entryid",
    "message_key_in",
    "messages_prefix",
    "parse_entryid",
    "store_entryid",
]

_STORE_PRIVATE = b"\x01store"
_ROOT_PRIVATE = b"\x01R"
_SUBTREE_PRIVATE = b"\x01T"
_FOLDER_MARK = b"\x01F"
_MESSAGE_MARK = b"\x01M"
KIND_STORE, KIND_ROOT, KIND_SUBTREE, KIND_FOLDER, KIND_MESSAGE = (
    "store",
    "root",
    "subtree",
    "folder",
    "message",
)


def store_entryid(uid: bytes) -> bytes:
    """The long-term entry ID of the store (msg_stores_table's PR_ENTRYID)."""
    return make(uid, _STORE_PRIVATE)


def folder_entryid(uid: bytes, kind: str, name: str = INBOX) -> bytes:
    if kind == KIND_ROOT:
        return make(uid, _ROOT_PRIVATE)
    if kind == KIND_SUBTREE:
        return make(uid, _SUBTREE_PRIVATE)
    return make(uid, _FOLDER_MARK + name.encode("utf-8", "surrogateescape"))


def message_entryid(uid: bytes, folder: str, key: str) -> bytes:
    return make(
        uid,
        _MESSAGE_MARK
        + folder.encode("utf-8", "surrogateescape")
        + b"\0"
        + key.encode("utf-8", "surrogateescape"),
    )


def messages_prefix(uid: bytes, folder: str) -> bytes:
    """What the entry ID of every message of `folder` starts with (the key follows)."""
    return make(uid, _MESSAGE_MARK + folder.encode("utf-8", "surrogateescape") + b"\0")


def parse_entryid(uid: bytes, entryid: bytes) -> tuple[str, str, str]:
    """(kind, folder name, message key) of an entry ID of the store whose MAPIUID is `uid`."""
    if not isinstance(entryid, bytes) or uid_of(entryid) != uid:
        raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "not an entry ID of this store")
    private = private_of(entryid)
    if private == _STORE_PRIVATE:
        return KIND_STORE, INBOX, ""
    if private == _ROOT_PRIVATE:
        return KIND_ROOT, INBOX, ""
    if private == _SUBTREE_PRIVATE:
        return KIND_SUBTREE, INBOX, ""
    try:
        if private.startswith(_FOLDER_MARK):
            return KIND_FOLDER, private[2:].decode("utf-8", "surrogateescape"), ""
        if private.startswith(_MESSAGE_MARK) and b"\0" in private:
            folder, _, key = private[2:].partition(b"\0")
            if key and b"/" not in key and b"/" not in folder:
                return (
                    KIND_MESSAGE,
                    folder.decode("utf-8", "surrogateescape"),
                    key.decode("utf-8", "surrogateescape"),
                )
    except UnicodeDecodeError:
        pass
    raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no object with that entry ID in this store")


def message_key_in(uid: bytes, entryid: bytes, folder: str) -> str:
    """The Maildir key of a message entry ID of `folder`; MAPI_E_NOT_FOUND for another."""
    kind, where, key = parse_entryid(uid, entryid)
    if kind != KIND_MESSAGE or where != folder:
        raise MapiError(
            ErrorCode.MAPI_E_NOT_FOUND,
            f"{'that message is not' if kind == KIND_MESSAGE else 'not a message'} in "
            f"the folder {display_of(folder)!r}",
        )
    return key


def compare_entryids(a: bytes, b: bytes) -> bool:
    """Same object, whatever the flag bytes say."""
    return a[4:] == b[4:]
