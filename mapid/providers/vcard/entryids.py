"""The folder's entry IDs and the properties of a contact as a mail user (pure).

Shared by every session of a folder; no I/O, no provider state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mapid.constants import ENTRYID_MIN_LENGTH, DisplayType, ObjectType
from mapid.entryid import make, private_of, search_key, uid_of
from mapid.proptags import (
    PR_ADDRTYPE,
    PR_COMPANY_NAME,
    PR_CONTACT_ADDRTYPES,
    PR_CONTACT_DEFAULT_ADDRESS_INDEX,
    PR_CONTACT_EMAIL_ADDRESSES,
    PR_CONTACT_ENTRYIDS,
    PR_DISPLAY_NAME,
    PR_DISPLAY_TYPE,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_GIVEN_NAME,
    PR_NICKNAME,
    PR_OBJECT_TYPE,
    PR_RECORD_KEY,
    PR_SEARCH_KEY,
    PR_SMTP_ADDRESS,
    PR_SURNAME,
    PR_TRANSMITABLE_DISPLAY_NAME,
)
from mapid.providers.vcard.cards import Contact

__all__ = [
    "ADDRESS_PREFIX",
    "ADDRTYPE",
    "CONTACT_PREFIX",
    "CONTAINER_PREFIX",
    "Target",
    "contact_entryid",
    "container_entryid",
    "mailuser_props",
    "parse_entryid",
    "recipient_row",
]

ADDRTYPE = "SMTP"
CONTACT_PREFIX = b"\x01"
"""First private byte of a contact's entry ID (its preferred address)."""
CONTAINER_PREFIX = b"\x02"
"""First private byte of the folder's container entry ID."""
ADDRESS_PREFIX = b"\x03"
"""First private byte of a contact's entry ID at another of its addresses."""


def contact_entryid(uid: bytes, contact: Contact, address: str | None = None) -> bytes:
    """A contact's entry ID at `address` (None or the preferred one: its plain entry ID)."""
    if address is None or (contact.email is not None and address == contact.email):
        return make(uid, CONTACT_PREFIX + contact.uid.encode("utf-8"))
    return make(uid, ADDRESS_PREFIX + address.encode("utf-8") + b"\0" + contact.uid.encode())


def container_entryid(uid: bytes) -> bytes:
    return make(uid, CONTAINER_PREFIX)


@dataclass(frozen=True)
class Target:
    """What one of my entry IDs names: the container, or a contact (at an address)."""

    container: bool = False
    contact_uid: str | None = None
    address: str | None = None
    """None: the contact's preferred address."""


def parse_entryid(uid: bytes | None, eid: bytes) -> Target | None:
    """What an entry ID of mine names; None for anything else (another MAPIUID, garbage)."""
    if uid is None or len(eid) < ENTRYID_MIN_LENGTH or uid_of(eid) != uid:
        return None
    private = private_of(eid)
    try:
        if private == CONTAINER_PREFIX:
            return Target(container=True)
        if private.startswith(CONTACT_PREFIX) and len(private) > 1:
            return Target(contact_uid=private[1:].decode("utf-8"))
        if private.startswith(ADDRESS_PREFIX):
            address, nul, contact_uid = private[1:].partition(b"\0")
            if nul and address and contact_uid:
                return Target(
                    contact_uid=contact_uid.decode("utf-8"), address=address.decode("utf-8")
                )
    except UnicodeDecodeError:
        return None
    return None


def mailuser_props(contact: Contact, eid: bytes, address: str | None = None) -> dict[str, Any]:
    """The properties of a contact as a MAPI messaging user, at `address` (else preferred).

    `eid` is the contact's entry ID at that address; the other addresses' entry IDs are
    derived from its MAPIUID.
    """
    uid = uid_of(eid)
    address = address if address is not None else contact.email
    props: dict[str, Any] = {
        PR_ENTRYID.name: eid,
        PR_RECORD_KEY.name: eid,
        PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MAILUSER),
        PR_DISPLAY_TYPE.name: int(DisplayType.DT_MAILUSER),
        PR_DISPLAY_NAME.name: contact.display_name,
        PR_TRANSMITABLE_DISPLAY_NAME.name: contact.display_name,
        PR_ADDRTYPE.name: ADDRTYPE,
    }
    if address is not None:
        props[PR_EMAIL_ADDRESS.name] = address
        props[PR_SMTP_ADDRESS.name] = address
        props[PR_SEARCH_KEY.name] = search_key(ADDRTYPE, address)
    if contact.emails:
        props[PR_CONTACT_EMAIL_ADDRESSES.name] = list(contact.emails)
        props[PR_CONTACT_ADDRTYPES.name] = [ADDRTYPE] * len(contact.emails)
        props[PR_CONTACT_ENTRYIDS.name] = [contact_entryid(uid, contact, a) for a in contact.emails]
        props[PR_CONTACT_DEFAULT_ADDRESS_INDEX.name] = 0
    for tag, value in (
        (PR_GIVEN_NAME, contact.given_name),
        (PR_SURNAME, contact.surname),
        (PR_COMPANY_NAME, contact.company),
        (PR_NICKNAME, contact.nickname),
    ):
        if value:
            props[tag.name] = value
    return props


def recipient_row(contact: Contact, eid: bytes, address: str) -> dict[str, Any]:
    """What ab.resolve_names answers for a contact at one address."""
    return {
        PR_ENTRYID.name: eid,
        PR_DISPLAY_NAME.name: contact.display_name,
        PR_EMAIL_ADDRESS.name: address,
        PR_ADDRTYPE.name: ADDRTYPE,
        PR_SEARCH_KEY.name: search_key(ADDRTYPE, address),
        PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MAILUSER),
        PR_DISPLAY_TYPE.name: int(DisplayType.DT_MAILUSER),
    }
