"""The submit path's short cuts give what the slow paths give: compose's plain-text writer
against the email package, the one-line Message-ID reader against email's parser, and the
flusher's batched fsyncs (files before folders, failures to their callers)."""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import os
import random
import re
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest

from mapid.constants import RecipientType
from mapid.daemon.outgoing import header_value
from mapid.providers import maildir_index, mime_props
from mapid.providers.maildir import MaildirStore, place_message
from mapid.providers.maildir_flush import Flusher
from mapid.providers.maildir_index import FolderIndex
from mapid.providers.mime_props import MailRecipient, compose, message_props

from provider_support import Support

_STAMPS = re.compile(rb"(Date|Message-ID): [^\n]*")


def _unstamped(data: bytes) -> bytes:
    """Date and Message-ID differ from one compose to the next; the rest must not."""
    return _STAMPS.sub(rb"\1: -", data)


def _slow(
    monkeypatch: pytest.MonkeyPatch, changes: dict[str, str], rcpts: list[MailRecipient] | None
) -> bytes:
    with monkeypatch.context() as patch:
        patch.setattr(mime_props, "_compose_plain", lambda _c, _r: None)
        return compose(None, changes, set(), rcpts)


ALPHABET = "abcXYZ 019.,;:!?'\"()<>[]@-_=+#\t~`|\\/\r"
NAMES = ["", "Grace Hopper", "A. B.", "x", "Hopper, Grace", "o'neil", "  sp  ", "a@b.c", "Zoë"]
ADDRESSES = ["a@b.c", "grace@example.org", "x.y+z@ex-ample.com", "weird@", "zoë@example.org"]
KINDS = [RecipientType.MAPI_TO, RecipientType.MAPI_CC, RecipientType.MAPI_BCC]


def test_plain_compose_writes_the_bytes_the_email_package_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rnd = random.Random(4)
    fast = 0
    for _ in range(3000):
        changes: dict[str, str] = {}
        if rnd.random() < 0.9:
            length = rnd.choice([0, 5, 40, 69, 70, 90])
            changes["PR_SUBJECT"] = "".join(rnd.choice(ALPHABET + "é") for _ in range(length))
        if rnd.random() < 0.9:
            lines = [
                "".join(rnd.choice(ALPHABET) for _ in range(rnd.choice([0, 3, 60, 78, 79])))
                for _ in range(rnd.randint(0, 4))
            ]
            end = rnd.choice(["", "\n", "\n\n", " "])
            changes["PR_BODY"] = rnd.choice(["\n", "\r\n", "\r"]).join(lines) + end
        rcpts = [
            MailRecipient(rnd.choice(NAMES), rnd.choice(ADDRESSES), rnd.choice(KINDS))
            for _ in range(rnd.randint(0, 3))
        ]
        chosen = rcpts if rnd.random() < 0.8 else None
        quick = mime_props._compose_plain(changes, chosen)
        if quick is None:
            continue
        fast += 1
        assert _unstamped(quick) == _unstamped(_slow(monkeypatch, changes, chosen)), changes
    assert fast > 500  # the short cut is taken for most plain messages


def test_plain_compose_leaves_the_rest_to_the_email_package() -> None:
    grace = [MailRecipient("Grace Hopper", "grace@example.org", RecipientType.MAPI_TO)]
    assert mime_props._compose_plain({"PR_SUBJECT": "Grüße"}, grace) is None
    assert mime_props._compose_plain({"PR_BODY": "x" * 79}, grace) is None
    assert mime_props._compose_plain({"PR_BODY_HTML": "<p>hi</p>"}, grace) is None
    assert mime_props._compose_plain({"PR_SUBJECT": "=?utf-8?q?x?="}, None) is None
    hopper = [MailRecipient("Hopper, Grace", "grace@example.org", RecipientType.MAPI_TO)]
    assert mime_props._compose_plain({"PR_SUBJECT": "hi"}, hopper) is None
    # and what compose makes of them still reads back right
    props, _ = message_props(compose(None, {"PR_SUBJECT": "Grüße"}, set(), hopper))
    assert props["PR_SUBJECT"] == "Grüße"
    assert props["PR_DISPLAY_TO"] == "Hopper, Grace"


def test_a_one_line_message_id_reads_as_email_reads_it() -> None:
    parser = BytesHeaderParser(policy=email.policy.default)
    for i in range(300):
        mid = email.utils.make_msgid(domain="vm" if i % 2 else "ex-ample.org")
        for field in (
            f"Message-ID: {mid}\n".encode(),
            f"Message-Id:   {mid}  \r\n".encode(),
            f"message-id:{mid}".encode(),
            f"Message-ID:\t{mid}\r\n".encode(),
            f"Message-ID: (comment) {mid}\n".encode(),
            f"Message-ID: {mid[:-1]}\n".encode(),
        ):
            expected = parser.parsebytes(field).get("Message-ID")
            assert header_value([field], "Message-ID") == str(expected)


def test_flusher_syncs_every_request_and_reports_failures(tmp_path: Path) -> None:
    for sub in ("tmp", "cur", "new"):
        (tmp_path / sub).mkdir()
    flusher = Flusher(workers=4)
    futures = []
    for i in range(20):
        _key, name, fd = place_message(tmp_path, f"Subject: {i}\n\nhi\n".encode(), sub="cur")
        assert (tmp_path / "cur" / name).read_bytes() == f"Subject: {i}\n\nhi\n".encode()
        assert not list((tmp_path / "tmp").iterdir())  # in place at once, nothing left in tmp
        futures.append(flusher.flush([fd], [tmp_path / "cur"]))
    for future in futures:
        assert future.result(timeout=30) is None
    # A descriptor that is not open: that caller hears of it, the others do not.
    good_fd = os.open(tmp_path / "cur", os.O_RDONLY)
    bad = flusher.flush([987654], [tmp_path / "cur"])
    good = flusher.flush([good_fd], [tmp_path / "new"])
    with pytest.raises(OSError):
        bad.result(timeout=30)
    assert good.result(timeout=30) is None
    # A folder removed meanwhile has nothing left to keep.
    assert flusher.flush([], [tmp_path / "gone"]).result(timeout=30) is None


def test_a_hidden_file_stays_out_of_listings_until_revealed(tmp_path: Path) -> None:
    for sub in ("tmp", "cur", "new"):
        (tmp_path / sub).mkdir()
    index = FolderIndex(tmp_path, b"folder", b"msg:")
    index.refresh()
    assert index.rows() == []
    data = b"Subject: filed\n\nhi\n"
    with index.lock:
        key, name, fd = place_message(tmp_path, data, sub="cur", flags="S")
        index.hide(key)
    os.close(fd)
    index.refresh(force=True)
    assert index.rows() == [] and index.take_changes() == []
    assert index.has(key)  # a new file cannot take its key meanwhile
    with index.lock:
        index.reveal(key)
        index.note_file(key, "cur", name, quiet=True, data=data)
    index.refresh(force=True)
    assert [r["PR_SUBJECT"] for r in index.rows()] == ["filed"]
    assert index.take_changes() == []  # the store's own write raises nothing twice


def test_a_hand_off_cut_short_by_a_crash_files_the_message_once(tmp_path: Path) -> None:
    async def submit() -> bytes:
        store = MaildirStore(Support({"path": "Mail"}, tmp_path))
        await store.logon()
        outbox = await store.open_entry(store.store_props()["PR_IPM_OUTBOX_ENTRYID"], 1)
        message = await outbox.create_message()  # type: ignore[attr-defined]
        await message.set_props({"PR_SUBJECT": "once", "PR_BODY": "hi\n"})
        await message.modify_recipients([{"PR_EMAIL_ADDRESS": "grace@example.org"}])
        eid: bytes = await message.submit()
        return eid

    async def restart_and_finish(eid: bytes, sent: bytes) -> None:
        maildir_index._HUBS.clear()  # a new daemon process
        store = MaildirStore(Support({"path": "Mail"}, tmp_path))
        await store.logon()
        assert await store.finished(eid, sent_mime=sent, delete=False) is not None
        assert await store.queued() == []

    eid = asyncio.run(submit())
    root = tmp_path / "Mail"
    (queued,) = (root / ".Outbox" / "cur").iterdir()
    sent = b"From: ada@example.org\n" + queued.read_bytes()
    # The daemon was killed after it filed the copy and before the queued file went.
    key = queued.name.split(":")[0]
    (root / ".Sent" / "cur" / f"{key}:2,S").write_bytes(sent)
    asyncio.run(restart_and_finish(eid, sent))
    assert [p.read_bytes() for p in (root / ".Sent" / "cur").iterdir()] == [sent]
    assert list((root / ".Outbox" / "cur").iterdir()) == []
