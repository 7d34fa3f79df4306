"""Writing the personal address book through a real daemon: abcontainer.create_entry,
object.set_props + object.save_changes on a mail user opened with MAPI_MODIFY,
abcontainer.delete_entries, and `mapictl contacts add/edit/rm`.

Every card is read back from disk as khard would read it: with vobject, one VERSION:4.0
card a file, its UID the file name's stem.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import vobject
from typer.testing import CliRunner, Result

from mapid.cli.app import app
from mapid.client import Client
from mapid.constants import AbContainerFlags
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import AddressBookProvider

from conftest import DaemonFactory, DaemonProc, standard_profile
from provider_support import Support

runner = CliRunner()

HAND_WRITTEN = """BEGIN:VCARD
VERSION:4.0
UID:alan-7
FN:Alan Turing
N:Turing;Alan;Mathison;;
EMAIL;TYPE=work:alan@example.org
TEL;TYPE=cell:+44 20 7946 0000
NOTE:Met at Bletchley\\, 1941
X-KHARD-FAVOURITE:yes
END:VCARD
"""

TWO_CARDS = """BEGIN:VCARD
VERSION:3.0
UID:pair-1
FN:Emmy Noether
EMAIL:emmy@example.org
END:VCARD
BEGIN:VCARD
VERSION:3.0
UID:pair-2
FN:Sofia Kovalevskaya
EMAIL:sofia@example.org
END:VCARD
"""


class Book:
    """A logged-on session with the address book open and its one container."""

    def __init__(self, client: Client, folder: Path) -> None:
        self.client = client
        self.folder = folder
        self.token = bytes(client.session_logon("alpha")["token"])
        self.ab = int(client.session_open_address_book(self.token)["handle"])
        [row] = client.container_hierarchy_table(self.token, self.ab)["rows"]
        self.row = row
        self.container_eid = bytes(row["PR_ENTRYID"])
        opened = client.session_open_entry(self.token, self.container_eid, ["MAPI_MODIFY"])
        self.container = int(opened["handle"])

    def create(self, **props: Any) -> bytes:
        result = self.client.abcontainer_create_entry(self.token, self.container, props)
        return bytes(result["entryid"])

    def resolve(self, name: str) -> dict[str, Any]:
        [row] = self.client.ab_resolve_names(self.token, self.ab, [name])["recipients"]
        return dict(row)

    def same(self, a: bytes, b: bytes) -> bool:
        return bool(self.client.session_compare_entryids(self.token, a, b)["equal"])

    def open_user(self, entryid: bytes, modify: bool = True) -> int:
        flags = ["MAPI_MODIFY"] if modify else None
        return int(self.client.session_open_entry(self.token, entryid, flags)["handle"])


def _profile(root: Path, *, read_only: bool = False) -> str:
    text = standard_profile(root)
    contacts = root / "contacts"
    (contacts / "alan.vcf").write_text(HAND_WRITTEN)
    (contacts / "pair.vcf").write_text(TWO_CARDS)
    if read_only:
        text = text.replace('service = "vcard"\n', 'service = "vcard"\nread_only = true\n')
    return text


@pytest.fixture
def book(make_daemon: DaemonFactory, tmp_path: Path) -> Iterator[Book]:
    daemon = make_daemon(profiles={"alpha": _profile(tmp_path / "alpha")})
    yield Book(daemon.client(), tmp_path / "alpha" / "contacts")


def khard_cards(folder: Path) -> dict[str, Any]:
    """Each .vcf file's one card, as khard reads a vdir; asserts one card a file."""
    cards: dict[str, Any] = {}
    for path in sorted(folder.glob("*.vcf")):
        found = list(vobject.readComponents(path.read_text(encoding="utf-8")))
        assert len(found) == 1 or path.name == "pair.vcf", path
        cards[path.stem] = found[0]
    return cards


def _error(call: Any, *args: Any, **kwargs: Any) -> MapiError:
    with pytest.raises(MapiError) as err:
        call(*args, **kwargs)
    return err.value


def test_the_provider_api_defaults_to_read_only(tmp_path: Path) -> None:
    """A provider that does not override the write methods answers MAPI_E_NO_ACCESS."""
    provider = AddressBookProvider(Support({}, tmp_path))
    eid = b"\0" * 24
    calls = (
        provider.create_entry(eid, {"PR_EMAIL_ADDRESS": "a@example.org"}),
        provider.modify_entry(eid, {"PR_DISPLAY_NAME": "A"}),
        provider.delete_entries(eid, [eid]),
    )
    for call in calls:
        with pytest.raises(MapiError) as err:
            asyncio.run(call)
        assert err.value.code is ErrorCode.MAPI_E_NO_ACCESS


# --- create ---------------------------------------------------------------------------------


def test_the_container_says_it_is_modifiable(book: Book) -> None:
    flags = AbContainerFlags(book.row["PR_CONTAINER_FLAGS"])
    assert flags & AbContainerFlags.AB_MODIFIABLE
    assert not flags & AbContainerFlags.AB_UNMODIFIABLE
    caps = book.client.daemon_hello()["capabilities"]
    assert "abcontainer.create_entry" in caps and "abcontainer.delete_entries" in caps


def test_create_writes_one_vcard_40_file_named_by_its_uid(book: Book) -> None:
    before = set(book.folder.iterdir())
    entryid = book.create(
        PR_DISPLAY_NAME="Katherine Johnson",
        PR_EMAIL_ADDRESS="katherine@example.org",
        PR_GIVEN_NAME="Katherine",
        PR_SURNAME="Johnson",
        PR_COMPANY_NAME="NASA",
    )
    [path] = set(book.folder.iterdir()) - before  # no temporary file left behind
    assert path.suffix == ".vcf"
    [card] = list(vobject.readComponents(path.read_text(encoding="utf-8")))
    assert card.version.value == "4.0"
    assert card.uid.value == path.stem and card.uid.value.startswith("urn:uuid:")
    assert card.fn.value == "Katherine Johnson"
    assert card.n.value.given == "Katherine" and card.n.value.family == "Johnson"
    assert card.email.value == "katherine@example.org"
    assert card.org.value == ["NASA"]
    assert path.stem in khard_cards(book.folder)

    # It resolves at once, by name and by address, to the entry ID create_entry returned.
    row = book.resolve("Katherine")
    assert row["PR_EMAIL_ADDRESS"] == "katherine@example.org"
    assert book.same(row["PR_ENTRYID"], entryid)
    assert book.same(book.resolve("katherine@example.org")["PR_ENTRYID"], entryid)
    props = book.client.session_open_entry(book.token, entryid)["props"]
    assert props["PR_DISPLAY_NAME"] == "Katherine Johnson"
    assert props["PR_COMPANY_NAME"] == "NASA"
    rows = book.client.container_contents_table(book.token, book.container)["rows"]
    assert "Katherine Johnson" in {r["PR_DISPLAY_NAME"] for r in rows}


def test_advise_sinks_hear_the_changes(book: Book) -> None:
    c, t = book.client, book.token
    events = ["fnevObjectCreated", "fnevObjectModified", "fnevObjectDeleted"]
    connection = c.session_advise(t, events, book.container_eid)["connection"]
    entryid = book.create(PR_DISPLAY_NAME="Ada Byron", PR_EMAIL_ADDRESS="byron@example.org")
    handle = book.open_user(entryid)
    c.object_set_props(t, handle, {"PR_NICKNAME": "Ada B."})
    c.object_save_changes(t, handle)
    c.abcontainer_delete_entries(t, book.container, [entryid])
    heard = []
    while len(heard) < 3:
        note = c.recv_notification(timeout=5)
        assert note is not None, heard
        assert note["connection"] == connection
        assert note["parent_entryid"] == book.container_eid
        assert book.same(note["entryid"], entryid)
        heard.append(note["event"])
    assert heard == events


def test_create_names_a_card_from_its_parts(book: Book) -> None:
    entryid = book.create(PR_EMAIL_ADDRESS="mary@example.org", PR_GIVEN_NAME="Mary")
    props = book.client.session_open_entry(book.token, entryid)["props"]
    assert props["PR_DISPLAY_NAME"] == "Mary"
    only_address = book.create(PR_EMAIL_ADDRESS="x@example.org")
    props = book.client.session_open_entry(book.token, only_address)["props"]
    assert props["PR_DISPLAY_NAME"] == "x@example.org"


@pytest.mark.parametrize(
    "props",
    [
        {},
        {"PR_DISPLAY_NAME": "No Address"},
        {"PR_EMAIL_ADDRESS": "not an address"},
        {"PR_EMAIL_ADDRESS": 7},
        {"PR_EMAIL_ADDRESS": "a@example.org", "PR_ENTRYID": b"\0" * 24},
        {"PR_EMAIL_ADDRESS": "a@example.org", "PR_BODY": "a note"},
        {"PR_EMAIL_ADDRESS": "a@example.org", "PR_NO_SUCH_TAG": "x"},
        {"PR_EMAIL_ADDRESS": "a@example.org", "PR_ADDRTYPE": "X400"},
        {"PR_EMAIL_ADDRESS": "a@example.org", "PR_DISPLAY_NAME": "two\r\nlines"},
    ],
)
def test_create_refuses_wrong_props(book: Book, props: dict[str, Any]) -> None:
    before = sorted(p.name for p in book.folder.iterdir())
    err = _error(book.client.abcontainer_create_entry, book.token, book.container, props)
    assert err.code is ErrorCode.MAPI_E_INVALID_PARAMETER, err
    assert err.message
    assert sorted(p.name for p in book.folder.iterdir()) == before


def test_create_needs_a_writable_container_handle(book: Book) -> None:
    c, t = book.client, book.token
    props = {"PR_EMAIL_ADDRESS": "a@example.org"}
    # Read-only: from the address book's root, or session.open_entry without MAPI_MODIFY.
    for handle in (
        int(c.container_open_entry(t, book.ab, book.container_eid)["handle"]),
        int(c.session_open_entry(t, book.container_eid)["handle"]),
    ):
        err = _error(c.abcontainer_create_entry, t, handle, props)
        assert err.code is ErrorCode.MAPI_E_NO_ACCESS and "MAPI_MODIFY" in err.message
        err = _error(c.abcontainer_delete_entries, t, handle, [book.container_eid])
        assert err.code is ErrorCode.MAPI_E_NO_ACCESS
    # Not a container at all: the address book's root, a store.
    err = _error(c.abcontainer_create_entry, t, book.ab, props)
    assert err.code is ErrorCode.MAPI_E_NO_SUPPORT
    [store] = c.session_msg_stores_table(t)["rows"]
    store_handle = int(c.session_open_msg_store(t, store["PR_ENTRYID"], ["MDB_WRITE"])["handle"])
    err = _error(c.abcontainer_create_entry, t, store_handle, props)
    assert err.code is ErrorCode.MAPI_E_NO_SUPPORT
    err = _error(c.call, "abcontainer.create_entry", {"handle": book.container}, token=t)
    assert err.code is ErrorCode.MAPI_E_INVALID_PARAMETER
    err = _error(
        c.call, "abcontainer.create_entry", {"handle": book.container, "props": [1]}, token=t
    )
    assert err.code is ErrorCode.MAPI_E_INVALID_PARAMETER


def test_a_read_only_address_book_refuses(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    daemon = make_daemon(profiles={"alpha": _profile(tmp_path / "alpha", read_only=True)})
    book = Book(daemon.client(), tmp_path / "alpha" / "contacts")
    flags = AbContainerFlags(book.row["PR_CONTAINER_FLAGS"])
    assert flags & AbContainerFlags.AB_UNMODIFIABLE and not flags & AbContainerFlags.AB_MODIFIABLE
    c, t = book.client, book.token
    before = {p.name: p.read_bytes() for p in book.folder.iterdir()}
    err = _error(c.abcontainer_create_entry, t, book.container, {"PR_EMAIL_ADDRESS": "a@b.org"})
    assert err.code is ErrorCode.MAPI_E_NO_ACCESS and "read_only" in err.message
    alan = book.resolve("Alan Turing")["PR_ENTRYID"]
    err = _error(c.object_set_props, t, book.open_user(alan), {"PR_DISPLAY_NAME": "X"})
    assert err.code is ErrorCode.MAPI_E_NO_ACCESS
    err = _error(c.abcontainer_delete_entries, t, book.container, [alan])
    assert err.code is ErrorCode.MAPI_E_NO_ACCESS
    assert {p.name: p.read_bytes() for p in book.folder.iterdir()} == before


# --- edit -----------------------------------------------------------------------------------


def test_edit_keeps_the_uid_and_what_mapid_does_not_know(book: Book) -> None:
    alan = book.resolve("Alan Turing")["PR_ENTRYID"]
    handle = book.open_user(alan)
    c, t = book.client, book.token
    problems = c.object_set_props(
        t,
        handle,
        {"PR_DISPLAY_NAME": "Alan M. Turing", "PR_EMAIL_ADDRESS": "turing@example.org"},
    )["problems"]
    assert problems == {}
    c.object_save_changes(t, handle)
    card = khard_cards(book.folder)["alan"]
    assert card.uid.value == "alan-7"
    assert card.fn.value == "Alan M. Turing"
    [email] = card.contents["email"]
    assert email.value == "turing@example.org" and email.params.get("TYPE") == ["work"]
    assert card.note.value == "Met at Bletchley, 1941"
    assert card.contents["x-khard-favourite"][0].value == "yes"
    assert card.tel.value == "+44 20 7946 0000"
    assert card.n.value.additional == "Mathison"  # N's parts mapid does not map stay
    # The handle shows what was saved, and the address book finds the new address.
    props = c.object_get_props(t, handle)["props"]
    assert props["PR_DISPLAY_NAME"] == "Alan M. Turing"
    assert book.same(book.resolve("turing@example.org")["PR_ENTRYID"], alan)
    # Removing a field through delete_props; a card keeps FN and an address.
    problems = c.object_delete_props(t, handle, ["PR_DISPLAY_NAME"])["problems"]
    assert problems == {"PR_DISPLAY_NAME": "MAPI_E_NO_ACCESS"}
    c.object_set_props(t, handle, {"PR_NICKNAME": "Prof"})
    c.object_save_changes(t, handle)
    assert khard_cards(book.folder)["alan"].nickname.value == "Prof"
    assert c.object_delete_props(t, handle, ["PR_NICKNAME"])["problems"] == {}
    c.object_save_changes(t, handle)
    assert "nickname" not in khard_cards(book.folder)["alan"].contents


def test_set_props_reports_what_a_card_cannot_take(book: Book) -> None:
    handle = book.open_user(book.resolve("Alan Turing")["PR_ENTRYID"])
    problems = book.client.object_set_props(
        book.token,
        handle,
        {"PR_ENTRYID": b"\0" * 24, "PR_BODY": "x", "PR_SURNAME": 3, "PR_GIVEN_NAME": "Al"},
    )["problems"]
    assert problems == {
        "PR_ENTRYID": "MAPI_E_COMPUTED",
        "PR_BODY": "MAPI_E_NO_SUPPORT",
        "PR_SURNAME": "MAPI_E_INVALID_TYPE",
    }
    book.client.object_save_changes(book.token, handle)
    assert khard_cards(book.folder)["alan"].n.value.given == "Al"


def test_a_read_only_mail_user_refuses_changes(book: Book) -> None:
    alan = book.resolve("Alan Turing")["PR_ENTRYID"]
    c, t = book.client, book.token
    for handle in (
        book.open_user(alan, modify=False),
        int(c.container_open_entry(t, book.ab, alan)["handle"]),
    ):
        err = _error(c.object_set_props, t, handle, {"PR_DISPLAY_NAME": "X"})
        assert err.code is ErrorCode.MAPI_E_NO_ACCESS and "MAPI_MODIFY" in err.message
    # A contact opened from a writable container handle is writable.
    handle = int(c.container_open_entry(t, book.container, alan)["handle"])
    assert c.object_set_props(t, handle, {"PR_NICKNAME": "AMT"})["problems"] == {}
    c.object_save_changes(t, handle)
    assert khard_cards(book.folder)["alan"].nickname.value == "AMT"


# --- delete ---------------------------------------------------------------------------------


def test_delete_removes_the_file(book: Book) -> None:
    entryid = book.create(PR_DISPLAY_NAME="Dorothy Vaughan", PR_EMAIL_ADDRESS="dv@example.org")
    [path] = [p for p in book.folder.glob("urn:uuid:*.vcf")]
    book.client.abcontainer_delete_entries(book.token, book.container, [entryid])
    assert not path.exists()
    err = _error(book.client.ab_resolve_names, book.token, book.ab, ["Dorothy"])
    assert err.code is ErrorCode.MAPI_E_NOT_FOUND
    # Deleted once: now unknown.
    err = _error(book.client.abcontainer_delete_entries, book.token, book.container, [entryid])
    assert err.code is ErrorCode.MAPI_E_NOT_FOUND


def test_delete_is_all_or_nothing_and_names_bad_entry_ids(book: Book) -> None:
    c, t = book.client, book.token
    alan = book.resolve("Alan Turing")["PR_ENTRYID"]
    gone = alan[:20] + b"\x01no-such-uid"
    err = _error(c.abcontainer_delete_entries, t, book.container, [alan, gone])
    assert err.code is ErrorCode.MAPI_E_NOT_FOUND and "entryids[1]" in err.message
    assert (book.folder / "alan.vcf").exists()
    foreign = b"\0\0\0\0" + b"\x42" * 16 + b"\x01alan-7"
    err = _error(c.abcontainer_delete_entries, t, book.container, [foreign])
    assert err.code is ErrorCode.MAPI_E_UNKNOWN_ENTRYID
    err = _error(c.abcontainer_delete_entries, t, book.container, [book.container_eid])
    assert err.code is ErrorCode.MAPI_E_INVALID_ENTRYID
    err = _error(c.abcontainer_delete_entries, t, book.container, [])
    assert err.code is ErrorCode.MAPI_E_INVALID_PARAMETER
    assert (book.folder / "alan.vcf").exists()


# --- multi-card files -----------------------------------------------------------------------


def test_a_card_in_a_multi_card_file_is_never_rewritten(book: Book) -> None:
    pair = book.folder / "pair.vcf"
    before = pair.read_bytes()
    emmy = book.resolve("Emmy Noether")["PR_ENTRYID"]
    c, t = book.client, book.token
    handle = book.open_user(emmy)
    c.object_set_props(t, handle, {"PR_DISPLAY_NAME": "Amalie Emmy Noether"})
    err = _error(c.object_save_changes, t, handle)
    assert err.code is ErrorCode.MAPI_E_NO_ACCESS and "pair.vcf" in err.message
    assert "2 cards" in err.message
    err = _error(c.abcontainer_delete_entries, t, book.container, [emmy])
    assert err.code is ErrorCode.MAPI_E_NO_ACCESS and "pair.vcf" in err.message
    assert pair.read_bytes() == before
    assert book.resolve("Emmy")["PR_DISPLAY_NAME"] == "Emmy Noether"  # still read


# --- mapictl contacts -----------------------------------------------------------------------


def cli(daemon: DaemonProc, *args: str) -> Result:
    return runner.invoke(app, ["--runtime-dir", str(daemon.runtime), *args])


def js(daemon: DaemonProc, *args: str) -> Any:
    result = cli(daemon, "--json", *args)
    assert result.exit_code == 0, (result.output, daemon.log()[-2000:])
    return json.loads(result.stdout)


@pytest.mark.parametrize("command", ["add", "edit", "rm"])
def test_every_contacts_command_explains_itself(command: str) -> None:
    result = runner.invoke(app, ["contacts", command, "--help"])
    assert result.exit_code == 0
    assert "--json" in result.stdout and "--profile" in result.stdout
    assert runner.invoke(app, ["contacts"]).exit_code == 2


def test_mapictl_contacts_add_edit_rm(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    daemon = make_daemon(profiles={"alpha": _profile(tmp_path / "alpha")})
    folder = tmp_path / "alpha" / "contacts"
    added = js(
        daemon, "contacts", "add", "--name", "Grace B. Hopper", "--email", "gbh@example.org"
    )["contact"]
    assert added["name"] == "Grace B. Hopper" and added["email"] == "gbh@example.org"
    [path] = list(folder.glob("urn:uuid:*.vcf"))
    card = khard_cards(folder)[path.stem]
    assert card.uid.value == path.stem and card.version.value == "4.0"
    again = cli(daemon, "contacts", "add", "--name", "Grace", "--email", "GBH@example.org")
    assert again.exit_code == 1 and "MAPI_E_COLLISION" in again.output
    assert len(list(folder.glob("urn:uuid:*.vcf"))) == 1
    resolved = js(daemon, "--profile", "alpha", "resolve", "gbh@example.org")
    assert resolved["results"][0]["recipient"]["entryid"] == added["entryid"]

    text = cli(daemon, "contacts", "edit", "gbh@example.org", "--email", "amazing@example.org")
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith("changed Grace B. Hopper <amazing@example.org>")
    assert khard_cards(folder)[path.stem].email.value == "amazing@example.org"
    edited = js(daemon, "contacts", "edit", added["entryid"], "--company", "Navy")
    assert edited["contact"]["company"] == "Navy"
    assert khard_cards(folder)[path.stem].uid.value == path.stem

    usage = cli(daemon, "contacts", "edit", "Grace B. Hopper")
    assert usage.exit_code == 2
    ambiguous = cli(daemon, "contacts", "rm", "Grace")  # Grace Hopper and Grace B. Hopper
    assert ambiguous.exit_code == 1, ambiguous.output
    multi = cli(daemon, "contacts", "rm", "Emmy Noether")
    assert multi.exit_code == 1 and "MAPI_E_NO_ACCESS" in multi.output

    removed = js(daemon, "contacts", "rm", "Grace B. Hopper")["contact"]
    assert removed["entryid"] == added["entryid"]
    assert not path.exists()
    assert cli(daemon, "contacts", "rm", "Grace B. Hopper").exit_code == 3
    assert cli(daemon, "contacts", "rm", "nobody@example.org").exit_code == 3
    missing = cli(daemon, "contacts", "add", "--name", "No Address")
    assert missing.exit_code == 2
