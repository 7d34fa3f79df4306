"""A graceful stop (SIGTERM, as systemd sends it) with sessions open and mail queued.

Nothing is lost: the daemon exits 0 well within the unit's TimeoutStopSec, the queued
message stays in the Outbox on disk, and the next start delivers it. The same holds when
SIGTERM lands in the middle of an SMTP transaction that the server stalls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from mapid.paths import read_connection_file
from mapid.wire import envelope

from conftest import DaemonFactory, DaemonProc, standard_profile
from smtp_server import SmtpServer, smtp_section

STOP_TIMEOUT = 15.0
"""TimeoutStopSec of the shipped units; docs/design.md 10 asks for 5 s, which the test checks."""


def mapictl(proc: DaemonProc, *args: str) -> Any:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mapid.cli.app",
            "--runtime-dir",
            str(proc.runtime),
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr, proc.log()[-3000:])
    return json.loads(done.stdout)


def outbox_files(root: Path) -> list[Path]:
    """The messages in the Maildir's Outbox, read from disk (no daemon needed)."""
    found: list[Path] = []
    for folder in (root / "Mail").glob("*Outbox*"):
        for sub in ("new", "cur"):
            found += sorted((folder / sub).glob("*"))
    return found


def wait_until(check: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


def subscribe(proc: DaemonProc) -> zmq.Socket:  # type: ignore[type-arg]
    info = read_connection_file(proc.runtime)
    assert info is not None
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt_string(zmq.SUBSCRIBE, "")
    sub.connect(info.events)
    assert sub.poll(3000)  # the greeting heartbeat
    return sub


def events_until_closed(sub: zmq.Socket, timeout: float) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    kinds: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while sub.poll(max(1, int(1000 * (deadline - time.monotonic())))):
        topic, payload = envelope.decode_event_frames(sub.recv_multipart())
        if topic != "hb":
            kinds.append((topic, payload["type"]))
        if time.monotonic() > deadline:
            break
    return kinds


def sigterm(proc: DaemonProc) -> tuple[int, float]:
    assert proc.proc is not None
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    code = proc.proc.wait(STOP_TIMEOUT)
    return code, time.monotonic() - started


def test_sigterm_with_sessions_open_and_mail_queued_loses_nothing(
    make_daemon: DaemonFactory, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    root = tmp_path / "alpha"
    profile = standard_profile(root, autologon=True) + smtp_section(smtp_server)
    proc = make_daemon(profiles={"alpha": profile})
    smtp_server.stop()  # the mail server is down: the message stays queued
    client = proc.client()
    own = client.session_logon("alpha", ["MAPI_NEW_SESSION"])  # a client's session too
    queued = mapictl(proc, "send", "--to", "grace@example.org", "-s", "Kept", "--body", "x")
    assert queued["entryid"]
    wait_until(lambda: mapictl(proc, "ls", "Outbox")["total"] == 1, "message in the Outbox")
    assert len(outbox_files(root)) == 1
    sub = subscribe(proc)

    code, took = sigterm(proc)
    assert code == 0, proc.log()[-3000:]
    assert took < 5.0, f"stopped in {took:.1f} s"
    kinds = events_until_closed(sub, 1.0)
    sub.close()
    assert kinds[0] == ("daemon", "stopping"), kinds
    assert (f"session.{own['session']}", "logoff") in kinds
    assert sum(kind == "logoff" for topic, kind in kinds if topic.startswith("session.")) == 2
    assert not (proc.runtime / "mapid.json").exists()
    assert len(outbox_files(root)) == 1, "the queued message left the Outbox at stop"
    assert smtp_server.messages == []
    log = proc.log()
    assert "stopped" in log and "Traceback" not in log

    smtp_server.start()
    proc.start()  # the autologon session's spooler finds the queue on disk
    [got] = smtp_server.wait_for(1, timeout=20)
    assert b"Subject: Kept" in got.content
    wait_until(lambda: not outbox_files(root), "an empty Outbox")
    assert proc.stop() == 0


def test_sigterm_in_the_middle_of_a_stalled_smtp_transaction(
    make_daemon: DaemonFactory, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """smtplib blocks in a worker thread; the stop must not wait for the server's answer
    (the smtp transport cuts the socket at logoff; should any worker thread stay blocked,
    the daemon exits without it, mapid.daemon.main._serve)."""
    root = tmp_path / "alpha"
    profile = standard_profile(root, autologon=True) + smtp_section(smtp_server, timeout=60)
    proc = make_daemon(profiles={"alpha": profile})
    smtp_server.stall("DATA", seconds=60)
    mapictl(proc, "send", "--to", "grace@example.org", "-s", "Stalled", "--body", "x")
    smtp_server.wait_connections(1)
    time.sleep(0.2)  # let the client reach DATA, where the server sits on its answer

    code, _took = sigterm(proc)  # within TimeoutStopSec, not after smtplib's 60 s
    assert code == 0, proc.log()[-3000:]
    assert len(outbox_files(root)) == 1, "an unconfirmed message must stay queued"
    assert smtp_server.messages == []

    smtp_server.accept_all()
    proc.start()
    got = smtp_server.wait_for(1, timeout=20)
    assert any(b"Subject: Stalled" in m.content for m in got)
    wait_until(lambda: not outbox_files(root), "an empty Outbox")
    assert proc.stop() == 0


STUCK_SERVICE = """
import time
from mapid.providers.base import MessageService, StoreProvider

class StuckStore(StoreProvider):
    name = "store"

    async def logoff(self) -> None:
        # A library call that ignores every time-out, in a worker thread as it should be.
        await self.support.run_blocking(time.sleep, 3600)

class Stuck(MessageService):
    name = "stuck"
    display_name = "a store whose logoff never returns"
    providers = (StuckStore,)
"""


def test_a_worker_thread_stuck_forever_does_not_hold_the_stop(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "stuck_service.py").write_text(STUCK_SERVICE)
    tests_dir = Path(__file__).resolve().parent
    proc = make_daemon(
        profiles={"alpha": 'autologon = true\n[services.s]\nservice = "stuck_service:Stuck"\n'},
        env={"PYTHONPATH": os.pathsep.join([str(modules), str(tests_dir)])},
    )
    code, _took = sigterm(proc)  # Python alone would join the thread: an hour
    assert code == 0, proc.log()[-3000:]
    log = proc.log()
    assert "exiting without 1 worker thread(s) still blocked in I/O" in log
    assert "stopped" in log and not (proc.runtime / "mapid.json").exists()


def test_the_stop_deadline_holds_with_many_sessions_slow_to_log_off(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """150 sessions whose providers take an hour to say goodbye, and a profile deletion that
    waits for its last session: SIGTERM still ends the daemon with exit 0 (the bound here is
    the unit's stop time-out, not a measurement). The log says how many sessions were ended
    without their goodbyes, and the deletion is done before the exit."""
    slow = 'autologon = false\n[services.slow]\nservice = "providers_for_tests:SlowGoodbye"\n'
    proc = make_daemon(
        profiles={"slow": slow, "alpha": standard_profile(tmp_path / "alpha")},
        config='default_profile = "slow"\nwatch = "off"\n',
    )
    client = proc.client()
    for _ in range(150):
        client.session_logon("slow", ["MAPI_NEW_SESSION"])
    client.session_logon("alpha", ["MAPI_NEW_SESSION"])
    client.profiles_delete("alpha")  # waits for the alpha session to end
    alpha = proc.config_dir / "profiles" / "alpha.toml"
    assert alpha.exists()

    code, _took = sigterm(proc)
    log = proc.log()
    assert code == 0, log[-3000:]
    assert "of 151 sessions logged off within 3.5 s; the other" in log, log[-3000:]
    assert "ended without their providers' goodbyes" in log
    ended = int(log.split(" of 151 sessions logged off")[0].rsplit(maxsplit=1)[-1])
    assert ended < 151  # every worker was held by a slow goodbye at the deadline
    assert not alpha.exists(), "the deletion that waited for its session was not done"
    assert "stopped" in log and "Traceback" not in log
