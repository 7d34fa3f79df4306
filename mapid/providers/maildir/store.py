"""The `maildir` message service: a message store over a Maildir++ tree (docs/design.md 4).

The tree is the one mutt, neomutt, Dovecot, mbsync and offlineimap share: Maildir++ folders
(`.Sent`, `.Work.Projects`, "." between levels, non-ASCII names in IMAP's modified UTF-7 as
Dovecot writes them) and the flags of the `:2,` suffix. The store's MAPIUID lives with the
mail, in the file `mapid.uid` of the Maildir root, and a message's entry ID names its folder
and its Maildir key (entryids.py).

`MaildirStore` is the provider proper: logon, the status row, the store object's
properties, folders, and reading, saving, copying and deleting messages. Contents tables
come from the shared folder index (index.py); writes go to disk the Maildir way (disk.py)
and are noted in that index at once, so the watcher that sees them later finds nothing new
and nothing is raised twice. The spooler's calls go to its `Outbox` (outbox.py), advises
to its `TreeWatch` (watch.py). The status row's Inbox count follows the Inbox's own watch
from logon, paced by row_pacer.py.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any, ClassVar

from mapid.atomic_files import fsync_dir
from mapid.constants import (
    AccessLevel,
    MdbFlags,
    MessageFlags,
    NotificationEvent,
    ObjectType,
    OpenFlags,
    ResourceFlags,
    ServiceFlags,
    StatusCode,
    StoreSupport,
    ValidateStateFlags,
    ValidFolderMask,
)
from mapid.entryid import uid_from_name, uid_of
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_ACCESS_LEVEL,
    PR_DEPTH,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_INSTANCE_KEY,
    PR_IPM_DRAFTS_ENTRYID,
    PR_IPM_OUTBOX_ENTRYID,
    PR_IPM_SENTMAIL_ENTRYID,
    PR_IPM_SUBTREE_ENTRYID,
    PR_IPM_WASTEBASKET_ENTRYID,
    PR_MDB_PROVIDER,
    PR_MESSAGE_CLASS,
    PR_MESSAGE_FLAGS,
    PR_OBJECT_TYPE,
    PR_PARENT_ENTRYID,
    PR_RECORD_KEY,
    PR_RESOURCE_PATH,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    PR_STORE_ENTRYID,
    PR_STORE_RECORD_KEY,
    PR_STORE_SUPPORT_MASK,
    PR_VALID_FOLDER_MASK,
)
from mapid.providers.base import (
    MapiObject,
    MessageService,
    ProviderSupport,
    QueuedMessage,
    Row,
    StoreProvider,
)
from mapid.providers.maildir import entryids, messages
from mapid.providers.maildir import index as maildir_index
from mapid.providers.maildir.disk import MaildirState, open_maildir
from mapid.providers.maildir.entryids import KIND_FOLDER, KIND_ROOT, KIND_STORE, KIND_SUBTREE
from mapid.providers.maildir.flush import Durable
from mapid.providers.maildir.index import Change, FolderIndex, MaildirHub, hub_for
from mapid.providers.maildir.names import (
    DRAFTS,
    INBOX,
    OUTBOX,
    SENT,
    STANDARD_FOLDERS,
    TRASH,
    check_folder_name,
    display_of,
    mutf7_encode,
)
from mapid.providers.maildir.objects import (
    MaildirFolder,
    MaildirMessage,
    MaildirStoreObject,
    children,
    props_of_folder,
)
from mapid.providers.maildir.outbox import Outbox
from mapid.providers.maildir.tree import folder_path, list_folders, make_folder_dirs, scan_tree
from mapid.providers.maildir.watch import TreeWatch
from mapid.providers.rfc5322 import Composed, MailRecipient, Save
from mapid.providers.row_pacer import RowPacer

__all__ = ["MAILDIR_STORE_TYPE", "MaildirService", "MaildirStore"]

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


class MaildirStore(StoreProvider):
    """A message store provider over one Maildir++ tree."""

    name = "store"
    display = "mapid Maildir"
    shared = True  # one logon for every session of a profile (docs/providers.md)

    def __init__(self, support: ProviderSupport) -> None:
        super().__init__(support)
        self._state: MaildirState | None = None
        self._registered: set[bytes] = set()
        self._hub: MaildirHub | None = None
        self._subscription: int | None = None
        self._inbox_count = 0
        self._failure: str | None = None
        """Why the last validate_state failed; the row says it until a load succeeds."""
        self._shown: dict[str, Any] | None = None
        """The status columns last written to my row (a push that changes nothing is
        not written)."""
        self._row = RowPacer(self._push_status, support.logger)
        self._outbox = Outbox(self)
        """The spooler's side: the Outbox is the queue."""
        self._tree = TreeWatch(self, self._row.changed)
        """Notifications: the folder watches behind advise."""

    async def logon(self) -> None:
        await self._load(reuse=True)
        self._shown = self.status_props()  # what the daemon puts in my row now
        self._tree.follow_inbox()

    async def _push_status(self) -> bool:
        """Write the Inbox's message count into my row if it changed (RowPacer's push).
        The count is the index's, brought up to date first: a file that came and went
        between two listings must not stay counted."""
        if self._state is None:
            return False
        index = self.folder_index(INBOX)

        def current() -> int:
            index.refresh()
            return index.counts()[0]

        count = await self.support.run_blocking(current)
        self.publish()  # what the refresh found is raised as any refresh's is
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
        self._tree.stop()

    async def logoff(self) -> None:
        self._stop_watching()
        self._outbox.cancel()
        hub = self._hub
        token = self._subscription
        if hub is not None and token is not None and hub.unsubscribe(token) == 0:
            if maildir_index.LINGER_S > 0:
                hub.release_soon(asyncio.get_running_loop(), maildir_index.LINGER_S)
            else:
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
            self._tree.follow_inbox()

    async def _load(self, *, reuse: bool = False) -> None:
        config = self.support.config()
        problems = MaildirService.check_config(config)
        if problems:
            raise MapiError(
                ErrorCode.MAPI_E_UNCONFIGURED,
                "maildir: " + "; ".join(f"{p.key}: {p.message}" for p in problems),
                details={"errors": [{"key": p.key, "message": p.message} for p in problems]},
            )
        root = self.support.resolve_path(str(config["path"]))
        state = await self.support.run_blocking(functools.partial(open_maildir, root, reuse=reuse))
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

    def logged_on(self) -> MaildirState:
        if self._state is None:
            raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, "maildir: not logged on")
        return self._state

    def the_hub(self) -> MaildirHub:
        self.logged_on()
        assert self._hub is not None
        return self._hub

    @property
    def active(self) -> bool:
        """Logged on (and not logged off since)."""
        return self._state is not None

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

    # Entry IDs (entryids.py builds and parses them).

    def store_entryid(self) -> bytes:
        """The long-term entry ID of the store (msg_stores_table's PR_ENTRYID)."""
        return entryids.store_entryid(self.logged_on().uid)

    def entryid_for(self, kind: str, name: str = INBOX) -> bytes:
        return entryids.folder_entryid(self.logged_on().uid, kind, name)

    def message_entryid(self, folder: str, key: str) -> bytes:
        return entryids.message_entryid(self.logged_on().uid, folder, key)

    def parse_entryid(self, entryid: bytes) -> tuple[str, str, str]:
        """(kind, folder name, message key) of one of my entry IDs."""
        return entryids.parse_entryid(self.logged_on().uid, entryid)

    def owns(self, entryid: bytes) -> bool:
        return isinstance(entryid, bytes) and uid_of(entryid) == self.logged_on().uid

    def message_key_in(self, entryid: bytes, folder: str) -> str:
        return entryids.message_key_in(self.logged_on().uid, entryid, folder)

    def compare_entryids(self, a: bytes, b: bytes) -> bool:
        """Same object, whatever the flag bytes say."""
        return entryids.compare_entryids(a, b)

    # The store object.

    def store_props(self, *, writable: bool = True) -> dict[str, Any]:
        """The properties of the store object (also the provider's store-table columns)."""
        state = self.logged_on()
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
            PR_IPM_SUBTREE_ENTRYID.name: self.entryid_for(KIND_SUBTREE),
            PR_IPM_OUTBOX_ENTRYID.name: self.entryid_for(KIND_FOLDER, OUTBOX),
            PR_IPM_SENTMAIL_ENTRYID.name: self.entryid_for(KIND_FOLDER, SENT),
            PR_IPM_WASTEBASKET_ENTRYID.name: self.entryid_for(KIND_FOLDER, TRASH),
            PR_IPM_DRAFTS_ENTRYID.name: self.entryid_for(KIND_FOLDER, DRAFTS),
            PR_VALID_FOLDER_MASK.name: int(VALID_FOLDERS),
        }

    async def open_store(self, flags: int) -> MapiObject:
        writable = bool(flags & (MdbFlags.MDB_WRITE | MdbFlags.MAPI_BEST_ACCESS))
        return MaildirStoreObject(self, writable)

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject:
        kind, folder, key = self.parse_entryid(entryid)
        writable = bool(flags & (OpenFlags.MAPI_MODIFY | OpenFlags.MAPI_BEST_ACCESS))
        if kind == KIND_STORE:
            return MaildirStoreObject(self, writable)
        if kind in (KIND_ROOT, KIND_SUBTREE):
            return MaildirFolder(self, kind, INBOX, writable)
        if not await self.support.run_blocking(self.folder_exists, folder):
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no folder {display_of(folder)!r}")
        if kind == KIND_FOLDER:
            return MaildirFolder(self, kind, folder, writable)
        index = self.folder_index(folder)
        if await self.support.run_blocking(index.locate, key) is None:
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND,
                f"no such message in {display_of(folder)!r} (deleted or moved meanwhile)",
            )
        return MaildirMessage(self, folder, key, writable)

    def folder_exists(self, name: str) -> bool:
        """A Maildir folder (one stat), or a missing parent of one (the root's listing)."""
        if name == INBOX:
            return True
        root = self.logged_on().root
        return (folder_path(root, name) / "cur").is_dir() or name in scan_tree(root).virtual

    def _make_writable(self, name: str) -> None:
        """Before a new file goes into a folder: a missing parent (Dovecot's CREATE a.b
        makes no `.a`) gets its directory, cur/, new/, tmp/ and maildirfolder first."""
        root = self.logged_on().root
        if name == INBOX or (folder_path(root, name) / "tmp").is_dir():
            return
        with self.the_hub().tree_lock:
            if not self.folder_exists(name):
                raise MapiError(
                    ErrorCode.MAPI_E_NOT_FOUND,
                    f"the folder {display_of(name)!r} is gone (deleted meanwhile)",
                )
            if make_folder_dirs(root, name):
                fsync_dir(root)

    # Folders.

    def folder_index(self, name: str) -> FolderIndex:
        root = self.logged_on().root
        extra = 0
        if name == OUTBOX:
            extra = int(MessageFlags.MSGFLAG_SUBMIT | MessageFlags.MSGFLAG_UNSENT)
        elif name == DRAFTS:
            extra = int(MessageFlags.MSGFLAG_UNSENT)

        def build() -> FolderIndex:  # only for the first use of the folder
            return FolderIndex(
                folder_path(root, name),
                self.entryid_for(KIND_FOLDER, name),
                entryids.messages_prefix(self.logged_on().uid, name),
                extra_flags=extra,
                inbox=name == INBOX,
            )

        return self.the_hub().index(name, build)

    async def refreshed(self, name: str, force: bool = False) -> FolderIndex:
        """The folder's index, brought up to date (what changed is raised to everyone)."""
        index = self.folder_index(name)
        await self.support.run_blocking(index.refresh, force)  # two stat calls when current
        self.publish()
        return index

    async def contents(self, name: str) -> Sequence[Row]:
        """A folder's contents rows; sorting a changed folder runs off the loop too."""
        index = self.folder_index(name)

        def current() -> Sequence[Row]:
            index.refresh()
            return index.rows()

        rows = await self.support.run_blocking(current)
        self.publish()
        return rows

    def _folder_props_blocking(self, kind: str, name: str) -> dict[str, Any]:
        names = set(list_folders(self.logged_on().root))
        counts = self.folder_index(name).counts() if kind == KIND_FOLDER else (0, 0)
        return props_of_folder(self.logged_on().uid, kind, name, names, counts)

    async def folder_props(self, kind: str, name: str) -> dict[str, Any]:
        return await self.support.run_blocking(self._folder_props_blocking, kind, name)

    def _hierarchy_blocking(self, kind: str, name: str) -> list[dict[str, Any]]:
        names = set(list_folders(self.logged_on().root))
        rows = []
        for child_kind, child in children(kind, name, names):
            counts = self.folder_index(child).counts() if child_kind == KIND_FOLDER else (0, 0)
            row = props_of_folder(self.logged_on().uid, child_kind, child, names, counts)
            row[PR_DEPTH.name] = 0
            rows.append(row)
        return rows

    async def hierarchy_rows(self, kind: str, name: str) -> list[dict[str, Any]]:
        return await self.support.run_blocking(self._hierarchy_blocking, kind, name)

    def _create_folder_blocking(self, kind: str, parent: str, name: str) -> str:
        root = self.logged_on().root
        names = set(list_folders(root))
        taken = {display_of(n).casefold() for _, n in children(kind, parent, names)}
        if kind == KIND_SUBTREE:
            taken |= {"inbox"} | {n.casefold() for n in STANDARD_FOLDERS}
        if name.casefold() in taken:
            raise MapiError(
                ErrorCode.MAPI_E_COLLISION,
                f"a folder named {name!r} already exists there",
            )
        encoded = mutf7_encode(name)
        if kind == KIND_SUBTREE:
            full = encoded
        elif parent == INBOX:
            full = f"INBOX.{encoded}"
        else:
            full = f"{parent}.{encoded}"
        path = folder_path(root, full)
        hub = self.the_hub()
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
        fsync_dir(root)
        return full

    async def create_folder(
        self, kind: str, parent: str, name: str, writable: bool
    ) -> MaildirFolder:
        check_folder_name(name)
        if kind == KIND_ROOT:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                "folders are created in the IPM subtree or below it, not in the root folder",
            )
        full = await self.support.run_blocking(self._create_folder_blocking, kind, parent, name)
        folder = MaildirFolder(self, KIND_FOLDER, full, writable)
        parent_eid = self.entryid_for(kind, parent)
        self.publish(
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

    def _read_blocking(
        self, folder: str, key: str
    ) -> tuple[dict[str, Any], bytes, list[MailRecipient]]:
        index = self.folder_index(folder)
        return messages.read_message(index, key, self.logged_on().uid, folder)

    async def read_message(
        self, folder: str, key: str
    ) -> tuple[dict[str, Any], bytes, list[MailRecipient]]:
        try:
            return await self.support.run_blocking(self._read_blocking, folder, key)
        finally:
            self.publish()

    def new_message_props(self, folder: str) -> dict[str, Any]:
        """What a new, unsaved message already has."""
        flags = MessageFlags.MSGFLAG_UNSENT | MessageFlags.MSGFLAG_READ
        return {
            PR_MESSAGE_CLASS.name: "IPM.Note",
            PR_MESSAGE_FLAGS.name: int(flags),
            PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MESSAGE),
            PR_PARENT_ENTRYID.name: self.entryid_for(KIND_FOLDER, folder),
            PR_STORE_ENTRYID.name: self.store_entryid(),
        }

    def save_blocking(
        self,
        folder: str,
        key: str | None,
        raw: bytes | None,
        changes: dict[str, Any],
        deleted: set[str],
        recipients: list[MailRecipient] | None,
        flag_changes: dict[str, Any],
        durable: Durable | None = None,
        written: list[Composed] | None = None,
        composed: Composed | None = None,
    ) -> str:
        """Write the message (messages.save_message says how)."""
        index = self.folder_index(folder)
        if key is None:
            self._make_writable(folder)
        return messages.save_message(
            index, key, raw, changes, deleted, recipients, flag_changes, durable, written, composed
        )

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
                self.save_blocking, folder, key, raw, changes, deleted, recipients, flag_changes
            )
        finally:
            self.publish()

    def _add_blocking(self, folder: str, mime: bytes, sub: str, flags: str) -> str:
        self._make_writable(folder)
        return messages.add_message(self.folder_index(folder), mime, sub, flags)

    async def add_message(self, folder: str, mime: bytes, *, sub: str, flags: str) -> bytes:
        if not await self.support.run_blocking(self.folder_exists, folder):
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no folder {display_of(folder)!r}")
        try:
            key = await self.support.run_blocking(self._add_blocking, folder, mime, sub, flags)
        finally:
            self.publish()
        return self.message_entryid(folder, key)

    def _delete_blocking(self, folder: str, keys: list[str]) -> None:
        messages.delete_messages(self.folder_index(folder), keys)

    async def delete_messages(self, folder: str, keys: list[str]) -> None:
        try:
            await self.support.run_blocking(self._delete_blocking, folder, keys)
        finally:
            self.publish()

    def _copy_blocking(
        self, folder: str, keys: list[str], target: str, move: bool
    ) -> tuple[list[bytes], list[Change]]:
        src, dst = self.folder_index(folder), self.folder_index(target)
        self._make_writable(target)
        return messages.copy_messages(src, dst, keys, move, self.logged_on().uid, folder, target)

    async def copy_messages(
        self, folder: str, keys: list[str], target: str, move: bool
    ) -> list[bytes]:
        if not await self.support.run_blocking(self.folder_exists, target):
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no folder {display_of(target)!r}")
        done: list[Change] = []
        try:
            eids, done = await self.support.run_blocking(
                self._copy_blocking, folder, keys, target, move
            )
        finally:
            self.publish(done)
        return eids

    async def submit_message(
        self, folder: str, key: str | None, save: Save | None = None
    ) -> tuple[str, str]:
        """Move a message (saved first when `save` holds its changes) into the Outbox: the
        spooler's queue on disk."""
        return await self._outbox.submit_message(folder, key, save)

    # The spooler's side: the Outbox is the queue (outbox.py).

    async def queued(self) -> list[bytes]:
        return await self._outbox.queued()

    async def queued_message(self, entryid: bytes) -> QueuedMessage:
        return await self._outbox.queued_message(entryid)

    async def finished(
        self, entryid: bytes, *, sent_mime: bytes | None, delete: bool
    ) -> bytes | None:
        return await self._outbox.finished(entryid, sent_mime=sent_mime, delete=delete)

    async def deliver(self, mime: bytes) -> bytes:
        return await self._outbox.deliver(mime)

    # Notifications (watch.py).

    async def advise(self, entryid: bytes, event_mask: NotificationEvent) -> None:
        await self._tree.advise(entryid, event_mask)

    def publish(self, extra: Sequence[Change] = ()) -> None:
        """Hand every index's waiting changes, then `extra`, to the hub's subscribers."""
        hub = self._hub
        if hub is None:
            return
        changes = [c for index in hub.indexes() for c in index.take_changes()]
        hub.publish([*changes, *extra])
        if self._state is not None:
            self._tree.attach_ready(self._state.root)

    def _on_changes(self, changes: Sequence[Change]) -> None:
        """The hub's fan-out: raise each change once to this session's advises."""
        if self._state is None:
            return
        inbox = self.entryid_for(KIND_FOLDER, INBOX)
        for change in changes:
            self.support.notify(change.event, entryid=change.entryid, **change.fields())
            if change.object_type == ObjectType.MAPI_FOLDER and self._tree.follows_tree:
                self._tree.follow_folder(change)
            elif inbox in (change.parent_entryid, change.old_parent_entryid):
                self._row.changed()  # the status row's count; paced under bursts


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
