"""What several op modules share about the wire (docs/protocol.md 4 to 6): the request's session,
member and handle as the registry promised them, the profile an admin op works on, and the
reply for a newly opened object (its handle, type and properties as a client may decode them).
"""

from __future__ import annotations

from typing import Any

from mapid.constants import AccessLevel, ObjectType
from mapid.daemon.bus.registry import OpContext
from mapid.daemon.config.profiles import Profile
from mapid.daemon.sessions.handles import OpenObject
from mapid.daemon.sessions.routing import STORE_WRITE_BITS
from mapid.daemon.sessions.session import Member, Session
from mapid.daemon.sessions.table_query import TableQuery
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import PR_ACCESS_LEVEL, PR_STORE_SUPPORT_MASK
from mapid.providers.base import MapiObject
from mapid.wire.codec import MAX_STR

# -- the request's context --------------------------------------------------------------------


def session_of(ctx: OpContext) -> Session:
    """The session of an op registered with token=True (the registry found it)."""
    if ctx.session is None:
        raise RuntimeError("an op without token=True asked for its session")
    return ctx.session


def member_of(ctx: OpContext) -> Member:
    """The member whose token an op registered with token=True came with."""
    if ctx.member is None:
        raise RuntimeError("an op without token=True asked for its member")
    return ctx.member


def entry_of(ctx: OpContext) -> OpenObject:
    """What `args.handle` names, for an op registered with handle=True."""
    if ctx.obj is None:
        raise RuntimeError("an op without handle=True asked for its handle's object")
    return ctx.obj


def table_of(ctx: OpContext) -> TableQuery:
    """The parsed table arguments of an op registered with table=True."""
    if ctx.table is None:
        raise RuntimeError("an op without table=True asked for its table arguments")
    return ctx.table


def require_writable(entry: OpenObject, what: str) -> None:
    """MAPI_E_NO_ACCESS on a read-only handle, with the way to a writable one."""
    if not entry.writable:
        raise MapiError(
            ErrorCode.MAPI_E_NO_ACCESS,
            f"cannot {what}: this handle is read-only (open the store with MDB_WRITE, then "
            "the object with MAPI_MODIFY or from a writable handle)",
        )


def target_profile(ctx: OpContext, args: dict[str, Any], *, by_name: bool = False) -> Profile:
    """The profile an admin op works on: the session's, else `args.profile`."""
    profiles: dict[str, Profile] = ctx.daemon.profiles
    if ctx.session is not None and not by_name:
        return profiles.get(ctx.session.profile.name, ctx.session.profile)
    name = args.get("profile")
    if not name:
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "give a session token or args.profile")
    profile = profiles.get(name)
    if profile is None:
        raise MapiError(
            ErrorCode.MAPI_E_NOT_FOUND, f"no profile {name!r}", details={"profile": name}
        )
    return profile


# -- replies ----------------------------------------------------------------------------------


def fit_props(props: dict[str, Any]) -> list[str]:
    """Leave out the values a client could not decode (a str or bin over the codec's 1 MiB,
    docs/protocol.md 2), as MAPI's GetProps answers MAPI_E_NOT_ENOUGH_MEMORY for a property too
    big for it; returns their tags (the reply's `too_big`). message.get_mime has the rest."""
    big = [
        tag
        for tag, value in props.items()
        if isinstance(value, (str, bytes)) and _encoded_len(value) > MAX_STR
    ]
    for tag in big:
        del props[tag]
    return big


def _encoded_len(value: str | bytes) -> int:
    if isinstance(value, bytes):
        return len(value)
    if len(value) * 4 <= MAX_STR:
        return len(value)  # surely within the limit, without encoding it
    return len(value.encode("utf-8", "surrogatepass"))


def access_props(entry: OpenObject, props: dict[str, Any], tags: list[str] | None) -> None:
    """What the handle grants, as MAPI shows it: PR_ACCESS_LEVEL on stores, folders and
    messages, and a read-only store's PR_STORE_SUPPORT_MASK without MODIFY_OK/CREATE_OK."""
    kinds = (ObjectType.MAPI_STORE, ObjectType.MAPI_FOLDER, ObjectType.MAPI_MESSAGE)
    if entry.object_type not in kinds:
        return
    if tags is None or PR_ACCESS_LEVEL.name in tags:
        props[PR_ACCESS_LEVEL.name] = int(AccessLevel.MAPI_MODIFY) if entry.writable else 0
    mask = props.get(PR_STORE_SUPPORT_MASK.name)
    if not entry.writable and isinstance(mask, int):
        props[PR_STORE_SUPPORT_MASK.name] = mask & ~int(STORE_WRITE_BITS)


async def add_handle(
    session: Session, obj: MapiObject, owner: str, writable: bool
) -> dict[str, Any]:
    """Give an opened object a handle; the reply carries its type and properties."""
    props = await obj.get_props(None)
    entry = OpenObject(obj, owner, int(obj.object_type), writable)
    access_props(entry, props, None)
    too_big = fit_props(props)
    try:
        handle = session.handles.add(entry)
    except MapiError:
        await obj.release()
        raise
    result = {"handle": handle, "object_type": int(obj.object_type), "props": props}
    if too_big:
        result["too_big"] = too_big
    return result
