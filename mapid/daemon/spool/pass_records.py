"""What the spooler keeps about its passes (spooler.py): one pass over the queue, one
queued message in it, what earlier tries did with a message, a transport's backoff, a
flush waiting for its pass, and a sending period that outlives its pass. Plain records:
the algorithm is the spooler's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mapid.daemon.sessions.slots import ProviderSlot
from mapid.daemon.spool import ndr
from mapid.daemon.spool.routing import Routes
from mapid.providers.base import Identity, QueuedMessage, Recipient

__all__ = ["Backoff", "Busy", "Flush", "Job", "Pass", "Progress"]


@dataclass
class Backoff:
    delay: float
    until: float
    reason: str


@dataclass
class Progress:
    """What earlier tries did with one queued message (kept while part of it waits)."""

    accepted: set[str] = field(default_factory=set)
    failures: dict[str, ndr.Failure] = field(default_factory=dict)
    sent_mime: bytes | None = None
    reported: bool = False
    """The non-delivery report is in the Inbox already."""

    def done(self, address: str) -> bool:
        key = address.casefold()
        return key in self.accepted or key in self.failures


@dataclass
class Flush:
    only: bytes | None
    """The provider UID of the transport whose messages to send; None: all of them."""
    done: asyncio.Future[None]


@dataclass
class Pass:
    """One pass over the queue: what it may force, and what it found."""

    forced: set[bytes] | None
    """Transports whose backoff this pass ignores (None: all of them)."""
    only: set[bytes] | None
    """Send only messages that one of these transports takes (None: every message)."""
    total: int = 0
    index: int = 0
    """1-based position in the queue of the message in hand."""
    handled: int = 0
    waiting: int = 0
    reason: str = ""
    failed_now: set[bytes] = field(default_factory=set)
    """Transports that failed in this pass: the rest of their messages wait for the retry."""
    used: dict[bytes, ProviderSlot] = field(default_factory=dict)
    routes: Routes | None = None
    """The transports of this pass and whom they send as (routing.py)."""
    shown_at: float = 0.0
    """When the rows last showed this pass's progress (monotonic)."""
    finishing: set[asyncio.Task[None]] = field(default_factory=set)
    """Messages sent and being handed back to the store while the next one is sent."""
    stamps: dict[bytes, float] = field(default_factory=dict)
    """When each message read was submitted (epoch s), while it stays queued: /metrics."""
    flush: bool = False
    """A flush asked for it: its end shows at once (the caller reads the rows next)."""
    continued: bool = False
    """It goes on with the sending period of the pass before (see spooler.SETTLE_S): even its
    last step shows only when spooler.PROGRESS_INTERVAL_S has passed; the settling shows the end."""

    def is_forced(self, slot: ProviderSlot) -> bool:
        return self.forced is None or slot.provider_uid in self.forced

    def wait(self, reason: str) -> None:
        self.waiting += 1
        self.reason = self.reason or reason


@dataclass
class Busy:
    """A sending period that outlives its pass by spooler.SETTLE_S: the transports it made
    STATUS_OUTBOUND_ACTIVE stay so until it settles, or the next pass carries on."""

    used: dict[bytes, ProviderSlot]
    shown_at: float
    settle: asyncio.TimerHandle


@dataclass
class Job:
    """One queued message in a pass: where its recipients go, and whether it must wait."""

    index: int
    """1-based position in the pass's queue."""
    message: QueuedMessage
    progress: Progress
    own_from: Identity | None
    keep_from: bool = False
    """Its own From goes out as it is; else the transport's `from` replaces it (routing.py)."""
    sends: list[tuple[ProviderSlot, list[Recipient]]] = field(default_factory=list)
    """Each transport that takes some of the recipients still to do, with those."""
    waiting: str = ""
    """Why it stays queued (a transport in backoff or not logged on); "" when it goes on."""

    def hold(self, reason: str) -> None:
        self.waiting = self.waiting or reason

    def single_slot(self) -> ProviderSlot | None:
        """The one transport all of it goes to, when so: such messages go in batches."""
        if len(self.sends) == 1 and not self.waiting:
            return self.sends[0][0]
        return None

    def recipients_for(self, slot: ProviderSlot) -> list[Recipient]:
        for target, recipients in self.sends:
            if target.provider_uid == slot.provider_uid:
                return recipients
        return []
