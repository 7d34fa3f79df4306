"""The one place that knows the shape of every message on the wire (docs/protocol.md 3 and 7).

Requests and replies travel as two frames, an empty delimiter then the payload; events as
two frames, the topic then the payload. Everything else in mapid builds and reads messages
through these functions, so the shapes live here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mapid.errors import MapiError
from mapid.wire.codec import pack, unpack

PROTOCOL_VERSION = 1

# Topics of the event stream (docs/protocol.md 7.1).
TOPIC_HEARTBEAT = "hb"
TOPIC_DAEMON = "daemon"
SESSION_TOPIC_PREFIX = "session."
STATUS_TOPIC_PREFIX = "status."


def session_topic(session_id: str) -> str:
    return SESSION_TOPIC_PREFIX + session_id


def status_topic(session_id: str) -> str:
    return STATUS_TOPIC_PREFIX + session_id


def request(
    req_id: object,
    op: str,
    args: Mapping[str, Any] | None = None,
    *,
    token: bytes | None = None,
    deadline_ms: int | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": req_id, "op": op}
    if token is not None:
        msg["token"] = token
    if args:
        msg["args"] = dict(args)
    if deadline_ms is not None:
        msg["deadline_ms"] = deadline_ms
    return msg


def ok_reply(
    req_id: object, epoch: str, result: Mapping[str, Any], *, warning: str | None = None
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "id": req_id,
        "epoch": epoch,
        "ok": True,
        "result": dict(result),
    }
    if warning is not None:
        msg["warning"] = warning
    return msg


def error_reply(req_id: object, epoch: str, error: MapiError) -> dict[str, Any]:
    return {
        "v": PROTOCOL_VERSION,
        "id": req_id,
        "epoch": epoch,
        "ok": False,
        "error": error.to_wire(),
    }


def notification(connection: int, event: str, session: str, **fields: Any) -> dict[str, Any]:
    """A private MAPI notification (docs/protocol.md 7.4): no `id`, sent on the request socket."""
    body: dict[str, Any] = {"connection": connection, "event": event, "session": session}
    body.update(fields)
    return {"v": PROTOCOL_VERSION, "notify": body}


def event(
    epoch: str, seq: int, event_type: str, *, prev: int | None, **fields: Any
) -> dict[str, Any]:
    """An event payload; `prev` is None only for heartbeats."""
    msg: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "epoch": epoch,
        "seq": seq,
        "ts": datetime.now(UTC),  # a msgpack timestamp (docs/protocol.md 2)
        "type": event_type,
    }
    if prev is not None:
        msg["prev"] = prev
    msg.update(fields)
    return msg


def encode_request_frames(payload: Mapping[str, Any]) -> list[bytes]:
    return [b"", pack(payload)]


def encode_event_frames(topic: str, payload: Mapping[str, Any]) -> list[bytes]:
    return [topic.encode("utf-8"), pack(payload)]


def decode_event_frames(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    """Split a two-frame event; raise ValueError on anything else."""
    if len(frames) != 2:
        raise ValueError(f"an event has 2 frames, got {len(frames)}")
    payload = unpack(frames[1])
    if not isinstance(payload, dict):
        raise ValueError("an event payload is a map")
    return frames[0].decode("utf-8", "replace"), payload
