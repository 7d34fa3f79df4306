"""The account's local cache: SQLite (the standard library's sqlite3) in its cache directory.

One database, `cache.sqlite3`, beside the store's MAPIUID in `mapid.uid` (written once, as
the Maildir store's is, so entry IDs outlive restarts and a lost cache still keeps them
valid). It holds the server's LIST (so the tree is known while offline), per mailbox its
UIDVALIDITY, HIGHESTMODSEQ and UIDNEXT, per message its UID, flags, size, INTERNALDATE, the
header fields a contents table shows (already summarised by rfc5322.py), and bodies once
fetched. A cache written for another account (user, host, port or security changed) is
emptied, and the store then has a new MAPIUID: it is another store.

The local Outbox is files beside it (`OutboxFiles`): `outbox/` holds the submitted
messages, the spooler's queue, and `sent-copies/` what was sent and waits for its APPEND to
the server's Sent folder. Each file lands whole and durable (mapid.atomic_files), so a killed
daemon loses no queued mail.

Blocking: called from the account's command thread and the daemon's thread pool, never
the event loop. One connection, serialised by a lock; every change is one transaction.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mapid.atomic_files import atomic_delete, atomic_rename, create_atomic, write_atomic
from mapid.errors import ErrorCode, MapiError
from mapid.providers.rfc5322 import HeaderSummary
from mapid.providers.store_uid import load_or_create_uid

__all__ = ["DB_FILE", "UID_FILE", "Cache", "FolderMarks", "OutboxFiles", "Record"]

DB_FILE = "cache.sqlite3"
UID_FILE = "mapid.uid"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders (
    name TEXT PRIMARY KEY,
    delimiter TEXT NOT NULL,
    flags TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL DEFAULT 0,
    highestmodseq INTEGER NOT NULL DEFAULT 0,
    uidnext INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    folder TEXT NOT NULL,
    uid INTEGER NOT NULL,
    flags TEXT NOT NULL,
    size INTEGER NOT NULL,
    internaldate REAL,
    header BLOB NOT NULL,
    subject TEXT NOT NULL,
    sender_name TEXT,
    sender_email TEXT,
    display_to TEXT NOT NULL,
    submit_time REAL,
    message_class TEXT NOT NULL,
    has_attach INTEGER NOT NULL,
    PRIMARY KEY (folder, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bodies (
    folder TEXT NOT NULL,
    uid INTEGER NOT NULL,
    raw BLOB NOT NULL,
    PRIMARY KEY (folder, uid)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class FolderMarks:
    """What the cache knows of a mailbox's state on the server."""

    uidvalidity: int = 0
    highestmodseq: int = 0
    uidnext: int = 0


_Stored = tuple[float | None, str, str | None, str | None, str, float | None, str, int]
"""The cached columns a record decodes on first use: internaldate, subject, sender name
and address, display_to, submit_time, message class, has_attach."""


class Record:
    """One cached message: what its contents-table row is made of.

    A record read from the cache keeps its columns as SQLite gave them and makes the
    datetimes and the HeaderSummary only when asked: a mailbox of 10 000 loads in a third
    of the time, and the first contents page (rows.RecordRows) asks for 50 of them."""

    __slots__ = ("_date", "_stored", "_summary", "flags", "header", "row", "size", "uid")

    def __init__(
        self,
        uid: int,
        flags: tuple[str, ...],
        size: int,
        internaldate: datetime | None,
        header: bytes,
        summary: HeaderSummary | None,
        *,
        stored: _Stored | None = None,
    ) -> None:
        self.uid = uid
        self.flags = flags
        self.size = size
        self.header = header
        self._date = internaldate
        self._summary = summary
        self._stored = stored
        self.row: dict[str, object] | None = None
        """The contents-table row, built once (rows.py) and dropped when the record changes."""

    @property
    def internaldate(self) -> datetime | None:
        if self._stored is not None:
            self._decode(self._stored)
        return self._date

    @property
    def summary(self) -> HeaderSummary:
        if self._stored is not None:
            self._decode(self._stored)
        assert self._summary is not None
        return self._summary

    def _decode(self, stored: _Stored) -> None:
        idate, subject, sname, semail, to, submitted, cls, attach = stored
        self._date = _time(idate)
        self._summary = HeaderSummary(
            subject, sname, semail, to, _time(submitted), cls, bool(attach)
        )
        self._stored = None

    def copy_as(self, uid: int, flags: tuple[str, ...]) -> Record:
        """The same message under another UID (a COPY's result), with no row yet."""
        return Record(uid, flags, self.size, self.internaldate, self.header, self.summary)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (self.uid, self.flags, self.size, self.internaldate, self.header, self.summary) == (
            other.uid,
            other.flags,
            other.size,
            other.internaldate,
            other.header,
            other.summary,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        return f"Record(uid={self.uid}, flags={self.flags}, size={self.size})"


def _stamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class Cache:
    """The SQLite cache of one account (blocking)."""

    def __init__(self, directory: Path, account: str) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        self.lock = threading.RLock()
        self._db = sqlite3.connect(
            directory / DB_FILE, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        with contextlib.suppress(OSError):
            os.chmod(directory / DB_FILE, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        known = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if known.get("account") not in (None, account) or known.get("version") not in (
            None,
            str(SCHEMA_VERSION),
        ):
            self._wipe()  # another account, or another layout: nothing here is its
            with contextlib.suppress(FileNotFoundError):
                (directory / UID_FILE).unlink()
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('account', ?), ('version', ?)",
            (account, str(SCHEMA_VERSION)),
        )
        self.uid = load_or_create_uid(directory / UID_FILE)

    def _wipe(self) -> None:
        with self.lock:
            self._db.execute("BEGIN")
            for table in ("meta", "folders", "messages", "bodies"):
                self._db.execute(f"DELETE FROM {table}")
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self._db.close()

    # -- the folder list ---------------------------------------------------------------

    def listing(self) -> list[tuple[tuple[bytes, ...], str, str]]:
        """The last LIST, as list_folders gives it: (flags, delimiter, name)."""
        with self.lock:
            rows = self._db.execute("SELECT name, delimiter, flags FROM folders").fetchall()
        return [
            (tuple(f.encode() for f in flags.split()), delim, name) for name, delim, flags in rows
        ]

    def set_listing(self, listing: Iterable[tuple[Sequence[bytes], str, str]]) -> list[str]:
        """Keep a new LIST; the folders that left it lose their messages. Returns those."""
        given = {
            name: (delim, " ".join(f.decode() for f in flags)) for flags, delim, name in listing
        }
        with self.lock:
            old = {row[0] for row in self._db.execute("SELECT name FROM folders")}
            gone = sorted(old - set(given))
            self._db.execute("BEGIN")
            for name in gone:
                self._forget(name)
                self._db.execute("DELETE FROM folders WHERE name = ?", (name,))
            for name, (delim, flags) in given.items():
                self._db.execute(
                    "INSERT INTO folders (name, delimiter, flags) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET delimiter = excluded.delimiter, "
                    "flags = excluded.flags",
                    (name, delim, flags),
                )
            self._db.execute("COMMIT")
        return gone

    def _forget(self, name: str) -> None:
        self._db.execute("DELETE FROM messages WHERE folder = ?", (name,))
        self._db.execute("DELETE FROM bodies WHERE folder = ?", (name,))

    def marks(self) -> dict[str, FolderMarks]:
        with self.lock:
            rows = self._db.execute(
                "SELECT name, uidvalidity, highestmodseq, uidnext FROM folders"
            ).fetchall()
        return {name: FolderMarks(v, m, n) for name, v, m, n in rows}

    # -- messages ------------------------------------------------------------------------

    def records(self, folder: str) -> dict[int, Record]:
        with self.lock:
            rows = self._db.execute(
                "SELECT uid, flags, size, header, internaldate, subject, sender_name, "
                "sender_email, display_to, submit_time, message_class, has_attach "
                "FROM messages WHERE folder = ?",
                (folder,),
            ).fetchall()
        return {
            row[0]: Record(
                row[0], tuple(row[1].split()), row[2], None, row[3], None, stored=row[4:]
            )
            for row in rows
        }

    def apply(
        self,
        folder: str,
        marks: FolderMarks,
        *,
        reset: bool,
        added: Sequence[Record],
        gone: Iterable[int],
        flags: dict[int, tuple[str, ...]],
    ) -> None:
        """What one sync found, in one transaction (`reset`: UIDVALIDITY changed, drop all)."""
        with self.lock:
            self._db.execute("BEGIN")
            if reset:
                self._forget(folder)
            for uid in gone:
                self._db.execute("DELETE FROM messages WHERE folder = ? AND uid = ?", (folder, uid))
                self._db.execute("DELETE FROM bodies WHERE folder = ? AND uid = ?", (folder, uid))
            for uid, value in flags.items():
                self._db.execute(
                    "UPDATE messages SET flags = ? WHERE folder = ? AND uid = ?",
                    (" ".join(value), folder, uid),
                )
            self._db.executemany(
                "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        folder,
                        r.uid,
                        " ".join(r.flags),
                        r.size,
                        _stamp(r.internaldate),
                        r.header,
                        r.summary.subject,
                        r.summary.sender_name,
                        r.summary.sender_email,
                        r.summary.display_to,
                        _stamp(r.summary.submit_time),
                        r.summary.message_class,
                        int(r.summary.has_attach),
                    )
                    for r in added
                ],
            )
            self._db.execute(
                "UPDATE folders SET uidvalidity = ?, highestmodseq = ?, uidnext = ? WHERE name = ?",
                (marks.uidvalidity, marks.highestmodseq, marks.uidnext, folder),
            )
            self._db.execute("COMMIT")

    def note_changes(
        self,
        folder: str,
        *,
        added: Sequence[Record] = (),
        gone: Iterable[int] = (),
        flags: dict[int, tuple[str, ...]] | None = None,
    ) -> None:
        """What a write of ours did to a mailbox, in one transaction. The mailbox's marks
        (HIGHESTMODSEQ, UIDNEXT) stay: the next sync still sees every change since them."""
        with self.lock:
            self._db.execute("BEGIN")
            for uid in gone:
                self._db.execute("DELETE FROM messages WHERE folder = ? AND uid = ?", (folder, uid))
                self._db.execute("DELETE FROM bodies WHERE folder = ? AND uid = ?", (folder, uid))
            for uid, value in (flags or {}).items():
                self._db.execute(
                    "UPDATE messages SET flags = ? WHERE folder = ? AND uid = ?",
                    (" ".join(value), folder, uid),
                )
            self._db.executemany(
                "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        folder,
                        r.uid,
                        " ".join(r.flags),
                        r.size,
                        _stamp(r.internaldate),
                        r.header,
                        r.summary.subject,
                        r.summary.sender_name,
                        r.summary.sender_email,
                        r.summary.display_to,
                        _stamp(r.summary.submit_time),
                        r.summary.message_class,
                        int(r.summary.has_attach),
                    )
                    for r in added
                ],
            )
            self._db.execute("COMMIT")

    def body(self, folder: str, uid: int) -> bytes | None:
        with self.lock:
            row = self._db.execute(
                "SELECT raw FROM bodies WHERE folder = ? AND uid = ?", (folder, uid)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def set_body(self, folder: str, uid: int, raw: bytes) -> None:
        with self.lock:
            known = self._db.execute(
                "SELECT 1 FROM messages WHERE folder = ? AND uid = ?", (folder, uid)
            ).fetchone()
            if known is not None:  # not a message that a sync removed meanwhile
                self._db.execute(
                    "INSERT OR REPLACE INTO bodies VALUES (?, ?, ?)", (folder, uid, raw)
                )


class OutboxFiles:
    """The local Outbox (`outbox/`) and the sent copies waiting for the server
    (`sent-copies/`), one file a message named by its key: the submission time in
    nanoseconds and a random part, so the queue's order is the names' order."""

    def __init__(self, directory: Path) -> None:
        self.queue = directory / "outbox"
        self.copies = directory / "sent-copies"

    def _ready(self) -> None:
        for folder in (self.queue, self.copies):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    @staticmethod
    def _keys(folder: Path) -> list[str]:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        return sorted(n[: -len(".eml")] for n in names if n.endswith(".eml") and n[0] != ".")

    def queued(self) -> list[str]:
        """The keys of the queued messages, oldest first."""
        return self._keys(self.queue)

    def copies_waiting(self) -> list[str]:
        return self._keys(self.copies)

    def add(self, data: bytes) -> str:
        """Queue a message, durably (a killed daemon still sends it); its key."""
        self._ready()
        key = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        create_atomic(self.queue / f"{key}.eml", data)
        return key

    def read(self, key: str) -> tuple[bytes, float]:
        """(bytes, submission time) of a queued message; MAPI_E_NOT_FOUND once it left."""
        try:
            return (self.queue / f"{key}.eml").read_bytes(), int(key.split("-")[0]) / 1e9
        except (FileNotFoundError, ValueError):
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "the message left the Outbox") from None

    def drop(self, key: str) -> None:
        """A queued message leaves for good; MAPI_E_NOT_FOUND if it left already."""
        try:
            atomic_delete(self.queue / f"{key}.eml")
        except FileNotFoundError:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "the message left the Outbox") from None

    def to_copies(self, key: str, sent: bytes | None) -> None:
        """A sent message leaves the queue for `sent-copies/` (as `sent`, the bytes that went
        out, when given): durable there before it is gone from the queue, so a crash
        between the two sends it again rather than lose the Sent copy."""
        self._ready()
        source, target = self.queue / f"{key}.eml", self.copies / f"{key}.eml"
        if not source.exists():
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "the message left the Outbox")
        if sent is None or sent == source.read_bytes():
            with contextlib.suppress(FileExistsError):  # a hand-back a crash cut short
                atomic_rename(source, target)
                return
        write_atomic(target, sent if sent is not None else source.read_bytes())
        with contextlib.suppress(FileNotFoundError):
            atomic_delete(source)

    def copy(self, key: str) -> bytes | None:
        try:
            return (self.copies / f"{key}.eml").read_bytes()
        except FileNotFoundError:
            return None

    def copy_filed(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            atomic_delete(self.copies / f"{key}.eml")
