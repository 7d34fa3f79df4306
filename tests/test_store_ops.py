"""Stores through the daemon (PROTOCOL.md 6.4 and 6.5): the store table, open_msg_store and
open_entry with their write rules, set_default_store in both tables and the profile, and the
folder and message ops on a real Maildir, read-only handles refusing every change.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mapid import entryid as eid
from mapid.client import Client
from mapid.constants import (
    AccessLevel,
    ObjectType,
    ResourceFlags,
    ResourceType,
    StoreSupport,
)
from mapid.errors import ErrorCode, MapiError

from conftest import DaemonFactory, DaemonProc, standard_profile

NOTIFYING = 'service = "providers_for_tests:NotifyingStore"\n'


def logon(client: Client, profile: str = "alpha", flags: list[str] | None = None) -> bytes:
    return bytes(client.session_logon(profile, flags or ["MAPI_NEW_SESSION"])["token"])


def failure(call: Callable[[], Any]) -> MapiError:
    with pytest.raises(MapiError) as info:
        call()
    return info.value


def stores(client: Client, token: bytes) -> list[dict[str, Any]]:
    return list(client.session_msg_stores_table(token)["rows"])


def store_status_rows(client: Client, token: bytes) -> list[dict[str, Any]]:
    restriction = {
        "prop": "PR_RESOURCE_TYPE",
        "op": "eq",
        "value": int(ResourceType.MAPI_STORE_PROVIDER),
    }
    return list(client.session_status_table(token, {"restriction": restriction})["rows"])


def two_stores(proc_root: Path) -> str:
    """alpha's standard profile plus a second Maildir (`archive`) after it."""
    return standard_profile(proc_root / "alpha") + (
        f'\n[services.archive]\nservice = "maildir"\npath = "{proc_root / "Archive"}"\n'
        'display_name = "Archive"\n'
    )


# -- the store table ---------------------------------------------------------------------------


def test_msg_stores_table_rows(client: Client) -> None:
    token = logon(client)
    (row,) = stores(client, token)
    assert set(row) >= {
        "PR_ENTRYID",
        "PR_DISPLAY_NAME",
        "PR_DEFAULT_STORE",
        "PR_MDB_PROVIDER",
        "PR_PROVIDER_DISPLAY",
        "PR_RESOURCE_FLAGS",
        "PR_RECORD_KEY",
        "PR_INSTANCE_KEY",
        "PR_OBJECT_TYPE",
        "PR_RESOURCE_TYPE",
    }
    assert row["PR_DEFAULT_STORE"] is True
    assert row["PR_RESOURCE_FLAGS"] & ResourceFlags.STATUS_DEFAULT_STORE
    assert row["PR_OBJECT_TYPE"] == ObjectType.MAPI_STORE
    assert row["PR_RESOURCE_TYPE"] == ResourceType.MAPI_STORE_PROVIDER
    assert row["PR_DISPLAY_NAME"] == "mail"
    assert len(row["PR_ENTRYID"]) >= 20 and isinstance(row["PR_MDB_PROVIDER"], bytes)
    # Table arguments apply as everywhere.
    narrow = client.session_msg_stores_table(token, {"columns": ["PR_DISPLAY_NAME"]})
    assert narrow["rows"] == [
        {"PR_DISPLAY_NAME": "mail", "PR_INSTANCE_KEY": row["PR_INSTANCE_KEY"]}
    ]
    none = client.session_msg_stores_table(
        token, {"restriction": {"prop": "PR_DEFAULT_STORE", "op": "eq", "value": False}}
    )
    assert none["total"] == 0 and none["rows"] == []


def test_a_second_store_is_listed_in_profile_order(make_daemon: DaemonFactory) -> None:
    proc = make_daemon(start=False)
    (proc.config_dir / "profiles" / "alpha.toml").write_text(two_stores(proc.root))
    proc.start()
    client = proc.client()
    token = logon(client)
    rows = stores(client, token)
    assert [r["PR_DISPLAY_NAME"] for r in rows] == ["mail", "Archive"]
    assert [r["PR_DEFAULT_STORE"] for r in rows] == [True, False]
    assert rows[0]["PR_INSTANCE_KEY"] != rows[1]["PR_INSTANCE_KEY"]


# -- open_msg_store and open_entry --------------------------------------------------------------


def test_open_msg_store_errors(client: Client) -> None:
    token = logon(client)
    error = failure(lambda: client.call("session.open_msg_store", {"entryid": None}, token=token))
    assert error.code == ErrorCode.MAPI_E_INVALID_PARAMETER
    error = failure(lambda: client.session_open_msg_store(token, b"\0" * 19))
    assert error.code == ErrorCode.MAPI_E_INVALID_ENTRYID
    error = failure(lambda: client.session_open_msg_store(token, eid.make(b"\x01" * 16, b"x")))
    assert error.code == ErrorCode.MAPI_E_UNKNOWN_ENTRYID
    # An entry ID of a provider that is not a store does not name a store.
    book = client.session_open_address_book(token)["handle"]
    container = client.container_hierarchy_table(token, book)["rows"][0]["PR_ENTRYID"]
    error = failure(lambda: client.session_open_msg_store(token, container))
    assert error.code == ErrorCode.MAPI_E_INVALID_ENTRYID
    error = failure(
        lambda: client.session_open_msg_store(
            token, stores(client, token)[0]["PR_ENTRYID"], ["NOPE"]
        )
    )
    assert error.code == ErrorCode.MAPI_E_UNKNOWN_FLAGS


def test_open_msg_store_read_only_unless_mdb_write(client: Client) -> None:
    token = logon(client)
    entryid = stores(client, token)[0]["PR_ENTRYID"]
    ro = client.session_open_msg_store(token, entryid)
    assert ro["object_type"] == ObjectType.MAPI_STORE
    assert ro["props"]["PR_ACCESS_LEVEL"] == 0
    mask = ro["props"]["PR_STORE_SUPPORT_MASK"]
    assert not mask & (StoreSupport.STORE_MODIFY_OK | StoreSupport.STORE_CREATE_OK)
    error = failure(lambda: client.object_set_props(token, ro["handle"], {"PR_COMMENT": "x"}))
    assert error.code == ErrorCode.MAPI_E_NO_ACCESS
    error = failure(lambda: client.object_delete_props(token, ro["handle"], ["PR_COMMENT"]))
    assert error.code == ErrorCode.MAPI_E_NO_ACCESS
    rw = client.session_open_msg_store(token, entryid, ["MDB_WRITE"])
    assert rw["props"]["PR_ACCESS_LEVEL"] == AccessLevel.MAPI_MODIFY
    assert rw["props"]["PR_STORE_SUPPORT_MASK"] & StoreSupport.STORE_MODIFY_OK
    got = client.object_get_props(token, rw["handle"], ["PR_ACCESS_LEVEL", "PR_DISPLAY_NAME"])
    assert got["props"]["PR_ACCESS_LEVEL"] == AccessLevel.MAPI_MODIFY
    got = client.object_get_props(token, ro["handle"], ["PR_ACCESS_LEVEL"])
    assert got["props"] == {"PR_ACCESS_LEVEL": 0}


def test_open_entry_on_a_store_entry_id_opens_the_store(client: Client) -> None:
    token = logon(client)
    entryid = stores(client, token)[0]["PR_ENTRYID"]
    plain = client.session_open_entry(token, entryid)
    assert plain["object_type"] == ObjectType.MAPI_STORE
    assert plain["props"]["PR_ACCESS_LEVEL"] == 0
    modify = client.session_open_entry(token, entryid, ["MAPI_MODIFY"])
    assert modify["props"]["PR_ACCESS_LEVEL"] == AccessLevel.MAPI_MODIFY
    assert client.session_compare_entryids(token, plain["props"]["PR_ENTRYID"], entryid)["equal"]


# -- set_default_store --------------------------------------------------------------------------


def flags_by_name(client: Client, token: bytes) -> dict[str, int]:
    return {
        r["PR_DISPLAY_NAME"]: int(r["PR_RESOURCE_FLAGS"]) for r in store_status_rows(client, token)
    }


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def archive(make_daemon: DaemonFactory) -> DaemonProc:
    proc = make_daemon(start=False)
    (proc.config_dir / "profiles" / "alpha.toml").write_text(two_stores(proc.root))
    return proc.start()


def test_default_store_moves_in_both_tables_and_the_profile(archive: DaemonProc) -> None:
    client = archive.client()
    token = logon(client)
    other = logon(archive.client())  # a second session on the same profile follows the file
    target = stores(client, token)[1]["PR_ENTRYID"]
    assert client.session_set_default_store(token, "MAPI_DEFAULT_STORE", target) == {}
    flags = flags_by_name(client, token)
    assert flags["Archive"] & ResourceFlags.STATUS_DEFAULT_STORE
    assert not flags["mail"] & ResourceFlags.STATUS_DEFAULT_STORE
    assert [r["PR_DEFAULT_STORE"] for r in stores(client, token)] == [False, True]
    saved = tomllib.loads((archive.config_dir / "profiles" / "alpha.toml").read_text())
    assert saved["services"]["archive"]["primary_store"] is True
    assert saved["services"]["mail"]["primary_store"] is False
    wait_for(
        lambda: [r["PR_DEFAULT_STORE"] for r in stores(client, other)] == [False, True],
        "the other session to follow the profile",
    )
    # The choice outlives the daemon.
    archive.stop()
    archive.start()
    again = archive.client()
    token = logon(again)
    assert [r["PR_DEFAULT_STORE"] for r in stores(again, token)] == [False, True]


def test_default_store_nil_clears_and_int_flags(archive: DaemonProc) -> None:
    client = archive.client()
    token = logon(client)
    assert client.session_set_default_store(token, 1, None) == {}  # MAPI_DEFAULT_STORE by value
    assert [r["PR_DEFAULT_STORE"] for r in stores(client, token)] == [False, False]
    assert all(
        not f & ResourceFlags.STATUS_DEFAULT_STORE for f in flags_by_name(client, token).values()
    )
    saved = tomllib.loads((archive.config_dir / "profiles" / "alpha.toml").read_text())
    assert saved["services"]["mail"]["primary_store"] is False


def test_simple_primary_and_secondary_stores(archive: DaemonProc) -> None:
    client = archive.client()
    token = logon(client)
    mail, arch = (r["PR_ENTRYID"] for r in stores(client, token))
    client.session_set_default_store(token, "MAPI_SIMPLE_STORE_TEMPORARY", arch)
    client.session_set_default_store(token, "MAPI_PRIMARY_STORE", mail)
    client.session_set_default_store(token, "MAPI_SECONDARY_STORE", arch)
    flags = flags_by_name(client, token)
    assert flags["Archive"] & ResourceFlags.STATUS_SIMPLE_STORE
    assert flags["mail"] & ResourceFlags.STATUS_PRIMARY_STORE
    assert flags["Archive"] & ResourceFlags.STATUS_SECONDARY_STORE
    assert not flags["mail"] & (
        ResourceFlags.STATUS_SIMPLE_STORE | ResourceFlags.STATUS_SECONDARY_STORE
    )
    assert flags["mail"] & ResourceFlags.STATUS_DEFAULT_STORE  # untouched
    table = {r["PR_DISPLAY_NAME"]: r["PR_RESOURCE_FLAGS"] for r in stores(client, token)}
    assert table == flags
    text = (archive.config_dir / "profiles" / "alpha.toml").read_text()
    assert "simple_store" not in text  # temporary: this session only
    # Permanent: the profile keeps it, and a new session (and a restart) starts with it.
    client.session_set_default_store(token, "MAPI_SIMPLE_STORE_PERMANENT", mail)
    flags = flags_by_name(client, token)
    assert flags["mail"] & ResourceFlags.STATUS_SIMPLE_STORE
    assert not flags["Archive"] & ResourceFlags.STATUS_SIMPLE_STORE
    saved = tomllib.loads((archive.config_dir / "profiles" / "alpha.toml").read_text())
    assert saved["simple_store"] == "mail"
    archive.stop()
    archive.start()
    again = archive.client()
    fresh = logon(again)
    assert flags_by_name(again, fresh)["mail"] & ResourceFlags.STATUS_SIMPLE_STORE
    assert not flags_by_name(again, fresh)["Archive"] & ResourceFlags.STATUS_SIMPLE_STORE


def test_set_default_store_refusals(make_daemon: DaemonFactory) -> None:
    proc = make_daemon(start=False)
    text = standard_profile(proc.root / "alpha") + "\n[services.notes]\n" + NOTIFYING
    (proc.config_dir / "profiles" / "alpha.toml").write_text(text)
    proc.start()
    client = proc.client()
    token = logon(client)
    rows = {r["PR_DISPLAY_NAME"]: r["PR_ENTRYID"] for r in stores(client, token)}
    # A store that cannot submit, create and modify cannot be the default.
    error = failure(
        lambda: client.session_set_default_store(token, "MAPI_DEFAULT_STORE", rows["notes"])
    )
    assert error.code == ErrorCode.MAPI_E_NO_ACCESS
    assert "PR_STORE_SUPPORT_MASK" in error.message
    error = failure(lambda: client.session_set_default_store(token, "NOT_A_FLAG", rows["mail"]))
    assert error.code == ErrorCode.MAPI_E_UNKNOWN_FLAGS
    error = failure(lambda: client.session_set_default_store(token, 9, rows["mail"]))
    assert error.code == ErrorCode.MAPI_E_UNKNOWN_FLAGS
    error = failure(
        lambda: client.call("session.set_default_store", {"entryid": rows["mail"]}, token=token)
    )
    assert error.code == ErrorCode.MAPI_E_INVALID_PARAMETER
    error = failure(
        lambda: client.session_set_default_store(token, "MAPI_DEFAULT_STORE", eid.make(b"\7" * 16))
    )
    assert error.code == ErrorCode.MAPI_E_UNKNOWN_ENTRYID
    assert [r["PR_DEFAULT_STORE"] for r in stores(client, token)] == [True, False]
