"""The `imap` store's write side against a real Dovecot (tests/dovecot_server.py) and, for
sending, a real aiosmtpd (tests/smtp_server.py): what the daemon changes is checked on the
server with IMAPClient, as another mail client sees it, and what another client changes
shows up through the daemon.

Flags (\\Seen, \\Flagged, \\Answered) both ways; folders created; messages appended,
copied, moved, deleted (to Deleted Items, then for good); submit through the spooler with
the Sent copy APPENDed (or not, with save_sent = false); a non-delivery report APPENDed to
INBOX; a queue that survives SIGKILL; and writes while Dovecot is stopped.
"""

from __future__ import annotations

import email
import email.policy
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient
from test_imap_store import Mapi, imap_profile, mime, wait_notification

from mapid.constants import FlagStatus, MessageFlags, StatusCode, StoreSupport
from mapid.errors import ErrorCode, MapiError

from conftest import DaemonFactory, DaemonProc, wait_until
from dovecot_server import (  # noqa: F401 (the fixture)
    IMAP_PASSWORD,
    IMAP_USER,
    DovecotFactory,
    DovecotServer,
    dovecot_fixture,
)
from smtp_server import SmtpServer, smtp_section

READ = int(MessageFlags.MSGFLAG_READ)
OFFLINE = int(StatusCode.STATUS_OFFLINE)
GRACE = {"PR_EMAIL_ADDRESS": "grace@example.org", "PR_DISPLAY_NAME": "Grace Hopper"}


@pytest.fixture
def server(dovecot: DovecotFactory) -> DovecotServer:
    """An account with two Inbox messages (one read and flagged) and a Projects folder."""
    found = dovecot.start(dovecot.root / "imap-mail")
    imap = found.imapclient()
    imap.create_folder("Projects")
    imap.append("INBOX", mime("Welcome", "Hello from the server.\n"), flags=())
    imap.append("INBOX", mime("Read and flagged"), flags=(b"\\Seen", b"\\Flagged"))
    return found


def peer(server: DovecotServer) -> Any:
    """Another mail client on the account. Not `server.imapclient()`, which chowns the mail
    first: that races with the lock files Dovecot makes and removes meanwhile (the daemon
    writes no files into this Maildir: everything goes through IMAP)."""
    imap = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10)
    imap.login(IMAP_USER, IMAP_PASSWORD)
    return imap


def flags_on_server(server: DovecotServer, folder: str) -> dict[str, set[bytes]]:
    """Subject -> flags of every message of `folder`, as another client sees them."""
    imap = peer(server)
    imap.select_folder(folder, readonly=True)
    uids = imap.search("ALL")
    out: dict[str, set[bytes]] = {}
    for data in imap.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).values():
        head = data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip()
        out[head.removeprefix("Subject: ")] = set(data[b"FLAGS"]) - {b"\\Recent"}
    imap.logout()
    return out


def handle(mapi: Mapi, *path: str) -> int:
    return int(mapi.open(mapi.folder_entryid(*path))["handle"])


def test_flags_set_through_mapi_reach_the_server_and_the_servers_reach_mapi(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    proc = make_daemon(profiles={"alpha": imap_profile(server)})
    mapi = Mapi(proc.client())
    writes = (
        StoreSupport.STORE_MODIFY_OK | StoreSupport.STORE_CREATE_OK | StoreSupport.STORE_SUBMIT_OK
    )
    assert mapi.store_props["PR_STORE_SUPPORT_MASK"] & writes == writes
    rows = mapi.contents("Inbox")
    welcome = rows["Welcome"]["PR_ENTRYID"]
    mapi.client.session_advise(mapi.token, ["fnevObjectModified"], welcome)
    opened = mapi.open(welcome)["handle"]
    problems = mapi.client.object_set_props(
        mapi.token,
        opened,
        {
            "PR_MESSAGE_FLAGS": READ,
            "PR_FLAG_STATUS": int(FlagStatus.followupFlagged),
            "PR_LAST_VERB_EXECUTED": 102,  # replied
            "PR_ENTRYID": b"x",
        },
    )["problems"]
    assert problems == {"PR_ENTRYID": "MAPI_E_COMPUTED"}
    assert flags_on_server(server, "INBOX")["Welcome"] == set()  # pending until saved
    mapi.client.object_save_changes(mapi.token, opened)
    assert flags_on_server(server, "INBOX")["Welcome"] == {b"\\Seen", b"\\Flagged", b"\\Answered"}
    note = wait_notification(mapi.client, "fnevObjectModified", timeout=5)
    assert note["entryid"] == welcome
    row = mapi.contents("Inbox")["Welcome"]
    assert row["PR_MESSAGE_FLAGS"] & READ and row["PR_FLAG_STATUS"] == FlagStatus.followupFlagged
    assert "0 unread" in mapi.row()["PR_STATUS_STRING"]

    mapi.client.object_set_props(mapi.token, opened, {"PR_MESSAGE_FLAGS": 0})
    mapi.client.object_delete_props(mapi.token, opened, ["PR_FLAG_STATUS"])
    mapi.client.object_save_changes(mapi.token, opened)
    assert flags_on_server(server, "INBOX")["Welcome"] == {b"\\Answered"}
    assert mapi.open(welcome)["props"]["PR_LAST_VERB_EXECUTED"] == 102

    # Another client reads and unflags the other message: the daemon's table follows.
    imap = peer(server)
    imap.select_folder("INBOX")
    [uid] = imap.search(["SUBJECT", "Read and flagged"])
    imap.remove_flags([uid], [b"\\Seen", b"\\Flagged"])
    other = wait_until(
        lambda: (
            (
                (r := mapi.contents("Inbox")["Read and flagged"])["PR_FLAG_STATUS"] == 0
                and not r["PR_MESSAGE_FLAGS"] & READ
            )
            or None
        ),
        "the other client's flag change in the contents table",
    )
    assert other is True


def test_create_folders_and_the_maildir_stores_errors(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    proc = make_daemon(profiles={"alpha": imap_profile(server)})
    mapi = Mapi(proc.client())
    subtree = mapi.open(mapi.store_props["PR_IPM_SUBTREE_ENTRYID"])["handle"]
    mapi.client.session_advise(mapi.token, ["fnevObjectCreated"], mapi.store_entryid)
    made = mapi.client.folder_create_folder(mapi.token, subtree, "Archive")
    note = wait_notification(mapi.client, "fnevObjectCreated", timeout=5)
    assert note["entryid"] == made["entryid"]
    child = mapi.client.folder_create_folder(mapi.token, made["handle"], "Wörk 2026")
    imap = peer(server)
    names = {str(name) for _, _, name in imap.list_folders()}
    imap.logout()
    assert {"Archive", "Archive.Wörk 2026"} <= names
    assert [r["PR_DISPLAY_NAME"] for r in mapi.children(made["entryid"])] == ["Wörk 2026"]
    assert mapi.open(child["entryid"])["props"]["PR_DISPLAY_NAME"] == "Wörk 2026"
    for taken in ("archive", "Sent Items", "Inbox", "outbox", "Projects"):
        with pytest.raises(MapiError) as caught:
            mapi.client.folder_create_folder(mapi.token, subtree, taken)
        assert caught.value.code == ErrorCode.MAPI_E_COLLISION, taken
    for bad in ("a.b", "a/b", " x", "50%"):
        with pytest.raises(MapiError) as caught:
            mapi.client.folder_create_folder(mapi.token, subtree, bad)
        assert caught.value.code == ErrorCode.MAPI_E_INVALID_PARAMETER, bad
    root = mapi.client.session_open_msg_store(mapi.token, mapi.store_entryid, ["MDB_WRITE"])
    top = mapi.client.container_open_entry(mapi.token, root["handle"], None)["handle"]
    with pytest.raises(MapiError) as caught:
        mapi.client.folder_create_folder(mapi.token, top, "Nope")
    assert caught.value.code == ErrorCode.MAPI_E_NO_SUPPORT


def test_append_copy_move_and_delete_show_on_the_server(
    make_daemon: DaemonFactory, server: DovecotServer
) -> None:
    check_append_copy_move_delete(make_daemon, server)


def check_append_copy_move_delete(make_daemon: DaemonFactory, server: DovecotServer) -> None:
    """Save, import, copy, move and delete, each checked on the server; also run against a
    server without MOVE and UIDPLUS (test_imap_plain_server.py)."""
    proc = make_daemon(profiles={"alpha": imap_profile(server)})
    mapi = Mapi(proc.client())
    c, t = mapi.client, mapi.token

    # A new message saved in Drafts is APPENDed there (a read draft, as the Maildir store's).
    created = c.folder_create_message(
        t,
        handle(mapi, "Drafts"),
        {"PR_SUBJECT": "Draft one", "PR_BODY": "Later.\n"},
        [GRACE],
    )
    c.object_save_changes(t, created["handle"])
    assert flags_on_server(server, "Drafts") == {"Draft one": {b"\\Draft", b"\\Seen"}}
    draft = mapi.contents("Drafts")["Draft one"]
    opened = mapi.open(draft["PR_ENTRYID"])
    assert opened["props"]["PR_DISPLAY_TO"] == "Grace Hopper"
    # Editing it on the server replaces it (IMAP changes no message in place).
    c.object_set_props(t, opened["handle"], {"PR_SUBJECT": "Draft two"})
    c.object_save_changes(t, opened["handle"])
    assert set(flags_on_server(server, "Drafts")) == {"Draft two"}

    # import_message: APPEND as it is.
    imported = c.folder_import_message(t, handle(mapi, "Projects"), mime("Imported"))["entryid"]
    assert mapi.open(imported)["props"]["PR_SUBJECT"] == "Imported"
    assert flags_on_server(server, "Projects") == {"Imported": {b"\\Seen"}}

    inbox = handle(mapi, "Inbox")
    rows = mapi.contents("Inbox")
    projects = mapi.folder_entryid("Projects")
    c.session_advise(t, ["fnevObjectCopied", "fnevObjectMoved"], mapi.store_entryid)
    [copy] = c.folder_copy_messages(t, inbox, [rows["Welcome"]["PR_ENTRYID"]], projects)["entryids"]
    note = wait_notification(c, "fnevObjectCopied", timeout=5)
    assert note["entryid"] == copy and note["old_entryid"] == rows["Welcome"]["PR_ENTRYID"]
    assert mapi.open(copy)["props"]["PR_SUBJECT"] == "Welcome"
    [moved] = c.folder_copy_messages(
        t, inbox, [rows["Read and flagged"]["PR_ENTRYID"]], projects, move=True
    )["entryids"]
    note = wait_notification(c, "fnevObjectMoved", timeout=5)
    assert note["entryid"] == moved
    assert set(flags_on_server(server, "INBOX")) == {"Welcome"}
    assert flags_on_server(server, "Projects") == {
        "Imported": {b"\\Seen"},
        "Welcome": set(),
        "Read and flagged": {b"\\Seen", b"\\Flagged"},  # a move keeps the flags
    }
    assert set(mapi.contents("Projects")) == {"Imported", "Welcome", "Read and flagged"}
    with pytest.raises(MapiError) as caught:  # not a message of this folder
        c.folder_copy_messages(t, inbox, [moved], projects)
    assert caught.value.code == ErrorCode.MAPI_E_NOT_FOUND

    # A delete goes to Deleted Items (the server's \Trash); there, for good (EXPUNGE).
    [trashed] = c.folder_delete_messages(t, inbox, [rows["Welcome"]["PR_ENTRYID"]])["entryids"]
    assert flags_on_server(server, "INBOX") == {}
    assert set(flags_on_server(server, "Trash")) == {"Welcome"}
    c.folder_delete_messages(t, handle(mapi, "Deleted Items"), [trashed])
    assert flags_on_server(server, "Trash") == {}
    assert mapi.contents("Deleted Items") == {}
    with pytest.raises(MapiError) as caught:
        mapi.open(trashed)
    assert caught.value.code == ErrorCode.MAPI_E_NOT_FOUND


# -- sending ---------------------------------------------------------------------------------


def send_profile(dovecot: DovecotServer, smtp: SmtpServer, **imap: Any) -> str:
    autologon = imap.pop("autologon", False)
    text = imap_profile(dovecot, **imap) + smtp_section(smtp, sender="ada@example.org")
    return text.replace("autologon = false", f"autologon = {'true' if autologon else 'false'}")


def compose(mapi: Mapi, subject: str) -> int:
    created = mapi.client.folder_create_message(
        mapi.token,
        handle(mapi, "Drafts"),
        {"PR_SUBJECT": subject, "PR_BODY": f"{subject}\n"},
        [GRACE],
    )
    return int(created["handle"])


def subjects(server: DovecotServer, folder: str) -> set[str]:
    return set(flags_on_server(server, folder))


def test_submit_sends_through_the_spooler_and_files_the_sent_copy(
    make_daemon: DaemonFactory, server: DovecotServer, smtp_server: SmtpServer
) -> None:
    proc = make_daemon(profiles={"alpha": send_profile(server, smtp_server)})
    mapi = Mapi(proc.client())
    queued = mapi.client.message_submit(mapi.token, compose(mapi, "Engines"))["entryid"]
    assert mapi.client.session_compare_entryids(
        mapi.token,
        mapi.open(queued)["props"]["PR_PARENT_ENTRYID"],
        mapi.store_props["PR_IPM_OUTBOX_ENTRYID"],
    )["equal"]
    received = smtp_server.wait_for(1)[0]
    sent = email.message_from_bytes(received.content, policy=email.policy.default)
    assert sent["Subject"] == "Engines" and list(received.rcpt_tos) == ["grace@example.org"]
    assert "ada@example.org" in str(sent["From"])
    wait_until(lambda: subjects(server, "Sent") == {"Engines"} or None, "the Sent copy")
    assert flags_on_server(server, "Sent")["Engines"] == {b"\\Seen"}
    assert subjects(server, "Drafts") == set()  # never on the server: queued locally
    wait_until(lambda: mapi.contents("Outbox") == {} or None, "an empty Outbox")
    wait_until(lambda: "Engines" in mapi.contents("Sent Items") or None, "Sent Items")


def test_save_sent_false_files_no_copy_and_an_ndr_lands_in_the_inbox(
    make_daemon: DaemonFactory, server: DovecotServer, smtp_server: SmtpServer
) -> None:
    proc = make_daemon(profiles={"alpha": send_profile(server, smtp_server, save_sent=False)})
    mapi = Mapi(proc.client())
    # A draft saved on the server first: submit takes it off Drafts.
    draft = compose(mapi, "Filed by the server")
    mapi.client.object_save_changes(mapi.token, draft)
    assert subjects(server, "Drafts") == {"Filed by the server"}
    mapi.client.message_submit(mapi.token, draft)
    smtp_server.wait_for(1)
    assert subjects(server, "Drafts") == set()
    wait_until(lambda: mapi.contents("Outbox") == {} or None, "an empty Outbox")
    time.sleep(0.5)
    assert subjects(server, "Sent") == set()

    mapi.client.session_advise(mapi.token, ["fnevNewMail"], mapi.folder_entryid("Inbox"))
    smtp_server.answer_data("554 5.6.0 content refused")
    mapi.client.message_submit(mapi.token, compose(mapi, "Refused"))
    note = wait_notification(mapi.client, "fnevNewMail", timeout=15)
    assert mapi.open(note["entryid"])["props"]["PR_SUBJECT"] == "Undeliverable: Refused"
    inbox = flags_on_server(server, "INBOX")
    assert inbox["Undeliverable: Refused"] == set()  # unread, on the server
    assert mapi.contents("Inbox")["Undeliverable: Refused"]["PR_MESSAGE_FLAGS"] & READ == 0


def outbox_files(proc: DaemonProc) -> list[Path]:
    return sorted(proc.state_dir.rglob("outbox/*.eml"))


def test_a_queue_survives_sigkill_and_goes_out_after_the_restart(
    make_daemon: DaemonFactory, server: DovecotServer, smtp_server: SmtpServer
) -> None:
    proc = make_daemon(profiles={"alpha": send_profile(server, smtp_server, autologon=True)})
    smtp_server.handler.stalls["DATA"] = 0.3  # each send takes a while: the kill lands mid-queue
    mapi = Mapi(proc.client())
    wanted = {f"queued {n}" for n in range(8)}
    for subject in sorted(wanted):
        mapi.client.message_submit(mapi.token, compose(mapi, subject))
    smtp_server.wait_for(1)
    proc.stop(signal.SIGKILL)
    assert outbox_files(proc), "the queue was done before the kill; nothing was tested"
    smtp_server.handler.stalls.clear()

    proc.start()  # the autologon session's spooler resumes the queue
    wait_until(
        lambda: (
            {
                str(email.message_from_bytes(m.content, policy=email.policy.default)["Subject"])
                for m in smtp_server.messages
            }
            >= wanted
            or None
        ),
        "every queued message sent after the restart",
        timeout=40,
    )
    wait_until(lambda: not outbox_files(proc) or None, "an empty Outbox on disk", timeout=20)
    wait_until(lambda: subjects(server, "Sent") >= wanted or None, "every Sent copy", timeout=20)


def test_writes_while_dovecot_is_stopped(
    make_daemon: DaemonFactory, server: DovecotServer, smtp_server: SmtpServer
) -> None:
    proc = make_daemon(profiles={"alpha": send_profile(server, smtp_server)})
    mapi = Mapi(proc.client())
    c, t = mapi.client, mapi.token
    rows = mapi.contents("Inbox")
    opened = mapi.open(rows["Welcome"]["PR_ENTRYID"])["handle"]
    subtree = mapi.open(mapi.store_props["PR_IPM_SUBTREE_ENTRYID"])["handle"]
    inbox = handle(mapi, "Inbox")
    drafts = handle(mapi, "Drafts")
    server.stop()
    wait_until(lambda: mapi.row()["PR_STATUS_CODE"] & OFFLINE or None, "the row offline")

    c.object_set_props(t, opened, {"PR_MESSAGE_FLAGS": READ})
    attempts: list[Callable[[], Any]] = [
        lambda: c.object_save_changes(t, opened),
        lambda: c.folder_create_folder(t, subtree, "Offline"),
        lambda: c.folder_delete_messages(t, inbox, [rows["Welcome"]["PR_ENTRYID"]]),
        lambda: c.folder_import_message(t, drafts, mime("Offline import")),
    ]
    for attempt in attempts:
        with pytest.raises(MapiError) as caught:
            attempt()
        assert caught.value.code == ErrorCode.MAPI_E_NETWORK_ERROR, caught.value
        assert "out of reach" in caught.value.message, caught.value

    # Sending needs no IMAP server: the Outbox is local; the Sent copy waits for it.
    c.message_submit(t, compose(mapi, "Sent while offline"))
    smtp_server.wait_for(1)
    time.sleep(0.5)
    server.start_again()
    wait_until(lambda: not mapi.row()["PR_STATUS_CODE"] & OFFLINE or None, "online", timeout=30)
    wait_until(
        lambda: subjects(server, "Sent") == {"Sent while offline"} or None,
        "the Sent copy filed once the server is back",
        timeout=20,
    )
    c.object_save_changes(t, opened)  # the change kept: it goes now
    assert flags_on_server(server, "INBOX")["Welcome"] == {b"\\Seen"}
