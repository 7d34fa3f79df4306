"""The write side of the IMAP store: what changes the server, and the local Outbox as the
spooler's queue (docs/design.md 4 and 7).

Each change is one trip to the command thread (`Account.command`): SELECT read-write (the
UIDVALIDITY checked against the entry ID's), then UID STORE, UID COPY / UID MOVE, UID
EXPUNGE, APPEND, CREATE or DELETE, and the cache's note of it. Back on the loop the rows
follow and every session hears it as the Maildir store raises its writes: fnevObject-
Modified, -Moved and -Copied (with the old entry IDs), -Deleted; APPENDed messages come in
through a sync of their mailbox (fnevObjectCreated, fnevNewMail for unread Inbox mail). New
UIDs of copies are read right after the COPY or MOVE (what arrived from the target's
UIDNEXT on, matched by Message-ID: IMAPClient's public API does not hand back COPYUID),
of appended messages from APPENDUID; failing that a resync finds them (copies by their
header fields, appended messages by Message-ID). Without MOVE a move is COPY, STORE
\\Deleted and UID EXPUNGE (plain EXPUNGE without UIDPLUS: it also removes what other clients
marked \\Deleted there, which is what EXPUNGE means).

Offline, a change of the server is MAPI_E_NETWORK_ERROR at once: nothing is queued, so no
client believes in a change the server never got. Submitting a new message works offline
(the Outbox is cache.OutboxFiles, local and durable). After the send, finished() moves it
to `sent-copies/` and APPENDs it to \\Sent (unless `save_sent = false`): now when online,
else after the next connection; the file goes only once the server has the copy, and a
copy whose Message-ID Sent holds already is not appended twice. deliver() APPENDs to INBOX;
offline it fails, and the spooler delivers the report again on a later pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import logging
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from imapclient import IMAPClient

from mapid.constants import NotificationEvent, SpoolerNotify
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import ProviderSupport, QueuedMessage
from mapid.providers.imap import entryids
from mapid.providers.imap.account import Account, Change
from mapid.providers.imap.cache import Cache, FolderMarks, OutboxFiles, Record
from mapid.providers.imap.entryids import KIND_OUTBOX, KIND_QUEUED
from mapid.providers.imap.names import INBOX, ROLE_NAMES, check_folder_name
from mapid.providers.imap.rows import flag_edits, queued_message, queued_row
from mapid.providers.rfc5322 import (
    parse_header_block,
    split_head,
)

__all__ = ["Host", "Writes"]

log = logging.getLogger("mapid.provider.imap")
T = TypeVar("T")
DELETED, SEEN, DRAFT = "\\Deleted", "\\Seen", "\\Draft"
SENT_NAME = "Sent"
"""The mailbox made for the Sent copies on a server that has no \\Sent one."""
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.IGNORECASE)
_filing: weakref.WeakKeyDictionary[Account, asyncio.Lock] = weakref.WeakKeyDictionary()
"""One filing of sent copies at a time per account, whichever session starts it."""


# --- On the command thread (blocking) ---------------------------------------------------------


def _text(exc: BaseException) -> str:
    text = str(exc).strip()
    return text[2:-1] if text[:2] in ("b'", 'b"') else text


@contextlib.contextmanager
def _asking(what: str) -> Iterator[None]:
    """A NO or BAD from the server becomes a MapiError that says what was refused; a broken
    link (abort, socket errors) goes on to Account.command."""
    try:
        yield
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:
        text = _text(exc)
        code = ErrorCode.MAPI_E_CALL_FAILED
        if "ALREADYEXISTS" in text.upper():
            code = ErrorCode.MAPI_E_COLLISION
        elif "NONEXISTENT" in text.upper():
            code = ErrorCode.MAPI_E_NOT_FOUND
        raise MapiError(code, f"imap: the server refused to {what}: {text}") from None


def _select(client: IMAPClient, name: str, validity: int) -> None:
    """SELECT (read-write), the mailbox still numbered as the entry IDs say."""
    status = client.select_folder(name)
    if validity and int(status.get(b"UIDVALIDITY", 0)) != validity:
        raise MapiError(
            ErrorCode.MAPI_E_NOT_FOUND,
            f"imap: {name!r} was renumbered on the server (its UIDVALIDITY changed): these "
            "entry IDs name no message any more",
        )


def _flags_of(data: dict[bytes, Any]) -> tuple[str, ...]:
    raw = data.get(b"FLAGS", ())
    return tuple(sorted(f.decode() if isinstance(f, bytes) else str(f) for f in raw))


def _expunge(client: IMAPClient, uids: list[int]) -> None:
    client.add_flags(uids, [DELETED], silent=True)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)
    else:
        client.expunge()


def store_flags(
    client: IMAPClient,
    cache: Cache,
    name: str,
    validity: int,
    uid: int,
    add: set[str],
    remove: set[str],
) -> tuple[str, ...] | None:
    """UID STORE the flags; the message's flags now (cached), None when it is gone."""
    with _asking("change the message's flags"):
        _select(client, name, validity)
        if add:
            client.add_flags([uid], sorted(add), silent=True)
        if remove:
            client.remove_flags([uid], sorted(remove), silent=True)
        data = client.fetch([uid], ["FLAGS"]).get(uid)
    if data is None:
        return None
    flags = _flags_of(data)
    cache.note_changes(name, flags={uid: flags})
    return flags


def copy_blocking(
    client: IMAPClient,
    cache: Cache,
    name: str,
    validity: int,
    records: dict[int, Record],
    target: str,
    marks: FolderMarks | None,
    move: bool,
) -> tuple[dict[int, int], list[Record]]:
    """UID COPY or UID MOVE `records` of `name` to `target`: (old UID -> new UID, the new
    records, cached), both empty when the copies cannot be told apart (_copies_of) or
    `target` was renumbered since its last sync: then a sync finds them."""
    uids = sorted(records)
    with _asking(f"{'move' if move else 'copy'} the messages"):
        before = client.folder_status(target, [b"UIDNEXT", b"UIDVALIDITY"])
        _select(client, name, validity)
        if move and client.has_capability("MOVE"):
            client.move(uids, target)
        else:
            client.copy(uids, target)
            if move:
                _expunge(client, uids)
        if move:
            cache.note_changes(name, gone=uids)
        target_validity = int(before.get(b"UIDVALIDITY", 0))
        if marks is None or marks.uidvalidity != target_validity:
            return {}, []  # the target was renumbered since its last sync: a sync finds them
        mapping = _copies_of(client, target, int(before.get(b"UIDNEXT", 0)), records)
    made = [records[o].copy_as(n, _without_recent(records[o].flags)) for o, n in mapping.items()]
    if made:
        cache.note_changes(target, added=made)
    return mapping, made


def _copies_of(
    client: IMAPClient, target: str, uidnext: int, records: dict[int, Record]
) -> dict[int, int]:
    """Old UID -> the UID its copy got in `target`, or {} when that cannot be told.

    The server says so in COPYUID (UIDPLUS), but IMAPClient's public API does not hand
    that response code back. So: the messages that arrived in `target` from its UIDNEXT
    before the copy on, matched to the originals by Message-ID, in order (a server copies
    in UID order). Anything else arriving there at the same moment makes them disagree:
    then {} and a sync finds the copies."""
    if not uidnext:
        return {}
    client.select_folder(target, readonly=True)
    arrived = sorted(u for u in client.search(["UID", f"{uidnext}:*"]) if u >= uidnext)
    if len(arrived) != len(records):
        return {}
    fetched = client.fetch(arrived, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    mapping: dict[int, int] = {}
    for old, new in zip(sorted(records), arrived, strict=True):
        header = next((v for k, v in fetched.get(new, {}).items() if k.startswith(b"BODY")), b"")
        theirs = _message_id(bytes(header or b""))
        if not theirs or theirs != _message_id(records[old].header):
            return {}
        mapping[old] = new
    return mapping


def _message_id(header: bytes) -> str:
    return str(parse_header_block(split_head(header)).get("message-id") or "").strip()


def _without_recent(flags: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f for f in flags if f.lower() != "\\recent")


def delete_blocking(
    client: IMAPClient, cache: Cache, name: str, validity: int, uids: list[int]
) -> None:
    """UID STORE +FLAGS (\\Deleted) and UID EXPUNGE: gone for good."""
    with _asking("delete the messages"):
        _select(client, name, validity)
        _expunge(client, uids)
    cache.note_changes(name, gone=uids)


def append_blocking(
    client: IMAPClient, name: str, raw: bytes, flags: tuple[str, ...], message_id: str
) -> tuple[int, int] | None:
    """APPEND: (UIDVALIDITY, UID) of the new message, from APPENDUID, else by its
    Message-ID; None when neither says."""
    with _asking(f"store a message in {name!r}"):
        said = client.append(name, raw, flags=flags) or b""
        found = _APPENDUID.search(said if isinstance(said, bytes) else str(said).encode())
        if found is not None:
            return int(found[1]), int(found[2])
        if not message_id:
            return None
        status = client.select_folder(name, readonly=True)
        uids = client.search(["HEADER", "Message-ID", message_id])
    return (int(status.get(b"UIDVALIDITY", 0)), max(uids)) if uids else None


def holds_message_id(client: IMAPClient, name: str, message_id: str) -> bool:
    with _asking(f"search {name!r}"):
        client.select_folder(name, readonly=True)
        return bool(client.search(["HEADER", "Message-ID", message_id]))


def create_blocking(client: IMAPClient, name: str) -> None:
    with _asking(f"create the folder {name!r}"):
        client.create_folder(name)
    with contextlib.suppress(imaplib.IMAP4.error):  # a server without subscriptions
        client.subscribe_folder(name)


def delete_folder_blocking(client: IMAPClient, name: str) -> None:
    with _asking(f"delete the folder {name!r}"):
        client.select_folder(INBOX, readonly=True)  # not the mailbox that goes
        client.delete_folder(name)
    with contextlib.suppress(imaplib.IMAP4.error):
        client.unsubscribe_folder(name)


# --- On the loop -------------------------------------------------------------------------------


class Host(Protocol):
    """What the writes need of their store (ImapStore)."""

    @property
    def support(self) -> ProviderSupport: ...
    def logged_on(self) -> Account: ...


class Writes:
    """The store's changes, on the loop; the blocking halves above run on the command
    thread. One per store provider; the account (and its cache) is the sessions' shared."""

    def __init__(self, store: Host) -> None:
        self._store = store

    @property
    def account(self) -> Account:
        return self._store.logged_on()

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._store.support.run_blocking(fn, *args)

    def _eid(self, name: str, validity: int, uid: int) -> bytes:
        return entryids.message_entryid(self.account.uid, name, validity, uid)

    def _display(self, name: str) -> str:
        info = self.account.tree.folders.get(name)
        return info.display if info is not None else name

    def _folder(self, name: str) -> None:
        if name not in self.account.tree.folders:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no folder {name!r} on the server")

    # -- flags ---------------------------------------------------------------------------

    async def set_flags(self, name: str, validity: int, uid: int, changes: dict[str, Any]) -> None:
        """A client's changes of the flag properties, as one UID STORE."""
        add, remove = flag_edits(changes)
        account = self.account
        records = await account.loaded(name)
        record = records.get(uid)
        if record is None:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "the message is gone from the server")
        have = {f.lower() for f in record.flags}
        add = {f for f in add if f.lower() not in have}
        remove = {f for f in remove if f.lower() in have}
        if not add and not remove:
            return
        flags = await account.command(
            "change the message's flags",
            store_flags,
            account.cache,
            name,
            validity,
            uid,
            add,
            remove,
        )
        if flags is None:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "the message is gone from the server")
        record.flags, record.row = flags, None
        folder = account.folder_entryid(name)
        eid = self._eid(name, validity, uid)
        account.note_local(name, [Change(NotificationEvent.fnevObjectModified, eid, folder)])

    # -- folders -------------------------------------------------------------------------

    async def create_folder(self, parent: str | None, name: str) -> str:
        """CREATE a mailbox below `parent` (None: the IPM subtree); its server name."""
        account = self.account
        tree = account.tree
        if parent is not None:
            self._folder(parent)
        delimiter = tree.folders[parent or INBOX].delimiter
        check_folder_name(name, delimiter)
        taken = {f.display.casefold() for f in tree.children(parent)}
        taken |= {f.name.rsplit(delimiter, 1)[-1].casefold() for f in tree.children(parent)}
        if parent is None:
            taken |= {n.casefold() for n in ROLE_NAMES.values()}
        if name.casefold() in taken:
            raise MapiError(
                ErrorCode.MAPI_E_COLLISION, f"a folder named {name!r} already exists there"
            )
        if parent is not None and not delimiter:
            raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this server keeps no folder hierarchy")
        full = name if parent is None else f"{parent}{delimiter}{name}"
        await account.command(f"create the folder {name!r}", create_blocking, full)
        await self._relist()
        if full not in account.tree.folders:
            raise MapiError(
                ErrorCode.MAPI_E_CALL_FAILED, f"imap: the server does not list {full!r} it made"
            )
        await account.resync(full)
        return full

    async def _relist(self) -> None:
        with contextlib.suppress(EOFError, OSError, imaplib.IMAP4.error):
            await self.account.relist()  # a lost link: the reconnect lists again

    async def delete_folder(self, name: str) -> None:
        """DELETE a mailbox with its messages; not a special folder, not one with folders."""
        account = self.account
        self._folder(name)
        info = account.tree.folders[name]
        if info.role is not None:
            raise MapiError(
                ErrorCode.MAPI_E_NO_ACCESS, f"{info.display!r} is a special folder: it stays"
            )
        if account.tree.has_children(name):
            raise MapiError(
                ErrorCode.MAPI_E_HAS_FOLDERS, f"{info.display!r} has folders: delete them first"
            )
        await account.command(f"delete the folder {info.display!r}", delete_folder_blocking, name)
        await self._relist()

    # -- messages ------------------------------------------------------------------------

    async def append(self, name: str, raw: bytes, flags: Sequence[str]) -> bytes:
        """APPEND a message; its entry ID. The mailbox's sync brings its row (and raises
        fnevObjectCreated, fnevNewMail for unread mail in the Inbox)."""
        account = self.account
        self._folder(name)
        message_id = str(parse_header_block(split_head(raw)).get("message-id") or "").strip()
        where = await account.command(
            f"store a message in {self._display(name)!r}",
            append_blocking,
            name,
            raw,
            tuple(flags),
            message_id,
        )
        await account.resync(name)
        if where is None:
            raise MapiError(
                ErrorCode.MAPI_E_CALL_FAILED,
                "imap: the message is on the server, but the server does not say which UID "
                "it has (no UIDPLUS, no Message-ID)",
            )
        return self._eid(name, *where)

    async def copy(
        self, name: str, validity: int, uids: Sequence[int], target: str, move: bool
    ) -> list[bytes]:
        """UID COPY or UID MOVE into `target`; the new entry IDs, in order."""
        account = self.account
        self._folder(target)
        records = await account.loaded(name)
        missing = [u for u in uids if u not in records]
        if missing:
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND,
                f"no such message in {self._display(name)!r} (deleted or moved meanwhile)",
            )
        if move and target == name:
            return [self._eid(name, validity, u) for u in uids]
        chosen = {u: records[u] for u in uids}
        dest = await account.loaded(target)
        before = set(dest)
        mapping, made = await account.command(
            f"{'move' if move else 'copy'} the messages",
            copy_blocking,
            account.cache,
            name,
            validity,
            chosen,
            target,
            account.marks.get(target),
            move,
        )
        source, here = account.folder_entryid(name), account.folder_entryid(target)
        changes: list[Change] = []
        if move:
            for uid in uids:
                records.pop(uid, None)
        new_validity = account.marks.get(target, FolderMarks()).uidvalidity
        for record in made:
            dest[record.uid] = record
        event = NotificationEvent.fnevObjectMoved if move else NotificationEvent.fnevObjectCopied
        for old, new in mapping.items():
            changes.append(
                Change(
                    event,
                    self._eid(target, new_validity, new),
                    here,
                    old_entryid=self._eid(name, validity, old),
                    old_parent_entryid=source,
                )
            )
        if move and not mapping:
            changes += [
                Change(NotificationEvent.fnevObjectDeleted, self._eid(name, validity, u), source)
                for u in uids
            ]
        account.note_local(name, [])
        account.note_local(target, changes)
        if not mapping:  # not told right away: a sync finds them, by their header fields
            await account.resync(target)
            mapping = _matched(chosen, {u: r for u, r in dest.items() if u not in before})
            new_validity = account.marks.get(target, FolderMarks()).uidvalidity
        return [self._eid(target, new_validity, mapping[u]) for u in uids if u in mapping]

    async def delete(self, name: str, validity: int, uids: Sequence[int]) -> None:
        """Hard delete: UID STORE \\Deleted and UID EXPUNGE (messages gone already are
        skipped: deleting is idempotent, as in the Maildir store)."""
        account = self.account
        records = await account.loaded(name)
        present = sorted({u for u in uids if u in records})
        if not present:
            return
        await account.command(
            "delete the messages", delete_blocking, account.cache, name, validity, present
        )
        folder = account.folder_entryid(name)
        for uid in present:
            records.pop(uid, None)
        account.note_local(
            name,
            [
                Change(NotificationEvent.fnevObjectDeleted, self._eid(name, validity, u), folder)
                for u in present
            ],
        )

    # -- the Outbox: the spooler's queue, local --------------------------------------------

    @property
    def files(self) -> OutboxFiles:
        return OutboxFiles(self.account.cache.directory)

    def queued_eid(self, key: str) -> bytes:
        return entryids.queued_entryid(self.account.uid, key)

    def _outbox_changes(self, event: NotificationEvent, key: str) -> list[Change]:
        outbox = entryids.folder_entryid(self.account.uid, KIND_OUTBOX)
        return [Change(event, self.queued_eid(key), outbox)]

    async def submit(self, data: bytes) -> bytes:
        """Queue `data` (the message as it will be sent) in the Outbox, durably."""
        key = await self._blocking(self.files.add, data)
        created = self._outbox_changes(NotificationEvent.fnevObjectCreated, key)
        self.account.note_local(None, created)
        spooler_notify = getattr(self._store.support, "spooler_notify", None)
        if callable(spooler_notify):
            spooler_notify(SpoolerNotify.NOTIFY_READYTOSEND)
        return self.queued_eid(key)

    def queued_key(self, entryid: bytes) -> str:
        parsed = entryids.parse_entryid(self.account.uid, entryid)
        if parsed.kind != KIND_QUEUED:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "that message is not in the Outbox")
        return parsed.mailbox

    async def queued(self) -> list[bytes]:
        return [self.queued_eid(k) for k in await self._blocking(self.files.queued)]

    async def queued_raw(self, key: str) -> tuple[bytes, float]:
        return await self._blocking(self.files.read, key)

    async def queued_message(self, entryid: bytes) -> QueuedMessage:
        raw, submitted = await self.queued_raw(self.queued_key(entryid))
        return await self._blocking(queued_message, entryid, raw, submitted)

    async def drop_queued(self, entryids_: Sequence[bytes]) -> None:
        """Messages leave the Outbox unsent (deleted from it); gone ones are skipped."""
        for entryid in entryids_:
            key = self.queued_key(entryid)
            with contextlib.suppress(MapiError):
                await self._blocking(self.files.drop, key)
                self.account.note_local(
                    None, self._outbox_changes(NotificationEvent.fnevObjectDeleted, key)
                )

    async def finished(self, entryid: bytes, sent_mime: bytes | None, delete: bool) -> bytes | None:
        """Sent (or given up): out of the Outbox; the Sent copy on its way to the server."""
        key = self.queued_key(entryid)
        account = self.account
        if delete or not account.settings.save_sent:
            await self._blocking(self.files.drop, key)
            result = None
        else:
            await self._blocking(self.files.to_copies, key, sent_mime)
            result = await self.file_sent_copies(key)
        account.note_local(None, self._outbox_changes(NotificationEvent.fnevObjectDeleted, key))
        return result

    async def file_sent_copies(self, wanted: str | None = None) -> bytes | None:
        """APPEND the sent copies waiting on disk to the \\Sent mailbox, oldest first, while
        the account is online; each leaves the disk once the server has it. Returns the
        entry ID of the copy of `wanted` when it was filed now."""
        account = self.account
        lock = _filing.setdefault(account, asyncio.Lock())
        found: bytes | None = None
        async with lock:
            for key in await self._blocking(self.files.copies_waiting):
                data = await self._blocking(self.files.copy, key)
                if data is None:
                    continue
                if not account.online:
                    break
                try:
                    eid = await self._file_one(data)
                except MapiError as exc:
                    log.warning("imap %s: the Sent copy waits: %s", account.settings.where, exc)
                    break
                await self._blocking(self.files.copy_filed, key)
                if key == wanted:
                    found = eid
        return found

    async def _file_one(self, data: bytes) -> bytes | None:
        account = self.account
        sent = account.tree.roles.get("sent")
        if sent is None:
            with contextlib.suppress(MapiError):  # made by someone meanwhile: fine
                await account.command("create the Sent folder", create_blocking, SENT_NAME)
            await self._relist()
            sent = account.tree.roles.get("sent") or SENT_NAME
        message_id = str(parse_header_block(split_head(data)).get("message-id") or "").strip()
        if message_id:
            filed: bool = await account.command(
                "look in the Sent folder", holds_message_id, sent, message_id
            )
            if filed:
                return None  # filed before a crash cut the clean-up short
        return await self.append(sent, data, (SEEN,))

    async def outbox_rows(self) -> list[dict[str, Any]]:
        """The Outbox's contents rows, from the queued files' headers."""
        return await self._blocking(self._outbox_rows_blocking)

    def _outbox_rows_blocking(self) -> list[dict[str, Any]]:
        files = self.files
        outbox = entryids.folder_entryid(self.account.uid, KIND_OUTBOX)
        rows = []
        for key in files.queued():
            with contextlib.suppress(MapiError):  # sent meanwhile
                raw, submitted = files.read(key)
                rows.append(queued_row(raw, self.queued_eid(key), outbox, submitted))
        return rows


def _matched(sources: dict[int, Record], added: dict[int, Record]) -> dict[int, int]:
    """Copies without COPYUID: each source UID -> the new message with its header fields."""
    out: dict[int, int] = {}
    free = dict(added)
    for uid, record in sorted(sources.items()):
        for new, candidate in sorted(free.items()):
            if candidate.header == record.header:
                out[uid] = new
                del free[new]
                break
    return out
