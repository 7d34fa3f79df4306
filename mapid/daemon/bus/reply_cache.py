"""The reply cache: a resent request is answered again, not run twice (docs/protocol.md 3.4).

Replies are kept by (client identity, request id) for `ttl` seconds after they were sent,
and a duplicate of a request still running waits for its reply. The cache is bounded in
bytes as well as in time: an attack run's burst of 100 000 pings kept 57 MB of entries
(about 570 bytes each in Python objects) and waves of short connections kept theirs until
the next request came, since expired entries went only when a request looked. Now:

- a key is one `bytes` (identity and id), not two tuples, and each entry is counted as its
  key, its reply and `ENTRY_OVERHEAD`;
- past `max_bytes` the oldest replies go first, so a resend after that runs again (a cache
  this full means more than `max_bytes` of answers in `ttl` seconds);
- `purge` is called on a timer by the server, so an idle daemon drops expired entries,
  rebuilds the table once it has shrunk (a dict's table never does) and gives the memory
  back (`memory.give_back`).

Requests still running (`Pending`) are not counted and never evicted for size: they are
bounded by `max_in_flight` per client, and their duplicates wait for them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

REPLY_CACHE_TTL = 60.0
REPLY_CACHE_MAX_BYTES = 16 * 1024 * 1024
"""What the replies may take, counted as `entry_size`; the oldest go first past it."""

ENTRY_OVERHEAD = 200
"""Bytes an entry costs beyond its key and reply: the dict slot, the value tuple, the float
and the bytes objects' headers (measured with `bench/churn.py --tracemalloc`)."""


@dataclass
class Pending:
    """A request still running; duplicates that arrive meanwhile wait for its reply."""

    duplicates: int = 0


def cache_key(identity: bytes, req_id: str | int) -> bytes:
    """One bytes key for an identity and a request id; `1` and `"1"` stay distinct."""
    tag = b"s" if isinstance(req_id, str) else b"i"
    return bytes((len(identity) & 0xFF,)) + identity + tag + str(req_id).encode()


def entry_size(key: bytes, reply: bytes) -> int:
    return len(key) + len(reply) + ENTRY_OVERHEAD


@dataclass
class ReplyCache:
    """Replies by `cache_key`, oldest first, kept `ttl` seconds within `max_bytes`."""

    ttl: float = REPLY_CACHE_TTL
    max_bytes: int = REPLY_CACHE_MAX_BYTES
    entries: OrderedDict[bytes, tuple[float, bytes | Pending]] = field(default_factory=OrderedDict)
    size: int = 0
    """Bytes of the replies held, by `entry_size`."""
    evicted: int = 0
    """Replies dropped for size before their time (a resend of one of them runs again)."""
    _peak: int = 0
    """The most entries held since the table was last rebuilt."""

    def purge(self, now: float | None = None) -> int:
        """Drop what has expired, then the oldest replies past `max_bytes`; bytes freed."""
        now = time.monotonic() if now is None else now
        entries = self.entries
        before = self.size
        skipped = 0
        while entries and skipped < len(entries):
            key, (expires, value) = next(iter(entries.items()))
            if expires > now and self.size <= self.max_bytes:
                break
            if expires > now and isinstance(value, Pending):
                entries.move_to_end(key)  # running: not counted, never evicted for size
                skipped += 1
                continue
            del entries[key]
            if isinstance(value, bytes):
                self.size -= entry_size(key, value)
                if expires > now:
                    self.evicted += 1
        if len(entries) * 8 < self._peak:
            # A dict never shrinks its table: 100 000 entries once leave 7 MB behind.
            self.entries = OrderedDict(entries)
            self._peak = len(entries)
        return before - self.size

    def get(self, key: bytes) -> bytes | Pending | None:
        found = self.entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= time.monotonic():
            self.purge()
            return None if key not in self.entries else self.entries[key][1]
        return value

    def start(self, key: bytes) -> None:
        self._drop(key)
        self.entries[key] = (time.monotonic() + self.ttl, Pending())
        self._peak = max(self._peak, len(self.entries))

    def finish(self, key: bytes, reply: bytes) -> int:
        """Store the reply; return how many duplicates were waiting for it."""
        found = self._drop(key)
        self.entries[key] = (time.monotonic() + self.ttl, reply)
        self.size += entry_size(key, reply)
        if self.size > self.max_bytes:
            self.purge()
        if found is not None and isinstance(found, Pending):
            return found.duplicates
        return 0

    def forget(self, key: bytes) -> None:
        self._drop(key)

    def _drop(self, key: bytes) -> bytes | Pending | None:
        found = self.entries.pop(key, None)
        if found is None:
            return None
        value = found[1]
        if isinstance(value, bytes):
            self.size -= entry_size(key, value)
        return value
