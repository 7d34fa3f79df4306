"""One IMAP account, shared by every session that logs on to it: its connections, its
cache, its online state. The threading lives here.

The event loop never blocks. IMAPClient is blocking, so each IMAP connection has a thread
of its own:

- the command connection runs on the account's single-thread executor (`_cmd`: every
  LIST, EXAMINE, SEARCH and FETCH, and the cache writes that go with them, in order, awaited
  from the loop through `loop.run_in_executor`);
- the Inbox's IDLE connection runs on its own thread (idle.py), which hands what it hears
  to the loop with `loop.call_soon_threadsafe`.

Everything else (the state, the in-memory rows, the status text, the reconnect loop, the
fan-out of changes to the sessions' providers) lives on the event loop, so it needs no
locks: a sync returns its result to the loop, which applies it. Cache reads for message
bodies go through the daemon's pool (`support.run_blocking`), not the command thread.

`_run` is the account's life: connect and log in (a failure is offline with the reason,
then a retry after an exponential backoff with jitter: 2 s, 4 s, 8 s... up to
`reconnect_max`), sync the folder list and every mailbox, then serve: sync the Inbox when
IDLE says so, every mailbox each `poll_interval`, until the connection is lost; then
offline at once and around again. `kick()` (validate_state) retries at once.

Accounts are shared per cache directory (`acquire` / `release`), as the Maildir store
shares one folder index per Maildir: one pair of connections, however many sessions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from imapclient import IMAPClient

from mapid.constants import MessageFlags, NotificationEvent, ObjectType, StatusCode
from mapid.dbus_bus import watch_resume
from mapid.errors import ErrorCode, MapiError
from mapid.providers.imap import entryids
from mapid.providers.imap.cache import Cache, FolderMarks, Record
from mapid.providers.imap.config import ImapSettings
from mapid.providers.imap.connection import (
    LINK_ERRORS,
    AuthFailed,
    Login,
    TokenRejected,
    close_quietly,
    describe,
    open_connection,
    tls_context,
)
from mapid.providers.imap.entryids import KIND_FOLDER, KIND_SUBTREE
from mapid.providers.imap.idle import IdleWatch, SuspendWatch
from mapid.providers.imap.names import INBOX, Tree, build_tree
from mapid.providers.imap.rows import RecordRows, flag_props, row_of
from mapid.providers.imap.sync import (
    Capabilities,
    FolderSync,
    Progress,
    fetch_body,
    greet,
    list_mailboxes,
    sync_folder,
)
from mapid.providers.row_pacer import RowPacer

__all__ = ["Account", "Change", "Listener", "acquire", "backoff", "release"]

log = logging.getLogger("mapid.provider.imap")
T = TypeVar("T")
FIRST_RETRY_S = 2.0
LOGON_WAIT_S = 5.0
"""How long a logon waits for the first sync when the cache knows no folders yet."""


def backoff(attempt: int, cap: float) -> float:
    """The wait before retry `attempt` (0 first): 2 s doubling, jittered up by a quarter
    (so that many clients do not return to a recovered server in step), at most `cap`."""
    base = FIRST_RETRY_S * (2 ** min(attempt, 20))
    return float(min(cap, base * random.uniform(1.0, 1.25)))


@dataclass(frozen=True)
class Change:
    """One notification to raise to the sessions (docs/protocol.md 7.4 fields)."""

    event: NotificationEvent
    entryid: bytes
    parent_entryid: bytes
    object_type: ObjectType = ObjectType.MAPI_MESSAGE
    message_class: str = ""
    message_flags: int = 0
    old_entryid: bytes | None = None
    """fnevObjectMoved and fnevObjectCopied: what it was (and where) before."""
    old_parent_entryid: bytes | None = None

    def fields(self) -> dict[str, Any]:
        if self.event == NotificationEvent.fnevNewMail:
            return {
                "parent_entryid": self.parent_entryid,
                "message_class": self.message_class,
                "message_flags": self.message_flags,
            }
        out: dict[str, Any] = {
            "object_type": int(self.object_type),
            "parent_entryid": self.parent_entryid,
        }
        if self.old_entryid is not None:
            out["old_entryid"] = self.old_entryid
            out["old_parent_entryid"] = self.old_parent_entryid
        return out


class Listener(Protocol):
    """What the account tells each session's store provider."""

    def account_status(self) -> None: ...
    def account_changes(self, changes: Sequence[Change]) -> None: ...
    async def account_login(self, settings: ImapSettings) -> Login: ...


class _Lost(Exception):
    pass


class Account:
    """The shared state of one account; see the module docstring for who runs where."""

    def __init__(self, cache: Cache, settings: ImapSettings) -> None:
        self.cache = cache
        self.uid = cache.uid
        self.settings = settings
        self.tree: Tree = build_tree(cache.listing())
        self.marks: dict[str, FolderMarks] = cache.marks()
        self.records: dict[str, dict[int, Record]] = {}
        self._rows: dict[str, RecordRows] = {}
        self._loading: dict[str, asyncio.Future[dict[int, Record]]] = {}
        """Mailboxes being read from the cache now (loaded)."""
        self.online = False
        self.status_text = f"connecting to {settings.where}"
        self.listeners: list[Listener] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="mapid-imap-cmd"
        )
        self._client: IMAPClient | None = None
        """The command connection: used only on the executor's thread."""
        self._caps = Capabilities(idle=False, condstore=False, xlist=False)
        self._tls: ssl.SSLContext | None = None
        self._idle: IdleWatch | None = None
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._lost: str | None = None
        self._first = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._suspend = SuspendWatch(self.resumed)
        self._logind = watch_resume(lambda: self.resumed(None))
        """logind's word of a resume, before the clocks would tell (idle.py)."""
        self._hurry = False
        """Resumed from a suspend: the next wait of the reconnect loop is skipped."""
        self.progress: tuple[str, int, int] | None = None
        """(mailbox, done, total) of a long sync's new messages (the row shows it)."""
        self._pacer = RowPacer(self._push_status, log)

    # -- life --------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
            self._suspend.start()
            self._logind.start()

    async def wait_first(self, timeout: float) -> None:
        """Wait (at most `timeout`) for the first connection attempt and its sync."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._first.wait()), timeout)

    def kick(self) -> None:
        """Reconnect now when offline; sync everything now when online."""
        self._dirty.update(n for n, f in self.tree.folders.items() if f.selectable)
        self._wake.set()

    def poke(self, folder: str) -> None:
        """Sync one mailbox soon (IDLE heard of a change)."""
        self._dirty.add(folder)
        self._wake.set()

    def resumed(self, seconds: float | None) -> None:
        """The machine woke from a suspend (idle.SuspendWatch with its length, or logind's
        PrepareForSleep with None): reconnect at once, online or not (the connections may
        be dead without a word, a backoff may be long)."""
        if self._closed:
            return
        what = (
            "logind: resumed" if seconds is None else f"resumed from a suspend of {seconds:.0f} s"
        )
        log.info("imap %s: %s", self.settings.where, what)
        self._hurry = True
        if self.online:
            self.connection_lost(what)
            self._cut()  # a command waiting on a dead link fails now, not at its timeout
        self._wake.set()

    def connection_lost(self, reason: str) -> None:
        """The IDLE thread's report (on the loop): offline at once."""
        if self._closed or not self.online:
            return
        self._lost = reason
        self._set_offline(f"lost the connection to {self.settings.where}: {reason}; reconnecting")
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        self._suspend.stop()
        self._logind.stop()
        self._pacer.close()
        self._stop_idle()
        if self._task is not None:
            self._task.cancel()
        self._cut()
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._close_blocking)
        try:
            await asyncio.wait_for(asyncio.shield(done), 5.0)
        except TimeoutError:
            log.warning("the IMAP connection to %s did not close in 5 s", self.settings.where)
        self._executor.shutdown(wait=False)

    def _close_blocking(self) -> None:
        self._drop_blocking()
        self.cache.close()

    def _cut(self) -> None:
        """Wake a command stuck on the network (from the loop: only the socket's shutdown)."""
        client = self._client
        if client is not None:
            with contextlib.suppress(OSError, AttributeError):
                client.socket().shutdown(socket.SHUT_RDWR)

    async def _cmd(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def _login(self) -> Login | None:
        for listener in list(self.listeners):
            return await listener.account_login(self.settings)
        return None

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                login = await self._login()
                self._caps = await self._cmd(self._connect_blocking, login)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, unreachable, no password, TLS...
                if not isinstance(exc, (*LINK_ERRORS, AuthFailed, MapiError)):
                    log.warning("connecting to %s failed: %r", self.settings.where, exc)
                reason = exc.message if isinstance(exc, MapiError) else describe(exc)
                if isinstance(exc, TokenRejected):  # a third token would fare no better
                    self._set_offline(
                        f"{self.settings.where}: {reason}; trying again on validate_state "
                        "or a new configuration"
                    )
                    self._first.set()
                    self._wake.clear()
                    await self._wake.wait()
                    attempt = 0
                    continue
                delay = backoff(attempt, self.settings.reconnect_max)
                attempt += 1
                what = "" if isinstance(exc, AuthFailed | MapiError) else "cannot reach "
                self._set_offline(
                    f"{what}{self.settings.where}: {reason}; retrying in {round(delay)} s"
                )
                self._first.set()
                await self._sleep(delay)
                continue
            attempt = 0
            self._lost = None
            self._set_online()
            try:
                await self._sync_all()
                self._first.set()
                self._start_idle(login)
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost, or a protocol surprise: reconnect either way
                if not isinstance(exc, (*LINK_ERRORS, _Lost)):
                    log.warning("imap %s: %r; reconnecting", self.settings.where, exc)
                reason = str(exc) if isinstance(exc, _Lost) else describe(exc)
            self._first.set()
            if self._closed:
                return
            self._stop_idle()
            await self._cmd(self._drop_blocking)
            delay = 0.0 if self._hurry else backoff(0, self.settings.reconnect_max)
            attempt = 1
            self._set_offline(
                f"lost the connection to {self.settings.where}: {reason}; "
                + (f"retrying in {round(delay)} s" if delay else "reconnecting")
            )
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        if self._hurry:  # resumed from a suspend: no waiting
            self._hurry = False
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def _serve(self) -> None:
        next_poll = time.monotonic() + self.settings.poll_interval
        while not self._closed:
            if self._lost is not None:
                raise _Lost(self._lost)
            if self._dirty:
                names, self._dirty = sorted(self._dirty), set()
                for name in names:
                    await self._sync_folder(name)
                continue
            if time.monotonic() >= next_poll:
                await self._sync_all()
                next_poll = time.monotonic() + self.settings.poll_interval
                continue
            await self._sleep(max(0.0, next_poll - time.monotonic()))

    # -- the command thread's side (blocking) ---------------------------------------

    def _connect_blocking(self, login: Login | None) -> Capabilities:
        self._drop_blocking()
        if self._tls is None and self.settings.security != "none":
            self._tls = tls_context(self.settings)
        client = open_connection(self.settings, login, self._tls)
        try:
            caps = greet(client)
        except BaseException:
            close_quietly(client)
            raise
        self._client = client
        return caps

    def _drop_blocking(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            close_quietly(client)

    def _need_client(self) -> IMAPClient:
        if self._client is None:
            raise EOFError("not connected")
        return self._client

    def _list_blocking(self) -> tuple[list[tuple[tuple[bytes, ...], str, str]], list[str]]:
        listing = list_mailboxes(self._need_client(), self._caps)
        return listing, self.cache.set_listing(listing)

    def _sync_blocking(
        self,
        name: str,
        known: dict[int, tuple[str, ...]],
        marks: FolderMarks | None,
        progress: Progress | None = None,
    ) -> FolderSync | None:
        return sync_folder(
            self._need_client(), self.cache, name, known, marks, self._caps, progress
        )

    def _body_blocking(self, name: str, validity: int, uid: int) -> bytes | None:
        return fetch_body(self._need_client(), self.cache, name, validity, uid)

    # -- IDLE ----------------------------------------------------------------------------

    def _start_idle(self, login: Login | None) -> None:
        self._stop_idle()
        if not self._caps.idle:
            return  # the Inbox is polled with the rest
        self._idle = IdleWatch(
            asyncio.get_running_loop(),
            self.settings,
            login,
            self._tls,
            lambda: self.poke(INBOX),
            self.connection_lost,
            log,
            self._arrived,
        )
        self._idle.start()

    def _arrived(self, validity: int, records: list[Record]) -> None:
        """New Inbox mail the IDLE connection fetched: rows and fnevNewMail now, the cache
        written on the pool (the sync that follows finds these messages known)."""
        marks = self.marks.get(INBOX)
        known = self.records.get(INBOX)
        if marks is None or known is None or marks.uidvalidity != validity:
            return  # not synced yet, or renumbered: the sync that follows sees to it
        fresh = [r for r in records if r.uid not in known]
        if not fresh:
            return
        loop = asyncio.get_running_loop()
        written = loop.run_in_executor(None, partial(self.cache.note_changes, INBOX, added=fresh))
        written.add_done_callback(_log_failure)
        self._apply(INBOX, FolderSync(INBOX, marks, added=fresh), validity, announce_new=True)

    def _stop_idle(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.stop()

    # -- syncing (on the loop; the blocking parts on the command thread) ---------------

    async def _sync_all(self) -> None:
        await self.relist()
        for name, info in sorted(self.tree.folders.items()):
            if info.selectable:
                await self._sync_folder(name)

    async def relist(self) -> None:
        """LIST again: the new tree, its folders' creations and deletions raised."""
        listing, gone = await self._cmd(self._list_blocking)
        before = self.tree
        self.tree = build_tree(listing)
        changes: list[Change] = []
        for name in sorted(set(self.tree.folders) - set(before.folders)):
            changes.append(self._folder_change(NotificationEvent.fnevObjectCreated, name))
        for name in sorted(set(before.folders) - set(self.tree.folders)):
            changes.append(self._folder_change(NotificationEvent.fnevObjectDeleted, name, before))
        for name in gone:
            self.records.pop(name, None)
            self.marks.pop(name, None)
            self._rows.pop(name, None)
        self._publish(changes)

    def _folder_change(
        self, event: NotificationEvent, name: str, tree: Tree | None = None
    ) -> Change:
        info = (tree or self.tree).folders[name]
        parent = (
            self.folder_entryid(info.parent)
            if info.parent is not None
            else entryids.folder_entryid(self.uid, KIND_SUBTREE)
        )
        return Change(event, self.folder_entryid(name), parent, ObjectType.MAPI_FOLDER)

    async def loaded(self, name: str) -> dict[int, Record]:
        """The cached messages of a mailbox (read from SQLite on first use, once: the first
        sync and a client's first page after a restart share one read)."""
        found = self.records.get(name)
        if found is not None:
            return found
        loading = self._loading.get(name)
        if loading is None:
            loop = asyncio.get_running_loop()
            loading = loop.run_in_executor(None, self.cache.records, name)
            self._loading[name] = loading
            loading.add_done_callback(
                lambda f: self._loading.pop(name) if self._loading.get(name) is f else None
            )
        records = await asyncio.shield(loading)
        return self.records.setdefault(name, records)

    async def _sync_folder(self, name: str) -> None:
        if name not in self.tree.folders:
            return
        records = await self.loaded(name)
        marks = self.marks.get(name)
        known = {uid: r.flags for uid, r in records.items()}
        loop = asyncio.get_running_loop()

        def progress(done: int, total: int) -> None:  # on the command thread
            with contextlib.suppress(RuntimeError):  # a closed loop: the daemon is stopping
                loop.call_soon_threadsafe(self._set_progress, (name, done, total))

        try:
            result = await self._cmd(self._sync_blocking, name, known, marks, progress)
        finally:
            self._set_progress(None)
        if result is None:
            return
        old = marks.uidvalidity if marks is not None else 0
        self.marks[name] = result.marks
        if result.changed:
            self._apply(name, result, old, announce_new=bool(old) and not result.reset)

    def _apply(self, name: str, result: FolderSync, old: int, *, announce_new: bool) -> None:
        """Apply a sync's result to the rows, and raise what it found (`old`: the
        UIDVALIDITY before it; new mail is announced only in a mailbox seen before)."""
        records = self.records.setdefault(name, {})
        folder = self.folder_entryid(name)
        validity = result.marks.uidvalidity
        changes: list[Change] = []

        def eid(numbering: int, uid: int) -> bytes:
            return entryids.message_entryid(self.uid, name, numbering, uid)

        if result.reset:
            for uid in sorted(records):
                changes.append(Change(NotificationEvent.fnevObjectDeleted, eid(old, uid), folder))
            records.clear()
        for uid in result.gone:
            if records.pop(uid, None) is not None:
                changes.append(
                    Change(NotificationEvent.fnevObjectDeleted, eid(validity, uid), folder)
                )
        for uid, flags in result.flags.items():
            record = records.get(uid)
            if record is not None:
                record.flags, record.row = flags, None
                changes.append(
                    Change(NotificationEvent.fnevObjectModified, eid(validity, uid), folder)
                )
        for record in result.added:
            if records.get(record.uid) is not None:
                records[record.uid] = record  # the IDLE connection announced it already
                continue
            records[record.uid] = record
            new = eid(validity, record.uid)
            changes.append(Change(NotificationEvent.fnevObjectCreated, new, folder))
            mflags = flag_props(record.flags, record.summary.has_attach)["PR_MESSAGE_FLAGS"]
            if announce_new and name == INBOX and not mflags & MessageFlags.MSGFLAG_READ:
                changes.append(
                    Change(
                        NotificationEvent.fnevNewMail,
                        new,
                        folder,
                        message_class=record.summary.message_class,
                        message_flags=mflags,
                    )
                )
        self._rows.pop(name, None)
        self._publish(changes)
        if name == INBOX:
            self._status_changed()

    def _publish(self, changes: Sequence[Change]) -> None:
        if changes:
            for listener in list(self.listeners):
                listener.account_changes(changes)

    # -- what the stores ask ------------------------------------------------------------

    def folder_entryid(self, name: str) -> bytes:
        return entryids.folder_entryid(self.uid, KIND_FOLDER, name)

    async def rows(self, name: str) -> RecordRows:
        """A mailbox's contents rows from the cache (the same sequence while nothing
        changed; each row built when first read)."""
        rows = self._rows.get(name)
        if rows is None:
            records = await self.loaded(name)
            folder = self.folder_entryid(name)
            validity = self.marks.get(name, FolderMarks()).uidvalidity
            uid = self.uid

            def make(r: Record) -> dict[str, Any]:
                return row_of(r, entryids.message_entryid(uid, name, validity, r.uid), folder)

            rows = RecordRows([records[u] for u in sorted(records)], make)
            self._rows[name] = rows
        return rows

    def counts(self, name: str) -> tuple[int, int]:
        """(messages, unread) of a mailbox as far as the cache knows."""
        records = self.records.get(name)
        if records is None:
            return 0, 0
        unread = sum(1 for r in records.values() if _unread(r.flags))
        return len(records), unread

    async def fetch_body(self, name: str, validity: int, uid: int) -> bytes | None:
        """The body from the server (the command connection), cached there."""
        if not self.online:
            raise MapiError(
                ErrorCode.MAPI_E_NETWORK_ERROR,
                f"imap: {self.settings.where} is out of reach and this message's body is not "
                "cached yet",
            )
        try:
            return await self._cmd(self._body_blocking, name, validity, uid)
        except LINK_ERRORS as exc:
            self.connection_lost(describe(exc))
            raise MapiError(
                ErrorCode.MAPI_E_NETWORK_ERROR,
                f"imap: lost the connection to {self.settings.where} while fetching the "
                f"message: {describe(exc)}",
            ) from None

    # -- writes (writes.py says what they do) --------------------------------------------

    async def command(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(client, *args)` on the command thread: a change on the server. Offline,
        or when the link breaks meanwhile, MAPI_E_NETWORK_ERROR saying that `what` failed
        (nothing is queued: the client tries again once the row says online)."""
        if not self.online:
            raise MapiError(
                ErrorCode.MAPI_E_NETWORK_ERROR,
                f"imap: cannot {what}: {self.settings.where} is out of reach ({self.status_text})",
            )
        try:
            return await self._cmd(lambda: fn(self._need_client(), *args))
        except LINK_ERRORS as exc:
            self.connection_lost(describe(exc))
            raise MapiError(
                ErrorCode.MAPI_E_NETWORK_ERROR,
                f"imap: cannot {what}: lost the connection to {self.settings.where} "
                f"({describe(exc)})",
            ) from None

    def note_local(self, name: str | None, changes: Sequence[Change]) -> None:
        """A write changed the cached records of a mailbox (the cache has it already; None:
        the local Outbox): its rows are built again, `changes` raised, the Inbox recounted."""
        if name is not None:
            self._rows.pop(name, None)
        self._publish(changes)
        if name == INBOX:
            self._status_changed()

    async def resync(self, name: str) -> None:
        """Sync one mailbox now, after a write put messages there whose UIDs we do not know
        (or whose headers we have not cached); a lost link is the reconnect loop's."""
        try:
            await self._sync_folder(name)
        except LINK_ERRORS as exc:
            self.connection_lost(describe(exc))

    # -- status ----------------------------------------------------------------------------

    def status_props(self) -> tuple[int, str]:
        """(PR_STATUS_CODE, PR_STATUS_STRING) of the account."""
        if not self.online:
            return int(StatusCode.STATUS_AVAILABLE | StatusCode.STATUS_OFFLINE), self.status_text
        count, unread = self.counts(INBOX)
        return int(StatusCode.STATUS_AVAILABLE), (
            f"Online: {self.settings.username} at {self.settings.where}: "
            f"{count} message{'' if count == 1 else 's'} in Inbox, {unread} unread"
        )

    def _set_offline(self, text: str) -> None:
        was = (self.online, self.status_text)
        self.online, self.status_text = False, text
        if was != (self.online, self.status_text):
            log.info("imap %s: %s", self.settings.where, text)
            self._status_changed()

    def _set_online(self) -> None:
        self.online = True
        self.status_text = ""
        log.info("imap %s: online", self.settings.where)
        self._status_changed()

    def _status_changed(self) -> None:
        for listener in list(self.listeners):
            listener.account_status()

    def progress_props(self) -> dict[str, Any]:
        """PR_REMOTE_PROGRESS(_TEXT) of the row: a long sync's share done ("syncing Inbox:
        4 000 of 10 000"), both None (removed from the row) when none runs."""
        if self.progress is None:
            return {"PR_REMOTE_PROGRESS": None, "PR_REMOTE_PROGRESS_TEXT": None}
        name, done, total = self.progress
        info = self.tree.folders.get(name)
        shown = info.display if info is not None else name
        return {
            "PR_REMOTE_PROGRESS": min(99, done * 100 // max(total, 1)),
            "PR_REMOTE_PROGRESS_TEXT": f"syncing {shown}: {_count(done)} of {_count(total)}",
        }

    def _set_progress(self, progress: tuple[str, int, int] | None) -> None:
        if progress == self.progress:
            return
        self.progress = progress
        if progress is None:
            self._status_changed()  # the end shows at once
        else:
            self._pacer.changed()  # the steps at most twice a second (row_pacer.py)

    async def _push_status(self) -> bool:
        self._status_changed()
        return True


def _unread(flags: tuple[str, ...]) -> bool:
    """No \\Seen among the flags (IMAP's flags ignore case; servers send "\\Seen")."""
    return "\\Seen" not in flags and all(f.lower() != "\\seen" for f in flags)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("imap: writing new mail to the cache failed: %r", future.exception())


def _count(n: int) -> str:
    """10 000, as people write it."""
    return f"{n:,}".replace(",", " ")


# --- sharing --------------------------------------------------------------------------------

_ACCOUNTS: dict[Path, Account] = {}


async def acquire(
    directory: Path,
    settings: ImapSettings,
    listener: Listener,
    run_blocking: Callable[..., Any],
) -> Account:
    """The live account of a cache directory, opened (and started) for its first listener."""
    account = _ACCOUNTS.get(directory)
    if account is not None and account.settings.account != settings.account:
        if account.listeners:
            raise MapiError(
                ErrorCode.MAPI_E_CALL_FAILED,
                f"imap: another session uses this store for {account.settings.account}; "
                "log it off before switching the account",
            )
        await account.close()
        account = None
    if account is None:
        cache = await run_blocking(Cache, directory, settings.account)
        account = Account(cache, settings)
        _ACCOUNTS[directory] = account
    elif account.settings != settings:
        account.settings = settings
        account.kick()
    account.listeners.append(listener)
    account.start()
    return account


async def release(account: Account, listener: Listener) -> None:
    """A listener leaves; the last one closes the account."""
    if listener in account.listeners:
        account.listeners.remove(listener)
    if not account.listeners:
        for key, value in list(_ACCOUNTS.items()):
            if value is account:
                del _ACCOUNTS[key]
        await account.close()
