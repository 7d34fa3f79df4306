"""Cross-check with a real peer: Dovecot reads over IMAP what mapid wrote, and the reverse.

mapid's daemon (through the client library, as a MAPI client would) and a private Dovecot
(tests/dovecot_server.py) share one Maildir++ tree. What a mutt or Thunderbird user
expects: the folders mapid created are IMAP mailboxes with the same hierarchy, the special
folders carry their SPECIAL-USE, read and flagged messages are \\Seen and \\Flagged, a
deleted message is in Trash, a sent one in Sent; and mail another program puts there
(IMAP APPEND, a flag set in another client) shows in mapid's tables with the right
PR_MESSAGE_FLAGS, raises fnevNewMail, and leaves entry IDs valid across restarts.
"""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import re
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, TypeVar

from mapid.client import Client
from mapid.constants import FlagStatus, MessageFlags

from conftest import DaemonFactory, standard_profile, wait_until
from dovecot_server import DovecotFactory, DovecotServer, dovecot_fixture  # noqa: F401 (the fixture)
from smtp_server import SmtpServer, smtp_section

T = TypeVar("T")

READ = int(MessageFlags.MSGFLAG_READ)
FLAGGED = int(FlagStatus.followupFlagged)
COLUMNS = ["PR_ENTRYID", "PR_SUBJECT", "PR_MESSAGE_FLAGS", "PR_FLAG_STATUS"]


def mime(subject: str, sender: str = "Grace Hopper <grace@example.org>") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "Ada Lovelace <ada@example.org>"
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg.set_content(f"This is {subject!r}.\n")
    return msg.as_bytes(policy=email.policy.SMTP)


class Mapi:
    """One logon with the default store open for writing, and folder look-ups by name."""

    def __init__(self, client: Client, profile: str = "alpha") -> None:
        self.client = client
        self.token: bytes = client.session_logon(profile, ["MAPI_NEW_SESSION"])["token"]
        rows = client.session_msg_stores_table(self.token)["rows"]
        row = next(r for r in rows if r.get("PR_DEFAULT_STORE"))
        store = client.session_open_msg_store(self.token, row["PR_ENTRYID"], ["MDB_WRITE"])
        self.store_props: dict[str, Any] = store["props"]

    def open(self, entryid: bytes) -> int:
        handle: int = self.client.session_open_entry(self.token, entryid, ["MAPI_MODIFY"])["handle"]
        return handle

    def subtree(self) -> int:
        return self.open(self.store_props["PR_IPM_SUBTREE_ENTRYID"])

    def child_entryid(self, parent: int, name: str) -> bytes:
        rows = self.client.container_hierarchy_table(
            self.token, parent, {"columns": ["PR_ENTRYID", "PR_DISPLAY_NAME"]}
        )["rows"]
        names = [r.get("PR_DISPLAY_NAME") for r in rows]
        found = [r["PR_ENTRYID"] for r in rows if r.get("PR_DISPLAY_NAME") == name]
        assert found, f"no folder {name!r} among {names}"
        entryid: bytes = found[0]
        return entryid

    def folder(self, *path: str) -> int:
        """A writable handle on the folder at `path` under the IPM subtree."""
        handle = self.subtree()
        for name in path:
            handle = self.open(self.child_entryid(handle, name))
        return handle

    def import_message(self, folder: int, subject: str) -> bytes:
        entryid: bytes = self.client.folder_import_message(self.token, folder, mime(subject))[
            "entryid"
        ]
        return entryid

    def contents(self, folder: int) -> dict[str, dict[str, Any]]:
        """The folder's rows by subject."""
        rows = self.client.container_contents_table(self.token, folder, {"columns": COLUMNS})[
            "rows"
        ]
        return {row.get("PR_SUBJECT", ""): row for row in rows}

    def set_and_save(self, entryid: bytes, props: dict[str, Any]) -> None:
        handle = self.open(entryid)
        assert self.client.object_set_props(self.token, handle, props)["problems"] == {}
        self.client.object_save_changes(self.token, handle)
        self.client.object_release(self.token, handle)


# --- the IMAP side ---------------------------------------------------------------------------

LIST_LINE = re.compile(rb'\((?P<flags>[^)]*)\) (?:"(?P<delim>[^"]*)"|NIL) (?P<name>.+)')


def imap_list(conn: imaplib.IMAP4) -> tuple[str, dict[str, set[str]]]:
    """(hierarchy delimiter, {mailbox name: its LIST attributes})."""
    typ, lines = conn.list()
    assert typ == "OK", lines
    delim = ""
    boxes: dict[str, set[str]] = {}
    for line in lines:
        assert isinstance(line, bytes), line
        match = LIST_LINE.match(line)
        assert match, line
        delim = (match["delim"] or b"").decode()
        name = match["name"].decode()
        if name.startswith('"') and name.endswith('"'):
            name = name[1:-1]
        boxes[name] = set(match["flags"].decode().split())
    return delim, boxes


def imap_messages(conn: imaplib.IMAP4, mailbox: str) -> dict[str, set[str]]:
    """{subject: FLAGS} of every message in `mailbox` (examined read-only)."""
    typ, data = conn.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK", data
    if int(data[0] or 0) == 0:
        return {}
    typ, fetched = conn.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", fetched
    found: dict[str, set[str]] = {}
    for item in fetched:
        if not isinstance(item, tuple):
            continue
        meta, header = item
        flags = {f.decode() for f in imaplib.ParseFlags(meta)}
        parsed = email.message_from_bytes(header, policy=email.policy.default)
        found[str(parsed["Subject"])] = flags
    return found


def imap_number(conn: imaplib.IMAP4, subject: str) -> str:
    """The sequence number of the message with that subject in the selected mailbox."""
    typ, data = conn.search(None, "SUBJECT", f'"{subject}"')
    assert typ == "OK" and data[0], (subject, data)
    return str(data[0].split()[0].decode())


def utf7_imap(name: str) -> str:
    """A mailbox name in IMAP's modified UTF-7: non-ASCII runs as &base64(UTF-16BE)-."""
    out: list[str] = []
    run = ""
    for char in name + "\0":
        if char != "\0" and not 0x20 <= ord(char) < 0x7F:
            run += char
            continue
        if run:
            encoded = base64.b64encode(run.encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + encoded.replace("/", ",") + "-")
            run = ""
        if char != "\0":
            out.append("&-" if char == "&" else char)
    return "".join(out)


def mail_profile(dovecot: DovecotFactory, smtp: SmtpServer | None = None) -> str:
    """The standard profile, its Maildir where Dovecot's user can reach it."""
    text = standard_profile(dovecot.root / "alpha")
    return text + (smtp_section(smtp) if smtp is not None else "")


# --- mapid writes, Dovecot reads ---------------------------------------------------------


def test_dovecot_reads_the_folders_messages_and_flags_mapid_wrote(
    make_daemon: DaemonFactory, dovecot: DovecotFactory, smtp_server: SmtpServer
) -> None:
    proc = make_daemon(profiles={"alpha": mail_profile(dovecot, smtp_server)})
    mapi = Mapi(proc.client())
    client, token = mapi.client, mapi.token

    subtree = mapi.subtree()
    projects = client.folder_create_folder(token, subtree, "Projects")["handle"]
    nested = client.folder_create_folder(token, projects, "2026")["handle"]
    client.folder_create_folder(token, subtree, "Réunions")

    inbox = mapi.folder("Inbox")
    read = mapi.import_message(inbox, "Read in mapid")
    unread = mapi.import_message(inbox, "Unread in mapid")
    flagged = mapi.import_message(inbox, "Flagged in mapid")
    deleted = mapi.import_message(inbox, "Deleted in mapid")
    mapi.import_message(inbox, "Left alone")
    mapi.import_message(projects, "Filed under Projects")
    mapi.import_message(nested, "Filed under 2026")
    mapi.set_and_save(read, {"PR_MESSAGE_FLAGS": READ})
    mapi.set_and_save(unread, {"PR_MESSAGE_FLAGS": 0})
    mapi.set_and_save(flagged, {"PR_MESSAGE_FLAGS": 0, "PR_FLAG_STATUS": FLAGGED})
    left_alone = mapi.contents(inbox)["Left alone"]
    client.folder_delete_messages(token, inbox, [deleted])

    outbox = mapi.open(mapi.store_props["PR_IPM_OUTBOX_ENTRYID"])
    draft = client.folder_create_message(token, outbox)["handle"]
    client.object_set_props(
        token, draft, {"PR_SUBJECT": "Sent by mapid", "PR_BODY": "Through the spooler.\n"}
    )
    client.message_modify_recipients(
        token,
        draft,
        [
            {
                "PR_DISPLAY_NAME": "Grace Hopper",
                "PR_EMAIL_ADDRESS": "grace@example.org",
                "PR_ADDRTYPE": "SMTP",
                "PR_RECIPIENT_TYPE": 1,
            }
        ],
    )
    client.message_submit(token, draft)
    assert smtp_server.wait_for(1)[0].rcpt_tos == ("grace@example.org",)
    sent = mapi.open(mapi.store_props["PR_IPM_SENTMAIL_ENTRYID"])
    wait_until(lambda: mapi.contents(sent).get("Sent by mapid"), "the sent message in Sent Items")
    wait_until(lambda: True if not mapi.contents(outbox) else None, "an empty Outbox")

    server = dovecot.start(dovecot.root / "alpha" / "Mail")
    conn = server.imap()
    delim, boxes = imap_list(conn)
    assert delim, "Dovecot gave no hierarchy delimiter"
    nested_name = f"Projects{delim}2026"
    reunions = utf7_imap("Réunions")  # IMAP names are modified UTF-7 (RFC 3501 5.1.3)
    assert reunions == "R&AOk-unions"
    assert set(boxes) == {
        "INBOX",
        "Sent",
        "Trash",
        "Drafts",
        "Outbox",
        "Projects",
        nested_name,
        reunions,
    }
    assert "\\Sent" in boxes["Sent"]
    assert "\\Trash" in boxes["Trash"]
    assert "\\Drafts" in boxes["Drafts"]
    assert "\\HasChildren" in boxes["Projects"]
    assert "\\HasNoChildren" in boxes[nested_name]

    in_inbox = imap_messages(conn, "INBOX")
    assert set(in_inbox) == {
        "Read in mapid",
        "Unread in mapid",
        "Flagged in mapid",
        "Left alone",
    }
    assert "\\Seen" in in_inbox["Read in mapid"]
    assert not {"\\Seen", "\\Flagged"} & in_inbox["Unread in mapid"]
    assert "\\Flagged" in in_inbox["Flagged in mapid"]
    assert "\\Seen" not in in_inbox["Flagged in mapid"]
    # Whatever mapid's import chose for a message, Dovecot reads the same.
    assert ("\\Seen" in in_inbox["Left alone"]) == bool(left_alone["PR_MESSAGE_FLAGS"] & READ)
    assert ("\\Flagged" in in_inbox["Left alone"]) == (left_alone["PR_FLAG_STATUS"] == FLAGGED)
    assert set(imap_messages(conn, "Trash")) == {"Deleted in mapid"}
    in_sent = imap_messages(conn, "Sent")
    assert set(in_sent) == {"Sent by mapid"}
    assert "\\Seen" in in_sent["Sent by mapid"], "sent mail should read as read"
    assert imap_messages(conn, "Outbox") == {}
    assert set(imap_messages(conn, "Projects")) == {"Filed under Projects"}
    assert set(imap_messages(conn, nested_name)) == {"Filed under 2026"}


# --- Dovecot writes, mapid reads ---------------------------------------------------------


def wait_notification(client: Client, event: str, timeout: float = 10.0) -> dict[str, Any]:
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


def test_mapid_sees_mail_and_flags_dovecot_wrote(
    make_daemon: DaemonFactory, dovecot: DovecotFactory
) -> None:
    proc = make_daemon(profiles={"alpha": mail_profile(dovecot)})
    mapi = Mapi(proc.client())
    client, token = mapi.client, mapi.token
    inbox_id = mapi.child_entryid(mapi.subtree(), "Inbox")
    inbox = mapi.open(inbox_id)
    mapi.import_message(inbox, "Imported by mapid")
    client.session_advise(token, ["fnevNewMail"], inbox_id)

    server = dovecot.start(dovecot.root / "alpha" / "Mail")
    conn = server.imap()
    # APPEND without selecting INBOX: the file stays in new/ as an MTA's delivery would.
    typ, data = conn.append("INBOX", "", imaplib.Time2Internaldate(time.time()), mime("Hi"))
    assert typ == "OK", data

    note = wait_notification(client, "fnevNewMail")
    row = wait_until(lambda: mapi.contents(inbox).get("Hi"), "Dovecot's APPEND in the table")
    assert client.session_compare_entryids(token, note["entryid"], row["PR_ENTRYID"])["equal"]
    assert client.session_compare_entryids(token, note["parent_entryid"], inbox_id)["equal"]
    assert not note["message_flags"] & READ
    assert not row["PR_MESSAGE_FLAGS"] & READ

    conn.select("INBOX")
    typ, data = conn.store(imap_number(conn, "Hi"), "+FLAGS", "(\\Seen)")
    assert typ == "OK", data
    typ, data = conn.store(imap_number(conn, "Imported by mapid"), "-FLAGS", "(\\Seen)")
    assert typ == "OK", data
    typ, data = conn.append(
        "INBOX", "(\\Flagged)", imaplib.Time2Internaldate(time.time()), mime("Flag this")
    )
    assert typ == "OK", data

    def settled() -> dict[str, dict[str, Any]] | None:
        rows = mapi.contents(inbox)
        done = (
            len(rows) == 3
            and rows["Hi"]["PR_MESSAGE_FLAGS"] & READ
            and not rows["Imported by mapid"]["PR_MESSAGE_FLAGS"] & READ
            and rows.get("Flag this", {}).get("PR_FLAG_STATUS") == FLAGGED
        )
        return rows if done else None

    rows = wait_until(settled, "Dovecot's \\Seen and \\Flagged in mapid's table")
    assert not rows["Flag this"]["PR_MESSAGE_FLAGS"] & READ
    assert rows["Hi"]["PR_FLAG_STATUS"] != FLAGGED
    assert rows["Imported by mapid"]["PR_FLAG_STATUS"] != FLAGGED

    # Folders another IMAP client creates are mapid folders, with their hierarchy.
    delim, _ = imap_list(conn)
    for name in ("Lists", f"Lists{delim}python", utf7_imap("Café")):
        typ, data = conn.create(f'"{name}"')
        assert typ == "OK", data
    subtree = mapi.subtree()
    names = {
        row["PR_DISPLAY_NAME"]
        for row in client.container_hierarchy_table(
            token, subtree, {"columns": ["PR_DISPLAY_NAME"]}
        )["rows"]
    }
    assert {"Inbox", "Outbox", "Sent Items", "Deleted Items", "Drafts", "Lists", "Café"} == names
    lists = mapi.open(mapi.child_entryid(subtree, "Lists"))
    mapi.child_entryid(lists, "python")


# --- entry IDs across restarts and Dovecot's renames ---------------------------------------


def test_entry_ids_stay_valid_across_a_restart_and_dovecots_renames(
    make_daemon: DaemonFactory, dovecot: DovecotFactory
) -> None:
    proc = make_daemon(profiles={"alpha": mail_profile(dovecot)})
    mapi = Mapi(proc.client())
    subtree = mapi.subtree()
    created = mapi.client.folder_create_folder(mapi.token, subtree, "Projects")
    projects_id: bytes = created["entryid"]
    inbox = mapi.folder("Inbox")
    kept = mapi.import_message(inbox, "Kept across restarts")
    filed = mapi.import_message(created["handle"], "Filed before the restart")

    server: DovecotServer = dovecot.start(dovecot.root / "alpha" / "Mail")
    conn = server.imap()
    # Delivered into new/ (nothing has INBOX selected); mapid hands out its entry ID there.
    typ, data = conn.append("INBOX", "", imaplib.Time2Internaldate(time.time()), mime("Fresh"))
    assert typ == "OK", data
    fresh_row = wait_until(lambda: mapi.contents(inbox).get("Fresh"), "Dovecot's APPEND")
    fresh: bytes = fresh_row["PR_ENTRYID"]
    assert not fresh_row["PR_MESSAGE_FLAGS"] & READ
    mapi.client.session_logoff(mapi.token)

    conn.select("INBOX")  # read-write: Dovecot moves new/ to cur/ (a rename)
    conn.store(imap_number(conn, "Fresh"), "+FLAGS", "(\\Seen)")  # another rename
    conn.store(imap_number(conn, "Kept across restarts"), "-FLAGS", "(\\Seen)")
    conn.select("Projects")
    conn.store(imap_number(conn, "Filed before the restart"), "+FLAGS", "(\\Flagged)")
    typ, data = conn.append("Projects", "", imaplib.Time2Internaldate(time.time()), mime("New"))
    assert typ == "OK", data
    conn.logout()
    server.connections.clear()

    assert proc.stop() == 0
    proc.start()
    mapi = Mapi(proc.client())
    client, token = mapi.client, mapi.token

    def props_of(entryid: bytes) -> dict[str, Any]:
        handle = mapi.open(entryid)
        tags = ["PR_SUBJECT", "PR_MESSAGE_FLAGS"]
        found: dict[str, Any] = client.object_get_props(token, handle, tags)["props"]
        return found

    assert props_of(kept)["PR_SUBJECT"] == "Kept across restarts"
    assert not props_of(kept)["PR_MESSAGE_FLAGS"] & READ
    assert props_of(fresh)["PR_SUBJECT"] == "Fresh"
    assert props_of(fresh)["PR_MESSAGE_FLAGS"] & READ

    projects = mapi.open(projects_id)
    rows = mapi.contents(projects)
    assert set(rows) == {"Filed before the restart", "New"}
    assert client.session_compare_entryids(
        token, rows["Filed before the restart"]["PR_ENTRYID"], filed
    )["equal"]
    assert rows["Filed before the restart"]["PR_FLAG_STATUS"] == FLAGGED
    listed = mapi.child_entryid(mapi.subtree(), "Projects")
    assert client.session_compare_entryids(token, listed, projects_id)["equal"]


# --- a child whose parent directory Dovecot never made -------------------------------------


def test_a_folder_dovecot_creates_without_its_parent_sits_under_that_parent(
    make_daemon: DaemonFactory, dovecot: DovecotFactory
) -> None:
    """Dovecot's CREATE Work.Projects makes only `.Work.Projects`: mapid shows `Work` (as
    Dovecot and mutt do) holding `Projects`, with nothing in it until a message goes there,
    which makes its directory (and Dovecot reads that message in `Work`)."""
    proc = make_daemon(profiles={"alpha": mail_profile(dovecot)})
    mapi = Mapi(proc.client())
    client, token = mapi.client, mapi.token
    root = dovecot.root / "alpha" / "Mail"
    client.session_advise(token, ["fnevObjectCreated"], mapi.store_props["PR_ENTRYID"])

    server = dovecot.start(root)
    conn = server.imap()
    delim, _ = imap_list(conn)
    typ, data = conn.create(f'"Work{delim}Projects"')
    assert typ == "OK", data
    assert (root / ".Work.Projects" / "cur").is_dir() and not (root / ".Work").exists()

    # The store advise hears both folders, each under its parent.
    subtree_id = mapi.store_props["PR_IPM_SUBTREE_ENTRYID"]
    made = [wait_notification(client, "fnevObjectCreated") for _ in range(2)]
    parents = {bytes(n["parent_entryid"]) for n in made}

    subtree = mapi.subtree()
    rows = client.container_hierarchy_table(
        token,
        subtree,
        {"columns": ["PR_ENTRYID", "PR_DISPLAY_NAME", "PR_SUBFOLDERS", "PR_CONTENT_COUNT"]},
    )["rows"]
    by_name = {r["PR_DISPLAY_NAME"]: r for r in rows}
    assert "Projects" not in by_name, by_name
    work_row = by_name["Work"]
    assert work_row["PR_SUBFOLDERS"] is True and work_row["PR_CONTENT_COUNT"] == 0
    work_id: bytes = work_row["PR_ENTRYID"]
    assert parents == {bytes(subtree_id), bytes(work_id)}

    work = client.container_open_entry(token, subtree, work_id)["handle"]
    assert mapi.contents(work) == {}
    projects_id = mapi.child_entryid(work, "Projects")
    projects = client.container_open_entry(token, work, projects_id)["handle"]
    props = client.object_get_props(token, projects, ["PR_PARENT_ENTRYID"])["props"]
    assert client.session_compare_entryids(token, props["PR_PARENT_ENTRYID"], work_id)["equal"]

    typ, data = conn.append(
        f'"Work{delim}Projects"', "", imaplib.Time2Internaldate(time.time()), mime("Plan")
    )
    assert typ == "OK", data
    wait_until(lambda: mapi.contents(projects).get("Plan"), "Dovecot's APPEND in Projects")

    # The first message in Work makes its directory, as a Maildir++ folder.
    mapi.import_message(work, "Filed in Work")
    for part in ("cur", "new", "tmp", "maildirfolder"):
        assert (root / ".Work" / part).exists(), part
    assert set(mapi.contents(work)) == {"Filed in Work"}
    assert mapi.child_entryid(mapi.folder("Work"), "Projects") == projects_id
    server.chown_mail()  # mapid (root here) made `.Work`: Dovecot's user reads it again
    assert set(imap_messages(conn, "Work")) == {"Filed in Work"}
    assert set(imap_messages(conn, f"Work{delim}Projects")) == {"Plan"}
