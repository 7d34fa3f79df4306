"""What a session holds of its profile's services: each loaded service and each of its
providers, with the provider's state (docs/design.md 4).

Plain records, apart from logon.py's algorithm, so that session.py can hold them without
importing logon.py (which imports session.py): no import cycle.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mapid.constants import ResourceType
from mapid.daemon.config.profiles import ServiceSection
from mapid.daemon.sessions.status_table import RowKey
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
