"""The folder index of the Maildir store: contents-table rows without parsing every file.

One `FolderIndex` per Maildir folder per process, shared by every session through its
`MaildirHub` (one per Maildir root). It keeps each message's table row, built from the
file's header block once, and persists them in the folder's directory as `mapid.index`
(msgpack, replaced by atomic rename; mutt, Dovecot and mbsync ignore it). A refresh lists
`new/` and `cur/` by name only and reads only the files it has not seen (a new process
also compares each file's size and mtime with the saved ones); a folder whose directories'
mtimes did not move is not listed at all. Every difference a refresh finds, and every
change the store makes itself, becomes a `Change` exactly once, which the hub fans out to
the provider instance of each session.

Blocking methods run in the daemon's thread pool. Each index has a lock for its rows,
never held while files are read, and one refresh runs at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack

from mapid.constants import MessageFlags, MsgStatus, NotificationEvent, ObjectType
from mapid.proptags import (
    PR_CLIENT_SUBMIT_TIME,
    PR_DISPLAY_TO,
    PR_ENTRYID,
    PR_FLAG_STATUS,
    PR_HASATTACH,
    PR_INSTANCE_KEY,
    PR_MESSAGE_CLASS,
    PR_MESSAGE_DELIVERY_TIME,
    PR_MESSAGE_FLAGS,
    PR_MESSAGE_SIZE,
    PR_MSG_STATUS,
    PR_OBJECT_TYPE,
    PR_PARENT_ENTRYID,
    PR_SENDER_EMAIL_ADDRESS,
    PR_SENDER_NAME,
    PR_SUBJECT,
)
from mapid.providers.maildir.flags import FLAG_FOLLOWUP, message_flags_of
from mapid.providers.rfc5322 import (
    HEADER_LIMIT,
    HeaderSummary,
    header_block,
    parse_header_block,
    split_head,
    summarize,
)

__all__ = [
    "INDEX_FILE",
    "Change",
    "FolderIndex",
    "IndexRow",
    "MaildirHub",
    "hub_for",
    "join_name",
    "split_name",
]

log = logging.getLogger("mapid.provider.maildir")

INDEX_FILE = "mapid.index"
INDEX_VERSION = 2
SUBDIRS = ("new", "cur")
_TRUST_NS = 50_000_000
"""A directory changed this close to our listing may change again within the same mtime
tick: list it again next time rather than trust the stamp."""
_COARSE_TRUST_NS = 2_100_000_000
_SAVE_EVERY_NS = 30_000_000_000
_SAVE_AFTER = 100
_KEY_TIME = re.compile(r"^(\d{9,10})(?:\.M(\d{1,6})(?!\d))?")
_DELMARKED = int(MsgStatus.MSGSTATUS_DELMARKED)
_MESSAGE = int(ObjectType.MAPI_MESSAGE)


def _trust_margin(stamp: int) -> int:
    """How long after a directory's mtime a listing can trust it: a file system that
    keeps whole seconds (ext3, FAT, some network ones) needs more than a second."""
    return _COARSE_TRUST_NS if stamp % 1_000_000_000 == 0 else _TRUST_NS


def split_name(filename: str) -> tuple[str, str]:
    """(Maildir key, flags) of a file name: the key is what precedes ":2,"."""
    key, _, info = filename.partition(":")
    return key, info[2:] if info.startswith("2,") else ""


def join_name(key: str, flags: str) -> str:
    """A cur/ file name with its flags sorted, as the Maildir spec asks."""
    return f"{key}:2,{''.join(sorted(set(flags)))}"


def key_time(key: str, mtime_ns: int) -> datetime:
    """The delivery time: the key's timestamp (the moment the file was delivered), else the
    file's mtime."""
    match = _KEY_TIME.match(key)
    if match is not None:
        seconds = int(match.group(1))
        micros = int(match.group(2).ljust(6, "0")) if match.group(2) else 0
        return datetime.fromtimestamp(seconds + micros / 1e6, UTC)
    return datetime.fromtimestamp(mtime_ns / 1e9, UTC)


# --- Rows -----------------------------------------------------------------------------------

COLUMNS = (
    PR_ENTRYID.name,
    PR_INSTANCE_KEY.name,
    PR_SUBJECT.name,
    PR_SENDER_NAME.name,
    PR_SENDER_EMAIL_ADDRESS.name,
    PR_DISPLAY_TO.name,
    PR_CLIENT_SUBMIT_TIME.name,
    PR_MESSAGE_DELIVERY_TIME.name,
    PR_MESSAGE_FLAGS.name,
    PR_MESSAGE_SIZE.name,
    PR_HASATTACH.name,
    PR_MESSAGE_CLASS.name,
    PR_FLAG_STATUS.name,
    PR_MSG_STATUS.name,
    PR_OBJECT_TYPE.name,
    PR_PARENT_ENTRYID.name,
)
_POS = {name: i for i, name in enumerate(COLUMNS)}


class _Absent:
    __slots__ = ()


_ABSENT: Any = _Absent()


class IndexRow(Mapping[str, Any]):
    """A contents-table row held as one tuple: a quarter of the memory of a dict."""

    __slots__ = ("_values",)

    def __init__(self, values: tuple[Any, ...]) -> None:
        self._values = values

    def __getitem__(self, tag: str) -> Any:
        value = self._values[_POS[tag]]
        if value is _ABSENT:
            raise KeyError(tag)
        return value

    def get(self, tag: str, default: Any = None) -> Any:
        pos = _POS.get(tag)
        if pos is None:
            return default
        value = self._values[pos]
        return default if value is _ABSENT else value

    def __contains__(self, tag: object) -> bool:
        pos = _POS.get(tag) if isinstance(tag, str) else None
        return pos is not None and self._values[pos] is not _ABSENT

    def __iter__(self) -> Iterator[str]:
        return (c for c, v in zip(COLUMNS, self._values, strict=True) if v is not _ABSENT)

    def __len__(self) -> int:
        return sum(1 for v in self._values if v is not _ABSENT)

    def __repr__(self) -> str:
        return f"IndexRow({dict(self)!r})"


class _Entry:
    """One message file of a folder; the header fields live only in its row."""

    __slots__ = ("info", "mtime_ns", "row", "size", "sub")

    def __init__(self, sub: str, info: str, size: int, mtime_ns: int) -> None:
        self.sub = sub
        self.info = _shared(info)
        """The file name after the key (":2,FS"): few distinct values, one copy each."""
        self.size = size
        self.mtime_ns = mtime_ns
        self.row: IndexRow | None = None


_INTERNED: dict[str, str] = {}
_INTERN_LIMIT = 200_000


def _shared(text: str) -> str:
    """One copy of a string many rows hold (senders, the To line, message classes)."""
    found = _INTERNED.get(text)
    if found is not None:
        return found
    if len(_INTERNED) < _INTERN_LIMIT:
        _INTERNED[text] = text
    return text


def _summary_of(row: IndexRow) -> HeaderSummary:
    return HeaderSummary(
        row[PR_SUBJECT.name],
        row.get(PR_SENDER_NAME.name),
        row.get(PR_SENDER_EMAIL_ADDRESS.name),
        row[PR_DISPLAY_TO.name],
        row.get(PR_CLIENT_SUBMIT_TIME.name),
        row[PR_MESSAGE_CLASS.name],
        row[PR_HASATTACH.name],
    )


@dataclass(frozen=True)
class Change:
    """One change to raise: a docs/protocol.md 7.4 event and its fields."""

    event: NotificationEvent
    entryid: bytes
    parent_entryid: bytes
    object_type: ObjectType = ObjectType.MAPI_MESSAGE
    message_class: str = ""
    message_flags: int = 0
    old_entryid: bytes | None = None
    old_parent_entryid: bytes | None = None

    def fields(self) -> dict[str, Any]:
        """The notification's fields (without `entryid`, which routes it)."""
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


@dataclass
class _Plan:
    """What a refresh found to do: the listing, the keys gone, the files to look at
    (key, subdir, name, (size, mtime) known or None)."""

    listing: dict[str, tuple[str, str]]
    gone: list[str]
    todo: list[tuple[str, str, str, tuple[int, int] | None]]


# --- One folder -----------------------------------------------------------------------------


class FolderIndex:
    """The rows of one Maildir folder (`path` holds its cur/ and new/)."""

    def __init__(
        self,
        path: Path,
        folder_entryid: bytes,
        message_prefix: bytes,
        *,
        extra_flags: int = 0,
        inbox: bool = False,
    ) -> None:
        self.path = path
        self._dir = str(path)
        self.folder_entryid = folder_entryid
        self.message_prefix = message_prefix
        """A message's entry ID is this prefix + its key."""
        self.extra_flags = extra_flags
        self.inbox = inbox
        self.lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._stamps: dict[str, int] = {}
        self._trusted = False
        self._loaded = False
        self._rows: list[IndexRow] | None = None
        self._unsaved = 0
        self._saved_at = 0
        self._counts: tuple[int, int] | None = None
        self._queue: list[Change] = []
        self._queue_lock = threading.Lock()
        """Guards `_queue` alone: take_changes runs on the event loop and must never wait
        for `lock`, which a thread may hold across a file write."""
        self._refresh_lock = threading.Lock()
        self._touched: set[str] | None = None
        self._hidden: set[str] = set()
        """Keys of files the store placed but has not handed over yet: listings skip them
        (Sent Items shows a sent message only once it has left the Outbox)."""
        """Keys the store noted while a refresh read files without the lock."""

    # Reading.

    @property
    def loaded(self) -> bool:
        return self._loaded

    def has(self, key: str) -> bool:
        with self.lock:
            return key in self._entries or key in self._hidden

    def hide(self, key: str) -> None:
        """Listings skip `key` until reveal() (call with the lock held, before the file
        is linked into place)."""
        with self.lock:
            self._hidden.add(key)

    def reveal(self, key: str) -> None:
        with self.lock:
            self._hidden.discard(key)

    def entryid_of(self, key: str) -> bytes:
        return self.message_prefix + key.encode("utf-8", "surrogateescape")

    def fresh(self) -> bool:
        """Whether nothing changed on disk since the last listing (two stat calls)."""
        if not self._loaded or not self._trusted:
            return False
        return self._dir_stamps() == self._stamps

    def known_empty(self) -> bool:
        """Whether the folder holds no message and nothing changed on disk since it was
        listed: two stat calls, cheap enough for the event loop (an empty Outbox is then
        no trip to a thread). False while a refresh holds the lock: it may be changing."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            return not self._entries and self.fresh()
        finally:
            self.lock.release()

    def _dir_stamps(self) -> dict[str, int]:
        stamps: dict[str, int] = {}
        for sub in SUBDIRS:
            try:
                stamps[sub] = os.stat(self.path / sub).st_mtime_ns
            except FileNotFoundError:
                stamps[sub] = -1
        return stamps

    def rows(self) -> list[IndexRow]:
        """Rows in natural order (delivery time, then key); the same list while nothing
        changed. Call refresh() first."""
        with self.lock:
            if self._rows is None:
                items = sorted(
                    self._entries.items(),
                    key=lambda kv: (kv[1].row[PR_MESSAGE_DELIVERY_TIME.name], kv[0]),  # type: ignore[index]
                )
                self._rows = [e.row for _, e in items if e.row is not None]
            return self._rows

    def summary_of(self, key: str) -> HeaderSummary | None:
        """The header fields of a message the index holds (call with the lock held)."""
        entry = self._entries.get(key)
        return None if entry is None or entry.row is None else _summary_of(entry.row)

    def known_name(self, key: str) -> str | None:
        """The file name the index holds for `key`, without touching the disk or `lock`
        (a single dict read: safe on the event loop while a thread writes)."""
        entry = self._entries.get(key)
        return None if entry is None else key + entry.info

    def locate(self, key: str) -> tuple[str, str] | None:
        """(subdir, file name) of a message, also before the index is loaded."""
        with self.lock:
            if self._loaded:
                entry = self._entries.get(key)
                if entry is not None:
                    name = key + entry.info
                    if os.path.exists(os.path.join(self._dir, entry.sub, name)):
                        return entry.sub, name
                elif self.fresh():
                    return None
            prefix = key + ":"
            for sub in SUBDIRS:
                with contextlib.suppress(FileNotFoundError):
                    for name in os.listdir(os.path.join(self._dir, sub)):
                        if name == key or name.startswith(prefix):
                            return sub, name
            return None

    def counts(self) -> tuple[int, int]:
        """(PR_CONTENT_COUNT, PR_CONTENT_UNREAD), from file names alone when not loaded."""
        with self.lock:
            if self._loaded and self.fresh():
                if self._counts is None:
                    read = MessageFlags.MSGFLAG_READ
                    unread = sum(
                        1
                        for e in self._entries.values()
                        if e.row is not None and not e.row[PR_MESSAGE_FLAGS.name] & read
                    )
                    self._counts = len(self._entries), unread
                return self._counts
        total = unread = 0
        for sub in SUBDIRS:
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(os.path.join(self._dir, sub)):
                    if name[0] != ".":
                        total += 1
                        unread += "S" not in split_name(name)[1]
        return total, unread

    def keys_by_mtime(self) -> list[tuple[str, int]]:
        """(key, mtime_ns) of every message, oldest first: the spooler's queue order."""
        self.refresh()
        with self.lock:
            out = []
            for key, entry in self._entries.items():
                try:
                    mtime = os.stat(self.path / entry.sub / (key + entry.info)).st_mtime_ns
                except FileNotFoundError:
                    continue
                out.append((key, mtime))
            out.sort(key=lambda km: (km[1], km[0]))
            return out

    # Refreshing (blocking).

    def take_changes(self) -> list[Change]:
        """The changes found or noted since the last call, in order (each handed out once)."""
        with self._queue_lock:
            out, self._queue = self._queue, []
        return out

    def _post(self, changes: Sequence[Change]) -> None:
        if changes:
            with self._queue_lock:
                self._queue.extend(changes)

    def refresh(self, force: bool = False, *, wait: bool = True) -> None:
        """List the folder and bring the rows up to date; what changed waits in
        take_changes(). The first refresh of an index (its baseline) raises nothing.

        Never call it holding `lock`: the files it has to read (all of them, the first time
        for a folder without mapid.index) are read without the lock, so the store's own
        writes and lookups in the folder do not wait for them. One refresh runs at a time;
        with `wait` False, a refresh running already is enough (the store's writes use that:
        what they change, they note, and the running refresh leaves those keys alone).
        """
        if not self._refresh_lock.acquire(blocking=wait):
            return
        try:
            with self.lock:
                plan = self._plan(force)
                if plan is None:
                    return
                self._touched = set()
            done = self._read_all(plan)
            with self.lock:
                touched, self._touched = self._touched, None
                first = not self._loaded
                changes = self._apply(plan, done, touched)
                self._loaded = True
                if not first:
                    self._post(changes)
                self._maybe_save(first)
        finally:
            self._refresh_lock.release()

    def _plan(self, force: bool) -> _Plan | None:
        """Phase one, locked: list the folder and sort out what needs reading."""
        first = not self._loaded
        if first:
            self._load_file()
        stamps = self._dir_stamps()
        if not force and not first and self._trusted and stamps == self._stamps:
            return None
        started = time.time_ns()
        listing: dict[str, tuple[str, str]] = {}
        for sub in SUBDIRS:
            try:
                names = os.listdir(os.path.join(self._dir, sub))  # 4x faster than scandir
            except FileNotFoundError:
                continue
            for name in names:
                if name[0] == ".":
                    continue
                key = name.partition(":")[0]
                if sub == "new" and key in listing:
                    continue  # a crash between link and unlink left both: cur/ wins
                if key in self._hidden:
                    continue
                listing[key] = (sub, name)
        self._stamps = stamps
        self._trusted = all(started - s > _trust_margin(s) for s in stamps.values())
        plan = _Plan(listing, [k for k in self._entries if k not in listing], [])
        for key, (sub, name) in listing.items():
            old = self._entries.get(key)
            # A known name is the same file (Maildir writers never rewrite a file in
            # place); the first listing of a process checks size and mtime too, for what
            # changed while no mapid ran.
            if old is not None and not first and old.sub == sub and old.info == name[len(key) :]:
                continue
            known = None if old is None else (old.size, old.mtime_ns)
            plan.todo.append((key, sub, name, known))
        return plan

    def _read_all(self, plan: _Plan) -> dict[str, _Entry | None]:
        """Phase two, unlocked: stat what may have changed, read what did. A file whose
        size and mtime are those known maps to None (same content, maybe new flags)."""
        done: dict[str, _Entry | None] = {}
        for key, sub, name, known in plan.todo:
            if known is not None:
                try:
                    st = os.stat(os.path.join(self._dir, sub, name))
                except FileNotFoundError:
                    continue  # gone meanwhile; the directory's new mtime brings us back
                if known == (st.st_size, st.st_mtime_ns):
                    done[key] = None
                    continue
            fresh = self._read(key, sub, name)
            if fresh is not None:
                done[key] = fresh
        return done

    def _apply(
        self, plan: _Plan, done: dict[str, _Entry | None], touched: set[str] | None
    ) -> list[Change]:
        """Phase three, locked: the changes, leaving out the messages the store itself
        changed meanwhile (it noted them and holds the truth about them)."""
        skip = touched or set()
        changes: list[Change] = []
        entries = self._entries
        for key in plan.gone:
            if key in skip or entries.pop(key, None) is None:
                continue
            self._invalidate()
            changes.append(self._change(NotificationEvent.fnevObjectDeleted, key))
        for key, fresh in done.items():
            if key in skip:
                continue
            old = entries.get(key)
            if fresh is None:
                if old is None:
                    continue
                sub, name = plan.listing[key]
                info = name[len(key) :]
                if old.info == info and old.sub == sub:
                    continue  # the row built from the saved index holds
                before = old.row
                old.sub, old.info = sub, _shared(info)
                self._build_row(key, old, None)
                if before is not None and before._values != old.row._values:  # type: ignore[union-attr]
                    changes.append(self._change(NotificationEvent.fnevObjectModified, key))
                continue
            entries[key] = fresh
            self._invalidate()
            self._unsaved += 1
            if old is not None:
                changes.append(self._change(NotificationEvent.fnevObjectModified, key))
            else:
                changes.extend(self._created(key))
        return changes

    def _read(
        self,
        key: str,
        sub: str,
        name: str,
        data: bytes | None = None,
        summary: HeaderSummary | None = None,
    ) -> _Entry | None:
        path = os.path.join(self._dir, sub, name)
        if data is not None:  # the store's own write: its bytes are at hand
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None
            entry = _Entry(sub, name[len(key) :], st.st_size, st.st_mtime_ns)
            if summary is None:
                summary = summarize(parse_header_block(split_head(data[:HEADER_LIMIT])))
            entry.row = self._make_row(key, entry, summary)
            return entry
        try:
            # Non-blocking, so a FIFO someone left in cur/ cannot stall the folder.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    return None  # a directory, a FIFO: not a message
                head = header_block(fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read %s: %s", path, exc)
            return None
        entry = _Entry(sub, name[len(key) :], st.st_size, st.st_mtime_ns)
        entry.row = self._make_row(key, entry, summarize(parse_header_block(head)))
        return entry

    def _build_row(self, key: str, entry: _Entry, summary: HeaderSummary | None) -> None:
        """(Re)build an entry's row: from a new summary, or from its old row's fields."""
        entry.row = self._make_row(key, entry, summary)
        self._invalidate()

    def _make_row(self, key: str, entry: _Entry, summary: HeaderSummary | None) -> IndexRow:
        old = entry.row
        s = summary if summary is not None else _summary_of(old)  # type: ignore[arg-type]
        flags = entry.info[3:] if entry.info.startswith(":2,") else ""
        eid = self.entryid_of(key) if old is None else old[PR_ENTRYID.name]
        mflags = message_flags_of(flags, s.has_attach) | self.extra_flags
        return IndexRow(
            (
                eid,
                eid,
                s.subject,
                _ABSENT if s.sender_name is None else _shared(s.sender_name),
                _ABSENT if s.sender_email is None else _shared(s.sender_email),
                _shared(s.display_to),
                _ABSENT if s.submit_time is None else s.submit_time,
                key_time(key, entry.mtime_ns)
                if old is None
                else old[PR_MESSAGE_DELIVERY_TIME.name],
                mflags,
                entry.size,
                s.has_attach,
                _shared(s.message_class),
                FLAG_FOLLOWUP if "F" in flags else 0,
                _DELMARKED if "T" in flags else 0,
                _MESSAGE,
                self.folder_entryid,
            )
        )

    def _invalidate(self) -> None:
        self._rows = None
        self._counts = None

    def _change(self, event: NotificationEvent, key: str) -> Change:
        return Change(event, self.entryid_of(key), self.folder_entryid)

    def _created(self, key: str) -> list[Change]:
        entry = self._entries[key]
        assert entry.row is not None
        flags = int(entry.row[PR_MESSAGE_FLAGS.name])
        out = [self._change(NotificationEvent.fnevObjectCreated, key)]
        if self.inbox and not flags & MessageFlags.MSGFLAG_READ:
            out.append(
                Change(
                    NotificationEvent.fnevNewMail,
                    self.entryid_of(key),
                    self.folder_entryid,
                    message_class=entry.row[PR_MESSAGE_CLASS.name],
                    message_flags=flags,
                )
            )
        return out

    # Changes the store made itself (call with the lock held, right after the disk change).

    def note_file(
        self,
        key: str,
        sub: str,
        name: str,
        *,
        quiet: bool = False,
        data: bytes | None = None,
        summary: HeaderSummary | None = None,
    ) -> None:
        """A file the store wrote, renamed or rewrote under `key` (call with the lock held,
        right after the disk change, so the listing that sees it finds nothing new); `data`
        is what it wrote, when at hand (the file is then not read back), and `summary` its
        header fields when another index has them already (they are then not parsed)."""
        with self.lock:
            if self._touched is not None:
                self._touched.add(key)
            if not self._loaded:
                return  # the baseline listing finds it
            old = self._entries.get(key)
            entry = self._read(key, sub, name, data, summary)
            if entry is None:
                return
            self._entries[key] = entry
            self._invalidate()
            self._unsaved += 1
            if quiet:
                return
            if old is None:
                self._post(self._created(key))
                return
            same = old.row is not None and entry.row is not None
            if same and old.row._values[2:] == entry.row._values[2:]:  # type: ignore[union-attr]
                return
            self._post([self._change(NotificationEvent.fnevObjectModified, key)])

    def note_gone(self, key: str, *, quiet: bool = False) -> None:
        with self.lock:
            if self._touched is not None:
                self._touched.add(key)
            if self._entries.pop(key, None) is None:
                return
            self._invalidate()
            if not quiet:
                self._post([self._change(NotificationEvent.fnevObjectDeleted, key)])

    # Persistence.

    def _load_file(self) -> None:
        path = self.path / INDEX_FILE
        try:
            data = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
        except FileNotFoundError:
            return
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            log.warning("ignoring the unreadable index %s (%s); rebuilding it", path, exc)
            return
        if not isinstance(data, dict) or data.get("v") != INDEX_VERSION:
            return
        try:
            for item in data.get("entries", []):
                key, sub, name, size, mtime_ns, subject, sname, semail, to, sent, cls, att = item
                summary = HeaderSummary(
                    subject,
                    sname,
                    semail,
                    to,
                    None if sent is None else datetime.fromtimestamp(sent, UTC),
                    cls,
                    bool(att),
                )
                entry = _Entry(sub, name[len(key) :], size, mtime_ns)
                self._build_row(key, entry, summary)
                self._entries[key] = entry
        except (TypeError, ValueError) as exc:
            log.warning("ignoring the damaged index %s (%s); rebuilding it", path, exc)
            self._entries.clear()

    def _maybe_save(self, first: bool) -> None:
        """Save after a baseline that read files (so the next process starts from it), or
        when many rows changed a while after the last save; logoff saves the rest."""
        if not self._unsaved:
            return
        waited = time.monotonic_ns() - self._saved_at > _SAVE_EVERY_NS
        if first or (self._unsaved >= _SAVE_AFTER and waited):
            self.save()

    def save(self) -> None:
        """Write the index by atomic rename (a reader sees the old file or the new one)."""
        with self.lock:
            if not self._loaded or not self._unsaved:
                return
            entries = []
            for key, e in self._entries.items():
                row = e.row
                if row is None:
                    continue
                sent = row.get(PR_CLIENT_SUBMIT_TIME.name)
                entries.append(
                    [
                        key,
                        e.sub,
                        key + e.info,
                        e.size,
                        e.mtime_ns,
                        row[PR_SUBJECT.name],
                        row.get(PR_SENDER_NAME.name),
                        row.get(PR_SENDER_EMAIL_ADDRESS.name),
                        row[PR_DISPLAY_TO.name],
                        None if sent is None else int(sent.timestamp()),
                        row[PR_MESSAGE_CLASS.name],
                        row[PR_HASATTACH.name],
                    ]
                )
            data = msgpack.packb({"v": INDEX_VERSION, "entries": entries}, use_bin_type=True)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f"{INDEX_FILE}.tmp.", dir=self.path)
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(data)
                    os.replace(tmp, self.path / INDEX_FILE)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
            except OSError as exc:
                log.warning("cannot write the index %s: %s", self.path / INDEX_FILE, exc)
                return
            self._unsaved = 0
            self._saved_at = time.monotonic_ns()


# --- One Maildir root, shared by the sessions -----------------------------------------------

Subscriber = Callable[[Sequence[Change]], None]


LINGER_S = 30.0
"""How long the indexes of a Maildir no session uses stay in memory (release_soon)."""


class MaildirHub:
    """The indexes of one Maildir tree and the provider instances that hear its changes."""

    def __init__(self, root: Path, uid: bytes) -> None:
        self.root = root
        self.uid = uid
        self._indexes: dict[str, FolderIndex] = {}
        self._subscribers: dict[int, Subscriber] = {}
        self._folders: set[str] | None = None
        self.tree_lock = threading.Lock()
        """Held while the folder list is read and compared, and while the store creates a
        folder, so a folder is found either by the one or by the other."""
        self._next = 0
        self._lock = threading.Lock()
        self._linger: asyncio.TimerHandle | None = None

    def index(self, folder: str, make: Callable[[], FolderIndex]) -> FolderIndex:
        with self._lock:
            found = self._indexes.get(folder)
            if found is None:
                found = self._indexes[folder] = make()
            return found

    def sync_folders(self, names: set[str]) -> tuple[list[str], list[str]]:
        """(added, removed) folder names since the last call; the first call is the
        baseline and reports nothing. Shared, so each change is found once."""
        with self._lock:
            known, self._folders = self._folders, set(names)
            if known is None:
                return [], []
            return sorted(names - known), sorted(known - names)

    def note_folder(self, name: str) -> None:
        """A folder the store created itself."""
        with self._lock:
            if self._folders is not None:
                self._folders.add(name)

    def forget(self, folder: str) -> None:
        with self._lock:
            self._indexes.pop(folder, None)

    def indexes(self) -> list[FolderIndex]:
        with self._lock:
            return list(self._indexes.values())

    def subscribe(self, callback: Subscriber) -> int:
        with self._lock:
            self._next += 1
            self._subscribers[self._next] = callback
            return self._next

    def unsubscribe(self, token: int) -> int:
        """Stop hearing changes; returns how many subscribers remain."""
        with self._lock:
            self._subscribers.pop(token, None)
            return len(self._subscribers)

    def publish(self, changes: Sequence[Change]) -> None:
        """Hand changes to every subscriber, once each (call on the event loop)."""
        if not changes:
            return
        with self._lock:
            subscribers = list(self._subscribers.values())
        for callback in subscribers:
            try:
                callback(changes)
            except Exception:
                log.exception("a maildir change subscriber failed")

    def release_soon(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        """The last session let go: release() `delay` seconds from now if none came back
        meanwhile. A client that logs off and on again (a cron job's short sessions, a
        logon cycle) then finds the indexes in memory: a logoff that released at once and
        a logon that read them back took 1.4 ms of a 4 ms cycle. Call it on the loop. A
        daemon that stops meanwhile does not save them: mapid.index is a cache, and the
        next refresh finds what changed since its last save."""
        if self._linger is not None:
            self._linger.cancel()
        self._linger = loop.call_later(delay, self._release_if_unused, loop)

    def _release_if_unused(self, loop: asyncio.AbstractEventLoop) -> None:
        self._linger = None
        with self._lock:
            if self._subscribers:
                return
        loop.run_in_executor(None, self._release_logged)

    def _release_logged(self) -> None:
        try:
            self.release()
        except Exception:  # a cache not saved is rebuilt by the next refresh
            log.exception("saving the indexes of %s failed", self.root)

    def release(self) -> None:
        """No session uses this Maildir any more: save the indexes and free their rows (a
        later logon reads them back from mapid.index)."""
        for index in self.indexes():
            index.save()
        with self._lock:
            if not self._subscribers:
                self._indexes.clear()
                self._folders = None


_HUBS: dict[tuple[Path, bytes], MaildirHub] = {}
_HUBS_LOCK = threading.Lock()


def hub_for(root: Path, uid: bytes) -> MaildirHub:
    """The process-wide hub of a Maildir root (the same for every session)."""
    with _HUBS_LOCK:
        hub = _HUBS.get((root, uid))
        if hub is None:
            hub = _HUBS[(root, uid)] = MaildirHub(root, uid)
        return hub
