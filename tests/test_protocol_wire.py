"""docs/protocol.md sections 2, 3 and 4, spoken the way a stranger would speak them.

Every request here is a MessagePack map packed by hand and sent over a plain pyzmq DEALER
(or REQ) socket connected to the `request` endpoint of the connection file; nothing of the
mapid client library is used to talk to the daemon, so what passes here is what a client
written from docs/protocol.md alone will see.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from mapid.providers.base import MapiObject, MessageService, StoreProvider
from mapid.wire import codec

from conftest import DaemonFactory, DaemonProc, prepare_daemon, standard_profile

MiB = 1024 * 1024

# The unsigned 32-bit values of docs/mapi.md 9, written out as a client
# author would copy them.
HRESULT = {
    "MAPI_E_CALL_FAILED": 0x80004005,
    "MAPI_E_INVALID_PARAMETER": 0x80070057,
    "MAPI_E_NO_SUPPORT": 0x80040102,
    "MAPI_E_UNKNOWN_FLAGS": 0x80040106,
    "MAPI_E_INVALID_OBJECT": 0x80040108,
    "MAPI_E_BUSY": 0x8004010B,
    "MAPI_E_NOT_ENOUGH_RESOURCES": 0x8004010E,
    "MAPI_E_NOT_FOUND": 0x8004010F,
    "MAPI_E_VERSION": 0x80040110,
    "MAPI_E_END_OF_SESSION": 0x80040200,
    "MAPI_E_TIMEOUT": 0x80040401,
}
MAPI_W_NO_SERVICE = "MAPI_W_NO_SERVICE"
MAPI_NEW_SESSION = 0x00000002
MAPI_USE_DEFAULT = 0x00000040
NEW_DEFAULT = ["MAPI_NEW_SESSION", "MAPI_USE_DEFAULT"]
MAPI_AB = 33  # PR_RESOURCE_TYPE of the integrated address book's status row


def pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True, datetime=True)
    return data


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def connection_file(daemon: DaemonProc) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((daemon.runtime / "mapid.json").read_text())
    return data


class Wire:
    """One socket of a hand-written client: DEALER by default, or REQ."""

    def __init__(
        self, daemon: DaemonProc, *, routing_id: bytes | None = None, kind: int = zmq.DEALER
    ) -> None:
        self.kind = kind
        self.sock: zmq.Socket[Any] = zmq.Context.instance().socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        self.sock.connect(connection_file(daemon)["request"])
        self.ids = itertools.count(1)
        self.notifications: list[dict[str, Any]] = []

    def close(self) -> None:
        self.sock.close(linger=0)

    def send_raw(self, data: bytes) -> None:
        if self.kind == zmq.REQ:
            self.sock.send(data)
        else:
            self.sock.send_multipart([b"", data])

    def send(self, payload: object) -> None:
        self.send_raw(pack(payload))

    def recv(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next reply (notifications are put aside), or None after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                return None
            if self.kind == zmq.REQ:
                data = self.sock.recv()
            else:
                frames = self.sock.recv_multipart()
                assert len(frames) == 2, f"a reply is two frames, got {len(frames)}"
                assert frames[0] == b"", "the first frame of a reply is the empty delimiter"
                data = frames[1]
            payload = unpack(data)
            assert isinstance(payload, dict), payload
            if "notify" in payload and "id" not in payload:
                self.notifications.append(payload)
                continue
            return payload

    def request(self, op: str, args: dict[str, Any] | None = None, **extra: Any) -> Any:
        """Send one request; returns its id."""
        payload: dict[str, Any] = {"v": 1, "id": f"w-{next(self.ids)}", "op": op}
        if args is not None:
            payload["args"] = args
        payload.update(extra)
        self.send(payload)
        return payload["id"]

    def call(
        self, op: str, args: dict[str, Any] | None = None, *, timeout: float = 10.0, **extra: Any
    ) -> dict[str, Any]:
        req_id = self.request(op, args, **extra)
        while True:
            reply = self.recv(timeout)
            assert reply is not None, f"no reply to {op} within {timeout} s"
            if reply.get("id") == req_id:
                return reply

    def ok(self, op: str, args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        reply = self.call(op, args, **extra)
        assert reply["ok"] is True, reply
        result: dict[str, Any] = reply["result"]
        return result

    def error(
        self, code: str, op: str, args: dict[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        reply = self.call(op, args, **extra)
        check_error_reply(reply, code)
        error: dict[str, Any] = reply["error"]
        return error

    def logon(self, profile: str | None = "alpha", **args: Any) -> dict[str, Any]:
        args.setdefault("flags", ["MAPI_NEW_SESSION"])
        return self.ok("session.logon", {"profile": profile, **args})

    def stats(self) -> dict[str, Any]:
        return self.ok("daemon.stats")


def check_error_reply(reply: dict[str, Any], code: str) -> None:
    assert reply["ok"] is False, reply
    assert set(reply) == {"v", "id", "epoch", "ok", "error"}, reply
    error = reply["error"]
    assert set(error) == {"code", "hresult", "message", "retryable", "details"}, error
    assert error["code"] == code, error
    assert error["hresult"] == HRESULT[code], error
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    assert isinstance(error["retryable"], bool)
    assert isinstance(error["details"], dict)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    """One daemon (profiles alpha and beta) for the tests that need no special configuration;
    they only ever compare counters before and after, so they do not disturb each other."""
    proc = prepare_daemon(tmp_path_factory.mktemp("wire")).start()
    yield proc
    proc.close()
    shutil.rmtree(proc.runtime.parent, ignore_errors=True)


@pytest.fixture
def wire(daemon: DaemonProc) -> Iterator[Wire]:
    sock = Wire(daemon)
    yield sock
    sock.close()


def nested(depth: int) -> Any:
    """`depth` levels of containers: a list inside a list ... (1 = one empty list)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


# -- section 2: encoding -------------------------------------------------------------------


def test_the_codec_counts_depth_in_any_payload_that_could_be_deep() -> None:
    """unpack walks the decoded payload only when its bytes hold more container marks than
    MAX_DEPTH; text whose UTF-8 is full of such bytes still decodes, and a deep payload of
    maps, of arrays or of both is always refused."""
    euros = "€" * 200  # e2 82 ac: each 0x82 looks like a fixmap mark
    assert codec.unpack(codec.pack({"v": 1, "args": {"PR_BODY": euros}})) == {
        "v": 1,
        "args": {"PR_BODY": euros},
    }
    within = nested(codec.MAX_DEPTH)
    assert codec.unpack(codec.pack(within)) == within
    maps: Any = {}
    for _ in range(codec.MAX_DEPTH):
        maps = {"k": maps}
    mixed: Any = {"text": euros}
    for i in range(codec.MAX_DEPTH):
        mixed = [mixed] if i % 2 else {"k": mixed, "text": euros}
    for deep in (nested(codec.MAX_DEPTH + 1), maps, mixed):
        with pytest.raises(codec.CodecError, match="nesting deeper than 32"):
            codec.unpack(codec.pack(deep))


def test_reply_is_two_frames_with_the_documented_shape(daemon: DaemonProc, wire: Wire) -> None:
    wire.send({"v": 1, "id": "shape", "op": "daemon.hello"})
    frames = wire.sock.recv_multipart()
    assert len(frames) == 2 and frames[0] == b""
    reply = unpack(frames[1])
    assert set(reply) == {"v", "id", "epoch", "ok", "result"}
    assert reply["v"] == 1 and reply["id"] == "shape" and reply["ok"] is True
    assert isinstance(reply["result"], dict)
    # The reply's epoch is the daemon's: the connection file's and daemon.hello's.
    assert reply["epoch"] == connection_file(daemon)["epoch"] == reply["result"]["epoch"]
    assert isinstance(reply["epoch"], str)


def test_req_socket_adds_the_delimiter_itself(daemon: DaemonProc) -> None:
    req = Wire(daemon, kind=zmq.REQ)
    try:
        req.send({"v": 1, "id": 7, "op": "daemon.ping"})
        reply = req.recv()
        assert reply is not None
        assert reply == {"v": 1, "id": 7, "epoch": reply["epoch"], "ok": True, "result": {}}
    finally:
        req.close()


def test_unknown_keys_are_ignored(wire: Wire) -> None:
    result = wire.ok("daemon.ping", {"no_such_arg": [1, 2]}, extra_key={"x": b"y"}, z=None)
    assert result == {}
    logon = wire.logon(client={"name": "stranger", "pid": 1, "colour": "blue"}, future=1)
    assert isinstance(logon["token"], bytes)


def test_binary_values_are_bin_and_times_are_timestamps(wire: Wire) -> None:
    logon = wire.logon()
    assert isinstance(logon["token"], bytes)
    hello = wire.ok("daemon.hello")
    assert isinstance(hello["started"], msgpack.Timestamp)
    sessions = wire.ok("daemon.sessions")["sessions"]
    assert sessions and all(isinstance(s["created"], msgpack.Timestamp) for s in sessions)
    rows = wire.ok("session.status_table", token=logon["token"])["rows"]
    assert rows and all(isinstance(r["PR_ENTRYID"], bytes) for r in rows)
    assert all(isinstance(r["PR_INSTANCE_KEY"], bytes) for r in rows)
    # A token sent as str is not the bin the daemon handed out.
    wire.error(
        "MAPI_E_END_OF_SESSION", "session.status_table", token=logon["token"].decode("latin-1")
    )


LIMIT_BREAKERS: dict[str, Any] = {
    "depth 33": nested(31),  # top map + args map + 31 lists = 33 levels
    "str over 1 MiB": "x" * (MiB + 1),
    "bin over 1 MiB": b"x" * (MiB + 1),
    "array over 100 000": [0] * 100_001,
    "map over 100 000": {f"k{i}": 0 for i in range(100_001)},
}


@pytest.mark.parametrize("where", ["id first", "id last"])
@pytest.mark.parametrize("name", list(LIMIT_BREAKERS))
def test_a_broken_limit_with_a_readable_id_is_invalid_parameter(
    wire: Wire, name: str, where: str
) -> None:
    bad = LIMIT_BREAKERS[name]
    payload: dict[str, Any] = {"id": f"limit-{name}"} if where == "id first" else {}
    payload.update({"v": 1, "op": "daemon.ping", "args": {"x": bad}})
    payload.setdefault("id", f"limit-{name}")
    data = pack(payload)
    assert len(data) <= 4 * MiB
    before = wire.stats()
    wire.send_raw(data)
    reply = wire.recv()
    assert reply is not None, f"{name}: no answer although the id is readable"
    assert reply["id"] == f"limit-{name}"
    check_error_reply(reply, "MAPI_E_INVALID_PARAMETER")
    after = wire.stats()
    assert after["malformed"] == before["malformed"]
    assert after["errors"] >= before["errors"] + 1


LIMIT_BOUNDARIES: dict[str, Any] = {
    "depth 32": nested(30),
    "str of 1 MiB": "x" * MiB,
    "bin of 1 MiB": b"x" * MiB,
    "array of 100 000": [0] * 100_000,
    "map of 100 000": {f"k{i}": 0 for i in range(100_000)},
}


@pytest.mark.parametrize(
    "data",
    [
        pack({"id": "cut", "v": 1, "op": "daemon.ping", "args": {"x": "y"}})[:-2],
        pack({"id": "cut", "v": 1, "op": "daemon.ping"}) + b"\x00",
        pack({"v": 1, "op": "daemon.ping", "id": "cut"}) + b"\xc1",
    ],
    ids=["truncated after the id", "trailing byte", "trailing garbage"],
)
def test_broken_msgpack_with_a_readable_id_is_invalid_parameter(wire: Wire, data: bytes) -> None:
    wire.send_raw(data)
    reply = wire.recv()
    assert reply is not None and reply["id"] == "cut"
    check_error_reply(reply, "MAPI_E_INVALID_PARAMETER")


@pytest.mark.parametrize("name", list(LIMIT_BOUNDARIES))
def test_values_at_the_limits_are_accepted(wire: Wire, name: str) -> None:
    assert wire.ok("daemon.ping", {"x": LIMIT_BOUNDARIES[name]}) == {}


# Payloads whose `id` cannot be read: dropped without an answer, counted as malformed.
UNREADABLE: dict[str, list[bytes]] = {
    "not msgpack": [b"", b"\xc1"],
    "truncated inside the id": [b"", pack({"v": 1, "op": "daemon.ping", "id": "abcdef"})[:-3]],
    "a list": [b"", pack([1, "id", "daemon.ping"])],
    "an int": [b"", pack(42)],
    "a str": [b"", pack("daemon.ping")],
    "nil": [b"", pack(None)],
    "map without id": [b"", pack({"v": 1, "op": "daemon.ping"})],
    "id nil": [b"", pack({"v": 1, "id": None, "op": "daemon.ping"})],
    "id float": [b"", pack({"v": 1, "id": 1.5, "op": "daemon.ping"})],
    "id bool": [b"", pack({"v": 1, "id": True, "op": "daemon.ping"})],
    "id list": [b"", pack({"v": 1, "id": [1], "op": "daemon.ping"})],
    "id map": [b"", pack({"v": 1, "id": {"a": 1}, "op": "daemon.ping"})],
    "id bin of 65 bytes": [b"", pack({"v": 1, "id": b"i" * 65, "op": "daemon.ping"})],
    "id str of 65 bytes": [b"", pack({"v": 1, "id": "i" * 65, "op": "daemon.ping"})],
    "id str of 66 UTF-8 bytes": [b"", pack({"v": 1, "id": "é" * 33, "op": "daemon.ping"})],
    "top-level array over 100 000": [b"", pack([0] * 100_001)],
    "too deep without id": [b"", pack({"v": 1, "x": nested(40)})],
    "one frame, no delimiter": [pack({"v": 1, "id": 1, "op": "daemon.ping"})],
    "delimiter not empty": [b"x", pack({"v": 1, "id": 1, "op": "daemon.ping"})],
    "three frames": [b"", pack({"v": 1, "id": 1, "op": "daemon.ping"}), b""],
}


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_a_payload_without_a_usable_id_is_dropped_and_counted(wire: Wire, name: str) -> None:
    before = wire.stats()
    wire.sock.send_multipart(UNREADABLE[name])
    # The daemon reads one client's frames in order: anything it answered would come first.
    stats_id = wire.request("daemon.stats")
    reply = wire.recv()
    assert reply is not None and reply["id"] == stats_id, f"{name} was answered: {reply}"
    after = reply["result"]
    assert after["malformed"] == before["malformed"] + 1
    assert after["requests"] == before["requests"] + 2  # the bad one and this daemon.stats
    assert wire.ok("daemon.ping") == {}


def test_an_oversized_payload_drops_that_connection_only(daemon: DaemonProc) -> None:
    big = Wire(daemon, routing_id=b"oversized-client")
    other = Wire(daemon)
    monitor = big.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        logon = {
            "v": 1,
            "id": "before-the-drop",
            "op": "session.logon",
            "args": {"profile": "alpha", "flags": ["MAPI_NEW_SESSION"]},
        }
        big.send(logon)
        logged_on = big.recv()
        assert logged_on is not None and logged_on["ok"] is True
        token = logged_on["result"]["token"]
        big.ok("session.advise", {"event_mask": ["fnevExtended"]}, token=token)
        big.send({"v": 1, "id": "big", "op": "daemon.ping", "args": {"x": b"\0" * (4 * MiB)}})
        assert monitor.poll(5000, zmq.POLLIN), "ZeroMQ did not drop the connection"
        event = recv_monitor_message(monitor)
        assert event["event"] == zmq.EVENT_DISCONNECTED
        # The daemon keeps serving everyone else, and never answered the oversized payload.
        assert other.ok("daemon.ping") == {}
        assert daemon.proc is not None and daemon.proc.poll() is None
        # The dropped socket reconnects by itself (same routing id) and is served again.
        reply = big.call("daemon.ping", timeout=10.0)
        assert reply["ok"] is True
        # With ZMQ_ROUTING_ID set, its reply cache and its advises survived the reconnect.
        big.send(logon)
        assert big.recv() == logged_on
        assert big.ok("session.logoff", token=token) == {}
        deadline = time.monotonic() + 3
        while not big.notifications and time.monotonic() < deadline:
            big.recv(0.1)
        assert [n["notify"]["event"] for n in big.notifications] == ["fnevExtended"]
    finally:
        big.sock.disable_monitor()
        monitor.close(linger=0)
        big.close()
        other.close()


# -- section 3: requests and replies -------------------------------------------------------


@pytest.mark.parametrize(
    "req_id",
    [
        "text-id",
        "",
        "i" * 64,
        "é" * 32,  # 64 bytes of UTF-8
        0,
        -1,
        2**64 - 1,
        -(2**63),
        b"",
        b"\x00\xff" * 32,  # bin of 64 bytes
    ],
    ids=repr,
)
def test_ids_of_every_allowed_type_are_echoed(wire: Wire, req_id: object) -> None:
    wire.send({"v": 1, "id": req_id, "op": "daemon.ping"})
    reply = wire.recv()
    assert reply is not None and reply["ok"] is True
    assert reply["id"] == req_id and type(reply["id"]) is type(req_id)


@pytest.fixture(scope="module")
def session_token(daemon: DaemonProc) -> Iterator[bytes]:
    """A live session token, so that the checks after `token` are reached."""
    wire = Wire(daemon)
    yield wire.logon()["token"]
    wire.close()


# Each case breaks one check and every later one too, so the code shows which ran first.
ORDER_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("v missing", {"op": 5, "token": "t", "args": 5}, "MAPI_E_INVALID_PARAMETER"),
    ("v a str", {"v": "1", "op": 5, "args": 5}, "MAPI_E_INVALID_PARAMETER"),
    ("v a float", {"v": 1.0, "op": "daemon.ping"}, "MAPI_E_INVALID_PARAMETER"),
    ("v a bool", {"v": True, "op": "daemon.ping"}, "MAPI_E_INVALID_PARAMETER"),
    ("v 2", {"v": 2, "op": 5, "args": 5}, "MAPI_E_VERSION"),
    ("v 0", {"v": 0, "op": "no.such"}, "MAPI_E_VERSION"),
    ("op missing", {"v": 1, "args": 5}, "MAPI_E_INVALID_PARAMETER"),
    ("op an int", {"v": 1, "op": 5, "args": 5}, "MAPI_E_INVALID_PARAMETER"),
    ("op bin", {"v": 1, "op": b"daemon.ping"}, "MAPI_E_INVALID_PARAMETER"),
    ("op unknown", {"v": 1, "op": "object.frobnicate", "args": 5}, "MAPI_E_NO_SUPPORT"),
    ("op empty", {"v": 1, "op": ""}, "MAPI_E_NO_SUPPORT"),
    ("token missing", {"v": 1, "op": "object.get_props", "args": 5}, "MAPI_E_END_OF_SESSION"),
    (
        "token unknown",
        {"v": 1, "op": "object.get_props", "token": b"\x01" * 32, "args": 5},
        "MAPI_E_END_OF_SESSION",
    ),
    (
        "token a str",
        {"v": 1, "op": "object.get_props", "token": "TOKEN", "args": {"handle": -1}},
        "MAPI_E_END_OF_SESSION",
    ),
    ("args not a map", {"v": 1, "op": "object.get_props", "args": 5}, "MAPI_E_INVALID_PARAMETER"),
    ("args a list", {"v": 1, "op": "object.get_props", "args": []}, "MAPI_E_INVALID_PARAMETER"),
    ("handle missing", {"v": 1, "op": "object.get_props", "args": {}}, "MAPI_E_INVALID_PARAMETER"),
    (
        "handle a str",
        {"v": 1, "op": "object.get_props", "args": {"handle": "1"}},
        "MAPI_E_INVALID_PARAMETER",
    ),
    (
        "bad argument beside a bad handle",
        {"v": 1, "op": "object.get_props", "args": {"handle": 999_999, "tags": 5}},
        "MAPI_E_INVALID_PARAMETER",
    ),
    (
        "handle unknown",
        {"v": 1, "op": "object.get_props", "args": {"handle": 999_999}},
        "MAPI_E_INVALID_OBJECT",
    ),
]


@pytest.mark.parametrize(("case", "payload", "code"), ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_checks_run_in_the_documented_order(
    wire: Wire, session_token: bytes, case: str, payload: dict[str, Any], code: str
) -> None:
    payload = {"id": f"order-{case}", **payload}
    if "token" not in payload and not case.startswith("token missing"):
        payload["token"] = session_token
    wire.send(payload)
    reply = wire.recv()
    assert reply is not None and reply["id"] == payload["id"]
    check_error_reply(reply, code)


def test_handles_released_or_of_another_session_are_invalid_objects(wire: Wire) -> None:
    token, other = wire.logon()["token"], wire.logon()["token"]
    entryid = wire.ok("session.status_table", token=token)["rows"][0]["PR_ENTRYID"]
    handle = wire.ok("session.open_entry", {"entryid": entryid}, token=token)["handle"]
    other_entryid = wire.ok("session.status_table", token=other)["rows"][0]["PR_ENTRYID"]
    foreign = [
        wire.ok("session.open_entry", {"entryid": other_entryid}, token=other)["handle"]
        for _ in range(handle + 1)
    ][-1]
    assert foreign != handle  # a number valid in the other session only
    props = wire.ok("object.get_props", {"handle": handle}, token=token)["props"]
    assert props["PR_OBJECT_TYPE"] == 10
    assert wire.ok("object.get_props", {"handle": foreign}, token=other)["props"]
    wire.error("MAPI_E_INVALID_OBJECT", "object.get_props", {"handle": foreign}, token=token)
    assert wire.ok("object.release", {"handle": handle}, token=token) == {}
    wire.error("MAPI_E_INVALID_OBJECT", "object.get_props", {"handle": handle}, token=token)
    wire.error("MAPI_E_INVALID_OBJECT", "object.release", {"handle": handle}, token=token)


def test_error_map_carries_the_unsigned_hresult(wire: Wire) -> None:
    token = wire.logon()["token"]
    error = wire.error("MAPI_E_NOT_FOUND", "session.unadvise", {"connection": 4242}, token=token)
    assert error["hresult"] == 2147746063  # docs/protocol.md's own example
    assert error["retryable"] is False
    invalid = wire.error("MAPI_E_INVALID_PARAMETER", "session.logon", {"profile": 5})
    assert invalid["hresult"] == 0x80070057 > 2**31  # unsigned, not a negative LONG


TOKENLESS = ("daemon.", "profiles.", "session.logon", "services.available")


def test_token_is_required_by_every_op_but_the_documented_few(wire: Wire) -> None:
    import mapid.daemon.ops  # noqa: F401  (registers the ops)
    from mapid.daemon.bus.registry import REGISTRY

    checked = 0
    for name in REGISTRY.names():
        if name.startswith("services.") and name != "services.available":
            continue  # these take `token` or `args.profile`
        if name == "daemon.reload" or (name.startswith("profiles.") and name != "profiles.table"):
            continue  # they need no token, but changing the configuration is not for here
        reply = wire.call(name, {})
        needs_token = not name.startswith(TOKENLESS)
        if needs_token:
            check_error_reply(reply, "MAPI_E_END_OF_SESSION")
        else:
            assert reply["ok"] or reply["error"]["code"] != "MAPI_E_END_OF_SESSION", (name, reply)
        checked += 1
    assert checked >= 20
    # A token on an op that needs none does no harm.
    assert wire.ok("daemon.ping", token=b"\x00" * 32) == {}


def test_a_logged_off_token_is_end_of_session(wire: Wire) -> None:
    token = wire.logon()["token"]
    assert wire.ok("session.logoff", token=token) == {}
    wire.error("MAPI_E_END_OF_SESSION", "session.status_table", token=token)
    wire.error("MAPI_E_END_OF_SESSION", "session.logoff", token=token)


def session_flags(wire: Wire, session_id: str) -> int:
    for info in wire.ok("daemon.sessions")["sessions"]:
        if info["session"] == session_id:
            flags: int = info["flags"]
            return flags
    raise AssertionError(f"no session {session_id}")


def test_flags_accept_an_int_or_a_list_of_names(wire: Wire) -> None:
    by_int = wire.ok("session.logon", {"flags": MAPI_NEW_SESSION | MAPI_USE_DEFAULT})
    by_names = wire.ok("session.logon", {"flags": NEW_DEFAULT})
    assert by_int["profile"] == by_names["profile"] == "alpha"
    assert by_int["session"] != by_names["session"]
    assert session_flags(wire, by_int["session"]) == MAPI_NEW_SESSION | MAPI_USE_DEFAULT
    assert session_flags(wire, by_names["session"]) == MAPI_NEW_SESSION | MAPI_USE_DEFAULT
    token = by_names["token"]
    by_mask = wire.ok("session.advise", {"event_mask": 0x80000001}, token=token)
    by_list = wire.ok(
        "session.advise", {"event_mask": ["fnevCriticalError", "fnevExtended"]}, token=token
    )
    assert by_mask["connection"] != 0 and by_list["connection"] != 0
    assert by_mask["connection"] != by_list["connection"]
    assert wire.ok("session.logoff", {"flags": ["MAPI_LOGOFF_SHARED"]}, token=token) == {}
    assert wire.ok("session.logoff", {"flags": 0}, token=by_int["token"]) == {}


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("session.logon", {"flags": ["MAPI_NEW_SESSION", "MAPI_NO_SUCH_FLAG"]}),
        ("session.logon", {"flags": MAPI_NEW_SESSION | 0x00000100}),
        ("session.advise", {"event_mask": ["fnevBogus"]}),
        ("session.advise", {"event_mask": 0x00000800}),
        ("session.logoff", {"flags": ["MAPI_LOGOFF_EVERYONE"]}),
        ("session.logoff", {"flags": 0x40}),
        ("session.open_entry", {"entryid": b"\0" * 20, "flags": ["MAPI_WRITE_EVERYTHING"]}),
    ],
)
def test_unknown_flag_names_or_bits_are_unknown_flags(
    wire: Wire, op: str, args: dict[str, Any]
) -> None:
    token = wire.logon()["token"]
    before = len(wire.ok("daemon.sessions")["sessions"])
    error = wire.error("MAPI_E_UNKNOWN_FLAGS", op, args, token=token)
    assert error["retryable"] is False
    # Nothing happened: no session was made or ended.
    assert len(wire.ok("daemon.sessions")["sessions"]) == before


@pytest.mark.parametrize("flags", [{"MAPI_NEW_SESSION": True}, 1.5, True, [2], -1, 2**32])
def test_flags_of_the_wrong_type_are_invalid_parameter(wire: Wire, flags: object) -> None:
    wire.error("MAPI_E_INVALID_PARAMETER", "session.logon", {"profile": "alpha", "flags": flags})


def test_a_resend_on_the_same_identity_is_answered_from_the_cache(daemon: DaemonProc) -> None:
    client = Wire(daemon, routing_id=b"resender")
    try:
        before = len(client.ok("daemon.sessions")["sessions"])
        request = {
            "v": 1,
            "id": "logon-once",
            "op": "session.logon",
            "args": {"profile": "alpha", "flags": ["MAPI_NEW_SESSION"]},
        }
        client.send(request)
        first = client.recv()
        client.send(request)
        second = client.recv()
        assert first is not None and second is not None
        assert first["ok"] is True
        assert second == first  # the same token: not logged on twice
        sessions = client.ok("daemon.sessions")["sessions"]
        assert len(sessions) == before + 1
        # An error reply is cached the same way.
        token = first["result"]["token"]
        bad = {
            "v": 1,
            "id": "bad-once",
            "op": "session.unadvise",
            "token": token,
            "args": {"connection": 99},
        }
        client.send(bad)
        err1 = client.recv()
        client.send(bad)
        assert client.recv() == err1
    finally:
        client.close()


def test_a_lazy_pirate_req_with_a_routing_id_hits_the_cache(daemon: DaemonProc) -> None:
    request = {
        "v": 1,
        "id": 1,
        "op": "session.logon",
        "args": {"profile": "alpha", "flags": ["MAPI_NEW_SESSION"]},
    }
    first_req = Wire(daemon, routing_id=b"lazy-pirate", kind=zmq.REQ)
    first_req.send(request)
    first = first_req.recv()
    first_req.close()
    time.sleep(0.3)  # let the daemon see the old connection go before the new one comes
    second_req = Wire(daemon, routing_id=b"lazy-pirate", kind=zmq.REQ)
    try:
        second_req.send(request)
        second = second_req.recv()
        assert first is not None and first["ok"] is True
        assert second == first
    finally:
        second_req.close()
    # Without ZMQ_ROUTING_ID a reopened REQ is a new identity: the resend runs again.
    anonymous = [Wire(daemon, kind=zmq.REQ) for _ in range(2)]
    try:
        replies = []
        for req in anonymous:
            req.send({**request, "id": "anonymous"})
            replies.append(req.recv())
        assert all(r is not None and r["ok"] for r in replies)
        assert replies[0]["result"]["token"] != replies[1]["result"]["token"]  # type: ignore[index]
    finally:
        for req in anonymous:
            req.close()


def test_the_same_id_on_another_identity_runs_again(daemon: DaemonProc) -> None:
    one = Wire(daemon, routing_id=b"identity-one")
    two = Wire(daemon, routing_id=b"identity-two")
    try:
        before = len(one.ok("daemon.sessions")["sessions"])
        request = {
            "v": 1,
            "id": "same",
            "op": "session.logon",
            "args": {"profile": "alpha", "flags": ["MAPI_NEW_SESSION"]},
        }
        one.send(request)
        two.send(request)
        a, b = one.recv(), two.recv()
        assert a is not None and b is not None and a["ok"] and b["ok"]
        assert a["result"]["token"] != b["result"]["token"]
        assert len(one.ok("daemon.sessions")["sessions"]) == before + 2
    finally:
        one.close()
        two.close()


# A profile whose only service never finishes logging on: with provider_timeout = 1 each
# logon to it takes a second (the service is then disabled and the logon succeeds).
SLOW_CONFIG = 'default_profile = "alpha"\nmax_in_flight = 2\nprovider_timeout = 1\n'
SLOW_PROFILE = '[services.hang]\nservice = "providers_for_tests:Hanging"\n'


@pytest.fixture
def slow_daemon(make_daemon: DaemonFactory, tmp_path: Path) -> DaemonProc:
    return make_daemon(
        name="slow",
        config=SLOW_CONFIG,
        profiles={"alpha": standard_profile(tmp_path / "alpha"), "slow": SLOW_PROFILE},
    )


def slow_logon(req_id: object) -> dict[str, Any]:
    return {
        "v": 1,
        "id": req_id,
        "op": "session.logon",
        "args": {"profile": "slow", "flags": ["MAPI_NEW_SESSION"]},
    }


def test_a_duplicate_of_a_running_request_gets_the_same_reply(slow_daemon: DaemonProc) -> None:
    client = Wire(slow_daemon, routing_id=b"impatient")
    try:
        before = len(client.ok("daemon.sessions")["sessions"])
        client.send(slow_logon("slow-1"))
        time.sleep(0.2)  # the logon is now running (it takes about a second)
        client.send(slow_logon("slow-1"))
        first, second = client.recv(), client.recv()
        assert first is not None and second is not None
        assert first["ok"] is True and first["id"] == "slow-1"
        assert second == first
        assert len(client.ok("daemon.sessions")["sessions"]) == before + 1
    finally:
        client.close()


def test_too_many_requests_in_flight_are_busy_and_retryable(slow_daemon: DaemonProc) -> None:
    client = Wire(slow_daemon, routing_id=b"greedy")
    bystander = Wire(slow_daemon)
    try:
        started = time.monotonic()
        for n in range(4):
            client.send(slow_logon(f"greedy-{n}"))
        replies = {}
        for _ in range(4):
            reply = client.recv(5.0)
            assert reply is not None
            replies[reply["id"]] = (reply, time.monotonic() - started)
        busy = [r for r, _t in replies.values() if not r["ok"]]
        done = [r for r, _t in replies.values() if r["ok"]]
        assert len(busy) == 2 and len(done) == 2, replies
        for reply in busy:
            check_error_reply(reply, "MAPI_E_BUSY")
            assert reply["error"]["retryable"] is True
            assert replies[reply["id"]][1] < 0.8  # answered at once, not after the others
        # The cap is per client: another client is served meanwhile.
        assert bystander.ok("daemon.ping") == {}
        # Retrying a BUSY request with the same id once the others are done runs it.
        client.send(slow_logon(busy[0]["id"]))
        retried = client.recv(5.0)
        assert retried is not None and retried["ok"] is True, retried
    finally:
        client.close()
        bystander.close()


def test_deadline_ms_answers_timeout_instead_of_finishing_later(slow_daemon: DaemonProc) -> None:
    client = Wire(slow_daemon)
    try:
        before = len(client.ok("daemon.sessions")["sessions"])
        started = time.monotonic()
        reply = client.call(
            "session.logon", {"profile": "slow", "flags": ["MAPI_NEW_SESSION"]}, deadline_ms=300
        )
        elapsed = time.monotonic() - started
        check_error_reply(reply, "MAPI_E_TIMEOUT")
        assert reply["error"]["retryable"] is True
        assert 0.25 <= elapsed < 0.9, elapsed
        # Nothing was left half done, and no late reply follows.
        assert client.recv(1.2) is None
        assert len(client.ok("daemon.sessions")["sessions"]) == before
        # A generous deadline does not get in the way.
        assert client.ok("daemon.sessions", deadline_ms=60_000)["sessions"] is not None
        for bad in ("soon", -1, 1.5):
            client.error("MAPI_E_INVALID_PARAMETER", "daemon.ping", deadline_ms=bad)
    finally:
        client.close()


def test_no_identity_is_a_success_with_the_no_service_warning(wire: Wire) -> None:
    # Profile beta has a vCard book without identity and a Maildir store.
    reply = wire.call("session.query_identity", token=wire.logon("beta")["token"])
    assert reply["ok"] is True
    assert set(reply) == {"v", "id", "epoch", "ok", "result", "warning"}
    assert reply["warning"] == MAPI_W_NO_SERVICE
    entryid = reply["result"]["entryid"]
    assert isinstance(entryid, bytes) and len(entryid) >= 20
    again = wire.call("session.query_identity", token=wire.logon("beta")["token"])
    assert again["result"]["entryid"] == entryid  # a fixed one-off
    with_identity = wire.call("session.query_identity", token=wire.logon("alpha")["token"])
    assert with_identity["ok"] is True and "warning" not in with_identity
    assert with_identity["result"]["entryid"] != entryid


def test_stats_counters_move(daemon: DaemonProc, wire: Wire) -> None:
    s0 = wire.stats()
    assert {"requests", "malformed", "errors", "events", "sessions", "reloads"} <= set(s0)
    token = wire.logon()["token"]
    s1 = wire.stats()
    assert s1["requests"] == s0["requests"] + 2
    assert s1["sessions"] == s0["sessions"] + 1
    assert s1["events"] > s0["events"]  # logon and one TABLE_ROW_ADDED per row
    wire.error("MAPI_E_NO_SUPPORT", "no.such.op")
    wire.sock.send_multipart([b"", b"\xc1"])
    s2 = wire.stats()
    assert s2["errors"] == s1["errors"] + 1
    assert s2["malformed"] == s1["malformed"] + 1
    assert s2["requests"] == s1["requests"] + 3
    wire.ok("daemon.reload")
    wire.ok("session.logoff", token=token)
    s3 = wire.stats()
    assert s3["reloads"] == s2["reloads"] + 1
    assert s3["sessions"] == s2["sessions"] - 1
    assert s3["events"] > s2["events"]


# -- section 4: errors every op can return -------------------------------------------------


def test_not_enough_resources_at_the_handle_cap(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    proc = make_daemon(
        config='default_profile = "alpha"\nmax_handles = 3\n',
        profiles={"alpha": standard_profile(tmp_path / "alpha")},
    )
    wire = Wire(proc)
    try:
        token = wire.logon()["token"]
        entryid = wire.ok("session.status_table", token=token)["rows"][0]["PR_ENTRYID"]
        handles = [
            wire.ok("session.open_entry", {"entryid": entryid}, token=token)["handle"]
            for _ in range(3)
        ]
        error = wire.error(
            "MAPI_E_NOT_ENOUGH_RESOURCES", "session.open_entry", {"entryid": entryid}, token=token
        )
        assert error["retryable"] is False
        wire.ok("object.release", {"handle": handles[0]}, token=token)
        assert wire.ok("session.open_entry", {"entryid": entryid}, token=token)["handle"]
    finally:
        wire.close()


def test_a_method_the_object_lacks_is_no_support(wire: Wire) -> None:
    token = wire.logon()["token"]
    rows = wire.ok("session.status_table", token=token)["rows"]
    ab = next(r for r in rows if r["PR_RESOURCE_TYPE"] == MAPI_AB)
    assert not ab["PR_RESOURCE_METHODS"] & 0x2  # STATUS_FLUSH_QUEUES
    handle = wire.ok("session.open_entry", {"entryid": ab["PR_ENTRYID"]}, token=token)["handle"]
    wire.error(
        "MAPI_E_NO_SUPPORT", "status.flush_queues", {"handle": handle, "flags": 0}, token=token
    )


class _Exploding(MapiObject):
    pass


class ExplodingStoreProvider(StoreProvider):
    """A store with a bug: opening anything in it raises a plain Python exception."""

    name = "store"

    async def logon(self) -> None:
        self.support.set_provider_uid(EXPLODING_UID)

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject:
        raise RuntimeError("bug in a provider")


class ExplodingStore(MessageService):
    name = "exploding-store"
    display_name = "a store with a bug"
    providers = (ExplodingStoreProvider,)


EXPLODING_UID = bytes(range(0x40, 0x50))


def test_an_unexpected_failure_is_call_failed_and_the_daemon_keeps_serving(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    proc = make_daemon(
        profiles={
            "alpha": standard_profile(tmp_path / "alpha"),
            "buggy": '[services.bug]\nservice = "test_protocol_wire:ExplodingStore"\n',
        }
    )
    wire = Wire(proc)
    try:
        token = wire.logon("buggy")["token"]
        entryid = b"\0\0\0\0" + EXPLODING_UID + b"anything"
        error = wire.error(
            "MAPI_E_CALL_FAILED", "session.open_entry", {"entryid": entryid}, token=token
        )
        assert "bug in a provider" not in error["message"]
        assert wire.ok("daemon.ping") == {}
        assert wire.ok("session.status_table", token=token)["rows"]
    finally:
        wire.close()
