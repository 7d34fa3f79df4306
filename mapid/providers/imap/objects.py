"""The MAPI objects of the IMAP store: thin facades over the store's calls (`Backend`,
which ImapStore is, and its `writes`, writes.py), and the folders' properties.

A message keeps a client's changes until save_changes, as the Maildir store's does: flag
properties alone are one UID STORE; a new message is APPENDed; a changed one is APPENDed
anew and the old one expunged (IMAP cannot change a message in place, so its entry ID
changes: the object names the new one). Submit composes the message as it will be sent
and queues it in the local Outbox; a message that was on the server leaves it then.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from mapid.constants import FolderType, ObjectType, RecipientType
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import Folder, Identity, MapiObject, Message, Row, pick_props
from mapid.providers.imap.entryids import (
    KIND_FOLDER,
    KIND_MESSAGE,
    KIND_OUTBOX,
    KIND_ROOT,
    KIND_SUBTREE,
    Parsed,
)
from mapid.providers.imap.rows import FLAG_TAGS, flag_edits, flag_props
from mapid.providers.rfc5322 import (
    SETTABLE,
    MailRecipient,
    check_recipients,
    compose,
    message_props,
    parse_header_block,
    recipient_row,
    recipients_of,
    split_head,
)

if TYPE_CHECKING:
    from mapid.providers.imap.writes import Writes

__all__ = [
    "Backend",
    "ImapFolder",
    "ImapMessage",
    "ImapStoreObject",
    "folder_props",
]

SUBTREE_NAME = "Top of Information Store"
ROOT_NAME = "Root"
CONTAINER_CLASS = "IPF.Note"
NEW_FLAGS = ("\\Draft", "\\Seen")
"""A new message's flags, as the Maildir store gives one (DS): a draft, read."""
_COMPUTED = frozenset(
    {
        "PR_ENTRYID",
        "PR_RECORD_KEY",
        "PR_INSTANCE_KEY",
        "PR_PARENT_ENTRYID",
        "PR_STORE_ENTRYID",
        "PR_OBJECT_TYPE",
        "PR_MESSAGE_SIZE",
        "PR_MESSAGE_DELIVERY_TIME",
        "PR_LAST_MODIFICATION_TIME",
        "PR_HASATTACH",
        "PR_DISPLAY_TO",
        "PR_DISPLAY_CC",
        "PR_DISPLAY_BCC",
        "PR_TRANSPORT_MESSAGE_HEADERS",
        "PR_NORMALIZED_SUBJECT",
        "PR_SUBJECT_PREFIX",
        "PR_SENDER_NAME",
        "PR_SENDER_EMAIL_ADDRESS",
        "PR_SENDER_ADDRTYPE",
        "PR_SENDER_SEARCH_KEY",
    }
)
"""Message properties that follow from the message: setting them is MAPI_E_COMPUTED."""
_TYPES: dict[str, tuple[type, ...]] = {
    "PR_SUBJECT": (str,),
    "PR_BODY": (str,),
    "PR_BODY_HTML": (str,),
    "PR_HTML": (bytes, str),
    "PR_DELETE_AFTER_SUBMIT": (bool,),
    "PR_INTERNET_MESSAGE_ID": (str,),
    "PR_IN_REPLY_TO_ID": (str,),
    "PR_INTERNET_REFERENCES": (str,),
    "PR_CLIENT_SUBMIT_TIME": (datetime,),
    "PR_SENT_REPRESENTING_NAME": (str,),
    "PR_SENT_REPRESENTING_EMAIL_ADDRESS": (str,),
    "PR_MESSAGE_FLAGS": (int,),
    "PR_FLAG_STATUS": (int,),
    "PR_MSG_STATUS": (int,),
    "PR_LAST_VERB_EXECUTED": (int,),
    "PR_MESSAGE_CLASS": (str,),
}
_UNSAVED_GUESSES = frozenset(
    {"PR_INTERNET_MESSAGE_ID", "PR_CLIENT_SUBMIT_TIME", "PR_TRANSPORT_MESSAGE_HEADERS"}
)
"""What compose makes up for a new message: not shown before it is saved."""


def _check_settable(tag: str, value: Any) -> str | None:
    """The problem code for setting `tag` to `value` (the Maildir store's), or None."""
    if tag in _COMPUTED:
        return ErrorCode.MAPI_E_COMPUTED.name
    kinds = _TYPES.get(tag)
    if kinds is None:
        return ErrorCode.MAPI_E_NO_SUPPORT.name
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        return ErrorCode.MAPI_E_INVALID_TYPE.name
    if isinstance(value, datetime) and value.tzinfo is None:
        return ErrorCode.MAPI_E_INVALID_TYPE.name
    return None


class Backend(Protocol):
    """What the objects ask of their store (ImapStore)."""

    @property
    def writes(self) -> Writes: ...
    def store_props(self, *, writable: bool = True) -> dict[str, Any]: ...
    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject: ...
    def folder_eid(self, kind: str, name: str = "") -> bytes: ...
    def folder_props(self, kind: str, name: str) -> dict[str, Any]: ...
    def hierarchy_rows(self, kind: str, name: str) -> list[dict[str, Any]]: ...
    async def contents(self, kind: str, name: str) -> Sequence[Row]: ...
    async def message_props(
        self, name: str, validity: int, uid: int, *, whole: bool
    ) -> tuple[dict[str, Any], bytes, bool]: ...
    def parse(self, entryid: bytes) -> Parsed: ...
    def owns(self, entryid: bytes) -> bool: ...
    def validity(self, name: str) -> int: ...
    def current_flags(self, name: str, uid: int) -> tuple[str, ...]: ...
    def new_message_props(self, name: str) -> dict[str, Any]: ...
    async def queued_props(self, entryid: bytes) -> tuple[dict[str, Any], bytes]: ...
    def require_online(self, what: str) -> None: ...


class ImapStoreObject(Folder):
    """The store object (IMsgStore)."""

    object_type = ObjectType.MAPI_STORE

    def __init__(self, store: Backend, writable: bool = True) -> None:
        self._store = store
        self.writable = writable

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        return pick_props(self._store.store_props(writable=self.writable), tags)

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

    def _need_mailbox(self, what: str) -> None:
        if self.kind != KIND_FOLDER:
            where = {KIND_ROOT: "the root folder", KIND_SUBTREE: "the IPM subtree"}
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                f"{where.get(self.kind, 'the Outbox (local: submit a message to queue it)')}"
                f" holds no server messages: {what} in one of the server's folders",
            )

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
        if self.kind not in (KIND_SUBTREE, KIND_FOLDER):
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                "folders are created in the IPM subtree or below a server folder",
            )
        parent = self.name if self.kind == KIND_FOLDER else None
        full = await self._store.writes.create_folder(parent, name)
        folder = ImapFolder(self._store, KIND_FOLDER, full)
        return folder, folder.entryid

    async def delete_folder(self, entryid: bytes) -> None:
        """IMAPIFolder::DeleteFolder of a sub-folder, with its messages (IMAP DELETE)."""
        parsed = self._store.parse(entryid)
        if parsed.kind != KIND_FOLDER:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "not a folder of this folder")
        info = self._store.folder_props(parsed.kind, parsed.mailbox)
        if info.get("PR_PARENT_ENTRYID") != self.entryid:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "not a folder of this folder")
        await self._store.writes.delete_folder(parsed.mailbox)

    async def create_message(self) -> Message:
        self._need_mailbox("create messages")
        return ImapMessage(self._store, self.name, 0, 0)

    async def import_message(self, mime: bytes) -> bytes:
        self._need_mailbox("import messages")
        if not isinstance(mime, bytes) or not mime.strip():
            raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "mime must be non-empty bin")
        return await self._store.writes.append(self.name, mime, ("\\Seen",))

    def _uids(self, entryids: Sequence[bytes], *, strict: bool) -> tuple[int, list[int]]:
        """(UIDVALIDITY, UIDs) of messages of this folder. Another folder's (or not a
        message) is MAPI_E_NOT_FOUND; a renumbered one too when `strict`, else skipped."""
        validity = self._store.validity(self.name)
        uids = []
        for entryid in entryids:
            parsed = self._store.parse(entryid)
            if parsed.kind != KIND_MESSAGE or parsed.mailbox != self.name:
                what = "that message is not" if parsed.kind == KIND_MESSAGE else "not a message"
                raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"{what} in this folder")
            if parsed.uidvalidity == validity:
                uids.append(parsed.uid)
            elif strict:
                raise MapiError(
                    ErrorCode.MAPI_E_NOT_FOUND,
                    "the folder was renumbered on the server: that message is gone",
                )
        return validity, uids

    async def delete_messages(self, entryids: Sequence[bytes]) -> None:
        if self.kind == KIND_OUTBOX:
            await self._store.writes.drop_queued(entryids)
            return
        self._need_mailbox("delete messages")
        validity, uids = self._uids(entryids, strict=False)
        await self._store.writes.delete(self.name, validity, uids)

    async def copy_messages(
        self, entryids: Sequence[bytes], dest: bytes, move: bool
    ) -> list[bytes]:
        self._need_mailbox("move messages" if move else "copy messages")
        validity, uids = self._uids(entryids, strict=True)
        if not self._store.owns(dest):
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT, "dest is a folder of another store: copy through MIME"
            )
        target = self._store.parse(dest)
        if target.kind != KIND_FOLDER:
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER, "dest must be a folder that holds messages"
            )
        return await self._store.writes.copy(self.name, validity, uids, target.mailbox, move)


class ImapMessage(Message):
    """A message of a server mailbox, named by its UIDVALIDITY and UID (0: a new message,
    not saved yet), or one queued in the local Outbox (`queued`, its entry ID). A server
    message's body comes from the cache, else from the server on first use."""

    object_type = ObjectType.MAPI_MESSAGE

    def __init__(
        self, store: Backend, name: str, validity: int, uid: int, queued: bytes | None = None
    ) -> None:
        self._store = store
        self.folder = name
        self.validity = validity
        self.uid = uid
        self.queued = queued
        self._loaded: tuple[dict[str, Any], bytes] | None = None
        self._changes: dict[str, Any] = {}
        self._deleted: set[str] = set()
        self._flags: dict[str, Any] = {}
        self._recipients: list[dict[str, Any]] | None = None

    @property
    def _new(self) -> bool:
        return not self.uid and self.queued is None

    @property
    def _content(self) -> bool:
        return bool(self._changes or self._deleted or self._recipients is not None)

    @property
    def pending(self) -> bool:
        return self._content or bool(self._flags)

    async def _load(self, *, whole: bool) -> tuple[dict[str, Any], bytes]:
        if self.queued is not None:
            return await self._store.queued_props(self.queued)
        if not self.uid:
            return self._store.new_message_props(self.folder), b""
        if self._loaded is None:
            props, raw, complete = await self._store.message_props(
                self.folder, self.validity, self.uid, whole=whole
            )
            if not complete:
                return props, raw  # only the cached headers (offline): ask again next time
            self._loaded = (props, raw)
        return self._loaded

    def _flag_set(self) -> set[str]:
        """The IMAP flags the message will have once saved (never \\Recent: the server's)."""
        if self.uid:
            flags = set(self._store.current_flags(self.folder, self.uid))
        else:
            flags = set(NEW_FLAGS)
        add, remove = flag_edits(self._flags)
        gone = {f.lower() for f in remove} | {"\\recent"}
        return {f for f in flags if f.lower() not in gone} | add

    def _mail_recipients(self) -> list[MailRecipient] | None:
        if self._recipients is None:
            return None
        return [_mail_recipient(r) for r in self._recipients]

    def _composed(self, raw: bytes) -> bytes:
        old = None if self._new else raw
        return compose(old, self._changes, self._deleted, self._mail_recipients())

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        base, raw = await self._load(whole=self._content)
        props = dict(base)
        if self._new and not self.pending:
            props.update(_empty_preview())
        elif self._new or self._content:
            # What the message will say once saved: its display lines, body and subject
            # parts follow from the MIME it will be, not only from the tags that were set.
            shown, _ = message_props(self._composed(raw))
            for tag in _UNSAVED_GUESSES:
                if tag not in self._changes:
                    shown.pop(tag, None)
            for tag in self._deleted:
                props.pop(tag, None)
                shown.pop(tag, None)
            props.update(shown)
        props.update(self._changes)
        if self._flags or self._new:
            props.update(flag_props(self._flag_set(), bool(props.get("PR_HASATTACH"))))
        return pick_props(props, tags)

    async def get_mime(self) -> bytes:
        _, raw = await self._load(whole=True)
        return self._composed(raw) if self._new or self._content else raw

    async def recipients_rows(self) -> Sequence[Row]:
        if self._recipients is not None:
            rows = []
            for rowid, given in enumerate(self._recipients, start=1):
                row = dict(given)
                row.update(recipient_row(_mail_recipient(given), rowid))
                rows.append(row)
            return rows
        _, raw = await self._load(whole=False)
        recipients = recipients_of(parse_header_block(split_head(raw))) if raw else []
        return [recipient_row(r, i) for i, r in enumerate(recipients, start=1)]

    def _writable(self) -> None:
        if self.queued is not None:
            raise MapiError(
                ErrorCode.MAPI_E_NO_ACCESS,
                "the message is queued in the Outbox: delete it from there to stop sending it",
            )

    async def set_props(self, props: Mapping[str, Any]) -> dict[str, str]:
        self._writable()
        problems: dict[str, str] = {}
        for tag, value in props.items():
            problem = _check_settable(tag, value)
            if problem is not None:
                problems[tag] = problem
            elif tag in FLAG_TAGS:
                self._flags[tag] = value
            elif tag != "PR_MESSAGE_CLASS":  # the class follows from the MIME type
                self._changes[tag] = value
                self._deleted.discard(tag)
        return problems

    async def delete_props(self, tags: list[str]) -> dict[str, str]:
        self._writable()
        problems: dict[str, str] = {}
        for tag in tags:
            if tag in SETTABLE:
                self._deleted.add(tag)
                self._changes.pop(tag, None)
            elif tag in ("PR_FLAG_STATUS", "PR_LAST_VERB_EXECUTED"):
                self._flags[tag] = None
            else:
                problems[tag] = (
                    ErrorCode.MAPI_E_COMPUTED.name
                    if tag in _COMPUTED
                    else ErrorCode.MAPI_E_NO_SUPPORT.name
                )
        return problems

    async def modify_recipients(self, recipients: Sequence[Mapping[str, Any]]) -> None:
        self._writable()
        self._recipients = check_recipients(recipients, "an IMAP")

    def _clear(self) -> None:
        self._changes.clear()
        self._deleted.clear()
        self._flags.clear()
        self._recipients = None
        self._loaded = None

    async def save_changes(self) -> None:
        self._writable()
        if self.uid and not self.pending:
            return
        writes = self._store.writes
        if self.uid and not self._content:
            await writes.set_flags(self.folder, self.validity, self.uid, dict(self._flags))
        else:
            _, raw = await self._load(whole=True)
            flags = sorted(self._flag_set())
            entryid = await writes.append(self.folder, self._composed(raw), flags)
            if self.uid:  # IMAP changes no message in place: the new one replaces it
                await writes.delete(self.folder, self.validity, [self.uid])
            made = self._store.parse(entryid)
            self.validity, self.uid = made.uidvalidity, made.uid
        self._clear()

    async def submit(self, *, sender: Identity | None = None) -> bytes:
        if self.queued is not None:
            return self.queued
        raw = b""
        if self.uid:
            self._store.require_online("submit a message stored on the server")
            _, raw = await self._load(whole=True)
        changes = dict(self._changes)
        given = "PR_SENT_REPRESENTING_EMAIL_ADDRESS"
        if (
            sender is not None
            and "@" in sender.email
            and given not in changes
            and given not in self._deleted
            and not (parse_header_block(split_head(raw)).get("from") or "").strip()
        ):
            changes["PR_SENT_REPRESENTING_NAME"] = sender.display_name
            changes[given] = sender.email
        if self.uid and not (changes or self._deleted or self._recipients is not None):
            data = raw
        else:
            old = raw if self.uid else None
            data = compose(old, changes, self._deleted, self._mail_recipients())
        queued = await self._store.writes.submit(data)
        if self.uid:  # the Outbox has it now: it leaves the server's folder
            await self._store.writes.delete(self.folder, self.validity, [self.uid])
        self.queued, self.uid = queued, 0
        self._clear()
        return queued


@functools.cache
def _empty_preview_props() -> tuple[tuple[str, Any], ...]:
    shown, _ = message_props(compose(None, {}, set(), None))
    return tuple((k, v) for k, v in shown.items() if k not in _UNSAVED_GUESSES)


def _empty_preview() -> dict[str, Any]:
    """What a new message shows before anything is set (composed once)."""
    return dict(_empty_preview_props())


def _mail_recipient(row: Mapping[str, Any]) -> MailRecipient:
    address = str(row.get("PR_EMAIL_ADDRESS", "")).strip()
    name = row.get("PR_DISPLAY_NAME")
    return MailRecipient(
        str(name) if isinstance(name, str) and name else address,
        address,
        RecipientType(int(row.get("PR_RECIPIENT_TYPE", 1))),
    )


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
