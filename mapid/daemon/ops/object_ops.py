"""`object.*` and `status.*` operations on handles (PROTOCOL.md 6.5 and 6.6)."""

from __future__ import annotations

from typing import Any

from mapid.constants import FlushFlags, ValidateStateFlags
from mapid.daemon.registry import Flags, Map, OpContext, Str, StrList, op
from mapid.daemon.status_objects import StatusObject
from mapid.daemon.table_query import canonical_tag
from mapid.errors import ErrorCode, MapiError


def _tags(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [canonical_tag(t, f"tags[{i}]") for i, t in enumerate(value)]


@op("object.get_props", token=True, handle=True, args={"tags": StrList()})
async def get_props(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    assert ctx.obj is not None
    return {"props": await ctx.obj.obj.get_props(_tags(args["tags"]))}


@op("object.release", token=True, handle=True)
async def release(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    assert ctx.session is not None
    entry = ctx.session.handles.remove(args["handle"])
    await entry.obj.release()
    return {}


def _status(ctx: OpContext) -> StatusObject:
    assert ctx.obj is not None
    if not isinstance(ctx.obj.obj, StatusObject):
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this handle is not a status object")
    return ctx.obj.obj


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


@op("status.settings", token=True, handle=True, args={"config": Map()})
async def settings(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return await _status(ctx).settings(args["config"])


@op(
    "status.change_password",
    token=True,
    handle=True,
    args={"old": Str(required=True), "new": Str(required=True)},
)
async def change_password(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    await _status(ctx).change_password(args["old"], args["new"])
    return {}
