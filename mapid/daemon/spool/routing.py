"""Which transport sends a message (docs/design.md 4 and 7): by its sender, then by its
recipients' address types, in the profile's transport order.

A profile may hold several accounts, each with its transport, and each transport sends as
its own addresses (`TransportProvider.sender_addresses`: the smtp service's `from`); one
that names none sends as the session's identity. The recipients of one address type go to

1. the first transport, in transport order, that takes the type and sends as the message's
   sender: its From header, which is PR_SENT_REPRESENTING_EMAIL_ADDRESS for a message
   composed through properties and the From of one submitted as MIME, compared on the
   address part without regard to case. While that transport is not logged on the message
   waits for it (the spooler's row says why): another account's server would be sending
   for someone it does not know;
2. else (no sender, or one that no transport sends as) the first logged-on transport, in
   transport order, that takes the type: what a profile of one account always did.

The From that goes out is the message's sender:

- a sender that some transport sends as goes out as the client wrote it;
- a sender that no transport sends as stays too, although another account sends it. MAPI
  keeps PR_SENT_REPRESENTING_* (for whom it is sent) as the client set it and has the
  transport stamp PR_SENDER_* (who sends it) with its own account. The envelope sender
  is then the transport's own (the smtp `from`), as PR_SENDER is;
- the session's identity (message.submit stamps it when the client names no sender) that
  no transport sends as, or no sender at all: the transport's own address (`from`, "send
  as this instead of the session's identity") replaces it; without one, the identity.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from mapid.daemon.sessions.slots import ProviderSlot, SlotState
from mapid.providers.base import Identity, TransportProvider

log = logging.getLogger("mapid.spooler")


def sender_key(sender: Identity | None) -> str | None:
    """What a sender is matched on: its address part, case-folded (None: no address)."""
    if sender is None:
        return None
    address = sender.email.strip()
    return address.casefold() if "@" in address else None


def _identity_of(value: Any) -> Identity | None:
    if isinstance(value, Identity):
        return value if "@" in value.email else None
    if isinstance(value, str) and value:
        name, address = parseaddr(value)
        if "@" in address:
            return Identity(name, address)
    return None


def _usable(slot: ProviderSlot) -> bool:
    return slot.state == SlotState.ACTIVE and isinstance(slot.provider, TransportProvider)


def _why(slot: ProviderSlot) -> str:
    return slot.reason or slot.service.disabled or "not logged on"


@dataclass(frozen=True)
class Routes:
    """The transports of one pass, in transport order, with what each takes and sends as."""

    transports: list[ProviderSlot]
    identity: Identity | None
    """The session's primary identity when the pass began."""
    types: Mapping[bytes, tuple[str, ...]]
    sends_as: Mapping[bytes, frozenset[str]]
    """Case-folded addresses of each transport known to the spooler; empty: it sends as the
    session's identity. A transport never logged on since the spooler started is absent."""
    overrides: Mapping[bytes, Identity | None]
    """Each logged-on transport's own From (sender_override)."""

    def _addresses(self, slot: ProviderSlot) -> frozenset[str] | None:
        known = self.sends_as.get(slot.provider_uid)
        if known is None or known:
            return known
        own = sender_key(self.identity)
        return frozenset({own}) if own is not None else known

    def _sent_as(self, key: str, slot: ProviderSlot) -> bool:
        addresses = self._addresses(slot)
        return addresses is not None and key in addresses

    def route(self, addrtype: str, sender: Identity | None) -> ProviderSlot | str | None:
        """The transport for the recipients of `addrtype` of a message from `sender` (see
        the module's docstring); a reason (str) when it must wait for a transport that is
        not logged on; None when no transport of the profile takes the type."""
        takers = [s for s in self.transports if addrtype in self.types.get(s.provider_uid, ())]
        key = sender_key(sender)
        if key is not None:
            for slot in takers:
                if not self._sent_as(key, slot):
                    continue
                if _usable(slot):
                    return slot
                name = slot.service.section.key
                return f"transport {name}, which sends as {key}, is not available: {_why(slot)}"
        for slot in takers:
            if _usable(slot):
                return slot
        if takers:
            slot = takers[0]
            return f"transport {slot.service.section.key} is not available: {_why(slot)}"
        return None

    def keeps_from(self, sender: Identity | None) -> bool:
        """Whether the message's own From goes out as it is (else the transport's `from`
        replaces it): a sender the client chose, or the session's identity when some
        transport sends as it."""
        key = sender_key(sender)
        if key is None:
            return False
        if key != sender_key(self.identity):
            return True
        return any(self._sent_as(key, slot) for slot in self.transports)

    def override(self, slot: ProviderSlot) -> Identity | None:
        """The transport's own From, for a message whose From does not stay."""
        return self.overrides.get(slot.provider_uid)


class Router:
    """What the spooler remembers of its transports between passes: their address types
    (IXPLogon::AddressTypes, asked again on NOTIFY_CONFIG_CHANGE) and the addresses each
    sent as when it was last logged on."""

    def __init__(self) -> None:
        self._types: dict[bytes, tuple[str, ...]] = {}
        self._senders: dict[bytes, frozenset[str]] = {}

    def refresh(self, transports: Iterable[ProviderSlot]) -> None:
        """Ask every transport again (its configuration changed)."""
        self._types = {slot.provider_uid: _read_types(slot) for slot in transports}

    def routes(self, transports: list[ProviderSlot], identity: Identity | None) -> Routes:
        """The routes of one pass: what each transport sends as is read once, at its start."""
        overrides: dict[bytes, Identity | None] = {}
        for slot in transports:
            uid = slot.provider_uid
            if uid not in self._types:  # a transport added since the last refresh
                self._types[uid] = _read_types(slot)
            if _usable(slot):
                overrides[uid], self._senders[uid] = _read_senders(slot)
        live = {slot.provider_uid for slot in transports}
        for gone in set(self._senders) - live:
            del self._senders[gone]
        return Routes(transports, identity, dict(self._types), dict(self._senders), overrides)


def _read_types(slot: ProviderSlot) -> tuple[str, ...]:
    source: Any = slot.provider if slot.provider is not None else slot.cls
    kinds = getattr(source, "address_types", ()) or ()
    return tuple(str(k).upper() for k in kinds)


def _read_senders(slot: ProviderSlot) -> tuple[Identity | None, frozenset[str]]:
    """The transport's own From and the addresses it sends as; a transport whose hooks
    fail sends as the session's identity (its bug is in the log)."""
    provider = slot.provider
    try:
        override = getattr(provider, "sender_override", None)
        own = _identity_of(override()) if callable(override) else None
        method = getattr(provider, "sender_addresses", None)
        values: Any = method() if callable(method) else ()
        if isinstance(values, str):
            values = (values,)
        addresses = set()
        for value in values or ():
            found = _identity_of(value)
            key = sender_key(found)
            if key is not None:
                addresses.add(key)
    except Exception:
        log.exception("transport %s cannot say whom it sends as", slot.key)
        return None, frozenset()
    return own, frozenset(addresses)
