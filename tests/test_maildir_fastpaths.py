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
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from typing import Any

import pytest

from mapid.constants import RecipientType
from mapid.daemon.spool.outgoing import header_value, prepare, split_header
from mapid.providers import rfc5322
from mapid.providers.base import Identity, QueuedMessage
from mapid.providers.maildir import MaildirStore
from mapid.providers.maildir import index as maildir_index
from mapid.providers.maildir import outbox as maildir_outbox
from mapid.providers.maildir.disk import place_message
from mapid.providers.maildir.flush import Flusher
from mapid.providers.maildir.index import FolderIndex
from mapid.providers.rfc5322 import MailRecipient, compose, message_props

from provider_support import Support

_STAMPS = re.compile(rb"(Date|Message-ID): [^\n]*")


def _unstamped(data: bytes) -> bytes:
    """Date and Message-ID differ from one compose to the next; the rest must not."""
    return _STAMPS.sub(rb"\1: -", data)


def _slow(
    monkeypatch: pytest.MonkeyPatch, changes: dict[str, str], rcpts: list[MailRecipient] | None
) -> bytes:
    with monkeypatch.context() as patch:
        patch.setattr(rfc5322, "_compose_plain", lambda _c, _r: None)
        return compose(None, changes, set(), rcpts)


ALPHABET = "abcXYZ 019.,;:!?'\"()<>[]@-_=+#\t~`|\\/\r"
NAMES = ["", "Grace Hopper", "A. B.", "x", "Hopper, Grace", "o'neil", "  sp  ", "a@b.c", "Zoë"]
ADDRESSES = ["a@b.c", "grace@example.org", "x.y+z@ex-ample.com", "weird@", "zoë@example.org"]
KINDS = [RecipientType.MAPI_TO, RecipientType.MAPI_CC, RecipientType.MAPI_BCC]


def test_plain_compose_writes_the_bytes_the_email_package_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rnd = random.Random(4)
    fast = senders = 0
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
        if rnd.random() < 0.5:  # the sender the daemon stamps at submit
            changes["PR_SENT_REPRESENTING_EMAIL_ADDRESS"] = rnd.choice(ADDRESSES)
            if rnd.random() < 0.8:
                changes["PR_SENT_REPRESENTING_NAME"] = rnd.choice(NAMES)
        rcpts = [
            MailRecipient(rnd.choice(NAMES), rnd.choice(ADDRESSES), rnd.choice(KINDS))
            for _ in range(rnd.randint(0, 3))
        ]
        chosen = rcpts if rnd.random() < 0.8 else None
        quick = rfc5322._compose_plain(changes, chosen)
        if quick is None:
            continue
        fast += 1
        senders += "PR_SENT_REPRESENTING_EMAIL_ADDRESS" in changes
        assert _unstamped(quick) == _unstamped(_slow(monkeypatch, changes, chosen)), changes
    assert fast > 300  # the short cut is taken for many plain messages
    assert senders > 100  # ... with a From too


def test_plain_compose_leaves_the_rest_to_the_email_package() -> None:
    grace = [MailRecipient("Grace Hopper", "grace@example.org", RecipientType.MAPI_TO)]
    assert rfc5322._compose_plain({"PR_SUBJECT": "Grüße"}, grace) is None
    assert rfc5322._compose_plain({"PR_BODY": "x" * 79}, grace) is None
    assert rfc5322._compose_plain({"PR_BODY_HTML": "<p>hi</p>"}, grace) is None
    assert rfc5322._compose_plain({"PR_SUBJECT": "=?utf-8?q?x?="}, None) is None
    hopper = [MailRecipient("Hopper, Grace", "grace@example.org", RecipientType.MAPI_TO)]
    assert rfc5322._compose_plain({"PR_SUBJECT": "hi"}, hopper) is None
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


ADA = Identity("Ada Lovelace", "ada@example.org")


async def _queue_one(store: MaildirStore, props: dict[str, str]) -> bytes:
    outbox = await store.open_entry(store.store_props()["PR_IPM_OUTBOX_ENTRYID"], 1)
    message = await outbox.create_message()  # type: ignore[attr-defined]
    await message.set_props(props)
    await message.modify_recipients([{"PR_EMAIL_ADDRESS": "grace@example.org"}])
    eid: bytes = await message.submit(sender=ADA)
    return eid


def test_submit_stamps_the_sender_and_hands_the_spooler_the_file_it_wrote(
    tmp_path: Path,
) -> None:
    """The spooler gets the queued message from memory, equal to what it would read from
    disk; a message that names its own sender keeps it."""

    async def run() -> None:
        store = MaildirStore(Support({"path": "Mail"}, tmp_path))
        await store.logon()
        mine = await _queue_one(store, {"PR_SUBJECT": "stamped", "PR_BODY": "hi\n"})
        theirs = await _queue_one(
            store,
            {
                "PR_SUBJECT": "on behalf",
                "PR_SENT_REPRESENTING_NAME": "Grace",
                "PR_SENT_REPRESENTING_EMAIL_ADDRESS": "grace@example.org",
            },
        )
        assert await store.queued() == [mine, theirs]
        trips: list[str] = []
        read_back = store._outbox._queued_blocking
        store._outbox._queued_blocking = lambda key: trips.append(key) or read_back(key)  # type: ignore[method-assign]
        for eid, sender in ((mine, "Ada Lovelace <ada@example.org>"), (theirs, "Grace")):
            queued = await store.queued_message(eid)
            assert queued == read_back(store._outbox._outbox_key(eid))
            assert header_value(split_header(queued.mime)[0], "From").startswith(sender)
        assert trips == []  # both from memory

    asyncio.run(run())


async def _outbox_rows(store: MaildirStore) -> list[Any]:
    outbox = await store.open_entry(store.store_props()["PR_IPM_OUTBOX_ENTRYID"], 0)
    return list(await outbox.contents_rows())  # type: ignore[attr-defined]


def _parsed(mime: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(mime)
    assert isinstance(message, EmailMessage)
    return message


def test_a_small_new_message_composed_on_the_loop_is_the_one_composed_in_the_thread(
    tmp_path: Path,
) -> None:
    """submit composes a small new message on the event loop, a big one in the worker
    thread: the files, their index rows and the spooler's views agree either way."""
    big_body = "A line of the long report.\n" * 4000  # 100 KiB: over LOOP_COMPOSE_BYTES
    assert len(big_body) > rfc5322.LOOP_COMPOSE_BYTES

    async def run() -> list[tuple[bytes, QueuedMessage, dict[str, object]]]:
        store = MaildirStore(Support({"path": "Mail"}, tmp_path))
        await store.logon()
        composed_on_loop: list[bool] = []
        real = rfc5322.composes_quickly

        def counted(save: rfc5322.Save) -> bool:
            composed_on_loop.append(real(save))
            return real(save)

        maildir_outbox.composes_quickly = counted
        try:
            eids = [
                await _queue_one(store, {"PR_SUBJECT": "short", "PR_BODY": "hi\n"}),
                await _queue_one(store, {"PR_SUBJECT": "long", "PR_BODY": big_body}),
            ]
        finally:
            maildir_outbox.composes_quickly = real
        assert composed_on_loop == [True, False]
        rows = {r["PR_SUBJECT"]: r for r in await _outbox_rows(store)}
        out = []
        for eid in eids:
            key = store._outbox._outbox_key(eid)
            queued = await store.queued_message(eid)
            on_disk = store._outbox._queued_blocking(key)
            assert queued == on_disk
            out.append((on_disk.mime, queued, rows[_parsed(on_disk.mime)["Subject"]]))
        return out

    (short_mime, short, short_row), (long_mime, long, long_row) = asyncio.run(run())
    for mime, queued, row, body in (
        (short_mime, short, short_row, "hi\n"),
        (long_mime, long, long_row, big_body),
    ):
        message = _parsed(mime)
        assert message.get_content() == body
        assert message["From"] == "Ada Lovelace <ada@example.org>"
        assert [r.address for r in queued.recipients] == ["grace@example.org"]
        assert row["PR_SENDER_EMAIL_ADDRESS"] == "ada@example.org"
        assert row["PR_MESSAGE_SIZE"] == len(mime)


def test_what_submit_composes_on_the_loop_is_bounded_by_its_text() -> None:
    """Strings in lists count too (PR_KEYWORDS), and a saved message is never composed on
    the loop (its stored bytes are parsed again)."""
    limit = rfc5322.LOOP_COMPOSE_BYTES
    small = rfc5322.Save(None, {"PR_SUBJECT": "hi", "PR_BODY": "x" * 100}, set(), None, {})
    many = ["k" * 1024] * (limit // 1024 + 1)
    keywords = rfc5322.Save(None, {"PR_KEYWORDS": many}, set(), None, {})
    saved = rfc5322.Save(b"Subject: hi\n\nhello\n", {"PR_SUBJECT": "hi"}, set(), None, {})
    assert rfc5322.composes_quickly(small)
    assert not rfc5322.composes_quickly(keywords)
    assert not rfc5322.composes_quickly(saved)


def test_a_queued_file_changed_on_disk_is_read_from_disk(tmp_path: Path) -> None:
    async def run() -> None:
        store = MaildirStore(Support({"path": "Mail"}, tmp_path))
        await store.logon()
        eid = await _queue_one(store, {"PR_SUBJECT": "first", "PR_BODY": "hi\n"})
        (queued,) = (tmp_path / "Mail" / ".Outbox" / "cur").iterdir()
        # Another program replaces it the Maildir way: same key, new file, new name.
        replacement = queued.read_bytes().replace(b"Subject: first", b"Subject: second")
        key = queued.name.split(":")[0]
        (queued.parent / f"{key}:2,DSF").write_bytes(replacement)
        queued.unlink()
        assert await store.queued() == [eid]  # the listing sees the new name
        assert (await store.queued_message(eid)).mime == replacement

    asyncio.run(run())


def test_a_message_sent_as_queued_moves_to_sent_items_as_the_same_file(
    tmp_path: Path,
) -> None:
    """No copy is written: the queued file is linked into Sent Items; bytes that differ
    (a transport's own From) are filed as a copy."""

    async def run() -> None:
        store = MaildirStore(Support({"path": "Mail"}, tmp_path))
        await store.logon()
        root = tmp_path / "Mail"
        same = await _queue_one(store, {"PR_SUBJECT": "as queued", "PR_BODY": "hi\n"})
        other = await _queue_one(store, {"PR_SUBJECT": "rewritten", "PR_BODY": "hi\n"})
        inodes = {p.stat().st_ino: p.read_bytes() for p in (root / ".Outbox" / "cur").iterdir()}
        for eid, rewrite in ((same, False), (other, True)):
            queued = await store.queued_message(eid)
            prepared = prepare(queued.mime, override=ADA if rewrite else None, identity=ADA)
            assert (prepared.record == queued.mime) is not rewrite
            filed = await store.finished(eid, sent_mime=prepared.record, delete=False)
            assert filed is not None
        assert list((root / ".Outbox" / "cur").iterdir()) == []
        sent = {p.read_bytes(): p for p in (root / ".Sent" / "cur").iterdir()}
        assert len(sent) == 2 and all(p.name.endswith(":2,S") for p in sent.values())
        linked = [p for p in sent.values() if p.stat().st_ino in inodes]
        assert len(linked) == 1 and b"Subject: as queued" in linked[0].read_bytes()
        subjects = sorted(r["PR_SUBJECT"] for r in await store.contents("Sent"))
        assert subjects == ["as queued", "rewritten"]

    asyncio.run(run())
