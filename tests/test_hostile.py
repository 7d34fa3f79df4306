"""Hostile input (docs/protocol.md 2, docs/design.md 9): no client input stops or bloats mapid.

One daemon serves the whole module. Hypothesis throws random bytes, random frames, random
MessagePack values, maps with random keys and values, and well-formed requests of every op in
the registry with one field of a wrong type at it; after each one the daemon must still be
alive and answering, and the payload must have been either answered (a well-formed reply,
never an internal failure) or counted in `daemon.stats` `malformed`. A last test sends
thousands of such payloads and checks that the daemon's resident memory stays flat.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mapid.daemon.ops  # noqa: F401  (importing the package registers every op)
from mapid.daemon.bus.registry import REGISTRY

from conftest import DaemonProc, prepare_daemon

OPS = REGISTRY.names()
TOP_FIELDS = ("v", "id", "op", "token", "args", "deadline_ms")
ERROR_KEYS = {"code", "hresult", "message", "retryable", "details"}
INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)

# A lease on the hostile daemon, so that the sessions hostile logons manage to open go away.
CONFIG = 'default_profile = "alpha"\nlease_s = 5\n'


def pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True, datetime=True)
    return data


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@dataclass
class Target:
    """The daemon under attack and a DEALER with a session, a handle and a probe."""

    proc: DaemonProc
    sock: zmq.Socket[Any]
    token: bytes = b""
    handle: int = 0
    entryid: bytes = b""
    malformed: int = 0
    requests: int = 0
    probes: Iterator[int] = field(default_factory=itertools.count)
    seen_codes: set[str] = field(default_factory=set)

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout: float) -> dict[str, Any] | None:
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        frames = self.sock.recv_multipart()
        assert len(frames) == 2 and frames[0] == b"", frames
        reply = msgpack.unpackb(frames[1], raw=False, strict_map_key=False)
        assert isinstance(reply, dict), reply
        return reply

    def call(self, op: str, args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """A request of our own, with an id no hostile payload can have used."""
        req_id = b"\xffprobe" + os.urandom(8) + str(next(self.probes)).encode()
        self.send([b"", pack({"v": 1, "id": req_id, "op": op, "args": args or {}, **extra})])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reply = self.recv(deadline - time.monotonic())
            if reply is not None and reply.get("id") == req_id:
                return reply
        raise AssertionError(f"the daemon did not answer {op}")

    def ok(self, op: str, args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        reply = self.call(op, args, **extra)
        assert reply["ok"] is True, reply
        result: dict[str, Any] = reply["result"]
        return result

    def setup_session(self) -> None:
        logon = self.ok("session.logon", {"profile": "alpha", "flags": 2, "lease_s": 0})
        self.token = logon["token"]
        rows = self.ok("session.status_table", token=self.token)["rows"]
        self.entryid = rows[0]["PR_ENTRYID"]
        self.handle = self.ok("session.open_entry", {"entryid": self.entryid}, token=self.token)[
            "handle"
        ]

    def sync_stats(self) -> dict[str, Any]:
        stats = self.ok("daemon.stats")
        self.malformed, self.requests = stats["malformed"], stats["requests"]
        return stats

    def alive(self) -> None:
        assert self.proc.proc is not None and self.proc.proc.poll() is None, self.proc.log()

    def attack(self, frames: list[bytes]) -> None:
        """Send one hostile message; check it was answered or counted, and nothing broke."""
        self.sync_stats()
        malformed, requests = self.malformed, self.requests
        self.send(frames)
        answers: list[dict[str, Any]] = []
        req_id = b"\xffprobe" + os.urandom(8)
        self.send([b"", pack({"v": 1, "id": req_id, "op": "daemon.stats"})])
        stats: dict[str, Any] | None = None
        deadline = time.monotonic() + 10
        while stats is None or (not answers and stats["malformed"] == malformed):
            left = deadline - time.monotonic()
            reply = self.recv(left) if left > 0 else None
            if reply is None:
                self.alive()
                raise AssertionError(f"neither answered nor counted: {frames!r:.300}")
            if reply.get("id") == req_id:
                stats = reply["result"]
            else:
                answers.append(reply)
        self.alive()
        assert stats["requests"] == requests + 2  # the hostile message and daemon.stats
        counted = stats["malformed"] - malformed
        assert counted + len(answers) == 1, (counted, answers, frames)
        for reply in answers:
            check_reply(reply)
            self.seen_codes.add(reply["error"]["code"] if not reply["ok"] else "ok")
        self.malformed, self.requests = stats["malformed"], stats["requests"]
        if any(r["ok"] and r["result"] == {} for r in answers):
            self.repair()

    def repair(self) -> None:
        """Our handle may have been released (or our session ended): make new ones."""
        check = self.call("object.get_props", {"handle": self.handle}, token=self.token)
        if check["ok"]:
            return
        if check["error"]["code"] == "MAPI_E_END_OF_SESSION":
            self.setup_session()
        else:
            self.handle = self.ok(
                "session.open_entry", {"entryid": self.entryid}, token=self.token
            )["handle"]
        self.sync_stats()


def check_reply(reply: dict[str, Any]) -> None:
    assert reply["v"] == 1 and isinstance(reply["epoch"], str), reply
    if reply["ok"] is True:
        assert set(reply) <= {"v", "id", "epoch", "ok", "result", "warning"}, reply
        assert isinstance(reply["result"], dict)
        return
    assert reply["ok"] is False and set(reply) == {"v", "id", "epoch", "ok", "error"}, reply
    error = reply["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["hresult"], int) and 0x80000000 <= error["hresult"] <= 0xFFFFFFFF
    # Bad input is the client's fault: never an internal failure of the daemon.
    assert error["code"] != "MAPI_E_CALL_FAILED", reply


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    proc = prepare_daemon(tmp_path_factory.mktemp("hostile"), config=CONFIG).start()
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, b"hostile-client")
    sock.connect(json.loads((proc.runtime / "mapid.json").read_text())["request"])
    t = Target(proc, sock)
    t.setup_session()
    t.sync_stats()
    yield t
    sock.close(linger=0)
    proc.close()
    shutil.rmtree(proc.runtime.parent, ignore_errors=True)


# -- strategies ------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.floats(allow_nan=True),
    st.text(max_size=80),
    st.binary(max_size=80),
    st.sampled_from(OPS),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(
            st.one_of(st.text(max_size=12), INT64, st.binary(max_size=8)), inner, max_size=6
        ),
    ),
    max_leaves=20,
)
ids = st.one_of(st.text(max_size=70), INT64, st.binary(max_size=70), values)
known_keys = st.sampled_from([*TOP_FIELDS, "handle", "notify", "result", "ok"])


@st.composite
def random_maps(draw: st.DrawFn) -> bytes:
    payload = draw(st.dictionaries(st.one_of(known_keys, st.text(max_size=10)), values, max_size=8))
    if draw(st.booleans()):
        payload["id"] = draw(ids)
    if draw(st.booleans()):
        payload["op"] = draw(st.sampled_from(OPS))
        payload["v"] = draw(st.sampled_from([1, 1, 0, 2, "1", None]))
    return pack(payload)


def base_args(target: Target, op: str) -> dict[str, Any]:
    spec = REGISTRY.ops[op]
    args: dict[str, Any] = {}
    for name, arg in spec.args.items():
        if name == "handle":
            args[name] = target.handle
        elif arg.required:
            args[name] = target.entryid if "entryid" in name or name in ("a", "b") else 1
    return args


@st.composite
def wrong_field(draw: st.DrawFn, target: Target) -> bytes:
    """A request of a real op, right but for one field, which gets a value of any type."""
    op = draw(st.sampled_from(OPS))
    spec = REGISTRY.ops[op]
    payload: dict[str, Any] = {
        "v": 1,
        "id": draw(ids.filter(_usable_id)),
        "op": op,
        "args": base_args(target, op),
    }
    if spec.token:
        payload["token"] = target.token
    fields = [*TOP_FIELDS, *(f"args.{name}" for name in spec.args)]
    chosen = draw(st.sampled_from(fields))
    bad = draw(values)
    if chosen.startswith("args."):
        payload["args"][chosen[5:]] = bad
    else:
        payload[chosen] = bad
    if op == "daemon.reload" and isinstance(payload["args"], dict):
        payload["args"]["check"] = True  # keep the configuration as it is
    if op == "session.logoff" and payload.get("token") == target.token:
        payload["token"] = b"\0" * 32  # keep our session for the next examples
    return pack(payload)


def _usable_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, str):
        return len(value.encode()) <= 64
    return isinstance(value, bytes) and len(value) <= 64


FAST = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


# -- the attacks -----------------------------------------------------------------------------


@settings(FAST, max_examples=80)
@given(data=st.binary(max_size=600))
def test_random_bytes(target: Target, data: bytes) -> None:
    target.attack([b"", data])


@settings(FAST, max_examples=40)
@given(frames=st.lists(st.binary(max_size=40), min_size=1, max_size=5))
def test_random_frames(target: Target, frames: list[bytes]) -> None:
    target.attack(frames)


@settings(FAST, max_examples=80)
@given(value=values)
def test_random_msgpack_values(target: Target, value: Any) -> None:
    target.attack([b"", pack(value)])


@settings(FAST, max_examples=120)
@given(data=random_maps())
def test_maps_with_random_keys_and_values(target: Target, data: bytes) -> None:
    target.attack([b"", data])


@settings(FAST, max_examples=300)
@given(data=st.data())
def test_every_field_of_every_op_with_a_wrong_value(target: Target, data: st.DataObject) -> None:
    target.attack([b"", data.draw(wrong_field(target))])


def test_the_attacks_reached_the_ops(target: Target) -> None:
    """Attacks like the wrong-field ones above get past the envelope checks into the ops'
    own argument checks. Its own attacks, not the other tests' (pytest-xdist may run those
    in another worker, with another target)."""

    @settings(FAST, max_examples=200, database=None, derandomize=True)  # the same each run
    @given(data=st.data())
    def campaign(data: st.DataObject) -> None:
        target.attack([b"", data.draw(wrong_field(target))])

    target.seen_codes.clear()
    campaign()
    assert {"ok", "MAPI_E_INVALID_PARAMETER", "MAPI_E_END_OF_SESSION"} <= target.seen_codes, (
        target.seen_codes
    )
    assert target.ok("daemon.ping") == {}


# -- memory ----------------------------------------------------------------------------------


def _rand_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.randrange(-(2**40), 2**40)
    if kind == 2:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(40)))
    if kind == 3:
        return rng.randbytes(rng.randrange(40))
    if kind == 4:
        return rng.random() * 1e6
    if kind == 5:
        return rng.choice([True, False])
    if kind == 6:
        return [_rand_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {str(_rand_value(rng, 3))[:10]: _rand_value(rng, depth + 1) for _ in range(4)}


def _hostile(rng: random.Random, target: Target, n: int) -> list[bytes]:
    kind = n % 5
    if kind == 0:
        return [b"", rng.randbytes(rng.randrange(1, 300))]
    if kind == 1:
        return [b"", pack(_rand_value(rng))]
    if kind == 2:
        return [rng.randbytes(rng.randrange(8)) for _ in range(rng.randrange(1, 4))]
    op = rng.choice(OPS)
    spec = REGISTRY.ops[op]
    payload: dict[str, Any] = {"v": 1, "id": f"h-{n}", "op": op, "args": base_args(target, op)}
    if spec.token:
        payload["token"] = target.token
    names = list(spec.args) or ["unknown"]
    payload["args"][rng.choice(names)] = _rand_value(rng)
    if kind == 4:
        payload[rng.choice(TOP_FIELDS)] = _rand_value(rng)
    if op in ("session.logoff", "object.release", "daemon.reload", "session.logon"):
        payload["op"] = "daemon.ping"  # keep our session and handle; make no sessions
    return [b"", pack(payload)]


def _blast(target: Target, rng: random.Random, start: int, count: int) -> None:
    """Send `count` hostile messages in batches, reading every answer."""
    for base in range(start, start + count, 100):
        for n in range(base, min(base + 100, start + count)):
            target.send(_hostile(rng, target, n))
        target.ok("daemon.ping")  # answered after everything before it was read
        while target.recv(0.05) is not None:
            pass
    target.alive()


def test_memory_stays_flat_under_thousands_of_hostile_messages(target: Target) -> None:
    assert target.proc.proc is not None
    pid = target.proc.proc.pid
    rng = random.Random(1234)
    _blast(target, rng, 0, 1500)  # warm-up: caches, arenas, code paths
    before = rss_kib(pid)
    stats_before = target.sync_stats()
    _blast(target, rng, 1500, 3000)
    after = rss_kib(pid)
    stats = target.sync_stats()
    assert stats["requests"] - stats_before["requests"] >= 3000
    assert stats["malformed"] > stats_before["malformed"]
    growth = after - before
    assert growth < 4 * 1024, f"RSS grew by {growth} KiB over 3000 hostile messages"
    assert target.ok("daemon.ping") == {}
