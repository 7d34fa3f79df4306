"""`daemon.snapshot`: the state of the selected sessions at one `seq` (PROTOCOL.md 6.1, 7.3).

A snapshot is taken in one step of the event loop, so it matches the event stream exactly.
When it would not fit in one reply it is cut between sessions; the later parts are frozen at
the same `seq` and handed out by cursor.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mapid.codec import MAX_PAYLOAD, pack
from mapid.daemon.publisher import Publisher
from mapid.daemon.session import Session
from mapid.errors import ErrorCode, MapiError

PART_BUDGET = MAX_PAYLOAD - 256 * 1024
"""Room for one part, with a margin for the reply envelope around it."""
CURSOR_TTL = 60.0
MAX_CURSORS = 64


@dataclass
class _Pending:
    expires: float
    parts: list[dict[str, Any]]


class SnapshotStore:
    def __init__(
        self,
        publisher: Publisher,
        sessions: Callable[[], list[Session]],
        config: Callable[[], dict[str, Any]],
    ) -> None:
        self.publisher = publisher
        self.sessions = sessions
        self.config = config
        self._pending: dict[str, _Pending] = {}

    def take(self, prefix: str) -> dict[str, Any]:
        base = {
            "epoch": self.publisher.epoch,
            "seq": self.publisher.seq,
            "config": self.config(),
        }
        topics_seq = self.publisher.topics
        parts: list[dict[str, Any]] = []
        current = self._empty(base)
        size = len(pack(current))
        for session in self.sessions():
            session_topic, status_topic = session.topics
            if not (session_topic.startswith(prefix) or status_topic.startswith(prefix)):
                continue
            info = session.info()
            rows = session.table.rows()
            topics = {
                t: topics_seq[t]
                for t in (session_topic, status_topic)
                if t.startswith(prefix) and t in topics_seq
            }
            piece = len(pack([info, rows, topics]))
            if current["sessions"] and size + piece > PART_BUDGET:
                parts.append(current)
                current = self._empty(base)
                size = len(pack(current))
            current["sessions"].append(info)
            current["status"][session.id] = rows
            current["topics"].update(topics)
            size += piece
        parts.append(current)
        if len(parts) == 1:
            return parts[0]
        return self._hand_out(parts)

    @staticmethod
    def _empty(base: dict[str, Any]) -> dict[str, Any]:
        return {**base, "sessions": [], "status": {}, "topics": {}}

    def _hand_out(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        now = time.monotonic()
        for cursor in [c for c, p in self._pending.items() if p.expires < now]:
            del self._pending[cursor]
        while len(self._pending) >= MAX_CURSORS:
            self._pending.pop(next(iter(self._pending)))
        cursor = secrets.token_hex(12)
        first, rest = parts[0], parts[1:]
        self._pending[cursor] = _Pending(now + CURSOR_TTL, rest)
        return {**first, "next": cursor}

    def next_part(self, cursor: str) -> dict[str, Any]:
        pending = self._pending.get(cursor)
        if pending is None or pending.expires < time.monotonic():
            self._pending.pop(cursor, None)
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND,
                "unknown or expired snapshot cursor; take a new snapshot",
            )
        part = pending.parts.pop(0)
        if pending.parts:
            pending.expires = time.monotonic() + CURSOR_TTL
            return {**part, "next": cursor}
        del self._pending[cursor]
        return part
