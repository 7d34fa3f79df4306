"""The MAPI objects of the Maildir store: thin facades over the store's calls.

The store object (IMsgStore), its folders and its messages hold no disk code: each method
asks the store (`Backend`, which MaildirStore is), and a message keeps its pending changes
until save_changes or submit. The checks of what a client may set live here too.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from mapid.constants import FolderType, ObjectType, RecipientType
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_CONTAINER_CLASS,
    PR_CONTENT_COUNT,
    PR_CONTENT_UNREAD,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_FLAG_STATUS,
    PR_FOLDER_TYPE,
    PR_INSTANCE_KEY,
    PR_INTERNET_MESSAGE_ID,
    PR_LAST_MODIFICATION_TIME,
    PR_MESSAGE_CLASS,
    PR_MESSAGE_DELIVERY_TIME,
    PR_MESSAGE_SIZE,
    PR_OBJECT_TYPE,
    PR_PARENT_ENTRYID,
    PR_RECORD_KEY,
    PR_SENT_REPRESENTING_EMAIL_ADDRESS,
    PR_SENT_REPRESENTING_NAME,
    PR_STORE_ENTRYID,
    PR_SUBFOLDERS,
)
from mapid.providers.base import Folder, Identity, MapiObject, Message, Row, pick_props
from mapid.providers.maildir import entryids
from mapid.providers.maildir.entryids import KIND_FOLDER, KIND_ROOT, KIND_SUBTREE
from mapid.providers.maildir.flags import FLAG_TAGS, apply_flags
from mapid.providers.maildir.names import (
    INBOX,
    STANDARD_FOLDERS,
    display_of,
    name_order,
    parent_of,
)
from mapid.providers.rfc5322 import (
    SETTABLE,
    MailRecipient,
    Save,
    check_recipients,
    compose,
    message_props,
    parse_header_block,
    recipient_row,
    split_head,
)

__all__ = [
    "Backend",
    "MaildirFolder",
    "MaildirMessage",
    "MaildirStoreObject",
    "children",
    "props_of_folder",
]

_COMPUTED = frozenset(
    {
        PR_ENTRYID.name,
        PR_RECORD_KEY.name,
        PR_INSTANCE_KEY.name,
        PR_PARENT_ENTRYID.name,
        PR_STORE_ENTRYID.name,
        PR_OBJECT_TYPE.name,
        PR_MESSAGE_SIZE.name,
        PR_MESSAGE_DELIVERY_TIME.name,
        PR_LAST_MODIFICATION_TIME.name,
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
"""Message properties that follow from the file: setting them is MAPI_E_COMPUTED."""
_UNSAVED_GUESSES = frozenset(
    {PR_INTERNET_MESSAGE_ID.name, "PR_CLIENT_SUBMIT_TIME", "PR_TRANSPORT_MESSAGE_HEADERS"}
)
"""What compose makes up for a new message (Message-ID, Date) and the raw header block:
left out of an unsaved message's properties."""


class Backend(Protocol):
    """What the objects ask of their store (MaildirStore)."""

    def store_props(self, *, writable: bool = True) -> dict[str, Any]: ...
    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject: ...
    def entryid_for(self, kind: str, name: str = INBOX) -> bytes: ...
    def message_entryid(self, folder: str, key: str) -> bytes: ...
    def parse_entryid(self, entryid: bytes) -> tuple[str, str, str]: ...
    def owns(self, entryid: bytes) -> bool: ...
    def message_key_in(self, entryid: bytes, folder: str) -> str: ...
    async def folder_props(self, kind: str, name: str) -> dict[str, Any]: ...
    async def hierarchy_rows(self, kind: str, name: str) -> list[dict[str, Any]]: ...
    async def contents(self, name: str) -> Sequence[Row]: ...
    async def create_folder(
        self, kind: str, parent: str, name: str, writable: bool
    ) -> MaildirFolder: ...
    async def add_message(self, folder: str, mime: bytes, *, sub: str, flags: str) -> bytes: ...
    async def delete_messages(self, folder: str, keys: list[str]) -> None: ...
    async def copy_messages(
        self, folder: str, keys: list[str], target: str, move: bool
    ) -> list[bytes]: ...
    async def read_message(
        self, folder: str, key: str
    ) -> tuple[dict[str, Any], bytes, list[MailRecipient]]: ...
    def new_message_props(self, folder: str) -> dict[str, Any]: ...
    async def save_message(
        self,
        folder: str,
        key: str | None,
        raw: bytes | None,
        changes: dict[str, Any],
        deleted: set[str],
        recipients: list[MailRecipient] | None,
        flag_changes: dict[str, Any],
    ) -> str: ...
    async def submit_message(
        self, folder: str, key: str | None, save: Save | None = None
    ) -> tuple[str, str]: ...


class MaildirStoreObject(Folder):
    """The store object (IMsgStore): its properties, and the way into its folders."""

    object_type = ObjectType.MAPI_STORE

    def __init__(self, store: Backend, writable: bool) -> None:
        self._store = store
        self.writable = writable

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        return pick_props(self._store.store_props(writable=self.writable), tags)

    async def open_child(self, entryid: bytes | None, flags: int) -> MapiObject:
        if entryid is None:
            return MaildirFolder(self._store, KIND_ROOT, INBOX, self.writable)
        return await self._store.open_entry(entryid, flags)


class MaildirFolder(Folder):
    """A folder: the root, the IPM subtree (both virtual), or a Maildir++ folder."""

    object_type = ObjectType.MAPI_FOLDER

    def __init__(self, store: Backend, kind: str, name: str, writable: bool) -> None:
        self._store = store
        self.kind = kind
        self.name = name
        self.writable = writable

    @property
    def entryid(self) -> bytes:
        return self._store.entryid_for(self.kind, self.name)

    @property
    def real(self) -> bool:
        return self.kind == KIND_FOLDER

    def _need_real(self, what: str) -> None:
        if not self.real:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                f"the {'root folder' if self.kind == KIND_ROOT else 'IPM subtree'} holds no "
                f"messages: {what} in one of its folders",
            )

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        props = await self._store.folder_props(self.kind, self.name)
        return pick_props(props, tags)

    async def hierarchy_rows(self) -> Sequence[Row]:
        return await self._store.hierarchy_rows(self.kind, self.name)

    async def contents_rows(self) -> Sequence[Row]:
        if not self.real:
            return ()
        return await self._store.contents(self.name)

    async def open_child(self, entryid: bytes | None, flags: int) -> MapiObject:
        if entryid is None:
            return MaildirFolder(self._store, KIND_ROOT, INBOX, self.writable)
        return await self._store.open_entry(entryid, flags)

    async def create_folder(self, name: str) -> tuple[Folder, bytes]:
        folder = await self._store.create_folder(self.kind, self.name, name, self.writable)
        return folder, folder.entryid

    async def create_message(self) -> Message:
        self._need_real("create messages")
        return MaildirMessage(self._store, self.name, None, writable=True)

    async def import_message(self, mime: bytes) -> bytes:
        self._need_real("import messages")
        if not isinstance(mime, bytes) or not mime.strip():
            raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "mime must be non-empty bin")
        return await self._store.add_message(self.name, mime, sub="cur", flags="S")

    async def delete_messages(self, entryids: Sequence[bytes]) -> None:
        self._need_real("delete messages")
        keys = [self._store.message_key_in(e, self.name) for e in entryids]
        await self._store.delete_messages(self.name, keys)

    async def copy_messages(
        self, entryids: Sequence[bytes], dest: bytes, move: bool
    ) -> list[bytes]:
        self._need_real("copy messages")
        keys = [self._store.message_key_in(e, self.name) for e in entryids]
        if not self._store.owns(dest):
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT, "dest is a folder of another store: copy through MIME"
            )
        kind, target, _ = self._store.parse_entryid(dest)
        if kind != KIND_FOLDER:
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER, "dest must be a folder that holds messages"
            )
        return await self._store.copy_messages(self.name, keys, target, move)


class MaildirMessage(Message):
    """A message file (or a new message not saved yet). Changes wait for save_changes."""

    object_type = ObjectType.MAPI_MESSAGE

    def __init__(self, store: Backend, folder: str, key: str | None, writable: bool) -> None:
        self._store = store
        self.folder = folder
        self.key = key
        self.writable = writable
        self._changes: dict[str, Any] = {}
        self._deleted: set[str] = set()
        self._flags: dict[str, Any] = {}
        self._recipients: list[dict[str, Any]] | None = None
        self._loaded: tuple[dict[str, Any], bytes, list[MailRecipient]] | None = None

    @property
    def entryid(self) -> bytes | None:
        return None if self.key is None else self._store.message_entryid(self.folder, self.key)

    @property
    def pending(self) -> bool:
        return bool(self._changes or self._deleted or self._flags or self._recipients is not None)

    async def _load(self) -> tuple[dict[str, Any], bytes, list[MailRecipient]]:
        if self._loaded is None:
            if self.key is None:
                self._loaded = ({}, b"", [])
            else:
                self._loaded = await self._store.read_message(self.folder, self.key)
        return self._loaded

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        base, raw, _ = await self._load()
        props = dict(base)
        if self.key is None:
            props.update(self._store.new_message_props(self.folder))
        if self.key is None and not self.pending:
            props.update(_empty_preview())
        elif self.key is None or self._changes or self._deleted or self._recipients is not None:
            # What the message will say once saved: its display lines, body and subject
            # parts follow from the MIME it will be, not only from the tags that were set.
            preview = compose(
                raw if self.key is not None else None,
                self._changes,
                self._deleted,
                self._pending_recipients(),
            )
            shown, _ = message_props(preview)
            for tag in _UNSAVED_GUESSES:  # made up at save time: not known before it
                if tag not in self._changes:
                    shown.pop(tag, None)
            for tag in self._deleted:
                props.pop(tag, None)
                shown.pop(tag, None)
            props.update(shown)
        props.update(self._changes)
        if self._flags:
            props.update(apply_flags(props, self._flags))
        return pick_props(props, tags)

    async def set_props(self, props: Mapping[str, Any]) -> dict[str, str]:
        problems: dict[str, str] = {}
        for tag, value in props.items():
            problem = _check_settable(tag, value)
            if problem is not None:
                problems[tag] = problem
            elif tag in FLAG_TAGS:
                self._flags[tag] = value
            elif tag == PR_MESSAGE_CLASS.name:
                pass  # the class follows from the MIME type; IPM.Note is what we store
            else:
                self._changes[tag] = value
                self._deleted.discard(tag)
        return problems

    async def delete_props(self, tags: list[str]) -> dict[str, str]:
        problems: dict[str, str] = {}
        for tag in tags:
            if tag in SETTABLE:
                self._deleted.add(tag)
                self._changes.pop(tag, None)
            elif tag == PR_FLAG_STATUS.name:
                self._flags[tag] = 0
            else:
                problems[tag] = (
                    ErrorCode.MAPI_E_COMPUTED.name
                    if tag in _COMPUTED
                    else ErrorCode.MAPI_E_NO_SUPPORT.name
                )
        return problems

    def _pending_recipients(self) -> list[MailRecipient] | None:
        if self._recipients is None:
            return None
        return [_mail_recipient(r) for r in self._recipients]

    async def save_changes(self) -> None:
        if self.key is not None and not self.pending:
            return
        _, raw, _ = await self._load()
        recipients = self._pending_recipients()
        self.key = await self._store.save_message(
            self.folder,
            self.key,
            raw if self.key is not None else None,
            dict(self._changes),
            set(self._deleted),
            recipients,
            dict(self._flags),
        )
        self._changes.clear()
        self._deleted.clear()
        self._flags.clear()
        self._recipients = None
        self._loaded = None

    async def get_mime(self) -> bytes:
        _, raw, _ = await self._load()
        if self.key is None or self.pending:
            return compose(
                raw if self.key is not None else None,
                self._changes,
                self._deleted,
                self._pending_recipients(),
            )
        return raw

    async def recipients_rows(self) -> Sequence[Row]:
        if self._recipients is not None:
            rows = []
            for rowid, given in enumerate(self._recipients, start=1):
                row = dict(given)
                row.update(
                    {
                        k: v
                        for k, v in recipient_row(_mail_recipient(given), rowid).items()
                        if k not in given or k in ("PR_ROWID", "PR_INSTANCE_KEY")
                    }
                )
                rows.append(row)
            return rows
        _, _, recipients = await self._load()
        return [recipient_row(r, i) for i, r in enumerate(recipients, start=1)]

    async def modify_recipients(self, recipients: Sequence[Mapping[str, Any]]) -> None:
        self._recipients = check_recipients(recipients, "a Maildir")

    async def submit(self, *, sender: Identity | None = None) -> bytes:
        save: Save | None = None
        stamp = (
            sender is not None
            and "@" in sender.email
            and PR_SENT_REPRESENTING_EMAIL_ADDRESS.name not in self._changes
            and PR_SENT_REPRESENTING_EMAIL_ADDRESS.name not in self._deleted
        )
        if self.pending or self.key is None or stamp:
            _, raw, _ = await self._load()
            changes = dict(self._changes)
            if stamp and sender is not None and (self.key is None or not _names_sender(raw)):
                changes[PR_SENT_REPRESENTING_NAME.name] = sender.display_name
                changes[PR_SENT_REPRESENTING_EMAIL_ADDRESS.name] = sender.email
            if self.pending or self.key is None or changes != self._changes:
                save = Save(
                    raw if self.key is not None else None,
                    changes,
                    set(self._deleted),
                    self._pending_recipients(),
                    dict(self._flags),
                )
        self.folder, self.key = await self._store.submit_message(self.folder, self.key, save)
        self._changes.clear()
        self._deleted.clear()
        self._flags.clear()
        self._recipients = None
        self._loaded = None
        eid = self.entryid
        assert eid is not None
        return eid


@functools.cache
def _empty_preview_props() -> tuple[tuple[str, Any], ...]:
    shown, _ = message_props(compose(None, {}, set(), None))
    return tuple((k, v) for k, v in shown.items() if k not in _UNSAVED_GUESSES)


def _empty_preview() -> dict[str, Any]:
    """What a new message shows before anything is set: the same for every one, so it is
    composed and parsed once (folder.create_message asks for it on the event loop)."""
    return dict(_empty_preview_props())


def _mail_recipient(row: Mapping[str, Any]) -> MailRecipient:
    address = str(row.get("PR_EMAIL_ADDRESS", "")).strip()
    name = row.get("PR_DISPLAY_NAME")
    return MailRecipient(
        str(name) if isinstance(name, str) and name else address,
        address,
        RecipientType(int(row.get("PR_RECIPIENT_TYPE", 1))),
    )


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
    "PR_MESSAGE_CLASS": (str,),
}


def _check_settable(tag: str, value: Any) -> str | None:
    """The problem code for setting `tag` to `value`, or None when it can be kept."""
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


def _names_sender(raw: bytes) -> bool:
    """Whether a stored message has a From (its own sender, which submit keeps)."""
    return bool((parse_header_block(split_head(raw)).get("from") or "").strip())


# --- Folder properties and the hierarchy's order (pure) ---------------------------------------

SUBTREE_NAME = "Top of Information Store"
ROOT_NAME = "Root"
CONTAINER_CLASS = "IPF.Note"


def props_of_folder(
    uid: bytes, kind: str, name: str, names: set[str], counts: tuple[int, int]
) -> dict[str, Any]:
    """A folder's properties (also its hierarchy row): `names` are the tree's folders,
    `counts` its (messages, unread)."""
    eid = entryids.folder_entryid(uid, kind, name)
    if kind == KIND_ROOT:
        parent, display, ftype, subfolders = eid, ROOT_NAME, FolderType.FOLDER_ROOT, True
    elif kind == KIND_SUBTREE:
        parent = entryids.folder_entryid(uid, KIND_ROOT)
        display, ftype, subfolders = SUBTREE_NAME, FolderType.FOLDER_GENERIC, True
    else:
        up = parent_of(name, names)
        parent = (
            entryids.folder_entryid(uid, KIND_SUBTREE)
            if up is None
            else entryids.folder_entryid(uid, KIND_FOLDER, up)
        )
        display, ftype = display_of(name), FolderType.FOLDER_GENERIC
        subfolders = any(parent_of(n, names) == name for n in names if n != name)
    props: dict[str, Any] = {
        PR_ENTRYID.name: eid,
        PR_RECORD_KEY.name: eid,
        PR_INSTANCE_KEY.name: eid,
        PR_PARENT_ENTRYID.name: parent,
        PR_STORE_ENTRYID.name: entryids.store_entryid(uid),
        PR_DISPLAY_NAME.name: display,
        PR_OBJECT_TYPE.name: int(ObjectType.MAPI_FOLDER),
        PR_FOLDER_TYPE.name: int(ftype),
        PR_CONTENT_COUNT.name: counts[0],
        PR_CONTENT_UNREAD.name: counts[1],
        PR_SUBFOLDERS.name: subfolders,
    }
    if kind != KIND_ROOT:
        props[PR_CONTAINER_CLASS.name] = CONTAINER_CLASS
    return props


def children(kind: str, name: str, names: set[str]) -> list[tuple[str, str]]:
    """(kind, name) of what a folder lists, in the hierarchy table's order."""
    if kind == KIND_ROOT:
        return [(KIND_SUBTREE, INBOX)]
    if kind == KIND_SUBTREE:
        special = [INBOX] + [n for n in STANDARD_FOLDERS if n in names]
        others = [n for n in names if n not in STANDARD_FOLDERS and parent_of(n, names) is None]
        others.sort(key=lambda n: name_order(n))
        return [(KIND_FOLDER, n) for n in special + others]
    kids = [n for n in names if n != name and parent_of(n, names) == name]
    kids.sort(key=lambda n: name_order(n))
    return [(KIND_FOLDER, n) for n in kids]
