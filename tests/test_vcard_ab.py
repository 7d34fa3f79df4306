"""The vcard provider as an address book: containers, mail users, resolve_names, one-off entry
IDs, real-world vCard shapes, and folders that change on disk.

`Support` (tests/provider_support.py) is a small real ProviderSupport with a real
`watch_directory` and a `notify` that records what the provider raised.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mapid.client import Client
from mapid.constants import (
    MAPI_ONE_OFF_UID,
    MAPI_ONE_OFF_UNICODE,
    AbContainerFlags,
    DisplayType,
    NotificationEvent,
    ObjectType,
    StatusCode,
    ValidateStateFlags,
)
from mapid.entryid import (
    make,
    one_off,
    parse_one_off,
    private_of,
    search_key,
    uid_from_name,
    uid_of,
)
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import Container
from mapid.providers.vcard import VCardAddressBook, VCardContainer

from conftest import DaemonProc
from provider_support import Support

T = TypeVar("T")


# --- Cards as people's tools write them ------------------------------------------------------

PEOPLE_30 = """\
BEGIN:VCARD
VERSION:3.0
UID:ada-1
FN:Ada Lovelace
N:Lovelace;Ada;;;
ORG:Analytical Engines
EMAIL;TYPE=INTERNET:ada@home.example
EMAIL;TYPE=INTERNET,PREF:Ada@Example.org
END:VCARD
BEGIN:VCARD
VERSION:3.0
UID:charles-1
FN:Charles Babbage
N:Babbage;Charles;;;
EMAIL:charles@example.org
END:VCARD
"""

# vCard 4.0 with PREF, CRLF line ends, a folded EMAIL line and non-ASCII names.
GODEL_40 = (
    "BEGIN:VCARD\r\n"
    "VERSION:4.0\r\n"
    "UID:urn:uuid:0b1c0a5e-6f5e-4f0b-9a1e-9a3f1f0d2b77\r\n"
    "FN:Kurt Gödel\r\n"
    "N:Gödel;Kurt;;;\r\n"
    "NICKNAME:Kurti\r\n"
    'EMAIL;TYPE="work";PREF=2:kurt@ias.example\r\n'
    "EMAIL;PREF=1:kurt.goedel@uni-\r\n"
    " wien.example\r\n"
    "END:VCARD\r\n"
)

# No FN (as 2.1 exports and hand-written cards go), one with only ORG, one without EMAIL.
NO_FN = """\
BEGIN:VCARD
VERSION:3.0
UID:emmy-1
N:Noether;Emmy;;;
EMAIL:emmy@example.de
END:VCARD
BEGIN:VCARD
VERSION:3.0
UID:acme-1
ORG:ACME Widgets
EMAIL:sales@acme.example
END:VCARD
BEGIN:VCARD
VERSION:3.0
UID:alan-1
FN:Alan Turing
TEL:+44 20 0000 0000
END:VCARD
"""

BROKEN = "BEGIN:VCARD\nVERSION:3.0\nFN:Broken\nthis line has no colon\n"

# A 2.1 export in Latin-1 with bare PREF.
LATIN1_21 = (
    "BEGIN:VCARD\r\nVERSION:2.1\r\nN:Müller;Jörg\r\n"
    "EMAIL;INTERNET;PREF:jm@example.ch\r\nEND:VCARD\r\n"
)


def _card(uid: str, fn: str, *emails: str, n: str | None = None) -> str:
    lines = ["BEGIN:VCARD", "VERSION:4.0", f"UID:{uid}", f"FN:{fn}"]
    lines += [f"N:{n}"] if n is not None else []
    lines += [f"EMAIL:{e}" for e in emails]
    return "\r\n".join([*lines, "END:VCARD", ""])


def _vdir(tmp_path: Path) -> Path:
    folder = tmp_path / "contacts"
    folder.mkdir()
    (folder / "people.vcf").write_text(PEOPLE_30, encoding="utf-8")
    (folder / "godel.vcf").write_bytes(GODEL_40.encode("utf-8"))
    (folder / "nofn.vcf").write_text(NO_FN, encoding="utf-8")
    (folder / "broken.vcf").write_text(BROKEN, encoding="utf-8")
    (folder / "joerg.vcf").write_bytes(LATIN1_21.encode("latin-1"))
    (folder / ".hidden.vcf").write_text(_card("hidden", "Hidden", "h@example.org"))
    return folder


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def _logon(tmp_path: Path, **settings: Any) -> tuple[VCardAddressBook, Support]:
    support = Support(settings, tmp_path)
    provider = VCardAddressBook(support)
    _run(provider.logon())
    return provider, support


def _by_name(rows: Any) -> dict[str, Mapping[str, Any]]:
    return {row["PR_DISPLAY_NAME"]: row for row in rows}


async def _until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# --- One-off entry IDs (docs/mapi.md 7.1) ---------------------------------------------------------


def test_one_off_entryid_has_the_layout_of_docs_mapi_md() -> None:
    eid = one_off("Ada Lövelace", "SMTP", "ada@example.org")
    expected = (
        b"\x00\x00\x00\x00"  # abFlags: long-term
        + MAPI_ONE_OFF_UID
        + struct.pack("<HH", 0, MAPI_ONE_OFF_UNICODE)  # version 0, then flags, little-endian
        + "Ada Lövelace".encode("utf-16-le")
        + b"\0\0"
        + "SMTP".encode("utf-16-le")
        + b"\0\0"
        + "ada@example.org".encode("utf-16-le")
        + b"\0\0"  # no padding after the last string
    )
    assert eid == expected
    assert eid[20:24] == b"\x00\x00\x00\x80"
    parsed = parse_one_off(eid)
    assert parsed is not None
    assert (parsed.display_name, parsed.addrtype, parsed.address) == (
        "Ada Lövelace",
        "SMTP",
        "ada@example.org",
    )
    # The 8-bit form (flags without MAPI_ONE_OFF_UNICODE) is read as well.
    ansi = make(MAPI_ONE_OFF_UID, struct.pack("<HH", 0, 0) + b"Bob\0SMTP\0bob@example.org\0")
    assert parse_one_off(ansi) is not None
    assert parse_one_off(ansi).address == "bob@example.org"  # type: ignore[union-attr]
    # A one-off cut short has no terminated address: not a one-off at all.
    assert parse_one_off(eid[:-2]) is None
    assert parse_one_off(eid[:-3]) is None
    assert parse_one_off(ansi[:-1]) is None
    assert parse_one_off(make(b"\x07" * 16, eid[20:])) is None  # another MAPIUID


# --- The container --------------------------------------------------------------------------


def test_the_folder_is_one_top_level_container(tmp_path: Path) -> None:
    _vdir(tmp_path)
    provider, _ = _logon(tmp_path, path="contacts")
    assert provider.uid is not None
    [row] = provider.top_containers()
    eid = row["PR_ENTRYID"]
    assert eid == b"\x00\x00\x00\x00" + provider.uid + b"\x02"
    assert row["PR_DISPLAY_NAME"] == "contacts"  # no display_name: the folder's name
    assert row["PR_OBJECT_TYPE"] == ObjectType.MAPI_ABCONT
    assert row["PR_DISPLAY_TYPE"] == DisplayType.DT_NOT_SPECIFIC
    flags = AbContainerFlags(row["PR_CONTAINER_FLAGS"])
    assert flags == AbContainerFlags.AB_RECIPIENTS | AbContainerFlags.AB_MODIFIABLE
    assert row["PR_DEPTH"] == 0
    assert row["PR_INSTANCE_KEY"] == row["PR_RECORD_KEY"] == eid

    container = _run(provider.open_entry(eid, 0))
    assert isinstance(container, VCardContainer) and isinstance(container, Container)
    assert container.object_type == ObjectType.MAPI_ABCONT
    props = _run(container.get_props(None))
    assert props["PR_ENTRYID"] == eid and props["PR_DISPLAY_NAME"] == "contacts"
    assert "PR_DEPTH" not in props and "PR_INSTANCE_KEY" not in props
    assert _run(container.get_props(["PR_CONTAINER_FLAGS", "PR_BODY"])) == {
        "PR_CONTAINER_FLAGS": int(flags)
    }
    assert list(_run(container.hierarchy_rows())) == []
    # The short-term form of the container's entry ID names the same container.
    assert provider.compare_entryids(eid, b"\xff\x00\x00\x00" + eid[4:])
    with pytest.raises(MapiError) as err:
        _run(container.open_child(None, 0))
    assert err.value.code == ErrorCode.MAPI_E_NO_SUPPORT

    named, _ = _logon(tmp_path, path="contacts", display_name="Friends")
    assert named.top_containers()[0]["PR_DISPLAY_NAME"] == "Friends"
    assert named.top_containers()[0]["PR_ENTRYID"] == eid  # the same folder, the same ID


def test_contents_are_the_mail_users_shared_between_sessions(tmp_path: Path) -> None:
    _vdir(tmp_path)
    provider, support = _logon(tmp_path, path="contacts")
    container = _run(provider.open_entry(provider.top_containers()[0]["PR_ENTRYID"], 0))
    assert isinstance(container, VCardContainer)
    rows = _run(container.contents_rows())
    by_name = _by_name(rows)
    # Alan Turing has no e-mail address: not a recipient, so not listed.
    assert sorted(by_name) == [
        "ACME Widgets",
        "Ada Lovelace",
        "Charles Babbage",
        "Emmy Noether",
        "Jörg Müller",
        "Kurt Gödel",
    ]
    ada = by_name["Ada Lovelace"]
    assert ada["PR_EMAIL_ADDRESS"] == ada["PR_SMTP_ADDRESS"] == "Ada@Example.org"
    assert ada["PR_ADDRTYPE"] == "SMTP"
    assert ada["PR_SEARCH_KEY"] == search_key("SMTP", "Ada@Example.org")
    assert ada["PR_OBJECT_TYPE"] == ObjectType.MAPI_MAILUSER
    assert ada["PR_DISPLAY_TYPE"] == DisplayType.DT_MAILUSER
    assert ada["PR_INSTANCE_KEY"] == ada["PR_ENTRYID"]
    assert (ada["PR_GIVEN_NAME"], ada["PR_SURNAME"], ada["PR_COMPANY_NAME"]) == (
        "Ada",
        "Lovelace",
        "Analytical Engines",
    )
    assert ada["PR_CONTACT_EMAIL_ADDRESSES"] == ["Ada@Example.org", "ada@home.example"]
    assert ada["PR_CONTACT_ADDRTYPES"] == ["SMTP", "SMTP"]
    assert ada["PR_CONTACT_DEFAULT_ADDRESS_INDEX"] == 0
    assert ada["PR_CONTACT_ENTRYIDS"][0] == ada["PR_ENTRYID"]
    assert "PR_COMPANY_NAME" not in by_name["Charles Babbage"]
    assert len({row["PR_INSTANCE_KEY"] for row in rows}) == len(rows)

    # Built once per scan: the same rows for every call and for another session's provider.
    assert _run(container.contents_rows()) is rows
    assert provider.contents_rows() is rows
    other, _ = _logon(tmp_path, path="contacts")
    assert other.contents_rows() is rows
    assert support.rows == []  # reading tables never touches the status row


def test_mail_users_by_entry_id_at_each_address(tmp_path: Path) -> None:
    _vdir(tmp_path)
    provider, _ = _logon(tmp_path, path="contacts")
    ada = _by_name(provider.contents_rows())["Ada Lovelace"]
    eid, home_eid = ada["PR_CONTACT_ENTRYIDS"]
    assert private_of(eid) == b"\x01ada-1"
    assert private_of(home_eid) == b"\x03ada@home.example\x00ada-1"

    user = _run(provider.open_entry(eid, 0))
    assert user.object_type == ObjectType.MAPI_MAILUSER
    props = _run(user.get_props(None))
    assert props["PR_ENTRYID"] == props["PR_RECORD_KEY"] == eid
    assert props["PR_DISPLAY_NAME"] == props["PR_TRANSMITABLE_DISPLAY_NAME"] == "Ada Lovelace"
    assert props["PR_EMAIL_ADDRESS"] == "Ada@Example.org"
    assert props["PR_SEARCH_KEY"] == b"SMTP:ADA@EXAMPLE.ORG\x00"

    home = _run(_run(provider.open_entry(home_eid, 0)).get_props(None))
    assert home["PR_ENTRYID"] == home_eid
    assert home["PR_EMAIL_ADDRESS"] == home["PR_SMTP_ADDRESS"] == "ada@home.example"
    assert home["PR_SEARCH_KEY"] == b"SMTP:ADA@HOME.EXAMPLE\x00"
    assert home["PR_DISPLAY_NAME"] == "Ada Lovelace"

    uid = provider.uid
    assert uid is not None
    # The preferred address spelled out names the same mail user as the plain entry ID.
    preferred = make(uid, b"\x03ada@example.org\x00ada-1")
    assert provider.compare_entryids(eid, preferred)
    assert not provider.compare_entryids(eid, home_eid)
    assert not provider.compare_entryids(eid, provider.top_containers()[0]["PR_ENTRYID"])
    for bad, code in (
        (make(uid, b"\x03nobody@example.org\x00ada-1"), ErrorCode.MAPI_E_NOT_FOUND),
        (make(uid, b"\x01gone"), ErrorCode.MAPI_E_NOT_FOUND),
        (make(uid, b"\x03no-terminator"), ErrorCode.MAPI_E_INVALID_ENTRYID),
        (make(uid, b"\x09"), ErrorCode.MAPI_E_INVALID_ENTRYID),
        (make(b"\x05" * 16, b"\x01ada-1"), ErrorCode.MAPI_E_INVALID_ENTRYID),
    ):
        with pytest.raises(MapiError) as err:
            _run(provider.open_entry(bad, 0))
        assert err.value.code == code, bad

    # The card without an address is still a mail user for whoever has its entry ID.
    alan = _run(provider.open_entry(make(uid, b"\x01alan-1"), 0))
    alan_props = _run(alan.get_props(None))
    assert alan_props["PR_DISPLAY_NAME"] == "Alan Turing"
    assert "PR_EMAIL_ADDRESS" not in alan_props and "PR_CONTACT_ENTRYIDS" not in alan_props


def test_identity_at_a_secondary_address(tmp_path: Path) -> None:
    _vdir(tmp_path)
    identity = {"display_name": "Ada at home", "email": "ADA@home.example"}
    provider, _ = _logon(tmp_path, path="contacts", identity=identity)
    eid = provider.status_props()["PR_IDENTITY_ENTRYID"]
    assert uid_of(eid) == provider.uid
    props = _run(_run(provider.open_entry(eid, 0)).get_props(None))
    assert props["PR_EMAIL_ADDRESS"] == "ada@home.example"


# --- Real-world vCard shapes ----------------------------------------------------------------


def test_vcard_shapes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _vdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        provider, _ = _logon(tmp_path, path="contacts")
    contacts = {c.uid: c for c in provider.contacts()}
    assert set(contacts) == {
        "ada-1",
        "charles-1",
        "urn:uuid:0b1c0a5e-6f5e-4f0b-9a1e-9a3f1f0d2b77",
        "emmy-1",
        "acme-1",
        "alan-1",
        "joerg.vcf#0",
    }  # hidden files are not read; two files hold several cards
    godel = contacts["urn:uuid:0b1c0a5e-6f5e-4f0b-9a1e-9a3f1f0d2b77"]
    # PREF=1 first; the folded line is joined.
    assert godel.emails == ("kurt.goedel@uni-wien.example", "kurt@ias.example")
    assert (godel.display_name, godel.surname, godel.nickname) == ("Kurt Gödel", "Gödel", "Kurti")
    assert contacts["emmy-1"].display_name == "Emmy Noether"  # no FN: from N
    assert contacts["acme-1"].display_name == "ACME Widgets"  # no FN, no N: from ORG
    assert contacts["alan-1"].emails == ()
    joerg = contacts["joerg.vcf#0"]
    assert (joerg.display_name, joerg.emails) == ("Jörg Müller", ("jm@example.ch",))  # Latin-1
    assert "broken.vcf" in caplog.text

    props = provider.status_props()
    assert props["PR_STATUS_CODE"] == int(StatusCode.STATUS_AVAILABLE)
    assert props["PR_STATUS_STRING"] == (
        "7 contacts, 1 without an e-mail address, 1 unreadable file"
    )


# --- resolve_names --------------------------------------------------------------------------


def _resolve(provider: VCardAddressBook, name: str) -> list[tuple[int, str, str]]:
    return [
        (rank, row["PR_DISPLAY_NAME"], row["PR_EMAIL_ADDRESS"])
        for rank, row in _run(provider.resolve_names(name))
    ]


def test_resolve_names_ranks(tmp_path: Path) -> None:
    _vdir(tmp_path)
    provider, _ = _logon(tmp_path, path="contacts")
    ada_pref = (0, "Ada Lovelace", "Ada@Example.org")
    assert _resolve(provider, "Ada Lovelace") == [ada_pref]
    assert _resolve(provider, "  ada   LOVELACE ") == [ada_pref]
    assert _resolve(provider, "Lovelace") == [ada_pref]  # the surname alone
    assert _resolve(provider, "lovelace ada") == [ada_pref]  # surname first
    assert _resolve(provider, "Ada") == [ada_pref]  # the given name is exact
    assert _resolve(provider, "love") == [(1, "Ada Lovelace", "Ada@Example.org")]
    assert _resolve(provider, "ovela") == [(2, "Ada Lovelace", "Ada@Example.org")]
    # A match on an address answers that address, with the entry ID of that address.
    assert _resolve(provider, "ADA@HOME.example") == [(0, "Ada Lovelace", "ada@home.example")]
    [(_, row)] = _run(provider.resolve_names("ada@home.example"))
    assert row["PR_SEARCH_KEY"] == b"SMTP:ADA@HOME.EXAMPLE\x00"
    assert private_of(row["PR_ENTRYID"]) == b"\x03ada@home.example\x00ada-1"
    assert set(row) == {
        "PR_ENTRYID",
        "PR_DISPLAY_NAME",
        "PR_EMAIL_ADDRESS",
        "PR_ADDRTYPE",
        "PR_SEARCH_KEY",
        "PR_OBJECT_TYPE",
        "PR_DISPLAY_TYPE",
    }
    assert row["PR_ADDRTYPE"] == "SMTP" and row["PR_OBJECT_TYPE"] == ObjectType.MAPI_MAILUSER
    assert _resolve(provider, "home") == [(1, "Ada Lovelace", "ada@home.example")]

    # A word of the name or the address: prefix; then substring; best first.
    assert _resolve(provider, "ku") == [(1, "Kurt Gödel", "kurt.goedel@uni-wien.example")]
    assert _resolve(provider, "ias") == [(1, "Kurt Gödel", "kurt@ias.example")]
    assert _resolve(provider, "Kurti") == [(0, "Kurt Gödel", "kurt.goedel@uni-wien.example")]
    # Non-ASCII, whatever its Unicode form: "gödel" typed decomposed still matches.
    decomposed = unicodedata.normalize("NFD", "GÖDEL")
    assert _resolve(provider, decomposed) == [(0, "Kurt Gödel", "kurt.goedel@uni-wien.example")]
    assert _resolve(provider, "jörg") == [(0, "Jörg Müller", "jm@example.ch")]

    found = _resolve(provider, "example.org")
    assert [r[0] for r in found] == [1, 1]  # the domain of both addresses
    assert {r[1] for r in found} == {"Ada Lovelace", "Charles Babbage"}
    ranks = [rank for rank, *_ in _resolve(provider, "e")]
    assert ranks == sorted(ranks) and len(ranks) == 6  # every card with an address

    assert _resolve(provider, "Alan Turing") == []  # no address: never a recipient
    assert _resolve(provider, "zzz") == []
    assert _resolve(provider, "   ") == []


def test_resolve_names_several_at_the_best_rank(tmp_path: Path) -> None:
    folder = tmp_path / "contacts"
    folder.mkdir()
    (folder / "a.vcf").write_text(_card("a1", "Ada Lovelace", "ada@example.org", n="Lovelace;Ada"))
    (folder / "b.vcf").write_text(_card("b1", "Ada Byron", "byron@example.org", n="Byron;Ada"))
    (folder / "c.vcf").write_text(_card("c1", "Adam Smith", "adam@example.org", n="Smith;Adam"))
    (folder / "d.vcf").write_text(_card("d1", "Ada Hopper", "dh@example.org"))  # FN only
    provider, _ = _logon(tmp_path, path="contacts")
    # Two given names are exactly "Ada" (D answers MAPI_E_AMBIGUOUS_RECIP); Adam only begins so.
    assert [(r, n) for r, n, _ in _resolve(provider, "ada")] == [
        (0, "Ada Lovelace"),
        (0, "Ada Byron"),
        (1, "Adam Smith"),
        (1, "Ada Hopper"),  # without N, "Ada" is only the first word of its name
    ]
    assert [n for _, n, _ in _resolve(provider, "ada lo")] == ["Ada Lovelace"]


# --- Following the folder -------------------------------------------------------------------


def test_changes_on_disk_are_picked_up_and_notified(tmp_path: Path) -> None:
    folder = _vdir(tmp_path)

    async def main() -> None:
        support = Support({"path": "contacts"}, tmp_path)
        provider = VCardAddressBook(support)
        await provider.logon()
        assert support.watched == [folder.resolve()]
        container_eid = provider.top_containers()[0]["PR_ENTRYID"]
        await provider.advise(container_eid, NotificationEvent.fnevObjectCreated)
        first = provider.contents_rows()
        ada_row = _by_name(first)["Ada Lovelace"]

        # Created: a card another program writes the way vdirsyncer does (temp, rename).
        tmp = folder / ".new.vcf.tmp"
        tmp.write_text(_card("grace-1", "Grace Hopper", "grace@example.com"))
        tmp.rename(folder / "grace.vcf")
        await _until(lambda: support.notifications != [], "fnevObjectCreated")
        uid = provider.uid
        assert uid is not None
        grace_eid = make(uid, b"\x01grace-1")
        assert support.raised() == [("fnevObjectCreated", grace_eid)]
        _, _, fields = support.notifications[0]
        assert fields == {
            "object_type": int(ObjectType.MAPI_MAILUSER),
            "parent_entryid": container_eid,
        }
        rows = provider.contents_rows()
        assert rows is not first and "Grace Hopper" in _by_name(rows)
        assert _by_name(rows)["Ada Lovelace"] is ada_row  # unchanged contacts keep their row
        # The row follows through the provider's RowPacer: soon, not with the notification.
        counted = "8 contacts, 1 without an e-mail address, 1 unreadable file"
        await _until(
            lambda: bool(support.rows) and support.rows[-1][0]["PR_STATUS_STRING"] == counted,
            "the row counting the new card",
        )
        assert [c.display_name for c in provider.resolve("grace")] == ["Grace Hopper"]

        # Modified and deleted in one go: Ada's file rewritten, Godel's file removed.
        support.notifications.clear()
        (folder / "people.vcf").write_text(PEOPLE_30.replace("FN:Ada Lovelace", "FN:Ada King"))
        (folder / "godel.vcf").unlink()
        (folder / "broken.vcf").write_text(_card("fixed-1", "Fixed Card", "fixed@example.org"))
        godel_eid = make(uid, b"\x01urn:uuid:0b1c0a5e-6f5e-4f0b-9a1e-9a3f1f0d2b77")
        want = {
            ("fnevObjectModified", make(uid, b"\x01ada-1")),
            ("fnevObjectDeleted", godel_eid),
            ("fnevObjectCreated", make(uid, b"\x01fixed-1")),
        }
        await _until(lambda: set(support.raised()) >= want, "modified, deleted, created")
        await _until(
            lambda: (
                support.rows[-1][0]["PR_STATUS_STRING"] == "8 contacts, 1 without an e-mail address"
            ),
            "the status row without the unreadable file",
        )
        assert ("fnevObjectModified", make(uid, b"\x01charles-1")) not in support.raised()
        names = _by_name(provider.contents_rows())
        assert "Ada King" in names and "Kurt Gödel" not in names and "Fixed Card" in names
        assert _resolve_async_names(await provider.resolve_names("King")) == ["Ada King"]

        # A file that is not a card changes nothing and raises nothing.
        support.notifications.clear()
        before = len(support.rows)
        (folder / "notes.txt").write_text("not a card")
        (folder / "people.vcf.swp").write_text("editor's dropping")
        await asyncio.sleep(0.3)
        assert support.notifications == [] and len(support.rows) == before

        await provider.logoff()
        assert support.watched == []
        assert provider.top_containers() == [] and list(provider.contents_rows()) == []

    asyncio.run(main())


def _resolve_async_names(found: list[tuple[int, Mapping[str, Any]]]) -> list[str]:
    return [row["PR_DISPLAY_NAME"] for _, row in found]


def test_a_vanished_folder_is_reported_not_recreated(tmp_path: Path) -> None:
    folder = _vdir(tmp_path)

    async def main() -> None:
        support = Support({"path": "contacts"}, tmp_path)
        provider = VCardAddressBook(support)
        await provider.logon()
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()
        await _until(
            lambda: (
                bool(support.rows)
                and support.rows[-1][0]["PR_STATUS_CODE"] == int(StatusCode.STATUS_FAILURE)
            ),
            "a failure in the status row",
        )
        assert "gone" in support.rows[-1][0]["PR_STATUS_STRING"]
        assert not folder.exists()  # another program may be swapping it: not made anew
        # ValidateState is the explicit way back: it makes the folder and watches it again.
        await provider.validate_state(ValidateStateFlags(0))
        assert folder.is_dir() and support.watched == [folder.resolve()]
        assert support.rows[-1][0]["PR_STATUS_CODE"] == int(StatusCode.STATUS_AVAILABLE)
        assert support.rows[-1][0]["PR_STATUS_STRING"] == "0 contacts"
        await provider.logoff()
        assert support.watched == []

    asyncio.run(main())


def test_validate_state_rereads_and_notifies_without_a_watch(tmp_path: Path) -> None:
    folder = _vdir(tmp_path)

    async def main() -> None:
        support = Support(
            {"path": "contacts"}, tmp_path, watch_refusal="inotify watch limit reached"
        )
        provider = VCardAddressBook(support)
        await provider.logon()
        assert support.watched == []
        assert provider.status_props()["PR_STATUS_STRING"].endswith(
            ", not watched (inotify watch limit reached)"
        )
        (folder / "people.vcf").unlink()
        await provider.validate_state(ValidateStateFlags(0))
        uid = provider.uid
        assert uid is not None
        assert sorted(support.raised()) == [
            ("fnevObjectDeleted", make(uid, b"\x01ada-1")),
            ("fnevObjectDeleted", make(uid, b"\x01charles-1")),
        ]
        assert support.rows[-1][0]["PR_STATUS_STRING"].startswith("5 contacts")
        # Nothing changed: nothing raised, and the rows are the very same.
        rows = provider.contents_rows()
        support.notifications.clear()
        await provider.validate_state(ValidateStateFlags(0))
        assert support.notifications == [] and provider.contents_rows() is rows

    asyncio.run(main())


def test_advise_rules(tmp_path: Path) -> None:
    _vdir(tmp_path)
    provider, _ = _logon(tmp_path, path="contacts")
    uid = provider.uid
    assert uid is not None
    container = provider.top_containers()[0]["PR_ENTRYID"]
    ada = make(uid, b"\x01ada-1")
    every = (
        NotificationEvent.fnevObjectCreated
        | NotificationEvent.fnevObjectDeleted
        | NotificationEvent.fnevObjectModified
    )
    _run(provider.advise(container, every))
    _run(provider.advise(ada, NotificationEvent.fnevObjectModified))
    for eid, mask, code in (
        (container, NotificationEvent.fnevNewMail, ErrorCode.MAPI_E_NO_SUPPORT),
        (container, NotificationEvent.fnevObjectMoved, ErrorCode.MAPI_E_NO_SUPPORT),
        (ada, NotificationEvent.fnevObjectCreated, ErrorCode.MAPI_E_NO_SUPPORT),
        (make(uid, b"\x01nobody"), every & ~NotificationEvent.fnevObjectCreated, None),
        (make(uid, b"\x09"), every, ErrorCode.MAPI_E_INVALID_ENTRYID),
    ):
        with pytest.raises(MapiError) as err:
            _run(provider.advise(eid, mask))
        assert err.value.code == (code or ErrorCode.MAPI_E_NOT_FOUND), (eid, mask)
    with pytest.raises(MapiError) as err:
        _run(provider.advise(container, NotificationEvent.fnevNewMail))
    assert "fnevObjectCreated" in err.value.message


# --- Through the real daemon ----------------------------------------------------------------


def test_the_daemon_follows_the_folder(daemon: DaemonProc, client: Client) -> None:
    """The daemon's shared watcher drives the provider: the status row counts a card written
    by another program, and an advise on the container hears of it."""
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION"], lease_s=0)["token"]
    folder = (daemon.root / "alpha" / "contacts").resolve()

    def status() -> str:
        rows = client.session_status_table(token)["rows"]
        [row] = [r for r in rows if r.get("PR_PROVIDER_DLL_NAME") == "vcard"]
        return str(row["PR_STATUS_STRING"])

    assert status() == "2 contacts"
    container = make(uid_from_name("vcard", str(folder)), b"\x02")
    client.session_advise(token, ["fnevObjectCreated", "fnevObjectDeleted"], container)
    (folder / "alan.vcf").write_text(_card("alan-9", "Alan Turing", "alan@example.org"))
    note = client.recv_notification(timeout=10)
    assert note is not None, daemon.log()
    assert note["event"] == "fnevObjectCreated"
    assert note["entryid"] == make(uid_from_name("vcard", str(folder)), b"\x01alan-9")
    assert note["parent_entryid"] == container
    assert note["object_type"] == ObjectType.MAPI_MAILUSER
    deadline = time.monotonic() + 10
    while status() != "3 contacts":
        assert time.monotonic() < deadline, status()
        time.sleep(0.05)
    (folder / "alan.vcf").unlink()
    note = client.recv_notification(timeout=10)
    assert note is not None and note["event"] == "fnevObjectDeleted"
    client.session_logoff(token)
