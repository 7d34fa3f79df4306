"""`session.*` operations (PROTOCOL.md 6.4) of this slice: logon to advise."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from mapid import entryid as eid
from mapid.constants import (
    MAPI_ONE_OFF_UID,
    LogoffFlags,
    LogonFlags,
    MdbFlags,
    NotificationEvent,
    OpenFlags,
)
from mapid.daemon.bus.registry import (
    Bin,
    EntryId,
    Flags,
    Int,
    Map,
    Number,
    OpContext,
    Reply,
    Str,
    op,
)
from mapid.daemon.config.profile_sections import current_profile, open_section
from mapid.daemon.ops.store_ops import (
    add_handle,
    has_writable_store,
    is_store_entryid,
    open_store,
    routed_slot,
)
from mapid.daemon.sessions.handles import OpenObject
from mapid.daemon.sessions.identity import identity_row
from mapid.daemon.sessions.session import Member, Session
from mapid.daemon.sessions.slots import SlotState
from mapid.daemon.sessions.status_objects import OneOffUser, StatusObject
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import MapiObject, StoreProvider

SESSION_EVENTS = NotificationEvent.fnevCriticalError | NotificationEvent.fnevExtended
MAPID_OWNER = "mapid"


def _session(ctx: OpContext) -> tuple[Session, Member]:
    assert ctx.session is not None and ctx.member is not None
    return ctx.session, ctx.member


@op(
    "session.logon",
    token=False,
    args={
        "profile": Str(nullable=True, max_len=4096),
        "flags": Flags(LogonFlags),
        "client": Map(),
        "lease_s": Number(low=0),
    },
)
async def logon(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """MAPI's logon algorithm; returns once every provider has logged on or failed."""
    client = args["client"] or {}
    session, member = await ctx.daemon.sessions.logon(
        args["profile"] or None, args["flags"], client, ctx.identity, args["lease_s"]
    )
    return {
        "token": member.token,
        "session": session.id,
        "profile": session.profile.name,
        "shared": session.shared,
        "lease_s": member.lease_s,
    }


@op("session.logoff", token=True, args={"flags": Flags(LogoffFlags)})
async def logoff(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    session, member = _session(ctx)
    shared = bool(args["flags"] & LogoffFlags.MAPI_LOGOFF_SHARED) and session.shared
    await ctx.daemon.sessions.logoff(session, member, shared=shared)
    return {}


@op("session.renew", token=True, locks_session=False)
def renew(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    member = _session(ctx)[1]
    if member.lease_s <= 0:
        return {"lease_expires": None}
    try:
        return {"lease_expires": datetime.now(UTC) + timedelta(seconds=member.lease_s)}
    except OverflowError:  # a lease past year 9999 (lease_s may be any number, even inf)
        return {"lease_expires": datetime.max.replace(tzinfo=UTC)}


@op("session.get_last_error", token=True, locks_session=False)
def get_last_error(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    session, _member = _session(ctx)
    error = session.last_error
    return {"error": error.to_wire() if error is not None else None}


@op("session.status_table", token=True, table=True)
def status_table(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    session, _member = _session(ctx)
    assert ctx.table is not None
    result = ctx.table.run(sorted(session.table.rows(), key=lambda r: int(r["PR_ROWID"])))
    result["seq"] = ctx.daemon.publisher.seq
    return result


@op("session.query_identity", token=True)
def query_identity(ctx: OpContext, args: dict[str, Any]) -> Reply:
    """reference/mapi-digest.md section 6, steps 1 to 5 (the row: daemon/identity.py)."""
    session, _member = _session(ctx)
    row = identity_row(session.table.rows())
    if row is None:
        return Reply({"entryid": eid.UNKNOWN_IDENTITY}, warning=ErrorCode.MAPI_W_NO_SERVICE.name)
    if isinstance(row.get("PR_IDENTITY_ENTRYID"), bytes):
        return Reply({"entryid": row["PR_IDENTITY_ENTRYID"]})
    return Reply({"entryid": _one_off_from_row(row)})  # flagged, without an entry ID


def _one_off_from_row(row: Mapping[str, Any]) -> bytes:
    """A flagged row without PR_IDENTITY_ENTRYID: a one-off from what the row says."""
    display = row.get("PR_IDENTITY_DISPLAY") or row.get("PR_DISPLAY_NAME") or ""
    addrtype, address = "", ""
    key = row.get("PR_IDENTITY_SEARCH_KEY")
    if isinstance(key, bytes):
        text = key.rstrip(b"\0").decode("utf-8", "replace")
        if ":" in text:
            addrtype, address = text.split(":", 1)
            address = address.lower()
    return eid.one_off(str(display), addrtype, address)


async def open_object(session: Session, entryid: bytes, flags: int) -> tuple[MapiObject, str, bool]:
    """Route an entry ID to whoever owns it: a status row, a one-off, or a provider.

    Write rules (PROTOCOL 6.4): MAPI_MODIFY (or MAPI_BEST_ACCESS) on a folder or message of a
    store gives a writable object only while the session holds a store handle opened with
    MDB_WRITE on that store; else the object opens read-only and the provider is asked
    without MAPI_MODIFY. Other providers' objects (address book entries) keep MAPI_MODIFY.
    """
    row = session.status_objects.get(entryid)
    if row is not None:
        return StatusObject(session, row), MAPID_OWNER, False
    uid = eid.uid_of(entryid)
    if uid == MAPI_ONE_OFF_UID:
        one_off = eid.parse_one_off(entryid)
        if one_off is None:
            raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "a malformed one-off entry ID")
        return OneOffUser(entryid, one_off), MAPID_OWNER, False
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


@op(
    "session.open_entry",
    token=True,
    args={"entryid": EntryId(nullable=True), "flags": Flags(OpenFlags)},
)
async def open_entry(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A store's entry ID opens the store as open_msg_store with MDB_NO_DIALOG would, with
    MDB_WRITE for MAPI_MODIFY (mapi-digest 2, notes)."""
    session, _member = _session(ctx)
    entryid = args["entryid"]
    if entryid is None:
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER, "the session has no root: entryid must not be nil"
        )
    flags = OpenFlags(args["flags"])
    slot = session.routes.get(eid.uid_of(entryid))
    if (
        entryid not in session.status_objects
        and slot is not None
        and slot.state == SlotState.ACTIVE
        and is_store_entryid(slot, entryid)
    ):
        mdb = MdbFlags.MDB_NO_DIALOG
        if flags & OpenFlags.MAPI_MODIFY:
            mdb |= MdbFlags.MDB_WRITE
        if flags & OpenFlags.MAPI_BEST_ACCESS:
            mdb |= MdbFlags.MAPI_BEST_ACCESS
        return await open_store(session, entryid, mdb)
    obj, owner, writable = await open_object(session, entryid, int(flags))
    return await add_handle(session, obj, owner, writable)


def _known_uid(session: Session, uid: bytes) -> bool:
    if uid in (eid.MAPID_UID, MAPI_ONE_OFF_UID) or uid in session.routes:
        return True
    return any(eid.uid_of(e) == uid for e in session.status_objects)


@op(
    "session.compare_entryids",
    token=True,
    args={"a": EntryId(), "b": EntryId()},
)
def compare_entryids(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    session, _member = _session(ctx)
    a, b = args["a"], args["b"]
    for value in (a, b):
        if not _known_uid(session, eid.uid_of(value)):
            raise MapiError(
                ErrorCode.MAPI_E_UNKNOWN_ENTRYID, "no provider of this session owns that MAPIUID"
            )
    uid = eid.uid_of(a)
    if uid != eid.uid_of(b):
        return {"equal": False}
    if a in session.status_objects or b in session.status_objects:
        return {"equal": a == b}
    if uid == MAPI_ONE_OFF_UID:
        one, two = eid.parse_one_off(a), eid.parse_one_off(b)
        if one is None or two is None:
            return {"equal": a == b}
        return {
            "equal": one.addrtype.upper() == two.addrtype.upper()
            and one.address.casefold() == two.address.casefold()
        }
    slot = session.routes.get(uid)
    if slot is None or slot.provider is None:
        return {"equal": a == b}
    return {"equal": bool(slot.provider.compare_entryids(a, b))}


@op(
    "session.advise",
    token=True,
    args={
        "entryid": EntryId(required=False, nullable=True),
        "event_mask": Flags(NotificationEvent, required=True),
    },
)
async def advise(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    session, member = _session(ctx)
    mask = NotificationEvent(args["event_mask"])
    if not mask:
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "event_mask must name an event")
    if mask & NotificationEvent.fnevStatusObjectModified:
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "fnevStatusObjectModified is internal to MAPI")
    target = args["entryid"]
    if target is None:
        if mask & ~SESSION_EVENTS:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                "the session raises only fnevCriticalError and fnevExtended; other events "
                "need the entry ID of a store, folder or message",
            )
        return {"connection": session.add_advise(None, mask, member, None, ctx.identity)}
    if target in session.status_objects or eid.uid_of(target) in (eid.MAPID_UID, MAPI_ONE_OFF_UID):
        raise MapiError(
            ErrorCode.MAPI_E_NO_SUPPORT, "only stores, folders and messages raise these events"
        )
    slot = session.routes.get(eid.uid_of(target))
    if slot is None or slot.provider is None or slot.state != SlotState.ACTIVE:
        raise MapiError(
            ErrorCode.MAPI_E_UNKNOWN_ENTRYID, "no provider of this session owns that entry ID"
        )
    await slot.provider.advise(target, mask)
    return {"connection": session.add_advise(target, mask, member, slot, ctx.identity)}


@op("session.unadvise", token=True, args={"connection": Int(required=True, low=1)})
def unadvise(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    session, member = _session(ctx)
    found = session.advises.get(args["connection"])
    if found is None or found.token != member.token:
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no advise {args['connection']} of yours")
    del session.advises[args["connection"]]
    return {}


@op("session.enum_adr_types", token=True)
def enum_adr_types(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Address types of the transports logged on now (none without a mail-enabled member)."""
    session, _member = _session(ctx)
    types: list[str] = []
    for instance in session.services:
        for slot in instance.slots:
            if slot.is_transport and slot.state == SlotState.ACTIVE:
                for kind in getattr(slot.cls, "address_types", ()):
                    if kind not in types:
                        types.append(kind)
    return {"types": types}


@op(
    "session.open_profile_section",
    token=True,
    args={"uid": Bin(required=True), "flags": Flags(OpenFlags)},
)
async def open_profile_section(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A section of the session's profile; MAPI_MODIFY for writing (one writer at a time)."""
    session, _member = _session(ctx)
    daemon = ctx.daemon
    profile = current_profile(session.profile.path)
    if profile is None:
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "the session's profile file is gone")
    section = await open_section(
        profile,
        args["uid"],
        bool(args["flags"] & OpenFlags.MAPI_MODIFY),
        registry=daemon.registry,
        locks=daemon.section_locks,
        reload=lambda why: daemon.reload(trigger=why),
    )
    try:
        handle = session.handles.add(
            OpenObject(section, MAPID_OWNER, int(section.object_type), section.writable)
        )
    except MapiError:
        await section.release()
        raise
    return {"handle": handle}
