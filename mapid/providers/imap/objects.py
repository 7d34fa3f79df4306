"""The MAPI objects of the IMAP store: thin facades over the store's calls (`Backend`,
which ImapStore is), and the folders' properties.

Stage 1 reads: hierarchy and contents tables, properties, recipients, MIME. What writes
(flags, messages, folders, submit) answers MAPI_E_NO_SUPPORT saying so; the read path
already has the shape the write path will use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, Protocol

from mapid.constants import FolderType, ObjectType
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import Folder, Identity, MapiObject, Message, Row, pick_props
from mapid.providers.imap.entryids import KIND_FOLDER, KIND_OUTBOX, KIND_ROOT, KIND_SUBTREE
from mapid.providers.rfc5322 import parse_header_block, recipient_row, recipients_of, split_head

__all__ = [
    "Backend",
    "ImapFolder",
    "ImapMessage",
    "ImapStoreObject",
    "folder_props",
    "read_only",
]

SUBTREE_NAME = "Top of Information Store"
ROOT_NAME = "Root"
CONTAINER_CLASS = "IPF.Note"


def read_only(what: str) -> NoReturn:
    """Stage 1 of the imap store reads only: the write path comes later."""
    raise MapiError(
        ErrorCode.MAPI_E_NO_SUPPORT,
        f"imap: {what} is not supported yet (this version of the IMAP store is read-only)",
    )


class Backend(Protocol):
    """What the objects ask of their store (ImapStore)."""

    def store_props(self) -> dict[str, Any]: ...
    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject: ...
    def folder_eid(self, kind: str, name: str = "") -> bytes: ...
    def folder_props(self, kind: str, name: str) -> dict[str, Any]: ...
    def hierarchy_rows(self, kind: str, name: str) -> list[dict[str, Any]]: ...
    async def contents(self, kind: str, name: str) -> Sequence[Row]: ...
    async def message_props(
        self, name: str, validity: int, uid: int, *, whole: bool
    ) -> tuple[dict[str, Any], bytes, bool]: ...


class ImapStoreObject(Folder):
    """The store object (IMsgStore)."""

    object_type = ObjectType.MAPI_STORE

    def __init__(self, store: Backend) -> None:
        self._store = store

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        return pick_props(self._store.store_props(), tags)

    async def open_child(self, entryid: bytes | None, flags: int) -> MapiObject:
        if entryid is None:
            return ImapFolder(self._store, KIND_ROOT, "")
        return await self._store.open_entry(entryid, flags)


class ImapFolder(Folder):
    """The root, the IPM subtree, the local Outbox, or a server mailbox."""

    object_type = ObjectType.MAPI_FOLDER

    def __init__(self, store: Backend, kind: str, name: str) -> None:
        self._store = store
        self.kind = kind
        self.name = name

    @property
    def entryid(self) -> bytes:
        return self._store.folder_eid(self.kind, self.name)

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        return pick_props(self._store.folder_props(self.kind, self.name), tags)

    async def hierarchy_rows(self) -> Sequence[Row]:
        return self._store.hierarchy_rows(self.kind, self.name)

    async def contents_rows(self) -> Sequence[Row]:
        return await self._store.contents(self.kind, self.name)

    async def open_child(self, entryid: bytes | None, flags: int) -> MapiObject:
        if entryid is None:
            return ImapFolder(self._store, KIND_ROOT, "")
        return await self._store.open_entry(entryid, flags)

    async def create_folder(self, name: str) -> tuple[Folder, bytes]:
        read_only("creating folders")

    async def create_message(self) -> Message:
        read_only("creating messages")

    async def import_message(self, mime: bytes) -> bytes:
        read_only("importing messages")

    async def delete_messages(self, entryids: Sequence[bytes]) -> None:
        read_only("deleting messages")

    async def copy_messages(
        self, entryids: Sequence[bytes], dest: bytes, move: bool
    ) -> list[bytes]:
        read_only("moving messages" if move else "copying messages")


class ImapMessage(Message):
    """A message of a server mailbox, named by its UIDVALIDITY and UID. Its body comes from
    the cache, else from the server on first use (and is cached then)."""

    object_type = ObjectType.MAPI_MESSAGE

    def __init__(self, store: Backend, name: str, validity: int, uid: int) -> None:
        self._store = store
        self.folder = name
        self.validity = validity
        self.uid = uid
        self._loaded: tuple[dict[str, Any], bytes] | None = None

    async def _load(self, *, whole: bool) -> tuple[dict[str, Any], bytes]:
        if self._loaded is None:
            props, raw, complete = await self._store.message_props(
                self.folder, self.validity, self.uid, whole=whole
            )
            if not complete:
                return props, raw  # only the cached headers (offline): ask again next time
            self._loaded = (props, raw)
        return self._loaded

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        props, _ = await self._load(whole=False)
        return pick_props(props, tags)

    async def get_mime(self) -> bytes:
        _, raw = await self._load(whole=True)
        return raw

    async def recipients_rows(self) -> Sequence[Row]:
        _, raw = await self._load(whole=False)
        recipients = recipients_of(parse_header_block(split_head(raw)))
        return [recipient_row(r, i) for i, r in enumerate(recipients, start=1)]

    async def set_props(self, props: Mapping[str, Any]) -> dict[str, str]:
        read_only("changing a message (read state, flags, properties)")

    async def delete_props(self, tags: list[str]) -> dict[str, str]:
        read_only("changing a message")

    async def modify_recipients(self, recipients: Sequence[Mapping[str, Any]]) -> None:
        read_only("changing a message's recipients")

    async def submit(self, *, sender: Identity | None = None) -> bytes:
        read_only("sending")


def folder_props(
    uid_eid: bytes,
    eid: bytes,
    parent: bytes,
    kind: str,
    display: str,
    counts: tuple[int, int],
    subfolders: bool,
) -> dict[str, Any]:
    """A folder's properties (also its hierarchy row); `uid_eid` is the store's entry ID."""
    ftype = FolderType.FOLDER_ROOT if kind == KIND_ROOT else FolderType.FOLDER_GENERIC
    props: dict[str, Any] = {
        "PR_ENTRYID": eid,
        "PR_RECORD_KEY": eid,
        "PR_INSTANCE_KEY": eid,
        "PR_PARENT_ENTRYID": parent,
        "PR_STORE_ENTRYID": uid_eid,
        "PR_DISPLAY_NAME": display,
        "PR_OBJECT_TYPE": int(ObjectType.MAPI_FOLDER),
        "PR_FOLDER_TYPE": int(ftype),
        "PR_CONTENT_COUNT": counts[0],
        "PR_CONTENT_UNREAD": counts[1],
        "PR_SUBFOLDERS": subfolders,
    }
    if kind in (KIND_SUBTREE, KIND_OUTBOX, KIND_FOLDER):
        props["PR_CONTAINER_CLASS"] = CONTAINER_CLASS
    return props
