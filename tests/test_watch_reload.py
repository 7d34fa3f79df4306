"""The daemon follows hand edits of its files through the watcher (docs/design.md 8)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from mapid.client import Client
from mapid.paths import read_connection_file
from mapid.wire import envelope

from conftest import DaemonFactory, DaemonProc

NEW = ["MAPI_NEW_SESSION"]


@pytest.fixture
def daemon(make_daemon: DaemonFactory) -> DaemonProc:
    """The standard daemon, watching its files (the default in conftest does not)."""
    return make_daemon(config='default_profile = "alpha"\nwatch = "auto"\n')


@pytest.fixture
def client(daemon: DaemonProc) -> Client:
    return daemon.client()


class Events:
    """The `daemon` topic of a live daemon, collected by a thread."""

    def __init__(self, daemon: DaemonProc) -> None:
        info = read_connection_file(daemon.runtime)
        assert info is not None
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt_string(zmq.SUBSCRIBE, "daemon")
        self.sock.setsockopt_string(zmq.SUBSCRIBE, "hb")
        self.sock.connect(info.events)
        assert self.sock.poll(3000)  # greeted by a heartbeat
        self.sock.recv_multipart()

    def until(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sock.poll(max(1, int(1000 * (deadline - time.monotonic())))):
                break
            topic, payload = envelope.decode_event_frames(self.sock.recv_multipart())
            if topic == "daemon" and check(payload):
                return payload
        raise AssertionError("no such event in time")

    def quiet(self, seconds: float) -> list[dict[str, Any]]:
        seen = []
        deadline = time.monotonic() + seconds
        while self.sock.poll(max(1, int(1000 * (deadline - time.monotonic())))):
            topic, payload = envelope.decode_event_frames(self.sock.recv_multipart())
            if topic == "daemon":
                seen.append(payload)
            if time.monotonic() >= deadline:
                break
        return seen

    def close(self) -> None:
        self.sock.close()


def watcher_reload(payload: dict[str, Any]) -> bool:
    return payload.get("trigger") == "watcher"


def profile(daemon: DaemonProc, name: str) -> Path:
    return daemon.config_dir / "profiles" / f"{name}.toml"


def services_of(client: Client, name: str) -> list[str]:
    return [r["PR_DISPLAY_NAME"] for r in client.services_table(profile=name)["rows"]]


def test_editor_and_vim_saves_reload_once(daemon: DaemonProc, client: Client) -> None:
    events = Events(daemon)
    try:
        path = profile(daemon, "beta")
        text = path.read_text()
        # An editor's save: a temporary file renamed onto the profile.
        tmp = path.with_name(".beta.toml.swp")
        tmp.write_text(text.replace("[services.mail]", "[services.post]"))
        os.replace(tmp, path)
        event = events.until(watcher_reload)
        assert event["changed"] == ["beta"] and event["type"] == "reloaded"
        assert services_of(client, "beta") == ["contacts", "post"]
        # vim: the original renamed to a backup, a new file written, the backup deleted.
        backup = path.with_name("beta.toml~")
        os.rename(path, backup)
        path.write_text(text)
        backup.unlink()
        event = events.until(watcher_reload)
        assert event["changed"] == ["beta"]
        assert services_of(client, "beta") == ["contacts", "mail"]
        assert events.quiet(1.0) == []  # one reload per save, no echo
        # A touch changes nothing: no event.
        os.utime(path)
        assert events.quiet(1.0) == []
    finally:
        events.close()


def test_deleted_recreated_broken_then_good(daemon: DaemonProc, client: Client) -> None:
    events = Events(daemon)
    try:
        path = profile(daemon, "beta")
        text = path.read_text()
        logon = client.session_logon("beta", NEW)
        path.unlink()
        event = events.until(watcher_reload)
        assert event["removed"] == ["beta"]
        info = {s["session"]: s for s in client.daemon_sessions()["sessions"]}
        assert info[logon["session"]]["state"] == "orphaned"  # it keeps running
        assert client.session_status_table(logon["token"])["total"] == 5
        path.write_text("autologon = false\nfoo = tru\n")  # broken: absent, says where
        event = events.until(lambda p: p.get("type") == "reload_failed")
        assert event["errors"][0]["file"] == str(path) and event["errors"][0]["line"] == 2
        assert "beta" not in [r["PR_DISPLAY_NAME"] for r in client.profiles_table()["rows"]]
        path.write_text(text)
        event = events.until(watcher_reload)
        assert event["added"] == ["beta"] and event["ok"] is True
        status = client.daemon_hello()
        assert status["config_gen"] == event["gen"]
    finally:
        events.close()


def test_a_hundred_rapid_writes_end_in_the_last(daemon: DaemonProc, client: Client) -> None:
    events = Events(daemon)
    try:
        path = profile(daemon, "beta")
        base = path.read_text()
        for i in range(100):
            path.write_text(base.replace("[services.mail]", f"[services.mail{i}]"))
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if services_of(client, "beta") == ["contacts", "mail99"]:
                break
            time.sleep(0.1)
        assert services_of(client, "beta") == ["contacts", "mail99"]
        reloads = events.quiet(1.5)
        assert len(reloads) <= 8  # debounced, though every write was seen in the end
    finally:
        events.close()


def test_reload_during_logons(daemon: DaemonProc) -> None:
    path = profile(daemon, "alpha")
    text = path.read_text()
    errors: list[BaseException] = []
    tokens: list[bytes] = []

    def log_on() -> None:
        with Client(daemon.runtime, timeout=20) as own:
            for _ in range(30):
                try:
                    tokens.append(own.session_logon("alpha", NEW, lease_s=0)["token"])
                except BaseException as exc:  # collected and checked below
                    errors.append(exc)

    workers = [threading.Thread(target=log_on) for _ in range(3)]
    for worker in workers:
        worker.start()
    client = daemon.client()
    for i in range(10):
        path.write_text(text + f"\n# edit {i}\n")
        client.daemon_reload()
    for worker in workers:
        worker.join(60)
    assert errors == []
    assert len(tokens) == 90
    for token in tokens[::9]:
        assert client.session_status_table(token)["total"] == 5


def test_polling_when_asked(make_daemon: DaemonFactory) -> None:
    proc = make_daemon(config='default_profile = "alpha"\nwatch = "poll"\n')
    client = proc.client()
    assert client.daemon_snapshot()["config"]["watcher"] == "polling"
    events = Events(proc)
    try:
        path = profile(proc, "beta")
        path.write_text(path.read_text().replace("[services.mail]", "[services.post]"))
        event = events.until(watcher_reload)
        assert event["changed"] == ["beta"]
    finally:
        events.close()
    code = subprocess.run(
        [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(proc.runtime), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "watching files: polling" in " ".join(code.stdout.split())


def test_watch_off(make_daemon: DaemonFactory) -> None:
    proc = make_daemon(config='default_profile = "alpha"\nwatch = "off"\n')
    assert proc.client().daemon_snapshot()["config"]["watcher"] == "off"


def test_an_in_place_save_never_reaches_a_live_session_as_an_empty_profile(
    daemon: DaemonProc, client: Client
) -> None:
    """Issue 19: truncate, then write back within a second (as `cat >` or an editor's
    in-place save does): the watcher waits for the file to settle, finds the same content,
    and applies nothing. An empty file that stays empty is applied, later."""
    token = client.session_logon("alpha", NEW)["token"]
    rows_before = len(client.session_status_table(token)["rows"])
    gen = client.daemon_hello()["config_gen"]
    events = Events(daemon)
    try:
        path = daemon.config_dir / "profiles" / "alpha.toml"
        text = path.read_text()
        with open(path, "w") as file:  # truncates: the watcher sees an empty file
            file.flush()
            os.fsync(file.fileno())
            time.sleep(0.8)
            file.write(text)
        assert [p for p in events.quiet(3.0) if watcher_reload(p)] == []
        assert client.daemon_hello()["config_gen"] == gen
        assert len(client.session_status_table(token)["rows"]) == rows_before
        beta = daemon.config_dir / "profiles" / "beta.toml"
        beta.write_text("")  # really emptied: applied once it has stayed empty
        event = events.until(watcher_reload, timeout=6.0)
        assert event["changed"] == ["beta"]
    finally:
        events.close()
