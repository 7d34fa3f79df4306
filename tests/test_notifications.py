"""Notifications (PROTOCOL.md 7.4): the directory watcher behind watch_directory, and events
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
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyObserver

from mapid.client import Client
from mapid.constants import ObjectType
from mapid.daemon.file_watch import DirectoryWatcher
from mapid.errors import ErrorCode, MapiError

from conftest import DaemonFactory, standard_profile

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

    run(body)


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
