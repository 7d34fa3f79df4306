"""Stuck mail through the real daemon: `outbox_alert_s = 1` and an smtp transport whose
server is down (its port closed), so a submitted message stays in the Outbox.

The spooler's row says so first ("1 message waiting longer than 1 s (oldest 2 s); ..."),
`mapictl status` (the real CLI, in a subprocess) shows it on a line of its own and in its
--json, and the desktop (a real dbus-daemon with the tests' notification server) hears of
it once per episode. Once the message is sent, or deleted, the row says what the spooler
does, as before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dbus_daemon import DBusBus, DBusFactory, dbus_fixture  # noqa: F401
from notification_server import NotificationServer
from test_desktop_notifications import deliver
from test_notifications import inotify_watches
from test_spooler import GRACE, Mail, mail_profile, wait_for

from mapid.cli.output import STUCK_MAIL
from mapid.constants import ResourceType
from mapid.daemon.spool import ndr
from mapid.daemon.spool.stuck import QueueAges, duration, stuck_text

from conftest import DEFAULT_CONFIG, DaemonFactory, DaemonProc
from smtp_server import SmtpServer

CONFIG = DEFAULT_CONFIG + "outbox_alert_s = 1\ndesktop_notifications = true\n"
STUCK = "1 message waiting longer than 1 s (oldest "


@pytest.fixture
def bus(dbus: DBusFactory) -> DBusBus:
    return dbus.start()


@pytest.fixture
def desktop(bus: DBusBus) -> Iterator[NotificationServer]:
    server = NotificationServer(bus)
    yield server
    server.stop()


@pytest.fixture
def down(make_smtp_server: Any) -> SmtpServer:
    """An SMTP server that is not running: its port refuses connections."""
    server: SmtpServer = make_smtp_server()
    server.stop()
    return server


def start(
    make_daemon: DaemonFactory, tmp_path: Path, bus: DBusBus, smtp: SmtpServer
) -> tuple[DaemonProc, Mail]:
    daemon = make_daemon(
        profiles={"alpha": mail_profile(tmp_path / "alpha", smtp)},
        config=CONFIG,
        env={"DBUS_SESSION_BUS_ADDRESS": bus.address},
    )
    return daemon, Mail.logon(daemon.client())


def mapictl(daemon: DaemonProc, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(daemon.runtime), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def spooler_row_of_cli(daemon: DaemonProc, session: str) -> dict[str, Any]:
    view = json.loads(mapictl(daemon, "status", "--json"))
    (mine,) = [s for s in view["sessions"] if s["session"] == session]
    (row,) = [r for r in mine["status"] if r["PR_RESOURCE_TYPE"] == "MAPI_SPOOLER"]
    return dict(row)


def test_stuck_mail_is_in_the_row_in_mapictl_and_one_notification(
    make_daemon: DaemonFactory,
    tmp_path: Path,
    bus: DBusBus,
    desktop: NotificationServer,
    down: SmtpServer,
) -> None:
    daemon, mail = start(make_daemon, tmp_path, bus, down)
    mail.send("Going nowhere", to=[GRACE])
    said = wait_for(
        "stuck mail in the row", lambda: STUCK in mail.spooler_says() and mail.spooler_says()
    )
    assert said.startswith(STUCK)
    assert "; 1 queued; next try in 30 s: outgoing: " in said  # then what the spooler does

    (stuck,) = desktop.wait_for(1)
    assert stuck.app_name == "mapid"
    assert stuck.summary == "Mail stuck in the Outbox (alpha)"
    assert stuck.body.startswith(STUCK) and "1 queued; next try in 30 s" in stuck.body
    assert stuck.hints["urgency"] == ("y", 1)

    # The age goes on, and the row with it; the desktop heard of it once.
    wait_for("an older age", lambda: "(oldest 2 s)" in mail.spooler_says())
    text = mapictl(daemon, "status")
    assert "stuck mail: 1 message waiting longer than 1 s (oldest " in text
    row = spooler_row_of_cli(daemon, mail.session)
    assert row["PR_STATUS_STRING"].startswith(STUCK)

    proc = daemon.proc
    assert proc is not None
    new = tmp_path / "alpha" / "Mail" / "new"
    wait_for("the Inbox's watch", lambda: inotify_watches(proc.pid, new))
    deliver(tmp_path / "alpha" / "Mail", ("Grace <grace@example.org>", "Meanwhile"))
    after = desktop.wait_for(2)[1]
    assert after.body == "Meanwhile"  # the next notice is this, not the stuck mail again

    # The server is back: the message goes, and the row says what the spooler does.
    down.start()
    mail.client.status_flush_queues(
        mail.token, mail.status(ResourceType.MAPI_SPOOLER), ["FLUSH_UPLOAD"]
    )
    assert mail.contents("Outbox") == []
    wait_for("the row without stuck mail", lambda: mail.spooler_says() == "idle")
    assert "stuck mail" not in mapictl(daemon, "status")
    assert len(desktop.calls) == 2


def test_a_deleted_message_ends_the_episode_and_the_next_one_is_told_again(
    make_daemon: DaemonFactory,
    tmp_path: Path,
    bus: DBusBus,
    desktop: NotificationServer,
    down: SmtpServer,
) -> None:
    _daemon, mail = start(make_daemon, tmp_path, bus, down)
    mail.send("First", to=[GRACE])
    wait_for("stuck mail", lambda: mail.spooler_says().startswith(STUCK))
    assert [n.summary for n in desktop.wait_for(1)] == ["Mail stuck in the Outbox (alpha)"]

    (queued,) = mail.contents("Outbox")
    mail.client.folder_delete_messages(mail.token, mail.folder("Outbox"), [queued["PR_ENTRYID"]])
    wait_for("the row without stuck mail", lambda: "waiting longer" not in mail.spooler_says())
    assert mail.spooler_says().startswith("1 queued; next try in")  # the spooler's own words

    mail.send("Second", to=[GRACE])  # a new episode: told again
    wait_for("stuck mail again", lambda: mail.spooler_says().startswith(STUCK))
    second = desktop.wait_for(2)[1]
    assert second.summary == "Mail stuck in the Outbox (alpha)"
    assert second.body.startswith(STUCK)


# -- the parts ---------------------------------------------------------------------------------


def test_queue_ages_follow_the_queue() -> None:
    ages = QueueAges()
    assert ages.oldest_age(now=100.0) is None
    assert ages.update([b"a", b"b"], now=100.0) == [b"a", b"b"]  # not read yet: guesses
    ages.note(b"a", datetime.fromtimestamp(40.0, UTC))
    ages.note(b"b", None)  # a store that keeps no submit time: its first sight counts
    assert ages.update([b"a", b"b", b"c"], now=130.0) == [b"c"]
    assert ages.oldest_age(now=130.0) == 90.0
    assert ages.older_than(20.0, now=130.0) == (2, 90.0)  # a (90 s) and b (30 s), not c
    assert ages.update([b"c"], now=140.0) == [b"c"]  # a and b left the queue
    assert (len(ages), ages.older_than(20.0, now=140.0)) == (1, (0, 0.0))


def test_stuck_words() -> None:
    assert stuck_text(2, 900, 47 * 60 + 59) == (
        "2 messages waiting longer than 15 min (oldest 47 min)"
    )
    assert stuck_text(1, 1, 1.7) == "1 message waiting longer than 1 s (oldest 1 s)"
    assert [duration(s) for s in (59.9, 7199, 7200, 3 * 86400)] == [
        "59 s",
        "119 min",
        "2 h",
        "3 days",
    ]
    assert STUCK_MAIL.match(stuck_text(3, 900, 4000) + "; 3 queued")  # what mapictl finds


def test_the_headline_of_a_failed_send() -> None:
    original = b"From: ada@example.org\nSubject: =?utf-8?q?Caf=C3=A9?=\n\nhi\n"
    failures = [
        ndr.Failure("grace@example.org", "Grace Hopper", "550 5.1.1 no such\n user"),
        ndr.Failure("bob@example.org", "", "550 5.1.1 nor him"),
    ]
    assert ndr.headline(original, failures, delivered_to_others=False) == (
        "Could not send 'Café'",
        "Grace Hopper <grace@example.org>: 550 5.1.1 no such user (and 1 more)",
    )
    summary, body = ndr.headline(b"\n\nhi\n", failures[1:], delivered_to_others=True)
    assert (summary, body) == (
        "Could not send '(no subject)' to 1 recipient",
        "<bob@example.org>: 550 5.1.1 nor him",
    )
