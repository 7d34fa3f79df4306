"""The notify protocol (sd_notify(3), docs/design.md 10) against a real datagram socket.

The real daemon runs with NOTIFY_SOCKET pointing at a socket the test binds, as systemd's
would be; the test reads what it sends: READY=1 once the sockets are bound and the autologon
profile is logged on, RELOADING=1 with MONOTONIC_USEC in the same datagram before every
reload (daemon.reload, SIGHUP, the watcher) and READY=1 after, STOPPING=1 on SIGTERM, and
WATCHDOG=1 from the event loop at half of WATCHDOG_USEC.
"""

from __future__ import annotations

import contextlib
import operator
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mapid.daemon.system.sd_notify import Notifier, monotonic_usec

from conftest import DaemonFactory, standard_profile

Datagram = dict[str, str]


class NotifyListener:
    """The service manager's end: a bound AF_UNIX datagram socket."""

    def __init__(self, address: str, sock: socket.socket) -> None:
        self.address = address
        self.sock = sock
        self.received: list[Datagram] = []
        self.arrivals: list[tuple[float, Datagram]] = []

    def next(self, match: Callable[[Datagram], bool], timeout: float = 15.0) -> Datagram:
        """The next datagram that `match`es (every datagram is kept in `received`)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.received.append(fields)
            self.arrivals.append((time.monotonic(), fields))
            if match(fields):
                return fields
        raise AssertionError(f"no matching datagram in {timeout} s; got {self.received}")


def has(key: str) -> Callable[[Datagram], bool]:
    return lambda fields: key in fields


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    folder = Path(tempfile.mkdtemp(prefix="mapid-n-", dir="/tmp"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = folder / "notify"
    sock.bind(str(path))
    yield NotifyListener(str(path), sock)
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


def autologon_profiles(root: Path) -> dict[str, str]:
    return {"alpha": standard_profile(root / "alpha", autologon=True)}


def test_ready_after_the_autologon_then_stopping_on_sigterm(
    make_daemon: DaemonFactory, listener: NotifyListener, tmp_path: Path
) -> None:
    proc = make_daemon(
        profiles=autologon_profiles(tmp_path), env={"NOTIFY_SOCKET": listener.address}
    )
    ready = listener.next(has("READY"))
    assert ready["READY"] == "1"
    # READY comes with the autologon session up (its STATUS counts it) and the
    # connection file written; nothing before it claimed readiness.
    assert ready["STATUS"].startswith("1 session,"), ready
    assert (proc.runtime / "mapid.json").exists()
    before = listener.received[:-1]
    assert before and all("READY" not in d for d in before)
    assert any(d.get("STATUS", "").startswith("starting") for d in before)

    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    stopping = listener.next(has("STOPPING"))
    assert stopping == {"STOPPING": "1", "STATUS": "stopping"}
    assert proc.proc.wait(10) == 0


@pytest.mark.parametrize("trigger", ["request", "sighup"])
def test_every_reload_is_reloading_with_monotonic_usec_then_ready(
    make_daemon: DaemonFactory, listener: NotifyListener, trigger: str
) -> None:
    proc = make_daemon(env={"NOTIFY_SOCKET": listener.address})
    listener.next(has("READY"))
    client = proc.client()
    client.daemon_reload(check=True)  # validates only: no reload for systemd to wait on
    start = monotonic_usec()
    if trigger == "request":
        client.daemon_reload()
    else:
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
    reloading = listener.next(has("RELOADING"))
    end = monotonic_usec()
    # One datagram: RELOADING=1 and MONOTONIC_USEC together, on the clock systemd reads.
    assert reloading["RELOADING"] == "1"
    assert start <= int(reloading["MONOTONIC_USEC"]) <= end
    assert reloading["STATUS"] == f"reloading ({trigger})"
    ready = listener.next(has("READY"))
    assert "last reload" in ready["STATUS"] and ready["STATUS"].endswith(" ok"), ready
    assert sum("RELOADING" in d for d in listener.received) == 1


def test_a_watcher_reload_is_announced_too(
    make_daemon: DaemonFactory, listener: NotifyListener, tmp_path: Path
) -> None:
    proc = make_daemon(
        config='default_profile = "alpha"\n', env={"NOTIFY_SOCKET": listener.address}
    )
    listener.next(has("READY"))
    (proc.config_dir / "profiles" / "gamma.toml").write_text(standard_profile(tmp_path / "g"))
    reloading = listener.next(has("RELOADING"))
    assert reloading["STATUS"] == "reloading (watcher)"
    assert "MONOTONIC_USEC" in reloading
    assert listener.next(has("READY"))["READY"] == "1"


def test_a_reload_with_errors_says_so_in_status(
    make_daemon: DaemonFactory, listener: NotifyListener
) -> None:
    proc = make_daemon(env={"NOTIFY_SOCKET": listener.address})
    listener.next(has("READY"))
    (proc.config_dir / "profiles" / "broken.toml").write_text("autologon = [\n")
    proc.client().daemon_reload()
    listener.next(has("RELOADING"))
    assert listener.next(has("READY"))["STATUS"].endswith("1 error")


BLOCKING_SERVICE = """
import time
from mapid.providers.base import MessageService, StoreProvider

class BlockingStore(StoreProvider):
    name = "store"

    async def logon(self) -> None:
        time.sleep(1.5)  # wrong on purpose: it holds the event loop

class Blocking(MessageService):
    name = "blocking"
    display_name = "blocks the event loop while logging on"
    providers = (BlockingStore,)
"""


def test_watchdog_pings_at_half_the_interval_only_while_the_loop_runs(
    make_daemon: DaemonFactory, listener: NotifyListener, tmp_path: Path
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "blocking_service.py").write_text(BLOCKING_SERVICE)
    tests_dir = Path(__file__).resolve().parent
    proc = make_daemon(
        profiles={
            "alpha": standard_profile(tmp_path / "alpha"),
            "stuck": '[services.s]\nservice = "blocking_service:Blocking"\n',
        },
        env={
            "NOTIFY_SOCKET": listener.address,
            "WATCHDOG_USEC": "400000",
            "PYTHONPATH": os.pathsep.join([str(modules), str(tests_dir)]),
        },
    )
    for _ in range(3):
        assert listener.next(has("WATCHDOG")) == {"WATCHDOG": "1"}
    client = proc.client()
    outcome: list[dict[str, object]] = []
    logon = threading.Thread(
        target=lambda: outcome.append(client.session_logon("stuck", ["MAPI_NEW_SESSION"]))
    )
    mark = len(listener.arrivals)
    logon.start()
    while logon.is_alive():
        listener.next(has("WATCHDOG"))
    listener.next(has("WATCHDOG"))
    logon.join()
    assert outcome and outcome[0]["token"]
    pings = [t for t, d in listener.arrivals if "WATCHDOG" in d]
    gaps = list(map(operator.sub, pings[1:], pings))
    during = [t for t, d in listener.arrivals[mark:] if "WATCHDOG" in d]
    assert len(during) >= 2
    # At 0.2 s a ping while the loop runs; none while the store held it for 1.5 s.
    assert min(gaps) < 1.0 and max(gaps) >= 1.2, gaps


def test_no_notify_socket_sends_nothing_and_children_inherit_nothing() -> None:
    environ = {"PATH": "/usr/bin"}
    notifier = Notifier(environ)
    assert not notifier.enabled
    assert notifier.ready("x") is False and notifier.watchdog() is False
    assert notifier.watchdog_s is None

    environ = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}
    notifier = Notifier(environ)
    assert environ == {}  # a password_command run by the daemon sees none of them
    assert notifier.watchdog_s is None  # meant for pid 1, not for us
    own = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": ""}
    own["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier(own).watchdog_s == 20.0


def test_an_abstract_notify_socket() -> None:
    name = f"mapid-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.reloading("reloading (test)")
        fields = dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())
        notifier.close()
    assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0


def test_mapictl_reload_returns_when_the_reload_is_done(
    make_daemon: DaemonFactory, listener: NotifyListener, tmp_path: Path
) -> None:
    """ExecReload=mapictl reload: systemd 252 takes the reload as done when it exits."""
    proc = make_daemon(env={"NOTIFY_SOCKET": listener.address})
    listener.next(has("READY"))
    (proc.config_dir / "profiles" / "gamma.toml").write_text(standard_profile(tmp_path / "g"))
    done = subprocess.run(
        [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(proc.runtime), "reload"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # By the time it exits, the daemon has applied the change and said READY=1: both
    # datagrams are already queued on the socket, nothing is waited for.
    listener.sock.setblocking(False)
    queued: list[str] = []
    with contextlib.suppress(BlockingIOError):
        while True:
            queued.append(listener.sock.recv(65536).decode())
    kinds = [d.split("=", 1)[0] for d in queued if not d.startswith("STATUS=")]
    assert kinds == ["RELOADING", "READY"], queued
    names = {row["PR_DISPLAY_NAME"] for row in proc.client().profiles_table()["rows"]}
    assert "gamma" in names


def test_status_follows_the_sessions(make_daemon: DaemonFactory, listener: NotifyListener) -> None:
    proc = make_daemon(env={"NOTIFY_SOCKET": listener.address})
    assert listener.next(has("READY"))["STATUS"] == "0 sessions, config gen 1"
    client = proc.client()
    logon = client.session_logon("alpha", ["MAPI_NEW_SESSION"])
    assert listener.next(lambda d: d.get("STATUS", "").startswith("1 session,"))
    client.session_logoff(logon["token"])
    assert listener.next(lambda d: d.get("STATUS", "").startswith("0 sessions,"))
