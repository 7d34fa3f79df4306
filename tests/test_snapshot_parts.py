"""A snapshot too large for one part comes in parts, all at one `seq` (docs/protocol.md 6.1)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
import zmq

from mapid import AsyncClient, MapiError
from mapid.daemon.bus.snapshot import CAPTURE_CHUNK
from mapid.errors import ErrorCode
from mapid.wire.codec import unpack

from conftest import DaemonProc

SESSIONS = 800  # about 1.8 KB each: more than the 1 MiB of one part (snapshot.PART_BUDGET)


async def _log_on_many(daemon: DaemonProc, count: int) -> None:
    async with AsyncClient(daemon.runtime, timeout=60) as client:
        gate = asyncio.Semaphore(32)

        async def one() -> None:
            async with gate:
                await client.session_logon("beta", ["MAPI_NEW_SESSION"], lease_s=0)

        await asyncio.gather(*(one() for _ in range(count)))


def test_a_large_snapshot_comes_in_parts_at_one_seq(daemon: DaemonProc) -> None:
    asyncio.run(_log_on_many(daemon, SESSIONS))
    client = daemon.client(timeout=30)
    parts = [dict(client.daemon_snapshot())]
    while parts[-1].get("next"):
        cursor = parts[-1]["next"]
        # Changes between parts do not reach the parts: they are frozen at the first seq.
        client.session_logon("beta", ["MAPI_NEW_SESSION"], lease_s=0)
        parts.append(dict(client.daemon_snapshot(cursor=cursor)))
    assert len(parts) >= 2
    assert {p["seq"] for p in parts} == {parts[0]["seq"]}
    assert {p["epoch"] for p in parts} == {parts[0]["epoch"]}
    ids = [s["session"] for p in parts for s in p["sessions"]]
    assert len(ids) == len(set(ids)) == SESSIONS
    for part in parts:
        assert set(part["status"]) == {s["session"] for s in part["sessions"]}
        assert all(len(rows) == 5 for rows in part["status"].values())
    topics = {t for p in parts for t in p["topics"]}
    assert topics == {f"{kind}.{sid}" for sid in ids for kind in ("session", "status")}
    with pytest.raises(MapiError) as info:
        client.daemon_snapshot(cursor=parts[-2]["next"])
    assert info.value.code == ErrorCode.MAPI_E_NOT_FOUND
    # A prefix that selects one session fits in one part.
    one = client.daemon_snapshot(prefix=f"status.{ids[0]}")
    assert "next" not in one and [s["session"] for s in one["sessions"]] == [ids[0]]


def test_a_snapshot_taken_while_sessions_come_and_go_is_exact(daemon: DaemonProc) -> None:
    """More sessions than one step of the loop captures (snapshot.CAPTURE_CHUNK), while
    another client logs sessions on and off: the snapshot holds exactly the sessions the
    event stream says were there at its seq, and no topic is newer than that seq."""
    bulk = CAPTURE_CHUNK * 2 + 500
    asyncio.run(_log_on_many(daemon, bulk))
    client = daemon.client(timeout=60)
    before = {s["session"] for s in client.daemon_sessions()["sessions"]}
    sub: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(json.loads((daemon.runtime / "mapid.json").read_text())["events"])
    for prefix in (b"session.", b"hb"):
        sub.setsockopt(zmq.SUBSCRIBE, prefix)
    events: list[tuple[int, str, str]] = []  # (seq, type, session) of the session events

    def receive(until_seq: int) -> None:
        while True:
            assert sub.poll(10_000), "the event stream went quiet"
            topic, data = sub.recv_multipart()
            msg = unpack(data)
            if topic == b"hb":
                if msg["seq"] >= until_seq:
                    return
                continue
            events.append((msg["seq"], msg["type"], msg["session"]))

    receive(0)  # subscribed: the first heartbeat came
    stop = threading.Event()

    def churn() -> None:
        with daemon.client(timeout=30) as own:
            while not stop.is_set():
                token = own.session_logon("beta", ["MAPI_NEW_SESSION"], lease_s=0)["token"]
                own.session_logoff(token)
                own.session_logon("beta", ["MAPI_NEW_SESSION"], lease_s=0)

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        time.sleep(0.2)
        parts = [dict(client.daemon_snapshot())]
        while parts[-1].get("next"):
            parts.append(dict(client.daemon_snapshot(cursor=parts[-1]["next"])))
    finally:
        stop.set()
        churner.join(30)
    seq = parts[0]["seq"]
    receive(seq)
    alive = set(before)
    for at, kind, session in sorted(events):
        if at > seq:
            break
        if kind == "logon":
            alive.add(session)
        elif kind == "logoff":
            alive.discard(session)
    captured = [s["session"] for p in parts for s in p["sessions"]]
    assert len(captured) == len(set(captured))
    assert any(at > seq for at, _, _ in events), "no session came or went after the seq"
    assert any(at < seq and kind == "logon" for at, kind, _ in events), "none during it"
    assert set(captured) == alive
    assert max(t for p in parts for t in p["topics"].values()) <= seq
