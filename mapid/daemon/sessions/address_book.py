"""The integrated address book (IAddrBook, docs/mapi.md 7.6): every address book provider of
the session behind one object.

Its hierarchy table lists each logged-on provider's top-level containers; open_entry routes
an entry ID by its MAPIUID to the provider that registered it (nil opens the root, a one-off
entry ID a one-off mail user); resolve_names asks every provider and decides, per name, what
MAPI's IAddrBook::ResolveName would: one best match resolves, several are ambiguous, none is
a one-off when the name is an SMTP address and not found otherwise.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from mapid import entryid as eid
from mapid.constants import (
    MAPI_ONE_OFF_UID,
    DisplayType,
    ObjectType,
    RecipientType,
    ResourceType,
)
from mapid.daemon.sessions.handles import MAPID_OWNER
from mapid.daemon.sessions.routing import one_off_user
from mapid.daemon.sessions.session import Session
from mapid.daemon.sessions.slots import ProviderSlot, SlotState
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_ADDRTYPE,
    PR_DISPLAY_NAME,
    PR_DISPLAY_TYPE,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_INSTANCE_KEY,
    PR_OBJECT_TYPE,
    PR_RECIPIENT_TYPE,
    PR_RECORD_KEY,
    PR_SEARCH_KEY,
)
from mapid.providers.base import AddressBookProvider, Container, MapiObject, Row, pick_props

log = logging.getLogger("mapid.address_book")

MAX_CANDIDATES = 100
"""Candidates listed per ambiguous name in `details.names` (the reply must stay small)."""


def smtp_address(name: str) -> tuple[str, str] | None:
    """(display name, address) when `name` is an SMTP address ("x@y" or "Name <x@y>")."""
    display, address = email.utils.parseaddr(name)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "@" in local or any(c.isspace() for c in address):
        return None
    return display.strip() or address, address


def one_off_row(display: str, address: str) -> dict[str, Any]:
    """A recipient row for an address no provider knows (a one-off, docs/mapi.md 7.1)."""
    entryid = eid.one_off(display, "SMTP", address)
    return {
        PR_ENTRYID.name: entryid,
        PR_RECORD_KEY.name: entryid,
        PR_DISPLAY_NAME.name: display,
        PR_EMAIL_ADDRESS.name: address,
        PR_ADDRTYPE.name: "SMTP",
        PR_SEARCH_KEY.name: eid.search_key("SMTP", address),
        PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MAILUSER),
        PR_DISPLAY_TYPE.name: int(DisplayType.DT_MAILUSER),
    }


def as_recipient(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out.setdefault(PR_RECIPIENT_TYPE.name, int(RecipientType.MAPI_TO))
    return out


def _has_address(row: Row, address: str) -> bool:
    have = row.get(PR_EMAIL_ADDRESS.name)
    return isinstance(have, str) and have.casefold() == address.casefold()


class AddressBook(Container):
    """The root of the integrated address book; one per open_address_book handle."""

    object_type = ObjectType.MAPI_ADDRBOOK

    def __init__(self, session: Session) -> None:
        self.session = session

    def slots(self) -> list[ProviderSlot]:
        return [
            slot
            for instance in self.session.services
            for slot in instance.slots
            if slot.resource_type == ResourceType.MAPI_AB_PROVIDER
            and slot.state == SlotState.ACTIVE
            and isinstance(slot.provider, AddressBookProvider)
        ]

    def failed_providers(self) -> list[dict[str, str]]:
        """The session's address book providers that did not log on, and why."""
        failed = []
        for instance in self.session.services:
            for slot in instance.slots:
                if slot.resource_type != ResourceType.MAPI_AB_PROVIDER:
                    continue
                if slot.state in (SlotState.FAILED, SlotState.DISABLED):
                    reason = slot.reason or instance.disabled or "failed"
                    failed.append({"provider": slot.key, "reason": reason})
        return failed

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        props = {
            PR_OBJECT_TYPE.name: int(ObjectType.MAPI_ADDRBOOK),
            PR_DISPLAY_NAME.name: "Address Book",
        }
        return pick_props(props, tags)

    async def hierarchy_rows(self) -> Sequence[Row]:
        rows: list[Row] = []
        for slot in self.slots():
            assert isinstance(slot.provider, AddressBookProvider)
            try:
                containers = slot.provider.top_containers()
            except Exception:
                log.exception("top_containers of %s failed", slot.key)
                continue
            for row in containers:
                if PR_INSTANCE_KEY.name in row or PR_ENTRYID.name not in row:
                    rows.append(row)
                else:
                    rows.append({**row, PR_INSTANCE_KEY.name: row[PR_ENTRYID.name]})
        return rows

    async def open_child(self, entryid: bytes | None, flags: int) -> MapiObject:
        return (await self.open(entryid))[0]

    async def open(self, entryid: bytes | None) -> tuple[MapiObject, str]:
        """IAddrBook::OpenEntry: (object, owner of its handle). Address book objects are
        read-only: nothing is opened with MAPI_MODIFY."""
        if entryid is None:
            return AddressBook(self.session), MAPID_OWNER
        if eid.uid_of(entryid) == MAPI_ONE_OFF_UID:
            return one_off_user(entryid), MAPID_OWNER
        slot = self.session.routes.get(eid.uid_of(entryid))
        if slot is None or slot not in self.slots():
            raise MapiError(
                ErrorCode.MAPI_E_UNKNOWN_ENTRYID,
                "no address book provider of this session owns that entry ID",
            )
        assert slot.provider is not None
        return await slot.provider.open_entry(entryid, 0), slot.key

    async def resolve_names(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """One recipient row per name, in order; any failure fails the whole call."""
        resolved: list[dict[str, Any]] = []
        failed: dict[str, dict[str, Any]] = {}
        for name in names:
            address = smtp_address(name.strip())
            if address is not None:
                # A whole address ("x@y", "Name <x@y>") names that address and nothing
                # else: the contact that has exactly it, else a one-off. A substring match
                # ("da@example.org" in "ada@example.org") would send to the wrong person.
                known = [
                    row
                    for row in await self._candidates(address[1])
                    if _has_address(row, address[1])
                ]
                row = known[0] if known else one_off_row(*address)
                resolved.append(as_recipient(row))
                continue
            candidates = await self._candidates(name.strip())
            if len(candidates) == 1:
                resolved.append(as_recipient(candidates[0]))
                continue
            if candidates:
                shown = [as_recipient(c) for c in candidates[:MAX_CANDIDATES]]
                failed[name] = {
                    "code": ErrorCode.MAPI_E_AMBIGUOUS_RECIP.name,
                    "candidates": shown,
                }
                if len(candidates) > MAX_CANDIDATES:
                    failed[name]["more"] = len(candidates) - MAX_CANDIDATES
                continue
            failed[name] = {"code": ErrorCode.MAPI_E_NOT_FOUND.name}
        if not failed:
            return resolved
        ambiguous = [n for n, f in failed.items() if "candidates" in f]
        code = ErrorCode.MAPI_E_AMBIGUOUS_RECIP if ambiguous else ErrorCode.MAPI_E_NOT_FOUND
        parts = []
        if ambiguous:
            parts.append("ambiguous: " + ", ".join(repr(n) for n in ambiguous))
        missing = [n for n in failed if n not in ambiguous]
        if missing:
            parts.append("not found: " + ", ".join(repr(n) for n in missing))
        raise MapiError(
            code, "names did not resolve (" + "; ".join(parts) + ")", details={"names": failed}
        )

    async def _candidates(self, name: str) -> list[Row]:
        """The best-ranked matches of every provider, without repeats."""
        if not name:
            return []
        best: int | None = None
        found: list[Row] = []
        seen: set[bytes] = set()
        for slot in self.slots():
            assert isinstance(slot.provider, AddressBookProvider)
            try:
                answers = await slot.provider.resolve_names(name)
            except MapiError as exc:
                log.warning("resolve_names of %s failed: %s", slot.key, exc.message)
                continue
            except Exception:
                log.exception("resolve_names of %s failed", slot.key)
                continue
            for rank, row in answers:
                if best is not None and rank > best:
                    continue
                if best is None or rank < best:
                    best, found, seen = rank, [], set()
                key = row.get(PR_ENTRYID.name)
                if isinstance(key, bytes):
                    if key in seen:
                        continue
                    seen.add(key)
                found.append(row)
        return found
