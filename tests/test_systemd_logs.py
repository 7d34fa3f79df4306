"""The daemon's log, as journald and an administrator read it.

One event a line with its level; under journald (JOURNAL_STREAM naming the daemon's stderr)
the syslog priority `<N>` in front and no timestamp, elsewhere a UTC timestamp; the session
a request works on; no secrets; tracebacks stay in the log, never in a reply.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from mapid.paths import read_connection_file

from conftest import DaemonFactory, DaemonProc, prepare_daemon, standard_profile
from smtp_server import smtp_section

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
PRIORITIES = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def journal_daemon(tmp_path: Path, **kwargs: object) -> DaemonProc:
    """A daemon whose stderr is a file that JOURNAL_STREAM names, as systemd's stream.

    journald's socket is missing (MAPID_JOURNAL_SOCKET names no file), so the daemon writes
    lines to the stream; tests/test_journal.py has the native protocol over a socket."""
    proc = prepare_daemon(tmp_path / "d", **kwargs)  # type: ignore[arg-type]
    proc.log_path.touch()
    info = proc.log_path.stat()
    proc.env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
    proc.env["MAPID_JOURNAL_SOCKET"] = str(tmp_path / "no-journald.socket")
    return proc


def test_under_journald_each_line_carries_its_priority_and_no_time(tmp_path: Path) -> None:
    profiles = {"alpha": standard_profile(tmp_path / "a"), "broken": "autologon = [\n"}
    proc = journal_daemon(tmp_path, profiles=profiles)
    try:
        proc.start()
        assert proc.stop() == 0
    finally:
        proc.close()
    lines = proc.log().splitlines()
    assert lines
    for line in lines:
        match = re.fullmatch(r"<(\d)>(DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+)(.*)", line)
        assert match is not None, line
        assert int(match.group(1)) == PRIORITIES[match.group(2)], line
        assert not re.search(TIMESTAMP, line), line
    assert any(line.startswith("<3>ERROR mapid.daemon: configuration: ") for line in lines)
    assert any(
        line.startswith("<6>INFO mapid.daemon: mapid ") and "ready" in line for line in lines
    )


def test_elsewhere_each_line_starts_with_a_timestamp(make_daemon: DaemonFactory) -> None:
    # A JOURNAL_STREAM inherited from elsewhere (stderr is not that stream) is ignored.
    proc = make_daemon(env={"JOURNAL_STREAM": "1:2"})
    assert proc.stop() == 0
    lines = proc.log().splitlines()
    assert lines
    for line in lines:
        assert re.match(rf"{TIMESTAMP} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+", line), line


def test_a_request_logs_with_its_session_id(make_daemon: DaemonFactory) -> None:
    proc = make_daemon()
    client = proc.client()
    logon = client.session_logon("alpha", ["MAPI_NEW_SESSION"])
    client.session_logoff(logon["token"])
    session = logon["session"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ended = [line for line in proc.log().splitlines() if f"session {session} ended" in line]
        if ended:
            break
        time.sleep(0.05)
    assert ended and f" session={session}: " in ended[0], proc.log()


def test_a_provider_crash_is_one_line_in_the_log_and_no_traceback_for_the_client(
    make_daemon: DaemonFactory,
) -> None:
    proc = make_daemon(
        profiles={"alpha": '[services.bad]\nservice = "providers_for_tests:Crashing"\n'}
    )
    client = proc.client()
    logon = client.session_logon("alpha", ["MAPI_NEW_SESSION"])
    rows = client.session_status_table(logon["token"])["rows"]
    seen_by_client = repr(rows)
    assert "Traceback" not in seen_by_client and ".py" not in seen_by_client
    deadline = time.monotonic() + 10
    while "Traceback" not in proc.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = [line for line in proc.log().splitlines() if "Traceback" in line]
    assert "RuntimeError: provider bug" in line  # the whole traceback folded into it


def test_log_level_from_the_config_and_from_the_command_line(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    quiet = make_daemon(config='default_profile = "alpha"\nwatch = "off"\nlog_level = "warning"\n')
    assert quiet.stop() == 0
    assert " INFO " not in quiet.log() and "ready" not in quiet.log()

    loud = prepare_daemon(
        tmp_path / "loud", config=quiet.config_dir.joinpath("mapid.toml").read_text()
    )
    with open(loud.log_path, "ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "mapid", "run", "--log-level", "debug"],
            env=loud.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while read_connection_file(loud.runtime) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert " DEBUG " in loud.log() and " INFO " in loud.log()

    bad = subprocess.run(
        [sys.executable, "-m", "mapid", "run", "--log-level", "chatty"],
        env=loud.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2 and "--log-level" in bad.stderr


def test_no_secret_reaches_the_log_even_at_debug(make_smtp_server: object, tmp_path: Path) -> None:
    secret = "s3cret-" + os.urandom(4).hex()
    server = make_smtp_server(auth=("ada", secret))  # type: ignore[operator]
    profile = standard_profile(tmp_path / "a", autologon=True) + smtp_section(
        server, username="ada", password_command=["printf", "%s\\n", secret]
    )
    proc = prepare_daemon(tmp_path / "d", profiles={"alpha": profile})
    with open(proc.log_path, "ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "mapid", "run", "--log-level", "debug"],
            env=proc.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while read_connection_file(proc.runtime) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        command = [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(proc.runtime)]
        command += ["send", "--to", "grace@example.org", "-s", "Secret", "--body", "x", "--wait"]
        sent = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert sent.returncode == 0, (sent.stdout, sent.stderr, proc.log()[-2000:])
        assert server.wait_for(1)[0].login == "ada"  # type: ignore[attr-defined]
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    log_text = proc.log()
    assert " DEBUG " in log_text
    assert secret not in log_text


def test_log_level_follows_the_file_on_reload(make_daemon: DaemonFactory) -> None:
    proc = make_daemon(config='default_profile = "alpha"\nwatch = "off"\nlog_level = "warning"\n')
    client = proc.client()
    client.daemon_reload()
    assert " INFO " not in proc.log()
    (proc.config_dir / "mapid.toml").write_text('default_profile = "alpha"\nwatch = "off"\n')
    client.daemon_reload()  # log_level left out: back to its default, info
    deadline = time.monotonic() + 10
    while "INFO mapid.daemon: reload 3 (request)" not in proc.log():
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.05)
    assert "reload 2 (request)" not in proc.log()  # that one ran at warning
