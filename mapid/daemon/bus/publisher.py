"""The one publisher every public event goes through (docs/protocol.md 7.1, docs/design.md 6).

It stamps `epoch` and one `seq` across all topics, remembers each topic's last `seq` (for
`prev` and for snapshots), sends a heartbeat every second and whenever a new subscription
arrives, and never blocks: the XPUB socket's high-water mark drops events for a slow
subscriber, who sees the gap and re-snapshots.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq

from mapid.wire import envelope
from mapid.wire.link import MORE as _MORE
from mapid.wire.link import NOBLOCK as _NOBLOCK
from mapid.wire.link import readable

log = logging.getLogger("mapid.publisher")

HEARTBEAT_INTERVAL = 1.0


class Publisher:
    """A plain XPUB socket, read from its descriptor (as the request server reads its
    ROUTER): zmq.asyncio's future and scheduled events check per send were most of the
    cost of an event, and a logon publishes a dozen (bench/RESULTS.md)."""

    def __init__(self, sock: zmq.Socket[bytes] | None, epoch: str) -> None:
        self.sock = sock
        self.epoch = epoch
        self.seq = 0
        self.topics: dict[str, int] = {}
        self.published = 0
        self.dropped = 0
        """Events (and heartbeats) the socket refused; a subscriber's own losses at its
        high-water mark libzmq drops silently (it sees a gap in seq)."""
        self.heartbeat_fields: Callable[[], dict[str, Any]] = dict
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._read_pending = False

    def publish(self, topic: str, event_type: str, **fields: Any) -> int:
        """Publish one event now; returns its seq. Call only from the daemon's loop."""
        self.seq += 1
        prev = self.topics.get(topic, 0)
        self.topics[topic] = self.seq
        payload = envelope.event(self.epoch, self.seq, event_type, prev=prev, **fields)
        self.published += 1
        self._send(topic, payload)
        for listener in self.listeners:
            listener(topic, payload)
        return self.seq

    def forget_topics(self, *topics: str) -> None:
        """A session's topics are forgotten when it ends (docs/protocol.md 6.1 snapshot)."""
        for topic in topics:
            self.topics.pop(topic, None)

    def heartbeat(self) -> None:
        payload = envelope.event(
            self.epoch, self.seq, "heartbeat", prev=None, **self.heartbeat_fields()
        )
        self._send(envelope.TOPIC_HEARTBEAT, payload)

    def _send(self, topic: str, payload: dict[str, Any]) -> None:
        sock = self.sock
        if sock is None:
            return
        frames = envelope.encode_event_frames(topic, payload)
        try:
            # XPUB never blocks: at a subscriber's high-water mark libzmq drops for it.
            for frame in frames[:-1]:
                sock.send(frame, _MORE)
            sock.send(frames[-1], _NOBLOCK)
        except zmq.ZMQError as exc:  # closed socket at shutdown, or EAGAIN
            self.dropped += 1
            log.debug("event on %s not sent: %s", topic, exc)
            return
        # A send may take in the descriptor's signal of a subscription (link.readable).
        if not self._read_pending and self._loop is not None and readable(sock):
            self._read_pending = True
            self._loop.call_soon(self._read_subscriptions)

    def _read_subscriptions(self) -> None:
        """Every (un)subscription waiting: a new one gets a heartbeat at once, so that a
        subscriber knows it is connected (XPUB_VERBOSE: each subscribe is seen)."""
        self._read_pending = False
        sock = self.sock
        if sock is None:
            return
        beat = False
        try:
            while readable(sock):
                msg = sock.recv(_NOBLOCK)
                if msg[:1] == b"\x01":
                    beat = True
        except zmq.ZMQError as exc:  # closed at shutdown
            log.debug("events socket: %s", exc)
            return
        if beat:
            self.heartbeat()

    async def run(self) -> None:
        """Heartbeat every second, and at once for each new subscription (XPUB_VERBOSE)."""
        sock = self.sock
        assert sock is not None
        loop = asyncio.get_running_loop()
        fd = int(sock.getsockopt(zmq.FD))
        self._loop = loop
        loop.add_reader(fd, self._read_subscriptions)
        try:
            self._read_subscriptions()
            while True:  # until cancelled
                self.heartbeat()
                await asyncio.sleep(HEARTBEAT_INTERVAL)
        finally:
            loop.remove_reader(fd)
            self._loop = None
