"""Desktop notifications through the real daemon, on a real `dbus-daemon --session` that
the test starts, with the notification server of tests/notification_server.py on it.

The daemon learns the bus from DBUS_SESSION_BUS_ADDRESS. New mail is an MTA's delivery
into a Maildir's new/ (the store raises fnevNewMail); a send that fails for good is a
real aiosmtpd refusing the DATA with a 5xx. "Nothing more came" is never a wait: each test
makes one more notification happen afterwards and checks that it is the next one.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_daemon import DBusBus, DBusFactory, dbus_fixture  # noqa: F401
from notification_server import NotificationServer
from test_notifications import inotify_watches
from test_spooler import GRACE, Mail, mail_profile

from mapid.client import Client

from conftest import DEFAULT_CONFIG, DaemonFactory, DaemonProc, standard_profile, wait_until
from smtp_server import SmtpServer

ON = DEFAULT_CONFIG + "desktop_notifications = true\n"


def deliver(maildir: Path, *mails: tuple[str, str]) -> None:
    """An MTA's delivery of each (From, Subject): written in tmp/, then all renamed into
    new/ at once."""
    names = []
    for n, (sender, subject) in enumerate(mails):
        name = f"{time.time_ns()}.M{n}P{os.getpid()}.host"
        data = f"From: {sender}\nTo: ada@example.org\nSubject: {subject}\n\nhi\n"
        (maildir / "tmp" / name).write_bytes(data.encode())
        names.append(name)
    for name in names:
        os.rename(maildir / "tmp" / name, maildir / "new" / name)


@pytest.fixture
def bus(dbus: DBusFactory) -> DBusBus:
    return dbus.start()


@pytest.fixture
def server(bus: DBusBus) -> Iterator[NotificationServer]:
    notifications = NotificationServer(bus)
    yield notifications
    notifications.stop()


def start(
    make_daemon: DaemonFactory, tmp_path: Path, address: str, config: str = ON, **kw: Any
) -> DaemonProc:
    profiles = kw.pop("profiles", None) or {"alpha": standard_profile(tmp_path / "alpha")}
    env = {"DBUS_SESSION_BUS_ADDRESS": address}
    return make_daemon(profiles=profiles, config=config, env=env, **kw)


def logged_on(daemon: DaemonProc, maildir: Path) -> tuple[Client, bytes]:
    """A session on alpha whose store follows the Inbox (its inotify watch is up)."""
    client = daemon.client()
    token = bytes(client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"])
    proc = daemon.proc
    assert proc is not None
    wait_until(lambda: inotify_watches(proc.pid, maildir / "new") or None, "the Inbox's watch")
    return client, token


def inbox_of(client: Client, token: bytes) -> bytes:
    rows = client.session_msg_stores_table(token)["rows"]
    store = client.session_open_msg_store(token, rows[0]["PR_ENTRYID"], [])
    subtree = client.container_open_entry(
        token, store["handle"], store["props"]["PR_IPM_SUBTREE_ENTRYID"]
    )
    rows = client.container_hierarchy_table(token, subtree["handle"])["rows"]
    return bytes(next(r["PR_ENTRYID"] for r in rows if r["PR_DISPLAY_NAME"] == "Inbox"))


def heard_new_mail(client: Client, count: int = 1) -> None:
    """The client's Inbox advise heard `count` fnevNewMail."""
    seen = 0
    deadline = time.monotonic() + 10
    while seen < count:
        note = client.recv_notification(timeout=max(0.0, deadline - time.monotonic()))
        assert note is not None, f"{seen} fnevNewMail of {count}"
        seen += note["event"] == "fnevNewMail"


# -- new mail ----------------------------------------------------------------------------------


def test_one_new_message_is_one_notification_with_sender_and_subject(
    make_daemon: DaemonFactory, tmp_path: Path, bus: DBusBus, server: NotificationServer
) -> None:
    daemon = start(make_daemon, tmp_path, bus.address)
    logged_on(
        daemon, tmp_path / "alpha" / "Mail"
    )  # no advise: the desktop hears of new mail all the same
    maildir = tmp_path / "alpha" / "Mail"
    deliver(maildir, ("Grace Hopper <grace@example.org>", "Compilers & <you>"))
    (first,) = server.wait_for(1)
    assert first.app_name == "mapid"
    assert first.summary == "New mail from Grace Hopper"
    assert first.body == "Compilers &amp; &lt;you&gt;"  # the server takes markup: escaped
    assert first.hints["category"] == ("s", "email.arrived")
    assert first.replaces_id == 0 and first.actions == [] and first.expire_timeout == -1
    assert "GetCapabilities" in server.members

    deliver(maildir, ("bob@example.org", "Second"))  # the next one is this one: no repeat
    second = server.wait_for(2)[1]
    assert (second.summary, second.body) == ("New mail from bob@example.org", "Second")
    assert second.sender == first.sender  # one connection, kept open between them


def test_five_at_once_are_one_notification(
    make_daemon: DaemonFactory, tmp_path: Path, bus: DBusBus, server: NotificationServer
) -> None:
    daemon = start(make_daemon, tmp_path, bus.address)
    logged_on(daemon, tmp_path / "alpha" / "Mail")
    maildir = tmp_path / "alpha" / "Mail"
    deliver(maildir, *[(f"user{n}@example.org", f"Burst {n}") for n in range(5)])
    (burst,) = server.wait_for(1)
    assert (burst.app_name, burst.summary) == ("mapid", "5 new messages")
    deliver(maildir, ("Grace <grace@example.org>", "After the burst"))
    assert server.wait_for(2)[1].body == "After the burst"


def test_two_sessions_of_one_profile_see_the_message_once(
    make_daemon: DaemonFactory, tmp_path: Path, bus: DBusBus, server: NotificationServer
) -> None:
    daemon = start(make_daemon, tmp_path, bus.address)
    clients = []
    for _ in range(2):  # each advises, so each session's store surely follows the Inbox
        client, token = logged_on(daemon, tmp_path / "alpha" / "Mail")
        client.session_advise(token, ["fnevNewMail"], inbox_of(client, token))
        clients.append(client)
    deliver(tmp_path / "alpha" / "Mail", ("Grace <grace@example.org>", "Seen twice"))
    for client in clients:
        heard_new_mail(client)  # both sessions raised fnevNewMail for it
    (only,) = server.wait_for(1)
    # Counted twice, the two would have been one "2 new messages" within the burst.
    assert (only.summary, only.body) == ("New mail from Grace", "Seen twice")
    deliver(tmp_path / "alpha" / "Mail", ("Bob <bob@example.org>", "Next"))
    assert server.wait_for(2)[1].body == "Next"


def test_off_by_default_then_on_at_a_reload(
    make_daemon: DaemonFactory, tmp_path: Path, bus: DBusBus, server: NotificationServer
) -> None:
    daemon = start(make_daemon, tmp_path, bus.address, config=DEFAULT_CONFIG)
    client, token = logged_on(daemon, tmp_path / "alpha" / "Mail")
    client.session_advise(token, ["fnevNewMail"], inbox_of(client, token))
    maildir = tmp_path / "alpha" / "Mail"
    deliver(maildir, ("Grace <grace@example.org>", "Unannounced"))
    heard_new_mail(client)  # the daemon has seen it, with notifications off
    (daemon.config_dir / "mapid.toml").write_text(ON)
    assert client.daemon_reload()["ok"]
    deliver(maildir, ("Grace <grace@example.org>", "Announced"))
    heard_new_mail(client)
    (first,) = server.wait_for(1)
    assert first.body == "Announced"  # not "Unannounced", nor "2 new messages"


# -- no bus, no server -------------------------------------------------------------------------


def not_shown(daemon: DaemonProc) -> list[str]:
    """The log's lines about a notification that did not reach the desktop."""
    return [line for line in daemon.log().splitlines() if "notification not shown" in line]


def test_no_bus_is_one_log_line_and_the_daemon_works_on(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    nowhere = f"unix:path={tmp_path / 'no-bus-here'}"
    config = ON + 'log_level = "debug"\n'
    daemon = start(make_daemon, tmp_path, nowhere, config=config)
    client, _token = logged_on(daemon, tmp_path / "alpha" / "Mail")
    maildir = tmp_path / "alpha" / "Mail"
    deliver(maildir, ("Grace <grace@example.org>", "One"))
    wait_until(lambda: not_shown(daemon) or None, "the log line")
    deliver(maildir, ("Grace <grace@example.org>", "Two"))
    wait_until(lambda: len(not_shown(daemon)) > 1 or None, "the second notification")
    first, second = not_shown(daemon)
    assert " WARNING mapid.desktop: " in first
    assert "cannot reach the session bus: [Errno 2] No such file or directory" in first
    assert "tried again in 60 s" in first
    assert " DEBUG mapid.desktop: " in second and "no bus until the next try" in second
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert client.daemon_hello()["pid"] == daemon.proc.pid  # it answers as ever


def test_no_notification_server_is_one_log_line_until_one_answers(
    make_daemon: DaemonFactory, tmp_path: Path, bus: DBusBus
) -> None:
    config = ON + 'log_level = "debug"\n'
    daemon = start(make_daemon, tmp_path, bus.address, config=config)
    client, _token = logged_on(daemon, tmp_path / "alpha" / "Mail")
    maildir = tmp_path / "alpha" / "Mail"
    deliver(maildir, ("Grace <grace@example.org>", "One"))
    wait_until(lambda: not_shown(daemon) or None, "the log line")
    deliver(maildir, ("Grace <grace@example.org>", "Two"))
    wait_until(lambda: len(not_shown(daemon)) > 1 or None, "the second try")
    first, second = not_shown(daemon)
    assert " WARNING mapid.desktop: " in first
    assert "no notification server on the session bus" in first
    assert " DEBUG mapid.desktop: " in second
    assert daemon.proc is not None
    assert client.daemon_hello()["pid"] == daemon.proc.pid

    server = NotificationServer(bus)  # a desktop that comes up late: the same connection
    try:
        deliver(maildir, ("Grace <grace@example.org>", "Three"))
        (shown,) = server.wait_for(1)
        assert shown.body == "Three"
        again = "reach the desktop again"  # logged once the reply is in
        wait_until(lambda: again in daemon.log() or None, "the daemon to hear the answer")
        assert len(not_shown(daemon)) == 2
    finally:
        server.stop()


# -- a send that failed for good ---------------------------------------------------------------


def test_a_send_refused_for_good_is_one_notification(
    make_daemon: DaemonFactory,
    tmp_path: Path,
    bus: DBusBus,
    server: NotificationServer,
    make_smtp_server: Any,
) -> None:
    smtp: SmtpServer = make_smtp_server()
    smtp.answer_data("554 5.6.0 content refused")
    profiles = {"alpha": mail_profile(tmp_path / "alpha", smtp)}
    daemon = start(make_daemon, tmp_path, bus.address, profiles=profiles)
    mail = Mail.logon(daemon.client())
    mail.send("Refused whole", to=[GRACE])
    (failed,) = server.wait_for(1)
    assert failed.app_name == "mapid"
    assert failed.summary == "Could not send 'Refused whole'"
    assert failed.body == (
        "Grace Hopper &lt;grace@example.org&gt;: DATA refused: 554 5.6.0 content refused"
    )
    assert failed.hints["category"] == ("s", "email.bounced")
    wait_until(lambda: mail.contents("Inbox") or None, "the report in the Inbox")
    # The report is new mail too, but this notification said it: the next is other mail.
    deliver(tmp_path / "alpha" / "Mail", ("Bob <bob@example.org>", "Unrelated"))
    assert server.wait_for(2)[1].body == "Unrelated"


def test_a_bus_that_restarted_is_connected_to_again(
    make_daemon: DaemonFactory,
    tmp_path: Path,
    dbus: DBusFactory,
    bus: DBusBus,
    server: NotificationServer,
) -> None:
    daemon = start(make_daemon, tmp_path, bus.address)
    maildir = tmp_path / "alpha" / "Mail"
    logged_on(daemon, maildir)
    deliver(maildir, ("Grace <grace@example.org>", "Before"))
    assert server.wait_for(1)[0].body == "Before"
    server.stop()
    bus.stop()  # the daemon's connection ends with it

    again = restart(dbus, bus)
    later = NotificationServer(again)
    try:
        deliver(maildir, ("Grace <grace@example.org>", "After"))
        assert later.wait_for(1)[0].body == "After"
    finally:
        later.stop()
    assert not not_shown(daemon)  # a broken connection is opened again, no failure


def restart(dbus: DBusFactory, bus: DBusBus) -> DBusBus:
    """A new dbus-daemon on the address of `bus`, which has stopped."""
    address = bus.address.split(",")[0]
    log = Path(address.removeprefix("unix:path=")).with_name("restarted.log")
    read, write = os.pipe()
    proc = subprocess.Popen(
        [
            dbus.exe,
            "--session",
            "--nofork",
            "--nopidfile",
            f"--address={address}",
            f"--print-address={write}",
        ],
        pass_fds=(write,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # noqa: SIM115 (the child keeps it)
    )
    os.close(write)
    with os.fdopen(read, "rb") as printed:
        line = printed.readline().decode().strip()
    assert line, f"dbus-daemon did not start again: see {log}"
    again = DBusBus(line, proc)
    dbus.buses.append(again)
    return again
