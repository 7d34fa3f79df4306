"""The client side of remote access (docs/protocol.md 9): CURVE on a socket and why it failed.

A daemon refuses a key at the CURVE handshake through ZAP and then says nothing more, and
libzmq stops reconnecting after such a refusal. So that a refused client hears more than a
time-out, `HandshakeWatch` reads the socket's monitor events and names the likely cause.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from mapid.errors import MapidError
from mapid.wire.link import HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS

CURVE_FIELDS = ("server_key", "public_key", "secret_key")

KEY_HINT = (
    "if a daemon listens there, it may not allow this client's key (its public .key file "
    "must be in authorized_keys.d/ on the server, then mapictl reload there), or the server "
    "key is not the daemon's"
)
_WATCHED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
)


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def events_endpoint_for(request: str) -> str:
    """The events endpoint that goes with a TCP request endpoint: the next port
    (`tcp://host:5555` -> `tcp://host:5556`), the layout docs/remote.md recommends."""
    host, sep, port = request.rpartition(":")
    if not is_tcp(request) or not sep or not port.isdigit() or int(port) >= 65535:
        raise MapidError(f"cannot derive an events endpoint from {request!r}; give it explicitly")
    return f"{host}:{int(port) + 1}"


def apply_curve(sock: zmq.Socket[Any], endpoint: str, curve: Mapping[str, bytes] | None) -> None:
    """CURVE client keys and ZMTP heartbeats on `sock` before it connects to `endpoint`."""
    if curve:
        missing = [name for name in CURVE_FIELDS if not curve.get(name)]
        if missing:
            raise MapidError(
                f"curve= needs {', '.join(CURVE_FIELDS)} (missing {', '.join(missing)}); "
                "mapid.curve_keys.load_client_keys(SECRET_FILE, SERVER_KEY) makes it"
            )
        sock.curve_serverkey = curve["server_key"]
        sock.curve_publickey = curve["public_key"]
        sock.curve_secretkey = curve["secret_key"]
    elif is_tcp(endpoint):
        raise MapidError(
            f"{endpoint} is a TCP endpoint, which the daemon serves only with CURVE: pass "
            "curve=mapid.curve_keys.load_client_keys(SECRET_FILE, SERVER_KEY) "
            "(mapictl: --server-key and --client-key)"
        )
    if is_tcp(endpoint):
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.IPV6, 1)


class HandshakeWatch:
    """The fate of a CURVE socket's handshakes, from its monitor (no I/O until asked)."""

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        address = f"inproc://mapid-monitor-{secrets.token_hex(8)}"
        self._sock = sock
        sock.monitor(address, _WATCHED)
        # A plain socket on the same libzmq context, also for a zmq.asyncio socket.
        context: zmq.Context[Any] = zmq.Context.shadow(sock.context.underlying)
        self._monitor: zmq.Socket[Any] = context.socket(zmq.PAIR)
        self._monitor.setsockopt(zmq.LINGER, 0)
        self._monitor.connect(address)
        self.failure: str | None = None
        self.refused = False
        """The daemon's ZAP handler said no: final, libzmq does not try again."""

    def why(self) -> str | None:
        """Why the last handshake failed, or None when none failed (or one succeeded since)."""
        while self._monitor.poll(0, zmq.POLLIN):
            event = recv_monitor_message(self._monitor)
            kind, value = event["event"], event["value"]
            self.refused = kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.failure = None
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.failure = (
                    f"the daemon refused this client's CURVE key (ZAP status {value}): its "
                    "public .key file is not in authorized_keys.d/ on the server"
                )
            else:
                self.failure = (
                    "the CURVE handshake failed: the server key is not the daemon's, or the "
                    "endpoint does not speak CURVE"
                )
        return self.failure

    def is_refused(self) -> bool:
        """Whether the daemon refused this client's key (other failures may pass, such as a
        daemon restarting mid-handshake, so only this one ends a wait early)."""
        self.why()
        return self.refused

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._monitor.close(linger=0)
