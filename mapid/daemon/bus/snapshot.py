"""`daemon.snapshot`: the state of the selected sessions at one `seq` (docs/protocol.md 6.1, 7.3).

The state is exact at the snapshot's `seq`: what it holds plus the events after that seq
is the daemon's state. Capturing takes references (rows are replaced, never changed in
place), CAPTURE_CHUNK sessions per step of the event loop, so that 100 000 sessions do not
hold the loop for half a second; the events published meanwhile are watched, and the last
step captures again every session they touched (and the ones that came), then stamps the
seq. Encoding is done one part at a time: a part holds about `PART_BUDGET` bytes of
sessions, and when more remain the reply carries a cursor for the next part, which is
encoded only when asked for. No single step blocks the loop for long, however many
sessions there are.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mapid.daemon.bus.publisher import Publisher
from mapid.daemon.sessions.session import Session
from mapid.errors import ErrorCode, MapiError
from mapid.wire import envelope
from mapid.wire.codec import pack

CAPTURE_CHUNK = 500
"""Sessions captured in one step of the event loop (about 10 ms of it at 100 000)."""
PART_BUDGET = 960 * 1024
"""Bytes of sessions in one part: well inside the 4 MiB reply limit, quick to encode, and
with the part's other fields under 1 MiB (wire.codec.MAX_STR): a reply larger than that
is decoded once more before it goes, to check the protocol's limits (server._ok), which
made each part of a 100 000-session snapshot hold the loop 50-80 ms."""
CURSOR_TTL = 60.0
MAX_CURSORS = 64

_SESSION_TOPICS = (envelope.SESSION_TOPIC_PREFIX, envelope.STATUS_TOPIC_PREFIX)

_Piece = tuple[dict[str, Any], list[dict[str, Any]], dict[str, int]]
"""One session as captured: its SESSION map, its rows, its topics' last seqs."""


@dataclass
class _Pending:
    expires: float
    base: dict[str, Any]
    pieces: list[_Piece]
    next_index: int = 0


class SnapshotStore:
    def __init__(
        self,
        publisher: Publisher,
        sessions: Callable[[], list[Session]],
        config: Callable[[], dict[str, Any]],
    ) -> None:
        self.publisher = publisher
        self.sessions = sessions
        """Every session, public or not (SessionManager.every_session; the capture skips
        the others)."""
        self.config = config
        self._pending: dict[str, _Pending] = {}

    async def take(self, prefix: str) -> dict[str, Any]:
        touched: set[str] = set()

        def note(topic: str, _payload: dict[str, Any]) -> None:
            touched.add(topic)

        listeners = self.publisher.listeners
        listeners.append(note)
        try:
            captured: dict[str, _Piece] = {}
            owners: dict[str, str] = {}  # topic -> session id, for what `touched` names
            objects: dict[str, Session] = {}  # every session looked at, by id
            sessions = self.sessions()
            for start in range(0, len(sessions), CAPTURE_CHUNK):
                if start:
                    await asyncio.sleep(0)  # events may come: `touched` hears them
                for session in sessions[start : start + CAPTURE_CHUNK]:
                    objects[session.id] = session
                    self._capture(session, prefix, captured, owners)
            # The last step, with nothing in between: whatever changed is captured again
            # (a session that ended leaves), and the sessions that came are added.
            for sid in {owners[t] for t in touched if t in owners}:
                self._capture(objects[sid], prefix, captured, owners)
            if any(t not in owners and t.startswith(_SESSION_TOPICS) for t in touched):
                for session in self.sessions():
                    if session.id not in objects:
                        self._capture(session, prefix, captured, owners)
        finally:
            listeners.remove(note)
        base = {
            "epoch": self.publisher.epoch,
            "seq": self.publisher.seq,
            "config": self.config(),
        }
        pending = _Pending(time.monotonic() + CURSOR_TTL, base, list(captured.values()))
        part = self._part(pending)
        if pending.next_index >= len(pending.pieces):
            return part
        return {**part, "next": self._keep(pending)}

    def _capture(
        self,
        session: Session,
        prefix: str,
        captured: dict[str, _Piece],
        owners: dict[str, str],
    ) -> None:
        """One session as it is now, if it is public and has a topic under `prefix` (taken
        again, it keeps its place)."""
        selected = [t for t in session.topics if t.startswith(prefix)] if session.public else []
        if not selected:
            captured.pop(session.id, None)
            return
        topics_seq = self.publisher.topics
        for topic in session.topics:
            owners[topic] = session.id
        topics = {t: topics_seq[t] for t in selected if t in topics_seq}
        captured[session.id] = (session.info(), session.table.rows(), topics)

    @staticmethod
    def _part(pending: _Pending) -> dict[str, Any]:
        """The next part: sessions from `next_index` until the budget is used."""
        part: dict[str, Any] = {**pending.base, "sessions": [], "status": {}, "topics": {}}
        size = 0
        pieces = pending.pieces
        while pending.next_index < len(pieces):
            info, rows, topics = pieces[pending.next_index]
            piece_size = len(pack((info, rows, topics)))
            if part["sessions"] and size + piece_size > PART_BUDGET:
                break
            part["sessions"].append(info)
            part["status"][info["session"]] = rows
            part["topics"].update(topics)
            size += piece_size
            pending.next_index += 1
        return part

    def _keep(self, pending: _Pending) -> str:
        now = time.monotonic()
        for cursor in [c for c, p in self._pending.items() if p.expires < now]:
            del self._pending[cursor]
        while len(self._pending) >= MAX_CURSORS:
            self._pending.pop(next(iter(self._pending)))
        cursor = secrets.token_hex(12)
        self._pending[cursor] = pending
        return cursor

    def next_part(self, cursor: str) -> dict[str, Any]:
        pending = self._pending.get(cursor)
        if pending is None or pending.expires < time.monotonic():
            self._pending.pop(cursor, None)
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND,
                "unknown or expired snapshot cursor; take a new snapshot",
            )
        part = self._part(pending)
        if pending.next_index < len(pending.pieces):
            pending.expires = time.monotonic() + CURSOR_TTL
            return {**part, "next": cursor}
        del self._pending[cursor]
        return part
