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
import zmq.asyncio

from mapid.wire import envelope

log = logging.getLogger("mapid.publisher")

HEARTBEAT_INTERVAL = 1.0


class Publisher:
    def __init__(self, sock: zmq.asyncio.Socket | None, epoch: str) -> None:
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
        if self.sock is None:
            return
        try:
            fut = self.sock.send_multipart(
                envelope.encode_event_frames(topic, payload), flags=zmq.NOBLOCK
            )
        except zmq.ZMQError as exc:  # closed socket at shutdown, or EAGAIN
            self.dropped += 1
            log.debug("event on %s not sent: %s", topic, exc)
            return
        if isinstance(fut, asyncio.Future):  # zmq.asyncio: a refused send (EAGAIN) is
            if fut.done():  # not raised but set on the future, done at once
                self._sent(fut)
            else:
                fut.add_done_callback(self._sent)

    def _sent(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self.dropped += 1

    async def run(self) -> None:
        """Heartbeat every second, and at once for each new subscription (XPUB_VERBOSE)."""
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            timeout = max(0.0, next_beat - loop.time())
            try:
                msg = await asyncio.wait_for(self.sock.recv(), timeout)
            except TimeoutError:
                self.heartbeat()
                next_beat = loop.time() + HEARTBEAT_INTERVAL
                continue
            if msg[:1] == b"\x01":
                self.heartbeat()
