"""One MAPI session: its members, state machine, providers, status table, handles, advises.

A session is created by a logon, holds one member per client that logged on to it (each with
its own secret token and lease), and ends with its last member or with MAPI_LOGOFF_SHARED.
Its state moves only along `_TRANSITIONS`; everything that touches a session's state runs
under its lock, so work on one session is serialized and different sessions run concurrently.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mapid.constants import LogonFlags, NotificationEvent
from mapid.daemon.config.profiles import Profile
from mapid.daemon.sessions.handles import HandleTable
from mapid.daemon.sessions.queue_claims import QueueClaims
from mapid.daemon.sessions.slots import ProviderSlot, ServiceInstance, SharedLogons
from mapid.daemon.sessions.status_table import RowKey, StatusTable
from mapid.errors import ErrorCode, MapiError
from mapid.wire import envelope

if TYPE_CHECKING:
    from mapid.constants import SpoolerNotify
    from mapid.daemon.config.service_registry import ServiceRegistry


class SessionState(enum.Enum):
    LOGGING_ON = "logging_on"
    ACTIVE = "active"
    ORPHANED = "orphaned"
    CLOSING = "closing"
    CLOSED = "closed"


_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.LOGGING_ON: frozenset({SessionState.ACTIVE, SessionState.CLOSING}),
    SessionState.ACTIVE: frozenset({SessionState.ORPHANED, SessionState.CLOSING}),
    SessionState.ORPHANED: frozenset({SessionState.ACTIVE, SessionState.CLOSING}),
    SessionState.CLOSING: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


class Spooler(Protocol):
    """What the session room asks of a session's spooler (spool/spooler.py is the one).

    A Protocol, so that sessions never import the spooler, which imports them."""

    status_string: str
    """What the spooler row says it is doing: "idle", "sending 3 of 10"."""

    def start(self) -> None: ...
    async def stop(self) -> None: ...
    def kick(self) -> None: ...
    def notify(self, slot: ProviderSlot | None, flags: SpoolerNotify) -> None: ...
    def refresh_address_types(self) -> None: ...
    async def flush(self, only: ProviderSlot | None = None) -> None: ...


SPOOLER_ROW = "spooler"
"""The key of the spooler's row among a session's MAPI rows (`Session.mapi_rows`)."""


@dataclass
class SessionEnv:
    """What sessions need from the daemon, handed in so sessions never reach for globals."""

    publish: Callable[..., int]
    forget_topics: Callable[..., None]
    send_notification: Callable[[bytes, dict[str, Any]], None]
    registry: ServiceRegistry
    config_dir: Path
    state_dir: Path
    """The daemon's state directory; providers get their own folder of it (Support.state_dir)."""
    provider_timeout: float
    max_handles: int
    make_spooler: Callable[[Session], Spooler]
    """Builds a session's spooler once its transports are up. Handed in by the daemon, so
    logon.py need not import spooler.py (which imports logon.py): no import cycle."""
    spooler_retry_s: float = 30.0
    """First wait after a temporary send failure; doubled each time, up to the cap."""
    spooler_retry_max_s: float = 3600.0
    outbox_alert_s: float = 900.0
    """A message queued longer than this is stuck mail (spool/stuck.py)."""
    on_new_mail: Callable[[ProviderSlot, bytes], None] | None = None
    """A store provider raised fnevNewMail for this entry ID (the desktop notifier hears)."""
    on_send_failed: Callable[[str, str, bytes | None], None] | None = None
    """A send failed for good: summary, reason, the non-delivery report's entry ID."""
    on_stuck_mail: Callable[[str, str], None] | None = None
    """Mail became stuck in an Outbox: summary, details (once per episode)."""
    queue_claims: QueueClaims = field(default_factory=QueueClaims)
    """Which session's spooler sends each store's Outbox (daemon-wide)."""
    shared_logons: SharedLogons = field(default_factory=SharedLogons)
    """The logons of shared providers, each held by the sessions of one profile."""
    shared_linger_s: float = 10.0
    """How long a shared logon no session holds waits for the next before it logs off."""


@dataclass(slots=True)
class Member:
    """One client's logon to a session. The token is the only thing that authorizes it."""

    token: bytes
    flags: LogonFlags
    client: dict[str, Any]
    identity: bytes | None
    """The ZeroMQ routing id of the client that logged on (None: the daemon's own member)."""
    lease_s: float
    expires: float | None
    queued: bool = False
    """Whether the lease heap holds an entry for this member."""

    @property
    def mail_enabled(self) -> bool:
        return not self.flags & LogonFlags.MAPI_NO_MAIL

    def renew(self) -> float | None:
        if self.lease_s > 0:
            self.expires = time.monotonic() + self.lease_s
        return self.expires


@dataclass
class Advise:
    connection: int
    entryid: bytes | None
    mask: NotificationEvent
    identity: bytes | None
    token: bytes
    slot: ProviderSlot | None


def new_token() -> bytes:
    return secrets.token_bytes(32)


class Session:
    """One MAPI session (module docstring). Slotted: a daemon holds 100 000 of them."""

    __slots__ = (
        "_next_connection",
        "advises",
        "busy",
        "created",
        "env",
        "flags",
        "handles",
        "id",
        "last_error",
        "lock",
        "mapi_rows",
        "members",
        "profile",
        "routes",
        "services",
        "shared",
        "spooler",
        "state",
        "status_objects",
        "table",
        "topics",
        "transports_on",
    )

    def __init__(self, profile: Profile, flags: LogonFlags, env: SessionEnv) -> None:
        self.id = secrets.token_hex(8)
        self.topics = (envelope.session_topic(self.id), envelope.status_topic(self.id))
        self.profile = profile
        self.flags = flags
        self.shared = bool(flags & LogonFlags.MAPI_ALLOW_OTHERS)
        self.created = datetime.now(UTC)
        self.env = env
        self.state = SessionState.LOGGING_ON
        self.members: dict[bytes, Member] = {}
        self.table = StatusTable(self.id)
        self.handles = HandleTable(env.max_handles)
        self.services: list[ServiceInstance] = []
        self.routes: dict[bytes, ProviderSlot] = {}
        self.status_objects: dict[bytes, RowKey] = {}
        """Entry ID of each status row -> its row key (open_entry checks here first)."""
        self.mapi_rows: dict[str, RowKey] = {}
        self.transports_on = False
        self.spooler: Spooler | None = None
        """Runs while transports are logged on (a member is mail-enabled); else None."""
        self.advises: dict[int, Advise] = {}
        self._next_connection = 1
        self.last_error: MapiError | None = None
        self.lock = asyncio.Lock()
        self.busy: set[RowKey] = set()
        """Status objects with a validate_state or flush running (MAPI_E_BUSY for another)."""

    # -- state machine -------------------------------------------------------------------
    def transition(self, new: SessionState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise MapiError(
                ErrorCode.MAPI_E_CALL_FAILED,
                f"session {self.id} cannot go from {self.state.value} to {new.value}",
            )
        self.state = new

    @property
    def alive(self) -> bool:
        return self.state in (SessionState.ACTIVE, SessionState.ORPHANED)

    @property
    def public(self) -> bool:
        return self.state in (SessionState.ACTIVE, SessionState.ORPHANED, SessionState.CLOSING)

    def info(self) -> dict[str, Any]:
        """The SESSION map of docs/protocol.md 6.1."""
        state = self.state.value if self.state != SessionState.CLOSED else "closing"
        if state == "logging_on":
            state = "active"
        return {
            "session": self.id,
            "profile": self.profile.name,
            "created": self.created,
            "shared": self.shared,
            "members": len(self.members),
            "flags": int(self.flags),
            "state": state,
        }

    def publish_session(self, event_type: str, **fields: Any) -> None:
        self.env.publish(
            envelope.session_topic(self.id),
            event_type,
            session=self.id,
            info=self.info(),
            **fields,
        )

    # -- members -------------------------------------------------------------------------
    def mail_members(self) -> int:
        return sum(1 for m in self.members.values() if m.mail_enabled)

    # -- advises and notifications -------------------------------------------------------
    def add_advise(
        self,
        entryid: bytes | None,
        mask: NotificationEvent,
        member: Member,
        slot: ProviderSlot | None,
        identity: bytes | None,
    ) -> int:
        """Register an advise; its notifications go to `identity`, the client that asked."""
        connection = self._next_connection
        self._next_connection += 1
        self.advises[connection] = Advise(connection, entryid, mask, identity, member.token, slot)
        return connection

    def notify_advise(self, advise: Advise, event: NotificationEvent, **fields: Any) -> bool:
        if advise.identity is None:
            return False
        name = event.name or str(int(event))
        payload = envelope.notification(advise.connection, name, self.id, **fields)
        self.env.send_notification(advise.identity, payload)
        return True

    def session_advises(self, token: bytes | None = None) -> list[Advise]:
        """Advises on the session itself (entry ID nil), of one member or of all."""
        return [
            a
            for a in self.advises.values()
            if a.entryid is None and (token is None or a.token == token)
        ]

    def drop_advises(self, token: bytes) -> None:
        for connection in [c for c, a in self.advises.items() if a.token == token]:
            del self.advises[connection]
