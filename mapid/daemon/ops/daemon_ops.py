"""`daemon.*` operations (docs/protocol.md 6.1) and `services.available`: no token needed."""

from __future__ import annotations

import os
from typing import Any

from mapid.daemon.bus.registry import Bool, OpContext, Str, op
from mapid.wire.envelope import PROTOCOL_VERSION


@op("daemon.hello", token=False)
def hello(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    daemon = ctx.daemon
    return {
        "protocol": PROTOCOL_VERSION,
        "version": daemon.version,
        "epoch": daemon.epoch,
        "pid": os.getpid(),
        "started": daemon.started,
        "config_gen": daemon.config_gen,
        "capabilities": daemon.capabilities(),
    }


@op("daemon.ping", token=False)
def ping(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return {}


@op("daemon.snapshot", token=False, args={"prefix": Str(max_len=1024), "cursor": Str(max_len=128)})
async def snapshot(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Sessions and status tables at one `seq`, in parts when large (the clone recipe)."""
    snapshots = ctx.daemon.snapshots
    part: dict[str, Any]
    if args["cursor"] is not None:
        part = snapshots.next_part(args["cursor"])
    else:
        part = await snapshots.take(args["prefix"] or "")
    return part


@op("daemon.sessions", token=False)
def sessions(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"sessions": [s.info() for s in ctx.daemon.sessions.public_sessions()]}


@op("daemon.reload", token=False, args={"check": Bool()})
async def reload(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = await ctx.daemon.reload(check=args["check"], trigger="request")
    return report


@op("daemon.stats", token=False)
def stats(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    daemon = ctx.daemon
    server = daemon.server
    return {
        "requests": server.stats.requests,
        "malformed": server.stats.malformed,
        "errors": server.stats.errors,
        "events": daemon.publisher.published,
        "sessions": daemon.sessions.public_count,
        "reloads": daemon.reloads,
        "in_flight": sum(server.in_flight.values()),
        "reply_cache": len(server.cache.entries),
        "reply_cache_bytes": server.cache.size,
        "reply_cache_evicted": server.cache.evicted,
        "members": len(daemon.sessions.tokens),
        "shared_logons": daemon.sessions.env.shared_logons.up(),
        "shared_lingering": len(daemon.sessions.env.shared_logons.lingering),
    }
