"""Which spooler sends each store's Outbox: one per store MAPIUID, daemon-wide (docs/design.md 7).

Two sessions of one profile open the same Maildir, so they see the same Outbox; if both sent
it, every message would go out twice. The first mail-enabled session whose default store has
a MAPIUID claims that store's queue; later ones wait in line, and when the owner lets go
(its transports log off or its session ends) the next in line takes over at once.
"""

from __future__ import annotations

from typing import Protocol


class Claimant(Protocol):
    """A spooler, as the claims see it."""

    @property
    def label(self) -> str:
        """Who it is, for status strings ("session 3f2a...")."""
        ...

    def took_over(self) -> None:
        """The queue is now mine: start sending (called on the event loop, non-blocking)."""
        ...

    def kick(self) -> None:
        """Something was queued: start a pass (non-blocking)."""
        ...

    async def flush(self) -> None:
        """A pass now that ignores the backoff; returns when it is done."""
        ...


class QueueClaims:
    def __init__(self) -> None:
        self._owners: dict[bytes, Claimant] = {}
        self._waiting: dict[bytes, dict[Claimant, None]] = {}
        """Per store, the spoolers in line, oldest first (a dict: O(1) to join and leave
        with 100 000 sessions of one profile in line)."""

    def claim(self, uid: bytes, who: Claimant) -> bool:
        """Ask for the queue of the store `uid`; True when `who` owns it now."""
        owner = self._owners.get(uid)
        if owner is None:
            self._owners[uid] = who
            return True
        if owner is who:
            return True
        self._waiting.setdefault(uid, {}).setdefault(who, None)
        return False

    def owner(self, uid: bytes) -> Claimant | None:
        return self._owners.get(uid)

    def release(self, uid: bytes, who: Claimant) -> None:
        """`who` gives up the store `uid` (or its place in line); the next one takes over."""
        line = self._waiting.get(uid, {})
        line.pop(who, None)
        if self._owners.get(uid) is who:
            del self._owners[uid]
            if line:
                successor = next(iter(line))
                del line[successor]
                self._owners[uid] = successor
                successor.took_over()
        if not line:
            self._waiting.pop(uid, None)
