"""`session.*` operations (docs/protocol.md 6.4) of this slice: logon to advise."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from mapid import entryid as eid
from mapid.constants import (
    MAPI_ONE_OFF_UID,
    LogoffFlags,
    LogonFlags,
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
from mapid.daemon.ops.common import add_handle, member_of, session_of, table_of
from mapid.daemon.sessions import routing
from mapid.daemon.sessions.handles import MAPID_OWNER, OpenObject
from mapid.daemon.sessions.identity import identity_row
from mapid.daemon.sessions.slots import SlotState
from mapid.errors import ErrorCode, MapiError

SESSION_EVENTS = NotificationEvent.fnevCriticalError | NotificationEvent.fnevExtended


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
    session, member = session_of(ctx), member_of(ctx)
    shared = bool(args["flags"] & LogoffFlags.MAPI_LOGOFF_SHARED) and session.shared
    await ctx.daemon.sessions.logoff(session, member, shared=shared)
    return {}


@op("session.renew", token=True, locks_session=False)
def renew(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    member = member_of(ctx)
    if member.lease_s <= 0:
        return {"lease_expires": None}
    try:
        return {"lease_expires": datetime.now(UTC) + timedelta(seconds=member.lease_s)}
    except OverflowError:  # a lease past year 9999 (lease_s may be any number, even inf)
        return {"lease_expires": datetime.max.replace(tzinfo=UTC)}


@op("session.get_last_error", token=True, locks_session=False)
def get_last_error(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    session = session_of(ctx)
    error = session.last_error
    return {"error": error.to_wire() if error is not None else None}


@op("session.status_table", token=True, table=True)
def status_table(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    session = session_of(ctx)
    result = table_of(ctx).run(sorted(session.table.rows(), key=lambda r: int(r["PR_ROWID"])))
    result["seq"] = ctx.daemon.publisher.seq
    return result


@op("session.query_identity", token=True)
def query_identity(ctx: OpContext, args: dict[str, Any]) -> Reply:
    """docs/mapi.md 6, steps 1 to 5 (the row: daemon/identity.py)."""
    session = session_of(ctx)
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


@op(
    "session.open_entry",
    token=True,
    args={"entryid": EntryId(nullable=True), "flags": Flags(OpenFlags)},
)
async def open_entry(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A store's entry ID opens the store as open_msg_store with MDB_NO_DIALOG would, with
    MDB_WRITE for MAPI_MODIFY (docs/mapi.md 2, notes); routing.open_entry has the rules."""
    session = session_of(ctx)
    entryid = args["entryid"]
    if entryid is None:
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER, "the session has no root: entryid must not be nil"
        )
    obj, owner, writable = await routing.open_entry(session, entryid, OpenFlags(args["flags"]))
    return await add_handle(session, obj, owner, writable)


@op(
    "session.compare_entryids",
    token=True,
    args={"a": EntryId(), "b": EntryId()},
)
def compare_entryids(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"equal": routing.same_entry(session_of(ctx), args["a"], args["b"])}


@op(
    "session.advise",
    token=True,
    args={
        "entryid": EntryId(required=False, nullable=True),
        "event_mask": Flags(NotificationEvent, required=True),
    },
)
async def advise(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    session, member = session_of(ctx), member_of(ctx)
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
    session, member = session_of(ctx), member_of(ctx)
    found = session.advises.get(args["connection"])
    if found is None or found.token != member.token:
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no advise {args['connection']} of yours")
    del session.advises[args["connection"]]
    return {}


@op("session.enum_adr_types", token=True)
def enum_adr_types(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Address types of the transports logged on now (none without a mail-enabled member)."""
    session = session_of(ctx)
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
    session = session_of(ctx)
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
