"""The `imap` message store against a real Dovecot on loopback (tests/dovecot_server.py).

The daemon logs on to an IMAP account that another mail client (IMAPClient, from the
test) fills: special-use folders map onto MAPI's, contents tables come from the cache,
opened messages fetch their bodies once, entry IDs outlive a daemon restart, new mail is
pushed through IDLE, and stopping and restarting Dovecot under a live session turns the
status row offline (with the reason) and back. Never a mock: without Dovecot these skip,
except under CI, where they fail (dovecot_server's rule).
"""

from __future__ import annotations

import email.policy
import re
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import msgpack
import pytest
import zmq

from mapid.client import Client
from mapid.constants import FlagStatus, MessageFlags, StatusCode
from mapid.errors import ErrorCode, MapidError
from mapid.paths import read_connection_file
from mapid.providers.imap import ImapService

from conftest import DaemonFactory, DaemonProc, wait_until
from dovecot_server import (  # noqa: F401 (the fixture)
    IMAP_PASSWORD,
    IMAP_USER,
    DovecotFactory,
    DovecotServer,
    dovecot_fixture,
)

READ = int(MessageFlags.MSGFLAG_READ)
OFFLINE = int(StatusCode.STATUS_OFFLINE)
COLUMNS = ["PR_ENTRYID", "PR_SUBJECT", "PR_MESSAGE_FLAGS", "PR_FLAG_STATUS", "PR_SENDER_NAME"]


def mime(subject: str, body: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Grace Hopper <grace@example.org>"
    msg["To"] = "Ada Lovelace <ada@example.org>"
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg.set_content(body or f"This is {subject!r}.\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def imap_profile(server: DovecotServer, **extra: Any) -> str:
    values: dict[str, Any] = {
        "service": "imap",
        "host": "127.0.0.1",
        "port": server.port,
        "security": "none",
        "username": IMAP_USER,
        "password_command": ["printf", "%s", IMAP_PASSWORD],
        "primary_store": True,
        "poll_interval": 1,
        "timeout": 5,
    }
    values.update(extra)
    lines = ["autologon = false", "[services.mail]"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value}")
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


class Mapi:
    """One logon, its default (the IMAP) store, and folder look-ups by name."""

    def __init__(self, client: Client, profile: str = "alpha") -> None:
        self.client = client
        logged = client.session_logon(profile, ["MAPI_NEW_SESSION"])
        self.token: bytes = logged["token"]
        self.session = str(logged["session"])
        rows = client.session_msg_stores_table(self.token)["rows"]
        row = next(r for r in rows if r.get("PR_DEFAULT_STORE"))
        self.store_entryid: bytes = row["PR_ENTRYID"]
        store = client.session_open_msg_store(self.token, row["PR_ENTRYID"], ["MDB_WRITE"])
        self.store_props: dict[str, Any] = store["props"]

    def open(self, entryid: bytes) -> dict[str, Any]:
        opened: dict[str, Any] = self.client.session_open_entry(
            self.token, entryid, ["MAPI_MODIFY"]
        )
        return opened

    def children(self, entryid: bytes) -> list[dict[str, Any]]:
        handle = self.open(entryid)["handle"]
        rows: list[dict[str, Any]] = self.client.container_hierarchy_table(
            self.token, handle, {"columns": ["PR_ENTRYID", "PR_DISPLAY_NAME", "PR_SUBFOLDERS"]}
        )["rows"]
        return rows

    def folder_entryid(self, *path: str) -> bytes:
        entryid: bytes = self.store_props["PR_IPM_SUBTREE_ENTRYID"]
        for name in path:
            rows = self.children(entryid)
            found = [r["PR_ENTRYID"] for r in rows if r.get("PR_DISPLAY_NAME") == name]
            assert found, f"no folder {name!r} among {[r.get('PR_DISPLAY_NAME') for r in rows]}"
            entryid = found[0]
        return entryid

    def contents(self, *path: str) -> dict[str, dict[str, Any]]:
        handle = self.open(self.folder_entryid(*path))["handle"]
        rows = self.client.container_contents_table(self.token, handle, {"columns": COLUMNS})
        return {row.get("PR_SUBJECT", ""): row for row in rows["rows"]}

    def row(self) -> dict[str, Any]:
        rows = self.client.session_status_table(self.token)["rows"]
        [row] = [r for r in rows if r.get("PR_PROVIDER_DLL_NAME") == "imap"]
        return dict(row)


class StatusEvents:
    """TABLE_ROW_MODIFIED events of the imap row of one session, from the PUB socket."""

    def __init__(self, daemon: DaemonProc, session: str) -> None:
        info = read_connection_file(daemon.runtime)
        assert info is not None
        self.sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(info.events)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"hb")
        self.sock.setsockopt(zmq.SUBSCRIBE, f"status.{session}".encode())
        self.rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while not self._one(deadline - time.monotonic(), heartbeat=True):
            assert time.monotonic() < deadline, "no heartbeat"

    def _one(self, timeout: float, *, heartbeat: bool = False) -> bool:
        if not self.sock.poll(max(0, int(timeout * 1000))):
            return False
        topic, data = self.sock.recv_multipart()
        event = msgpack.unpackb(data, raw=False, strict_map_key=False)
        row = event.get("row") or {}
        if event.get("type") == "TABLE_ROW_MODIFIED" and row.get("PR_PROVIDER_DLL_NAME") == "imap":
            self.rows.append(row)
        return heartbeat and topic == b"hb"

    def wait(self, check: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for row in self.rows:
                if check(row):
                    self.rows.clear()
                    return row
            left = deadline - time.monotonic()
            assert left > 0, f"no imap row {what} within {timeout} s: {self.rows}"
            self._one(left)

    def close(self) -> None:
        self.sock.close(linger=0)


def wait_notification(client: Client, event: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        note = client.recv_notification(timeout=max(0.0, deadline - time.monotonic()))
        if note is None:
            break
        if note.get("event") == event:
            return note
        seen.append(note.get("event"))
    raise AssertionError(f"no {event} within {timeout} s (got {seen})")


@pytest.fixture
def server(dovecot: DovecotFactory) -> DovecotServer:
    """A Dovecot account with two Inbox messages (one read and flagged), Junk and a
    hierarchy of its own."""
    found = dovecot.start(dovecot.root / "imap-mail")
    imap = found.imapclient()
    imap.create_folder("Junk")
    imap.create_folder("Projects")
    imap.create_folder("Projects.2026")
    imap.append("INBOX", mime("Welcome", "Hello from the server.\n"), flags=())
    imap.append("INBOX", mime("Read and flagged"), flags=(b"\\Seen", b"\\Flagged"))
    imap.append("Projects.2026", mime("Plans"))
    return found


def test_logon_maps_the_special_use_folders_and_the_hierarchy(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    proc = make_daemon(profiles={"alpha": imap_profile(server)})
    mapi = Mapi(proc.client())
    top = mapi.children(mapi.store_props["PR_IPM_SUBTREE_ENTRYID"])
    names = [r["PR_DISPLAY_NAME"] for r in top]
    assert names == ["Inbox", "Outbox", "Sent Items", "Deleted Items", "Drafts", "Junk", "Projects"]
    by_name = {r["PR_DISPLAY_NAME"]: r for r in top}
    same = mapi.client.session_compare_entryids
    for tag, name in (
        ("PR_IPM_SENTMAIL_ENTRYID", "Sent Items"),
        ("PR_IPM_WASTEBASKET_ENTRYID", "Deleted Items"),
        ("PR_IPM_DRAFTS_ENTRYID", "Drafts"),
        ("PR_IPM_OUTBOX_ENTRYID", "Outbox"),
    ):
        assert same(mapi.token, mapi.store_props[tag], by_name[name]["PR_ENTRYID"])["equal"], tag
    assert by_name["Projects"]["PR_SUBFOLDERS"] is True
    assert [r["PR_DISPLAY_NAME"] for r in mapi.children(by_name["Projects"]["PR_ENTRYID"])] == [
        "2026"
    ]
    assert set(mapi.contents("Projects", "2026")) == {"Plans"}
    assert mapi.contents("Outbox") == {}  # local to mapid: nothing queued
    row = mapi.row()
    assert not row["PR_STATUS_CODE"] & OFFLINE, row
    assert row["PR_STATUS_CODE"] & StatusCode.STATUS_AVAILABLE
    assert "2 messages in Inbox, 1 unread" in row["PR_STATUS_STRING"], row
    assert IMAP_PASSWORD not in str(row) and IMAP_PASSWORD not in proc.log()


def test_contents_from_the_cache_open_and_mime_fetch_the_body_once(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    proc = make_daemon(profiles={"alpha": imap_profile(server)})
    mapi = Mapi(proc.client())
    rows = mapi.contents("Inbox")
    assert set(rows) == {"Welcome", "Read and flagged"}
    assert not rows["Welcome"]["PR_MESSAGE_FLAGS"] & READ
    assert rows["Read and flagged"]["PR_MESSAGE_FLAGS"] & READ
    assert rows["Read and flagged"]["PR_FLAG_STATUS"] == FlagStatus.followupFlagged
    assert rows["Welcome"]["PR_SENDER_NAME"] == "Grace Hopper"

    opened = mapi.open(rows["Welcome"]["PR_ENTRYID"])
    assert opened["props"]["PR_SUBJECT"] == "Welcome"
    assert opened["props"]["PR_BODY"].strip() == "Hello from the server."
    raw = mapi.client.message_get_mime(mapi.token, opened["handle"])["mime"]
    imap = server.imapclient()
    imap.select_folder("INBOX", readonly=True)
    [uid] = imap.search(["SUBJECT", "Welcome"])
    fetched = imap.fetch([uid], ["BODY.PEEK[]", "FLAGS"])[uid]
    assert raw == fetched[b"BODY[]"]
    assert b"\\Seen" not in fetched[b"FLAGS"]  # BODY.PEEK: opening leaves it unread


def test_entry_ids_survive_a_daemon_restart(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    proc = make_daemon(profiles={"alpha": imap_profile(server)})
    mapi = Mapi(proc.client())
    entryid = mapi.contents("Inbox")["Welcome"]["PR_ENTRYID"]
    folder = mapi.folder_entryid("Projects", "2026")
    store = mapi.store_entryid
    assert proc.stop() == 0  # a clean stop: the IMAP threads end with their sessions
    proc.start()
    again = Mapi(proc.client())
    assert again.store_entryid == store
    assert again.open(entryid)["props"]["PR_SUBJECT"] == "Welcome"
    assert again.open(folder)["props"]["PR_DISPLAY_NAME"] == "2026"
    assert again.contents("Inbox")["Welcome"]["PR_ENTRYID"] == entryid


def test_new_mail_on_the_server_is_pushed_through_idle(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    # A long poll interval: only IDLE can be this quick.
    proc = make_daemon(profiles={"alpha": imap_profile(server, poll_interval=600)})
    mapi = Mapi(proc.client())
    inbox = mapi.folder_entryid("Inbox")
    mapi.client.session_advise(mapi.token, ["fnevNewMail"], inbox)
    time.sleep(0.5)  # the IDLE connection is set up after the first sync
    imap = server.imapclient()
    started = time.monotonic()
    imap.append("INBOX", mime("Pushed"))
    note = wait_notification(mapi.client, "fnevNewMail", timeout=10)
    elapsed = time.monotonic() - started
    print(f"fnevNewMail {elapsed * 1000:.0f} ms after APPEND")
    assert mapi.client.session_compare_entryids(mapi.token, note["parent_entryid"], inbox)["equal"]
    assert not note["message_flags"] & READ
    assert mapi.open(note["entryid"])["props"]["PR_SUBJECT"] == "Pushed"
    assert "Pushed" in mapi.contents("Inbox")


def test_each_pushed_message_is_announced_once_and_cached(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    """The IDLE connection fetches new mail itself and the command connection's sync
    follows: the two must not both announce a message, and the cache must keep it."""
    proc = make_daemon(profiles={"alpha": imap_profile(server, poll_interval=600)})
    mapi = Mapi(proc.client())
    inbox = mapi.folder_entryid("Inbox")
    mapi.client.session_advise(mapi.token, ["fnevNewMail"], inbox)
    time.sleep(0.5)  # the IDLE connection is set up after the first sync
    imap = server.imapclient()
    subjects = [f"Push {i}" for i in range(3)]
    announced: list[str] = []
    for subject in subjects:
        imap.append("INBOX", mime(subject))
        note = wait_notification(mapi.client, "fnevNewMail", timeout=10)
        announced.append(mapi.open(note["entryid"])["props"]["PR_SUBJECT"])
    assert announced == subjects
    extra = []
    while (note := mapi.client.recv_notification(timeout=1.5)) is not None:
        extra.append(note)
    assert [n for n in extra if n.get("event") == "fnevNewMail"] == [], extra
    assert set(subjects) <= set(mapi.contents("Inbox"))
    assert proc.stop() == 0
    server.stop()  # what the restarted daemon shows now comes from its cache alone
    proc.start()
    again = Mapi(proc.client())
    assert set(subjects) <= set(again.contents("Inbox"))


def test_an_unreachable_server_at_logon_is_offline_not_a_failed_logon(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    server.stop()
    proc = make_daemon(profiles={"alpha": imap_profile(server)})
    mapi = Mapi(proc.client())
    row = mapi.row()
    assert row["PR_STATUS_CODE"] & OFFLINE, row
    assert re.fullmatch(
        rf"cannot reach 127\.0\.0\.1:{server.port}: connection refused; retrying in \d+ s",
        row["PR_STATUS_STRING"],
    ), row
    assert [
        r["PR_DISPLAY_NAME"] for r in mapi.children(mapi.store_props["PR_IPM_SUBTREE_ENTRYID"])
    ] == [
        "Inbox",
        "Outbox",
    ]
    server.start_again()

    def online() -> dict[str, Any] | None:
        row = mapi.row()
        return None if row["PR_STATUS_CODE"] & OFFLINE else row

    back = wait_until(
        online,
        "the row online once the server answers",
        timeout=30,
    )
    assert back["PR_STATUS_STRING"].startswith("Online:"), back
    assert set(wait_until(lambda: mapi.contents("Inbox") or None, "the Inbox synced")) == {
        "Welcome",
        "Read and flagged",
    }


def test_a_server_that_goes_away_and_returns_under_a_live_session(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    proc = make_daemon(profiles={"alpha": imap_profile(server)})
    mapi = Mapi(proc.client())
    events = StatusEvents(proc, mapi.session)
    try:
        before = mapi.contents("Inbox")
        server.stop()
        offline = events.wait(lambda r: r["PR_STATUS_CODE"] & OFFLINE, 10, "offline")
        assert f"127.0.0.1:{server.port}" in offline["PR_STATUS_STRING"], offline
        assert mapi.contents("Inbox").keys() == before.keys()  # from the cache
        opened = mapi.open(before["Welcome"]["PR_ENTRYID"])  # headers from the cache
        assert opened["props"]["PR_SUBJECT"] == "Welcome"
        with pytest.raises(MapidError) as caught:  # its body was never fetched
            mapi.client.message_get_mime(mapi.token, opened["handle"])
        assert caught.value.code == ErrorCode.MAPI_E_NETWORK_ERROR, caught.value

        server.start_again()
        online = events.wait(lambda r: not r["PR_STATUS_CODE"] & OFFLINE, 30, "online")
        assert online["PR_STATUS_CODE"] & StatusCode.STATUS_AVAILABLE
        inbox = mapi.folder_entryid("Inbox")
        mapi.client.session_advise(mapi.token, ["fnevNewMail"], inbox)
        time.sleep(0.5)
        server.imapclient().append("INBOX", mime("After the outage"))
        note = wait_notification(mapi.client, "fnevNewMail", timeout=10)
        assert mapi.open(note["entryid"])["props"]["PR_SUBJECT"] == "After the outage"
    finally:
        events.close()


def test_a_changed_uidvalidity_drops_the_folders_old_entry_ids(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    proc = make_daemon(profiles={"alpha": imap_profile(server)})
    mapi = Mapi(proc.client())
    old = mapi.contents("Projects", "2026")["Plans"]["PR_ENTRYID"]
    imap = server.imapclient()
    before = imap.folder_status("Projects.2026", [b"UIDVALIDITY"])[b"UIDVALIDITY"]
    imap.delete_folder("Projects.2026")
    imap.create_folder("Projects.2026")
    assert imap.folder_status("Projects.2026", [b"UIDVALIDITY"])[b"UIDVALIDITY"] != before
    imap.append("Projects.2026", mime("New plans"))

    def renumbered() -> dict[str, dict[str, Any]] | None:
        rows = mapi.contents("Projects", "2026")
        return rows if set(rows) == {"New plans"} else None

    rows = wait_until(
        renumbered,
        "the renumbered folder synced",
    )
    with pytest.raises(MapidError) as caught:
        mapi.open(old)
    assert caught.value.code in (ErrorCode.MAPI_E_NOT_FOUND, ErrorCode.MAPI_E_INVALID_ENTRYID), (
        caught.value
    )
    assert mapi.open(rows["New plans"]["PR_ENTRYID"])["props"]["PR_SUBJECT"] == "New plans"
    assert "Online:" in mapi.row()["PR_STATUS_STRING"]  # and the daemon is fine


def test_credentials_in_the_clear_only_to_loopback(make_daemon: DaemonFactory) -> None:
    base = {"host": "imap.example.org", "username": "ada", "security": "none"}
    assert [p.key for p in ImapService.check_config(base)] == ["security"]
    assert ImapService.check_config({**base, "host": "127.0.0.1"}) == []
    assert ImapService.check_config({**base, "host": "localhost"}) == []
    assert ImapService.check_config({**base, "security": "tls"}) == []
    oauth = {**base, "security": "tls", "oauth2_token_command": ["oama", "access", "ada"]}
    assert ImapService.check_config(oauth) == []  # OAuth2: tests/test_imap_oauth2.py

    profile = (
        'autologon = false\n[services.mail]\nservice = "imap"\n'
        'host = "imap.example.org"\nsecurity = "none"\nusername = "ada"\n'
        'password_command = ["printf", "secret"]\n'
    )
    proc = make_daemon(profiles={"alpha": profile})
    client = proc.client()
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
    [row] = [
        r
        for r in client.session_status_table(token)["rows"]
        if r.get("PR_PROVIDER_DLL_NAME") == "imap"
    ]
    assert row["PR_STATUS_CODE"] & StatusCode.STATUS_FAILURE, row
    assert "unencrypted" in row["PR_STATUS_STRING"], row
