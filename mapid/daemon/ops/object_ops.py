"""`object.*` and `status.*` operations on handles (docs/protocol.md 6.5 and 6.6)."""

from __future__ import annotations

from typing import Any

from mapid.constants import FlushFlags, ObjectType, ValidateStateFlags
from mapid.daemon.bus.registry import Flags, Map, OpContext, Props, Str, StrList, op
from mapid.daemon.ops.common import (
    access_props,
    entry_of,
    fit_props,
    require_writable,
    session_of,
    target_profile,
)
from mapid.daemon.sessions.status_objects import StatusObject
from mapid.daemon.sessions.table_query import canonical_tag
from mapid.errors import ErrorCode, MapiError


def _tags(value: list[str] | None, obj: Any = None) -> list[str] | None:
    """Canonical tag names; a profile section also has plain configuration keys."""
    if value is None:
        return None
    plain_ok = getattr(obj, "object_type", None) == ObjectType.MAPI_PROFSECT
    return [
        t if plain_ok and not _looks_like_tag(t) else canonical_tag(t, f"tags[{i}]")
        for i, t in enumerate(value)
    ]


def _looks_like_tag(name: str) -> bool:
    return name.startswith(("PR_", "0x", "0X"))


@op("object.get_props", token=True, handle=True, args={"tags": StrList()})
async def get_props(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    entry = entry_of(ctx)
    tags = _tags(args["tags"], entry.obj)
    props = await entry.obj.get_props(tags)
    access_props(entry, props, tags)
    too_big = fit_props(props)
    return {"props": props, "too_big": too_big} if too_big else {"props": props}


_STORE_OBJECTS = (ObjectType.MAPI_STORE, ObjectType.MAPI_FOLDER, ObjectType.MAPI_MESSAGE)


def _check_write(ctx: OpContext, what: str) -> None:
    """A store's objects change only through writable handles (the provider never sees the
    call otherwise); other objects answer for themselves."""
    entry = entry_of(ctx)
    if entry.object_type in _STORE_OBJECTS:
        require_writable(entry, what)


@op("object.set_props", token=True, handle=True, args={"props": Props(required=True)})
async def set_props(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Set properties; `problems` maps a tag to the error it got ({} when all went)."""
    _check_write(ctx, "set properties")
    return {"problems": await entry_of(ctx).obj.set_props(args["props"])}


@op("object.delete_props", token=True, handle=True, args={"tags": StrList(required=True)})
async def delete_props(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    _check_write(ctx, "delete properties")
    return {"problems": await entry_of(ctx).obj.delete_props(args["tags"])}


@op("object.save_changes", token=True, handle=True)
async def save_changes(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    entry = entry_of(ctx)
    if entry.object_type == ObjectType.MAPI_MESSAGE:
        require_writable(entry, "save a message")
    await entry.obj.save_changes()
    return {}


@op("object.release", token=True, handle=True)
async def release(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    entry = session_of(ctx).handles.remove(args["handle"])
    await entry.obj.release()
    return {}


def _status(ctx: OpContext) -> StatusObject:
    obj = entry_of(ctx).obj
    if not isinstance(obj, StatusObject):
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this handle is not a status object")
    return obj


@op(
    "status.validate_state",
    token=True,
    handle=True,
    args={"flags": Flags(ValidateStateFlags)},
)
async def validate_state(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    await _status(ctx).validate_state(args["flags"])
    return {}


@op("status.flush_queues", token=True, handle=True, args={"flags": Flags(FlushFlags)})
async def flush_queues(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    await _status(ctx).flush_queues(args["flags"])
    return {}


@op("status.settings", token=True, handle=True, locks_session=False, args={"config": Map()})
async def settings(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Runs without the session's lock, as services.configure does: a change is written and
    then reloaded, and the reload takes the lock to apply it to this session."""
    session = session_of(ctx)
    if not session.alive:
        raise MapiError(ErrorCode.MAPI_E_END_OF_SESSION, "the session has ended")
    ctx.obj = session.handles.get(args["handle"])
    admin = ctx.daemon.service_admin
    return await _status(ctx).settings(args["config"], admin, target_profile(ctx, {}))


@op(
    "status.change_password",
    token=True,
    handle=True,
    args={"old": Str(required=True), "new": Str(required=True)},
)
async def change_password(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    await _status(ctx).change_password(args["old"], args["new"])
    return {}
