"""The `imap` store against a server of few extensions: Dovecot announcing no IDLE, no
CONDSTORE or QRESYNC, no MOVE and no UIDPLUS (dovecot_server.PLAIN_CAPABILITY), as many
older or smaller servers do. What the store does then, each checked on the server:

- new mail is found by polling at `poll_interval` (no IDLE) and still raises fnevNewMail;
- flag changes and expunges by another client are found by a full UID comparison (no
  CONDSTORE);
- a move is COPY, STORE \\Deleted and EXPUNGE (no MOVE), and the UIDs of copies and saved
  messages are found by Message-ID and header fields (no COPYUID or APPENDUID).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_imap_store import Mapi, imap_profile, mime, wait_notification
from test_imap_write import check_append_copy_move_delete, peer

from mapid.constants import MessageFlags

from conftest import DaemonFactory, wait_until
from dovecot_server import (  # noqa: F401 (the fixture)
    PLAIN_CAPABILITY,
    DovecotFactory,
    DovecotServer,
    dovecot_fixture,
)

READ = int(MessageFlags.MSGFLAG_READ)


@pytest.fixture
def server(dovecot: DovecotFactory) -> DovecotServer:
    found = dovecot.start(dovecot.root / "imap-mail", capability=PLAIN_CAPABILITY)
    imap = found.imapclient()
    imap.create_folder("Projects")
    imap.append("INBOX", mime("Welcome", "Hello from the server.\n"), flags=())
    imap.append("INBOX", mime("Read and flagged"), flags=(b"\\Seen", b"\\Flagged"))
    return found


def test_the_server_announces_only_the_plain_extensions(server: DovecotServer) -> None:
    """The premise of this file: were Dovecot to announce more, nothing here would test the
    fallbacks."""
    imap = peer(server)
    caps = {bytes(c).upper() for c in imap.capabilities()}
    imap.logout()
    assert not caps & {b"IDLE", b"CONDSTORE", b"QRESYNC", b"MOVE", b"UIDPLUS", b"NOTIFY"}
    assert b"IMAP4REV1" in caps


def test_polling_finds_new_mail_flag_changes_and_expunges(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    proc = make_daemon(profiles={"alpha": imap_profile(server, poll_interval=1)})
    mapi = Mapi(proc.client())
    assert set(mapi.contents("Inbox")) == {"Welcome", "Read and flagged"}
    mapi.client.session_advise(mapi.token, ["fnevNewMail"], mapi.folder_entryid("Inbox"))

    other = peer(server)
    other.append("INBOX", mime("Polled"))
    note = wait_notification(mapi.client, "fnevNewMail", timeout=10)
    assert mapi.open(note["entryid"])["props"]["PR_SUBJECT"] == "Polled"

    other.select_folder("INBOX")
    by_subject: dict[str, int] = {}
    for uid, data in other.fetch(
        other.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]
    ).items():
        head = data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip()
        by_subject[head.removeprefix("Subject: ")] = uid
    other.add_flags([by_subject["Welcome"]], [b"\\Seen"])
    other.delete_messages([by_subject["Read and flagged"]])
    other.expunge()
    other.logout()

    def synced() -> dict[str, Any] | None:
        rows = mapi.contents("Inbox")
        welcome = rows.get("Welcome")
        if set(rows) == {"Welcome", "Polled"} and welcome and welcome["PR_MESSAGE_FLAGS"] & READ:
            return rows
        return None

    rows = wait_until(synced, "the flag change and the expunge found by polling", timeout=10)
    assert not rows["Polled"]["PR_MESSAGE_FLAGS"] & READ


def test_append_copy_move_and_delete_without_move_or_uidplus(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    check_append_copy_move_delete(make_daemon, server)


def test_no_idle_means_no_push_before_the_poll(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    """Without IDLE the store must not claim push: with a long poll interval new mail waits
    for validate_state (or the next poll), which then finds it at once."""
    proc = make_daemon(profiles={"alpha": imap_profile(server, poll_interval=600)})
    mapi = Mapi(proc.client())
    mapi.client.session_advise(mapi.token, ["fnevNewMail"], mapi.folder_entryid("Inbox"))
    other = peer(server)
    other.append("INBOX", mime("Waiting"))
    other.logout()
    time.sleep(1.5)
    assert "Waiting" not in mapi.contents("Inbox")
    row = mapi.row()
    handle = mapi.client.session_open_entry(mapi.token, row["PR_ENTRYID"])["handle"]
    mapi.client.status_validate_state(mapi.token, handle, 0)
    note = wait_notification(mapi.client, "fnevNewMail", timeout=10)
    assert mapi.open(note["entryid"])["props"]["PR_SUBJECT"] == "Waiting"
