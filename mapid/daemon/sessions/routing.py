"""Which provider of a session owns an entry ID, and how it may be opened (docs/protocol.md 6.4).

An entry ID names a status row, a one-off recipient, or an object of the logged-on provider
that registered its MAPIUID. Write access is the daemon's business (the shared agreement of
issue 4): a store opens writable only with MDB_WRITE on a store that allows it, and a folder
or message only while the session holds a live writable handle on its store. These return
the opened objects; giving them handles and replies is the ops' part.
"""

from __future__ import annotations

from mapid import entryid as eid
from mapid.constants import (
    MAPI_ONE_OFF_UID,
    MdbFlags,
    ObjectType,
    OpenFlags,
    ResourceType,
    StoreSupport,
)
from mapid.daemon.sessions.handles import MAPID_OWNER
from mapid.daemon.sessions.session import Session
from mapid.daemon.sessions.slots import ProviderSlot, SlotState
from mapid.daemon.sessions.status_objects import OneOffUser, StatusObject
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import PR_STORE_SUPPORT_MASK
from mapid.providers.base import MapiObject, StoreProvider

STORE_WRITE_BITS = StoreSupport.STORE_MODIFY_OK | StoreSupport.STORE_CREATE_OK
"""What a read-only store handle's PR_STORE_SUPPORT_MASK leaves out."""

Opened = tuple[MapiObject, str, bool]
"""An opened object, the owner of its handle, and whether the handle may write."""


# -- finding providers ------------------------------------------------------------------------


def store_slots(session: Session) -> list[ProviderSlot]:
    """The session's store providers that are logged on, in profile order."""
    return [
        slot
        for instance in session.services
        for slot in instance.slots
        if slot.resource_type == ResourceType.MAPI_STORE_PROVIDER
        and slot.state == SlotState.ACTIVE
        and isinstance(slot.provider, StoreProvider)
    ]


def slot_by_key(session: Session, key: str) -> ProviderSlot | None:
    for instance in session.services:
        for slot in instance.slots:
            if slot.key == key:
                return slot
    return None


def routed_slot(session: Session, entryid: bytes) -> ProviderSlot:
    """The logged-on provider that registered the entry ID's MAPIUID."""
    slot = session.routes.get(eid.uid_of(entryid))
    if slot is None or slot.provider is None or slot.state != SlotState.ACTIVE:
        raise MapiError(
            ErrorCode.MAPI_E_UNKNOWN_ENTRYID,
            "no provider of this session owns that entry ID's MAPIUID",
        )
    return slot


def is_store_entryid(slot: ProviderSlot, entryid: bytes) -> bool:
    """Whether `entryid` names the store of a store provider (not one of its folders)."""
    provider = slot.provider
    if not isinstance(provider, StoreProvider):
        return False
    try:
        return bool(provider.compare_entryids(provider.store_entryid(), entryid))
    except MapiError:
        return False


def names_store(session: Session, entryid: bytes) -> bool:
    """Whether `entryid` is the store entry ID of a logged-on store (not a status row's)."""
    slot = session.routes.get(eid.uid_of(entryid))
    return (
        entryid not in session.status_objects
        and slot is not None
        and slot.state == SlotState.ACTIVE
        and is_store_entryid(slot, entryid)
    )


def store_of(session: Session, entryid: bytes) -> tuple[ProviderSlot, StoreProvider]:
    """The store a store entry ID names; a folder's or a non-store's entry ID is refused."""
    slot = routed_slot(session, entryid)
    provider = slot.provider
    if not isinstance(provider, StoreProvider) or not is_store_entryid(slot, entryid):
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_ENTRYID,
            "that entry ID does not name a message store (session.open_entry opens folders "
            "and messages)",
        )
    return slot, provider


def has_writable_store(session: Session, slot: ProviderSlot) -> bool:
    """Whether the session holds a live store handle opened with MDB_WRITE on this store."""
    return any(
        entry.writable and entry.object_type == ObjectType.MAPI_STORE and entry.owner == slot.key
        for _handle, entry in session.handles
    )


def support_mask(provider: StoreProvider) -> int:
    try:
        value = provider.store_props().get(PR_STORE_SUPPORT_MASK.name, 0)
    except MapiError:
        return 0
    return int(value) if isinstance(value, int) else 0


def one_off_user(entryid: bytes) -> OneOffUser:
    """The mail user a one-off entry ID (MAPI_ONE_OFF_UID) describes."""
    one_off = eid.parse_one_off(entryid)
    if one_off is None:
        raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "a malformed one-off entry ID")
    return OneOffUser(entryid, one_off)


def known_uid(session: Session, uid: bytes) -> bool:
    """Whether anything of the session answers for entry IDs of this MAPIUID."""
    if uid in (eid.MAPID_UID, MAPI_ONE_OFF_UID) or uid in session.routes:
        return True
    return any(eid.uid_of(e) == uid for e in session.status_objects)


def same_entry(session: Session, a: bytes, b: bytes) -> bool:
    """session.compare_entryids: whether two entry IDs name the same object."""
    for value in (a, b):
        if not known_uid(session, eid.uid_of(value)):
            raise MapiError(
                ErrorCode.MAPI_E_UNKNOWN_ENTRYID, "no provider of this session owns that MAPIUID"
            )
    uid = eid.uid_of(a)
    if uid != eid.uid_of(b):
        return False
    if a in session.status_objects or b in session.status_objects:
        return a == b
    if uid == MAPI_ONE_OFF_UID:
        one, two = eid.parse_one_off(a), eid.parse_one_off(b)
        if one is None or two is None:
            return a == b
        return (
            one.addrtype.upper() == two.addrtype.upper()
            and one.address.casefold() == two.address.casefold()
        )
    slot = session.routes.get(uid)
    if slot is None or slot.provider is None:
        return a == b
    return bool(slot.provider.compare_entryids(a, b))


# -- opening ----------------------------------------------------------------------------------


async def open_store(session: Session, entryid: bytes, flags: MdbFlags) -> Opened:
    """session.open_msg_store, and session.open_entry on a store's entry ID: read-only
    unless MDB_WRITE (or MAPI_BEST_ACCESS) on a store without STORE_READONLY."""
    slot, provider = store_of(session, entryid)
    obj = await provider.open_store(int(flags))
    wants_write = bool(flags & (MdbFlags.MDB_WRITE | MdbFlags.MAPI_BEST_ACCESS))
    writable = wants_write and not support_mask(provider) & StoreSupport.STORE_READONLY
    if flags & MdbFlags.MDB_WRITE and not writable:
        await obj.release()
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, "this store is read-only: MDB_WRITE denied")
    return obj, slot.key, writable


async def open_object(session: Session, entryid: bytes, flags: int) -> Opened:
    """Route an entry ID to whoever owns it: a status row, a one-off, or a provider.

    Write rules (docs/protocol.md 6.4): MAPI_MODIFY (or MAPI_BEST_ACCESS) on a folder or
    message of a store gives a writable object only while the session holds a store handle
    opened with MDB_WRITE on that store; else the object opens read-only and the provider
    is asked without MAPI_MODIFY. Other providers' objects (address book entries) keep
    MAPI_MODIFY.
    """
    row = session.status_objects.get(entryid)
    if row is not None:
        return StatusObject(session, row), MAPID_OWNER, False
    if eid.uid_of(entryid) == MAPI_ONE_OFF_UID:
        return one_off_user(entryid), MAPID_OWNER, False
    slot = routed_slot(session, entryid)
    assert slot.provider is not None
    wants = bool(flags & (OpenFlags.MAPI_MODIFY | OpenFlags.MAPI_BEST_ACCESS))
    if isinstance(slot.provider, StoreProvider):
        writable = wants and has_writable_store(session, slot)
        flags = flags | OpenFlags.MAPI_MODIFY if writable else flags & ~OpenFlags.MAPI_MODIFY
    else:
        writable = bool(flags & OpenFlags.MAPI_MODIFY)
    obj = await slot.provider.open_entry(entryid, flags)
    return obj, slot.key, writable


async def open_entry(session: Session, entryid: bytes, flags: OpenFlags) -> Opened:
    """session.open_entry: a store's entry ID opens the store as open_msg_store with
    MDB_NO_DIALOG would, with MDB_WRITE for MAPI_MODIFY (docs/mapi.md 2, notes); any other
    goes to open_object."""
    if names_store(session, entryid):
        mdb = MdbFlags.MDB_NO_DIALOG
        if flags & OpenFlags.MAPI_MODIFY:
            mdb |= MdbFlags.MDB_WRITE
        if flags & OpenFlags.MAPI_BEST_ACCESS:
            mdb |= MdbFlags.MAPI_BEST_ACCESS
        return await open_store(session, entryid, mdb)
    return await open_object(session, entryid, int(flags))
