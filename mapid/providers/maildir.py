"""The `maildir` message service: a message store over a Maildir++ tree (DESIGN.md 4).

The tree is the one mutt, neomutt, Dovecot, mbsync and offlineimap share: Maildir++ folders
(`.Sent`, `.Work.Projects`, "." between levels, non-ASCII names in IMAP's modified UTF-7 as
Dovecot writes them) and the flags of the `:2,` suffix. The store's MAPIUID lives with the
mail, in the file `mapid.uid` of the Maildir root, and a message's entry ID names its folder
and its Maildir key (the file name without the flags), so entry IDs stay valid across
restarts, profile edits, flag changes and the move from new/ to cur/.

Layout of the provider-private bytes of an entry ID (after the 4 flag bytes and the
store's MAPIUID): version 0x01, then a kind letter: `store` (the store object), `R` the root
folder, `T` the IPM subtree, `F` + folder name (UTF-8; empty for the Inbox), `M` + folder
name + NUL + Maildir key (a message).

Contents tables come from the shared folder index (maildir_index.py); writes go to disk the
Maildir way (tmp/, fsync, link into place) and are noted in that index at once, so the
watcher that sees them later finds nothing new and nothing is raised twice.

The spooler's path leaves its fsyncs to the flusher (maildir_flush.py), which batches them
with everyone else's: message.submit answers once the file is in the Outbox (a killed
daemon loses nothing; the disk has it a few milliseconds later, with the next commit), and
finished() removes the queued file only after the Sent Items copy is durable.

Which dot directories are folders (a missing parent such as Dovecot leaves is one, notmuch's
`.notmuch/` is not) is decided in maildir_tree.py, with the folder-name helpers. The status
row's Inbox count follows the Inbox's own watch from logon, paced by row_pacer.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import mailbox
import os
import secrets
import socket
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from mapid.constants import (
    AccessLevel,
    FolderType,
    MdbFlags,
    MessageFlags,
    MsgStatus,
    NotificationEvent,
    ObjectType,
    OpenFlags,
    RecipientType,
    ResourceFlags,
    ServiceFlags,
    SpoolerNotify,
    StatusCode,
    StoreSupport,
    ValidateStateFlags,
    ValidFolderMask,
)
from mapid.entryid import make, private_of, uid_from_name, uid_of
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_ACCESS_LEVEL,
    PR_CONTAINER_CLASS,
    PR_CONTENT_COUNT,
    PR_CONTENT_UNREAD,
    PR_DEPTH,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_FLAG_STATUS,
    PR_FOLDER_TYPE,
    PR_INSTANCE_KEY,
    PR_INTERNET_MESSAGE_ID,
    PR_IPM_DRAFTS_ENTRYID,
    PR_IPM_OUTBOX_ENTRYID,
    PR_IPM_SENTMAIL_ENTRYID,
    PR_IPM_SUBTREE_ENTRYID,
    PR_IPM_WASTEBASKET_ENTRYID,
    PR_LAST_MODIFICATION_TIME,
    PR_MDB_PROVIDER,
    PR_MESSAGE_CLASS,
    PR_MESSAGE_DELIVERY_TIME,
    PR_MESSAGE_FLAGS,
    PR_MESSAGE_SIZE,
    PR_MSG_STATUS,
    PR_OBJECT_TYPE,
    PR_PARENT_ENTRYID,
    PR_RECORD_KEY,
    PR_RESOURCE_PATH,
    PR_SEARCH_KEY,
    PR_SENT_REPRESENTING_EMAIL_ADDRESS,
    PR_SENT_REPRESENTING_NAME,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    PR_STORE_ENTRYID,
    PR_STORE_RECORD_KEY,
    PR_STORE_SUPPORT_MASK,
    PR_SUBFOLDERS,
    PR_VALID_FOLDER_MASK,
)
from mapid.providers.base import (
    Folder,
    Identity,
    MapiObject,
    Message,
    MessageService,
    ProviderSupport,
    QueuedMessage,
    Recipient,
    Row,
    StoreProvider,
    pick_props,
)
from mapid.providers.grouped_calls import GroupedCalls
from mapid.providers.maildir_flush import flusher
from mapid.providers.maildir_index import (
    FLAG_FOLLOWUP,
    Change,
    FolderIndex,
    MaildirHub,
    hub_for,
    join_name,
    key_time,
    split_name,
)
from mapid.providers.maildir_tree import (
    INBOX,
    check_folder_name,
    folder_path,
    is_ready,
    list_folders,
    make_folder_dirs,
    mutf7_decode,
    mutf7_encode,
    parent_of,
    scan_tree,
)
from mapid.providers.mime_props import (
    DELETE_AFTER_SUBMIT_HEADER,
    HEADER_LIMIT,
    SETTABLE,
    Headers,
    HeaderSummary,
    MailRecipient,
    compose,
    message_flags_of,
    message_props,
    parse_header_block,
    recipient_row,
    recipients_of,
    split_head,
    summarize,
)
from mapid.providers.row_pacer import RowPacer

__all__ = [
    "MAILDIR_STORE_TYPE",
    "MaildirFolder",
    "MaildirMessage",
    "MaildirService",
    "MaildirStore",
    "MaildirStoreObject",
    "mutf7_decode",
    "mutf7_encode",
]

T = TypeVar("T")

UID_FILE = "mapid.uid"
JUST_QUEUED_MAX = 1000
"""Messages a store remembers from its own submits for the spooler (see _just_queued)."""
LOOP_COMPOSE_BYTES = 64 * 1024
LOOP_COMPOSE_RECIPIENTS = 100
"""A new message up to these sizes is composed on the event loop at submit (tens of µs;
64 KiB of text take about a millisecond), a bigger one in the worker thread."""
STANDARD_FOLDERS = ("Outbox", "Sent", "Trash", "Drafts")
"""Maildir++ folders (`.Outbox` ...) the IPM folders map onto; created at logon."""
OUTBOX, SENT, TRASH, DRAFTS = STANDARD_FOLDERS
SPECIAL_NAMES = {
    INBOX: "Inbox",
    OUTBOX: "Outbox",
    SENT: "Sent Items",
    TRASH: "Deleted Items",
    DRAFTS: "Drafts",
}
"""MAPI display names of the IPM folders, in the order the IPM subtree lists them."""
SUBTREE_NAME = "Top of Information Store"
ROOT_NAME = "Root"
CONTAINER_CLASS = "IPF.Note"
MAILDIR_STORE_TYPE = uid_from_name("mapid-maildir-store-type")
"""PR_MDB_PROVIDER: the MAPIUID of this kind of store, the same for every Maildir."""
STORE_SUPPORT = (
    StoreSupport.STORE_ENTRYID_UNIQUE
    | StoreSupport.STORE_MODIFY_OK
    | StoreSupport.STORE_CREATE_OK
    | StoreSupport.STORE_SUBMIT_OK
    | StoreSupport.STORE_NOTIFY_OK
    | StoreSupport.STORE_HTML_OK
    | StoreSupport.STORE_UNICODE_OK
)
_READ_ONLY_CLEARS = StoreSupport.STORE_MODIFY_OK | StoreSupport.STORE_CREATE_OK
VALID_FOLDERS = (
    ValidFolderMask.FOLDER_IPM_SUBTREE_VALID
    | ValidFolderMask.FOLDER_IPM_INBOX_VALID
    | ValidFolderMask.FOLDER_IPM_OUTBOX_VALID
    | ValidFolderMask.FOLDER_IPM_WASTEBASKET_VALID
    | ValidFolderMask.FOLDER_IPM_SENTMAIL_VALID
)
ADVISE_EVENTS = (
    NotificationEvent.fnevNewMail
    | NotificationEvent.fnevObjectCreated
    | NotificationEvent.fnevObjectDeleted
    | NotificationEvent.fnevObjectModified
    | NotificationEvent.fnevObjectMoved
    | NotificationEvent.fnevObjectCopied
    | NotificationEvent.fnevCriticalError
    | NotificationEvent.fnevExtended
)
_TREE = "\0tree"
"""Key of the Maildir root's own watch among the folder watches."""
_STORE_PRIVATE = b"\x01store"
_ROOT_PRIVATE = b"\x01R"
_SUBTREE_PRIVATE = b"\x01T"
_FOLDER_MARK = b"\x01F"
_MESSAGE_MARK = b"\x01M"
_KIND_STORE, _KIND_ROOT, _KIND_SUBTREE, _KIND_FOLDER, _KIND_MESSAGE = (
    "store",
    "root",
    "subtree",
    "folder",
    "message",
)
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
_FLAG_TAGS = frozenset({PR_MESSAGE_FLAGS.name, PR_FLAG_STATUS.name, PR_MSG_STATUS.name})


# --- Folder names (the rest are in maildir_tree.py) -----------------------------------------


def display_of(name: str) -> str:
    """PR_DISPLAY_NAME of a Maildir++ folder."""
    if name in SPECIAL_NAMES:
        return SPECIAL_NAMES[name]
    return mutf7_decode(name.rsplit(".", 1)[-1])


def _name_order(name: str) -> str:
    """Sort key of folder names as a person expects them: accents and case do not count."""
    text = unicodedata.normalize("NFKD", display_of(name))
    return "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()


# --- The tree on disk (blocking; runs in the daemon's thread pool) ---------------------------


@dataclass(frozen=True)
class MaildirState:
    """What logon learns from the tree."""

    root: Path
    uid: bytes
    inbox_count: int


def _read_uid(path: Path) -> bytes | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise MapiError(ErrorCode.MAPI_E_CORRUPT_DATA, f"cannot read {path}: {exc}") from exc
    try:
        uid = bytes.fromhex(text)
    except ValueError:
        uid = b""
    if len(uid) != 16:
        raise MapiError(
            ErrorCode.MAPI_E_CORRUPT_DATA,
            f"{path} does not hold a store UID (32 hex digits); repair it, or remove it "
            "to get a new one (entry IDs of this store then change)",
        )
    return uid


def load_or_create_uid(root: Path) -> bytes:
    """The store's MAPIUID from `mapid.uid`, written on first use.

    The new file is written beside its final name and then linked into place, so a reader
    never sees half a file, and two logons racing on a new store agree on one UID: the
    first link wins and the loser reads it.
    """
    path = root / UID_FILE
    uid = _read_uid(path)
    if uid is not None:
        return uid
    fd, tmp = tempfile.mkstemp(prefix=f".{UID_FILE}.", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(16) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(root)
    uid = _read_uid(path)
    if uid is None:
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"{path} vanished while it was written")
    return uid


def _count_keys(folder: Path) -> int:
    """Messages in a folder's cur/ and new/, by name only: len(mailbox.Maildir) stats
    every file, 0.4 s of each logon on a folder of 100 000."""
    keys = {
        name.partition(":")[0]
        for sub in ("cur", "new")
        for name in os.listdir(folder / sub)
        if not name.startswith(".")
    }
    return len(keys)


def open_maildir(root: Path) -> MaildirState:
    """Create what is missing of the tree (root, cur/new/tmp, standard folders) and read it.

    A Maildir is made only where the path is missing or an empty directory. An existing
    directory with files but no cur/ and new/ is somebody's other data (`/etc`, a thesis),
    so it is refused and nothing is written into it.
    """
    if root.exists() and not root.is_dir():
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"Maildir path {root} is not a folder")
    refuse_foreign_directory(root)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        mailbox.Maildir(root, create=True)
        for sub in ("cur", "new", "tmp"):  # mailbox leaves an existing empty folder as it is
            (root / sub).mkdir(mode=0o700, exist_ok=True)
        for name in STANDARD_FOLDERS:  # also one left without cur/ or new/: not a folder else
            if not is_ready(folder_path(root, name)):
                make_folder_dirs(root, name)
        return MaildirState(root.resolve(), load_or_create_uid(root), _count_keys(root))
    except PermissionError as exc:
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, f"Maildir {root}: {exc}") from exc
    except OSError as exc:
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"Maildir {root}: {exc}") from exc


def refuse_foreign_directory(root: Path) -> None:
    """MAPI_E_NOT_FOUND for an existing, non-empty directory that is not a Maildir."""
    try:
        if is_ready(root) or (root / UID_FILE).exists():
            return  # a Maildir, or one of ours that lost its cur/ or new/
        with os.scandir(root) as entries:
            if next(entries, None) is None:
                return  # an empty directory becomes the Maildir
    except FileNotFoundError:
        return  # a missing path is made
    except PermissionError as exc:
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, f"Maildir {root}: {exc}") from exc
    raise MapiError(
        ErrorCode.MAPI_E_NOT_FOUND,
        f"{root} is not a Maildir (it has no cur/ and new/) and is not empty: mapid makes a"
        " Maildir only in a missing or empty directory; point the service's path at a"
        " Maildir or at a new directory",
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_COUNTER = itertools.count(1)
_COUNTER_LOCK = threading.Lock()


def new_key() -> str:
    """A Maildir key as the spec makes one: time, microseconds, pid, a counter, the host."""
    now = time.time()
    with _COUNTER_LOCK:
        count = next(_COUNTER)
    return f"{int(now)}.M{int(now % 1 * 1e6):06d}P{os.getpid()}Q{count}.{_key_host()}"


@functools.cache
def _key_host() -> str:
    """The host part of keys, read once (the pid, the counter and the time keep keys
    unique even if the host is renamed meanwhile)."""
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072")


def _file_name(key: str, sub: str, flags: str) -> str:
    return key if sub == "new" else join_name(key, flags)


def write_message(
    folder: Path,
    data: bytes,
    *,
    sub: str,
    flags: str = "",
    key: str | None = None,
    taken: Callable[[str], bool] | None = None,
) -> tuple[str, str]:
    """Deliver `data` into a folder the Maildir way: written and fsynced in tmp/, then
    linked into `sub` (never over an existing file) and the tmp name removed. Returns
    (key, file name); a `key` that `taken` says is in use gets a fresh one."""
    use, name, _ = _write(folder, data, sub=sub, flags=flags, key=key, taken=taken, sync=True)
    _fsync_dir(folder / sub)
    return use, name


def place_message(
    folder: Path,
    data: bytes,
    *,
    sub: str,
    flags: str = "",
    key: str | None = None,
    taken: Callable[[str], bool] | None = None,
) -> tuple[str, str, int]:
    """write_message without its fsyncs: the whole file is in place (a killed daemon loses
    nothing), and the caller hands the returned descriptor and the folder `sub` to the
    flusher, which makes them durable with other writes in one disk commit."""
    return _write(folder, data, sub=sub, flags=flags, key=key, taken=taken, sync=False)


def _write(
    folder: Path,
    data: bytes,
    *,
    sub: str,
    flags: str,
    key: str | None,
    taken: Callable[[str], bool] | None,
    sync: bool,
) -> tuple[str, str, int]:
    """(key, file name, descriptor left open when not `sync`, else -1)."""
    if key is not None and taken is not None and taken(key):
        key = None
    for _ in range(100):
        use = key or new_key()
        tmp = folder / "tmp" / use
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = None
            continue
        keep = False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
            name = _file_name(use, sub, flags)
            try:
                os.link(tmp, folder / sub / name)
            except FileExistsError:
                key = None
                continue
            keep = not sync
        finally:
            if not keep:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return use, name, fd if keep else -1
    raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"cannot find a free Maildir key in {folder}")


def _names_sender(raw: bytes) -> bool:
    """Whether a stored message has a From (its own sender, which submit keeps)."""
    return bool((parse_header_block(split_head(raw)).get("from") or "").strip())


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except FileNotFoundError:
        return False


def _now_utc() -> datetime:
    return datetime.now(UTC)


# --- Objects ---------------------------------------------------------------------------------


class MaildirStoreObject(Folder):
    """The store object (IMsgStore): its properties, and the way into its folders."""

    object_type = ObjectType.MAPI_STORE

    def __init__(self, store: MaildirStore, writable: bool) -> None:
        self._store = store
        self.writable = writable

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        return pick_props(self._store.store_props(writable=self.writable), tags)

    async def open_child(self, entryid: bytes | None, flags: int) -> MapiObject:
        if entryid is None:
            return MaildirFolder(self._store, _KIND_ROOT, INBOX, self.writable)
        return await self._store.open_entry(entryid, flags)


class MaildirFolder(Folder):
    """A folder: the root, the IPM subtree (both virtual), or a Maildir++ folder."""

    object_type = ObjectType.MAPI_FOLDER

    def __init__(self, store: MaildirStore, kind: str, name: str, writable: bool) -> None:
        self._store = store
        self.kind = kind
        self.name = name
        self.writable = writable

    @property
    def entryid(self) -> bytes:
        return self._store.entryid_for(self.kind, self.name)

    @property
    def real(self) -> bool:
        return self.kind == _KIND_FOLDER

    def _need_real(self, what: str) -> None:
        if not self.real:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                f"the {'root folder' if self.kind == _KIND_ROOT else 'IPM subtree'} holds no "
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
            return MaildirFolder(self._store, _KIND_ROOT, INBOX, self.writable)
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
        if kind != _KIND_FOLDER:
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER, "dest must be a folder that holds messages"
            )
        return await self._store.copy_messages(self.name, keys, target, move)


class MaildirMessage(Message):
    """A message file (or a new message not saved yet). Changes wait for save_changes."""

    object_type = ObjectType.MAPI_MESSAGE

    def __init__(self, store: MaildirStore, folder: str, key: str | None, writable: bool) -> None:
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
            props.update(_apply_flags(props, self._flags))
        return pick_props(props, tags)

    async def set_props(self, props: Mapping[str, Any]) -> dict[str, str]:
        problems: dict[str, str] = {}
        for tag, value in props.items():
            problem = _check_settable(tag, value)
            if problem is not None:
                problems[tag] = problem
            elif tag in _FLAG_TAGS:
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
        checked: list[dict[str, Any]] = []
        for i, given in enumerate(recipients):
            address = given.get("PR_EMAIL_ADDRESS")
            if not isinstance(address, str) or not address.strip():
                raise MapiError(
                    ErrorCode.MAPI_E_INVALID_PARAMETER,
                    f"recipients[{i}] has no PR_EMAIL_ADDRESS",
                )
            if any(ch.isspace() or ch in "<>," for ch in address.strip()):
                raise MapiError(
                    ErrorCode.MAPI_E_INVALID_PARAMETER,
                    f"recipients[{i}]: {address!r} is not an e-mail address (no spaces, "
                    "commas or angle brackets; put the name in PR_DISPLAY_NAME)",
                )
            kind = given.get("PR_RECIPIENT_TYPE", int(RecipientType.MAPI_TO))
            if kind not in (1, 2, 3):
                raise MapiError(
                    ErrorCode.MAPI_E_INVALID_PARAMETER,
                    f"recipients[{i}]: PR_RECIPIENT_TYPE must be MAPI_TO (1), MAPI_CC (2) or "
                    "MAPI_BCC (3)",
                )
            addrtype = given.get("PR_ADDRTYPE", "SMTP")
            if not isinstance(addrtype, str) or addrtype.upper() != "SMTP":
                raise MapiError(
                    ErrorCode.MAPI_E_INVALID_PARAMETER,
                    f"recipients[{i}]: a Maildir message holds SMTP addresses only, not "
                    f"{addrtype!r}",
                )
            row = dict(given)
            row["PR_RECIPIENT_TYPE"] = int(kind)
            row["PR_ADDRTYPE"] = "SMTP"
            checked.append(row)
        self._recipients = checked

    async def submit(self, *, sender: Identity | None = None) -> bytes:
        save: _Save | None = None
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
                save = _Save(
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


def maildir_flags(flags: str, changes: Mapping[str, Any]) -> str:
    """The Maildir flags after PR_MESSAGE_FLAGS (read bit), PR_FLAG_STATUS and PR_MSG_STATUS
    changes; flags mapid does not know (mutt's, Dovecot's keywords) are kept."""
    chars = set(flags)
    if PR_MESSAGE_FLAGS.name in changes:
        if int(changes[PR_MESSAGE_FLAGS.name]) & MessageFlags.MSGFLAG_READ:
            chars.add("S")
        else:
            chars.discard("S")
    if PR_FLAG_STATUS.name in changes:
        if int(changes[PR_FLAG_STATUS.name]) == FLAG_FOLLOWUP:
            chars.add("F")
        else:
            chars.discard("F")
    if PR_MSG_STATUS.name in changes:
        if int(changes[PR_MSG_STATUS.name]) & MsgStatus.MSGSTATUS_DELMARKED:
            chars.add("T")
        else:
            chars.discard("T")
    return "".join(sorted(chars))


def _apply_flags(props: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """The flag properties as they will be once pending flag changes are saved."""
    out: dict[str, Any] = {}
    if PR_MESSAGE_FLAGS.name in flags:
        current = int(props.get(PR_MESSAGE_FLAGS.name, 0))
        read = int(flags[PR_MESSAGE_FLAGS.name]) & MessageFlags.MSGFLAG_READ
        out[PR_MESSAGE_FLAGS.name] = (current & ~MessageFlags.MSGFLAG_READ) | read
    if PR_FLAG_STATUS.name in flags:
        out[PR_FLAG_STATUS.name] = FLAG_FOLLOWUP if flags[PR_FLAG_STATUS.name] == 2 else 0
    if PR_MSG_STATUS.name in flags:
        out[PR_MSG_STATUS.name] = int(flags[PR_MSG_STATUS.name]) & MsgStatus.MSGSTATUS_DELMARKED
    return out


# --- The provider ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Save:
    """A message's pending changes, for a save that goes with the submit."""

    raw: bytes | None
    changes: dict[str, Any]
    deleted: set[str]
    recipients: list[MailRecipient] | None
    flags: dict[str, Any]


@dataclass(frozen=True)
class _Composed:
    """A message's bytes as composed, with its parsed header block (the index's row and the
    spooler's view both come from it: one parse)."""

    data: bytes
    headers: Headers
    summary: HeaderSummary | None
    """The index row's fields; None when the header block is longer than the index reads."""


def _compose_parsed(
    raw: bytes | None,
    changes: dict[str, Any],
    deleted: set[str],
    recipients: list[MailRecipient] | None,
) -> _Composed:
    data = compose(raw, changes, deleted, recipients)
    head = split_head(data)
    headers = parse_header_block(head)
    return _Composed(data, headers, summarize(headers) if len(head) < HEADER_LIMIT else None)


def _composes_quickly(save: _Save) -> bool:
    """A new message whose composing takes well under a millisecond: done on the event loop
    rather than in the submit's worker thread, where it would contend for the GIL with the
    loop for longer than it takes (composing is CPU work, not I/O)."""
    if save.raw is not None or save.deleted:
        return False
    if save.recipients is not None and len(save.recipients) > LOOP_COMPOSE_RECIPIENTS:
        return False
    return _text_size(save.changes.values()) <= LOOP_COMPOSE_BYTES


def _text_size(values: Iterable[Any]) -> int:
    """The length of the strings and bytes among `values`, and in lists of them."""
    size = 0
    for value in values:
        if isinstance(value, str | bytes):
            size += len(value)
        elif isinstance(value, list | tuple):
            size += _text_size(value)
    return size


@dataclass
class _Durable:
    """The fsyncs a write put off (open descriptors, folders), for the flusher."""

    fds: list[int] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)

    def add(self, fd: int | None, *dirs: Path) -> None:
        if fd is not None:
            self.fds.append(fd)
        self.dirs.extend(str(d) for d in dirs)

    def hand_off(self) -> None:
        if self.fds or self.dirs:
            flusher().later(self.fds, self.dirs)
            self.fds, self.dirs = [], []

    def flush(self, then: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Sync, then run `then` in the flusher's thread: its result is the future's."""
        future = flusher().flush(self.fds, self.dirs, then)
        self.fds, self.dirs = [], []
        return future


class _Locked:
    """Holds the locks of several folder indexes, always taken in the same order."""

    def __init__(self, *indexes: FolderIndex) -> None:
        self._indexes = sorted({id(i): i for i in indexes}.values(), key=lambda i: str(i.path))
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> None:
        for index in self._indexes:
            self._stack.enter_context(index.lock)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


class MaildirStore(StoreProvider):
    """A message store provider over one Maildir++ tree."""

    name = "store"
    display = "mapid Maildir"

    def __init__(self, support: ProviderSupport) -> None:
        super().__init__(support)
        self._state: MaildirState | None = None
        self._registered: set[bytes] = set()
        self._hub: MaildirHub | None = None
        self._subscription: int | None = None
        self._watches: dict[str, list[Callable[[], None]]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._just_queued: dict[str, tuple[str, QueuedMessage]] = {}
        """Outbox key -> (file name, the message) of what this store queued, so that the
        spooler's queued_message() does not read back and parse a file written a moment
        ago; used only while the Outbox index still names that very file."""
        self._links = GroupedCalls(support.run_blocking, self._link_sent_one)
        """Sent messages the spooler hands back together move to Sent Items in one trip."""
        self._baselines: dict[str, asyncio.Future[None]] = {}
        """Folders whose watch is being set up: a second advise waits for the baseline."""
        self._unattached: set[str] = set()
        """Watched missing parents: their new/ and cur/ are watched once they exist."""
        self._inbox_count = 0
        self._failure: str | None = None
        """Why the last validate_state failed; the row says it until a load succeeds."""
        self._shown: dict[str, Any] | None = None
        """The status columns last written to my row (a push that changes nothing is
        not written)."""
        self._row = RowPacer(self._push_status, support.logger)

    async def logon(self) -> None:
        await self._load()
        self._shown = self.status_props()  # what the daemon puts in my row now
        self._follow_inbox()

    def _follow_inbox(self) -> None:
        """The row says how many messages the Inbox holds: the Inbox's watch (the one an
        Inbox advise uses) keeps that true. Its baseline runs after logon, not in it."""
        self._refreshing[f"watch:{INBOX}"] = asyncio.ensure_future(self._watch_inbox())

    async def _watch_inbox(self) -> None:
        try:
            await self._watch(INBOX)
        except (MapiError, OSError) as exc:
            self.support.logger.warning("cannot follow the Inbox: %s", exc)
            return
        self._row.changed()  # what arrived between logon's count and the baseline

    async def _push_status(self) -> bool:
        """Write the Inbox's message count into my row if it changed (RowPacer's push).
        The count is the index's, brought up to date first: a file that came and went
        between two listings must not stay counted."""
        if self._state is None:
            return False
        index = self._index(INBOX)

        def current() -> int:
            index.refresh()
            return index.counts()[0]

        count = await self.support.run_blocking(current)
        self._flush()  # what the refresh found is raised as any refresh's is
        if self._state is None:
            return False
        self._inbox_count = count
        props = self.status_props()
        if props == self._shown:
            return False
        self._shown = props
        self.support.modify_status_row(props)
        return True

    def _stop_watching(self) -> None:
        self._row.close()
        for baseline in self._baselines.values():
            baseline.cancel()
        self._baselines.clear()
        self._unattached.clear()
        for stops in self._watches.values():
            for stop in stops:
                with contextlib.suppress(Exception):
                    stop()
        self._watches.clear()
        for task in self._refreshing.values():
            task.cancel()
        self._refreshing.clear()

    async def logoff(self) -> None:
        self._stop_watching()
        self._links.cancel()
        hub = self._hub
        token = self._subscription
        if hub is not None and token is not None and hub.unsubscribe(token) == 0:
            await self.support.run_blocking(hub.release)
        self._subscription = None
        self._hub = None
        self._state = None

    async def validate_state(self, flags: ValidateStateFlags) -> None:
        """Re-read the configuration and the tree, and refresh the status row."""
        before = self._state.root if self._state is not None else None
        try:
            await self._load()
        except MapiError as exc:
            self._failure = exc.message  # the row says so until a load succeeds
            self._shown = self.status_props()
            self.support.modify_status_row(self._shown)
            raise
        self._shown = self.status_props()
        self.support.modify_status_row(self._shown)
        if self._state is not None and self._state.root != before:
            self._stop_watching()  # another Maildir: its Inbox is the one to count
            self._follow_inbox()

    async def _load(self) -> None:
        config = self.support.config()
        problems = MaildirService.check_config(config)
        if problems:
            raise MapiError(
                ErrorCode.MAPI_E_UNCONFIGURED,
                "maildir: " + "; ".join(f"{p.key}: {p.message}" for p in problems),
                details={"errors": [{"key": p.key, "message": p.message} for p in problems]},
            )
        root = self.support.resolve_path(str(config["path"]))
        state = await self.support.run_blocking(open_maildir, root)
        if state.uid not in self._registered:
            self.support.set_provider_uid(state.uid)
            self._registered.add(state.uid)
        hub = hub_for(state.root, state.uid)
        if hub is not self._hub:
            if self._hub is not None and self._subscription is not None:
                self._hub.unsubscribe(self._subscription)
            self._subscription = hub.subscribe(self._on_changes)
            self._hub = hub
        self._state = state
        self._inbox_count = state.inbox_count
        self._failure = None

    def _logged_on(self) -> MaildirState:
        if self._state is None:
            raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, "maildir: not logged on")
        return self._state

    def _the_hub(self) -> MaildirHub:
        self._logged_on()
        assert self._hub is not None
        return self._hub

    def status_props(self) -> dict[str, Any]:
        if self._failure is not None:
            return {
                PR_STATUS_CODE.name: int(StatusCode.STATUS_FAILURE),
                PR_STATUS_STRING.name: self._failure,
            }
        props: dict[str, Any] = {PR_STATUS_CODE.name: int(StatusCode.STATUS_AVAILABLE)}
        if self._state is not None:
            count = self._inbox_count
            props[PR_RESOURCE_PATH.name] = str(self._state.root)
            props[PR_STATUS_STRING.name] = (
                f"Maildir at {self._state.root}: "
                f"{count} message{'' if count == 1 else 's'} in Inbox"
            )
        return props

    def row_flags(self) -> ResourceFlags:
        """PR_RESOURCE_FLAGS of my row: the profile asks for me as its default store."""
        if self.support.config().get("primary_store") is True:
            return ResourceFlags.STATUS_DEFAULT_STORE
        return ResourceFlags(0)

    # Entry IDs.

    def _make(self, private: bytes) -> bytes:
        return make(self._logged_on().uid, private)

    def store_entryid(self) -> bytes:
        """The long-term entry ID of the store (msg_stores_table's PR_ENTRYID)."""
        return self._make(_STORE_PRIVATE)

    def entryid_for(self, kind: str, name: str = INBOX) -> bytes:
        if kind == _KIND_ROOT:
            return self._make(_ROOT_PRIVATE)
        if kind == _KIND_SUBTREE:
            return self._make(_SUBTREE_PRIVATE)
        return self._make(_FOLDER_MARK + name.encode("utf-8", "surrogateescape"))

    def message_entryid(self, folder: str, key: str) -> bytes:
        return self._make(
            _MESSAGE_MARK
            + folder.encode("utf-8", "surrogateescape")
            + b"\0"
            + key.encode("utf-8", "surrogateescape")
        )

    def parse_entryid(self, entryid: bytes) -> tuple[str, str, str]:
        """(kind, folder name, message key) of one of my entry IDs."""
        state = self._logged_on()
        if not isinstance(entryid, bytes) or uid_of(entryid) != state.uid:
            raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "not an entry ID of this store")
        private = private_of(entryid)
        if private == _STORE_PRIVATE:
            return _KIND_STORE, INBOX, ""
        if private == _ROOT_PRIVATE:
            return _KIND_ROOT, INBOX, ""
        if private == _SUBTREE_PRIVATE:
            return _KIND_SUBTREE, INBOX, ""
        try:
            if private.startswith(_FOLDER_MARK):
                return _KIND_FOLDER, private[2:].decode("utf-8", "surrogateescape"), ""
            if private.startswith(_MESSAGE_MARK) and b"\0" in private:
                folder, _, key = private[2:].partition(b"\0")
                if key and b"/" not in key and b"/" not in folder:
                    return (
                        _KIND_MESSAGE,
                        folder.decode("utf-8", "surrogateescape"),
                        key.decode("utf-8", "surrogateescape"),
                    )
        except UnicodeDecodeError:
            pass
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no object with that entry ID in this store")

    def owns(self, entryid: bytes) -> bool:
        return isinstance(entryid, bytes) and uid_of(entryid) == self._logged_on().uid

    def message_key_in(self, entryid: bytes, folder: str) -> str:
        kind, where, key = self.parse_entryid(entryid)
        if kind != _KIND_MESSAGE or where != folder:
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND,
                f"{'that message is not' if kind == _KIND_MESSAGE else 'not a message'} in "
                f"the folder {display_of(folder)!r}",
            )
        return key

    def compare_entryids(self, a: bytes, b: bytes) -> bool:
        """Same object, whatever the flag bytes say."""
        return a[4:] == b[4:]

    # The store object.

    def store_props(self, *, writable: bool = True) -> dict[str, Any]:
        """The properties of the store object (also the provider's store-table columns)."""
        state = self._logged_on()
        eid = self.store_entryid()
        mask = STORE_SUPPORT if writable else STORE_SUPPORT & ~_READ_ONLY_CLEARS
        return {
            PR_ENTRYID.name: eid,
            PR_STORE_ENTRYID.name: eid,
            PR_RECORD_KEY.name: state.uid,
            PR_STORE_RECORD_KEY.name: state.uid,
            PR_INSTANCE_KEY.name: eid,
            PR_DISPLAY_NAME.name: self.display_name(),
            PR_MDB_PROVIDER.name: MAILDIR_STORE_TYPE,
            PR_OBJECT_TYPE.name: int(ObjectType.MAPI_STORE),
            PR_STORE_SUPPORT_MASK.name: int(mask),
            PR_ACCESS_LEVEL.name: int(AccessLevel.MAPI_MODIFY) if writable else 0,
            PR_RESOURCE_PATH.name: str(state.root),
            PR_IPM_SUBTREE_ENTRYID.name: self.entryid_for(_KIND_SUBTREE),
            PR_IPM_OUTBOX_ENTRYID.name: self.entryid_for(_KIND_FOLDER, OUTBOX),
            PR_IPM_SENTMAIL_ENTRYID.name: self.entryid_for(_KIND_FOLDER, SENT),
            PR_IPM_WASTEBASKET_ENTRYID.name: self.entryid_for(_KIND_FOLDER, TRASH),
            PR_IPM_DRAFTS_ENTRYID.name: self.entryid_for(_KIND_FOLDER, DRAFTS),
            PR_VALID_FOLDER_MASK.name: int(VALID_FOLDERS),
        }

    async def open_store(self, flags: int) -> MapiObject:
        writable = bool(flags & (MdbFlags.MDB_WRITE | MdbFlags.MAPI_BEST_ACCESS))
        return MaildirStoreObject(self, writable)

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject:
        kind, folder, key = self.parse_entryid(entryid)
        writable = bool(flags & (OpenFlags.MAPI_MODIFY | OpenFlags.MAPI_BEST_ACCESS))
        if kind == _KIND_STORE:
            return MaildirStoreObject(self, writable)
        if kind in (_KIND_ROOT, _KIND_SUBTREE):
            return MaildirFolder(self, kind, INBOX, writable)
        if not await self.support.run_blocking(self._folder_exists, folder):
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no folder {display_of(folder)!r}")
        if kind == _KIND_FOLDER:
            return MaildirFolder(self, kind, folder, writable)
        index = self._index(folder)
        if await self.support.run_blocking(index.locate, key) is None:
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND,
                f"no such message in {display_of(folder)!r} (deleted or moved meanwhile)",
            )
        return MaildirMessage(self, folder, key, writable)

    def _folder_exists(self, name: str) -> bool:
        """A Maildir folder (one stat), or a missing parent of one (the root's listing)."""
        if name == INBOX:
            return True
        root = self._logged_on().root
        return (folder_path(root, name) / "cur").is_dir() or name in scan_tree(root).virtual

    def _make_writable(self, name: str) -> None:
        """Before a new file goes into a folder: a missing parent (Dovecot's CREATE a.b
        makes no `.a`) gets its directory, cur/, new/, tmp/ and maildirfolder first."""
        root = self._logged_on().root
        if name == INBOX or (folder_path(root, name) / "tmp").is_dir():
            return
        with self._the_hub().tree_lock:
            if not self._folder_exists(name):
                raise MapiError(
                    ErrorCode.MAPI_E_NOT_FOUND,
                    f"the folder {display_of(name)!r} is gone (deleted meanwhile)",
                )
            if make_folder_dirs(root, name):
                _fsync_dir(root)

    # Folders.

    def _index(self, name: str) -> FolderIndex:
        root = self._logged_on().root
        extra = 0
        if name == OUTBOX:
            extra = int(MessageFlags.MSGFLAG_SUBMIT | MessageFlags.MSGFLAG_UNSENT)
        elif name == DRAFTS:
            extra = int(MessageFlags.MSGFLAG_UNSENT)

        def build() -> FolderIndex:  # only for the first use of the folder
            return FolderIndex(
                folder_path(root, name),
                self.entryid_for(_KIND_FOLDER, name),
                self._make(_MESSAGE_MARK + name.encode("utf-8", "surrogateescape") + b"\0"),
                extra_flags=extra,
                inbox=name == INBOX,
            )

        return self._the_hub().index(name, build)

    async def refreshed(self, name: str, force: bool = False) -> FolderIndex:
        """The folder's index, brought up to date (what changed is raised to everyone)."""
        index = self._index(name)
        await self.support.run_blocking(index.refresh, force)  # two stat calls when current
        self._flush()
        return index

    async def contents(self, name: str) -> Sequence[Row]:
        """A folder's contents rows; sorting a changed folder runs off the loop too."""
        index = self._index(name)

        def current() -> Sequence[Row]:
            index.refresh()
            return index.rows()

        rows = await self.support.run_blocking(current)
        self._flush()
        return rows

    def _folder_props(
        self, kind: str, name: str, names: set[str], counts: tuple[int, int]
    ) -> dict[str, Any]:
        eid = self.entryid_for(kind, name)
        if kind == _KIND_ROOT:
            parent, display, ftype, subfolders = eid, ROOT_NAME, FolderType.FOLDER_ROOT, True
        elif kind == _KIND_SUBTREE:
            parent = self.entryid_for(_KIND_ROOT)
            display, ftype, subfolders = SUBTREE_NAME, FolderType.FOLDER_GENERIC, True
        else:
            up = parent_of(name, names)
            parent = (
                self.entryid_for(_KIND_SUBTREE)
                if up is None
                else self.entryid_for(_KIND_FOLDER, up)
            )
            display, ftype = display_of(name), FolderType.FOLDER_GENERIC
            subfolders = any(parent_of(n, names) == name for n in names if n != name)
        props: dict[str, Any] = {
            PR_ENTRYID.name: eid,
            PR_RECORD_KEY.name: eid,
            PR_INSTANCE_KEY.name: eid,
            PR_PARENT_ENTRYID.name: parent,
            PR_STORE_ENTRYID.name: self.store_entryid(),
            PR_DISPLAY_NAME.name: display,
            PR_OBJECT_TYPE.name: int(ObjectType.MAPI_FOLDER),
            PR_FOLDER_TYPE.name: int(ftype),
            PR_CONTENT_COUNT.name: counts[0],
            PR_CONTENT_UNREAD.name: counts[1],
            PR_SUBFOLDERS.name: subfolders,
        }
        if kind != _KIND_ROOT:
            props[PR_CONTAINER_CLASS.name] = CONTAINER_CLASS
        return props

    def _folder_props_blocking(self, kind: str, name: str) -> dict[str, Any]:
        names = set(list_folders(self._logged_on().root))
        counts = self._index(name).counts() if kind == _KIND_FOLDER else (0, 0)
        return self._folder_props(kind, name, names, counts)

    async def folder_props(self, kind: str, name: str) -> dict[str, Any]:
        return await self.support.run_blocking(self._folder_props_blocking, kind, name)

    def _children(self, kind: str, name: str, names: set[str]) -> list[tuple[str, str]]:
        if kind == _KIND_ROOT:
            return [(_KIND_SUBTREE, INBOX)]
        if kind == _KIND_SUBTREE:
            special = [INBOX] + [n for n in STANDARD_FOLDERS if n in names]
            others = [n for n in names if n not in STANDARD_FOLDERS and parent_of(n, names) is None]
            others.sort(key=lambda n: _name_order(n))
            return [(_KIND_FOLDER, n) for n in special + others]
        kids = [n for n in names if n != name and parent_of(n, names) == name]
        kids.sort(key=lambda n: _name_order(n))
        return [(_KIND_FOLDER, n) for n in kids]

    def _hierarchy_blocking(self, kind: str, name: str) -> list[dict[str, Any]]:
        names = set(list_folders(self._logged_on().root))
        rows = []
        for child_kind, child in self._children(kind, name, names):
            counts = self._index(child).counts() if child_kind == _KIND_FOLDER else (0, 0)
            row = self._folder_props(child_kind, child, names, counts)
            row[PR_DEPTH.name] = 0
            rows.append(row)
        return rows

    async def hierarchy_rows(self, kind: str, name: str) -> list[dict[str, Any]]:
        return await self.support.run_blocking(self._hierarchy_blocking, kind, name)

    def _create_folder_blocking(self, kind: str, parent: str, name: str) -> str:
        root = self._logged_on().root
        names = set(list_folders(root))
        taken = {display_of(n).casefold() for _, n in self._children(kind, parent, names)}
        if kind == _KIND_SUBTREE:
            taken |= {"inbox"} | {n.casefold() for n in STANDARD_FOLDERS}
        if name.casefold() in taken:
            raise MapiError(
                ErrorCode.MAPI_E_COLLISION,
                f"a folder named {name!r} already exists there",
            )
        encoded = mutf7_encode(name)
        if kind == _KIND_SUBTREE:
            full = encoded
        elif parent == INBOX:
            full = f"INBOX.{encoded}"
        else:
            full = f"{parent}.{encoded}"
        path = folder_path(root, full)
        hub = self._the_hub()
        with hub.tree_lock:
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                raise MapiError(
                    ErrorCode.MAPI_E_COLLISION, f"a folder named {name!r} already exists there"
                ) from None
            for sub in ("cur", "new", "tmp"):
                (path / sub).mkdir(mode=0o700, exist_ok=True)
            (path / "maildirfolder").touch()
            hub.note_folder(full)  # the root's watch then finds nothing new
        _fsync_dir(root)
        return full

    async def create_folder(
        self, kind: str, parent: str, name: str, writable: bool
    ) -> MaildirFolder:
        check_folder_name(name)
        if kind == _KIND_ROOT:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                "folders are created in the IPM subtree or below it, not in the root folder",
            )
        full = await self.support.run_blocking(self._create_folder_blocking, kind, parent, name)
        folder = MaildirFolder(self, _KIND_FOLDER, full, writable)
        parent_eid = self.entryid_for(kind, parent)
        self._flush(
            [
                Change(
                    NotificationEvent.fnevObjectCreated,
                    folder.entryid,
                    parent_eid,
                    object_type=ObjectType.MAPI_FOLDER,
                )
            ]
        )
        return folder

    # Messages (blocking parts run in the thread pool).

    def _where(self, index: FolderIndex, key: str) -> tuple[str, str]:
        """Where a message's file is now (locate lists the folder for a key it does not
        know, so a message renamed by mutt a moment ago is found too)."""
        found = index.locate(key)
        if found is None:
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND,
                "no such message (deleted or moved meanwhile)",
            )
        return found

    def _read_blocking(
        self, folder: str, key: str
    ) -> tuple[dict[str, Any], bytes, list[MailRecipient]]:
        index = self._index(folder)
        for attempt in range(2):
            sub, name = self._where(index, key)
            path = index.path / sub / name
            try:
                raw = path.read_bytes()
                st = os.stat(path)
                break
            except FileNotFoundError:  # renamed (a flag change) meanwhile
                if attempt:
                    raise MapiError(
                        ErrorCode.MAPI_E_NOT_FOUND, "the message went away while it was read"
                    ) from None
                index.refresh(force=True)
        props, has_attach = message_props(raw)
        flags = split_name(name)[1]
        eid = self.message_entryid(folder, key)
        message_id = props.get(PR_INTERNET_MESSAGE_ID.name)
        props.update(
            {
                PR_ENTRYID.name: eid,
                PR_RECORD_KEY.name: eid,
                PR_INSTANCE_KEY.name: eid,
                PR_SEARCH_KEY.name: (message_id or key).encode("utf-8", "surrogateescape"),
                PR_PARENT_ENTRYID.name: index.folder_entryid,
                PR_STORE_ENTRYID.name: self.store_entryid(),
                PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MESSAGE),
                PR_MESSAGE_FLAGS.name: message_flags_of(flags, has_attach) | index.extra_flags,
                PR_FLAG_STATUS.name: FLAG_FOLLOWUP if "F" in flags else 0,
                PR_MSG_STATUS.name: int(MsgStatus.MSGSTATUS_DELMARKED) if "T" in flags else 0,
                PR_MESSAGE_SIZE.name: st.st_size,
                PR_MESSAGE_DELIVERY_TIME.name: key_time(key, st.st_mtime_ns),
                PR_LAST_MODIFICATION_TIME.name: datetime.fromtimestamp(st.st_mtime, UTC),
            }
        )
        return props, raw, recipients_of(parse_header_block(split_head(raw)))

    async def read_message(
        self, folder: str, key: str
    ) -> tuple[dict[str, Any], bytes, list[MailRecipient]]:
        try:
            return await self.support.run_blocking(self._read_blocking, folder, key)
        finally:
            self._flush()

    def new_message_props(self, folder: str) -> dict[str, Any]:
        """What a new, unsaved message already has."""
        flags = MessageFlags.MSGFLAG_UNSENT | MessageFlags.MSGFLAG_READ
        return {
            PR_MESSAGE_CLASS.name: "IPM.Note",
            PR_MESSAGE_FLAGS.name: int(flags),
            PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MESSAGE),
            PR_PARENT_ENTRYID.name: self.entryid_for(_KIND_FOLDER, folder),
            PR_STORE_ENTRYID.name: self.store_entryid(),
        }

    def _save_blocking(
        self,
        folder: str,
        key: str | None,
        raw: bytes | None,
        changes: dict[str, Any],
        deleted: set[str],
        recipients: list[MailRecipient] | None,
        flag_changes: dict[str, Any],
        durable: _Durable | None = None,
        written: list[_Composed] | None = None,
        composed: _Composed | None = None,
    ) -> str:
        """Write the message; with `durable`, its fsyncs are left there for the flusher;
        `written` gets what a file was written whole with (not a flag rename); `composed`:
        the new message composed already."""
        index = self._index(folder)
        if key is None:
            self._make_writable(folder)
        if key is not None or not index.loaded:  # a new file needs no listing once loaded
            index.refresh(wait=False)  # never under the lock (it reads files without it)
        content = bool(changes or deleted or recipients is not None)
        data = b""  # a flag change alone renames the file; it is not rewritten
        summary: HeaderSummary | None = None
        if key is None or content:
            if composed is None or key is not None:
                composed = _compose_parsed(
                    raw if key is not None else None, changes, deleted, recipients
                )
            data, summary = composed.data, composed.summary
            if written is not None:
                written.append(composed)
        with index.lock:
            if key is None:
                flags = maildir_flags("DS", flag_changes)
                if durable is None:
                    new, name = write_message(index.path, data, sub="cur", flags=flags)
                else:
                    new, name, fd = place_message(index.path, data, sub="cur", flags=flags)
                    durable.add(fd, index.path / "cur")
                index.note_file(new, "cur", name, data=data, summary=summary)
                return new
            sub, name = self._where(index, key)
            old = index.path / sub / name
            target_name = join_name(key, maildir_flags(split_name(name)[1], flag_changes))
            target = index.path / "cur" / target_name
            if content:
                tmp = index.path / "tmp" / f"{key}.{secrets.token_hex(4)}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    if durable is None:
                        os.fsync(fd)
                    os.replace(tmp, target)  # the new content lands whole, under the same key
                except BaseException:
                    os.close(fd)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                    raise
                if durable is None:
                    os.close(fd)
                if old != target:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(old)
                if durable is None:
                    _fsync_dir(index.path / "cur")
                else:
                    durable.add(fd, index.path / "cur")
            elif old != target:
                os.rename(old, target)
                if durable is not None:
                    durable.add(None, index.path / "cur")
            else:
                return key
            index.note_file(
                key, "cur", target_name, data=data if content else None, summary=summary
            )
            return key

    async def save_message(
        self,
        folder: str,
        key: str | None,
        raw: bytes | None,
        changes: dict[str, Any],
        deleted: set[str],
        recipients: list[MailRecipient] | None,
        flag_changes: dict[str, Any],
    ) -> str:
        try:
            return await self.support.run_blocking(
                self._save_blocking, folder, key, raw, changes, deleted, recipients, flag_changes
            )
        finally:
            self._flush()

    def _add_blocking(self, folder: str, mime: bytes, sub: str, flags: str) -> str:
        self._make_writable(folder)
        index = self._index(folder)
        index.refresh(wait=False)  # never under the lock (it reads files without it)
        with index.lock:
            key, name = write_message(index.path, mime, sub=sub, flags=flags)
            index.note_file(key, sub, name, data=mime)
            return key

    async def add_message(self, folder: str, mime: bytes, *, sub: str, flags: str) -> bytes:
        if not await self.support.run_blocking(self._folder_exists, folder):
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no folder {display_of(folder)!r}")
        try:
            key = await self.support.run_blocking(self._add_blocking, folder, mime, sub, flags)
        finally:
            self._flush()
        return self.message_entryid(folder, key)

    def _delete_blocking(self, folder: str, keys: list[str]) -> None:
        index = self._index(folder)
        index.refresh(wait=False)  # never under the lock (it reads files without it)
        with index.lock:
            for key in keys:
                found = index.locate(key)
                if found is None:
                    continue  # already gone: deleting is idempotent
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(index.path / found[0] / found[1])
                index.note_gone(key)

    async def delete_messages(self, folder: str, keys: list[str]) -> None:
        try:
            await self.support.run_blocking(self._delete_blocking, folder, keys)
        finally:
            self._flush()

    def _move_file(
        self,
        src: FolderIndex,
        key: str,
        dst: FolderIndex,
        *,
        flags: str | None = None,
        durable: _Durable | None = None,
    ) -> tuple[str, str]:
        """Rename a message into another folder, keeping its key unless the target has it."""
        sub, name = self._where(src, key)
        keep = split_name(name)[1] if flags is None else flags
        new = key if not dst.has(key) else new_key()
        target_name = join_name(new, keep)
        os.rename(src.path / sub / name, dst.path / "cur" / target_name)
        if durable is None:
            _fsync_dir(dst.path / "cur")
            _fsync_dir(src.path / sub)
        else:
            durable.add(None, dst.path / "cur", src.path / sub)
        src.note_gone(key, quiet=True)
        dst.note_file(new, "cur", target_name, quiet=True)
        return new, target_name

    def _copy_blocking(
        self, folder: str, keys: list[str], target: str, move: bool
    ) -> tuple[list[bytes], list[Change]]:
        src, dst = self._index(folder), self._index(target)
        self._make_writable(target)
        src.refresh(wait=False)
        dst.refresh(wait=False)
        with _Locked(src, dst):
            out: list[Change] = []
            eids: list[bytes] = []
            for key in keys:
                old = self.message_entryid(folder, key)
                if move and src is dst:
                    self._where(src, key)
                    eids.append(old)
                    continue
                if move:
                    new, _ = self._move_file(src, key, dst)
                    event = NotificationEvent.fnevObjectMoved
                else:
                    sub, name = self._where(src, key)
                    data = (src.path / sub / name).read_bytes()
                    new, written = write_message(
                        dst.path, data, sub="cur", flags=split_name(name)[1]
                    )
                    dst.note_file(new, "cur", written, quiet=True)
                    event = NotificationEvent.fnevObjectCopied
                eid = self.message_entryid(target, new)
                eids.append(eid)
                out.append(
                    Change(
                        event,
                        eid,
                        dst.folder_entryid,
                        old_entryid=old,
                        old_parent_entryid=src.folder_entryid,
                    )
                )
            return eids, out

    async def copy_messages(
        self, folder: str, keys: list[str], target: str, move: bool
    ) -> list[bytes]:
        if not await self.support.run_blocking(self._folder_exists, target):
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no folder {display_of(target)!r}")
        done: list[Change] = []
        try:
            eids, done = await self.support.run_blocking(
                self._copy_blocking, folder, keys, target, move
            )
        finally:
            self._flush(done)
        return eids

    def _submit_blocking(
        self, folder: str, key: str | None, save: _Save | None, composed: _Composed | None
    ) -> tuple[str, list[Change], tuple[str, QueuedMessage] | None]:
        """Save (when `save`) and move into the Outbox, in one trip to the thread pool. The
        reply does not wait for the disk: the file is in place, so a killed daemon loses
        nothing, and the flusher makes it durable with the next commit (a few ms later).
        A message written here comes back as the spooler will read it (file name, message)."""
        durable = _Durable()
        written: list[_Composed] = []
        try:
            if save is not None:
                key = self._save_blocking(
                    folder,
                    key,
                    save.raw,
                    save.changes,
                    save.deleted,
                    save.recipients,
                    save.flags,
                    durable,
                    written,
                    composed,
                )
            assert key is not None
            # A message saved in the Outbox itself: the save just refreshed it.
            fresh = save is not None and folder == OUTBOX
            new, changes, name, mtime_ns = self._queue_blocking(
                folder, key, durable, refresh=not fresh
            )
        finally:
            durable.hand_off()
        if not written:
            return new, changes, None
        done = written[0]
        return new, changes, (name, self._queued_of(new, done.data, mtime_ns, done.headers))

    def _queue_blocking(
        self, folder: str, key: str, durable: _Durable, *, refresh: bool
    ) -> tuple[str, list[Change], str, int]:
        """(new key, changes, file name, mtime in ns) of the queued message."""
        src, dst = self._index(folder), self._index(OUTBOX)
        if refresh:
            src.refresh(wait=False)
            dst.refresh(wait=False)
        with _Locked(src, dst):
            if src is dst:
                sub, name = self._where(src, key)
                new, changes = key, []
                target = src.path / sub / name
            else:
                new, name = self._move_file(src, key, dst, durable=durable)
                target = dst.path / "cur" / name
                changes = [self._moved(src, folder, key, dst, OUTBOX, new)]
            now = time.time_ns()
            os.utime(target, ns=(now, now))  # the queue runs in submission order
            return new, changes, target.name, now

    async def submit_message(
        self, folder: str, key: str | None, save: _Save | None = None
    ) -> tuple[str, str]:
        """Move a message (saved first when `save` holds its changes) into the Outbox: the
        spooler's queue on disk."""
        changes: list[Change] = []
        composed = None
        if save is not None and key is None and _composes_quickly(save):
            composed = _compose_parsed(None, save.changes, save.deleted, save.recipients)
        try:
            new, changes, queued = await self.support.run_blocking(
                self._submit_blocking, folder, key, save, composed
            )
        finally:
            self._flush(changes)
        if queued is not None:
            if len(self._just_queued) >= JUST_QUEUED_MAX:  # a queue nobody sends
                self._just_queued.pop(next(iter(self._just_queued)))
            self._just_queued[new] = queued
        spooler_notify = getattr(self.support, "spooler_notify", None)
        if callable(spooler_notify):
            spooler_notify(SpoolerNotify.NOTIFY_READYTOSEND)
        return OUTBOX, new

    # The spooler's side: the Outbox is the queue.

    async def queued(self) -> list[bytes]:
        index = self._index(OUTBOX)
        try:
            keys = await self.support.run_blocking(index.keys_by_mtime)  # refreshes first
        finally:
            self._flush()
        return [self.message_entryid(OUTBOX, key) for key, _ in keys]

    def _outbox_key(self, entryid: bytes) -> str:
        kind, folder, key = self.parse_entryid(entryid)
        if kind != _KIND_MESSAGE or folder != OUTBOX:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "that message is not in the Outbox")
        return key

    def _queued_blocking(self, key: str) -> QueuedMessage:
        index = self._index(OUTBOX)
        with index.lock:
            sub, name = self._where(index, key)
            path = index.path / sub / name
            try:
                raw, mtime_ns = path.read_bytes(), os.stat(path).st_mtime_ns
            except FileNotFoundError:
                raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "the message left the Outbox") from None
        return self._queued_of(key, raw, mtime_ns)

    def _queued_of(
        self, key: str, raw: bytes, mtime_ns: int, headers: Headers | None = None
    ) -> QueuedMessage:
        """The spooler's view of a queued file (parsed in a thread, not on the loop;
        `headers`: its header block, parsed already)."""
        if headers is None:
            headers = parse_header_block(split_head(raw))
        recipients = tuple(
            Recipient(r.address, r.display_name, "SMTP", int(r.recipient_type))
            for r in recipients_of(headers)
        )
        delete = str(headers.get(DELETE_AFTER_SUBMIT_HEADER, "")).strip().lower() in (
            "yes",
            "true",
            "1",
        )
        return QueuedMessage(
            entryid=self.message_entryid(OUTBOX, key),
            mime=raw,
            recipients=recipients,
            delete_after_submit=delete,
            submitted=datetime.fromtimestamp(mtime_ns / 1e9, UTC),
        )

    async def queued_message(self, entryid: bytes) -> QueuedMessage:
        key = self._outbox_key(entryid)
        kept = self._just_queued.get(key)
        if kept is not None:
            name, message = kept
            if self._index(OUTBOX).known_name(key) == name:
                return message  # the file this store wrote, still as written
            del self._just_queued[key]
        return await self.support.run_blocking(self._queued_blocking, key)

    def _drop_queued(self, key: str) -> None:
        """A sent message that asked to be deleted (or reached nobody) leaves the Outbox. If
        the disk loses the removal in a crash, it is sent again: at least once."""
        outbox = self._index(OUTBOX)
        with outbox.lock:
            sub, name = self._where(outbox, key)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(outbox.path / sub / name)
            outbox.note_gone(key)
        flusher().later((), [str(outbox.path / sub)])

    def _file_sent(
        self, key: str, sent_mime: bytes | None, durable: _Durable
    ) -> tuple[str, str, bytes]:
        """Step one of finished(): the Sent Items copy, in place but hidden from listings
        until the queued file is gone; `durable` gets its fsyncs. (key, file name, bytes)."""
        outbox, sent = self._index(OUTBOX), self._index(SENT)
        with outbox.lock:
            sub, name = self._where(outbox, key)  # NOT_FOUND: it left the Outbox meanwhile
            data = sent_mime if sent_mime is not None else (outbox.path / sub / name).read_bytes()
        with sent.lock:  # listings run under it: none sees the file before it is hidden
            own = sent.path / "cur" / join_name(key, "S")
            try:
                earlier = own.read_bytes()
            except FileNotFoundError:
                earlier = None
            if earlier == data:
                # A hand-off a crash cut short (after the copy, before the queued file went):
                # that copy is this one, and the message is not filed twice.
                durable.add(os.open(own, os.O_RDONLY), sent.path / "cur")
                return key, own.name, data
            new, written, fd = place_message(
                sent.path, data, sub="cur", flags="S", key=key, taken=sent.has
            )
            sent.hide(new)
            durable.add(fd, sent.path / "cur")
        return new, written, data

    def _moved(
        self, src: FolderIndex, src_folder: str, key: str, dst: FolderIndex, folder: str, new: str
    ) -> Change:
        """fnevObjectMoved of message `key` of `src_folder`, now `new` in `folder`."""
        return Change(
            NotificationEvent.fnevObjectMoved,
            self.message_entryid(folder, new),
            dst.folder_entryid,
            old_entryid=self.message_entryid(src_folder, key),
            old_parent_entryid=src.folder_entryid,
        )

    def _link_sent_one(
        self, job: tuple[str, bytes, tuple[str, QueuedMessage] | None]
    ) -> tuple[str, list[Change]] | None:
        return self._link_sent(*job)

    def _link_sent(
        self, key: str, sent_mime: bytes, kept: tuple[str, QueuedMessage] | None
    ) -> tuple[str, list[Change]] | None:
        """finished() when the message was sent as it is queued (the usual case: submit
        stamps the sender): the queued file itself moves to Sent Items, linked under the
        new name and then unlinked from the Outbox, both under the two folders' locks.
        Nothing is written or allocated, so nothing waits for the disk: at any moment
        the message is in the Outbox (and is sent again after a crash) or in Sent Items,
        and a crash between the two steps leaves the same bytes in both, which the next
        hand-back recognises. None: the bytes differ, the copy path files them."""
        outbox, sent = self._index(OUTBOX), self._index(SENT)
        with _Locked(outbox, sent):
            sub, name = self._where(outbox, key)  # NOT_FOUND: it left the Outbox meanwhile
            src = outbox.path / sub / name
            data = kept[1].mime if kept is not None and kept[0] == name else src.read_bytes()
            if data != sent_mime:
                return None
            use = key
            for _ in range(100):
                target = sent.path / "cur" / join_name(use, "S")
                if not sent.has(use):  # a Sent message of that key: perhaps this one, below
                    try:
                        os.link(src, target)
                        break
                    except FileExistsError:
                        pass
                if use == key and _same_bytes(target, data):
                    break  # filed already by a hand-back a crash cut short
                use = new_key()
            else:
                raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, "no free Maildir key in Sent Items")
            now = time.time_ns()
            os.utime(target, ns=(now, now))  # filed now, as a written copy would be
            os.unlink(src)
            summary = outbox.summary_of(key)  # the same bytes: no second parse
            outbox.note_gone(key, quiet=True)
            sent.note_file(use, "cur", target.name, quiet=True, data=data, summary=summary)
        flusher().later((), [str(sent.path / "cur"), str(outbox.path / sub)])
        return use, [self._moved(outbox, OUTBOX, key, sent, SENT, use)]

    def _unqueue(self, key: str, new: str, written: str, data: bytes) -> list[Change]:
        """Step three of finished(), once the Sent Items copy is durable: the queued file
        goes (its removal is made durable later; lost in a crash, it is sent again), then
        the copy shows in Sent Items."""
        outbox, sent = self._index(OUTBOX), self._index(SENT)
        with outbox.lock:
            found = outbox.locate(key)
            if found is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(outbox.path / found[0] / found[1])
                flusher().later((), [str(outbox.path / found[0])])
            outbox.note_gone(key, quiet=True)
        with sent.lock:
            sent.reveal(new)
            sent.note_file(new, "cur", written, quiet=True, data=data)
        return [self._moved(outbox, OUTBOX, key, sent, SENT, new)]

    async def finished(
        self, entryid: bytes, *, sent_mime: bytes | None, delete: bool
    ) -> bytes | None:
        """The Sent Items copy is written, then made durable by the flusher (sharing its
        disk commit with the other messages being filed), and only then does the queued
        file go: a crash at any point sends a message again rather than lose it. No thread
        waits for the disk meanwhile, so the spooler sends the next messages."""
        key = self._outbox_key(entryid)
        kept = self._just_queued.pop(key, None)
        changes: list[Change] = []
        try:
            if delete:
                await self.support.run_blocking(self._drop_queued, key)
                return None
            if sent_mime is not None:
                moved = await self._links((key, sent_mime, kept))
                if moved is not None:
                    new, changes = moved
                    return self.message_entryid(SENT, new)
            durable = _Durable()
            try:
                new, written, data = await self.support.run_blocking(
                    self._file_sent, key, sent_mime, durable
                )
            except BaseException:
                durable.hand_off()
                raise
            try:
                changes = await asyncio.wrap_future(
                    durable.flush(then=lambda: self._unqueue(key, new, written, data))
                )
            except OSError:  # not durable: the copy shows as it is, the hand-back is retried
                await self.support.run_blocking(self._index(SENT).reveal, new)
                raise
        finally:
            self._flush(changes)
        return self.message_entryid(SENT, new)

    async def deliver(self, mime: bytes) -> bytes:
        """Into the Inbox's new/, as an MTA delivers: fnevNewMail follows."""
        return await self.add_message(INBOX, mime, sub="new", flags="")

    # Notifications.

    async def advise(self, entryid: bytes, event_mask: NotificationEvent) -> None:
        kind, folder, _ = self.parse_entryid(entryid)
        unsupported = NotificationEvent(int(event_mask) & ~int(ADVISE_EVENTS))
        if unsupported:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                f"the Maildir store raises no {unsupported!r} events",
            )
        if kind in (_KIND_STORE, _KIND_ROOT, _KIND_SUBTREE):
            root = self._logged_on().root
            names = [INBOX, *await self.support.run_blocking(list_folders, root)]
            await self._watch_tree()
        else:
            if not await self.support.run_blocking(self._folder_exists, folder):
                raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no folder {display_of(folder)!r}")
            names = [folder]
        for name in names:
            await self._watch(name)

    async def _watch(self, name: str) -> None:
        """Keep a folder's index current from the daemon's shared directory watch. The
        first call takes the baseline (what is there now raises nothing); a call meanwhile
        waits for it, so an advise never returns before its folder is followed."""
        if name in self._watches:
            return
        baseline = self._baselines.get(name)
        if baseline is None or baseline.cancelled():  # cancelled: a logon's loop ended
            baseline = self._baselines[name] = asyncio.ensure_future(self._baseline(name))
        await asyncio.shield(baseline)

    async def _baseline(self, name: str) -> None:
        try:
            await self.refreshed(name)
        finally:
            if self._baselines.get(name) is asyncio.current_task():
                del self._baselines[name]
        if name not in self._watches and self._state is not None:
            self._watches[name] = []
            self._attach(name)

    def _attach(self, name: str) -> None:
        """Watch a folder's new/ and cur/; a missing parent's once it has them."""
        watch_directory = getattr(self.support, "watch_directory", None)
        if not callable(watch_directory):
            self.support.logger.debug("no watch_directory: %s is refreshed on access", name)
            return
        path = folder_path(self._logged_on().root, name)
        if name != INBOX and not is_ready(path):
            self._unattached.add(name)  # _flush attaches it once a write made its dirs
            return
        self._unattached.discard(name)

        def changed(paths: set[Path]) -> None:
            self._schedule_refresh(name)

        for sub in ("new", "cur"):
            try:
                self._watches[name].append(watch_directory(path / sub, changed))
            except (OSError, NotImplementedError) as exc:
                self.support.logger.warning("cannot watch %s: %s", path / sub, exc)

    async def _watch_tree(self) -> None:
        """Watch the Maildir root for folders other programs create or remove (mutt's
        `c`, Dovecot's CREATE), so a store advise hears about them and their mail."""
        if _TREE in self._watches:
            return
        self._watches[_TREE] = []
        await self._sync_folders()  # the baseline
        watch_directory = getattr(self.support, "watch_directory", None)
        if not callable(watch_directory):
            return

        def changed(paths: set[Path]) -> None:
            if any(p.name.startswith(".") for p in paths):  # not our mapid.index saves
                self._schedule_refresh(_TREE)

        try:
            self._watches[_TREE].append(watch_directory(self._logged_on().root, changed))
        except (OSError, NotImplementedError) as exc:
            self.support.logger.warning("cannot watch %s: %s", self._logged_on().root, exc)

    async def _sync_folders(self) -> None:
        root = self._logged_on().root
        hub = self._the_hub()

        def sync() -> tuple[list[str], list[str], list[str]]:
            with hub.tree_lock:  # not while the store creates a folder
                names = list_folders(root)  # missing parents too: they hold the new ones
                return names, *hub.sync_folders(set(names))

        names, added, removed = await self.support.run_blocking(sync)
        every = set(names) | set(removed)
        changes = []
        for event, which in (
            (NotificationEvent.fnevObjectCreated, added),
            (NotificationEvent.fnevObjectDeleted, removed),
        ):
            for name in which:
                up = parent_of(name, every)
                parent = (
                    self.entryid_for(_KIND_SUBTREE)
                    if up is None
                    else self.entryid_for(_KIND_FOLDER, up)
                )
                changes.append(
                    Change(
                        event,
                        self.entryid_for(_KIND_FOLDER, name),
                        parent,
                        object_type=ObjectType.MAPI_FOLDER,
                    )
                )
        for name in removed:
            self._the_hub().forget(name)
        self._flush(changes)

    def _schedule_refresh(self, name: str) -> None:
        if self._state is None:
            return
        running = self._refreshing.get(name)
        if running is not None and not running.done():
            self._again.add(name)
            return
        self._refreshing[name] = asyncio.ensure_future(self._refresh_loop(name))

    async def _refresh_loop(self, name: str) -> None:
        try:
            while True:
                self._again.discard(name)
                if name == _TREE:
                    await self._sync_folders()
                else:
                    await self.refreshed(name)  # the directories' stamps say what changed
                if name not in self._again:
                    return
        except MapiError as exc:
            self.support.logger.warning("refreshing %s failed: %s", name or "Inbox", exc)
        except OSError as exc:
            self.support.logger.warning("refreshing %s failed: %s", name or "Inbox", exc)

    def _flush(self, extra: Sequence[Change] = ()) -> None:
        """Hand every index's waiting changes, then `extra`, to the hub's subscribers."""
        hub = self._hub
        if hub is None:
            return
        changes = [c for index in hub.indexes() for c in index.take_changes()]
        hub.publish([*changes, *extra])
        if self._unattached and self._state is not None:
            root = self._state.root
            for name in list(self._unattached):
                if name not in self._watches:
                    self._unattached.discard(name)  # no longer followed
                elif is_ready(folder_path(root, name)):
                    self._attach(name)

    def _on_changes(self, changes: Sequence[Change]) -> None:
        """The hub's fan-out: raise each change once to this session's advises."""
        if self._state is None:
            return
        inbox = self.entryid_for(_KIND_FOLDER, INBOX)
        for change in changes:
            self.support.notify(change.event, entryid=change.entryid, **change.fields())
            if change.object_type == ObjectType.MAPI_FOLDER and _TREE in self._watches:
                self._follow_folder(change)
            elif inbox in (change.parent_entryid, change.old_parent_entryid):
                self._row.changed()  # the status row's count; paced under bursts

    def _follow_folder(self, change: Change) -> None:
        """A store advise follows folders as they come and go."""
        name = self.parse_entryid(change.entryid)[1]
        if change.event == NotificationEvent.fnevObjectCreated and name not in self._watches:
            self._refreshing[f"watch:{name}"] = asyncio.ensure_future(self._watch(name))
        elif change.event == NotificationEvent.fnevObjectDeleted:
            for stop in self._watches.pop(name, []):
                with contextlib.suppress(Exception):
                    stop()


# --- The service -----------------------------------------------------------------------------


class MaildirService(MessageService):
    """The `maildir` service: one message store provider; it supplies no identity."""

    name = "maildir"
    display_name = "Maildir message store"
    flags = ServiceFlags.SERVICE_NO_PRIMARY_IDENTITY
    providers = (MaildirStore,)
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Maildir message store",
        "type": "object",
        "properties": {
            "path": {
                "type": "string",
                "pattern": "\\S",
                "x-error": "must not be empty",
                "description": "The Maildir++ root folder; created if missing.",
            },
            "display_name": {"type": "string", "description": "Name of the store."},
            "primary_store": {
                "type": "boolean",
                "default": False,
                "description": "Make this the profile's default store.",
            },
        },
        "required": ["path"],
    }
