"""docs/protocol.md 8: leases end the members of clients that went silent.

The daemon here has `lease_s = 1` in mapid.toml and an `autologon` profile, so the default
lease, explicit leases, renewals and the daemon's own member are all seen within seconds.
Events are read from a plain SUB socket, as any monitor would.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from mapid.client import Client
from mapid.errors import ErrorCode, MapiError

from conftest import DaemonFactory, DaemonProc, standard_profile

NEW = ["MAPI_NEW_SESSION"]
LEASE = 1.0
SLACK = 0.35
"""Scheduling slack on top of docs/protocol.md's "within one second" of the lease's end (and
below it: the lease runs from when the daemon read the last op, a little before its reply)."""


class Events:
    """A SUB socket on the `events` endpoint, subscribed to the session topics."""

    def __init__(self, daemon: DaemonProc) -> None:
        info = json.loads((daemon.runtime / "mapid.json").read_text())
        self.sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(info["events"])
        self.sock.setsockopt(zmq.SUBSCRIBE, b"session.")
        self.sock.setsockopt(zmq.SUBSCRIBE, b"hb")
        self.wait(lambda topic, msg: topic == "hb", 2.0)  # subscribed

    def close(self) -> None:
        self.sock.close(linger=0)

    def wait(self, match: Any, timeout: float) -> tuple[str, dict[str, Any], float]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0 and self.sock.poll(int(left * 1000), zmq.POLLIN), "no such event"
            topic_b, data = self.sock.recv_multipart()
            topic, msg = topic_b.decode(), msgpack.unpackb(data, raw=False)
            if match(topic, msg):
                return topic, msg, time.monotonic()

    def session_event(
        self, session: str, kind: str, timeout: float = 4.0
    ) -> tuple[dict[str, Any], float]:
        _topic, msg, at = self.wait(
            lambda t, m: t == f"session.{session}" and m["type"] == kind, timeout
        )
        return msg, at


@pytest.fixture
def leased(make_daemon: DaemonFactory, tmp_path: Path) -> DaemonProc:
    return make_daemon(
        config=f'default_profile = "alpha"\nlease_s = {LEASE}\n',
        profiles={
            "alpha": standard_profile(tmp_path / "alpha"),
            "auto": standard_profile(tmp_path / "auto", autologon=True),
        },
    )


@pytest.fixture
def events(leased: DaemonProc) -> Iterator[Events]:
    sub = Events(leased)
    yield sub
    sub.close()


def end_of_session(fn: Any, *args: Any) -> None:
    with pytest.raises(MapiError) as info:
        fn(*args)
    assert info.value.code == ErrorCode.MAPI_E_END_OF_SESSION


def autologon_session(client: Client) -> dict[str, Any]:
    """The session of the `autologon` profile (the daemon logs it on just after it starts)."""
    deadline = time.monotonic() + 10
    while True:
        found = [s for s in client.daemon_sessions()["sessions"] if s["profile"] == "auto"]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (auto,) = found
    return dict(auto)


def test_a_silent_member_is_dropped_within_a_second_of_its_lease(
    leased: DaemonProc, events: Events
) -> None:
    client = leased.client()
    logon = client.session_logon("alpha", NEW)  # lease_s from mapid.toml
    last_op = time.monotonic()
    msg, at = events.session_event(logon["session"], "logoff")
    assert msg["reason"] == "expired"
    assert LEASE - 0.2 <= at - last_op <= 2 * LEASE + SLACK, at - last_op
    end_of_session(client.session_status_table, logon["token"])
    assert logon["session"] not in {s["session"] for s in client.daemon_sessions()["sessions"]}


def test_an_expired_member_of_a_shared_session_leaves_it(
    leased: DaemonProc, events: Events
) -> None:
    client = leased.client()
    auto = autologon_session(client)
    assert auto["shared"] is True and auto["members"] == 1
    joined = client.session_logon(None, 0, lease_s=0.5)  # joins the shared session
    assert joined["session"] == auto["session"]
    last_op = time.monotonic()
    msg, at = events.session_event(auto["session"], "member_left")
    assert msg["reason"] == "expired" and msg["info"]["members"] == 1
    assert 0.3 <= at - last_op <= 1.5 + SLACK, at - last_op
    end_of_session(client.session_renew, joined["token"])
    # The autologon session itself holds the daemon's own member, with no lease.
    time.sleep(LEASE + 0.5)
    assert autologon_session(client)["members"] == 1


def test_renew_and_any_other_op_keep_a_member(leased: DaemonProc, events: Events) -> None:
    client = leased.client()
    renewer = client.session_logon("alpha", NEW)
    worker = client.session_logon("alpha", NEW)
    started = time.monotonic()
    while time.monotonic() - started < 2.5 * LEASE:
        renewed = client.session_renew(renewer["token"])
        expires = renewed["lease_expires"]
        assert isinstance(expires, datetime)
        ahead = (expires - datetime.now(UTC)).total_seconds()
        assert LEASE - 0.3 <= ahead <= LEASE + 0.3, ahead
        client.session_status_table(worker["token"])
        time.sleep(0.4 * LEASE)
    last_op = time.monotonic()
    for logon in (renewer, worker):
        assert client.session_status_table(logon["token"])["rows"]
    # Silent from now on: both go, a lease after their last op.
    for logon in (renewer, worker):
        msg, at = events.session_event(logon["session"], "logoff")
        assert msg["reason"] == "expired"
        assert LEASE - 0.2 <= at - last_op <= 2 * LEASE + SLACK, at - last_op


def test_lease_zero_never_expires(leased: DaemonProc, events: Events) -> None:
    client = leased.client()
    forever = client.session_logon("alpha", NEW, lease_s=0)
    short = client.session_logon("alpha", NEW, lease_s=0.5)
    events.session_event(short["session"], "logoff")
    time.sleep(2 * LEASE + 0.3)
    assert client.session_status_table(forever["token"])["rows"]
    assert client.session_renew(forever["token"])["lease_expires"] is None
    ids = {s["session"] for s in client.daemon_sessions()["sessions"]}
    assert forever["session"] in ids and short["session"] not in ids


def test_the_default_lease_is_60_seconds(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]  # mapid.toml sets no lease_s
    expires = client.session_renew(token)["lease_expires"]
    ahead = (expires - datetime.now(UTC)).total_seconds()
    assert 59 <= ahead <= 61, ahead


@pytest.mark.parametrize("lease_s", [1e12, math.inf])
def test_a_lease_beyond_any_date_renews(leased: DaemonProc, lease_s: float) -> None:
    client = leased.client()
    logon = client.session_logon("alpha", NEW, lease_s=lease_s)
    expires = client.session_renew(logon["token"])["lease_expires"]
    assert isinstance(expires, datetime) and expires.year == 9999


@pytest.mark.parametrize("lease_s", [-1, "60", [1], True])
def test_a_bad_lease_is_invalid_parameter(leased: DaemonProc, lease_s: Any) -> None:
    client = leased.client()
    with pytest.raises(MapiError) as info:
        client.call("session.logon", {"profile": "alpha", "flags": NEW, "lease_s": lease_s})
    assert info.value.code == ErrorCode.MAPI_E_INVALID_PARAMETER
