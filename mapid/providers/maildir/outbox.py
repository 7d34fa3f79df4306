"""The Outbox is the spooler's queue: submit puts a message there, the spooler reads it and
hands it back, and `Outbox` files it in Sent Items.

The durability order: message.submit answers once the file is in the Outbox (a killed
daemon loses nothing; the disk has it a few milliseconds later, with the flusher's next
commit), and finished() removes the queued file only after the Sent Items copy is
durable, so a crash at any point sends a message again rather than lose it.

`Outbox(store)` is MaildirStore's collaborator for its spooler calls; what it needs of the
store is `Host`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from mapid.constants import NotificationEvent, SpoolerNotify
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import ProviderSupport, QueuedMessage, Recipient
from mapid.providers.grouped_calls import GroupedCalls
from mapid.providers.maildir.disk import (
    Locked,
    move_file,
    new_key,
    place_message,
    same_bytes,
    where,
)
from mapid.providers.maildir.entryids import KIND_MESSAGE
from mapid.providers.maildir.flush import Durable, flusher
from mapid.providers.maildir.index import Change, FolderIndex, join_name
from mapid.providers.maildir.names import INBOX, OUTBOX, SENT
from mapid.providers.rfc5322 import (
    DELETE_AFTER_SUBMIT_HEADER,
    Composed,
    Headers,
    MailRecipient,
    Save,
    compose_parsed,
    composes_quickly,
    parse_header_block,
    recipients_of,
    split_head,
)

__all__ = ["JUST_QUEUED_MAX", "Host", "Outbox"]

JUST_QUEUED_MAX = 1000
"""Messages a store remembers from its own submits for the spooler (see _just_queued)."""


class Host(Protocol):
    """What the Outbox needs of its store (MaildirStore)."""

    @property
    def support(self) -> ProviderSupport: ...
    def folder_index(self, name: str) -> FolderIndex: ...
    def publish(self, extra: Sequence[Change] = ()) -> None: ...
    def message_entryid(self, folder: str, key: str) -> bytes: ...
    def parse_entryid(self, entryid: bytes) -> tuple[str, str, str]: ...
    async def add_message(self, folder: str, mime: bytes, *, sub: str, flags: str) -> bytes: ...
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
    ) -> str: ...


class Outbox:
    """The store's Outbox folder as the spooler's queue (one per store provider)."""

    def __init__(self, store: Host) -> None:
        self._store = store
        self._just_queued: dict[str, tuple[str, QueuedMessage]] = {}
        """Outbox key -> (file name, the message) of what this store queued, so that the
        spooler's queued_message() does not read back and parse a file written a moment
        ago; used only while the Outbox index still names that very file."""
        self._links = GroupedCalls(store.support.run_blocking, self._link_sent_one)
        """Sent messages the spooler hands back together move to Sent Items in one trip."""

    def cancel(self) -> None:
        """At logoff: hand-backs still gathered for one trip are dropped."""
        self._links.cancel()

    def _submit_blocking(
        self, folder: str, key: str | None, save: Save | None, composed: Composed | None
    ) -> tuple[str, list[Change], tuple[str, QueuedMessage] | None]:
        """Save (when `save`) and move into the Outbox, in one trip to the thread pool. The
        reply does not wait for the disk: the file is in place, so a killed daemon loses
        nothing, and the flusher makes it durable with the next commit (a few ms later).
        A message written here comes back as the spooler will read it (file name, message)."""
        durable = Durable()
        written: list[Composed] = []
        try:
            if save is not None:
                key = self._store.save_blocking(
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
        self, folder: str, key: str, durable: Durable, *, refresh: bool
    ) -> tuple[str, list[Change], str, int]:
        """(new key, changes, file name, mtime in ns) of the queued message."""
        src, dst = self._store.folder_index(folder), self._store.folder_index(OUTBOX)
        if refresh:
            src.refresh(wait=False)
            dst.refresh(wait=False)
        with Locked(src, dst):
            if src is dst:
                sub, name = where(src, key)
                new, changes = key, []
                target = src.path / sub / name
            else:
                new, name = move_file(src, key, dst, durable=durable)
                target = dst.path / "cur" / name
                changes = [self._moved(src, folder, key, dst, OUTBOX, new)]
            now = time.time_ns()
            os.utime(target, ns=(now, now))  # the queue runs in submission order
            return new, changes, target.name, now

    async def submit_message(
        self, folder: str, key: str | None, save: Save | None = None
    ) -> tuple[str, str]:
        """Move a message (saved first when `save` holds its changes) into the Outbox: the
        spooler's queue on disk."""
        changes: list[Change] = []
        composed = None
        if save is not None and key is None and composes_quickly(save):
            composed = compose_parsed(None, save.changes, save.deleted, save.recipients)
        try:
            new, changes, queued = await self._store.support.run_blocking(
                self._submit_blocking, folder, key, save, composed
            )
        finally:
            self._store.publish(changes)
        if queued is not None:
            if len(self._just_queued) >= JUST_QUEUED_MAX:  # a queue nobody sends
                self._just_queued.pop(next(iter(self._just_queued)))
            self._just_queued[new] = queued
        spooler_notify = getattr(self._store.support, "spooler_notify", None)
        if callable(spooler_notify):
            spooler_notify(SpoolerNotify.NOTIFY_READYTOSEND)
        return OUTBOX, new

    async def queued(self) -> list[bytes]:
        index = self._store.folder_index(OUTBOX)
        if index.known_empty():  # each new sender of the queue asks (a logon's first pass)
            return []
        try:
            keys = await self._store.support.run_blocking(index.keys_by_mtime)  # refreshes first
        finally:
            self._store.publish()
        return [self._store.message_entryid(OUTBOX, key) for key, _ in keys]

    def _outbox_key(self, entryid: bytes) -> str:
        kind, folder, key = self._store.parse_entryid(entryid)
        if kind != KIND_MESSAGE or folder != OUTBOX:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "that message is not in the Outbox")
        return key

    def _queued_blocking(self, key: str) -> QueuedMessage:
        index = self._store.folder_index(OUTBOX)
        with index.lock:
            sub, name = where(index, key)
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
            entryid=self._store.message_entryid(OUTBOX, key),
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
            if self._store.folder_index(OUTBOX).known_name(key) == name:
                return message  # the file this store wrote, still as written
            del self._just_queued[key]
        return await self._store.support.run_blocking(self._queued_blocking, key)

    def _drop_queued(self, key: str) -> None:
        """A sent message that asked to be deleted (or reached nobody) leaves the Outbox. If
        the disk loses the removal in a crash, it is sent again: at least once."""
        outbox = self._store.folder_index(OUTBOX)
        with outbox.lock:
            sub, name = where(outbox, key)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(outbox.path / sub / name)
            outbox.note_gone(key)
        flusher().later((), [str(outbox.path / sub)])

    def _file_sent(
        self, key: str, sent_mime: bytes | None, durable: Durable
    ) -> tuple[str, str, bytes]:
        """Step one of finished(): the Sent Items copy, in place but hidden from listings
        until the queued file is gone; `durable` gets its fsyncs. (key, file name, bytes)."""
        outbox, sent = self._store.folder_index(OUTBOX), self._store.folder_index(SENT)
        with outbox.lock:
            sub, name = where(outbox, key)  # NOT_FOUND: it left the Outbox meanwhile
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
            self._store.message_entryid(folder, new),
            dst.folder_entryid,
            old_entryid=self._store.message_entryid(src_folder, key),
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
        outbox, sent = self._store.folder_index(OUTBOX), self._store.folder_index(SENT)
        with Locked(outbox, sent):
            sub, name = where(outbox, key)  # NOT_FOUND: it left the Outbox meanwhile
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
                if use == key and same_bytes(target, data):
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
        outbox, sent = self._store.folder_index(OUTBOX), self._store.folder_index(SENT)
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
                await self._store.support.run_blocking(self._drop_queued, key)
                return None
            if sent_mime is not None:
                moved = await self._links((key, sent_mime, kept))
                if moved is not None:
                    new, changes = moved
                    return self._store.message_entryid(SENT, new)
            durable = Durable()
            try:
                new, written, data = await self._store.support.run_blocking(
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
                await self._store.support.run_blocking(self._store.folder_index(SENT).reveal, new)
                raise
        finally:
            self._store.publish(changes)
        return self._store.message_entryid(SENT, new)

    async def deliver(self, mime: bytes) -> bytes:
        """Into the Inbox's new/, as an MTA delivers: fnevNewMail follows."""
        return await self._store.add_message(INBOX, mime, sub="new", flags="")
