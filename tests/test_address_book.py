"""The integrated address book through the daemon: session.open_address_book, its hierarchy,
container.open_entry routed by MAPIUID, and ab.resolve_names (docs/protocol.md 6.4 and 6.5).

Real vCard folders on disk, a real daemon, real sockets.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapid import entryid as eid
from mapid.client import Client
from mapid.constants import ObjectType, RecipientType
from mapid.errors import ErrorCode, MapiError

from conftest import DaemonFactory, DaemonProc, prepare_daemon, standard_profile

ADA_BYRON = """BEGIN:VCARD
VERSION:3.0
UID:ada-2
FN:Ada Lovelace-Byron
N:Lovelace-Byron;Ada;;;
EMAIL:byron@example.net
END:VCARD
"""

OTHER_GRACE = """BEGIN:VCARD
VERSION:4.0
UID:grace-2
FN:Grace Brewster
EMAIL:brewster@example.com
END:VCARD
"""


def logon(client: Client, profile: str = "alpha") -> bytes:
    return bytes(client.session_logon(profile, ["MAPI_NEW_SESSION"])["token"])


def book(client: Client, token: bytes) -> int:
    result = client.session_open_address_book(token)
    assert result.warning is None
    return int(result["handle"])


def failure(call: Any) -> MapiError:
    with pytest.raises(MapiError) as info:
        call()
    return info.value


def test_the_book_lists_every_providers_top_containers(client: Client) -> None:
    token = logon(client)
    handle = book(client, token)
    props = client.object_get_props(token, handle)["props"]
    assert props["PR_OBJECT_TYPE"] == ObjectType.MAPI_ADDRBOOK
    rows = client.container_hierarchy_table(token, handle)["rows"]
    assert len(rows) == 1
    (row,) = rows
    assert row["PR_OBJECT_TYPE"] == ObjectType.MAPI_ABCONT
    assert isinstance(row["PR_INSTANCE_KEY"], bytes)
    opened = client.container_open_entry(token, handle, row["PR_ENTRYID"])
    assert opened["object_type"] == ObjectType.MAPI_ABCONT
    contents = client.container_contents_table(
        token, opened["handle"], {"sort": [["PR_DISPLAY_NAME", "asc"]]}
    )
    assert [r["PR_DISPLAY_NAME"] for r in contents["rows"]] == ["Ada Lovelace", "Grace Hopper"]
    assert contents["total"] == 2
    # A mail user opens through the book by its entry ID (routed by MAPIUID).
    ada = contents["rows"][0]["PR_ENTRYID"]
    user = client.container_open_entry(token, handle, ada)
    assert user["object_type"] == ObjectType.MAPI_MAILUSER
    assert user["props"]["PR_EMAIL_ADDRESS"] == "ada@example.org"
    assert user["props"]["PR_ADDRTYPE"] == "SMTP"


def test_open_entry_nil_is_the_root_and_one_offs_open_too(client: Client) -> None:
    token = logon(client)
    handle = book(client, token)
    root = client.container_open_entry(token, handle, None)
    assert root["object_type"] == ObjectType.MAPI_ADDRBOOK
    assert root["handle"] != handle
    one_off = eid.one_off("Bob", "SMTP", "bob@example.com")
    user = client.container_open_entry(token, handle, one_off)
    assert user["props"]["PR_EMAIL_ADDRESS"] == "bob@example.com"
    assert user["props"]["PR_DISPLAY_NAME"] == "Bob"


def test_open_entry_refuses_what_is_not_the_books(client: Client) -> None:
    token = logon(client)
    handle = book(client, token)
    store = client.session_msg_stores_table(token)["rows"][0]["PR_ENTRYID"]
    error = failure(lambda: client.container_open_entry(token, handle, store))
    assert error.code == ErrorCode.MAPI_E_UNKNOWN_ENTRYID
    error = failure(lambda: client.container_open_entry(token, handle, b"\0" * 12))
    assert error.code == ErrorCode.MAPI_E_INVALID_ENTRYID
    unknown = eid.make(b"\x42" * 16, b"x")
    error = failure(lambda: client.container_open_entry(token, handle, unknown))
    assert error.code == ErrorCode.MAPI_E_UNKNOWN_ENTRYID


def test_a_failed_address_book_is_a_warning_with_details(make_daemon: DaemonFactory) -> None:
    proc = make_daemon(start=False)
    broken = proc.root / "not-a-folder.vcf"
    broken.write_text("not a folder")
    text = standard_profile(proc.root / "gamma") + (
        f'\n[services.broken]\nservice = "vcard"\npath = "{broken}"\n'
    )
    (proc.config_dir / "profiles" / "gamma.toml").write_text(text)
    proc.start()
    client = proc.client()
    token = logon(client, "gamma")
    result = client.session_open_address_book(token)
    assert result.warning == ErrorCode.MAPI_W_ERRORS_RETURNED.name
    handle = int(result["handle"])
    # The book is there all the same, with the containers of the providers that work.
    assert len(client.container_hierarchy_table(token, handle)["rows"]) == 1
    error = client.session_get_last_error(token)["error"]
    assert error["code"] == ErrorCode.MAPI_W_ERRORS_RETURNED.name
    assert [p["provider"] for p in error["details"]["providers"]] == ["broken/contacts"]
    assert "broken" in error["message"]


# -- resolve_names ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    """alpha with Ada, Ada Lovelace-Byron and Grace; a second book in the same profile with
    another Grace. One daemon for the module: these tests only read."""
    base = tmp_path_factory.mktemp("books")
    alpha = base / "alpha"
    text = standard_profile(alpha)
    (alpha / "contacts" / "byron.vcf").write_text(ADA_BYRON)
    second = base / "second"
    second.mkdir()
    (second / "brewster.vcf").write_text(OTHER_GRACE)
    text += f'\n[services.second]\nservice = "vcard"\npath = "{second}"\n'
    proc = prepare_daemon(base / "d", profiles={"alpha": text})
    proc.start()
    yield proc
    proc.close()
    shutil.rmtree(proc.runtime.parent, ignore_errors=True)


def resolve(client: Client, token: bytes, handle: int, *names: str) -> list[dict[str, Any]]:
    return list(client.ab_resolve_names(token, handle, list(names))["recipients"])


def test_resolve_exact_prefix_substring_and_address(books: DaemonProc) -> None:
    client = books.client()
    token = logon(client)
    handle = book(client, token)
    found = resolve(client, token, handle, "Ada Lovelace", "hopp", "GRACE H", "ada@example.org")
    assert [r["PR_EMAIL_ADDRESS"] for r in found] == [
        "ada@example.org",  # exact beats the prefix match of "Ada Lovelace-Byron"
        "grace@example.org",  # substring, any case
        "grace@example.org",  # prefix, any case
        "ada@example.org",  # an address
    ]
    for row in found:
        assert row["PR_RECIPIENT_TYPE"] == RecipientType.MAPI_TO
        assert row["PR_ADDRTYPE"] == "SMTP"
        assert row["PR_OBJECT_TYPE"] == ObjectType.MAPI_MAILUSER
        assert isinstance(row["PR_ENTRYID"], bytes)
        assert isinstance(row["PR_SEARCH_KEY"], bytes)
    # The entry ID of a resolved row opens the same mail user.
    user = client.session_open_entry(token, found[0]["PR_ENTRYID"])
    assert user["props"]["PR_DISPLAY_NAME"] == "Ada Lovelace"


def test_ambiguous_across_two_providers(books: DaemonProc) -> None:
    client = books.client()
    token = logon(client)
    handle = book(client, token)
    error = failure(lambda: resolve(client, token, handle, "Ada Lovelace", "grace"))
    assert error.code == ErrorCode.MAPI_E_AMBIGUOUS_RECIP
    names: dict[str, Any] = dict(error.details["names"])  # type: ignore[call-overload]
    assert set(names) == {"grace"}
    assert names["grace"]["code"] == ErrorCode.MAPI_E_AMBIGUOUS_RECIP.name
    assert sorted(c["PR_EMAIL_ADDRESS"] for c in names["grace"]["candidates"]) == [
        "brewster@example.com",
        "grace@example.org",
    ]
    for candidate in names["grace"]["candidates"]:
        assert candidate["PR_RECIPIENT_TYPE"] == RecipientType.MAPI_TO


def test_not_found_and_ambiguous_together(books: DaemonProc) -> None:
    client = books.client()
    token = logon(client)
    handle = book(client, token)
    error = failure(lambda: resolve(client, token, handle, "nobody at all"))
    assert error.code == ErrorCode.MAPI_E_NOT_FOUND
    assert error.details["names"] == {"nobody at all": {"code": "MAPI_E_NOT_FOUND"}}
    error = failure(lambda: resolve(client, token, handle, "zzz", "ada", "Grace Hopper"))
    assert error.code == ErrorCode.MAPI_E_AMBIGUOUS_RECIP  # ambiguity wins over not found
    names: dict[str, Any] = dict(error.details["names"])  # type: ignore[call-overload]
    assert set(names) == {"zzz", "ada"}
    assert names["zzz"] == {"code": "MAPI_E_NOT_FOUND"}
    assert len(names["ada"]["candidates"]) == 2
    assert "zzz" in error.message and "ada" in error.message


def test_one_off_for_smtp_addresses_nobody_knows(books: DaemonProc) -> None:
    client = books.client()
    token = logon(client)
    handle = book(client, token)
    plain, named = resolve(client, token, handle, "carol@example.com", "Dan D. <dan@example.net>")
    assert plain["PR_DISPLAY_NAME"] == "carol@example.com"
    assert plain["PR_EMAIL_ADDRESS"] == "carol@example.com"
    assert named["PR_DISPLAY_NAME"] == "Dan D."
    assert named["PR_EMAIL_ADDRESS"] == "dan@example.net"
    for row in (plain, named):
        assert row["PR_ADDRTYPE"] == "SMTP"
        assert row["PR_RECIPIENT_TYPE"] == RecipientType.MAPI_TO
        assert eid.parse_one_off(row["PR_ENTRYID"]) == eid.OneOff(
            row["PR_DISPLAY_NAME"], "SMTP", row["PR_EMAIL_ADDRESS"]
        )
        assert row["PR_SEARCH_KEY"] == eid.search_key("SMTP", row["PR_EMAIL_ADDRESS"])
    # A known address resolves to the contact, not to a one-off.
    (known,) = resolve(client, token, handle, "Grace <grace@example.org>")
    assert eid.parse_one_off(known["PR_ENTRYID"]) is None


def test_a_whole_address_never_resolves_to_a_longer_one(books: DaemonProc) -> None:
    """A substring of Ada's address ("da@example.org") must not send her the mail."""
    client = books.client()
    token = logon(client)
    handle = book(client, token)
    (row,) = resolve(client, token, handle, "da@example.org")
    assert row["PR_EMAIL_ADDRESS"] == "da@example.org"
    assert eid.parse_one_off(row["PR_ENTRYID"]) is not None
    (exact,) = resolve(client, token, handle, "ADA@example.org")
    assert eid.parse_one_off(exact["PR_ENTRYID"]) is None
    assert exact["PR_EMAIL_ADDRESS"].casefold() == "ada@example.org"


def test_resolve_names_arguments(client: Client) -> None:
    token = logon(client)
    handle = book(client, token)
    error = failure(lambda: client.ab_resolve_names(token, handle, []))
    assert error.code == ErrorCode.MAPI_E_INVALID_PARAMETER
    error = failure(lambda: client.ab_resolve_names(token, handle, ["ada", "  "]))
    assert error.code == ErrorCode.MAPI_E_INVALID_PARAMETER
    error = failure(lambda: client.call("ab.resolve_names", {"handle": handle}, token=token))
    assert error.code == ErrorCode.MAPI_E_INVALID_PARAMETER
    # Any other handle is not an address book.
    row = client.container_hierarchy_table(token, handle)["rows"][0]
    container = client.container_open_entry(token, handle, row["PR_ENTRYID"])["handle"]
    error = failure(lambda: client.ab_resolve_names(token, container, ["ada"]))
    assert error.code == ErrorCode.MAPI_E_NO_SUPPORT


def test_files_changed_on_disk_are_resolved(daemon: DaemonProc) -> None:
    """A contact added by another program is found once the provider has seen it."""
    client = daemon.client()
    token = logon(client)
    handle = book(client, token)
    contacts = Path(daemon.root / "alpha" / "contacts")
    tmp = contacts / ".byron.vcf.tmp"
    tmp.write_text(ADA_BYRON)
    tmp.rename(contacts / "byron.vcf")
    deadline = time.monotonic() + 10
    while True:
        try:
            (row,) = resolve(client, token, handle, "byron")
            break
        except MapiError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"the new contact was not picked up: {exc}") from exc
            time.sleep(0.1)
    assert row["PR_EMAIL_ADDRESS"] == "byron@example.net"
