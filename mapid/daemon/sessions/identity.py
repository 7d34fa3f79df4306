"""The session's primary identity, read from its status rows (docs/mapi.md 6).

`session.query_identity` answers with an entry ID; `message.submit` and the spooler need a
name and an address to put in From. Both start from the same row, chosen here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mapid import entryid as eid
from mapid.constants import ResourceFlags, ResourceType
from mapid.providers.base import AddressBookProvider, Identity

if TYPE_CHECKING:
    from mapid.daemon.sessions.session import Session


def primary_identity(session: Session) -> Identity | None:
    """The session's primary identity as session.query_identity finds its row; the address
    book that supplies it gives the address as written."""
    row = identity_row(session.table.rows())
    if row is None:
        return None
    key = row.get("PR_INSTANCE_KEY")
    for instance in session.services:
        for slot in instance.slots:
            provider = slot.provider
            if slot.row == key and isinstance(provider, AddressBookProvider):
                found = provider.identity()
                if found is not None and "@" in found.email:
                    return found
    return row_identity(row)


def identity_row(rows: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The row flagged STATUS_PRIMARY_IDENTITY (never a failed service's row), else the
    first row with PR_IDENTITY_ENTRYID; rows in PR_ROWID order."""
    ordered = sorted(rows, key=lambda r: int(r["PR_ROWID"]))
    for row in ordered:
        if int(row.get("PR_RESOURCE_FLAGS", 0)) & ResourceFlags.STATUS_PRIMARY_IDENTITY and row.get(
            "PR_RESOURCE_TYPE"
        ) != int(ResourceType.MAPI_PROFILE_PROVIDER):
            return row
    for row in ordered:
        if isinstance(row.get("PR_IDENTITY_ENTRYID"), bytes):
            return row
    return None


def row_identity(row: Mapping[str, Any]) -> Identity | None:
    """Name and address from an identity row: a one-off PR_IDENTITY_ENTRYID keeps the
    address as written; PR_IDENTITY_SEARCH_KEY ("SMTP:ADA@EXAMPLE.ORG") is upper-cased, so
    its address comes back in lower case. None when the row names no address."""
    display = str(row.get("PR_IDENTITY_DISPLAY") or row.get("PR_DISPLAY_NAME") or "")
    entry = row.get("PR_IDENTITY_ENTRYID")
    if isinstance(entry, bytes):
        one_off = eid.parse_one_off(entry)
        if one_off is not None and one_off.address:
            return Identity(display or one_off.display_name, one_off.address, one_off.addrtype)
    key = row.get("PR_IDENTITY_SEARCH_KEY")
    if isinstance(key, bytes):
        text = key.rstrip(b"\0").decode("utf-8", "replace")
        addrtype, sep, address = text.partition(":")
        if sep and address:
            return Identity(display, address.lower(), addrtype)
    return None
