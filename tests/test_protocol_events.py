"""docs/protocol.md 7: the event stream, snapshots, the clone recipe, private notifications.

Events are read from a plain SUB socket on the connection file's `events` endpoint and
checked frame by frame; requests go through the client library except where the frames of a
private notification are the point, which use a hand-made DEALER.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from mapid.client import Client
from mapid.errors import ErrorCode, MapiError
from mapid.mirror import MirrorState, Resync, StatusMirror

from conftest import DaemonFactory, DaemonProc, standard_profile
from providers_for_tests import NOTIFY_STORE_ENTRYID

SESSION_KEYS = {"session", "profile", "created", "shared", "members", "flags", "state"}
RELOAD_KEYS = {"gen", "ok", "added", "removed", "changed", "errors"}
NEW = ["MAPI_NEW_SESSION"]
NEW_SHARED = ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"]
MAPI_STORE = 1
END_OF_SESSION_HRESULT = 0x80040200


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True, datetime=True)
    return data


def connection_file(daemon: DaemonProc) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((daemon.runtime / "mapid.json").read_text())
    return data


@dataclass
class Event:
    topic: str
    msg: dict[str, Any]
    at: float

    @property
    def seq(self) -> int:
        seq: int = self.msg["seq"]
        return seq

    @property
    def type(self) -> str:
        kind: str = self.msg["type"]
        return kind


def check_event(topic: str, msg: Any) -> None:
    """What docs/protocol.md 7.1 promises of every payload."""
    assert isinstance(msg, dict), msg
    assert msg["v"] == 1
    assert isinstance(msg["epoch"], str) and msg["epoch"]
    assert isinstance(msg["seq"], int) and msg["seq"] >= 0
    assert isinstance(msg["ts"], msgpack.Timestamp), f"ts is a msgpack timestamp: {msg}"
    assert isinstance(msg["type"], str)
    if topic == "hb":
        assert "prev" not in msg, msg
        assert msg["type"] == "heartbeat"
        assert isinstance(msg["sessions"], int) and isinstance(msg["config_gen"], int)
    else:
        assert isinstance(msg["prev"], int) and 0 <= msg["prev"] < msg["seq"], msg


class Sub:
    """A subscriber, as the recipe's step 1 makes it."""

    def __init__(self, daemon: DaemonProc, *prefixes: str) -> None:
        self.sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(connection_file(daemon)["events"])
        for prefix in prefixes:
            self.subscribe(prefix)
        self.log: list[Event] = []

    def subscribe(self, prefix: str) -> None:
        self.sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())

    def close(self) -> None:
        self.sock.close(linger=0)

    def recv(self, timeout: float) -> Event | None:
        if not self.sock.poll(max(0, int(timeout * 1000)), zmq.POLLIN):
            return None
        frames = self.sock.recv_multipart()
        at = time.monotonic()
        assert len(frames) == 2, f"an event is two frames, got {len(frames)}"
        topic = frames[0].decode("utf-8")
        msg = unpack(frames[1])
        check_event(topic, msg)
        event = Event(topic, msg, at)
        self.log.append(event)
        return event

    def until(self, pred: Callable[[Event], bool], timeout: float = 5.0) -> list[Event]:
        """Every event up to and including the first that matches `pred`."""
        got: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            event = self.recv(deadline - time.monotonic())
            assert event is not None, f"no matching event within {timeout} s; got {got}"
            got.append(event)
            if pred(event):
                return got

    def heartbeat(self, timeout: float = 2.0) -> Event:
        return self.until(lambda e: e.topic == "hb", timeout)[-1]

    def drain(self, quiet: float = 0.1, most: float = 3.0) -> list[Event]:
        """Events until none came for `quiet` s (or `most` s went by)."""
        got: list[Event] = []
        end = time.monotonic() + most
        while time.monotonic() < end and (event := self.recv(quiet)) is not None:
            got.append(event)
        return got

    def during(self, seconds: float) -> list[Event]:
        """Every event of the next `seconds` s."""
        got: list[Event] = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if (event := self.recv(left)) is not None:
                got.append(event)
        return got


def of_type(topic: str, kind: str) -> Callable[[Event], bool]:
    return lambda e: e.topic == topic and e.type == kind


@pytest.fixture
def sub(daemon: DaemonProc) -> Iterator[Sub]:
    s = Sub(daemon, "")
    s.heartbeat()
    yield s
    s.close()


def table(client: Client, token: bytes) -> dict[bytes, dict[str, Any]]:
    rows = client.session_status_table(token)["rows"]
    return {bytes(r["PR_INSTANCE_KEY"]): dict(r) for r in rows}


def normalize(value: Any) -> Any:
    """Events are read raw (timestamps as msgpack.Timestamp); the client decodes datetimes."""
    if isinstance(value, msgpack.Timestamp):
        return value.to_datetime()
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


# -- 7.1 frames, topics, sequence ------------------------------------------------------------


def test_every_payload_has_the_common_keys(daemon: DaemonProc, client: Client, sub: Sub) -> None:
    epoch = client.daemon_hello()["epoch"]
    logon = client.session_logon("alpha", NEW)
    client.daemon_reload()
    client.session_logoff(logon["token"])
    sub.until(of_type(f"session.{logon['session']}", "logoff"))
    sub.heartbeat()
    kinds = {(e.topic.split(".")[0], e.type) for e in sub.log}
    assert {
        ("hb", "heartbeat"),
        ("session", "logon"),
        ("status", "TABLE_ROW_ADDED"),
        ("daemon", "reloaded"),
        ("status", "TABLE_ROW_DELETED"),
        ("session", "logoff"),
    } <= kinds
    assert {e.msg["epoch"] for e in sub.log} == {epoch}


def test_heartbeats_every_second_and_at_once_on_subscription(
    daemon: DaemonProc, client: Client
) -> None:
    hb = Sub(daemon)
    try:
        subscribed = time.monotonic()
        hb.subscribe("hb")
        first = hb.heartbeat(1.0)
        assert first.at - subscribed < 0.5
        regular = [hb.heartbeat(1.5) for _ in range(3)]
        gaps = [b.at - a.at for a, b in itertools.pairwise(regular)]
        assert all(0.7 < gap < 1.3 for gap in gaps), gaps
        # Right after a regular beat the next is a second away: a new subscription
        # (XPUB_VERBOSE passes it to the daemon) brings one at once.
        asked = time.monotonic()
        hb.subscribe("daemon")
        prompt = hb.heartbeat(0.6)
        assert prompt.at - asked < 0.4
        assert prompt.at - regular[-1].at < 0.7
        # The heartbeat's fields: a session count and the config generation.
        client.session_logon("alpha", NEW)
        beat = hb.heartbeat(1.5)
        assert beat.msg["sessions"] == len(client.daemon_sessions()["sessions"]) == 1
        assert beat.msg["config_gen"] == client.daemon_hello()["config_gen"]
    finally:
        hb.close()


def test_heartbeat_seq_is_the_last_seq_used(daemon: DaemonProc, client: Client) -> None:
    s = Sub(daemon, "hb", "daemon")
    try:
        start = s.heartbeat()
        assert start.seq == client.daemon_snapshot()["seq"]
        client.daemon_reload()
        reloaded = s.until(lambda e: e.topic == "daemon")[-1]
        assert reloaded.seq == start.seq + 1
        beats = [s.heartbeat(1.5) for _ in range(2)]
        assert [b.seq for b in beats] == [reloaded.seq, reloaded.seq]
    finally:
        s.close()


def test_seq_counts_every_event_across_topics_without_gaps(
    daemon: DaemonProc, client: Client, sub: Sub
) -> None:
    last = sub.log[-1].seq  # the heartbeat: the last seq used before we came
    a = client.session_logon("alpha", NEW)
    b = client.session_logon("beta", NEW)
    client.daemon_reload()
    client.session_logoff(a["token"])
    client.session_logoff(b["token"])
    sub.until(of_type(f"session.{b['session']}", "logoff"))
    sub.heartbeat()
    events = [e for e in sub.log[1:] if e.topic != "hb"]
    assert [e.seq for e in events] == list(range(last + 1, last + 1 + len(events)))
    assert len({e.topic for e in events}) == 5  # two session, two status topics and daemon
    # Every heartbeat carries the seq of the event just before it.
    previous = last
    for event in sub.log[1:]:
        if event.topic == "hb":
            assert event.seq == previous
        else:
            previous = event.seq


def test_logon_publishes_logon_then_a_row_each_and_the_end_the_reverse(
    client: Client, sub: Sub
) -> None:
    logon = client.session_logon("alpha", NEW)
    sid = logon["session"]
    rows = table(client, logon["token"])
    assert len(rows) >= 5  # subsystem, spooler, address book, vCard book, Maildir store
    sub.drain()
    mine = [e for e in sub.log if e.topic in (f"session.{sid}", f"status.{sid}")]
    assert mine[0].topic == f"session.{sid}" and mine[0].type == "logon"
    assert mine[0].msg["session"] == sid
    info = mine[0].msg["info"]
    assert set(info) == SESSION_KEYS and info["session"] == sid and info["profile"] == "alpha"
    added = mine[1 : 1 + len(rows)]
    assert all(e.topic == f"status.{sid}" and e.type == "TABLE_ROW_ADDED" for e in added)
    assert all(e.msg["session"] == sid for e in added)
    assert {bytes(e.msg["instance_key"]): normalize(e.msg["row"]) for e in added} == rows
    rows = table(client, logon["token"])  # as it stands at the end
    mark = len(sub.log)
    client.session_logoff(logon["token"])
    sub.until(of_type(f"session.{sid}", "logoff"))
    sub.drain(0.3)
    ending = [e for e in sub.log[mark:] if e.topic in (f"session.{sid}", f"status.{sid}")]
    deleted, logoff = ending[-1 - len(rows) : -1], ending[-1]
    assert all(e.type == "TABLE_ROW_DELETED" and "row" not in e.msg for e in deleted)
    assert {bytes(e.msg["instance_key"]) for e in deleted} == set(rows)
    assert logoff.type == "logoff" and logoff.msg["session"] == sid
    assert set(logoff.msg["info"]) == SESSION_KEYS
    assert "reason" not in logoff.msg  # only a lease that ran out gives one


def test_a_changed_row_publishes_table_row_modified_with_the_whole_row(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    proc = make_daemon(
        profiles={
            "alpha": standard_profile(tmp_path / "alpha"),
            "xp": '[services.xp]\nservice = "providers_for_tests:Transport"\n',
        }
    )
    client = proc.client()
    watcher = Sub(proc, "status.", "hb")
    try:
        watcher.heartbeat()
        logon = client.session_logon("xp", NEW)
        rows = table(client, logon["token"])
        key, row = next(
            (k, r)
            for k, r in rows.items()
            if r["PR_PROVIDER_DLL_NAME"] == "providers_for_tests:Transport"
        )
        handle = client.session_open_entry(logon["token"], row["PR_ENTRYID"])["handle"]
        client.status_validate_state(logon["token"], handle, ["SUPPRESS_UI"])
        topic = f"status.{logon['session']}"
        modified = watcher.until(of_type(topic, "TABLE_ROW_MODIFIED"))[-1]
        assert modified.msg["session"] == logon["session"]
        assert bytes(modified.msg["instance_key"]) == key
        now = table(client, logon["token"])[key]
        assert normalize(modified.msg["row"]) == now  # the whole row, not just the change
        assert now["PR_STATUS_STRING"] != row.get("PR_STATUS_STRING")
    finally:
        watcher.close()


def test_member_joined_and_member_left_on_the_shared_session(client: Client, sub: Sub) -> None:
    first = client.session_logon("alpha", NEW_SHARED)
    assert first["shared"] is True
    second = client.session_logon(None, 0)  # MAPI: no MAPI_NEW_SESSION joins the shared one
    assert second["session"] == first["session"] and second["token"] != first["token"]
    topic = f"session.{first['session']}"
    joined = sub.until(of_type(topic, "member_joined"))[-1]
    assert joined.msg["info"]["members"] == 2 and joined.msg["info"]["shared"] is True
    client.session_logoff(second["token"])
    left = sub.until(of_type(topic, "member_left"))[-1]
    assert left.msg["info"]["members"] == 1 and left.msg["session"] == first["session"]
    assert "reason" not in left.msg
    assert left.msg["prev"] >= joined.seq
    client.session_logoff(first["token"])
    assert sub.until(of_type(topic, "logoff"))[-1].msg["info"]["members"] == 0


def test_prev_chains_each_topic(daemon: DaemonProc, client: Client, sub: Sub) -> None:
    a = client.session_logon("alpha", NEW_SHARED)
    client.session_logon(None, 0)
    b = client.session_logon("beta", NEW)
    client.daemon_reload()
    client.session_logoff(b["token"])
    client.session_logoff(a["token"], ["MAPI_LOGOFF_SHARED"])
    sub.until(of_type(f"session.{a['session']}", "logoff"))
    last: dict[str, int] = {}
    for event in sub.log:
        if event.topic == "hb":
            continue
        if event.topic == "daemon" and event.topic not in last:
            # `started` was the daemon topic's first event and the first of the epoch.
            assert event.msg["prev"] == 1
        else:
            assert event.msg["prev"] == last.get(event.topic, 0), event
        last[event.topic] = event.seq
    assert len(last) == 5


# -- snapshots -------------------------------------------------------------------------------


def test_snapshot_prefixes_and_topics(daemon: DaemonProc, client: Client, sub: Sub) -> None:
    a = client.session_logon("alpha", NEW)
    b = client.session_logon("beta", NEW)
    full = client.daemon_snapshot(prefix="")
    assert {"epoch", "seq", "sessions", "status", "topics", "config"} <= set(full)
    assert "next" not in full
    assert full["epoch"] == client.daemon_hello()["epoch"]
    assert set(full["config"]) >= {"gen", "last_reload"}
    sub.until(lambda e: e.topic != "hb" and e.seq == full["seq"])
    last: dict[str, int] = {}
    for event in sub.log:
        if event.topic != "hb":
            last[event.topic] = event.seq
    assert max(last.values()) == full["seq"]
    ids = {a["session"], b["session"]}
    everything = {t: s for t, s in last.items() if t != "daemon"}
    assert full["topics"] == everything
    assert {s["session"] for s in full["sessions"]} == ids
    assert all(set(s) == SESSION_KEYS for s in full["sessions"])
    assert set(full["status"]) == ids
    for logon in (a, b):
        assert {bytes(r["PR_INSTANCE_KEY"]): r for r in full["status"][logon["session"]]} == table(
            client, logon["token"]
        )
    assert client.daemon_snapshot()["topics"] == everything  # absent prefix: all

    def selected(prefix: str) -> tuple[set[str], dict[str, int], set[str]]:
        snap = client.daemon_snapshot(prefix=prefix)
        assert snap["seq"] == full["seq"] and snap["epoch"] == full["epoch"]
        return {s["session"] for s in snap["sessions"]}, snap["topics"], set(snap["status"])

    status_topics = {t: s for t, s in everything.items() if t.startswith("status.")}
    assert selected("status.") == (ids, status_topics, ids)
    sa, sb = a["session"], b["session"]
    assert selected(f"status.{sa}") == ({sa}, {f"status.{sa}": last[f"status.{sa}"]}, {sa})
    assert selected(f"session.{sb}") == ({sb}, {f"session.{sb}": last[f"session.{sb}"]}, {sb})
    assert selected("session.") == (
        ids,
        {t: s for t, s in everything.items() if t.startswith("session.")},
        ids,
    )
    assert selected("hb") == (set(), {}, set())
    assert selected("daemon") == (set(), {}, set())
    # A session's topics are forgotten when it ends.
    client.session_logoff(a["token"])
    after = client.daemon_snapshot(prefix="")
    assert set(after["topics"]) == {f"session.{sb}", f"status.{sb}"}
    assert [s["session"] for s in after["sessions"]] == [sb]


def mirror_matches(mirror: StatusMirror, snap: dict[str, Any], *, sessions: bool) -> None:
    expected = {
        sid: {bytes(r["PR_INSTANCE_KEY"]): r for r in rows} for sid, rows in snap["status"].items()
    }
    got = {sid: rows for sid, rows in mirror.tables.items() if rows or sid in expected}
    assert got == expected
    if sessions:
        assert mirror.sessions == {s["session"]: s for s in snap["sessions"]}
        assert mirror.state.last_seq == snap["seq"]
        # The mirror also remembers the daemon topic; the snapshot lists session topics only.
        assert {t: s for t, s in mirror.state.topics.items() if t != "daemon"} == snap["topics"]


def settle(client: Client, *mirrors: StatusMirror) -> dict[str, Any]:
    """Poll until every mirror has read up to the daemon's seq; return that snapshot."""
    snap = client.daemon_snapshot()
    deadline = time.monotonic() + 5
    for mirror in mirrors:
        while mirror.state.last_seq < snap["seq"] or mirror.state.epoch != snap["epoch"]:
            assert time.monotonic() < deadline, (mirror.state.last_seq, snap["seq"])
            mirror.poll(0.05)
            if mirror.state.prefix and mirror.state.last_seq < snap["seq"]:
                break  # a prefix subscriber does not see every seq
    for mirror in mirrors:
        mirror.poll(0.2)
    return client.daemon_snapshot()


def test_clone_recipe_keeps_a_mirror_equal_to_a_fresh_snapshot(
    daemon: DaemonProc, client: Client
) -> None:
    rng = random.Random(20240607)
    everything = StatusMirror(daemon.runtime, "", client=daemon.client())
    statuses = StatusMirror(daemon.runtime, "status.", client=daemon.client())
    try:
        pre = client.session_logon("alpha", NEW)  # in the first snapshot, not the stream
        everything.start()
        statuses.start()
        tokens: list[bytes] = [pre["token"]]
        for _ in range(14):
            action = rng.random()
            if action < 0.1:
                client.daemon_reload()
            elif action < 0.5 or not tokens:
                flags: Any = rng.choice([NEW, NEW_SHARED, 0])
                try:
                    logon = client.session_logon(rng.choice(["alpha", "beta"]), flags)
                except MapiError as exc:  # flags 0 without a shared session to join
                    assert exc.code == ErrorCode.MAPI_E_LOGON_FAILED
                    continue
                tokens.append(logon["token"])
            else:
                token = tokens.pop(rng.randrange(len(tokens)))
                shared = rng.random() < 0.3
                try:
                    client.session_logoff(token, ["MAPI_LOGOFF_SHARED"] if shared else None)
                except MapiError as exc:  # a MAPI_LOGOFF_SHARED ended it already
                    assert exc.code == ErrorCode.MAPI_E_END_OF_SESSION
            everything.poll(0.02)
            statuses.poll(0.02)
        snap = settle(client, everything, statuses)
        mirror_matches(everything, snap, sessions=True)
        mirror_matches(statuses, client.daemon_snapshot(prefix="status."), sessions=False)
        assert everything.resyncs == 1 and statuses.resyncs == 1, (
            everything.last_error,
            statuses.last_error,
        )
        assert len(snap["sessions"]) >= 1
    finally:
        everything.close()
        statuses.close()


def test_mirror_resyncs_on_a_gap_and_on_missing_heartbeats(
    daemon: DaemonProc, client: Client
) -> None:
    mirror = StatusMirror(daemon.runtime, "", client=daemon.client())
    try:
        mirror.start()
        assert mirror.resyncs == 1
        lost = client.session_logon("alpha", NEW)
        time.sleep(0.2)
        # Lose the logon's events, as a subscriber past its high-water mark would.
        while mirror._sub.poll(100, zmq.POLLIN):
            mirror._sub.recv_multipart()
        assert lost["session"] not in mirror.sessions
        # The next heartbeat's seq is past the last event the mirror saw: a gap.
        deadline = time.monotonic() + 3
        while mirror.resyncs < 2 and time.monotonic() < deadline:
            mirror.poll(0.1)
        assert mirror.resyncs == 2 and lost["session"] in mirror.sessions
        mirror_matches(mirror, settle(client, mirror), sessions=True)

        # Three seconds without a heartbeat (the daemon frozen): snapshot again.
        assert daemon.proc is not None
        mirror.poll(0.05)
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        thaw = threading.Timer(3.6, os.kill, (daemon.proc.pid, signal.SIGCONT))
        try:
            thaw.start()
            time.sleep(3.1)
            mirror.poll(0.0)  # nothing came for 3 s: it re-snapshots, answered once thawed
        finally:
            thaw.join()
        assert mirror.resyncs == 3, mirror.last_error
        assert mirror.synced
        client.session_logoff(lost["token"])
        mirror_matches(mirror, settle(client, mirror), sessions=True)
    finally:
        mirror.close()


def test_mirror_follows_a_restart_to_the_new_epoch(daemon: DaemonProc, client: Client) -> None:
    client.session_logon("alpha", NEW)
    mirror = StatusMirror(daemon.runtime, "", client=daemon.client())
    watcher = Sub(daemon, "daemon")
    try:
        mirror.start()
        old_epoch = mirror.state.epoch
        assert len(mirror.sessions) == 1
        daemon.stop()
        stopping = watcher.until(lambda e: e.topic == "daemon")[-1]
        assert stopping.type == "stopping" and stopping.msg["epoch"] == old_epoch
        daemon.start()
        with daemon.client() as fresh:
            new_epoch = fresh.daemon_hello()["epoch"]
            assert new_epoch != old_epoch
            logon = fresh.session_logon("beta", NEW)
            deadline = time.monotonic() + 8
            while (
                mirror.state.epoch != new_epoch or logon["session"] not in mirror.sessions
            ) and time.monotonic() < deadline:
                mirror.poll(0.1)
            assert mirror.state.epoch == new_epoch
            assert mirror.resyncs >= 2
            mirror_matches(mirror, settle(fresh, mirror), sessions=True)
            assert list(mirror.sessions) == [logon["session"]]
    finally:
        mirror.close()
        watcher.close()


def test_a_slow_subscriber_loses_events_at_the_hwm_and_recovers_by_snapshot(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    proc = make_daemon(
        config='default_profile = "alpha"\nevents_hwm = 20\n',
        profiles={"alpha": standard_profile(tmp_path / "alpha")},
    )
    client = proc.client()
    slow: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
    slow.setsockopt(zmq.RCVHWM, 10)
    slow.setsockopt(zmq.RCVBUF, 4096)
    slow.setsockopt(zmq.LINGER, 0)
    slow.connect(connection_file(proc)["events"])
    slow.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        assert slow.recv_multipart()[0] == b"hb"  # step 2 of the recipe
        state = MirrorState(prefix="")
        state.load_snapshot([dict(client.daemon_snapshot())])
        kept = client.session_logon("alpha", NEW)
        for _ in range(100):  # about 1 200 events while the subscriber reads nothing
            client.session_logoff(client.session_logon("alpha", NEW)["token"])
        published = client.daemon_snapshot()["seq"]
        seqs: list[int] = []
        resyncs = 0
        # Read on until a heartbeat from after the burst: its seq may reveal a gap too.
        while slow.poll(3000, zmq.POLLIN):
            topic_b, data = slow.recv_multipart()
            topic, event = topic_b.decode(), client_decode(data)
            if topic != "hb":
                seqs.append(event["seq"])
            try:
                state.apply(topic, event)
            except Resync:
                resyncs += 1
                state.load_snapshot([dict(client.daemon_snapshot())])
            if topic == "hb" and event["seq"] == published == state.last_seq:
                break
        assert len(seqs) < published - 1, "nothing was dropped at the high-water mark"
        assert resyncs >= 1
        assert proc.proc is not None and proc.proc.poll() is None
        final = client.daemon_snapshot()
        assert state.last_seq == final["seq"]
        assert set(state.sessions) == {kept["session"]} == {s["session"] for s in final["sessions"]}
        rows = {bytes(r["PR_INSTANCE_KEY"]): r for r in final["status"][kept["session"]]}
        assert state.tables[kept["session"]] == rows
    finally:
        slow.close(linger=0)


def client_decode(data: bytes) -> dict[str, Any]:
    """Decode an event the way the client library does (timestamps as datetimes)."""
    from mapid.wire.codec import unpack as library_unpack

    event: dict[str, Any] = library_unpack(data)
    return event


# -- the daemon topic ------------------------------------------------------------------------


def test_daemon_events_started_reloaded_reload_failed_stopping(
    make_daemon: DaemonFactory,
) -> None:
    # Explicit reloads only: with the file watcher on, a loaded machine could let the
    # watcher apply an edit first and publish an event of its own (tests/test_watch_reload.py
    # covers the watcher).
    daemon = make_daemon(config='default_profile = "alpha"\nwatch = "off"\n')
    client = daemon.client()
    watcher = Sub(daemon, "daemon", "hb")
    try:
        watcher.heartbeat()
        # `started` went out before anyone could subscribe: it was seq 1, the daemon topic's
        # first event, so the next daemon event points back at it.
        assert client.daemon_snapshot()["seq"] == 1
        report = client.daemon_reload()
        event = watcher.until(lambda e: e.topic == "daemon")[-1]
        assert event.type == "reloaded" and event.msg["prev"] == 1 and event.seq == 2
        assert set(event.msg) >= RELOAD_KEYS
        assert {k: event.msg[k] for k in RELOAD_KEYS} == {k: report[k] for k in RELOAD_KEYS}
        assert event.msg["ok"] is True and event.msg["errors"] == []

        profiles = daemon.config_dir / "profiles"
        (profiles / "gamma.toml").write_text(standard_profile(daemon.root / "gamma"))
        client.daemon_reload()
        added = watcher.until(lambda e: e.topic == "daemon")[-1]
        assert added.type == "reloaded" and added.msg["added"] == ["gamma"]
        assert added.msg["gen"] == event.msg["gen"] + 1

        (profiles / "broken.toml").write_text(
            '# a profile with a typo\n[services.mail]\nservice = "maildir\npath = "/tmp"\n'
        )
        (profiles / "delta.toml").write_text(standard_profile(daemon.root / "delta"))
        report = client.daemon_reload()
        failed = watcher.until(lambda e: e.topic == "daemon")[-1]
        assert failed.type == "reload_failed" and failed.msg["ok"] is False
        assert failed.msg["prev"] == added.seq
        assert failed.msg["added"] == ["delta"]  # what did apply is still said
        (error,) = failed.msg["errors"]
        assert Path(error["file"]).name == "broken.toml"
        assert error["line"] == 3 and error["message"]
        assert {k: failed.msg[k] for k in RELOAD_KEYS} == {k: report[k] for k in RELOAD_KEYS}
        assert client.daemon_reload(check=True)["ok"] is False  # applies nothing
        assert [e for e in watcher.during(0.3) if e.topic != "hb"] == []

        # SIGHUP always publishes one of the two, even with nothing new to apply.
        (profiles / "broken.toml").unlink()
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        hup = watcher.until(lambda e: e.topic == "daemon")[-1]
        assert hup.type == "reloaded" and hup.msg["prev"] == failed.seq
        daemon.proc.send_signal(signal.SIGHUP)
        again = watcher.until(lambda e: e.topic == "daemon")[-1]
        assert again.type == "reloaded" and again.msg["added"] == again.msg["changed"] == []
        daemon.stop()
        stopping = watcher.until(lambda e: e.topic == "daemon")[-1]
        assert stopping.type == "stopping" and stopping.msg["prev"] == again.seq
    finally:
        watcher.close()


def test_a_profile_deleted_by_hand_orphans_its_sessions(
    daemon: DaemonProc, client: Client, sub: Sub
) -> None:
    profile = daemon.config_dir / "profiles" / "gamma.toml"
    profile.write_text(standard_profile(daemon.root / "gamma"))
    client.daemon_reload()
    logon = client.session_logon("gamma", NEW)
    topic = f"session.{logon['session']}"
    logged_on = sub.until(of_type(topic, "logon"))[-1]
    profile.unlink()
    assert client.daemon_reload()["removed"] == ["gamma"]
    found = sub.until(lambda e: e.topic == topic or e.type == "reloaded", 3.0)
    orphaned = [e for e in sub.drain(0.3) + found if e.topic == topic]
    assert [e.type for e in orphaned] == ["orphaned"], (
        "docs/protocol.md 7.1, docs/design.md 8: a hand-deleted profile file leaves its sessions "
        f"running, marked orphaned, with an `orphaned` event; got {[e.type for e in orphaned]}"
    )
    event = orphaned[0]
    assert event.msg["prev"] == logged_on.seq
    assert event.msg["session"] == logon["session"]
    assert event.msg["info"]["state"] == "orphaned"
    (info,) = [s for s in client.daemon_sessions()["sessions"] if s["session"] == logon["session"]]
    assert info["state"] == "orphaned"
    assert client.session_status_table(logon["token"])["rows"]  # still running
    client.session_logoff(logon["token"])
    assert sub.until(of_type(topic, "logoff"))[-1].msg["prev"] >= event.seq


# -- 7.4 private notifications ---------------------------------------------------------------


class Dealer:
    """A hand-made DEALER that sees every frame the daemon sends it."""

    def __init__(self, daemon: DaemonProc) -> None:
        self.sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(connection_file(daemon)["request"])
        self.n = 0
        self.notifications: list[dict[str, Any]] = []

    def close(self) -> None:
        self.sock.close(linger=0)

    def _read(self, timeout: float) -> dict[str, Any] | None:
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        frames = self.sock.recv_multipart()
        assert len(frames) == 2 and frames[0] == b""
        payload: dict[str, Any] = unpack(frames[1])
        if "id" not in payload:
            assert set(payload) == {"v", "notify"} and payload["v"] == 1, payload
            self.notifications.append(payload["notify"])
        return payload

    def call(self, op: str, args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        self.n += 1
        req_id = self.n
        self.sock.send_multipart(
            [b"", pack({"v": 1, "id": req_id, "op": op, "args": args or {}, **extra})]
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            payload = self._read(deadline - time.monotonic())
            if payload is not None and payload.get("id") == req_id:
                return payload
        raise AssertionError(f"no reply to {op}")

    def ok(self, op: str, args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        reply = self.call(op, args, **extra)
        assert reply["ok"] is True, reply
        result: dict[str, Any] = reply["result"]
        return result

    def notification(self, timeout: float = 3.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while not self.notifications:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._read(left)
        return self.notifications.pop(0)


@pytest.fixture
def dealers(daemon: DaemonProc) -> Iterator[list[Dealer]]:
    made = [Dealer(daemon) for _ in range(3)]
    yield made
    for d in made:
        d.close()


def test_own_logoff_sends_fnev_extended_to_the_members_session_advises(
    dealers: list[Dealer],
) -> None:
    a = dealers[0]
    logon = a.ok("session.logon", {"profile": "alpha", "flags": NEW})
    token = logon["token"]
    connection = a.ok(
        "session.advise", {"entryid": None, "event_mask": ["fnevExtended"]}, token=token
    )["connection"]
    assert isinstance(connection, int) and connection != 0
    assert a.ok("session.logoff", token=token) == {}
    note = a.notification()
    assert note is not None
    assert note["connection"] == connection and note["event"] == "fnevExtended"
    assert note["session"] == logon["session"] and "extended_event" in note


def test_a_shared_logoff_ends_the_session_for_every_member(
    daemon: DaemonProc, dealers: list[Dealer]
) -> None:
    a, b, _ = dealers
    first = a.ok("session.logon", {"profile": "alpha", "flags": NEW_SHARED})
    second = b.ok("session.logon", {"flags": 0})
    assert second["session"] == first["session"]
    mask = ["fnevCriticalError", "fnevExtended"]
    conn_a = a.ok("session.advise", {"event_mask": mask}, token=first["token"])["connection"]
    conn_b = b.ok("session.advise", {"event_mask": mask}, token=second["token"])["connection"]
    assert b.ok("session.logoff", {"flags": ["MAPI_LOGOFF_SHARED"]}, token=second["token"]) == {}
    critical = a.notification()
    assert critical is not None and critical["event"] == "fnevCriticalError"
    assert critical["connection"] == conn_a and critical["session"] == first["session"]
    error = critical["error"]
    assert set(error) == {"code", "hresult", "message", "retryable", "details"}
    assert error["code"] == "MAPI_E_END_OF_SESSION" and error["hresult"] == END_OF_SESSION_HRESULT
    own = b.notification()
    assert own is not None and own["event"] == "fnevExtended" and own["connection"] == conn_b
    assert b.notification(0.3) is None  # the one logging off gets no critical error
    reply = a.call("session.status_table", token=first["token"])
    assert reply["ok"] is False and reply["error"]["code"] == "MAPI_E_END_OF_SESSION"
    assert a.ok("daemon.sessions")["sessions"] == []


@pytest.mark.parametrize(
    "mask",
    [["fnevNewMail"], ["fnevObjectModified", "fnevExtended"], 0x00000100, ["fnevTableModified"]],
)
def test_session_advise_takes_only_session_events(dealers: list[Dealer], mask: Any) -> None:
    a = dealers[0]
    token = a.ok("session.logon", {"profile": "alpha", "flags": NEW})["token"]
    reply = a.call("session.advise", {"entryid": None, "event_mask": mask}, token=token)
    assert reply["ok"] is False and reply["error"]["code"] == "MAPI_E_NO_SUPPORT"
    reply = a.call("session.advise", {"event_mask": mask}, token=token)  # absent: the session
    assert reply["ok"] is False and reply["error"]["code"] == "MAPI_E_NO_SUPPORT"


def test_a_provider_notification_reaches_the_advising_client(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    proc = make_daemon(
        profiles={
            "alpha": standard_profile(tmp_path / "alpha"),
            "notes": '[services.notes]\nservice = "providers_for_tests:NotifyingStore"\n',
        }
    )
    advising, acting = Dealer(proc), Dealer(proc)
    try:
        logon = advising.ok("session.logon", {"profile": "notes", "flags": NEW})
        token = logon["token"]
        store = advising.ok("session.open_entry", {"entryid": NOTIFY_STORE_ENTRYID}, token=token)
        assert store["object_type"] == MAPI_STORE
        store_entryid = store["props"]["PR_ENTRYID"]
        connection = advising.ok(
            "session.advise",
            {"entryid": store_entryid, "event_mask": ["fnevObjectModified"]},
            token=token,
        )["connection"]
        rows = acting.ok("session.status_table", token=token)["rows"]
        row = next(
            r for r in rows if r["PR_PROVIDER_DLL_NAME"] == "providers_for_tests:NotifyingStore"
        )
        handle = acting.ok("session.open_entry", {"entryid": row["PR_ENTRYID"]}, token=token)
        assert (
            acting.ok(
                "status.validate_state", {"handle": handle["handle"], "flags": 0}, token=token
            )
            == {}
        )
        note = advising.notification()
        assert note is not None, "no fnevObjectModified"
        assert note["event"] == "fnevObjectModified" and note["connection"] == connection
        assert note["session"] == logon["session"]
        assert note["entryid"] == store_entryid and note["object_type"] == MAPI_STORE
        assert "parent_entryid" in note
        assert acting.notification(0.3) is None  # only the advising client hears it
        assert advising.ok("session.unadvise", {"connection": connection}, token=token) == {}
        acting.ok("status.validate_state", {"handle": handle["handle"], "flags": 0}, token=token)
        assert advising.notification(0.5) is None
    finally:
        advising.close()
        acting.close()
