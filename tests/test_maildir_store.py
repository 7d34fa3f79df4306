"""The Maildir store provider without a daemon: folders, messages, writes, the spooler's
hooks and notifications, over real Maildir trees written the way an MTA and mutt write them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mapid.constants import (
    MdbFlags,
    MessageFlags,
    MsgStatus,
    NotificationEvent,
    ObjectType,
    OpenFlags,
    SpoolerNotify,
    StoreSupport,
)
from mapid.entryid import parse_one_off
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import Folder, Message
from mapid.providers.maildir import MaildirStore, mutf7_decode, mutf7_encode
from mapid.providers.maildir import index as maildir_index

from provider_support import Support

T = TypeVar("T")
EV = NotificationEvent

PLAIN = b"""\
Return-Path: <jm@example.org>
From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.org>
To: Ada Lovelace <ada@example.org>, bob@example.org
Cc: Carl <carl@example.org>
Subject: =?utf-8?b?UmU6IEdyw7zDn2U=?=
Date: Mon, 01 Jan 2024 10:00:00 +0100
Message-ID: <1@example.org>
In-Reply-To: <0@example.org>
References: <0@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hallo Welt, sch\xc3\xb6n.
"""

NDR = b"""\
From: Mail Delivery System <MAILER-DAEMON@mx.example.org>
To: ada@example.org
Subject: Undelivered Mail Returned to Sender
Date: Tue, 02 Jan 2024 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; nobody@example.org
Action: failed
Status: 5.1.1
--B--
"""


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def with_attachment() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Grace Hopper <grace@example.com>"
    msg["To"] = "ada@example.org"
    msg["Subject"] = "Fwd: slides"
    msg["Date"] = "Wed, 03 Jan 2024 12:00:00 +0000"
    msg.set_content("see attached\n")
    msg.add_alternative("<p>see <b>attached</b></p>", subtype="html")
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="s.pdf")
    return msg.as_bytes()


def html_only() -> bytes:
    msg = EmailMessage()
    msg["From"] = "news@example.net"
    msg["To"] = "ada@example.org"
    msg["Subject"] = "Newsletter"
    msg.set_content("<html><body><h1>Hello</h1><p>World &amp; more</p></body></html>", "html")
    return msg.as_bytes()


def mta_deliver(folder: Path, data: bytes, key: str) -> Path:
    """As an MTA delivers: write in tmp/, then rename into new/."""
    tmp = folder / "tmp" / key
    tmp.write_bytes(data)
    target = folder / "new" / key
    os.rename(tmp, target)
    return target


def mutt_flags(folder: Path, key: str, flags: str) -> Path:
    """As mutt marks a message: rename it into cur/ with the new flags."""
    for sub in ("new", "cur"):
        for item in (folder / sub).iterdir():
            if item.name.split(":")[0] == key:
                target = folder / "cur" / f"{key}:2,{flags}"
                os.rename(item, target)
                return target
    raise AssertionError(f"no message {key}")


@pytest.fixture(autouse=True)
def _fresh_process() -> None:
    """Each test starts like a new daemon process: no shared indexes in memory."""
    maildir_index._HUBS.clear()


def logon(tmp_path: Path, **settings: Any) -> tuple[MaildirStore, Support]:
    support = Support({"path": "Mail", **settings}, tmp_path)
    store = MaildirStore(support)
    run(store.logon())
    return store, support


async def subtree_rows(store: MaildirStore) -> list[dict[str, Any]]:
    obj = await store.open_store(MdbFlags.MDB_WRITE)
    subtree = await store.open_entry(
        (await obj.get_props(["PR_IPM_SUBTREE_ENTRYID"]))["PR_IPM_SUBTREE_ENTRYID"], 0
    )
    assert isinstance(subtree, Folder)
    return [dict(r) for r in await subtree.hierarchy_rows()]


async def open_folder(store: MaildirStore, name: str, flags: int = 0) -> Folder:
    for row in await subtree_rows(store):
        if row["PR_DISPLAY_NAME"] == name:
            folder = await store.open_entry(row["PR_ENTRYID"], flags)
            assert isinstance(folder, Folder)
            return folder
    raise AssertionError(f"no folder {name}")


async def rows_of(folder: Folder) -> list[dict[str, Any]]:
    return [dict(r) for r in await folder.contents_rows()]


# --- Store and folders ------------------------------------------------------------------------


def test_store_object_read_only_and_writable(tmp_path: Path) -> None:
    store, _ = logon(tmp_path)

    async def main() -> None:
        ro = await (await store.open_store(0)).get_props(None)
        rw = await (await store.open_store(MdbFlags.MDB_WRITE)).get_props(None)
        ro_mask, rw_mask = (
            StoreSupport(ro["PR_STORE_SUPPORT_MASK"]),
            StoreSupport(rw["PR_STORE_SUPPORT_MASK"]),
        )
        assert StoreSupport.STORE_MODIFY_OK not in ro_mask
        assert StoreSupport.STORE_CREATE_OK not in ro_mask
        assert StoreSupport.STORE_MODIFY_OK in rw_mask and StoreSupport.STORE_CREATE_OK in rw_mask
        assert StoreSupport.STORE_NOTIFY_OK in ro_mask and StoreSupport.STORE_SUBMIT_OK in ro_mask
        assert ro["PR_ACCESS_LEVEL"] == 0 and rw["PR_ACCESS_LEVEL"] == 1
        assert ro["PR_VALID_FOLDER_MASK"] == 0x1F
        names = {}
        for tag in (
            "PR_IPM_SUBTREE_ENTRYID",
            "PR_IPM_OUTBOX_ENTRYID",
            "PR_IPM_SENTMAIL_ENTRYID",
            "PR_IPM_WASTEBASKET_ENTRYID",
            "PR_IPM_DRAFTS_ENTRYID",
        ):
            obj = await store.open_entry(ro[tag], 0)
            assert obj.object_type == ObjectType.MAPI_FOLDER
            names[tag] = (await obj.get_props(["PR_DISPLAY_NAME"]))["PR_DISPLAY_NAME"]
        assert names == {
            "PR_IPM_SUBTREE_ENTRYID": "Top of Information Store",
            "PR_IPM_OUTBOX_ENTRYID": "Outbox",
            "PR_IPM_SENTMAIL_ENTRYID": "Sent Items",
            "PR_IPM_WASTEBASKET_ENTRYID": "Deleted Items",
            "PR_IPM_DRAFTS_ENTRYID": "Drafts",
        }
        # The store table's row comes from store_props().
        assert store.store_props()["PR_ENTRYID"] == store.store_entryid()

    run(main())


def test_folder_tree_as_mutt_and_dovecot_leave_it(tmp_path: Path) -> None:
    store, _ = logon(tmp_path)
    root = tmp_path / "Mail"
    for name in ("Work", "Work.Projects", "Archive", mutf7_encode("Été"), "INBOX.lists"):
        for sub in ("cur", "new", "tmp"):
            (root / f".{name}" / sub).mkdir(parents=True)
    assert mutf7_encode("Été") == "&AMk-t&AOk-" and mutf7_decode("&AMk-t&AOk-") == "Été"
    mta_deliver(root / ".Work.Projects", PLAIN, "1700000000.M1P1Q1.host")

    async def main() -> None:
        store_obj = await store.open_store(0)
        assert isinstance(store_obj, Folder)
        root_folder = await store_obj.open_child(None, 0)
        assert isinstance(root_folder, Folder)
        root_props = await root_folder.get_props(None)
        assert root_props["PR_FOLDER_TYPE"] == 0  # FOLDER_ROOT
        assert [r["PR_DISPLAY_NAME"] for r in await root_folder.hierarchy_rows()] == [
            "Top of Information Store"
        ]
        rows = await subtree_rows(store)
        assert [r["PR_DISPLAY_NAME"] for r in rows] == [
            "Inbox",
            "Outbox",
            "Sent Items",
            "Deleted Items",
            "Drafts",
            "Archive",
            "Été",
            "Work",
        ]
        by_name = {r["PR_DISPLAY_NAME"]: r for r in rows}
        for row in rows:
            assert row["PR_DEPTH"] == 0
            assert row["PR_OBJECT_TYPE"] == int(ObjectType.MAPI_FOLDER)
            assert row["PR_CONTAINER_CLASS"] == "IPF.Note"
            assert row["PR_INSTANCE_KEY"] == row["PR_ENTRYID"]
            assert row["PR_STORE_ENTRYID"] == store.store_entryid()
        assert by_name["Work"]["PR_SUBFOLDERS"] is True
        assert by_name["Inbox"]["PR_SUBFOLDERS"] is True  # INBOX.lists
        assert by_name["Archive"]["PR_SUBFOLDERS"] is False
        work = await store.open_entry(by_name["Work"]["PR_ENTRYID"], 0)
        assert isinstance(work, Folder)
        children = [dict(r) for r in await work.hierarchy_rows()]
        assert [c["PR_DISPLAY_NAME"] for c in children] == ["Projects"]
        assert children[0]["PR_PARENT_ENTRYID"] == by_name["Work"]["PR_ENTRYID"]
        assert children[0]["PR_CONTENT_COUNT"] == 1 and children[0]["PR_CONTENT_UNREAD"] == 1
        inbox = await store.open_entry(by_name["Inbox"]["PR_ENTRYID"], 0)
        assert isinstance(inbox, Folder)
        assert [r["PR_DISPLAY_NAME"] for r in await inbox.hierarchy_rows()] == ["lists"]

    run(main())


def test_create_folder_names_it_as_dovecot_does(tmp_path: Path) -> None:
    store, support = logon(tmp_path)
    root = tmp_path / "Mail"

    async def main() -> None:
        subtree = await store.open_entry(
            store.store_props()["PR_IPM_SUBTREE_ENTRYID"], OpenFlags.MAPI_MODIFY
        )
        assert isinstance(subtree, Folder)
        work, eid = await subtree.create_folder("Wörk")
        assert (root / ".W&APY-rk" / "cur").is_dir() and (
            root / ".W&APY-rk" / "maildirfolder"
        ).exists()
        assert (await work.get_props(["PR_DISPLAY_NAME"]))["PR_DISPLAY_NAME"] == "Wörk"
        sub, _ = await work.create_folder("Projects")
        assert (root / ".W&APY-rk.Projects" / "new").is_dir()
        assert (await sub.get_props(["PR_PARENT_ENTRYID"]))["PR_PARENT_ENTRYID"] == eid
        for taken in ("wörk", "Sent Items", "Inbox", "sent"):
            with pytest.raises(MapiError) as err:
                await subtree.create_folder(taken)
            assert err.value.code == ErrorCode.MAPI_E_COLLISION, taken
        for bad in ("a.b", "a/b", "", " x"):
            with pytest.raises(MapiError) as err:
                await subtree.create_folder(bad)
            assert err.value.code == ErrorCode.MAPI_E_INVALID_PARAMETER, bad
        created = support.events(EV.fnevObjectCreated)
        assert [c["entryid"] for c in created] == [eid, (await sub.get_props(None))["PR_ENTRYID"]]
        assert created[0]["object_type"] == int(ObjectType.MAPI_FOLDER)

    run(main())


# --- Messages read from files -------------------------------------------------------------


def test_message_properties_from_an_rfc5322_file(tmp_path: Path) -> None:
    store, _ = logon(tmp_path)
    root = tmp_path / "Mail"
    mta_deliver(root, PLAIN, "1704099600.M250000P42Q1.mx")

    async def main() -> None:
        inbox = await open_folder(store, "Inbox")
        (row,) = await rows_of(inbox)
        assert row["PR_SUBJECT"] == "Re: Grüße"
        assert row["PR_SENDER_NAME"] == "Jürgen Müller"
        assert row["PR_SENDER_EMAIL_ADDRESS"] == "jm@example.org"
        assert row["PR_DISPLAY_TO"] == "Ada Lovelace; bob@example.org"
        assert row["PR_CLIENT_SUBMIT_TIME"] == datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
        assert row["PR_MESSAGE_DELIVERY_TIME"] == datetime(2024, 1, 1, 9, 0, 0, 250000, UTC)
        assert row["PR_MESSAGE_FLAGS"] == 0 and row["PR_HASATTACH"] is False
        assert row["PR_MESSAGE_CLASS"] == "IPM.Note" and row["PR_FLAG_STATUS"] == 0
        assert row["PR_MESSAGE_SIZE"] == len(PLAIN)
        assert row["PR_OBJECT_TYPE"] == int(ObjectType.MAPI_MESSAGE)
        assert "PR_TRANSPORT_MESSAGE_HEADERS" not in row

        message = await store.open_entry(row["PR_ENTRYID"], 0)
        assert isinstance(message, Message)
        props = await message.get_props(None)
        for tag in row:  # the table and the object agree
            assert props[tag] == row[tag], tag
        assert props["PR_SUBJECT_PREFIX"] == "Re: "
        assert props["PR_NORMALIZED_SUBJECT"] == "Grüße"
        assert props["PR_SENT_REPRESENTING_NAME"] == "Jürgen Müller"
        assert props["PR_SENDER_ADDRTYPE"] == props["PR_SENT_REPRESENTING_ADDRTYPE"] == "SMTP"
        assert props["PR_SENDER_SEARCH_KEY"] == b"SMTP:JM@EXAMPLE.ORG\x00"
        assert props["PR_DISPLAY_CC"] == "Carl" and props["PR_DISPLAY_BCC"] == ""
        assert props["PR_BODY"] == "Hallo Welt, schön.\n"
        assert "PR_HTML" not in props and "PR_BODY_HTML" not in props
        assert props["PR_INTERNET_MESSAGE_ID"] == "<1@example.org>"
        assert props["PR_IN_REPLY_TO_ID"] == props["PR_INTERNET_REFERENCES"] == "<0@example.org>"
        assert props["PR_TRANSPORT_MESSAGE_HEADERS"].startswith("Return-Path: <jm@example.org>\n")
        assert props["PR_PARENT_ENTRYID"] == (await inbox.get_props(None))["PR_ENTRYID"]
        assert props["PR_STORE_ENTRYID"] == store.store_entryid()
        assert props["PR_RECORD_KEY"] == props["PR_ENTRYID"]
        assert isinstance(props["PR_LAST_MODIFICATION_TIME"], datetime)
        assert await message.get_mime() == PLAIN

        recips = [dict(r) for r in await message.recipients_rows()]
        assert [
            (r["PR_DISPLAY_NAME"], r["PR_EMAIL_ADDRESS"], r["PR_RECIPIENT_TYPE"]) for r in recips
        ] == [
            ("Ada Lovelace", "ada@example.org", 1),
            ("bob@example.org", "bob@example.org", 1),
            ("Carl", "carl@example.org", 2),
        ]
        one_off = parse_one_off(recips[0]["PR_ENTRYID"])
        assert one_off is not None and one_off.address == "ada@example.org"
        assert recips[2]["PR_SEARCH_KEY"] == b"SMTP:CARL@EXAMPLE.ORG\x00"
        assert [r["PR_ROWID"] for r in recips] == [1, 2, 3]
        assert len({r["PR_INSTANCE_KEY"] for r in recips}) == 3

    run(main())


def test_attachments_alternative_html_only_and_ndr(tmp_path: Path) -> None:
    store, _ = logon(tmp_path)
    root = tmp_path / "Mail"
    mta_deliver(root, with_attachment(), "1704200000.M1P1Q1.mx")
    mta_deliver(root, html_only(), "1704300000.M1P1Q2.mx")
    mta_deliver(root, NDR, "1704400000.M1P1Q3.mx")

    async def main() -> None:
        inbox = await open_folder(store, "Inbox")
        att, html, ndr = await rows_of(inbox)  # natural order: delivery time
        assert att["PR_HASATTACH"] is True
        assert att["PR_MESSAGE_FLAGS"] == int(MessageFlags.MSGFLAG_HASATTACH)
        assert html["PR_HASATTACH"] is False and "PR_CLIENT_SUBMIT_TIME" not in html
        assert ndr["PR_MESSAGE_CLASS"] == "REPORT.IPM.Note.NDR"

        props = await (await store.open_entry(att["PR_ENTRYID"], 0)).get_props(None)
        assert props["PR_BODY"] == "see attached\n"
        assert props["PR_BODY_HTML"] == "<p>see <b>attached</b></p>\n"
        assert props["PR_HTML"] == b"<p>see <b>attached</b></p>\n"
        assert props["PR_HASATTACH"] is True and props["PR_SUBJECT_PREFIX"] == "Fwd: "
        props = await (await store.open_entry(html["PR_ENTRYID"], 0)).get_props(None)
        assert props["PR_BODY"] == "Hello\n\nWorld & more\n"
        props = await (await store.open_entry(ndr["PR_ENTRYID"], 0)).get_props(None)
        assert props["PR_MESSAGE_CLASS"] == "REPORT.IPM.Note.NDR"
        assert props["PR_BODY"].startswith("Your message could not be delivered.")
        # Every message says what its table row says, the report (multipart/report) too.
        for row in (att, html, ndr):
            opened = await (await store.open_entry(row["PR_ENTRYID"], 0)).get_props(None)
            assert opened["PR_HASATTACH"] == row["PR_HASATTACH"]

    run(main())


def test_a_message_and_its_row_agree_on_attachments(tmp_path: Path) -> None:
    """A mailing list's footer makes multipart/mixed of text only: the row cannot read the
    body, so the opened message judges by the headers as well (as Thunderbird does)."""
    store, _ = logon(tmp_path)
    text_only = (
        b"From: list@example.org\nSubject: With a footer\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nthe post and the list's footer\n--b--\n"
    )
    mta_deliver(tmp_path / "Mail", text_only, "1704500000.M1P1Q1.mx")

    async def main() -> None:
        (row,) = await rows_of(await open_folder(store, "Inbox"))
        opened = await (await store.open_entry(row["PR_ENTRYID"], 0)).get_props(None)
        assert row["PR_HASATTACH"] == opened["PR_HASATTACH"]
        assert bool(row["PR_MESSAGE_FLAGS"] & MessageFlags.MSGFLAG_HASATTACH) == bool(
            opened["PR_MESSAGE_FLAGS"] & MessageFlags.MSGFLAG_HASATTACH
        )

    run(main())


def test_flags_from_mutt_and_entry_ids_that_survive_them(tmp_path: Path) -> None:
    store, _ = logon(tmp_path)
    root = tmp_path / "Mail"
    key = "1704099600.M1P1Q1.mx"
    mta_deliver(root, PLAIN, key)

    async def main() -> None:
        inbox = await open_folder(store, "Inbox")
        (row,) = await rows_of(inbox)
        eid = row["PR_ENTRYID"]
        mutt_flags(root, key, "FST")  # read, flagged, trashed: mutt moves it to cur/
        (row,) = await rows_of(inbox)
        assert row["PR_ENTRYID"] == eid
        assert row["PR_MESSAGE_FLAGS"] == int(MessageFlags.MSGFLAG_READ)
        assert row["PR_FLAG_STATUS"] == 2
        assert row["PR_MSG_STATUS"] == int(MsgStatus.MSGSTATUS_DELMARKED)
        props = await (await store.open_entry(eid, 0)).get_props(None)
        assert props["PR_FLAG_STATUS"] == 2 and props["PR_MESSAGE_FLAGS"] == 1
        mutt_flags(root, key, "D")
        (row,) = await rows_of(inbox)
        assert row["PR_MESSAGE_FLAGS"] == int(MessageFlags.MSGFLAG_UNSENT)
        # A short-term flag byte does not make it another message.
        assert store.compare_entryids(eid, b"\x80" + eid[1:])

    run(main())


def test_the_indexes_linger_after_the_last_logoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A logon soon after the last logoff finds the indexes in memory; when none comes,
    they are saved and freed after LINGER_S."""
    monkeypatch.setattr(maildir_index, "LINGER_S", 0.3)
    root = tmp_path / "Mail"

    async def main() -> None:
        store = MaildirStore(Support({"path": "Mail"}, tmp_path))
        await store.logon()
        mta_deliver(root / ".Sent", PLAIN, "1704099600.M1P1Q1.mx")
        assert len(await rows_of(await open_folder(store, "Sent Items"))) == 1
        hub = maildir_index.hub_for(root.resolve(), store.logged_on().uid)
        await store.logoff()
        kept = hub.indexes()
        assert kept  # lingering
        again = MaildirStore(Support({"path": "Mail"}, tmp_path))
        await again.logon()
        assert hub.indexes() == kept  # taken back as they were: nothing read again
        await again.logoff()
        deadline = time.monotonic() + 5
        while hub.indexes():
            assert time.monotonic() < deadline, "the indexes outlived the linger"
            await asyncio.sleep(0.05)
        assert (root / ".Sent" / maildir_index.INDEX_FILE).is_file()

    run(main())


def test_entry_ids_stable_across_a_new_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maildir_index, "LINGER_S", 0.0)  # the last logoff releases at once
    store, _ = logon(tmp_path)
    root = tmp_path / "Mail"
    mta_deliver(root / ".Sent", PLAIN, "1704099600.M1P1Q1.mx")

    async def first() -> tuple[bytes, bytes]:
        sent = await open_folder(store, "Sent Items")
        (row,) = await rows_of(sent)
        return (await sent.get_props(None))["PR_ENTRYID"], row["PR_ENTRYID"]

    folder_eid, message_eid = run(first())
    store_eid = store.store_entryid()
    hub = maildir_index.hub_for((tmp_path / "Mail").resolve(), store.logged_on().uid)
    run(store.logoff())
    # The last session saved the index and let go of the rows.
    assert (root / ".Sent" / maildir_index.INDEX_FILE).is_file() and hub.indexes() == []
    maildir_index._HUBS.clear()
    again, _ = logon(tmp_path)
    assert again.store_entryid() == store_eid

    async def second() -> None:
        folder = await again.open_entry(folder_eid, 0)
        assert (await folder.get_props(["PR_DISPLAY_NAME"]))["PR_DISPLAY_NAME"] == "Sent Items"
        message = await again.open_entry(message_eid, 0)
        assert (await message.get_props(["PR_SUBJECT"]))["PR_SUBJECT"] == "Re: Grüße"
        with pytest.raises(MapiError) as err:
            await again.open_entry(message_eid[:-3] + b"zzz", 0)
        assert err.value.code == ErrorCode.MAPI_E_NOT_FOUND

    run(second())


# --- Writes --------------------------------------------------------------------------------


def test_set_flags_and_content_keep_the_key(tmp_path: Path) -> None:
    store, support = logon(tmp_path)
    root = tmp_path / "Mail"
    key = "1704099600.M1P1Q1.mx"
    mta_deliver(root, PLAIN, key)

    async def main() -> None:
        inbox = await open_folder(store, "Inbox", OpenFlags.MAPI_MODIFY)
        (row,) = await rows_of(inbox)
        message = await store.open_entry(row["PR_ENTRYID"], OpenFlags.MAPI_MODIFY)
        assert isinstance(message, Message)
        problems = await message.set_props(
            {"PR_MESSAGE_FLAGS": int(MessageFlags.MSGFLAG_READ), "PR_FLAG_STATUS": 2}
        )
        assert problems == {}
        assert list((root / "new").iterdir()) != []  # nothing happens before save_changes
        await message.save_changes()
        assert [p.name for p in (root / "cur").iterdir()] == [f"{key}:2,FS"]
        assert [p.name for p in (root / "new").iterdir()] == []

        problems = await message.set_props(
            {
                "PR_SUBJECT": "Edited\nBcc: someone@example.net",  # never a header of its own
                "PR_ENTRYID": b"x",
                "PR_MESSAGE_SIZE": 3,
                "PR_COMMENT": "?",
            }
        )
        assert problems == {
            "PR_ENTRYID": "MAPI_E_COMPUTED",
            "PR_MESSAGE_SIZE": "MAPI_E_COMPUTED",
            "PR_COMMENT": "MAPI_E_NO_SUPPORT",
        }
        pending = await message.get_mime()
        assert b"Subject: Edited Bcc: someone@example.net\n" in pending
        assert b"\nBcc:" not in pending
        await message.set_props({"PR_SUBJECT": "Edited", "PR_MESSAGE_FLAGS": 0})
        assert (await message.get_props(["PR_SUBJECT"]))["PR_SUBJECT"] == "Edited"
        await message.save_changes()
        assert [p.name for p in (root / "cur").iterdir()] == [f"{key}:2,F"]
        (row,) = await rows_of(inbox)
        assert row["PR_SUBJECT"] == "Edited" and row["PR_MESSAGE_FLAGS"] == 0
        mime = await message.get_mime()
        assert b"Subject: Edited\n" in mime and "schön".encode() in mime
        assert [p.name for p in (root / "tmp").iterdir()] == []
        modified = support.events(EV.fnevObjectModified)
        assert [m["entryid"] for m in modified] == [row["PR_ENTRYID"]] * 2

    run(main())


def test_create_import_copy_move_delete(tmp_path: Path) -> None:
    store, support = logon(tmp_path)
    root = tmp_path / "Mail"

    async def main() -> None:
        drafts = await open_folder(store, "Drafts", OpenFlags.MAPI_MODIFY)
        message = await drafts.create_message()
        props = await message.get_props(None)
        assert props["PR_MESSAGE_FLAGS"] == int(
            MessageFlags.MSGFLAG_UNSENT | MessageFlags.MSGFLAG_READ
        )
        assert "PR_ENTRYID" not in props
        await message.set_props({"PR_SUBJECT": "Hello Grace", "PR_BODY": "Hi!\n"})
        await message.modify_recipients(
            [
                {"PR_DISPLAY_NAME": "Grace Hopper", "PR_EMAIL_ADDRESS": "grace@example.com"},
                {"PR_EMAIL_ADDRESS": "boss@example.com", "PR_RECIPIENT_TYPE": 3},
            ]
        )
        with pytest.raises(MapiError) as err:
            await message.modify_recipients([{"PR_EMAIL_ADDRESS": "Grace <grace@example.com>"}])
        assert err.value.code == ErrorCode.MAPI_E_INVALID_PARAMETER
        assert "PR_DISPLAY_NAME" in err.value.message
        unsaved = await message.get_props(None)  # what it will be, before it is saved
        assert unsaved["PR_DISPLAY_TO"] == "Grace Hopper" and unsaved["PR_DISPLAY_BCC"] == (
            "boss@example.com"
        )
        assert unsaved["PR_BODY"] == "Hi!\n" and unsaved["PR_NORMALIZED_SUBJECT"] == "Hello Grace"
        assert "PR_INTERNET_MESSAGE_ID" not in unsaved and "PR_ENTRYID" not in unsaved
        await message.save_changes()
        (draft,) = await rows_of(drafts)
        assert draft["PR_SUBJECT"] == "Hello Grace"
        assert draft["PR_DISPLAY_TO"] == "Grace Hopper"
        assert draft["PR_MESSAGE_FLAGS"] == int(
            MessageFlags.MSGFLAG_UNSENT | MessageFlags.MSGFLAG_READ
        )
        (name,) = [p.name for p in (root / ".Drafts" / "cur").iterdir()]
        assert name.endswith(":2,DS")
        recips = [dict(r) for r in await message.recipients_rows()]
        assert [(r["PR_EMAIL_ADDRESS"], r["PR_RECIPIENT_TYPE"]) for r in recips] == [
            ("grace@example.com", 1),
            ("boss@example.com", 3),
        ]

        inbox = await open_folder(store, "Inbox", OpenFlags.MAPI_MODIFY)
        eid = await inbox.import_message(PLAIN)
        (stored,) = list((root / "cur").iterdir())
        assert stored.read_bytes() == PLAIN and stored.name.endswith(":2,S")
        key = stored.name.split(":")[0]

        trash = await open_folder(store, "Deleted Items", OpenFlags.MAPI_MODIFY)
        trash_eid = (await trash.get_props(None))["PR_ENTRYID"]
        with pytest.raises(MapiError) as err:  # another store's folder: the daemon copies MIME
            await inbox.copy_messages([eid], b"\0" * 4 + b"X" * 16 + b"\x01F", move=False)
        assert err.value.code == ErrorCode.MAPI_E_NO_SUPPORT
        (copy,) = await inbox.copy_messages([eid], trash_eid, move=False)
        assert copy != eid
        assert len(list((root / ".Trash" / "cur").iterdir())) == 1
        (moved,) = await inbox.copy_messages([eid], trash_eid, move=True)
        assert list((root / "cur").iterdir()) == []
        names = sorted(p.name for p in (root / ".Trash" / "cur").iterdir())
        assert f"{key}:2,S" in names and len(names) == 2  # the move kept the key
        assert {r["PR_ENTRYID"] for r in await rows_of(trash)} == {copy, moved}
        copied = support.events(EV.fnevObjectCopied)
        assert copied[-1]["entryid"] == copy and copied[-1]["old_entryid"] == eid
        moves = support.events(EV.fnevObjectMoved)
        assert moves[-1]["entryid"] == moved and moves[-1]["old_entryid"] == eid
        assert moves[-1]["old_parent_entryid"] == (await inbox.get_props(None))["PR_ENTRYID"]

        await trash.delete_messages([copy, moved])
        assert list((root / ".Trash" / "cur").iterdir()) == []
        assert await rows_of(trash) == []
        assert {d["entryid"] for d in support.events(EV.fnevObjectDeleted)} == {copy, moved}
        with pytest.raises(MapiError) as err:
            await inbox.delete_messages([moved])  # not in this folder
        assert err.value.code == ErrorCode.MAPI_E_NOT_FOUND

    run(main())


def test_submit_and_the_spooler_hooks(tmp_path: Path) -> None:
    store, support = logon(tmp_path)
    root = tmp_path / "Mail"

    async def main() -> None:
        drafts = await open_folder(store, "Drafts", OpenFlags.MAPI_MODIFY)
        queued_eids = []
        for i in range(3):
            message = await drafts.create_message()
            await message.set_props({"PR_SUBJECT": f"m{i}", "PR_BODY": "x\n"})
            if i == 1:
                await message.set_props({"PR_DELETE_AFTER_SUBMIT": True})
            await message.modify_recipients(
                [
                    {"PR_EMAIL_ADDRESS": "a@example.org"},
                    {"PR_EMAIL_ADDRESS": "b@example.org", "PR_RECIPIENT_TYPE": 2},
                    {"PR_EMAIL_ADDRESS": "c@example.org", "PR_RECIPIENT_TYPE": 3},
                ]
            )
            queued_eids.append(await message.submit())
            props = await message.get_props(["PR_MESSAGE_FLAGS", "PR_PARENT_ENTRYID"])
            assert props["PR_MESSAGE_FLAGS"] & MessageFlags.MSGFLAG_SUBMIT
            assert props["PR_PARENT_ENTRYID"] == store.store_props()["PR_IPM_OUTBOX_ENTRYID"]
        assert support.spooler == [SpoolerNotify.NOTIFY_READYTOSEND] * 3
        assert await rows_of(drafts) == []
        assert await store.queued() == queued_eids  # oldest first

        queued = await store.queued_message(queued_eids[1])
        assert queued.delete_after_submit is True
        assert b"Bcc: c@example.org" in queued.mime
        assert [(r.address, r.recipient_type) for r in queued.recipients] == [
            ("a@example.org", 1),
            ("b@example.org", 2),
            ("c@example.org", 3),
        ]
        assert queued.submitted is not None
        assert (await store.queued_message(queued_eids[0])).delete_after_submit is False

        sent_eid = await store.finished(
            queued_eids[0], sent_mime=b"Subject: m0\n\nsent\n", delete=False
        )
        assert sent_eid is not None
        assert await store.finished(queued_eids[1], sent_mime=None, delete=True) is None
        assert await store.queued() == [queued_eids[2]]
        sent = await store.open_entry(sent_eid, 0)
        assert await sent.get_mime() == b"Subject: m0\n\nsent\n"  # type: ignore[attr-defined]
        (sent_name,) = [p.name for p in (root / ".Sent" / "cur").iterdir()]
        assert sent_name.endswith(":2,S")
        with pytest.raises(MapiError) as err:
            await store.finished(queued_eids[0], sent_mime=None, delete=False)
        assert err.value.code == ErrorCode.MAPI_E_NOT_FOUND
        moved = support.events(EV.fnevObjectMoved)
        assert moved[-1]["entryid"] == sent_eid and moved[-1]["old_entryid"] == queued_eids[0]

        support.notifications.clear()
        delivered = await store.deliver(NDR)
        assert [p.parent.name for p in root.glob("new/*")] == ["new"]
        (newmail,) = support.events(EV.fnevNewMail)
        assert newmail["entryid"] == delivered
        assert newmail["message_class"] == "REPORT.IPM.Note.NDR"
        assert newmail["message_flags"] == 0
        assert newmail["parent_entryid"] == (await open_folder(store, "Inbox")).entryid  # type: ignore[attr-defined]
        assert [c["entryid"] for c in support.events(EV.fnevObjectCreated)] == [delivered]

    run(main())


# --- Notifications ------------------------------------------------------------------------


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


def test_notifications_from_disk_and_from_the_daemon_once_each(tmp_path: Path) -> None:
    first, one = logon(tmp_path)
    second, two = logon(tmp_path)  # a second session on the same Maildir
    root = tmp_path / "Mail"

    async def main() -> None:
        await first.advise(first.store_entryid(), EV.fnevNewMail | EV.fnevObjectCreated)
        inbox = await open_folder(second, "Inbox", OpenFlags.MAPI_MODIFY)
        await second.advise(inbox.entryid, EV.fnevObjectModified | EV.fnevObjectDeleted)  # type: ignore[attr-defined]
        assert root / "new" in one.watched and root / ".Sent" / "cur" in one.watched

        mta_deliver(root, PLAIN, "1704099600.M1P9Q1.mx")
        await until(lambda: bool(one.events(EV.fnevNewMail)) and bool(two.events(EV.fnevNewMail)))
        (row,) = await rows_of(inbox)
        for support in (one, two):
            (newmail,) = support.events(EV.fnevNewMail)
            assert newmail["entryid"] == row["PR_ENTRYID"]
            assert newmail["message_class"] == "IPM.Note"
        # mutt marks it read: one fnevObjectModified each.
        mutt_flags(root, "1704099600.M1P9Q1.mx", "S")
        await until(lambda: bool(one.events(EV.fnevObjectModified)))
        await until(lambda: bool(two.events(EV.fnevObjectModified)))
        # A change made through the store: raised once, though the watch sees it too.
        message = await second.open_entry(row["PR_ENTRYID"], OpenFlags.MAPI_MODIFY)
        await message.set_props({"PR_FLAG_STATUS": 2})
        await message.save_changes()
        await asyncio.sleep(0.5)  # let the watch report the rename (it must find nothing new)
        for support in (one, two):
            assert len(support.events(EV.fnevObjectModified)) == 2
        # Another program deletes it.
        for item in (root / "cur").iterdir():
            item.unlink()
        await until(lambda: len(two.events(EV.fnevObjectDeleted)) == 1)
        assert one.events(EV.fnevObjectDeleted)[0]["entryid"] == row["PR_ENTRYID"]
        assert len(one.events(EV.fnevNewMail)) == 1

        # A folder made by another program (mutt's `c`): heard by the store advise, and
        # mail delivered into it too.
        for sub in ("tmp", "cur", "new"):
            (root / ".Projects" / sub).mkdir(parents=True)

        def folder_events() -> list[dict[str, Any]]:
            return [f for f in one.events(EV.fnevObjectCreated) if f["object_type"] == 3]

        await until(lambda: len(folder_events()) == 1)
        (made,) = folder_events()
        assert made["parent_entryid"] == first.store_props()["PR_IPM_SUBTREE_ENTRYID"]
        await until(lambda: root / ".Projects" / "new" in one.watched)
        mta_deliver(root / ".Projects", PLAIN, "1704099700.M1P9Q2.mx")
        await until(
            lambda: any(
                c["parent_entryid"] == made["entryid"] for c in one.events(EV.fnevObjectCreated)
            )
        )
        # One made through the store is raised once, though the root's watch sees it too.
        subtree = await first.open_entry(made["parent_entryid"], OpenFlags.MAPI_MODIFY)
        assert isinstance(subtree, Folder)
        await subtree.create_folder("Later")
        await asyncio.sleep(0.5)
        assert len(folder_events()) == 2

        with pytest.raises(MapiError) as err:
            await first.advise(first.store_entryid(), EV.fnevTableModified)
        assert err.value.code == ErrorCode.MAPI_E_NO_SUPPORT

        await first.logoff()
        await second.logoff()
        assert one.watched == [] and two.watched == []

    try:
        run(main())
    finally:
        one.close()
        two.close()


def test_a_crash_between_sent_and_outbox_sends_again_and_loses_nothing(tmp_path: Path) -> None:
    """finished() writes the Sent Items copy before it removes the queued one: a daemon
    killed between the two finds the message still queued, and finishing it again works."""
    store, _ = logon(tmp_path)
    root = tmp_path / "Mail"

    async def main() -> None:
        drafts = await open_folder(store, "Drafts", OpenFlags.MAPI_MODIFY)
        message = await drafts.create_message()
        await message.set_props({"PR_SUBJECT": "once", "PR_BODY": "x\n"})
        await message.modify_recipients([{"PR_EMAIL_ADDRESS": "a@example.org"}])
        queued = await message.submit()
        (name,) = [p.name for p in (root / ".Outbox" / "cur").iterdir()]
        # The state a SIGKILL between the two steps leaves: the copy in Sent, the original
        # still in the Outbox.
        (root / ".Sent" / "cur" / f"{name.split(':')[0]}:2,S").write_bytes(
            (root / ".Outbox" / "cur" / name).read_bytes()
        )
        await store.logoff()
        maildir_index._HUBS.clear()
        again = MaildirStore(Support({"path": "Mail"}, tmp_path))
        await again.logon()
        assert await again.queued() == [queued]
        sent = await again.finished(queued, sent_mime=None, delete=False)
        assert sent is not None and await again.queued() == []
        # Sent at least once, filed once: the copy the crash left is the one kept.
        assert len(list((root / ".Sent" / "cur").iterdir())) == 1
        assert list((root / ".Outbox" / "cur").iterdir()) == []

    run(main())
