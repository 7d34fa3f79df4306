"""Stores through the daemon (docs/protocol.md 6.4 and 6.5): the store table, open_msg_store and
open_entry with their write rules, set_default_store in both tables and the profile, and the
folder and message ops on a real Maildir, read-only handles refusing every change.
"""

from __future__ import annotations

import email
import email.policy
import time
import tomllib
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from mapid import entryid as eid
from mapid.client import Client
from mapid.constants import (
    AccessLevel,
    ObjectType,
    RecipientType,
    ResourceFlags,
    ResourceType,
    StoreSupport,
)
from mapid.errors import ErrorCode, MapiError
from mapid.paths import read_connection_file

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


# -- folders and messages ---------------------------------------------------------------------


def mime(subject: str, to: str = "grace@example.org", date: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ada Lovelace <ada@example.org>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = date or "Mon, 02 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<{abs(hash(subject))}@example.org>"
    msg.set_content(f"body of {subject}\n")
    return msg.as_bytes()


class Store:
    """A store opened in one session, and its IPM folders by display name."""

    def __init__(self, client: Client, token: bytes, entryid: bytes, write: bool) -> None:
        self.client, self.token = client, token
        opened = client.session_open_msg_store(token, entryid, ["MDB_WRITE"] if write else [])
        self.handle = int(opened["handle"])
        self.props = opened["props"]
        subtree = client.container_open_entry(
            token, self.handle, self.props["PR_IPM_SUBTREE_ENTRYID"]
        )
        self.subtree = int(subtree["handle"])
        rows = client.container_hierarchy_table(token, self.subtree)["rows"]
        self.folder_ids = {r["PR_DISPLAY_NAME"]: bytes(r["PR_ENTRYID"]) for r in rows}

    def folder(self, name: str) -> int:
        opened = self.client.container_open_entry(self.token, self.subtree, self.folder_ids[name])
        return int(opened["handle"])

    def contents(self, handle: int, **table: Any) -> list[dict[str, Any]]:
        return list(self.client.container_contents_table(self.token, handle, table)["rows"])

    def subjects(self, name: str) -> list[str]:
        handle = self.folder(name)
        rows = self.contents(handle, sort=[["PR_SUBJECT", "asc"]])
        self.client.object_release(self.token, handle)
        return [r.get("PR_SUBJECT", "") for r in rows]


def mail_store(client: Client, token: bytes, *, write: bool = True, name: str = "mail") -> Store:
    entryid = next(r["PR_ENTRYID"] for r in stores(client, token) if r["PR_DISPLAY_NAME"] == name)
    return Store(client, token, entryid, write)


def test_ipm_folders_import_open_and_mime(client: Client) -> None:
    token = logon(client)
    store = mail_store(client, token)
    assert {"Inbox", "Outbox", "Sent Items", "Deleted Items", "Drafts"} <= set(store.folder_ids)
    inbox = store.folder("Inbox")
    first = client.folder_import_message(
        token, inbox, mime("first", date="Tue, 03 Nov 2026 09:00:00 +0000")
    )["entryid"]
    second = client.folder_import_message(token, inbox, mime("second"))["entryid"]
    rows = store.contents(inbox, columns=["PR_SUBJECT", "PR_MESSAGE_DELIVERY_TIME", "PR_ENTRYID"])
    assert sorted(r["PR_SUBJECT"] for r in rows) == ["first", "second"]
    # Sort and restriction on times: the table compares them as times.
    by_date = store.contents(inbox, sort=[["PR_MESSAGE_DELIVERY_TIME", "desc"]], limit=1)
    times = [r["PR_MESSAGE_DELIVERY_TIME"] for r in store.contents(inbox)]
    assert all(isinstance(t, datetime) for t in times)
    assert by_date[0]["PR_MESSAGE_DELIVERY_TIME"] == max(times)
    later = store.contents(
        inbox, restriction={"prop": "PR_MESSAGE_DELIVERY_TIME", "op": "ge", "value": max(times)}
    )
    assert len(later) == 1
    opened = client.container_open_entry(token, inbox, first)
    assert opened["object_type"] == ObjectType.MAPI_MESSAGE
    assert opened["props"]["PR_SUBJECT"] == "first"
    assert opened["props"]["PR_ACCESS_LEVEL"] == AccessLevel.MAPI_MODIFY
    text = bytes(client.message_get_mime(token, opened["handle"])["mime"])
    assert b"Subject: first" in text and b"body of first" in text
    assert client.session_compare_entryids(token, first, opened["props"]["PR_ENTRYID"])["equal"]
    assert not client.session_compare_entryids(token, first, second)["equal"]


def test_create_folder_copy_move_and_delete_to_deleted_items(client: Client) -> None:
    token = logon(client)
    store = mail_store(client, token)
    inbox = store.folder("Inbox")
    ids = [client.folder_import_message(token, inbox, mime(s))["entryid"] for s in ("a", "b", "c")]
    made = client.folder_create_folder(token, store.subtree, "Projects")
    projects, projects_id = made["handle"], made["entryid"]
    assert client.object_get_props(token, projects, ["PR_DISPLAY_NAME"])["props"] == {
        "PR_DISPLAY_NAME": "Projects"
    }
    error = failure(lambda: client.folder_create_folder(token, store.subtree, "Projects"))
    assert error.code == ErrorCode.MAPI_E_COLLISION
    error = failure(lambda: client.folder_create_folder(token, store.subtree, "  "))
    assert error.code == ErrorCode.MAPI_E_INVALID_PARAMETER
    copied = client.folder_copy_messages(token, inbox, [ids[0]], projects_id)["entryids"]
    moved = client.folder_copy_messages(token, inbox, [ids[1]], projects_id, move=True)["entryids"]
    assert len(copied) == len(moved) == 1
    assert store.subjects("Inbox") == ["a", "c"]
    assert sorted(r["PR_SUBJECT"] for r in store.contents(projects)) == ["a", "b"]
    # Deleting moves to Deleted Items; deleting there is for good.
    client.folder_delete_messages(token, projects, copied + moved)
    assert store.contents(projects) == []
    assert store.subjects("Deleted Items") == ["a", "b"]
    trash = store.folder("Deleted Items")
    in_trash = [r["PR_ENTRYID"] for r in store.contents(trash)]
    client.folder_delete_messages(token, trash, in_trash)
    assert store.contents(trash) == []


def test_compose_recipients_and_submit(client: Client) -> None:
    token = logon(client)
    store = mail_store(client, token)
    drafts = store.folder("Drafts")
    message = client.folder_create_message(token, drafts)["handle"]
    client.object_set_props(token, message, {"PR_SUBJECT": "hello", "PR_BODY": "hi Grace\n"})
    book = client.session_open_address_book(token)["handle"]
    resolved = client.ab_resolve_names(token, book, ["Grace Hopper", "carol@example.com"])
    recipients = list(resolved["recipients"])
    recipients[1] = {**recipients[1], "PR_RECIPIENT_TYPE": int(RecipientType.MAPI_CC)}
    client.message_modify_recipients(token, message, recipients)
    client.object_save_changes(token, message)
    assert store.subjects("Drafts") == ["hello"]
    rows = client.message_recipients_table(token, message, {"sort": [["PR_RECIPIENT_TYPE", "asc"]]})
    assert [(r["PR_EMAIL_ADDRESS"], r["PR_RECIPIENT_TYPE"]) for r in rows["rows"]] == [
        ("grace@example.org", RecipientType.MAPI_TO),
        ("carol@example.com", RecipientType.MAPI_CC),
    ]
    # The spooler may take the message out of the Outbox at once: the move into the Outbox
    # is seen through its notification, not by looking.
    client.session_advise(token, ["fnevObjectMoved"], store.props["PR_ENTRYID"])
    queued = client.message_submit(token, message)["entryid"]
    assert len(queued) >= 20
    assert store.subjects("Drafts") == []
    while True:
        note = client.recv_notification(timeout=5)
        assert note is not None, "no fnevObjectMoved for the submitted message"
        if client.session_compare_entryids(token, note["entryid"], queued)["equal"]:
            break
    assert note["parent_entryid"] == store.props["PR_IPM_OUTBOX_ENTRYID"]
    assert note["old_parent_entryid"] == store.folder_ids["Drafts"]


def test_submit_refused_for_a_no_mail_member(client: Client) -> None:
    token = logon(client, flags=["MAPI_NEW_SESSION", "MAPI_NO_MAIL"])
    store = mail_store(client, token)
    message = client.folder_create_message(token, store.folder("Drafts"))["handle"]
    client.message_modify_recipients(token, message, [{"PR_EMAIL_ADDRESS": "x@example.com"}])
    error = failure(lambda: client.message_submit(token, message))
    assert error.code == ErrorCode.MAPI_E_NO_SUPPORT
    assert "MAPI_NO_MAIL" in error.message


def test_read_only_store_refuses_every_change(client: Client) -> None:
    token = logon(client)
    writer = mail_store(client, token)
    inbox_w = writer.folder("Inbox")
    existing = client.folder_import_message(token, inbox_w, mime("kept"))["entryid"]
    draft = client.folder_create_message(token, writer.folder("Drafts"))["handle"]
    client.object_save_changes(token, draft)
    # Another session, read-only.
    reader_token = logon(client)
    ro = mail_store(client, reader_token, write=False)
    inbox = ro.folder("Inbox")
    message = client.container_open_entry(reader_token, inbox, existing)
    assert message["props"]["PR_ACCESS_LEVEL"] == 0
    msg = message["handle"]
    dest = ro.folder_ids["Drafts"]
    attempts: dict[str, Callable[[], Any]] = {
        "create_folder": lambda: client.folder_create_folder(reader_token, ro.subtree, "X"),
        "create_message": lambda: client.folder_create_message(reader_token, inbox),
        "import_message": lambda: client.folder_import_message(reader_token, inbox, mime("z")),
        "delete_messages": lambda: client.folder_delete_messages(reader_token, inbox, [existing]),
        "copy_messages": lambda: client.folder_copy_messages(reader_token, inbox, [existing], dest),
        "set_props": lambda: client.object_set_props(reader_token, msg, {"PR_SUBJECT": "no"}),
        "delete_props": lambda: client.object_delete_props(reader_token, msg, ["PR_SUBJECT"]),
        "save_changes": lambda: client.object_save_changes(reader_token, msg),
        "modify_recipients": lambda: client.message_modify_recipients(
            reader_token, msg, [{"PR_EMAIL_ADDRESS": "x@example.com"}]
        ),
        "submit": lambda: client.message_submit(reader_token, msg),
        "store set_props": lambda: client.object_set_props(
            reader_token, ro.handle, {"PR_COMMENT": "x"}
        ),
    }
    for what, attempt in attempts.items():
        error = failure(attempt)
        assert error.code == ErrorCode.MAPI_E_NO_ACCESS, what
    # Nothing changed.
    assert writer.subjects("Inbox") == ["kept"]
    # MAPI_MODIFY without a writable store handle opens read-only...
    plain = client.session_open_entry(reader_token, existing, ["MAPI_MODIFY"])
    assert plain["props"]["PR_ACCESS_LEVEL"] == 0
    # ...with one, writable; and read-only again once that handle is released.
    rw = client.session_open_msg_store(reader_token, writer.props["PR_ENTRYID"], ["MDB_WRITE"])
    writable = client.session_open_entry(reader_token, existing, ["MAPI_MODIFY"])
    assert writable["props"]["PR_ACCESS_LEVEL"] == AccessLevel.MAPI_MODIFY
    assert client.object_set_props(reader_token, writable["handle"], {"PR_SUBJECT": "kept"}) == {
        "problems": {}
    }
    without = client.session_open_entry(reader_token, existing)
    assert without["props"]["PR_ACCESS_LEVEL"] == 0  # no MAPI_MODIFY asked
    client.object_release(reader_token, rw["handle"])
    again = client.session_open_entry(reader_token, existing, ["MAPI_MODIFY"])
    assert again["props"]["PR_ACCESS_LEVEL"] == 0


def test_ops_on_the_wrong_kind_of_handle(client: Client) -> None:
    token = logon(client)
    store = mail_store(client, token)
    inbox = store.folder("Inbox")
    entryid = client.folder_import_message(token, inbox, mime("kind"))["entryid"]
    message = client.container_open_entry(token, inbox, entryid)["handle"]
    book = client.session_open_address_book(token)["handle"]
    status_row = client.session_status_table(token)["rows"][0]["PR_ENTRYID"]
    status = client.session_open_entry(token, status_row)["handle"]
    wrong: dict[str, Callable[[], Any]] = {
        "create_folder on a message": lambda: client.folder_create_folder(token, message, "x"),
        "import on the address book": lambda: client.folder_import_message(token, book, mime("q")),
        "get_mime on a folder": lambda: client.message_get_mime(token, inbox),
        "submit on a folder": lambda: client.message_submit(token, inbox),
        "recipients of a folder": lambda: client.message_recipients_table(token, inbox),
        "contents of a message": lambda: client.container_contents_table(token, message),
        "hierarchy of a status object": lambda: client.container_hierarchy_table(token, status),
        "resolve on a folder": lambda: client.ab_resolve_names(token, inbox, ["ada"]),
    }
    for what, attempt in wrong.items():
        assert failure(attempt).code == ErrorCode.MAPI_E_NO_SUPPORT, what


def test_argument_checks(client: Client) -> None:
    token = logon(client)
    store = mail_store(client, token)
    inbox = store.folder("Inbox")
    entryid = client.folder_import_message(token, inbox, mime("args"))["entryid"]
    message = client.folder_create_message(token, inbox)["handle"]
    call = client.call
    error = failure(
        lambda: call("folder.import_message", {"handle": inbox, "mime": "text"}, token=token)
    )
    assert error.code == ErrorCode.MAPI_E_INVALID_PARAMETER and "1 MiB" in error.message
    error = failure(lambda: client.folder_import_message(token, inbox, b""))
    assert error.code == ErrorCode.MAPI_E_INVALID_PARAMETER
    error = failure(lambda: client.folder_delete_messages(token, inbox, [entryid, b"short"]))
    assert error.code == ErrorCode.MAPI_E_INVALID_ENTRYID and "entryids[1]" in error.message
    error = failure(lambda: client.folder_delete_messages(token, inbox, []))
    assert error.code == ErrorCode.MAPI_E_INVALID_PARAMETER
    error = failure(lambda: client.folder_copy_messages(token, inbox, [entryid], b"x" * 5))
    assert error.code == ErrorCode.MAPI_E_INVALID_ENTRYID
    error = failure(
        lambda: client.folder_copy_messages(token, inbox, [entryid], eid.make(b"\3" * 16))
    )
    assert error.code == ErrorCode.MAPI_E_UNKNOWN_ENTRYID
    bad_recipients: list[Any] = [
        [{"PR_DISPLAY_NAME": "no address"}],
        [{"PR_EMAIL_ADDRESS": ""}],
        [{"PR_EMAIL_ADDRESS": "a@b", "PR_RECIPIENT_TYPE": 7}],
        [{"PR_EMAIL_ADDRESS": "a@b", "NOT_A_TAG": 1}],
        ["a@b"],
    ]
    for recipients in bad_recipients:
        error = failure(
            lambda r=recipients: call(
                "message.modify_recipients", {"handle": message, "recipients": r}, token=token
            )
        )
        assert error.code == ErrorCode.MAPI_E_INVALID_PARAMETER, recipients
    # PR_RECIPIENT_TYPE defaults to MAPI_TO, PR_ADDRTYPE to SMTP, and the rest is kept.
    client.message_modify_recipients(
        token, message, [{"PR_EMAIL_ADDRESS": "z@example.com", "PR_DISPLAY_NAME": "Zed"}]
    )
    (row,) = client.message_recipients_table(token, message)["rows"]
    assert row["PR_RECIPIENT_TYPE"] == RecipientType.MAPI_TO
    assert row["PR_ADDRTYPE"] == "SMTP" and row["PR_DISPLAY_NAME"] == "Zed"


# -- the compact requests (docs/protocol.md 10: additions announced in daemon.hello) ---------------
# folder.create_message with `props` and `recipients`, message.submit with `release`: what
# set_props, modify_recipients and release do in three requests, in one, so a client that
# waits for each reply sends a message in two round trips instead of five.


GRACE = {
    "PR_DISPLAY_NAME": "Grace Hopper",
    "PR_EMAIL_ADDRESS": "grace@example.org",
    "PR_ADDRTYPE": "SMTP",
}
CAROL_CC = {"PR_EMAIL_ADDRESS": "carol@example.org", "PR_RECIPIENT_TYPE": 2}


def test_hello_announces_the_compact_requests(client: Client) -> None:
    capabilities = client.daemon_hello()["capabilities"]
    assert "create_message.props" in capabilities
    assert "submit.release" in capabilities


def test_create_message_with_props_and_recipients_is_the_long_way_in_one(
    client: Client,
) -> None:
    token = logon(client)
    store = mail_store(client, token)
    drafts = store.folder("Drafts")
    props = {"PR_SUBJECT": "compact", "PR_BODY": "in one request\n", "PR_MESSAGE_SIZE": 1}
    created = client.folder_create_message(token, drafts, props, [GRACE, CAROL_CC])
    # Problems as object.set_props gives them: the computed size is refused, the rest kept.
    assert created["problems"] == {"PR_MESSAGE_SIZE": "MAPI_E_COMPUTED"}
    handle = created["handle"]

    long_way = client.folder_create_message(token, drafts)
    assert "problems" not in long_way  # without props the reply is as it always was
    other = long_way["handle"]
    assert client.object_set_props(token, other, props)["problems"] == created["problems"]
    client.message_modify_recipients(token, other, [GRACE, CAROL_CC])

    columns = {"columns": ["PR_EMAIL_ADDRESS", "PR_RECIPIENT_TYPE", "PR_DISPLAY_NAME"]}
    for h in (handle, other):
        client.object_save_changes(token, h)
    tables = [client.message_recipients_table(token, h, columns)["rows"] for h in (handle, other)]
    strip = [[{k: v for k, v in r.items() if k != "PR_INSTANCE_KEY"} for r in t] for t in tables]
    assert strip[0] == strip[1]
    assert [(r["PR_EMAIL_ADDRESS"], r["PR_RECIPIENT_TYPE"]) for r in strip[0]] == [
        ("grace@example.org", 1),
        ("carol@example.org", 2),
    ]
    mimes = [bytes(client.message_get_mime(token, h)["mime"]) for h in (handle, other)]
    parsed = [email.message_from_bytes(m, policy=email.policy.default) for m in mimes]
    for message in parsed:
        assert message["Subject"] == "compact"
        assert message["To"].addresses[0].addr_spec == "grace@example.org"
        assert message["Cc"].addresses[0].addr_spec == "carol@example.org"
        assert message.get_content() == "in one request\n"
    assert store.subjects("Drafts") == ["compact", "compact"]


def test_bad_props_or_recipients_create_nothing_and_leave_no_handle(
    make_daemon: DaemonFactory,
) -> None:
    # Three handles for the store, its subtree and Drafts, and two to spare: a create that
    # failed and kept its handle would use them up.
    proc = make_daemon(config='default_profile = "alpha"\nmax_handles = 5\n')
    client = proc.client()
    token = logon(client)
    store = mail_store(client, token)
    drafts = store.folder("Drafts")
    call = client.call
    refused: list[tuple[dict[str, Any], ErrorCode]] = [
        ({"props": "not a map"}, ErrorCode.MAPI_E_INVALID_PARAMETER),
        ({"props": {1: "int key"}}, ErrorCode.MAPI_E_INVALID_PARAMETER),
        ({"recipients": [{"PR_DISPLAY_NAME": "no address"}]}, ErrorCode.MAPI_E_INVALID_PARAMETER),
        ({"recipients": {"not": "a list"}}, ErrorCode.MAPI_E_INVALID_PARAMETER),
        # Checked by the store, after the message was made: it must be released again.
        (
            {"props": {"PR_SUBJECT": "x400"}, "recipients": [{**GRACE, "PR_ADDRTYPE": "X400"}]},
            ErrorCode.MAPI_E_INVALID_PARAMETER,
        ),
    ]
    for args, code in refused * 2:
        error = failure(
            lambda a=args: call("folder.create_message", {"handle": drafts, **a}, token=token)
        )
        assert error.code == code, args
    made = [
        client.folder_create_message(token, drafts, {"PR_SUBJECT": f"kept {i}"}, [GRACE])
        for i in range(2)
    ]
    assert all(m["problems"] == {} for m in made)
    error = failure(lambda: client.folder_create_message(token, drafts, {"PR_SUBJECT": "more"}))
    assert error.code == ErrorCode.MAPI_E_NOT_ENOUGH_RESOURCES
    for m in made:
        client.object_save_changes(token, m["handle"])
        client.object_release(token, m["handle"])
    assert store.subjects("Drafts") == ["kept 0", "kept 1"]


def test_submit_with_release_frees_the_handle_only_when_it_succeeds(client: Client) -> None:
    token = logon(client)
    store = mail_store(client, token)
    created = client.folder_create_message(
        token, store.folder("Drafts"), {"PR_SUBJECT": "queued"}, [GRACE]
    )
    queued = client.message_submit(token, created["handle"], release=True)["entryid"]
    assert len(queued) >= 20
    error = failure(lambda: client.object_get_props(token, created["handle"]))
    assert error.code == ErrorCode.MAPI_E_INVALID_OBJECT
    assert store.subjects("Drafts") == []  # queued (the spooler may have it already)
    # `release` must be a bool.
    kept = client.folder_create_message(token, store.folder("Drafts"), {"PR_SUBJECT": "k"})
    error = failure(
        lambda: client.call("message.submit", {"handle": kept["handle"], "release": 1}, token=token)
    )
    assert error.code == ErrorCode.MAPI_E_INVALID_PARAMETER
    assert client.object_get_props(token, kept["handle"], ["PR_SUBJECT"])["props"] == {
        "PR_SUBJECT": "k"
    }
    # Without `release`, submit is docs/protocol.md's: the handle lives until object.release.
    client.message_modify_recipients(token, kept["handle"], [GRACE])
    client.message_submit(token, kept["handle"])
    client.object_release(token, kept["handle"])
    error = failure(lambda: client.object_release(token, kept["handle"]))
    assert error.code == ErrorCode.MAPI_E_INVALID_OBJECT


def test_a_failed_submit_with_release_keeps_the_handle(client: Client) -> None:
    token = logon(client, flags=["MAPI_NEW_SESSION", "MAPI_NO_MAIL"])
    store = mail_store(client, token)
    handle = client.folder_create_message(
        token, store.folder("Drafts"), {"PR_SUBJECT": "unsent"}, [GRACE]
    )["handle"]
    error = failure(lambda: client.message_submit(token, handle, release=True))
    assert error.code == ErrorCode.MAPI_E_NO_SUPPORT
    # Still there, to be saved as a draft or released.
    client.object_save_changes(token, handle)
    client.object_release(token, handle)
    assert store.subjects("Drafts") == ["unsent"]


def test_nil_props_are_no_props(client: Client) -> None:
    """A nil optional argument is the same as an absent one, as for every op."""
    token = logon(client)
    drafts = mail_store(client, token).folder("Drafts")
    reply = client.call("folder.create_message", {"handle": drafts, "props": None}, token=token)
    assert set(reply) == {"handle"}


def test_copy_and_move_to_another_store_go_through_mime(archive: DaemonProc) -> None:
    client = archive.client()
    token = logon(client)
    mail = mail_store(client, token)
    inbox = mail.folder("Inbox")
    ids = [client.folder_import_message(token, inbox, mime(s))["entryid"] for s in ("one", "two")]
    # The other store open read-only in this session: the copy is refused.
    read_only = mail_store(client, token, write=False, name="Archive")
    dest = read_only.folder_ids["Inbox"]
    error = failure(lambda: client.folder_copy_messages(token, inbox, ids[:1], dest))
    assert error.code == ErrorCode.MAPI_E_NO_ACCESS
    other = mail_store(client, token, name="Archive")
    copied = client.folder_copy_messages(token, inbox, ids[:1], dest)["entryids"]
    moved = client.folder_copy_messages(token, inbox, ids[1:], dest, move=True)["entryids"]
    assert other.subjects("Inbox") == ["one", "two"]
    assert mail.subjects("Inbox") == ["one"]
    assert mail.subjects("Deleted Items") == []  # a move is not a delete
    opened = client.session_open_entry(token, copied[0])
    assert opened["props"]["PR_SUBJECT"] == "one"
    text = bytes(client.message_get_mime(token, opened["handle"])["mime"])
    assert b"body of one" in text
    assert len(moved) == 1


def test_entry_ids_survive_a_restart(daemon: DaemonProc) -> None:
    client = daemon.client()
    token = logon(client)
    store = mail_store(client, token)
    inbox = store.folder("Inbox")
    entryid = bytes(client.folder_import_message(token, inbox, mime("lasting"))["entryid"])
    store_id = bytes(store.props["PR_ENTRYID"])
    inbox_id = store.folder_ids["Inbox"]
    daemon.stop()
    daemon.start()
    again = daemon.client()
    fresh = logon(again)
    assert again.session_compare_entryids(fresh, store_id, stores(again, fresh)[0]["PR_ENTRYID"])[
        "equal"
    ]
    opened = again.session_open_entry(fresh, entryid)
    assert opened["props"]["PR_SUBJECT"] == "lasting"
    assert again.session_compare_entryids(fresh, entryid, opened["props"]["PR_ENTRYID"])["equal"]
    folder = again.session_open_entry(fresh, inbox_id)
    assert folder["props"]["PR_DISPLAY_NAME"] == "Inbox"


def test_get_mime_of_a_message_over_the_wire_limit(daemon: DaemonProc) -> None:
    """A message another program put in the Maildir may be bigger than one bin value."""
    client = daemon.client()
    token = logon(client)
    store = mail_store(client, token)
    big = mime("big") + b"x" * (1 << 20) + b"\n"
    cur = daemon.root / "alpha" / "Mail" / "cur"
    (cur / "1700000000.M1P1.host:2,S").write_bytes(big)
    inbox = store.folder("Inbox")
    (row,) = store.contents(inbox)
    opened = client.container_open_entry(token, inbox, row["PR_ENTRYID"])
    # The body is more than a client may decode: left out, and named.
    assert opened["too_big"] == ["PR_BODY"] and "PR_BODY" not in opened["props"]
    assert opened["props"]["PR_SUBJECT"] == "big"
    message = opened["handle"]
    got = client.object_get_props(token, message, ["PR_BODY", "PR_SUBJECT"])
    assert got == {"props": {"PR_SUBJECT": "big"}, "too_big": ["PR_BODY"]}
    error = failure(lambda: client.message_get_mime(token, message))
    assert error.code == ErrorCode.MAPI_E_TOO_BIG
    assert "1 MiB" in error.message


def test_default_store_changes_are_published(archive: DaemonProc) -> None:
    """The status rows change through the session's table: monitors see the events."""
    info = read_connection_file(archive.runtime)
    assert info is not None
    client = archive.client()
    logged = client.session_logon("alpha", ["MAPI_NEW_SESSION"])
    token = bytes(logged["token"])
    sub = zmq.Context.instance().socket(zmq.SUB)
    try:
        sub.connect(info.events)
        sub.setsockopt(zmq.SUBSCRIBE, b"hb")
        sub.setsockopt(zmq.SUBSCRIBE, f"status.{logged['session']}".encode())
        assert sub.poll(5000), "no heartbeat"  # subscribed
        target = stores(client, token)[1]["PR_ENTRYID"]
        client.session_set_default_store(token, "MAPI_DEFAULT_STORE", target)
        changed: dict[str, int] = {}
        deadline = time.monotonic() + 10
        while len(changed) < 2:
            assert time.monotonic() < deadline, f"events seen: {changed}"
            if not sub.poll(1000):
                continue
            topic, data = sub.recv_multipart()
            event = msgpack.unpackb(data, timestamp=3)
            if topic.startswith(b"status.") and event["type"] == "TABLE_ROW_MODIFIED":
                row = event["row"]
                if row["PR_RESOURCE_TYPE"] == ResourceType.MAPI_STORE_PROVIDER:
                    changed[row["PR_DISPLAY_NAME"]] = row["PR_RESOURCE_FLAGS"]
        assert changed["Archive"] & ResourceFlags.STATUS_DEFAULT_STORE
        assert not changed["mail"] & ResourceFlags.STATUS_DEFAULT_STORE
    finally:
        sub.close(linger=0)
