"""`StatusMirror`: a live copy of the daemon's sessions and status tables (docs/protocol.md 7.3).

It follows the clone recipe: subscribe, wait for a heartbeat, snapshot, then apply events
in order, and snapshot again by itself on a gap, a new epoch or three seconds without a
heartbeat. `MirrorState` is the recipe's bookkeeping with no I/O, so it can be tested and
reused by other drivers; `StatusMirror` drives it over real sockets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq

from mapid.client import Client
from mapid.errors import MapidError
from mapid.remote import apply_curve, events_endpoint_for, is_tcp
from mapid.wire import envelope
from mapid.wire.codec import CodecError

HEARTBEAT_TIMEOUT = 3.0
FIRST_HEARTBEAT_WAIT = 1.0


class Resync(Exception):
    """The event stream can no longer be trusted; take a new snapshot."""


def _key(instance_key: object) -> bytes:
    return bytes(instance_key) if isinstance(instance_key, (bytes, bytearray)) else b""


@dataclass
class MirrorState:
    """The recipe's state for one subscription prefix, with no I/O."""

    prefix: str = ""
    epoch: str | None = None
    last_seq: int = 0
    topics: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[str, dict[bytes, dict[str, Any]]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def load_snapshot(self, parts: list[dict[str, Any]]) -> None:
        """Replace everything with the parts of one snapshot (same epoch and seq)."""
        first = parts[0]
        self.epoch = str(first["epoch"])
        self.last_seq = int(first["seq"])
        self.topics = {}
        self.sessions = {}
        self.tables = {}
        self.config = dict(first.get("config") or {})
        for part in parts:
            self.topics.update(part.get("topics") or {})
            for info in part.get("sessions") or []:
                self.sessions[info["session"]] = dict(info)
            for sid, rows in (part.get("status") or {}).items():
                self.tables[sid] = {_key(r.get("PR_INSTANCE_KEY")): dict(r) for r in rows}

    def apply(self, topic: str, event: dict[str, Any]) -> bool:
        """Apply one event; False when it is old news. Raise `Resync` on any break."""
        if event.get("epoch") != self.epoch:
            raise Resync(f"new epoch {event.get('epoch')!r}")
        seq = int(event.get("seq", 0))
        if topic == envelope.TOPIC_HEARTBEAT:
            if self.prefix == "" and seq > self.last_seq:
                raise Resync(f"heartbeat at seq {seq}, last event seen {self.last_seq}")
            return False
        if seq <= self.last_seq:
            return False
        if self.prefix == "":
            if seq != self.last_seq + 1:
                raise Resync(f"gap: expected seq {self.last_seq + 1}, got {seq}")
        else:
            expected = self.topics.get(topic, 0)
            if int(event.get("prev", -1)) != expected:
                raise Resync(f"gap on {topic}: prev {event.get('prev')}, expected {expected}")
        self.last_seq = seq
        self.topics[topic] = seq
        self._change(topic, event)
        return True

    def _change(self, topic: str, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if topic.startswith(envelope.SESSION_TOPIC_PREFIX):
            sid = topic[len(envelope.SESSION_TOPIC_PREFIX) :]
            if kind == "logoff":
                self.sessions.pop(sid, None)
                self.tables.pop(sid, None)
                self.topics.pop(envelope.session_topic(sid), None)
                self.topics.pop(envelope.status_topic(sid), None)
            elif isinstance(event.get("info"), dict):
                self.sessions[sid] = dict(event["info"])
                self.tables.setdefault(sid, {})
        elif topic.startswith(envelope.STATUS_TOPIC_PREFIX):
            sid = topic[len(envelope.STATUS_TOPIC_PREFIX) :]
            table = self.tables.setdefault(sid, {})
            if kind in ("TABLE_ROW_ADDED", "TABLE_ROW_MODIFIED"):
                table[_key(event.get("instance_key"))] = dict(event.get("row") or {})
            elif kind == "TABLE_ROW_DELETED":
                table.pop(_key(event.get("instance_key")), None)
            elif kind == "TABLE_RELOAD":
                self.tables[sid] = {
                    _key(r.get("PR_INSTANCE_KEY")): dict(r) for r in event.get("rows") or []
                }
        elif topic == envelope.TOPIC_DAEMON and "gen" in event:
            self.config["gen"] = event["gen"]

    def rows(self, session_id: str) -> list[dict[str, Any]]:
        """A session's status rows in the order of their PR_ROWID."""
        table = self.tables.get(session_id, {})
        return sorted(table.values(), key=lambda r: int(r.get("PR_ROWID", 0)))


Listener = Callable[[str, dict[str, Any]], None]


class StatusMirror:
    """A self-healing mirror of the daemon's status tables over real sockets.

    Call `poll()` (or iterate `updates()`) to keep it current; `sessions` and `tables` are
    then what the daemon has. Every snapshot it had to take is counted in `resyncs`.
    """

    def __init__(
        self,
        runtime: str | os.PathLike[str] | None = None,
        prefix: str = "",
        *,
        client: Client | None = None,
        events_endpoint: str | None = None,
        context: zmq.Context[Any] | None = None,
        on_event: Listener | None = None,
        endpoint: str | None = None,
        curve: Mapping[str, bytes] | None = None,
    ) -> None:
        """A remote daemon: `endpoint` (its TCP request endpoint) and `curve` (the
        `mapid.curve_keys.load_client_keys` mapping); `events_endpoint` defaults to the
        request port + 1 there. A `client` given brings its own endpoint and keys."""
        self.client = client or Client(runtime, timeout=5.0, endpoint=endpoint, curve=curve)
        curve = curve if curve is not None else self.client.curve
        info = self.client.info
        endpoint = events_endpoint or (info.events if info else None)
        if endpoint is None and is_tcp(self.client.endpoint):
            endpoint = events_endpoint_for(self.client.endpoint)
        if endpoint is None:
            raise MapidError("no events endpoint: no connection file and none given")
        self.state = MirrorState(prefix=prefix)
        self.resyncs = 0
        self.synced = False
        self.last_error: str | None = None
        self.on_event = on_event
        self._ctx = context or zmq.Context.instance()
        self._sub: zmq.Socket[Any] = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        apply_curve(self._sub, endpoint, curve)
        self._sub.connect(endpoint)
        self._sub.setsockopt_string(zmq.SUBSCRIBE, prefix)
        if prefix != "":
            self._sub.setsockopt_string(zmq.SUBSCRIBE, envelope.TOPIC_HEARTBEAT)
        self._last_hb = 0.0

    @property
    def sessions(self) -> dict[str, dict[str, Any]]:
        return self.state.sessions

    @property
    def tables(self) -> dict[str, dict[bytes, dict[str, Any]]]:
        return self.state.tables

    def close(self) -> None:
        self._sub.close(linger=0)

    def __enter__(self) -> StatusMirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout: float = FIRST_HEARTBEAT_WAIT) -> None:
        """Steps 1 to 4: wait for a heartbeat (at most `timeout` s), then snapshot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self._recv(max(1, int(1000 * (deadline - time.monotonic()))))
            if got is not None and got[0] == envelope.TOPIC_HEARTBEAT:
                self._last_hb = time.monotonic()
                break
        self._resync()

    def _resync(self) -> None:
        try:
            parts = [dict(self.client.daemon_snapshot(prefix=self.state.prefix))]
            while parts[-1].get("next"):
                parts.append(dict(self.client.daemon_snapshot(cursor=parts[-1]["next"])))
        except MapidError as exc:
            self.synced = False
            self.last_error = str(exc)
            return
        self.state.load_snapshot(parts)
        self.resyncs += 1
        self.synced = True
        self.last_error = None
        self._last_hb = time.monotonic()

    def _recv(self, timeout_ms: int) -> tuple[str, dict[str, Any]] | None:
        if not self._sub.poll(timeout_ms, zmq.POLLIN):
            return None
        frames = self._sub.recv_multipart()
        try:
            return envelope.decode_event_frames(frames)
        except (ValueError, CodecError):
            return None

    def poll(self, timeout: float = 0.1) -> int:
        """Read the events that arrive within `timeout` s; return how many changed the mirror."""
        if not self.synced:
            self._resync()
        changed = 0
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            got = self._recv(max(0, int(1000 * remaining)))
            if got is None:
                break
            topic, event = got
            if topic == envelope.TOPIC_HEARTBEAT:
                self._last_hb = time.monotonic()
            if not self.synced:
                continue
            try:
                if self.state.apply(topic, event):
                    changed += 1
                    if self.on_event is not None:
                        self.on_event(topic, event)
            except Resync as exc:
                self.last_error = str(exc)
                self._resync()
            if time.monotonic() >= deadline:
                break
        # A backlog still queued may hold heartbeats: silence counts only once caught up.
        caught_up = not self._sub.poll(0, zmq.POLLIN)
        if caught_up and time.monotonic() - self._last_hb > HEARTBEAT_TIMEOUT:
            self.last_error = f"no heartbeat for {HEARTBEAT_TIMEOUT:g} s"
            self._resync()
        return changed

    def updates(self, interval: float = 0.2) -> Iterator[int]:
        """Poll forever, yielding after each round with the number of changes."""
        while True:
            yield self.poll(interval)
