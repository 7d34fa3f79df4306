"""The `imap` message service: a message store over an IMAP account (docs/design.md 4).

`ImapStore` is the provider of one session: logon (the configuration checked, the
account's shared state acquired, account.py), the status row (online or offline, and why),
the store object's properties, the folder tree (names.py's mapping, plus the local Outbox)
and the messages, read from the account's cache and fetched on first use. It never blocks
the loop: the account runs the connections on threads of their own, and the cache reads
go through `support.run_blocking`.

An unreachable server is not a failed logon: the row says STATUS_OFFLINE and why, the
tables answer from the cache, and the account keeps trying. What changes the server, and
the local Outbox the spooler sends from, are `writes` (writes.py): the same ops and errors
as the Maildir store's; offline, a change of the server is MAPI_E_NETWORK_ERROR.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from mapid.constants import (
    AccessLevel,
    MdbFlags,
    MessageFlags,
    NotificationEvent,
    ObjectType,
    ResourceFlags,
    ServiceFlags,
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
    PR_OBJECT_TYPE,
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
    ConfigProblem,
    MapiObject,
    MessageService,
    ProviderSupport,
    QueuedMessage,
    Row,
    StoreProvider,
)
from mapid.providers.imap import entryids
from mapid.providers.imap.account import LOGON_WAIT_S, Account, Change, acquire, release
from mapid.providers.imap.cache import FolderMarks
from mapid.providers.imap.config import CONFIG_SCHEMA, ImapSettings, cache_dir, check_config
from mapid.providers.imap.connection import Login, make_login
from mapid.providers.imap.entryids import (
    KIND_FOLDER,
    KIND_MESSAGE,
    KIND_OUTBOX,
    KIND_QUEUED,
    KIND_ROOT,
    KIND_STORE,
    KIND_SUBTREE,
    Parsed,
)
from mapid.providers.imap.names import INBOX, ROLE_NAMES
from mapid.providers.imap.objects import (
    ROOT_NAME,
    SUBTREE_NAME,
    ImapFolder,
    ImapMessage,
    ImapStoreObject,
    folder_props,
)
from mapid.providers.imap.rows import QUEUED_FLAGS, opened_props
from mapid.providers.imap.writes import Writes
from mapid.providers.rfc5322 import message_props

__all__ = ["IMAP_STORE_TYPE", "ImapService", "ImapStore"]

IMAP_STORE_TYPE = uid_from_name("mapid-imap-store-type")
"""PR_MDB_PROVIDER: the MAPIUID of this kind of store."""
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
_SPECIAL_TAGS = {
    "sent": PR_IPM_SENTMAIL_ENTRYID,
    "trash": PR_IPM_WASTEBASKET_ENTRYID,
    "drafts": PR_IPM_DRAFTS_ENTRYID,
}
_SPECIAL_MASKS = {
    "sent": ValidFolderMask.FOLDER_IPM_SENTMAIL_VALID,
    "trash": ValidFolderMask.FOLDER_IPM_WASTEBASKET_VALID,
}


class ImapStore(StoreProvider):
    """A message store provider over one IMAP account (one session's)."""

    name = "store"
    display = "mapid IMAP"

    def __init__(self, support: ProviderSupport) -> None:
        super().__init__(support)
        self._account: Account | None = None
        self._registered: set[bytes] = set()
        self._shown: dict[str, Any] | None = None
        self.writes = Writes(self)
        """What changes the server, and the local Outbox (the spooler's queue)."""
        self._was_online = False
        self._filing: asyncio.Task[Any] | None = None

    # -- logon, logoff, the row ---------------------------------------------------------

    async def logon(self) -> None:
        settings = ImapSettings.from_config(self.support.config(), self.support)
        await self._attach(settings)
        account = self.logged_on()
        if len(account.tree.folders) <= 1:  # a cache that knows no folders yet
            await account.wait_first(min(settings.timeout, LOGON_WAIT_S))
        self._shown = self.status_props()

    async def _attach(self, settings: ImapSettings) -> None:
        directory = cache_dir(self.support)
        account = await acquire(directory, settings, self, self.support.run_blocking)
        self._account = account
        if account.uid not in self._registered:
            self.support.set_provider_uid(account.uid)
            self._registered.add(account.uid)

    async def logoff(self) -> None:
        account, self._account = self._account, None
        if account is not None:
            await release(account, self)

    async def validate_state(self, flags: ValidateStateFlags) -> None:
        """Read the configuration again and reach the server now (a reconnect when offline,
        a sync of every mailbox when online)."""
        settings = ImapSettings.from_config(self.support.config(), self.support)
        account = self.logged_on()
        if settings.account != account.settings.account:
            await release(account, self)
            self._account = None
            await self._attach(settings)
        elif settings != account.settings:
            account.settings = settings
        self.logged_on().kick()
        self.account_status()

    def logged_on(self) -> Account:
        if self._account is None:
            raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, "imap: not logged on")
        return self._account

    def status_props(self) -> dict[str, Any]:
        if self._account is None:
            return super().status_props()
        code, text = self._account.status_props()
        return {
            PR_STATUS_CODE.name: code,
            PR_STATUS_STRING.name: text,
            PR_RESOURCE_PATH.name: f"imap://{self._account.settings.where}",
            **self._account.progress_props(),  # a long sync's progress, else both None
        }

    def row_flags(self) -> ResourceFlags:
        """PR_RESOURCE_FLAGS of my row: the profile asks for me as its default store."""
        if self.support.config().get("primary_store") is True:
            return ResourceFlags.STATUS_DEFAULT_STORE
        return ResourceFlags(0)

    # -- what the account tells me (account.Listener) --------------------------------

    def account_status(self) -> None:
        account = self._account
        online = account is not None and account.online
        if online and not self._was_online and (self._filing is None or self._filing.done()):
            # Back online: the Sent copies that waited for the server go there now.
            self._filing = asyncio.ensure_future(self.writes.file_sent_copies())
        self._was_online = online
        props = self.status_props()
        if props != self._shown:
            self._shown = props
            self.support.modify_status_row(props)

    def account_changes(self, changes: Sequence[Change]) -> None:
        for change in changes:
            self.support.notify(change.event, entryid=change.entryid, **change.fields())

    async def account_login(self, settings: ImapSettings) -> Login:
        return await make_login(settings, self.support)

    # -- entry IDs -------------------------------------------------------------------------

    @property
    def uid(self) -> bytes:
        return self.logged_on().uid

    def store_entryid(self) -> bytes:
        return entryids.store_entryid(self.uid)

    def folder_eid(self, kind: str, name: str = "") -> bytes:
        return entryids.folder_entryid(self.uid, kind, name)

    def owns(self, entryid: bytes) -> bool:
        return isinstance(entryid, bytes) and uid_of(entryid) == self.uid

    def compare_entryids(self, a: bytes, b: bytes) -> bool:
        return entryids.compare_entryids(a, b)

    # -- the store object ----------------------------------------------------------------

    def store_props(self, *, writable: bool = True) -> dict[str, Any]:
        account = self.logged_on()
        eid = self.store_entryid()
        support_mask = STORE_SUPPORT if writable else STORE_SUPPORT & ~_READ_ONLY_CLEARS
        props: dict[str, Any] = {
            PR_ENTRYID.name: eid,
            PR_STORE_ENTRYID.name: eid,
            PR_RECORD_KEY.name: self.uid,
            PR_STORE_RECORD_KEY.name: self.uid,
            PR_INSTANCE_KEY.name: eid,
            PR_DISPLAY_NAME.name: self.display_name(),
            PR_MDB_PROVIDER.name: IMAP_STORE_TYPE,
            PR_OBJECT_TYPE.name: int(ObjectType.MAPI_STORE),
            PR_STORE_SUPPORT_MASK.name: int(support_mask),
            PR_ACCESS_LEVEL.name: int(AccessLevel.MAPI_MODIFY) if writable else 0,
            PR_RESOURCE_PATH.name: f"imap://{account.settings.where}",
            PR_IPM_SUBTREE_ENTRYID.name: self.folder_eid(KIND_SUBTREE),
            PR_IPM_OUTBOX_ENTRYID.name: self.folder_eid(KIND_OUTBOX),
        }
        mask = (
            ValidFolderMask.FOLDER_IPM_SUBTREE_VALID
            | ValidFolderMask.FOLDER_IPM_INBOX_VALID
            | ValidFolderMask.FOLDER_IPM_OUTBOX_VALID
        )
        for role, tag in _SPECIAL_TAGS.items():
            name = account.tree.roles.get(role)
            if name is not None:
                props[tag.name] = self.folder_eid(KIND_FOLDER, name)
                mask |= _SPECIAL_MASKS.get(role, ValidFolderMask(0))
        props[PR_VALID_FOLDER_MASK.name] = int(mask)
        return props

    async def open_store(self, flags: int) -> MapiObject:
        writable = bool(flags & (MdbFlags.MDB_WRITE | MdbFlags.MAPI_BEST_ACCESS))
        return ImapStoreObject(self, writable)

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject:
        parsed = entryids.parse_entryid(self.uid, entryid)
        account = self.logged_on()
        if parsed.kind == KIND_STORE:
            return ImapStoreObject(self)
        if parsed.kind in (KIND_ROOT, KIND_SUBTREE, KIND_OUTBOX):
            return ImapFolder(self, parsed.kind, "")
        if parsed.kind == KIND_QUEUED:
            await self.writes.queued_raw(parsed.mailbox)  # MAPI_E_NOT_FOUND once sent
            return ImapMessage(self, "", 0, 0, queued=entryid)
        info = account.tree.folders.get(parsed.mailbox)
        if info is None:
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND, f"no folder {parsed.mailbox!r} on the server"
            )
        if parsed.kind == KIND_FOLDER:
            return ImapFolder(self, KIND_FOLDER, parsed.mailbox)
        assert parsed.kind == KIND_MESSAGE
        marks = account.marks.get(parsed.mailbox)
        if marks is not None and marks.uidvalidity != parsed.uidvalidity:
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND,
                f"the folder {info.display!r} was renumbered on the server (its UIDVALIDITY "
                "changed): this entry ID names no message any more",
            )
        records = await account.loaded(parsed.mailbox)
        if parsed.uid not in records:
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND,
                f"no such message in {info.display!r} (deleted or moved meanwhile)",
            )
        return ImapMessage(self, parsed.mailbox, parsed.uidvalidity, parsed.uid)

    async def advise(self, entryid: bytes, event_mask: NotificationEvent) -> None:
        entryids.parse_entryid(self.uid, entryid)  # mine, or MAPI_E_INVALID_ENTRYID
        unsupported = NotificationEvent(int(event_mask) & ~int(ADVISE_EVENTS))
        if unsupported:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT, f"the IMAP store raises no {unsupported!r} events"
            )

    # -- folders -------------------------------------------------------------------------

    def folder_props(self, kind: str, name: str) -> dict[str, Any]:
        account = self.logged_on()
        eid = self.folder_eid(kind, name)
        store = self.store_entryid()
        subtree = self.folder_eid(KIND_SUBTREE)
        if kind == KIND_ROOT:
            return folder_props(store, eid, eid, kind, ROOT_NAME, (0, 0), True)
        if kind == KIND_SUBTREE:
            root = self.folder_eid(KIND_ROOT)
            return folder_props(store, eid, root, kind, SUBTREE_NAME, (0, 0), True)
        if kind == KIND_OUTBOX:
            return folder_props(store, eid, subtree, kind, ROLE_NAMES["outbox"], (0, 0), False)
        info = account.tree.folders.get(name)
        if info is None:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no folder {name!r} on the server")
        parent = subtree if info.parent is None else self.folder_eid(KIND_FOLDER, info.parent)
        return folder_props(
            store,
            eid,
            parent,
            kind,
            info.display,
            account.counts(name),
            account.tree.has_children(name),
        )

    def hierarchy_rows(self, kind: str, name: str) -> list[dict[str, Any]]:
        account = self.logged_on()
        if kind == KIND_ROOT:
            children = [(KIND_SUBTREE, "")]
        elif kind == KIND_SUBTREE:
            top = account.tree.children(None)
            children = [(KIND_FOLDER, f.name) for f in top if f.role == "inbox"]
            children.append((KIND_OUTBOX, ""))
            children += [(KIND_FOLDER, f.name) for f in top if f.role != "inbox"]
        elif kind == KIND_FOLDER:
            children = [(KIND_FOLDER, f.name) for f in account.tree.children(name)]
        else:
            children = []
        rows = []
        for child_kind, child in children:
            row = self.folder_props(child_kind, child)
            row[PR_DEPTH.name] = 0
            rows.append(row)
        return rows

    async def contents(self, kind: str, name: str) -> Sequence[Row]:
        if kind == KIND_OUTBOX:
            return await self.writes.outbox_rows()
        if kind != KIND_FOLDER:
            return ()  # the root and the subtree hold none
        account = self.logged_on()
        if name not in account.tree.folders:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no folder {name!r} on the server")
        return await account.rows(name)

    # -- messages ------------------------------------------------------------------------

    async def message_props(
        self, name: str, validity: int, uid: int, *, whole: bool
    ) -> tuple[dict[str, Any], bytes, bool]:
        """(properties, bytes, complete) of a message: its body from the cache, else from
        the server (then cached). Offline, properties come from the cached header fields
        (complete False); the MIME (`whole`) then fails with MAPI_E_NETWORK_ERROR."""
        account = self.logged_on()
        records = await account.loaded(name)
        record = records.get(uid)
        marks = account.marks.get(name)
        if record is None or (marks is not None and marks.uidvalidity != validity):
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND, "the message is gone from the server meanwhile"
            )
        raw = await self.support.run_blocking(account.cache.body, name, uid)
        complete = raw is not None
        if raw is None:
            if not account.online and not whole:
                raw = record.header + b"\r\n"
            else:
                raw = await account.fetch_body(name, validity, uid)
                if raw is None:
                    raise MapiError(
                        ErrorCode.MAPI_E_NOT_FOUND, "the message is gone from the server"
                    )
                complete = True
        eid = entryids.message_entryid(self.uid, name, validity, uid)
        folder = self.folder_eid(KIND_FOLDER, name)
        props = await self.support.run_blocking(
            opened_props, record, raw, eid, folder, self.store_entryid()
        )
        return props, raw, complete

    def parse(self, entryid: bytes) -> Parsed:
        return entryids.parse_entryid(self.uid, entryid)

    def validity(self, name: str) -> int:
        """The UIDVALIDITY of a mailbox as last synced (0: never)."""
        return self.logged_on().marks.get(name, FolderMarks()).uidvalidity

    def current_flags(self, name: str, uid: int) -> tuple[str, ...]:
        record = self.logged_on().records.get(name, {}).get(uid)
        return record.flags if record is not None else ()

    def new_message_props(self, name: str) -> dict[str, Any]:
        """What a new, unsaved message already has."""
        return {
            "PR_MESSAGE_CLASS": "IPM.Note",
            "PR_OBJECT_TYPE": int(ObjectType.MAPI_MESSAGE),
            "PR_PARENT_ENTRYID": self.folder_eid(KIND_FOLDER, name),
            "PR_STORE_ENTRYID": self.store_entryid(),
        }

    async def queued_props(self, entryid: bytes) -> tuple[dict[str, Any], bytes]:
        """(properties, bytes) of a message queued in the local Outbox."""
        raw, _ = await self.writes.queued_raw(self.writes.queued_key(entryid))
        props, _ = await self.support.run_blocking(message_props, raw)
        props.update(
            {
                "PR_ENTRYID": entryid,
                "PR_RECORD_KEY": entryid,
                "PR_INSTANCE_KEY": entryid,
                "PR_PARENT_ENTRYID": self.folder_eid(KIND_OUTBOX),
                "PR_STORE_ENTRYID": self.store_entryid(),
                "PR_OBJECT_TYPE": int(ObjectType.MAPI_MESSAGE),
                "PR_MESSAGE_SIZE": len(raw),
                "PR_MESSAGE_FLAGS": QUEUED_FLAGS
                | (int(MessageFlags.MSGFLAG_HASATTACH) if props.get("PR_HASATTACH") else 0),
            }
        )
        return props, raw

    def require_online(self, what: str) -> None:
        account = self.logged_on()
        if not account.online:
            raise MapiError(
                ErrorCode.MAPI_E_NETWORK_ERROR,
                f"imap: cannot {what}: {account.settings.where} is out of reach "
                f"({account.status_text})",
            )

    # -- the spooler's side: the local Outbox is the queue (writes.py) ------------------

    async def queued(self) -> list[bytes]:
        return await self.writes.queued()

    async def queued_message(self, entryid: bytes) -> QueuedMessage:
        return await self.writes.queued_message(entryid)

    async def finished(
        self, entryid: bytes, *, sent_mime: bytes | None, delete: bool
    ) -> bytes | None:
        return await self.writes.finished(entryid, sent_mime, delete)

    async def deliver(self, mime: bytes) -> bytes:
        """APPEND to INBOX (unread): its sync raises fnevNewMail."""
        return await self.writes.append(INBOX, mime, ())


class ImapService(MessageService):
    """The `imap` service: one message store provider; it supplies no identity."""

    name = "imap"
    display_name = "IMAP message store"
    flags = ServiceFlags.SERVICE_NO_PRIMARY_IDENTITY
    providers = (ImapStore,)
    config_schema: ClassVar[dict[str, Any]] = CONFIG_SCHEMA
    secret_keys = frozenset({"oauth2_token_command"})

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[ConfigProblem]:
        return check_config(config)
