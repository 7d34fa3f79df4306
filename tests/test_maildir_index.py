"""The Maildir folder index: rows from header blocks, kept across processes in
`mapid.index`, changes found once, and what mutt, Dovecot and an MTA leave on disk."""

from __future__ import annotations

import logging
import mailbox
import os
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest

from mapid.constants import MessageFlags, NotificationEvent
from mapid.providers.maildir.index import (
    INDEX_FILE,
    Change,
    FolderIndex,
    IndexRow,
    MaildirHub,
    join_name,
    key_time,
    split_name,
)
from mapid.providers.rfc5322 import (
    parse_addresses,
    parse_header_block,
    split_head,
    split_subject,
    summarize,
)

EV = NotificationEvent
FOLDER_EID = b"\0" * 4 + b"U" * 16 + b"\x01F"
PREFIX = b"\0" * 4 + b"U" * 16 + b"\x01M\0"


def message(subject: str, sender: str = "Ada <ada@example.org>") -> bytes:
    return (
        f"From: {sender}\nTo: Grace <grace@example.com>\nSubject: {subject}\n"
        "Date: Mon, 01 Jan 2024 10:00:00 +0000\n\nbody\n"
    ).encode()


def maildir(tmp_path: Path) -> Path:
    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    return root


def deliver(root: Path, key: str, data: bytes) -> Path:
    (root / "tmp" / key).write_bytes(data)
    os.rename(root / "tmp" / key, root / "new" / key)
    return root / "new" / key


def index_of(root: Path, inbox: bool = True) -> FolderIndex:
    return FolderIndex(root, FOLDER_EID, PREFIX, inbox=inbox)


def subjects(index: FolderIndex) -> list[str]:
    index.refresh()
    return [row["PR_SUBJECT"] for row in index.rows()]


def test_names_flags_and_delivery_time() -> None:
    assert split_name("1700000000.M5P1Q2.host:2,FS") == ("1700000000.M5P1Q2.host", "FS")
    assert split_name("1700000000.M5P1Q2.host") == ("1700000000.M5P1Q2.host", "")
    assert split_name("1700000000.host,S=123:2,") == ("1700000000.host,S=123", "")
    assert join_name("k", "SFDa") == "k:2,DFSa"  # sorted, as the Maildir spec asks
    assert key_time("1700000000.M250000P1.h", 0) == datetime(2023, 11, 14, 22, 13, 20, 250000, UTC)
    assert key_time("1700000000.P1Q1.h", 0) == datetime.fromtimestamp(1700000000, UTC)
    assert key_time("not-a-time", 1_600_000_000 * 10**9) == datetime.fromtimestamp(1.6e9, UTC)


def test_header_reader() -> None:
    head = parse_header_block(
        b"From somebody@example.org Mon Jan  1 10:00:00 2024\n"  # an mbox line: not a header
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= und\n =?iso-8859-1?q?Gr=FC=DFe?=\n"
        b'From: "Lovelace, Ada" <ada@example.org>\n'
        b"To: undisclosed-recipients:;\n"
        b"Cc: =?utf-8?b?SsO8cmdlbg==?= <j@example.org>, bob@example.org\n"
        b"X-Raw: caf\xc3\xa9\n"
        b'Content-Type: multipart/report; report-type="delivery-status";\n boundary=x\n'
        b"Date: yesterday\n\nbody: not a header\n"
    )
    summary = summarize(head)
    assert summary.subject == "Grüße und Grüße"
    assert (summary.sender_name, summary.sender_email) == ("Lovelace, Ada", "ada@example.org")
    assert summary.display_to == ""
    assert summary.submit_time is None  # an unreadable Date is no date
    assert summary.message_class == "REPORT.IPM.Note.NDR"
    assert summary.has_attach is False
    assert parse_addresses(head.get_all("cc")) == [
        ("Jürgen", "j@example.org"),
        ("", "bob@example.org"),
    ]
    assert head.get("body") is None
    assert summarize(
        parse_header_block(b"X-Raw: caf\xc3\xa9\nSubject: caf\xc3\xa9\n\n")
    ).subject == ("café")
    crlf = b"Subject: line\r\n endings\r\nFrom: a@example.org\r\n\r\nTo: not@header\r\n"
    assert split_head(crlf) == b"Subject: line\r\n endings\r\nFrom: a@example.org\r\n\r\n"
    crlf_summary = summarize(parse_header_block(split_head(crlf)))
    assert (crlf_summary.subject, crlf_summary.sender_email) == ("line endings", "a@example.org")
    assert crlf_summary.display_to == ""
    assert split_subject("RE: hi") == ("RE: ", "hi")
    assert split_subject("Fwd: Re: hi") == ("Fwd: ", "Re: hi")
    assert split_subject("2024: the plan") == ("", "2024: the plan")
    assert split_subject("Reminder: x") == ("", "Reminder: x")


def test_rows_persisted_and_reused_by_a_new_process(tmp_path: Path) -> None:
    root = maildir(tmp_path)
    deliver(root, "1700000001.M1P1Q1.mx", message("first"))
    deliver(root, "1700000002.M1P1Q2.mx", message("other"))
    index = index_of(root)
    assert subjects(index) == ["first", "other"]
    saved = msgpack.unpackb((root / INDEX_FILE).read_bytes())
    assert saved["v"] == 2 and len(saved["entries"]) == 2
    assert sorted(mailbox.Maildir(root).keys()) == ["1700000001.M1P1Q1.mx", "1700000002.M1P1Q2.mx"]
    assert [p.name for p in root.iterdir() if p.name.startswith(INDEX_FILE + ".")] == []

    # Rewritten with the same size and mtime: a new process trusts the saved row, which
    # shows that it did not parse the file again.
    path = root / "new" / "1700000001.M1P1Q1.mx"
    before = path.stat()
    path.write_bytes(message("FIRST"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert subjects(index_of(root)) == ["first", "other"]
    # A rewrite that changed the mtime (any editor's) is noticed.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    again = index_of(root)
    assert subjects(again) == ["FIRST", "other"]
    # A file deleted while no mapid ran is dropped; one delivered meanwhile appears.
    (root / "new" / "1700000002.M1P1Q2.mx").unlink()
    deliver(root, "1700000003.M1P1Q3.mx", message("third"))
    assert subjects(index_of(root)) == ["FIRST", "third"]


def test_a_damaged_index_file_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = maildir(tmp_path)
    deliver(root, "1700000001.M1P1Q1.mx", message("one"))
    (root / INDEX_FILE).write_bytes(b"\xc1 not msgpack")
    with caplog.at_level(logging.WARNING):
        assert subjects(index_of(root)) == ["one"]
    assert "unreadable index" in caplog.text
    assert msgpack.unpackb((root / INDEX_FILE).read_bytes())["v"] == 2


def test_changes_are_found_once(tmp_path: Path) -> None:
    root = maildir(tmp_path)
    deliver(root, "1700000001.M1P1Q1.mx", message("old"))
    index = index_of(root)
    index.refresh()
    assert index.take_changes() == []  # the baseline raises nothing
    rows = index.rows()
    assert index.rows() is rows  # the same list while nothing changed

    deliver(root, "1700000002.M1P1Q2.mx", message("new"))
    index.refresh(force=True)
    eid = PREFIX + b"1700000002.M1P1Q2.mx"
    assert index.take_changes() == [
        Change(EV.fnevObjectCreated, eid, FOLDER_EID),
        Change(EV.fnevNewMail, eid, FOLDER_EID, message_class="IPM.Note", message_flags=0),
    ]
    assert index.rows() is not rows
    index.refresh(force=True)
    assert index.take_changes() == []  # listed again: nothing new

    # mutt reads it: into cur/ with S. A modification; the entry ID stays.
    os.rename(root / "new" / "1700000002.M1P1Q2.mx", root / "cur" / "1700000002.M1P1Q2.mx:2,S")
    index.refresh(force=True)
    assert index.take_changes() == [Change(EV.fnevObjectModified, eid, FOLDER_EID)]
    row = next(r for r in index.rows() if r["PR_ENTRYID"] == eid)
    assert row["PR_MESSAGE_FLAGS"] == int(MessageFlags.MSGFLAG_READ)
    # Moved from new/ to cur/ without a flag: nothing a client can see changed.
    os.rename(root / "new" / "1700000001.M1P1Q1.mx", root / "cur" / "1700000001.M1P1Q1.mx:2,")
    index.refresh(force=True)
    assert index.take_changes() == []
    (root / "cur" / "1700000002.M1P1Q2.mx:2,S").unlink()
    index.refresh(force=True)
    assert index.take_changes() == [Change(EV.fnevObjectDeleted, eid, FOLDER_EID)]
    assert index.counts() == (1, 1)

    # A message that arrives already read (mbsync) is created, but is no new mail.
    (root / "cur" / "1700000003.M1P1Q3.mx:2,S").write_bytes(message("synced"))
    index.refresh(force=True)
    assert [c.event for c in index.take_changes()] == [EV.fnevObjectCreated]
    # Outside the Inbox nothing is new mail.
    other = maildir(tmp_path / "sent")
    sent = index_of(other, inbox=False)
    sent.refresh()
    deliver(other, "1700000004.M1P1Q4.mx", message("sent"))
    sent.refresh()
    assert [c.event for c in sent.take_changes()] == [EV.fnevObjectCreated]


def test_a_change_right_after_a_listing_is_not_missed(tmp_path: Path) -> None:
    root = maildir(tmp_path)
    index = index_of(root)
    index.refresh()
    for i in range(20):  # within the same mtime tick as the listing, often
        deliver(root, f"17000000{i:02d}.M1P1Q{i}.mx", message(f"m{i}"))
        index.refresh()  # not forced: only the directory stamps tell it
    assert len(index.rows()) == 20
    assert len([c for c in index.take_changes() if c.event == EV.fnevNewMail]) == 20


def test_rows_behave_as_mappings_and_stay_small(tmp_path: Path) -> None:
    root = maildir(tmp_path)
    for i in range(2000):
        name = f"{1700000000 + i}.M{i}P1Q{i}.mx:2,{'S' if i % 2 else ''}"
        sender = f"Person {i % 50} <p{i % 50}@example.org>"
        (root / "cur" / name).write_bytes(message(f"Quarterly report {i} for the team", sender))
    tracemalloc.start()
    index = index_of(root)
    index.refresh()
    rows = index.rows()
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_row = used / len(rows)
    assert per_row < 1100, per_row
    row = rows[0]
    assert isinstance(row, IndexRow)
    assert "PR_SUBJECT" in row and "PR_BODY" not in row and row.get("PR_BODY", 7) == 7
    as_dict = dict(row)
    assert as_dict["PR_SENDER_NAME"] == "Person 0" and len(row) == len(as_dict) == 16
    assert as_dict["PR_INSTANCE_KEY"] == as_dict["PR_ENTRYID"]
    with pytest.raises(KeyError):
        row["PR_BODY"]
    assert index.counts() == (2000, 1000)


def test_the_hub_fans_changes_out_to_each_subscriber(tmp_path: Path) -> None:
    hub = MaildirHub(tmp_path, b"U" * 16)
    heard: dict[str, list[Change]] = {"a": [], "b": []}
    token_a = hub.subscribe(heard["a"].extend)
    hub.subscribe(heard["b"].extend)
    change = Change(EV.fnevObjectDeleted, b"e", b"p")
    hub.publish([change])
    assert heard == {"a": [change], "b": [change]}
    assert hub.unsubscribe(token_a) == 1
    hub.publish([change])
    assert len(heard["a"]) == 1 and len(heard["b"]) == 2
    made = hub.index("x", lambda: index_of(tmp_path))
    assert hub.index("x", lambda: index_of(tmp_path / "other")) is made


def test_a_file_system_of_whole_seconds_is_listed_again(tmp_path: Path) -> None:
    """ext3 or FAT keep whole seconds: a change in the same second as the listing leaves the
    directory's mtime as it was, so a recent whole-second stamp is not trusted."""
    root = maildir(tmp_path)
    index = index_of(root)
    second = int(time.time()) * 10**9
    for sub in ("cur", "new"):
        os.utime(root / sub, ns=(second, second))
    index.refresh()
    deliver(root, "1700000001.M1P1Q1.mx", message("same second"))
    for sub in ("cur", "new"):
        os.utime(root / sub, ns=(second, second))  # what such a file system shows
    index.refresh()
    assert [r["PR_SUBJECT"] for r in index.rows()] == ["same second"]


def test_a_file_in_both_new_and_cur_is_one_message(tmp_path: Path) -> None:
    """A writer killed between linking into cur/ and unlinking from new/ leaves both."""
    root = maildir(tmp_path)
    deliver(root, "1700000001.M1P1Q1.mx", message("twice"))
    os.link(root / "new" / "1700000001.M1P1Q1.mx", root / "cur" / "1700000001.M1P1Q1.mx:2,S")
    index = index_of(root)
    index.refresh()
    (row,) = index.rows()
    assert row["PR_MESSAGE_FLAGS"] == int(MessageFlags.MSGFLAG_READ)  # cur/ wins
    assert index.locate("1700000001.M1P1Q1.mx") == ("cur", "1700000001.M1P1Q1.mx:2,S")


def test_files_are_read_without_the_lock(tmp_path: Path) -> None:
    """While a refresh reads files (all of them, for a folder without mapid.index), the
    folder's lock is free for the store's writes and lookups."""
    root = maildir(tmp_path)
    for i in range(3000):
        (root / "cur" / f"{1700000000 + i}.M1P1Q{i}.mx:2,S").write_bytes(message(f"m{i}"))
    (root / "cur" / "1800000000.M1P1Q1.mx:2,").mkdir()  # not a file: skipped, no error
    os.mkfifo(root / "cur" / "1800000001.M1P1Q1.mx:2,")  # would block a plain open()
    overlapped = False
    for _ in range(5):  # until the lock is seen taken while the refresh reads
        (root / INDEX_FILE).unlink(missing_ok=True)
        index = index_of(root)
        reader = threading.Thread(target=index.refresh)
        reader.start()
        while not index._refresh_lock.locked() and reader.is_alive():
            time.sleep(0.001)
        assert index.lock.acquire(timeout=10)
        try:
            if index._refresh_lock.locked():
                overlapped = True
                index.refresh(wait=False)  # returns at once: the running one is enough
                assert index.locate("1700000001.M1P1Q1.mx") == ("cur", "1700000001.M1P1Q1.mx:2,S")
        finally:
            index.lock.release()
        reader.join(30)
        if overlapped:
            break
    assert overlapped
    assert len(index.rows()) == 3000
