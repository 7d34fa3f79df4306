"""Unit tests of the built-in vcard and maildir providers, without a daemon.

`Support` (tests/provider_support.py) is a small but real implementation of the
ProviderSupport protocol: what a provider can see of the daemon, recorded so the tests can
check what the provider did.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mapid.constants import (
    ObjectType,
    ResourceFlags,
    StatusCode,
    StoreSupport,
    ValidateStateFlags,
)
from mapid.entryid import make, parse_one_off, private_of, search_key, uid_from_name, uid_of
from mapid.errors import ErrorCode, MapiError
from mapid.providers.maildir import MAILDIR_STORE_TYPE, MaildirService, MaildirStore
from mapid.providers.vcard import VCardAddressBook, VCardService, read_vdir

from provider_support import Support

T = TypeVar("T")


VCARD3_TWO = """\
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
FN:Charles Babbage
EMAIL:charles@example.org
END:VCARD
"""

VCARD4 = """\
BEGIN:VCARD
VERSION:4.0
UID:urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1
FN:Grace Hopper
N:Hopper;Grace;;;
EMAIL;TYPE=work;PREF=2:grace@navy.example
EMAIL;PREF=1:grace@example.com
END:VCARD
"""

BROKEN = "BEGIN:VCARD\nVERSION:3.0\nFN:Broken\nthis line has no colon\n"


def _vdir(tmp_path: Path) -> Path:
    folder = tmp_path / "contacts"
    folder.mkdir()
    (folder / "people.vcf").write_text(VCARD3_TWO, encoding="utf-8")
    (folder / "grace.vcf").write_text(VCARD4, encoding="utf-8")
    (folder / "broken.vcf").write_text(BROKEN, encoding="utf-8")
    (folder / "notes.txt").write_text("not a card", encoding="utf-8")
    return folder


def _logon_vcard(tmp_path: Path, **settings: Any) -> tuple[VCardAddressBook, Support]:
    support = Support(settings, tmp_path)
    provider = VCardAddressBook(support)
    asyncio.run(provider.logon())
    return provider, support


# --- vcard ---------------------------------------------------------------------------------


def test_vcard_reads_3_0_and_4_0_and_counts_a_broken_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _vdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        provider, support = _logon_vcard(tmp_path, path="contacts")

    by_name = {c.display_name: c for c in provider.contacts()}
    assert sorted(by_name) == ["Ada Lovelace", "Charles Babbage", "Grace Hopper"]
    ada, charles, grace = (
        by_name["Ada Lovelace"],
        by_name["Charles Babbage"],
        by_name["Grace Hopper"],
    )
    assert ada.uid == "ada-1"
    assert ada.emails == ("Ada@Example.org", "ada@home.example")  # TYPE=PREF first (3.0)
    assert (ada.given_name, ada.surname, ada.company) == ("Ada", "Lovelace", "Analytical Engines")
    assert charles.uid == "people.vcf#1"  # no UID: file name and index
    assert grace.uid == "urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1"
    assert grace.emails == ("grace@example.com", "grace@navy.example")  # PREF=1 first (4.0)
    assert "broken.vcf" in caplog.text

    real = folder.resolve()
    assert support.uids == [uid_from_name("vcard", str(real))]
    props = provider.status_props()
    assert props["PR_STATUS_CODE"] == int(StatusCode.STATUS_AVAILABLE)
    assert props["PR_RESOURCE_PATH"] == str(real)
    assert props["PR_STATUS_STRING"] == "3 contacts, 1 unreadable file"
    assert "PR_IDENTITY_ENTRYID" not in props
    assert provider.row_flags() == ResourceFlags.STATUS_NO_PRIMARY_IDENTITY


def test_vcard_sessions_share_one_parse_until_a_file_changes(tmp_path: Path) -> None:
    folder = _vdir(tmp_path).resolve()
    log = logging.getLogger("test")
    first = read_vdir(folder, log)
    assert read_vdir(folder, log) is first  # a second session reuses the first one's parse
    (folder / "grace.vcf").write_text(VCARD4.replace("Grace Hopper", "Grace B. Hopper"))
    changed = read_vdir(folder, log)
    assert changed is not first
    names = sorted(c.display_name for c in changed.contacts)
    assert names == ["Ada Lovelace", "Charles Babbage", "Grace B. Hopper"]
    unchanged = {c.uid: c for c in first.contacts}
    assert {c.uid: c for c in changed.contacts}["ada-1"] is unchanged["ada-1"]
    (folder / "people.vcf").unlink()
    assert [c.display_name for c in read_vdir(folder, log).contacts] == ["Grace B. Hopper"]


def test_vcard_identity_of_a_contact(tmp_path: Path) -> None:
    _vdir(tmp_path)
    identity = {"display_name": "Ada L.", "email": "ada@example.org"}
    provider, _ = _logon_vcard(tmp_path, path="contacts", identity=identity)

    props = provider.status_props()
    eid = props["PR_IDENTITY_ENTRYID"]
    assert props["PR_IDENTITY_DISPLAY"] == "Ada L."
    assert props["PR_IDENTITY_SEARCH_KEY"] == b"SMTP:ADA@EXAMPLE.ORG\x00"
    assert props["PR_IDENTITY_SEARCH_KEY"] == search_key("SMTP", "ada@example.org")
    assert uid_of(eid) == provider.uid and private_of(eid) == b"\x01ada-1"
    assert provider.identity_entryid() == eid
    assert provider.row_flags() == ResourceFlags.STATUS_PRIMARY_IDENTITY

    user = asyncio.run(provider.open_entry(eid, 0))
    assert user.object_type == ObjectType.MAPI_MAILUSER
    got = asyncio.run(user.get_props(None))
    assert got["PR_ENTRYID"] == got["PR_RECORD_KEY"] == eid
    assert got["PR_DISPLAY_NAME"] == "Ada Lovelace"
    assert got["PR_EMAIL_ADDRESS"] == "Ada@Example.org"
    assert got["PR_ADDRTYPE"] == "SMTP"
    assert got["PR_SEARCH_KEY"] == b"SMTP:ADA@EXAMPLE.ORG\x00"
    assert got["PR_OBJECT_TYPE"] == int(ObjectType.MAPI_MAILUSER)
    assert got["PR_SURNAME"] == "Lovelace"
    assert asyncio.run(user.get_props(["PR_GIVEN_NAME", "PR_BODY"])) == {"PR_GIVEN_NAME": "Ada"}


def test_vcard_identity_without_a_card_is_a_one_off(tmp_path: Path) -> None:
    identity = {"display_name": "Nobody", "email": "nobody@example.net"}
    provider, _ = _logon_vcard(tmp_path, path="new/contacts", identity=identity)
    assert (tmp_path / "new" / "contacts").is_dir()  # created: an empty vdir is fine

    one_off = parse_one_off(provider.status_props()["PR_IDENTITY_ENTRYID"])
    assert one_off is not None
    assert (one_off.display_name, one_off.addrtype, one_off.address) == (
        "Nobody",
        "SMTP",
        "nobody@example.net",
    )
    assert provider.status_props()["PR_STATUS_STRING"] == "0 contacts"
    assert VCardService.identity({"path": "x", "identity": identity}) is not None
    assert VCardService.identity({"path": "x"}) is None


def test_vcard_entry_ids_and_resolve(tmp_path: Path) -> None:
    _vdir(tmp_path)
    provider, _ = _logon_vcard(tmp_path, path="contacts")
    assert provider.uid is not None
    grace = provider.resolve("grace")[0]
    eid = provider.entryid_of(grace)
    assert provider.compare_entryids(eid, b"\x80\x00\x00\x00" + eid[4:])  # short-term flag
    assert not provider.compare_entryids(eid, provider.entryid_of(provider.resolve("ada")[0]))

    with pytest.raises(MapiError) as err:
        asyncio.run(provider.open_entry(make(provider.uid, b"\x01no-such-uid"), 0))
    assert err.value.code == ErrorCode.MAPI_E_NOT_FOUND

    assert [c.display_name for c in provider.resolve("CHARLES@example.org")] == ["Charles Babbage"]
    # Exact and prefix matches come before substring matches.
    assert [c.display_name for c in provider.resolve("a")][:1] == ["Ada Lovelace"]
    assert provider.resolve("zzz") == []


def test_vcard_validate_state_rereads_the_folder(tmp_path: Path) -> None:
    folder = _vdir(tmp_path)
    identity = {"display_name": "Ada", "email": "ada@example.org"}
    provider, support = _logon_vcard(tmp_path, path="contacts", identity=identity)
    (folder / "broken.vcf").unlink()
    (folder / "alan.vcf").write_text(
        "BEGIN:VCARD\nVERSION:4.0\nUID:alan\nFN:Alan Turing\nEMAIL:alan@example.org\nEND:VCARD\n",
        encoding="utf-8",
    )
    asyncio.run(provider.validate_state(ValidateStateFlags(0)))
    assert support.rows[-1] == (provider.status_props(), True)
    assert support.rows[-1][0]["PR_STATUS_STRING"] == "4 contacts"
    assert provider.resolve("alan")[0].emails == ("alan@example.org",)

    # The identity is taken out of the profile: its columns must leave the row.
    del support.settings["identity"]
    asyncio.run(provider.validate_state(ValidateStateFlags.CONFIG_CHANGED))
    props, update = support.rows[-1]
    assert update is False and "PR_IDENTITY_ENTRYID" not in props
    assert provider.row_flags() == ResourceFlags.STATUS_NO_PRIMARY_IDENTITY

    # The folder is replaced by a file: the row says so and the call fails.
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    folder.write_text("oops", encoding="utf-8")
    with pytest.raises(MapiError):
        asyncio.run(provider.validate_state(ValidateStateFlags(0)))
    assert support.rows[-1][0]["PR_STATUS_CODE"] == int(StatusCode.STATUS_FAILURE)


def test_vcard_bad_configuration(tmp_path: Path) -> None:
    for settings in ({}, {"path": ""}, {"path": "c", "identity": {"display_name": "X"}}):
        provider = VCardAddressBook(Support(dict(settings), tmp_path))
        with pytest.raises(MapiError) as err:
            asyncio.run(provider.logon())
        assert err.value.code == ErrorCode.MAPI_E_UNCONFIGURED

    (tmp_path / "file.vcf").write_text(VCARD4, encoding="utf-8")
    provider = VCardAddressBook(Support({"path": "file.vcf"}, tmp_path))
    with pytest.raises(MapiError) as err:
        asyncio.run(provider.logon())
    assert err.value.code == ErrorCode.MAPI_E_NOT_FOUND

    problems = VCardService.check_config({"identity": {"email": 3}})
    assert {p.key for p in problems} == {"path", "identity.display_name", "identity.email"}
    assert VCardService.config_schema["required"] == ["path"]


# --- maildir -------------------------------------------------------------------------------


def test_maildir_created_with_folders_and_a_stable_uid(tmp_path: Path) -> None:
    support = Support({"path": "mail/Maildir", "primary_store": True}, tmp_path)
    store = MaildirStore(support)
    asyncio.run(store.logon())

    root = tmp_path / "mail" / "Maildir"
    for sub in ("cur", "new", "tmp", ".Outbox", ".Sent", ".Trash", ".Drafts"):
        assert (root / sub).is_dir(), sub
    uid_text = (root / "mapid.uid").read_text().strip()
    assert len(uid_text) == 32
    assert support.uids == [bytes.fromhex(uid_text)]
    assert [p.name for p in root.iterdir() if p.name.startswith(".mapid")] == []

    # A message dropped in by an MTA; a second logon reuses the same UID.
    message = EmailMessage()
    message["Subject"] = "hello"
    message.set_content("hi")
    mailbox.Maildir(root).add(message)
    again = Support({"path": str(root)}, tmp_path)
    second = MaildirStore(again)
    asyncio.run(second.logon())
    assert again.uids == support.uids
    assert second.store_entryid() == store.store_entryid()
    props = second.status_props()
    assert props["PR_STATUS_STRING"] == f"Maildir at {root.resolve()}: 1 message in Inbox"
    assert props["PR_STATUS_CODE"] == int(StatusCode.STATUS_AVAILABLE)
    assert store.row_flags() == ResourceFlags.STATUS_DEFAULT_STORE
    assert second.row_flags() == ResourceFlags(0)

    mailbox.Maildir(root).add(message)
    asyncio.run(store.validate_state(ValidateStateFlags(0)))
    assert support.rows[-1][0]["PR_STATUS_STRING"].endswith(": 2 messages in Inbox")
    assert support.uids == [bytes.fromhex(uid_text)]  # registered once


def test_maildir_store_object(tmp_path: Path) -> None:
    support = Support({"path": "Maildir", "display_name": "Mail"}, tmp_path)
    store = MaildirStore(support)
    asyncio.run(store.logon())
    eid = store.store_entryid()
    assert private_of(eid) == b"\x01store"

    obj = asyncio.run(store.open_entry(eid, 0))
    assert obj.object_type == ObjectType.MAPI_STORE
    props = asyncio.run(obj.get_props(None))
    assert props["PR_ENTRYID"] == eid
    assert props["PR_RECORD_KEY"] == support.uids[0]
    assert props["PR_DISPLAY_NAME"] == "Mail"
    assert props["PR_MDB_PROVIDER"] == MAILDIR_STORE_TYPE
    assert props["PR_OBJECT_TYPE"] == int(ObjectType.MAPI_STORE)
    mask = StoreSupport(props["PR_STORE_SUPPORT_MASK"])
    assert StoreSupport.STORE_SUBMIT_OK in mask and StoreSupport.STORE_READONLY not in mask

    with pytest.raises(MapiError) as err:
        asyncio.run(store.open_entry(make(support.uids[0], b"\x02nothing"), 0))
    assert err.value.code == ErrorCode.MAPI_E_NOT_FOUND


def test_maildir_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(MapiError) as err:
        asyncio.run(MaildirStore(Support({}, tmp_path)).logon())
    assert err.value.code == ErrorCode.MAPI_E_UNCONFIGURED

    root = tmp_path / "Maildir"
    root.mkdir()
    (root / "mapid.uid").write_text("not hex\n")
    with pytest.raises(MapiError) as err:
        asyncio.run(MaildirStore(Support({"path": str(root)}, tmp_path)).logon())
    assert err.value.code == ErrorCode.MAPI_E_CORRUPT_DATA
    assert (root / "mapid.uid").read_text() == "not hex\n"  # never overwritten

    assert [p.key for p in MaildirService.check_config({"path": "x", "primary_store": 1})] == [
        "primary_store"
    ]


# --- the support object ----------------------------------------------------------------------


def test_state_dir_is_private_per_service_and_stable(tmp_path: Path) -> None:
    import stat

    from mapid.daemon.sessions.logon import path_part

    support = Support({}, tmp_path, profile_name="alpha", service_key="mail")
    first = support.state_dir()
    assert first == tmp_path / "state" / "services" / "alpha" / "mail"
    assert stat.S_IMODE(first.stat().st_mode) == 0o700
    first.chmod(0o755)  # whoever widened it: the next use makes it private again
    again = Support({}, tmp_path, profile_name="alpha", service_key="mail").state_dir()
    assert again == first and stat.S_IMODE(first.stat().st_mode) == 0o700
    assert Support({}, tmp_path, profile_name="alpha", service_key="work").state_dir() != first
    # Names that would step out of their folder, or meet another once escaped, cannot.
    names = ["..", ".", "a/b", "a.b", "a_b", "", "%", "%25", "Ünï", "a b"]
    parts = [path_part(name) for name in names]
    assert len(set(parts)) == len(parts), parts
    assert all("/" not in part and part not in (".", "..") for part in parts), parts
    assert path_part("alpha") == "alpha" and path_part("my-mail_2") == "my-mail_2"
