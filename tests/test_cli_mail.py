"""mapictl's mail commands against a real daemon: a real Maildir with real messages, real
vCard files, and a real SMTP server on loopback (aiosmtpd) behind the smtp transport.

The commands run in-process through typer's CliRunner, and as real processes where a
process matters (`notify`, which follows until its count, and the exit codes of a run).
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner, Result

from mapid.cli.app import app
from mapid.cli.mail import COMMANDS
from mapid.cli.mail.format import flag_letters, format_size, message_lines
from mapid.cli.mail.notify import parse_events
from mapid.cli.mail.reading import parse_sort
from mapid.cli.mail.session import looks_like_entryid, split_indexed
from mapid.constants import FlagStatus, MessageFlags, MsgStatus, NotificationEvent

from conftest import DaemonFactory, DaemonProc, prepare_daemon, standard_profile, wait_until
from smtp_server import SmtpServer, smtp_section

T = TypeVar("T")
runner = CliRunner()

VCARD_GRACE_KELLY = """BEGIN:VCARD
VERSION:3.0
UID:grace-2
FN:Grace Kelly
EMAIL;TYPE=INTERNET:kelly@example.org
END:VCARD
"""

BASE = 1_764_547_200  # 2025-12-01 00:00 UTC: message n is n hours later
INBOX_COUNT = 24


def message_bytes(n: int, subject: str, sender: str, body: str, size_pad: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "Ada Lovelace <ada@example.org>"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(dt.datetime.fromtimestamp(BASE + 3600 * n).astimezone())
    msg["Message-ID"] = make_msgid(idstring=f"m{n}", domain="example.org")
    msg.set_content(body + ("x" * size_pad) + "\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def drop(folder: Path, n: int, data: bytes, flags: str | None) -> Path:
    """A message file as an MTA or mbsync leaves it: new/ without flags, cur/ with them."""
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    key = f"{BASE + 3600 * n}.M{n}P{os.getpid()}.{socket.gethostname()}"
    path = folder / "new" / key if flags is None else folder / "cur" / f"{key}:2,{flags}"
    tmp = folder / "tmp" / key
    tmp.write_bytes(data)
    tmp.rename(path)
    return path


def fill_maildir(mail: Path) -> None:
    """Inbox: 24 messages, n = 0..23 (newest is 23); every third unread, 5 flagged, 7
    marked trashed. Work and Work/Projects (Maildir++ .Work and .Work.Projects) a few."""
    senders = ["Grace Hopper <grace@example.org>", "Alan Turing <alan@example.org>"]
    for n in range(INBOX_COUNT):
        subject = f"Report {n:02d}" if n % 2 else f"Lunch on day {n:02d}"
        flags = "" if n % 3 == 0 else "S"
        if n == 5:
            flags += "F"
        if n == 7:
            flags += "T"
        data = message_bytes(n, subject, senders[n % 2], f"Body of message {n}.", size_pad=n * 100)
        drop(mail, n, data, flags)
    drop(mail / ".Work", 100, message_bytes(100, "Quarterly plan", senders[0], "Plan."), "S")
    drop(mail / ".Work.Projects", 101, message_bytes(101, "Apollo", senders[1], "Go."), "")


def mail_profile(root: Path, smtp: SmtpServer | None, *, autologon: bool = True) -> str:
    text = standard_profile(root, autologon=autologon)
    (root / "contacts" / "kelly.vcf").write_text(VCARD_GRACE_KELLY)
    fill_maildir(root / "Mail")
    return text + (smtp_section(smtp, key="outgoing") if smtp is not None else "")


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    """One daemon for the tests that only read: autologon profile `alpha` with contacts
    and a filled Maildir (no transport)."""
    root = tmp_path_factory.mktemp("reader")
    proc = prepare_daemon(root / "d", profiles={"alpha": mail_profile(root / "alpha", None)})
    try:
        yield proc.start()
    finally:
        proc.close()
        shutil.rmtree(proc.runtime.parent, ignore_errors=True)


@pytest.fixture
def mail(make_daemon: DaemonFactory, smtp_server: SmtpServer, tmp_path: Path) -> DaemonProc:
    """A daemon of its own for a test that changes things: autologon profile `alpha` as in
    `reader`, plus an smtp transport (`outgoing`) to `smtp_server`."""
    return make_daemon(profiles={"alpha": mail_profile(tmp_path / "alpha", smtp_server)})


def cli(daemon: DaemonProc, *args: str, stdin: str | None = None) -> Result:
    return runner.invoke(app, ["--runtime-dir", str(daemon.runtime), *args], input=stdin)


def ok(daemon: DaemonProc, *args: str, stdin: str | None = None) -> Result:
    result = cli(daemon, *args, stdin=stdin)
    assert result.exit_code == 0, (result.exit_code, result.output, daemon.log()[-2000:])
    return result


def js(daemon: DaemonProc, *args: str, stdin: str | None = None) -> Any:
    return json.loads(ok(daemon, "--json", *args, stdin=stdin).stdout)


def run(daemon: DaemonProc, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(daemon.runtime), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_line(stream: Any, timeout: float = 15.0) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert box, f"no line within {timeout} s"
    return box[0]


def parsed(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


# --- help, and the parts that need no daemon ---------------------------------------------------


@pytest.mark.parametrize("command", [c.__name__ for c in COMMANDS])
def test_every_mail_command_explains_itself(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--json" in result.stdout and "--profile" in result.stdout
    assert len(result.stdout.splitlines()) > 8


def test_message_and_folder_specs() -> None:
    eid = "00000000" + "ab" * 16 + "0102"
    assert looks_like_entryid(eid)
    assert not looks_like_entryid("Inbox") and not looks_like_entryid("abcd")
    assert split_indexed("Inbox:3") == ("Inbox", 3)
    assert split_indexed("Work/Projects:12") == ("Work/Projects", 12)
    assert split_indexed("Inbox") is None and split_indexed(eid) is None
    assert parse_sort(["-date", "subject"]) == [
        ("PR_CLIENT_SUBMIT_TIME", "desc"),
        ("PR_SUBJECT", "asc"),
    ]
    assert parse_sort(["size,-from"]) == [("PR_MESSAGE_SIZE", "asc"), ("PR_SENDER_NAME", "desc")]
    assert parse_events("newmail,created") == (
        NotificationEvent.fnevNewMail | NotificationEvent.fnevObjectCreated
    )
    assert parse_events("fnevObjectMoved") == NotificationEvent.fnevObjectMoved
    assert format_size(512) == "512" and format_size(1300) == "1.3K"
    assert format_size(34 * 1024) == "34K" and format_size(5 * 1024 * 1024 + 1) == "5.0M"
    unread_flagged = {
        "PR_MESSAGE_FLAGS": 0,
        "PR_FLAG_STATUS": int(FlagStatus.followupFlagged),
        "PR_MSG_STATUS": int(MsgStatus.MSGSTATUS_DELMARKED),
    }
    assert flag_letters(unread_flagged) == "NFT"
    draft = {"PR_MESSAGE_FLAGS": int(MessageFlags.MSGFLAG_READ | MessageFlags.MSGFLAG_UNSENT)}
    assert flag_letters(draft) == "D"


def test_message_lines_fit_the_width() -> None:
    rows = [
        {
            "PR_ENTRYID": b"\x00" * 24,
            "PR_MESSAGE_FLAGS": 0,
            "PR_CLIENT_SUBMIT_TIME": dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC),
            "PR_SENDER_NAME": "Somebody With A Very Long Name Indeed",
            "PR_SUBJECT": "A subject much longer than a narrow terminal can hold " * 2,
            "PR_MESSAGE_SIZE": 123456,
        },
        {"PR_ENTRYID": b"\x01" * 24, "PR_MESSAGE_FLAGS": 1, "PR_SUBJECT": "Short"},
    ]
    lines = message_lines(rows, 9, outgoing=False, long=True, width=80)
    first, first_id, second, _second_id = (line.plain for line in lines)
    assert len(first) == 80 and first.startswith(" 9 N ")
    assert "Somebody With A Very \u2026" in first and first.endswith("(121K)")
    assert "\u2026" in first.split("  ")[-2]  # the subject, cut
    assert first_id.strip() == "00" * 24
    assert second.startswith("10     -  ") and "Short" in second and second.endswith("(-)")
    assert lines[0].style == "bold" and lines[2].style == ""


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "Inbox", "--sort", "colour"],
        ["notify", "--events", "nothing"],
        ["send", "--subject", "no one", "--body", "x"],
        ["send", "--to", "ada@example.org", "--attach", "/no/such/file", "--body", "x"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = runner.invoke(app, ["--runtime-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output


def test_no_daemon_is_4(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--runtime-dir", str(tmp_path), "stores"])
    assert result.exit_code == 4


# --- stores, folders ------------------------------------------------------------------------


def test_stores(reader: DaemonProc) -> None:
    data = js(reader, "stores")
    assert data["profile"] == "alpha"
    [store] = data["stores"]
    assert store["default"] is True and store["name"] == "mail"
    assert looks_like_entryid(store["entryid"])
    text = ok(reader, "stores").stdout
    assert "mail" in text and "yes" in text
    assert store["entryid"] in re.sub(r"\s", "", text)  # folded on a narrow terminal


def test_folders_tree_with_counts(reader: DaemonProc) -> None:
    data = js(reader, "folders")
    by_path = {f["path"]: f for f in data["folders"]}
    for name in ("Inbox", "Outbox", "Sent Items", "Deleted Items", "Drafts", "Work"):
        assert name in by_path, sorted(by_path)
    assert by_path["Inbox"]["messages"] == INBOX_COUNT
    assert by_path["Inbox"]["unread"] == INBOX_COUNT // 3
    assert by_path["Work/Projects"]["depth"] == by_path["Work"]["depth"] + 1
    assert by_path["Work/Projects"]["unread"] == 1
    lines = ok(reader, "folders").stdout.splitlines()
    inbox = next(line for line in lines if line.strip().startswith("Inbox"))
    assert inbox.split()[-2:] == [str(INBOX_COUNT), str(INBOX_COUNT // 3)]
    projects = next(line for line in lines if "Projects" in line)
    work = next(line for line in lines if line.strip().startswith("Work"))
    indent = len(projects) - len(projects.lstrip())
    assert indent == len(work) - len(work.lstrip()) + 2


def test_folders_of_an_unknown_store_is_3(reader: DaemonProc) -> None:
    result = cli(reader, "folders", "--store", "nowhere")
    assert result.exit_code == 3
    assert "mail" in result.stderr


# --- ls -------------------------------------------------------------------------------------


def test_ls_newest_first_with_limit_and_offset(reader: DaemonProc) -> None:
    data = js(reader, "ls", "Inbox")
    assert data["total"] == INBOX_COUNT
    subjects = [m["subject"] for m in data["messages"]]
    assert len(subjects) == 20
    assert subjects[:2] == ["Report 23", "Lunch on day 22"]
    assert [m["index"] for m in data["messages"]][:3] == [1, 2, 3]
    assert js(reader, "ls") == data  # the Inbox by default, as mutt opens it
    page = js(reader, "ls", "inbox", "--limit", "3", "--offset", "20")
    assert [m["subject"] for m in page["messages"]] == ["Report 03", "Lunch on day 02", "Report 01"]
    assert [m["index"] for m in page["messages"]] == [21, 22, 23]
    by_subject = {m["subject"]: m for m in data["messages"]}
    assert (
        by_subject["Lunch on day 18"]["unread"] is True
        and "N" in by_subject["Lunch on day 18"]["flags"]
    )
    assert by_subject["Report 23"]["unread"] is False
    assert by_subject["Report 23"]["from"] == "Alan Turing"


def test_ls_flags_show_flagged_and_trashed(reader: DaemonProc) -> None:
    data = js(reader, "ls", "Inbox", "--limit", "30")
    flags = {m["subject"]: m["flags"] for m in data["messages"]}
    assert flags["Report 05"] == "F"
    assert flags["Report 07"] == "T"
    assert flags["Lunch on day 06"] == "N"


def test_ls_sort_unread_and_search(reader: DaemonProc) -> None:
    by_subject = js(reader, "ls", "Inbox", "--sort", "subject", "--limit", "2")
    assert [m["subject"] for m in by_subject["messages"]] == ["Lunch on day 00", "Lunch on day 02"]
    biggest = js(reader, "ls", "Inbox", "--sort", "-size", "--limit", "1")
    assert biggest["messages"][0]["subject"] == "Report 23"
    oldest = js(reader, "ls", "Inbox", "--sort", "date", "--limit", "1")
    assert oldest["messages"][0]["subject"] == "Lunch on day 00"
    unread = js(reader, "ls", "Inbox", "--unread", "--limit", "50")
    assert unread["total"] == INBOX_COUNT // 3
    assert all(m["unread"] for m in unread["messages"])
    found = js(reader, "ls", "Inbox", "--search", "REPORT 1")
    assert sorted(m["subject"] for m in found["messages"]) == [
        f"Report {n}" for n in (11, 13, 15, 17, 19)
    ]
    both = js(reader, "ls", "Inbox", "--search", "lunch", "--unread", "--limit", "50")
    assert {m["subject"] for m in both["messages"]} == {
        f"Lunch on day {n:02d}" for n in range(0, INBOX_COUNT, 6)
    }


def test_ls_human_lines(reader: DaemonProc) -> None:
    result = ok(reader, "ls", "Inbox", "--limit", "4")
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].split()[0] == "1" and "Report 23" in lines[0] and "Alan Turing" in lines[0]
    assert "Lunch on day 21" not in result.stdout
    assert "N" in lines[2].split()[1] and "Lunch on day 21" not in lines[2]
    assert "1-4 of 24" in result.stderr and "--offset 4" in result.stderr
    long = ok(reader, "ls", "Inbox", "--limit", "1", "-l").stdout
    entryid = js(reader, "ls", "Inbox", "--limit", "1")["messages"][0]["entryid"]
    assert entryid in long


def test_ls_subfolders_aliases_and_entryids(reader: DaemonProc) -> None:
    projects = js(reader, "ls", "work/projects")
    assert [m["subject"] for m in projects["messages"]] == ["Apollo"]
    assert projects["folder"]["path"] == "Work/Projects"
    by_id = js(reader, "ls", projects["folder"]["entryid"])
    assert [m["subject"] for m in by_id["messages"]] == ["Apollo"]
    trash = js(reader, "ls", "Trash")
    assert trash["folder"]["name"] == "Deleted Items" and trash["total"] == 0
    assert js(reader, "ls", "sent")["folder"]["name"] == "Sent Items"
    missing = cli(reader, "ls", "Work/Nothing")
    assert missing.exit_code == 3 and "Nothing" in missing.stderr
    assert cli(reader, "--json", "ls", "Nowhere").exit_code == 3


# --- show -----------------------------------------------------------------------------------


def test_show_by_entryid_and_by_folder_index(reader: DaemonProc) -> None:
    newest = js(reader, "ls", "Inbox", "--limit", "2")["messages"]
    shown = ok(reader, "show", newest[1]["entryid"]).stdout
    assert "From: Grace Hopper <grace@example.org>" in shown
    assert "To: Ada Lovelace <ada@example.org>" in shown
    assert "Subject: Lunch on day 22" in shown
    assert "Body of message 22." in shown
    assert ok(reader, "show", "Inbox:2").stdout == shown
    assert "Subject: Report 23" in ok(reader, "show", "inbox:1").stdout
    data = js(reader, "show", "Inbox:1")
    assert data["entryid"] == newest[0]["entryid"]
    assert data["props"]["PR_SUBJECT"] == "Report 23"
    assert data["recipients"] == [
        {"name": "Ada Lovelace", "address": "ada@example.org", "type": "MAPI_TO"}
    ]
    raw = cli(reader, "show", "--raw", "Inbox:1")
    assert raw.exit_code == 0
    assert parsed(raw.stdout_bytes)["Subject"] == "Report 23"


def test_show_failures(reader: DaemonProc) -> None:
    beyond = cli(reader, "show", f"Inbox:{INBOX_COUNT + 1}")
    assert beyond.exit_code == 3 and "24 messages" in beyond.stderr
    assert cli(reader, "show", "not a message").exit_code == 2
    assert cli(reader, "show", "Inbox:0").exit_code == 2
    folder = js(reader, "ls", "Inbox", "--limit", "1")
    wrong_kind = cli(reader, "show", folder["folder"]["entryid"])
    assert wrong_kind.exit_code == 1 and "not a message" in wrong_kind.stderr
    message = folder["messages"][0]["entryid"]
    assert "not a folder" in cli(reader, "ls", message).stderr
    gone = message[:-4] + ("0000" if not message.endswith("0000") else "1111")
    assert cli(reader, "show", gone).exit_code == 3


def test_show_marks_read_unless_peek_or_json(mail: DaemonProc, tmp_path: Path) -> None:
    def unread(index: int) -> bool:
        item = js(mail, "ls", "Inbox", "--offset", str(index - 1), "--limit", "1")["messages"]
        return bool(item[0]["unread"])

    assert unread(3) and unread(6)  # Report 21 and Lunch on day 18
    assert js(mail, "show", "Inbox:3")["props"]["PR_SUBJECT"] == "Report 21"
    assert ok(mail, "show", "--peek", "Inbox:3").stdout.count("Report 21") == 1
    assert unread(3)
    assert "Subject: Report 21" in ok(mail, "show", "Inbox:3").stdout
    assert not unread(3)
    [path] = inbox_files(tmp_path / "alpha" / "Mail", "Report 21")
    assert path.parent.name == "cur" and path.name.endswith(
        ":2,S"
    )  # Maildir's S flag, as mutt sets it
    assert unread(6)


def inbox_files(mail_root: Path, subject: str) -> list[Path]:
    """The Inbox files (cur/ and new/) whose Subject header is `subject`."""
    return [
        path
        for sub in ("cur", "new")
        for path in (mail_root / sub).iterdir()
        if f"Subject: {subject}\r\n".encode() in path.read_bytes()
    ]


# --- resolve, identity ----------------------------------------------------------------------


def test_resolve(reader: DaemonProc) -> None:
    data = js(reader, "resolve", "Ada", "hopper")
    assert [r["recipient"]["address"] for r in data["results"]] == [
        "ada@example.org",
        "grace@example.org",
    ]
    assert "Grace Hopper <grace@example.org> (SMTP)" in ok(reader, "resolve", "Hopper").stdout


def test_resolve_ambiguous_is_1_and_unknown_is_3(reader: DaemonProc) -> None:
    ambiguous = cli(reader, "resolve", "Grace")
    assert ambiguous.exit_code == 1
    assert "ambiguous" in ambiguous.stderr
    assert "grace@example.org" in ambiguous.stderr and "kelly@example.org" in ambiguous.stderr
    data = json.loads(cli(reader, "--json", "resolve", "Grace", "Ada").stdout)
    assert data["error"]["code"] == "MAPI_E_AMBIGUOUS_RECIP"
    first, second = data["results"]
    assert first["error"] == "MAPI_E_AMBIGUOUS_RECIP"
    assert {c["address"] for c in first["candidates"]} == {
        "grace@example.org",
        "kelly@example.org",
    }
    assert second["recipient"]["name"] == "Ada Lovelace"
    unknown = cli(reader, "resolve", "Nobody Atall")
    assert unknown.exit_code == 3 and "Nobody Atall" in unknown.stderr


def test_identity(reader: DaemonProc) -> None:
    data = js(reader, "identity")
    assert data["identity"]["name"] == "Ada Lovelace"
    assert data["identity"]["address"] == "ada@example.org"
    assert data["identity"]["type"] == "SMTP" and data["warning"] is None
    assert data["identity"]["service"] == "contacts"
    assert "Ada Lovelace <ada@example.org> (SMTP)" in ok(reader, "identity").stdout


def test_identity_without_a_service(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    daemon = make_daemon(profiles={"alpha": standard_profile(tmp_path / "a", identity=False)})
    data = js(daemon, "identity")
    assert data["warning"] == "MAPI_W_NO_SERVICE"
    assert "MAPI_W_NO_SERVICE" in ok(daemon, "identity").stdout


# --- send, flush ----------------------------------------------------------------------------


def test_send_to_a_contact_name_waits_for_sent_items(
    mail: DaemonProc, smtp_server: SmtpServer
) -> None:
    data = js(mail, "send", "--to", "Hopper", "--subject", "Hello Grace", "--wait", stdin="Hi!\n")
    [got] = smtp_server.wait_for(1)
    assert got.rcpt_tos == ("grace@example.org",)
    assert got.mail_from == "ada@example.org"
    msg = parsed(got.content)
    assert msg["Subject"] == "Hello Grace"
    assert "grace@example.org" in str(msg["To"]) and "Grace Hopper" in str(msg["To"])
    assert "ada@example.org" in str(msg["From"])
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content() == "Hi!\n"
    assert msg["Message-ID"] == data["message_id"]
    assert data["outcome"] == "sent" and data["sent_entryid"]
    assert data["recipients"][0]["address"] == "grace@example.org"
    assert "token" not in json.dumps(data)
    sent = js(mail, "ls", "Sent Items")
    assert [m["subject"] for m in sent["messages"]] == ["Hello Grace"]
    assert sent["messages"][0]["entryid"] == data["sent_entryid"]
    assert "To Grace Hopper" in ok(mail, "ls", "Sent").stdout
    assert js(mail, "ls", "Outbox")["total"] == 0


def test_send_to_addresses_with_cc_bcc_and_attachment(
    mail: DaemonProc, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 not really\x00\x01\x02")
    notes = tmp_path / "notes.txt"
    notes.write_text("plain notes\n")
    latin = tmp_path / "alt.txt"
    latin.write_bytes("Grüße\n".encode("latin-1"))
    result = ok(
        mail,
        "send",
        "--to",
        "Bob <bob@example.net>",
        "--cc",
        "carol@example.net",
        "--bcc",
        "Ada",
        "--subject",
        "Files für dich",
        "--attach",
        str(report),
        "--attach",
        str(notes),
        "--attach",
        str(latin),
        "--wait",
        stdin="See the files.\n",
    )
    assert result.stdout.startswith("queued ")
    assert "sent; a copy is in Sent Items" in result.stdout
    [got] = smtp_server.wait_for(1)
    assert sorted(got.rcpt_tos) == ["ada@example.org", "bob@example.net", "carol@example.net"]
    msg = parsed(got.content)
    assert msg["Bcc"] is None
    assert str(msg["Cc"]) == "carol@example.net"
    files = {part.get_filename(): part for part in msg.iter_attachments()}
    assert msg["Subject"] == "Files für dich"
    assert set(files) == {"report.pdf", "notes.txt", "alt.txt"}
    assert files["alt.txt"].get_payload(decode=True) == latin.read_bytes()
    assert files["report.pdf"].get_content_type() == "application/pdf"
    assert files["report.pdf"].get_content() == report.read_bytes()
    assert files["notes.txt"].get_content() == "plain notes\n"
    sent = js(mail, "show", "Sent:1")
    assert {a["filename"] for a in sent["attachments"]} == {"report.pdf", "notes.txt", "alt.txt"}
    assert "[attachment: report.pdf, application/pdf" in ok(mail, "show", "Sent:1").stdout


def test_send_refusals_are_1_and_3_and_queue_nothing(
    mail: DaemonProc, smtp_server: SmtpServer
) -> None:
    ambiguous = cli(mail, "send", "--to", "Grace", "--subject", "x", "--body", "x")
    assert ambiguous.exit_code == 1
    assert "kelly@example.org" in ambiguous.stderr
    unknown = cli(mail, "--json", "send", "--to", "Nobody Atall", "-s", "x", "--body", "x")
    assert unknown.exit_code == 3
    assert json.loads(unknown.stdout)["error"]["code"] == "MAPI_E_NOT_FOUND"
    assert js(mail, "ls", "Outbox")["total"] == 0
    assert js(mail, "ls", "Drafts")["total"] == 0
    assert smtp_server.messages == []


def test_send_refuses_what_the_wire_cannot_carry(
    mail: DaemonProc, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(900_000))  # base64 makes it 1.2 MB
    result = cli(
        mail, "send", "--to", "ada@example.org", "-s", "Big", "--attach", str(big), "--body", "x"
    )
    assert result.exit_code == 1 and "MAPI_E_TOO_BIG" in result.stderr
    assert "1 MiB" in result.stderr
    assert js(mail, "ls", "Drafts")["total"] == 0 and js(mail, "ls", "Outbox")["total"] == 0


def test_send_refused_recipient_gives_a_report(mail: DaemonProc, smtp_server: SmtpServer) -> None:
    smtp_server.refuse("nobody@example.net")
    result = cli(
        mail,
        "--json",
        "send",
        "--to",
        "nobody@example.net",
        "-s",
        "Bounce",
        "--body",
        "x",
        "--wait",
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["outcome"] == "ndr" and data["ndr_entryid"]
    report = js(mail, "show", data["ndr_entryid"])
    assert report["props"]["PR_MESSAGE_CLASS"] == "REPORT.IPM.Note.NDR"
    assert "550" in report["props"]["PR_BODY"]


def test_flush_after_the_server_comes_back(mail: DaemonProc, smtp_server: SmtpServer) -> None:
    smtp_server.stop()
    queued = js(mail, "send", "--to", "ada@example.org", "-s", "Later", "--body", "x")
    assert looks_like_entryid(queued["entryid"])

    def still_queued() -> bool | None:
        listing = js(mail, "ls", "Outbox", "--json")
        return True if listing["total"] == 1 else None

    wait_until(still_queued, "the message in the Outbox")
    smtp_server.start()
    data = js(mail, "flush")
    assert data["flushed"] == "MAPI Spooler" and data["async"] is False
    assert any(r["PR_DISPLAY_NAME"] == "MAPI Spooler" for r in data["rows"])
    [got] = smtp_server.wait_for(1)
    assert parsed(got.content)["Subject"] == "Later"
    wait_until(lambda: True if js(mail, "ls", "Outbox")["total"] == 0 else None, "an empty Outbox")
    human = ok(mail, "flush", "--transport", "outgoing")
    assert "flushed outgoing" in human.stdout and "MAPI Spooler" in human.stdout
    assert ok(mail, "flush", "--async").stdout.startswith("flushed MAPI Spooler")
    unknown = cli(mail, "flush", "--transport", "carrier-pigeon")
    assert unknown.exit_code == 3 and "outgoing" in unknown.stderr


def test_send_wait_without_a_shared_session(
    make_daemon: DaemonFactory, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    daemon = make_daemon(
        profiles={"alpha": mail_profile(tmp_path / "a", smtp_server, autologon=False)}
    )
    proc = run(
        daemon,
        "send",
        "--to",
        "Ada",
        "-s",
        "Own session",
        "--body",
        "x",
        "--wait",
        "--from",
        "Ada at work <ada@work.example>",
    )
    assert proc.returncode == 0, proc.stderr
    assert "sent; a copy is in Sent Items" in proc.stdout
    [got] = smtp_server.wait_for(1)
    msg = parsed(got.content)
    assert msg["Subject"] == "Own session"
    assert str(msg["From"]) == "Ada at work <ada@work.example>"


def test_send_wait_times_out_with_the_reason(mail: DaemonProc, smtp_server: SmtpServer) -> None:
    smtp_server.stop()
    result = cli(
        mail,
        "send",
        "--to",
        "ada@example.org",
        "-s",
        "Stuck",
        "--body",
        "x",
        "--wait",
        "--wait-timeout",
        "1",
    )
    assert result.exit_code == 5, result.output
    assert "still in the Outbox" in result.stderr


# --- notify ---------------------------------------------------------------------------------


def test_notify_new_mail_dropped_into_new(mail: DaemonProc, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mapid.cli.app",
            "--runtime-dir",
            str(mail.runtime),
            "--json",
            "notify",
            "--events",
            "newmail",
            "--count",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "following store mail" in read_line(proc.stderr)
        drop(
            tmp_path / "alpha" / "Mail",
            200,
            message_bytes(200, "Fresh", "Bob <b@x.org>", "Hi"),
            None,
        )
        note = json.loads(read_line(proc.stdout))
        assert note["event"] == "fnevNewMail"
        assert looks_like_entryid(note["entryid"]) and note["message_class"] == "IPM.Note"
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shown = js(mail, "show", note["entryid"])
    assert shown["props"]["PR_SUBJECT"] == "Fresh"


def test_notify_human_on_a_folder(mail: DaemonProc, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mapid.cli.app",
            "--runtime-dir",
            str(mail.runtime),
            "notify",
            "Inbox",
            "--count",
            "1",
            "--events",
            "newmail",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "following folder Inbox" in read_line(proc.stderr)
        drop(
            tmp_path / "alpha" / "Mail",
            201,
            message_bytes(201, "Ping", "Bob <b@x.org>", "Hi"),
            None,
        )
        line = read_line(proc.stdout)
        assert "newmail" in line and "Inbox" in line and "Bob: Ping" in line
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_subprocess_exit_codes(reader: DaemonProc) -> None:
    assert run(reader, "ls", "Inbox", "--limit", "1").returncode == 0
    assert run(reader, "ls", "Nowhere").returncode == 3
    assert run(reader, "resolve", "Grace").returncode == 1
    assert run(reader, "show", "Inbox:x:y z").returncode == 2


def test_notify_ends_with_the_shared_session(mail: DaemonProc) -> None:
    proc = subprocess.Popen(
        [
            *[sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(mail.runtime)],
            *["--json", "notify", "--events", "all"],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "following store mail (newmail, created" in read_line(proc.stderr)
        member = js(mail, "logon")
        assert member["shared"] is True
        ok(mail, "logoff", "--shared", member["token"])
        note = json.loads(read_line(proc.stdout))
        assert note["event"] == "fnevCriticalError"
        assert note["error"]["code"] == "MAPI_E_END_OF_SESSION"
        assert proc.wait(15) == 1
        assert "MAPI_E_END_OF_SESSION" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_notify_stops_on_ctrl_c_and_logs_off(mail: DaemonProc) -> None:
    def members() -> int:
        sessions = js(mail, "sessions")["sessions"]
        return int(next(s["members"] for s in sessions if s["profile"] == "alpha"))

    before = members()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(mail.runtime), "notify"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "Ctrl-C stops" in read_line(proc.stderr)
        assert members() == before + 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert members() == before


def test_a_frozen_daemon_is_5_at_the_logon(make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(name="frozen")
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        result = runner.invoke(
            app, ["--runtime-dir", str(daemon.runtime), "--timeout", "0.5", "ls", "Inbox"]
        )
        assert result.exit_code == 5, result.output
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)


def test_commands_release_their_handles_in_the_shared_session(
    make_daemon: DaemonFactory, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """Handles belong to the session, which outlives a command that joined it: with room
    for 25 open objects, forty commands in a row only work if each releases its own."""
    daemon = make_daemon(
        config='default_profile = "alpha"\nwatch = "off"\nmax_handles = 25\n',
        profiles={"alpha": mail_profile(tmp_path / "alpha", smtp_server)},
    )
    for n in range(8):
        ok(daemon, "ls", "Sent")
        ok(daemon, "show", "--peek", f"Inbox:{n + 1}")
        ok(daemon, "folders")
        ok(daemon, "send", "--to", "Ada", "-s", f"n{n}", "--body", "x")
        assert cli(daemon, "resolve", "Grace").exit_code == 1
    smtp_server.wait_for(8)


def test_show_a_message_over_one_mebibyte(mail: DaemonProc, tmp_path: Path) -> None:
    """One reply carries values up to 1 MiB (docs/protocol.md 2): a bigger body is left out and
    named in too_big, and a bigger message has no get_mime; show says so and goes on."""
    msg = EmailMessage()
    msg["From"] = "Bob <bob@example.net>"
    msg["To"] = "Ada Lovelace <ada@example.org>"
    msg["Subject"] = "Huge"
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg.set_content("word " * 300_000)
    msg.add_attachment(
        b"\x00" * 1000, maintype="application", subtype="octet-stream", filename="x.bin"
    )
    drop(tmp_path / "alpha" / "Mail", 400, msg.as_bytes(policy=email.policy.SMTP), "S")
    data = js(mail, "show", "Inbox:1")
    assert data["props"]["PR_SUBJECT"] == "Huge" and data["too_big"] == ["PR_BODY"]
    result = ok(mail, "show", "Inbox:1")
    assert "Subject: Huge" in result.stdout and "over 1 MiB" in result.stdout
    assert "attachments are not listed" in result.stderr
    raw = cli(mail, "show", "--raw", "Inbox:1")
    assert raw.exit_code == 1 and "MAPI_E_TOO_BIG" in raw.stderr
