"""What a session holds of its profile's services: each loaded service and each of its
providers, with the provider's state (docs/design.md 4), and the shared logons that
several sessions' slots hold.

A provider class with `shared = True` (docs/providers.md, "Shared providers") keeps
nothing for any one session: what it writes in its status row, the notifications it raises
and what it tells the spooler are meant for every session of its profile. So the daemon
logs it on once, for the first session of the profile that needs it, and every later
session holds that same logon (`SharedLogon`): its slot gets the provider, the routes of
its MAPIUIDs and a row like the others'. When the last session lets go, the logon lingers
`shared_linger_s` (daemon configuration) for the next session of the profile, so that a
client that logs on and off again and again does not log the providers on each time; then
it logs off. 100 000 sessions of one profile are then 100 000 status tables over one
Maildir store, one vCard book and one SMTP transport, not 300 000 providers with their
watches and caches.

Plain records, apart from logon.py's algorithm, so that session.py can hold them without
importing logon.py (which imports session.py): no import cycle.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mapid.constants import ResourceType
from mapid.daemon.config.profiles import ServiceSection
from mapid.daemon.sessions.status_table import RowKey, StatusTable
from mapid.providers.base import MessageService, Provider


class SlotState(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    FAILED = "failed"
    """This provider failed alone (MAPI_E_FAILONEPROVIDER)."""
    DISABLED = "disabled"
    """Its service was disabled for the session."""
    LOGGED_OFF = "logged_off"


@dataclass(slots=True)
class ServiceInstance:
    """One `[services.<key>]` of the session's profile, loaded (or not) in this session."""

    section: ServiceSection
    cls: type[MessageService] | None
    config: Mapping[str, Any]
    """The section's configuration, read-only (shared by the profile's sessions)."""
    slots: list[ProviderSlot] = field(default_factory=list)
    disabled: str | None = None
    row: RowKey | None = None


@dataclass(slots=True)
class ProviderSlot:
    """One provider of one service in one session."""

    service: ServiceInstance
    cls: type[Provider]
    provider_uid: bytes
    provider: Provider | None = None
    row: RowKey | None = None
    state: SlotState = SlotState.PENDING
    uids: list[bytes] = field(default_factory=list)
    reason: str = ""
    watches: list[Callable[[], None]] = field(default_factory=list)
    """Stop functions of the provider's directory watches (stopped when it logs off)."""
    shared: SharedLogon | None = None
    """The shared logon this slot holds (a `shared` provider class), else None."""
    flags_set: int = 0
    flags_cleared: int = 0
    """PR_RESOURCE_FLAGS bits session.set_default_store set or cleared for this session:
    they outlast every recomputation of the row (reconfigure, validate_state)."""

    @property
    def key(self) -> str:
        """Owner key of this provider's handles."""
        return f"{self.service.section.key}/{self.cls.name}"

    @property
    def resource_type(self) -> ResourceType:
        return self.cls.resource_type

    @property
    def is_transport(self) -> bool:
        return self.resource_type == ResourceType.MAPI_TRANSPORT_PROVIDER


class Holder(Protocol):
    """A session as a shared logon sees it (session.Session; a Protocol, since session.py
    imports this module)."""

    routes: dict[bytes, ProviderSlot]
    table: StatusTable


Failure = tuple[SlotState, str]
"""How a logon failed: SlotState.FAILED (MAPI_E_FAILONEPROVIDER: this provider only) or
SlotState.DISABLED (its whole service), with the reason for the row."""
Holding = tuple[Holder, "ProviderSlot"]
LogonKey = tuple[bytes, type]
"""(provider MAPIUID of the profile's section, provider class): one logon each."""


class SharedLogon:
    """One logon of a shared provider and the sessions that hold it."""

    __slots__ = (
        "_holders",
        "config",
        "idle_row",
        "key",
        "linger",
        "logged_on",
        "provider",
        "reconfigure_failure",
        "section",
        "task",
        "uids",
        "watches",
    )

    def __init__(self, key: LogonKey, section: ServiceSection, config: Mapping[str, Any]):
        self.key = key
        self.section = section
        """The profile section it was logged on (or last reconfigured) with."""
        self.config = config
        self.provider: Provider | None = None
        self.task: asyncio.Future[Failure | None] | None = None
        """The logon itself; every session that comes meanwhile waits for it."""
        self.logged_on = True
        """False once it failed or logged off: its directory events are nobody's business."""
        self.uids: list[bytes] = []
        self.watches: list[Callable[[], None]] = []
        self.reconfigure_failure: str | None = None
        self.linger: asyncio.TimerHandle | None = None
        """While no session holds it: the timer that logs it off (shared_linger_s)."""
        self.idle_row: dict[str, Any] | None = None
        """While no session holds it: its row as the last holder had it, kept up to date
        (SharedSupport), for the next holder to start from."""
        self._holders: dict[int, Holding] = {}

    def __len__(self) -> int:
        return len(self._holders)

    def holders(self) -> list[Holding]:
        return list(self._holders.values())

    def succeeded(self) -> bool:
        task = self.task
        return task is not None and task.done() and not task.cancelled() and task.result() is None

    def hold(self, session: Holder, slot: ProviderSlot) -> None:
        """`session` holds the logon through `slot`: its MAPIUIDs route there."""
        if self.linger is not None:  # a lingering logon has a holder again
            self.linger.cancel()
            self.linger = None
        self._holders[id(slot)] = (session, slot)
        slot.shared = self
        slot.provider = self.provider
        for uid in self.uids:
            slot.uids.append(uid)
            session.routes[uid] = slot

    def let_go(self, slot: ProviderSlot) -> bool:
        """`slot` no longer holds it; True when that was the last holder."""
        slot.shared = None
        holding = self._holders.pop(id(slot), None)
        if holding is None or self._holders:
            return False
        if slot.row is not None:  # the last row, for whoever comes while it lingers
            row = holding[0].table.get(slot.row)
            self.idle_row = dict(row) if row is not None else None
        return True

    def peer_row(self) -> dict[str, Any] | None:
        """The row of the longest holder, which every change reached first (a newcomer's
        row starts as a copy, so that it says what the others say); with no holder, the
        last one's."""
        for session, slot in self._holders.values():
            if slot.row is not None:
                return session.table.get(slot.row)
        return self.idle_row

    def end(self) -> None:
        """Failed or logged off: stop the watches its provider forgot."""
        self.logged_on = False
        for stop in list(self.watches):
            stop()
        self.watches.clear()


class SharedLogons:
    """The daemon's current shared logons, one per (profile section, provider class)."""

    def __init__(self) -> None:
        self._current: dict[LogonKey, SharedLogon] = {}
        self.lingering: set[SharedLogon] = set()
        """Logons no session holds, waiting out shared_linger_s (or a newcomer)."""

    def __len__(self) -> int:
        return len(self._current)

    def find(self, key: LogonKey, section: ServiceSection) -> SharedLogon | None:
        """The logon a new holder of `section` joins: none when the one there was made from
        another configuration (a profile deleted and made anew while sessions held it)."""
        logon = self._current.get(key)
        if logon is None or not logon.logged_on:
            return None
        if logon.section is not section and logon.section.config != section.config:
            return None
        return logon

    def up(self) -> int:
        """Logons that are up: held by sessions, or lingering for the next one."""
        return len({*(x for x in self._current.values() if x.logged_on), *self.lingering})

    def add(self, logon: SharedLogon) -> None:
        self._current[logon.key] = logon

    def discard(self, logon: SharedLogon) -> None:
        if self._current.get(logon.key) is logon:
            del self._current[logon.key]
