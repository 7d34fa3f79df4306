"""Which dot directories of a Maildir++ root are folders, through the real daemon.

Trees are laid out here the way other programs leave them: Dovecot's CREATE a.b makes only
`.a.b` (its parent `a` has no directory), notmuch keeps its database in `.notmuch/`. A
missing parent is a folder holding its children and no messages, until a message put
there makes its directory; a dot directory without cur/ and new/ that is nobody's parent
is not a folder at all. (tests/test_dovecot.py has the same with a real Dovecot.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mapid.client import Client
from mapid.entryid import make, uid_of
from mapid.errors import ErrorCode, MapiError

from conftest import DaemonFactory, DaemonProc, standard_profile, wait_until

MESSAGE = b"From: Grace <grace@example.org>\nTo: ada@example.org\nSubject: %s\n\nHello.\n"
FOLDER_COLUMNS = [
    "PR_ENTRYID",
    "PR_DISPLAY_NAME",
    "PR_SUBFOLDERS",
    "PR_CONTENT_COUNT",
    "PR_PARENT_ENTRYID",
]


def dovecot_folder(root: Path, name: str, *subjects: str) -> Path:
    """`.<name>` as Dovecot's CREATE leaves it (no parents made), with messages in cur/."""
    path = root / f".{name}"
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    (path / "maildirfolder").touch()
    for i, subject in enumerate(subjects):
        (path / "cur" / f"1704099600.M{i}P1Q1.mx:2,S").write_bytes(MESSAGE % subject.encode())
    return path


class Store:
    """One logon with the default store open for writing; folders walked by name."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.token: bytes = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
        rows = client.session_msg_stores_table(self.token)["rows"]
        row = next(r for r in rows if r.get("PR_DEFAULT_STORE"))
        store = client.session_open_msg_store(self.token, row["PR_ENTRYID"], ["MDB_WRITE"])
        self.props: dict[str, Any] = store["props"]
        self.subtree: int = client.session_open_entry(
            self.token, self.props["PR_IPM_SUBTREE_ENTRYID"], ["MAPI_MODIFY"]
        )["handle"]

    def children(self, handle: int) -> dict[str, dict[str, Any]]:
        rows = self.client.container_hierarchy_table(
            self.token, handle, {"columns": FOLDER_COLUMNS}
        )["rows"]
        return {r["PR_DISPLAY_NAME"]: r for r in rows}

    def open(self, parent: int, name: str) -> int:
        kids = self.children(parent)
        assert name in kids, f"no folder {name!r} among {sorted(kids)}"
        handle: int = self.client.container_open_entry(
            self.token, parent, kids[name]["PR_ENTRYID"]
        )["handle"]
        return handle

    def folder(self, *path: str) -> int:
        handle = self.subtree
        for name in path:
            handle = self.open(handle, name)
        return handle

    def subjects(self, handle: int) -> list[str]:
        rows = self.client.container_contents_table(
            self.token, handle, {"columns": ["PR_SUBJECT"]}
        )["rows"]
        return sorted(str(r.get("PR_SUBJECT")) for r in rows)

    def folder_entryid(self, name: str) -> bytes:
        """The entry ID a folder of that Maildir++ name would have (see maildir/entryids.py)."""
        uid = uid_of(self.props["PR_ENTRYID"])
        return make(uid, b"\x01F" + name.encode())


def mail_daemon(make_daemon: DaemonFactory, tmp_path: Path) -> tuple[DaemonProc, Path]:
    """A daemon whose store is the Maildir it returns (made now: the test adds to it)."""
    base = tmp_path / "alpha"
    root = base / "Mail"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    return make_daemon(profiles={"alpha": standard_profile(base)}), root


def test_a_missing_parent_is_a_folder_that_holds_its_children(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    proc, root = mail_daemon(make_daemon, tmp_path)
    dovecot_folder(root, "Work.Projects", "Apollo")
    dovecot_folder(root, "Lists.python.asyncio", "Tasks")
    store = Store(proc.client())

    top = store.children(store.subtree)
    assert "Projects" not in top and "asyncio" not in top and "python" not in top
    work, lists = top["Work"], top["Lists"]
    subtree_id = store.props["PR_IPM_SUBTREE_ENTRYID"]
    for row in (work, lists):
        assert row["PR_SUBFOLDERS"] is True and row["PR_CONTENT_COUNT"] == 0
        assert row["PR_PARENT_ENTRYID"] == subtree_id

    handle = store.folder("Work")
    assert store.subjects(handle) == []  # its contents table opens, empty
    props = store.client.object_get_props(
        store.token, handle, ["PR_DISPLAY_NAME", "PR_CONTENT_COUNT", "PR_SUBFOLDERS"]
    )["props"]
    assert props == {"PR_DISPLAY_NAME": "Work", "PR_CONTENT_COUNT": 0, "PR_SUBFOLDERS": True}
    projects = store.children(handle)["Projects"]
    assert projects["PR_PARENT_ENTRYID"] == work["PR_ENTRYID"]
    assert projects["PR_CONTENT_COUNT"] == 1
    assert store.subjects(store.folder("Work", "Projects")) == ["Apollo"]
    assert store.subjects(store.folder("Lists", "python", "asyncio")) == ["Tasks"]
    assert set(store.children(store.folder("Lists"))) == {"python"}

    # session.open_entry by entry ID, as a client that kept it does.
    opened = store.client.session_open_entry(store.token, work["PR_ENTRYID"])
    assert opened["props"]["PR_DISPLAY_NAME"] == "Work"
    assert not (root / ".Work").exists()  # looking changed nothing on disk

    # mapictl walks the same tree.
    cli = [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(proc.runtime)]
    listed = subprocess.run(
        [*cli, "--json", "ls", "Work/Projects"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert [m["subject"] for m in data["messages"]] == ["Apollo"]


def test_a_message_put_into_a_missing_parent_makes_its_directory_first(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    proc, root = mail_daemon(make_daemon, tmp_path)
    dovecot_folder(root, "Lists.python.asyncio", "Tasks")
    dovecot_folder(root, "Work.Projects", "Apollo")
    store = Store(proc.client())
    client, token = store.client, store.token

    python = store.folder("Lists", "python")
    draft = client.folder_create_message(token, python)["handle"]
    assert not (root / ".Lists.python").exists()  # nothing on disk before the save
    client.object_set_props(token, draft, {"PR_SUBJECT": "Drafted in python"})
    client.object_save_changes(token, draft)
    for part in ("cur", "new", "tmp", "maildirfolder"):
        assert (root / ".Lists.python" / part).exists(), part
    assert not (root / ".Lists").exists()  # its own parent stays as it was
    assert store.subjects(python) == ["Drafted in python"]
    assert store.subjects(store.folder("Lists", "python")) == ["Drafted in python"]
    assert set(store.children(store.folder("Lists", "python"))) == {"asyncio"}

    work = store.folder("Work")
    client.folder_import_message(token, work, MESSAGE % b"Imported into Work")
    assert (root / ".Work" / "maildirfolder").exists() and (root / ".Work" / "tmp").is_dir()
    assert store.subjects(work) == ["Imported into Work"]
    row = store.children(store.subtree)["Work"]
    assert row["PR_CONTENT_COUNT"] == 1 and row["PR_SUBFOLDERS"] is True

    # A move into a missing parent makes it the same way.
    dovecot_folder(root, "Archive.2024")
    projects = store.folder("Work", "Projects")
    rows = client.container_contents_table(token, projects, {"columns": ["PR_ENTRYID"]})["rows"]
    archive = store.children(store.subtree)["Archive"]["PR_ENTRYID"]
    client.folder_copy_messages(token, projects, [rows[0]["PR_ENTRYID"]], archive, move=True)
    assert (root / ".Archive" / "cur").is_dir()
    assert store.subjects(store.folder("Archive")) == ["Apollo"]
    assert store.subjects(store.folder("Work", "Projects")) == []


def test_a_dot_directory_without_cur_and_new_is_no_folder(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """notmuch's `.notmuch/` (its Xapian database) is not a folder, whenever it appears."""
    proc, root = mail_daemon(make_daemon, tmp_path)
    xapian = root / ".notmuch" / "xapian"
    xapian.mkdir(parents=True)
    (xapian / "iamglass").write_bytes(b"\0" * 64)
    (xapian / "postlist.glass").write_bytes(b"\0" * 64)
    store = Store(proc.client())
    client, token = store.client, store.token

    names = set(store.children(store.subtree))
    assert names == {"Inbox", "Outbox", "Sent Items", "Deleted Items", "Drafts"}
    with pytest.raises(MapiError) as caught:
        client.session_open_entry(token, store.folder_entryid("notmuch"))
    assert caught.value.code == ErrorCode.MAPI_E_NOT_FOUND

    # Made while a store advise listens: a real folder is heard, a cache directory is not.
    client.session_advise(token, ["fnevObjectCreated"], store.props["PR_ENTRYID"])
    (root / ".cache" / "headers").mkdir(parents=True)
    dovecot_folder(root, "Later")
    note = client.recv_notification(timeout=10)
    assert note is not None and note["event"] == "fnevObjectCreated", note
    assert note["entryid"] == store.folder_entryid("Later")
    assert client.recv_notification(timeout=1.0) is None
    wait_until(lambda: True if "Later" in store.children(store.subtree) else None, "the new folder")
    assert "cache" not in store.children(store.subtree)
    assert not (xapian.parent / "cur").exists()  # mapid wrote nothing into notmuch's data
