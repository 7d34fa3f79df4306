"""What the command connection does (blocking, on the account's command thread): greet
the server, LIST, bring one mailbox's cache up to date, fetch a body.

A mailbox's sync (`sync_folder`) EXAMINEs it (read-only: stage 1 changes nothing on the
server) and compares with the cache. A changed UIDVALIDITY drops the mailbox's cache.

With CONDSTORE (RFC 7162) a resync reads only what changed:

- HIGHESTMODSEQ, UIDNEXT and EXISTS as the cache left them: nothing moved, no command;
- new messages: `UID SEARCH UID <uidnext>:*`;
- expunges: the count tells. Every message the server holds below the cached UIDNEXT was
  there at the last sync, so when EXISTS minus the new ones equals the cached count below
  UIDNEXT, nothing was expunged; only when it does not, `UID SEARCH ALL` says which;
- flag changes: `UID SEARCH MODSEQ <highestmodseq + 1>`, then FLAGS of those alone.

QRESYNC (Dovecot offers it) would say the expunged UIDs outright, in `SELECT ... (QRESYNC
(uidvalidity modseq))` or `UID FETCH ... (CHANGEDSINCE m VANISHED)`. IMAPClient 4.1 has
no public way to send the first (select_folder takes no parameters) nor to read the
`VANISHED (EARLIER)` response of the second (fetch returns FETCH responses only; the rest
stays in imaplib's untagged responses, reachable only through its private `_imap`), so
QRESYNC is not enabled and the count above stands in for it: the same round trips in the
common case (no expunge), one UID SEARCH ALL more when something was expunged.

Without CONDSTORE: a full UID comparison (UID SEARCH ALL, FETCH FLAGS of every message).
New messages bring their size, INTERNALDATE, flags and the header fields the contents
table shows (BODY.PEEK, so nothing becomes \\Seen), summarised by rfc5322.py; a long
fetch reports its progress (`progress(done, total)`, from this thread). The marks kept are
those of the EXAMINE, so a change that races the sync is found again by the next one. The
result is written to the cache here and handed back for the event loop to apply.
"""

from __future__ import annotations

import imaplib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imapclient import IMAPClient

from mapid.providers.imap.cache import Cache, FolderMarks, Record
from mapid.providers.imap.rows import HEADER_FIELDS
from mapid.providers.rfc5322 import parse_header_block, summarize

__all__ = [
    "Capabilities",
    "FolderSync",
    "fetch_arrivals",
    "fetch_body",
    "greet",
    "list_mailboxes",
    "sync_folder",
]

CHUNK = 500
"""UIDs per FETCH: keeps each command line well below servers' limits."""
PROGRESS_MIN = 100
"""A fetch of at least this many new messages reports its progress (the status row)."""
PROGRESS_STEPS = 20
"""A long fetch goes in about this many commands (at most CHUNK UIDs each), so its
progress moves by about 5 % at a time."""
Progress = Callable[[int, int], None]
"""progress(done, total) of a mailbox's new messages, called on the command thread."""
_HEADER_ITEM = f"BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})]"
_NEW_ITEMS = ["FLAGS", "RFC822.SIZE", "INTERNALDATE", _HEADER_ITEM]


@dataclass(frozen=True)
class Capabilities:
    idle: bool
    condstore: bool
    xlist: bool
    qresync: bool = False
    """Offered by the server; not enabled (see the module docstring)."""


@dataclass
class FolderSync:
    """What one sync of a mailbox found (already written to the cache)."""

    folder: str
    marks: FolderMarks
    reset: bool = False
    """UIDVALIDITY changed: every cached message of the mailbox is gone."""
    added: list[Record] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    flags: dict[int, tuple[str, ...]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.reset or self.added or self.gone or self.flags)


def greet(client: IMAPClient) -> Capabilities:
    """What the server offers; CONDSTORE is enabled where it is (RFC 7162)."""
    client.normalise_times = False  # INTERNALDATE with its zone, not local naive time
    caps = {bytes(c).upper() for c in client.capabilities()}
    condstore = b"CONDSTORE" in caps and b"ENABLE" in caps
    if condstore:
        try:
            client.enable("CONDSTORE")
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            condstore = False
    return Capabilities(
        idle=b"IDLE" in caps,
        condstore=condstore,
        xlist=b"XLIST" in caps and b"SPECIAL-USE" not in caps,
        qresync=b"QRESYNC" in caps,
    )


def list_mailboxes(
    client: IMAPClient, caps: Capabilities
) -> list[tuple[tuple[bytes, ...], str, str]]:
    """LIST (or Gmail's XLIST): (flags, delimiter, name) of every mailbox."""
    listing = client.xlist_folders() if caps.xlist else client.list_folders()
    out = []
    for flags, delim, name in listing:
        text = delim.decode() if isinstance(delim, bytes) else (delim or "")
        out.append((tuple(bytes(f) for f in flags), text, str(name)))
    return out


def _chunks(uids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(uids), CHUNK):
        yield list(uids[start : start + CHUNK])


def _flags_of(data: dict[bytes, Any]) -> tuple[str, ...]:
    """The message's flags, without \\Recent: that one says which session saw it first
    (RFC 3501), so it would read as a change on every other connection."""
    raw = data.get(b"FLAGS", ())
    flags = (f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f) for f in raw)
    return tuple(sorted(f for f in flags if f.lower() != "\\recent"))


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _header(data: dict[bytes, Any]) -> bytes:
    for key, value in data.items():
        if key.startswith(b"BODY[HEADER") and isinstance(value, bytes):
            return value
    return b""


def sync_folder(
    client: IMAPClient,
    cache: Cache,
    folder: str,
    known: dict[int, tuple[str, ...]],
    marks: FolderMarks | None,
    caps: Capabilities,
    progress: Progress | None = None,
) -> FolderSync | None:
    """Bring one mailbox's cache up to date; None when the server has no such mailbox now
    (removed since the LIST)."""
    try:
        status = client.select_folder(folder, readonly=True)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error:
        return None
    validity = int(status.get(b"UIDVALIDITY", 0))
    now = FolderMarks(
        uidvalidity=validity,
        highestmodseq=int(status.get(b"HIGHESTMODSEQ", 0)) if caps.condstore else 0,
        uidnext=int(status.get(b"UIDNEXT", 0)),
    )
    exists = int(status.get(b"EXISTS", 0))
    reset = bool(marks is not None and marks.uidvalidity and marks.uidvalidity != validity)
    if reset:
        known = {}
    elif marks is not None and now.highestmodseq and marks == now and exists == len(known):
        return FolderSync(folder, now)  # CONDSTORE says nothing moved
    result = FolderSync(folder, now, reset=reset)
    since = marks.highestmodseq if marks is not None and not reset else 0
    if caps.condstore and since and known and marks is not None and marks.uidnext:
        fresh, result.gone = _condstore_uids(client, known, exists, marks.uidnext)
        changed = _uids(client.search(["MODSEQ", str(since + 1)]))
        for chunk in _chunks(sorted(changed & set(known) - set(result.gone))):
            for uid, data in client.fetch(chunk, ["FLAGS"]).items():
                flags = _flags_of(data)
                if uid in known and flags != known[uid]:
                    result.flags[uid] = flags
    else:  # a full UID comparison
        on_server = _uids(client.search("ALL")) if exists else set()
        result.gone = sorted(set(known) - on_server)
        fresh = sorted(on_server - set(known))
        for chunk in _chunks(sorted(set(known) & on_server)):
            for uid, data in client.fetch(chunk, ["FLAGS"]).items():
                flags = _flags_of(data)
                if uid in known and flags != known[uid]:
                    result.flags[uid] = flags
    result.added = _fetch_new(client, fresh, progress)
    cache.apply(
        folder,
        now,
        reset=reset,
        added=result.added,
        gone=result.gone,
        flags=result.flags,
    )
    return result


def _uids(found: Sequence[int]) -> set[int]:
    return {int(uid) for uid in found}


def _condstore_uids(
    client: IMAPClient, known: dict[int, tuple[str, ...]], exists: int, uidnext: int
) -> tuple[list[int], list[int]]:
    """(new UIDs, expunged UIDs) from the cached UIDNEXT and the count (module docstring)."""
    # `n:*` names the last message even when its UID is below n: keep those from n on.
    above = {uid for uid in _uids(client.search(["UID", f"{uidnext}:*"])) if uid >= uidnext}
    below = {uid for uid in known if uid < uidnext}
    if exists - len(above) == len(below):
        gone = sorted(uid for uid in known if uid >= uidnext and uid not in above)
        return sorted(above - set(known)), gone
    on_server = _uids(client.search("ALL")) if exists else set()
    return sorted(on_server - set(known)), sorted(set(known) - on_server)


def _fetch_new(client: IMAPClient, fresh: Sequence[int], progress: Progress | None) -> list[Record]:
    """The new messages' rows (flags, size, date, header fields), reporting progress."""
    total = len(fresh)
    report = progress if progress is not None and total >= PROGRESS_MIN else None
    step = max(1, min(CHUNK, -(-total // PROGRESS_STEPS))) if report is not None else CHUNK
    added: list[Record] = []
    if report is not None:
        report(0, total)
    for start in range(0, total, step):
        chunk = list(fresh[start : start + step])
        fetched = client.fetch(chunk, _NEW_ITEMS)
        for uid in chunk:
            data = fetched.get(uid)
            if data is None:
                continue  # expunged meanwhile
            header = _header(data)
            added.append(
                Record(
                    uid=uid,
                    flags=_flags_of(data),
                    size=int(data.get(b"RFC822.SIZE", 0)),
                    internaldate=_utc(data.get(b"INTERNALDATE")),
                    header=header,
                    summary=summarize(parse_header_block(header)),
                )
            )
        if report is not None:
            report(min(total, start + step), total)
    return added


def fetch_arrivals(client: IMAPClient, uidnext: int) -> tuple[list[Record], int]:
    """(the messages from `uidnext` on, the UIDNEXT after them) in the selected mailbox:
    the IDLE connection's own fetch of new mail (idle.py), so the notification does not
    wait for the command connection to select and sync the Inbox again. A batch of
    PROGRESS_MIN or more is left to that sync, which shows its progress in the row."""
    # `n:*` names the last message even when its UID is below n: keep those from n on.
    fresh = sorted(u for u in _uids(client.search(["UID", f"{uidnext}:*"])) if u >= uidnext)
    if not fresh:
        return [], uidnext
    if len(fresh) >= PROGRESS_MIN:
        return [], fresh[-1] + 1
    return _fetch_new(client, fresh, None), fresh[-1] + 1


def fetch_body(
    client: IMAPClient, cache: Cache, folder: str, uidvalidity: int, uid: int
) -> bytes | None:
    """The whole message (BODY.PEEK[]: it stays unread), cached; None when the server has
    it no more (expunged, or the mailbox renumbered: another UIDVALIDITY)."""
    try:
        status = client.select_folder(folder, readonly=True)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error:
        return None
    if int(status.get(b"UIDVALIDITY", 0)) != uidvalidity:
        return None
    data = client.fetch([uid], ["BODY.PEEK[]"]).get(uid)
    raw = None if data is None else data.get(b"BODY[]")
    if not isinstance(raw, bytes):
        return None
    cache.set_body(folder, uid, raw)
    return raw
