"""Socket settings the client and the daemon share, so both ends of a link agree.

The zmq flags are plain ints, looked up once: the request paths send and poll millions of
times, and an enum's attribute lookup shows in a profile.
"""

from __future__ import annotations

import zmq

NOBLOCK = int(zmq.NOBLOCK)
"""Send flag of a message's last frame."""
MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
"""Send flag of every frame but the last."""
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)
RCVMORE = int(zmq.RCVMORE)


def readable(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message waits to be read (ZMQ_EVENTS), False on a closed socket.

    A socket's descriptor is edge-triggered and a send may take in the signal of a message
    that arrived meanwhile: whoever reads a socket from its descriptor asks this after each
    send, and reads at once when it says so."""
    try:
        return bool(int(sock.getsockopt(EVENTS)) & POLLIN)
    except zmq.ZMQError:
        return False


HEARTBEAT_IVL_MS = 5_000
"""ZMTP heartbeats on remote (TCP, CURVE) links, both ways (docs/protocol.md 9): a peer that
stops answering is noticed within HEARTBEAT_TIMEOUT_MS, not at the next TCP time-out."""
HEARTBEAT_TIMEOUT_MS = 15_000
