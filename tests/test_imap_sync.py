"""How the `imap` store resyncs, shows a long sync, and notices a resume from suspend.

Against a real Dovecot on loopback (tests/dovecot_server.py): a resync after changes that
another client made while mapid was away learns the expunge and the flag change through
CONDSTORE (UID SEARCH by UIDNEXT and MODSEQ, FLAGS of the changed messages alone; sync.py
says why not QRESYNC), and a server without CONDSTORE gets the full UID comparison; a sync
of a few hundred new messages shows PR_REMOTE_PROGRESS in the status row and clears it; the
suspend detector (idle.py) is fed clock readings, since no test can suspend the machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq
from dbus_daemon import DBusFactory, dbus_fixture, emit  # noqa: F401 (the fixture)
from imapclient import IMAPClient
from test_imap_store import Mapi, StatusEvents, imap_profile, mime

from mapid.constants import MessageFlags, StatusCode
from mapid.paths import read_connection_file
from mapid.providers.imap.cache import Cache
from mapid.providers.imap.idle import SuspendWatch, clock_jump, clocks
from mapid.providers.imap.sync import greet, sync_folder

from conftest import DaemonFactory, wait_until
from dovecot_server import (  # noqa: F401 (the fixture)
    IMAP_PASSWORD,
    IMAP_USER,
    DovecotFactory,
    DovecotServer,
    dovecot_fixture,
)

READ = int(MessageFlags.MSGFLAG_READ)
OFFLINE = int(StatusCode.STATUS_OFFLINE)
LOGIND = ("/org/freedesktop/login1", "org.freedesktop.login1.Manager", "PrepareForSleep", "b")


class Recorder:
    """An IMAPClient that notes each search and fetch (what they asked for, of which UIDs)."""

    def __init__(self, client: IMAPClient) -> None:
        self.client = client
        self.calls: list[tuple[str, Any, Any]] = []

    def search(self, criteria: Any = "ALL", charset: Any = None) -> Any:
        self.calls.append(("search", criteria, None))
        return self.client.search(criteria, charset)

    def fetch(self, messages: Any, data: Any, modifiers: Any = None) -> Any:
        self.calls.append(("fetch", list(messages), list(data)))
        return self.client.fetch(messages, data, modifiers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def flag_fetches(self) -> list[int]:
        return [
            uid
            for op, uids, data in self.calls
            if op == "fetch" and data == ["FLAGS"]
            for uid in uids
        ]


def connect(server: DovecotServer) -> IMAPClient:
    server.chown_mail()
    client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10)
    client.login(IMAP_USER, IMAP_PASSWORD)
    return client


def seeded(dovecot: DovecotFactory, count: int) -> DovecotServer:
    server = dovecot.start(dovecot.root / "imap-mail")
    imap = server.imapclient()
    for i in range(count):
        imap.append("INBOX", mime(f"Message {i}"), flags=())
    return server


def test_condstore_resync_learns_an_expunge_and_a_flag_change_made_while_away(
    dovecot: DovecotFactory, tmp_path: Path
) -> None:
    server = seeded(dovecot, 6)
    cache = Cache(tmp_path / "cache", "ada@test")
    client = connect(server)
    caps = greet(client)
    assert caps.condstore and caps.qresync  # Dovecot offers both; sync.py uses CONDSTORE
    first = sync_folder(client, cache, "INBOX", {}, None, caps)
    assert first is not None and [r.uid for r in first.added] == [1, 2, 3, 4, 5, 6]
    client.logout()  # mapid is away now

    other = server.imapclient()
    other.select_folder("INBOX")
    other.add_flags([2], [b"\\Seen"])
    other.delete_messages([4])
    other.expunge()
    other.append("INBOX", mime("While away"))

    known = {r.uid: r.flags for r in first.added}
    again = Recorder(connect(server))
    caps = greet(again.client)  # once a connection: ENABLE is for before a SELECT
    result = sync_folder(again, cache, "INBOX", known, first.marks, caps)  # type: ignore[arg-type]
    assert result is not None
    assert result.gone == [4]
    assert result.flags == {2: ("\\Seen",)}
    assert [r.uid for r in result.added] == [7]
    assert again.flag_fetches() == [2]  # FLAGS of the changed message alone
    assert ("search", ["MODSEQ", str(first.marks.highestmodseq + 1)], None) in again.calls
    assert sorted(cache.records("INBOX")) == [1, 2, 3, 5, 6, 7]

    # Nothing changed since: EXAMINE alone, no search, no fetch.
    quiet = Recorder(again.client)
    known = {uid: r.flags for uid, r in cache.records("INBOX").items()}
    unchanged = sync_folder(quiet, cache, "INBOX", known, result.marks, caps)  # type: ignore[arg-type]
    assert unchanged is not None and not unchanged.changed and quiet.calls == []

    # A flag change alone: the count says nothing was expunged, no UID SEARCH ALL.
    other.remove_flags([2], [b"\\Seen"])
    flagged = Recorder(again.client)
    changed = sync_folder(flagged, cache, "INBOX", known, result.marks, caps)  # type: ignore[arg-type]
    assert changed is not None and changed.flags == {2: ()} and not changed.gone
    assert ("search", "ALL", None) not in flagged.calls
    assert flagged.flag_fetches() == [2]


def test_without_condstore_a_full_uid_comparison(dovecot: DovecotFactory, tmp_path: Path) -> None:
    server = seeded(dovecot, 4)
    cache = Cache(tmp_path / "cache", "ada@test")
    client = connect(server)
    caps = dataclasses.replace(greet(client), condstore=False)  # as a server without it
    first = sync_folder(client, cache, "INBOX", {}, None, caps)
    assert first is not None and first.marks.highestmodseq == 0
    other = server.imapclient()
    other.select_folder("INBOX")
    other.add_flags([1], [b"\\Flagged"])
    other.delete_messages([3])
    other.expunge()
    recorder = Recorder(client)
    known = {r.uid: r.flags for r in first.added}
    result = sync_folder(recorder, cache, "INBOX", known, first.marks, caps)  # type: ignore[arg-type]
    assert result is not None and result.gone == [3] and result.flags == {1: ("\\Flagged",)}
    assert ("search", "ALL", None) in recorder.calls
    assert recorder.flag_fetches() == [1, 2, 4]  # every message still there


def test_the_daemon_learns_what_changed_while_it_was_stopped(
    make_daemon: DaemonFactory, dovecot: DovecotFactory
) -> None:
    server = seeded(dovecot, 3)
    proc = make_daemon(profiles={"alpha": imap_profile(server, poll_interval=600)})
    mapi = Mapi(proc.client())
    everything = {"Message 0", "Message 1", "Message 2"}
    wait_until(lambda: set(mapi.contents("Inbox")) == everything, "the first sync")
    assert proc.stop() == 0
    other = server.imapclient()
    other.select_folder("INBOX")
    other.add_flags([1], [b"\\Seen"])
    other.delete_messages([2])
    other.expunge()
    proc.start()
    again = Mapi(proc.client())

    def synced() -> dict[str, dict[str, Any]] | None:
        rows = again.contents("Inbox")
        return rows if set(rows) == {"Message 0", "Message 2"} else None

    rows = wait_until(synced, "the expunge learned after the restart")
    assert rows["Message 0"]["PR_MESSAGE_FLAGS"] & READ
    assert not rows["Message 2"]["PR_MESSAGE_FLAGS"] & READ


def test_a_long_sync_shows_its_progress_in_the_row_and_clears_it(
    make_daemon: DaemonFactory, dovecot: DovecotFactory
) -> None:
    server = seeded(dovecot, 1)
    proc = make_daemon(profiles={"alpha": imap_profile(server, poll_interval=600)})
    mapi = Mapi(proc.client())
    mapi.client.session_advise(mapi.token, ["fnevNewMail"], mapi.folder_entryid("Inbox"))
    info = read_connection_file(proc.runtime)
    assert info is not None
    sub: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(info.events)
    sub.setsockopt(zmq.SUBSCRIBE, f"status.{mapi.session}".encode())
    rows: list[dict[str, Any]] = []
    try:
        time.sleep(0.5)  # subscribed, and the IDLE connection set up
        server.imapclient().multiappend("INBOX", [mime(f"Bulk {i}") for i in range(300)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(mapi.contents("Inbox")) < 301:
            while sub.poll(50):
                event = msgpack.unpackb(sub.recv_multipart()[1], raw=False)
                row = event.get("row") or {}
                if row.get("PR_PROVIDER_DLL_NAME") == "imap":
                    rows.append(row)
        assert len(mapi.contents("Inbox")) == 301
        while sub.poll(700):  # the last events
            event = msgpack.unpackb(sub.recv_multipart()[1], raw=False)
            row = event.get("row") or {}
            if row.get("PR_PROVIDER_DLL_NAME") == "imap":
                rows.append(row)
    finally:
        sub.close(linger=0)
    shown = [r for r in rows if "PR_REMOTE_PROGRESS" in r]
    assert shown, rows
    assert all(0 <= r["PR_REMOTE_PROGRESS"] < 100 for r in shown)
    assert shown[0]["PR_REMOTE_PROGRESS_TEXT"].startswith("syncing Inbox: ")
    assert shown[0]["PR_REMOTE_PROGRESS_TEXT"].endswith(" of 300")
    assert "PR_REMOTE_PROGRESS" not in rows[-1] and "PR_REMOTE_PROGRESS_TEXT" not in rows[-1]
    assert "PR_REMOTE_PROGRESS" not in mapi.row()


def test_the_suspend_detector_is_fed_clock_readings() -> None:
    # A minute of suspend: the wall clock moved 61 s, the monotonic clock 1 s.
    assert clock_jump((1000.0, 50.0), (1061.0, 51.0)) == 60.0
    assert clock_jump((1000.0, 50.0), (1002.0, 52.0)) == 0.0  # no suspend
    assert clock_jump((1000.0, 50.0), (1003.5, 52.0)) == 0.0  # within the slack
    assert clock_jump((1000.0, 50.0), (900.0, 52.0)) == 0.0  # the clock set back
    wall, mono = clocks()  # CLOCK_BOOTTIME on Linux: it counts a suspend
    assert wall > 0 and mono > 0

    readings = iter([(0.0, 0.0), (1.0, 1.0), (3602.0, 2.0), (3603.0, 3.0)])
    last = (3603.0, 3.0)
    heard: list[float] = []

    async def run() -> None:
        watch = SuspendWatch(heard.append, interval=0.01, read=lambda: next(readings, last))
        watch.start()
        await asyncio.sleep(0.2)
        watch.stop()

    asyncio.run(run())
    assert heard == [3600.0]


def test_logind_prepare_for_sleep_makes_the_account_reconnect_at_once(
    make_daemon: DaemonFactory, dovecot: DovecotFactory, dbus: DBusFactory
) -> None:
    """A real dbus-daemon plays the system bus; the test owns org.freedesktop.login1 on it,
    as logind does, and says PrepareForSleep(false): the machine woke up. The account
    reconnects at once (offline, then online again). The same signal from anyone else on
    the bus is not logind's and changes nothing."""
    server = seeded(dovecot, 1)
    bus = dbus.start()
    proc = make_daemon(
        profiles={"alpha": imap_profile(server, poll_interval=600)},
        env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address},
    )
    mapi = Mapi(proc.client())
    assert not mapi.row()["PR_STATUS_CODE"] & OFFLINE
    events = StatusEvents(proc, mapi.session)
    logind = bus.connect()
    bus.own(logind, "org.freedesktop.login1")
    try:
        emit(logind, *LOGIND, True)  # going to sleep: nothing to do yet
        deadline = time.monotonic() + 15
        row: dict[str, Any] | None = None
        while row is None:  # until the daemon's match rule is in place
            assert time.monotonic() < deadline, f"no reconnect after PrepareForSleep: {events.rows}"
            emit(logind, *LOGIND, False)
            try:
                row = events.wait(
                    lambda r: (
                        r["PR_STATUS_CODE"] & OFFLINE and "logind: resumed" in r["PR_STATUS_STRING"]
                    ),
                    0.5,
                    "offline after the resume",
                )
            except AssertionError:
                continue
        events.wait(lambda r: not r["PR_STATUS_CODE"] & OFFLINE, 10, "online again")
        time.sleep(1.0)  # the repeats sent while waiting have all been heard
        events.rows.clear()

        stranger = bus.connect()  # not the owner of org.freedesktop.login1
        emit(stranger, *LOGIND, False)
        time.sleep(1.5)
        assert not [r for r in events.rows if r["PR_STATUS_CODE"] & OFFLINE], events.rows
    finally:
        events.close()
