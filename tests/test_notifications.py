"""Notifications (docs/protocol.md 7.4): the directory watcher behind watch_directory, and events
from stores to the DEALER socket of the client that advised, through the real daemon.

The watcher tests run the daemon's DirectoryWatcher on their own loop over real directories
and real inotify; the only stand-in is an observer that raises ENOSPC as a kernel out of
inotify watches would, as in tests/test_watcher.py.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyObserver

from mapid.client import Client
from mapid.constants import ObjectType
from mapid.daemon.config.file_watch import DirectoryWatcher
from mapid.errors import ErrorCode, MapiError

from conftest import DEFAULT_CONFIG, DaemonFactory, DaemonProc, standard_profile

# -- the directory watcher -----------------------------------------------------------------


async def until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def deliver(directory: Path, name: str) -> Path:
    """What an MTA does: write into tmp/, rename into the watched directory."""
    tmp = directory.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    (tmp / name).write_text("Subject: hi\n\nbody\n")
    os.rename(tmp / name, directory / name)
    return directory / name


def run(body: Callable[[DirectoryWatcher], Awaitable[None]], **kwargs: Any) -> DirectoryWatcher:
    watcher = DirectoryWatcher(**kwargs)

    async def main() -> None:
        try:
            await body(watcher)
        finally:
            watcher.stop_all()

    asyncio.run(main())
    return watcher


def test_one_watch_per_path_many_callbacks_coalesced(tmp_path: Path) -> None:
    new = tmp_path / "new"
    new.mkdir()
    calls: dict[str, list[set[Path]]] = {"a": [], "b": []}

    async def body(w: DirectoryWatcher) -> None:
        stop_a = w.watch(new, calls["a"].append)
        w.watch(new, calls["b"].append)
        assert w.paths() == [new]  # one watch for both
        for i in range(30):
            deliver(new, f"m{i}")
        assert await until(lambda: sum(len(c) for c in calls["a"]) and bool(calls["b"]))
        await asyncio.sleep(0.3)
        # 30 deliveries within far less than the window: one call each, with every path.
        assert len(calls["a"]) == 1 and len(calls["b"]) == 1
        assert calls["a"][0] >= {new / f"m{i}" for i in range(30)}
        stop_a()
        stop_a()  # twice is harmless
        deliver(new, "later")
        assert await until(lambda: len(calls["b"]) == 2)
        await asyncio.sleep(0.3)
        assert len(calls["a"]) == 1
        assert w.paths() == [new]

    run(body)


def test_the_observer_stops_with_the_last_watch(tmp_path: Path) -> None:
    async def body(w: DirectoryWatcher) -> None:
        stop = w.watch(tmp_path, lambda paths: None)
        assert w._observer is not None
        stop()
        assert w.paths() == [] and w._observer is None
        with pytest.raises(FileNotFoundError):
            w.watch(tmp_path / "missing", lambda paths: None)

    run(body, linger=0)


def test_a_watch_lingers_after_its_last_subscriber(tmp_path: Path) -> None:
    """A logoff and the next logon keep the OS watch and its observer (no emitter thread
    stopped and started again); a watch nobody takes back goes after the linger."""
    new = tmp_path / "new"
    new.mkdir()
    calls: list[set[Path]] = []

    async def body(w: DirectoryWatcher) -> None:
        stop = w.watch(new, lambda paths: None)
        observer = w._observer
        stop()
        assert w.paths() == [new] and w._observer is observer  # lingering
        stop = w.watch(new, calls.append)  # the next logon takes it back
        assert w._observer is observer
        deliver(new, "m1")
        assert await until(lambda: bool(calls))
        stop()
        await asyncio.sleep(0.6)
        assert w.paths() == [] and w._observer is None

    run(body, linger=0.3)


def test_a_directory_made_anew_while_its_watch_lingers_is_watched_again(tmp_path: Path) -> None:
    new = tmp_path / "new"
    new.mkdir()
    calls: list[set[Path]] = []

    async def body(w: DirectoryWatcher) -> None:
        w.watch(new, lambda paths: None)()
        new.rmdir()
        new.mkdir()  # another inode: the lingering inotify watch was on the old one
        w.watch(new, calls.append)
        deliver(new, "m1")
        assert await until(lambda: any(new / "m1" in c for c in calls))

    run(body, linger=30)


def test_a_failing_callback_is_logged_and_others_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    new = tmp_path / "new"
    new.mkdir()
    seen: list[set[Path]] = []

    def broken(paths: set[Path]) -> None:
        raise RuntimeError("provider bug")

    async def body(w: DirectoryWatcher) -> None:
        w.watch(new, broken)
        w.watch(new, seen.append)
        deliver(new, "one")
        assert await until(lambda: bool(seen))
        deliver(new, "two")
        assert await until(lambda: len(seen) == 2)

    with caplog.at_level(logging.ERROR, logger="mapid.file_watch"):
        run(body)
    assert "a callback failed" in caplog.text


class _OutOfWatches(InotifyObserver):
    """A kernel whose inotify watches run out from the `fail_from`-th watch on."""

    def __init__(self, fail_from: int) -> None:
        super().__init__()
        self.fail_from = fail_from
        self.scheduled = 0

    def schedule(self, *args: Any, **kwargs: Any) -> ObservedWatch:
        self.scheduled += 1
        if self.scheduled >= self.fail_from:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().schedule(*args, **kwargs)


def test_out_of_inotify_watches_falls_back_to_polling(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "new", tmp_path / "b" / "new"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    seen: dict[Path, list[set[Path]]] = {first: [], second: []}

    def factory() -> BaseObserver:
        return _OutOfWatches(fail_from=2)

    async def body(w: DirectoryWatcher) -> None:
        w.watch(first, seen[first].append)
        assert w.mode == "inotify" and w.warning is None
        w.watch(second, seen[second].append)
        assert w.mode == "polling"
        assert w.warning is not None and "max_user_watches" in w.warning
        deliver(first, "x")
        deliver(second, "y")
        assert await until(lambda: bool(seen[first]) and bool(seen[second]))
        assert first / "x" in seen[first][0] and second / "y" in seen[second][0]

    run(body, observer_factory=factory, poll_interval=0.1)


def test_switching_to_polling_keeps_the_watches(tmp_path: Path) -> None:
    new = tmp_path / "new"
    new.mkdir()
    seen: list[set[Path]] = []

    async def body(w: DirectoryWatcher) -> None:
        w.watch(new, seen.append)
        w.set_polling(True)  # mapid.toml's watch = "poll"
        assert w.mode == "polling"
        deliver(new, "polled")
        assert await until(lambda: bool(seen))
        assert new / "polled" in seen[0]
        w.set_polling(False)
        assert w.mode == "inotify"
        deliver(new, "watched")
        assert await until(lambda: len(seen) == 2)

    run(body, poll_interval=0.1)


# -- through the daemon ---------------------------------------------------------------------

NOTIFYING = '\n[services.notes]\nservice = "providers_for_tests:NotifyingStore"\n'


def logon(client: Client, profile: str = "alpha") -> bytes:
    return bytes(client.session_logon(profile, ["MAPI_NEW_SESSION"])["token"])


def store_entryid(client: Client, token: bytes, name: str) -> bytes:
    rows = client.session_msg_stores_table(token)["rows"]
    return bytes(next(r["PR_ENTRYID"] for r in rows if r["PR_DISPLAY_NAME"] == name))


def status_handle(client: Client, token: bytes, name: str) -> int:
    rows = client.session_status_table(token)["rows"]
    row = next(r for r in rows if r["PR_DISPLAY_NAME"] == name)
    return int(client.session_open_entry(token, row["PR_ENTRYID"])["handle"])


def test_provider_events_reach_the_advising_socket_only(make_daemon: DaemonFactory) -> None:
    proc = make_daemon(start=False)
    text = standard_profile(proc.root / "alpha") + NOTIFYING
    (proc.config_dir / "profiles" / "alpha.toml").write_text(text)
    proc.start()
    client, member = proc.client(), proc.client()
    logged = client.session_logon("alpha", ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"])
    token = bytes(logged["token"])
    joined = member.session_logon("alpha", [])
    assert joined["session"] == logged["session"]  # another member of the same session
    store = store_entryid(client, token, "notes")
    connection = client.session_advise(token, ["fnevObjectModified"], store)["connection"]
    assert connection > 0
    # The other member advises for other events only: it hears nothing of this one.
    member.session_advise(joined["token"], ["fnevNewMail"], store)
    status = status_handle(client, token, "notes")
    client.status_validate_state(token, status)
    note = client.recv_notification(timeout=5)
    assert note is not None
    assert note["event"] == "fnevObjectModified"
    assert note["connection"] == connection
    assert note["session"] == logged["session"]
    assert note["entryid"] == store
    assert note["object_type"] == ObjectType.MAPI_STORE
    assert "parent_entryid" in note
    assert client.recv_notification(timeout=0.3) is None  # exactly one
    assert member.recv_notification(timeout=0.3) is None
    client.session_unadvise(token, connection)
    client.status_validate_state(token, status)
    assert client.recv_notification(timeout=0.5) is None
    with pytest.raises(MapiError) as info:
        client.session_unadvise(token, connection)
    assert info.value.code == ErrorCode.MAPI_E_NOT_FOUND


# -- a real Maildir, changed through the daemon and on disk ---------------------------------

DROP = r"""
import os, sys, time
root, name = sys.argv[1], sys.argv[2]
tmp = os.path.join(root, "tmp", name)
with open(tmp, "wb") as f:
    f.write(b"From: Grace <grace@example.org>\nTo: ada@example.org\nSubject: dropped\n\nhi\n")
    f.flush()
    os.fsync(f.fileno())
os.rename(tmp, os.path.join(root, "new", name))
"""


def mta_delivers(maildir: Path, name: str) -> None:
    """Another process drops a message the way an MTA does: tmp/, then rename into new/."""
    subprocess.run([sys.executable, "-c", DROP, str(maildir), name], check=True, timeout=30)


def inotify_watches(pid: int, directory: Path) -> int:
    """How many inotify watches process `pid` holds on `directory` (from /proc fdinfo)."""
    inode = os.stat(directory).st_ino
    count = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("inotify wd:"):
                fields = dict(part.split(":", 1) for part in line.split()[1:] if ":" in part)
                if int(fields.get("ino", "0"), 16) == inode:
                    count += 1
    return count


class Notes:
    """The notifications one client receives, gathered until a condition holds."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen: list[dict[str, Any]] = []

    def until(self, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; got {[n['event'] for n in self.seen]}")
            note = self.client.recv_notification(timeout=left)
            if note is not None:
                self.seen.append(note)

    def quiet(self, seconds: float = 0.5) -> None:
        """Nothing more arrives for a while (no duplicates)."""
        extra = self.client.recv_notification(timeout=seconds)
        assert extra is None, f"unexpected notification {extra}"

    def of(self, event: str) -> list[dict[str, Any]]:
        return [n for n in self.seen if n["event"] == event]

    def take(self) -> list[dict[str, Any]]:
        seen, self.seen = self.seen, []
        return seen


def open_inbox(
    client: Client, token: bytes, write: bool = False
) -> tuple[int, dict[str, Any], bytes]:
    rows = client.session_msg_stores_table(token)["rows"]
    store = client.session_open_msg_store(
        token, rows[0]["PR_ENTRYID"], ["MDB_WRITE"] if write else []
    )
    subtree = client.container_open_entry(
        token, store["handle"], store["props"]["PR_IPM_SUBTREE_ENTRYID"]
    )
    rows = client.container_hierarchy_table(token, subtree["handle"])["rows"]
    inbox = next(r["PR_ENTRYID"] for r in rows if r["PR_DISPLAY_NAME"] == "Inbox")
    return int(store["handle"]), store["props"], bytes(inbox)


def test_mail_dropped_into_new_raises_new_mail_once(make_daemon: DaemonFactory) -> None:
    # No linger: the store logs off with the last session, and its watch with it.
    daemon = make_daemon(config=DEFAULT_CONFIG + "shared_linger_s = 0\n")
    client, second = daemon.client(), daemon.client()
    token = logon(client)
    other = logon(second)
    _store, _props, inbox = open_inbox(client, token)
    connection = client.session_advise(token, ["fnevNewMail"], inbox)["connection"]
    second.session_advise(other, ["fnevNewMail"], open_inbox(second, other)[1]["PR_ENTRYID"])
    maildir = daemon.root / "alpha" / "Mail"
    # Watched, not polled: the daemon holds one inotify watch on new/ for both sessions.
    assert inotify_watches(daemon.proc.pid, maildir / "new") == 1  # type: ignore[union-attr]
    notes, others = Notes(client), Notes(second)
    mta_delivers(maildir, "1700000000.M1P1.host")
    notes.until(lambda seen: bool(seen))
    (note,) = notes.of("fnevNewMail")
    assert note["connection"] == connection
    assert note["parent_entryid"] == inbox
    assert note["message_class"] == "IPM.Note"
    assert isinstance(note["message_flags"], int)
    opened = client.session_open_entry(token, note["entryid"])
    assert opened["props"]["PR_SUBJECT"] == "dropped"
    notes.quiet()
    others.until(lambda seen: bool(seen))  # the store advise of another session hears it too
    assert [n["event"] for n in others.seen] == ["fnevNewMail"]
    others.quiet()
    client.session_unadvise(token, connection)
    mta_delivers(maildir, "1700000001.M2P1.host")
    others.until(lambda seen: len(seen) == 2)
    notes.quiet()
    # The watch goes with the last provider that used it.
    client.session_logoff(token)
    assert inotify_watches(daemon.proc.pid, maildir / "new") == 1  # type: ignore[union-attr]
    second.session_logoff(other)
    deadline = time.monotonic() + 10
    while inotify_watches(daemon.proc.pid, maildir / "new"):  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the inotify watch outlived every session"
        time.sleep(0.05)


def test_object_events_through_the_daemon(daemon: DaemonProc) -> None:
    client = daemon.client()
    token = logon(client)
    store, props, inbox = open_inbox(client, token, write=True)
    events = [
        "fnevObjectCreated",
        "fnevObjectDeleted",
        "fnevObjectModified",
        "fnevObjectMoved",
        "fnevObjectCopied",
    ]
    client.session_advise(token, events, props["PR_ENTRYID"])
    notes = Notes(client)
    folder = client.container_open_entry(token, store, inbox)["handle"]
    mime = b"From: a@example.org\nTo: b@example.org\nSubject: made\n\nbody\n"
    made = client.folder_import_message(token, folder, mime)["entryid"]
    notes.until(lambda seen: bool(seen))
    (created,) = notes.take()
    assert created["event"] == "fnevObjectCreated"
    assert created["entryid"] == made and created["parent_entryid"] == inbox
    assert created["object_type"] == ObjectType.MAPI_MESSAGE
    notes.quiet()
    message = client.container_open_entry(token, folder, made)["handle"]
    client.object_set_props(token, message, {"PR_SUBJECT": "changed"})
    client.object_save_changes(token, message)
    notes.until(lambda seen: bool(seen))
    assert [n["event"] for n in notes.take()] == ["fnevObjectModified"]
    notes.quiet()
    drafts = props["PR_IPM_DRAFTS_ENTRYID"]
    (copy,) = client.folder_copy_messages(token, folder, [made], drafts)["entryids"]
    notes.until(lambda seen: bool(seen))
    (copied,) = notes.take()
    assert copied["event"] == "fnevObjectCopied"
    assert copied["entryid"] == copy and copied["parent_entryid"] == drafts
    assert copied["old_entryid"] == made and copied["old_parent_entryid"] == inbox
    notes.quiet()
    client.folder_delete_messages(token, folder, [made])  # to Deleted Items: a move
    notes.until(lambda seen: bool(seen))
    (moved,) = notes.take()
    assert moved["event"] == "fnevObjectMoved"
    assert moved["parent_entryid"] == props["PR_IPM_WASTEBASKET_ENTRYID"]
    assert moved["old_entryid"] == made and moved["old_parent_entryid"] == inbox
    trash = client.container_open_entry(token, store, props["PR_IPM_WASTEBASKET_ENTRYID"])
    client.folder_delete_messages(token, trash["handle"], [moved["entryid"]])
    notes.until(lambda seen: bool(seen))
    (deleted,) = notes.take()
    assert deleted["event"] == "fnevObjectDeleted" and deleted["entryid"] == moved["entryid"]
    notes.quiet()


def test_object_events_for_changes_on_disk(daemon: DaemonProc) -> None:
    client = daemon.client()
    token = logon(client)
    store, _props, inbox = open_inbox(client, token, write=True)
    folder = client.container_open_entry(token, store, inbox)["handle"]
    mime = b"From: a@example.org\nTo: b@example.org\nSubject: on disk\n\nbody\n"
    made = client.folder_import_message(token, folder, mime)["entryid"]
    events = ["fnevObjectCreated", "fnevObjectDeleted", "fnevObjectModified"]
    client.session_advise(token, events, inbox)
    notes = Notes(client)
    cur = daemon.root / "alpha" / "Mail" / "cur"
    (path,) = [p for p in cur.iterdir() if b"on disk" in p.read_bytes()]
    # mutt marks it flagged: the flags in the name change.
    flagged = path.with_name(path.name.split(":2,")[0] + ":2,FS")
    os.rename(path, flagged)
    notes.until(lambda seen: bool(seen))
    (modified,) = notes.take()
    assert modified["event"] == "fnevObjectModified"
    assert client.session_compare_entryids(token, modified["entryid"], made)["equal"]
    assert modified["parent_entryid"] == inbox
    notes.quiet()
    flagged.unlink()
    notes.until(lambda seen: bool(seen))
    (deleted,) = notes.take()
    assert deleted["event"] == "fnevObjectDeleted"
    assert client.session_compare_entryids(token, deleted["entryid"], made)["equal"]
    notes.quiet()
