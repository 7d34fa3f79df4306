"""`mapictl events`: follow the daemon's public event stream (docs/protocol.md 7.1).

It is a plain SUB subscriber on the connection file's `events` endpoint. It also listens to
heartbeats, whether it prints them or not, to prove the daemon is there at the start (so a
dead daemon gives exit code 4 or 5, not a silent wait) and to notice, on stderr, a restart,
lost events, or a daemon that went quiet.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq
from rich.console import Console
from rich.text import Text

from mapid.cli.output import console, decode_row, emit_json, jsonable
from mapid.client import probe
from mapid.constants import LogonFlags, flag_names
from mapid.errors import DaemonUnreachable, RequestTimedOut
from mapid.paths import client_runtime_dir, read_connection_file
from mapid.remote import KEY_HINT, HandshakeWatch, apply_curve
from mapid.wire import envelope
from mapid.wire.codec import CodecError

QUIET_AFTER = 3.0
"""Seconds without a heartbeat before saying the daemon went quiet (docs/protocol.md 7.3)."""


def notice(message: str) -> None:
    """A remark about the stream itself; stderr, so stdout stays one event per line."""
    print(f"mapictl: {message}", file=sys.stderr, flush=True)


class EventPrinter:
    """Prints events as JSON lines or as one readable line each."""

    def __init__(self, json_output: bool, out: Console | None = None) -> None:
        self.json_output = json_output
        self.out = out if out is not None else console()

    def print(self, topic: str, event: Mapping[str, Any]) -> None:
        if self.json_output:
            emit_json({"topic": topic, **event})
        else:
            self.out.print(format_event(topic, event), soft_wrap=True)


def format_event(topic: str, event: Mapping[str, Any]) -> Text:
    """`12:00:01.123  #5  session.ab12  logon  profile alpha, members 1, state active`."""
    line = Text()
    ts = event.get("ts")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        ts = dt.datetime.fromtimestamp(ts, dt.UTC)
    if isinstance(ts, dt.datetime):
        stamp = ts.astimezone().strftime("%H:%M:%S.%f")[:-3]
    else:
        stamp = "--:--:--.---"
    line.append(stamp, style="dim")
    line.append(f"  #{event.get('seq', '?')}  ")
    line.append(topic, style="cyan")
    kind = str(event.get("type", "?"))
    line.append("  ")
    line.append(kind, style="bold")
    summary = _summary(topic, event)
    if summary:
        line.append("  " + summary)
    return line


def _summary(topic: str, event: Mapping[str, Any]) -> str:
    kind = event.get("type")
    if topic == envelope.TOPIC_HEARTBEAT:
        return f"sessions {event.get('sessions')}, config gen {event.get('config_gen')}"
    if topic == envelope.TOPIC_DAEMON:
        if kind in ("reloaded", "reload_failed"):
            parts = [f"gen {event.get('gen')}"]
            for what in ("added", "removed", "changed"):
                if event.get(what):
                    parts.append(f"{what} {', '.join(map(str, event[what]))}")
            for err in event.get("errors") or []:
                if isinstance(err, Mapping):
                    parts.append(f"error {err.get('file')}: {err.get('message')}")
            return "; ".join(parts)
        return ", ".join(f"{k} {event[k]}" for k in ("version", "pid") if k in event)
    if topic.startswith(envelope.SESSION_TOPIC_PREFIX):
        info = event.get("info") if isinstance(event.get("info"), Mapping) else {}
        assert isinstance(info, Mapping)
        parts = [f"profile {info.get('profile')}", f"members {info.get('members')}"]
        parts.append(f"state {info.get('state')}")
        if info.get("shared"):
            parts.append("shared")
        flags = info.get("flags")
        if isinstance(flags, int) and flags:
            parts.append("flags " + "|".join(flag_names(LogonFlags, flags)))
        if event.get("reason"):
            parts.append(f"reason {event['reason']}")
        return ", ".join(parts)
    if topic.startswith(envelope.STATUS_TOPIC_PREFIX):
        if kind == "TABLE_RELOAD":
            return f"{len(event.get('rows') or [])} rows"
        key = event.get("instance_key")
        key_text = bytes(key).hex() if isinstance(key, (bytes, bytearray)) else str(key)
        row = event.get("row")
        if not isinstance(row, Mapping):
            return f"row {key_text}"
        decoded = decode_row(row)
        parts = [f"row {decoded.get('PR_ROWID', key_text)}", f"{decoded.get('PR_DISPLAY_NAME')}"]
        parts.append(str(decoded.get("PR_RESOURCE_TYPE")))
        parts.append("|".join(decoded.get("PR_STATUS_CODE") or []) or "-")
        if decoded.get("PR_STATUS_STRING"):
            parts.append(repr(str(decoded["PR_STATUS_STRING"])))
        return " ".join(parts)
    return ", ".join(
        f"{k} {v}"
        for k, v in jsonable(event).items()
        if k not in ("v", "epoch", "seq", "ts", "type", "prev")
    )


class StreamCheck:
    """Says on stderr when the daemon restarted or events were lost (the recipe's checks of
    docs/protocol.md 7.3, used here only to inform: `events` prints what arrives)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.epoch: str | None = None
        self.last_seq = 0
        self.topics: dict[str, int] = {}

    def check(self, topic: str, event: Mapping[str, Any]) -> None:
        epoch = event.get("epoch")
        seq = event.get("seq")
        if not isinstance(seq, int) or not isinstance(epoch, str):
            return
        if epoch != self.epoch:
            if self.epoch is not None:
                notice(f"the daemon restarted (epoch {epoch})")
            self.epoch, self.last_seq, self.topics = epoch, seq, {}
            if topic != envelope.TOPIC_HEARTBEAT:
                self.topics[topic] = seq
            return
        if topic == envelope.TOPIC_HEARTBEAT:
            if self.prefix == "" and seq > self.last_seq:
                notice(f"missed events {self.last_seq + 1}..{seq}")
                self.last_seq = seq
            return
        if self.prefix == "" and seq > self.last_seq + 1:
            notice(f"missed events {self.last_seq + 1}..{seq - 1}")
        prev = event.get("prev")
        if self.prefix != "" and topic in self.topics and prev != self.topics[topic]:
            notice(f"missed events on {topic} (prev {prev}, last seen {self.topics[topic]})")
        self.last_seq = max(self.last_seq, seq)
        self.topics[topic] = seq


def follow(
    runtime: Path | None,
    prefix: str,
    *,
    count: int | None,
    heartbeats: bool,
    json_output: bool,
    timeout: float,
    events_endpoint: str | None = None,
    curve: Mapping[str, bytes] | None = None,
) -> None:
    """Print events under `prefix` until `count` of them were printed (or forever); from
    `events_endpoint` with `curve` keys (a remote daemon) or the connection file's."""
    directory = runtime if runtime is not None else client_runtime_dir()
    info = read_connection_file(directory) if events_endpoint is None else None
    if info is None and events_endpoint is None:
        raise DaemonUnreachable(
            f"no daemon is running: no connection file {directory / 'mapid.json'}"
        )
    endpoint = events_endpoint if events_endpoint is not None else info.events if info else ""
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sub: zmq.Socket[Any] = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    watch: HandshakeWatch | None = None
    try:
        apply_curve(sub, endpoint, curve)
        watch = HandshakeWatch(sub) if curve else None
        sub.connect(endpoint)
        sub.setsockopt_string(zmq.SUBSCRIBE, prefix)
        if not envelope.TOPIC_HEARTBEAT.startswith(prefix):
            sub.setsockopt_string(zmq.SUBSCRIBE, envelope.TOPIC_HEARTBEAT)
        printer = EventPrinter(json_output)
        check = StreamCheck(prefix)
        printed = 0
        # The daemon sends a heartbeat as soon as it reads a subscription: wait for any sign
        # of life for --timeout, so "no daemon" and "a daemon that hangs" both end the wait.
        if not sub.poll(int(1000 * timeout), zmq.POLLIN):
            why = probe(endpoint, info) or (watch.why() if watch is not None else None)
            if why is not None:
                raise DaemonUnreachable(why, endpoint=endpoint)
            hint = f": {KEY_HINT}" if watch is not None else ""
            raise RequestTimedOut(
                f"no event or heartbeat from {endpoint} within {timeout:g} s{hint}",
                op="events",
                timeout=timeout,
            )
        notice(f"following events at {endpoint} (prefix {prefix!r}); Ctrl-C stops")
        last_heard = time.monotonic()
        quiet = False
        while count is None or printed < count:
            if not sub.poll(500, zmq.POLLIN):
                if not quiet and time.monotonic() - last_heard > QUIET_AFTER:
                    notice(f"no heartbeat for {QUIET_AFTER:g} s: is the daemon still running?")
                    quiet = True
                continue
            try:
                topic, event = envelope.decode_event_frames(sub.recv_multipart())
            except (ValueError, CodecError):
                continue
            last_heard = time.monotonic()
            if quiet:
                notice("the daemon speaks again")
                quiet = False
            check.check(topic, event)
            if topic == envelope.TOPIC_HEARTBEAT:
                if not heartbeats:
                    continue
            elif not topic.startswith(prefix):
                continue
            printer.print(topic, event)
            printed += 1
    finally:
        if watch is not None:
            watch.close()
        sub.close(linger=0)
