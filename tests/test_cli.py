"""mapictl against a real daemon: in-process through typer's CliRunner, and as a real
subprocess (`python -m mapid.cli.app`, and the installed `mapictl` script when present).

Exit codes are part of the contract (0 ok, 1 MAPI error, 2 usage, 3 not found, 4 daemon
unreachable, 5 timed out), so every one of them is produced here by a real situation.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from mapid import __version__
from mapid.cli.app import app, logon_flag
from mapid.cli.exits import ExitCode, error_object, exit_code
from mapid.cli.output import account_state, decode_row, decode_session, jsonable
from mapid.client import Client
from mapid.constants import ResourceType, StatusCode
from mapid.errors import DaemonUnreachable, ErrorCode, MapiError, RequestTimedOut

from conftest import DaemonFactory, DaemonProc

runner = CliRunner()


def cli(runtime: Path, *args: str) -> Result:
    """mapictl in-process, with the global --runtime-dir before the command."""
    return runner.invoke(app, ["--runtime-dir", str(runtime), *args])


def run(runtime: Path, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """mapictl as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(runtime), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def popen(runtime: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(runtime), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_line(stream: Any, timeout: float = 10.0) -> str:
    """One line from a child's pipe, failing the test instead of hanging."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert box, f"no line within {timeout} s"
    return box[0]


@pytest.fixture
def empty_runtime(tmp_path: Path) -> Path:
    """A runtime directory with no daemon in it."""
    path = tmp_path / "no-daemon"
    path.mkdir()
    return path


@pytest.fixture
def stopped(make_daemon: DaemonFactory) -> Iterator[DaemonProc]:
    """A daemon frozen with SIGSTOP: it is there, but it answers nothing."""
    proc = make_daemon(name="frozen")
    assert proc.proc is not None
    os.kill(proc.proc.pid, signal.SIGSTOP)
    try:
        yield proc
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)


def logon(daemon: DaemonProc, profile: str = "alpha", *flags: str) -> dict[str, Any]:
    result = cli(daemon.runtime, "logon", profile, "--new-session", *flags, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# --- help and exit-code documentation --------------------------------------------------------


def test_app_help_documents_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    text = result.stdout
    for line in ("0  ok", "1  MAPI error", "2  usage", "3  not found", "4  daemon unreachable"):
        assert line in text
    assert "5  timed out" in text
    for option in ("--json", "--timeout", "--runtime-dir"):
        assert option in text


COMMANDS = ["ping", "version", "status", "sessions", "events", "reload", "logon", "logoff"]


@pytest.mark.parametrize("command", [*COMMANDS, "status-table"])
def test_every_command_explains_itself(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.stdout
    assert "--json" in result.stdout
    assert len(result.stdout.splitlines()) > 8


def test_logon_help_explains_the_lease() -> None:
    text = runner.invoke(app, ["logon", "--help"]).stdout
    assert "--lease" in text and "logoff" in text


@pytest.mark.parametrize("group", [[], ["profiles"], ["services"], ["config"], ["keys"]])
def test_no_command_is_usage(group: list[str]) -> None:
    """Exit 2 whatever click the machine has (its no_args_is_help exited 0 before 8.2)."""
    result = runner.invoke(app, group)
    assert result.exit_code == 2
    assert "Usage" in result.output


# --- ping and version -------------------------------------------------------------------------


def test_ping_reports_round_trip_times(daemon: DaemonProc) -> None:
    result = cli(daemon.runtime, "ping", "--count", "3", "--interval", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("time ") == 3
    assert "min/avg/max" in result.stdout

    result = cli(daemon.runtime, "--json", "ping", "-c", "2", "-i", "0")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["rtt_ms"]) == 2
    assert data["min_ms"] <= data["avg_ms"] <= data["max_ms"]
    assert daemon.proc is not None and data["pid"] == daemon.proc.pid


def test_version_shows_client_and_daemon(daemon: DaemonProc) -> None:
    result = cli(daemon.runtime, "version")
    assert result.exit_code == 0, result.output
    assert f"mapictl {__version__}" in result.stdout
    assert "mapid " in result.stdout and "protocol 1" in result.stdout

    data = json.loads(cli(daemon.runtime, "version", "--json").stdout)
    assert data["client"] == __version__
    assert data["daemon"] == __version__
    assert daemon.proc is not None and data["pid"] == daemon.proc.pid


def test_version_without_daemon_still_prints_client_version(empty_runtime: Path) -> None:
    result = cli(empty_runtime, "version")
    assert result.exit_code == ExitCode.UNREACHABLE
    assert f"mapictl {__version__}" in result.stdout
    assert "unreachable" in result.stderr

    result = cli(empty_runtime, "version", "--json")
    assert result.exit_code == 4
    data = json.loads(result.stdout)
    assert data["client"] == __version__ and data["daemon"] is None
    assert data["error"]["code"] == "DAEMON_UNREACHABLE"


# --- status and sessions ----------------------------------------------------------------------


def test_status_human_decodes_names(daemon: DaemonProc) -> None:
    session = logon(daemon)["session"]
    result = cli(daemon.runtime, "status")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert daemon.proc is not None and f"pid {daemon.proc.pid}" in out
    assert "config gen 1" in out and "last reload" in out
    assert f"session {session}" in out and "profile alpha" in out
    for name in ("STATUS_AVAILABLE", "MAPI_SUBSYSTEM", "MAPI_STORE_PROVIDER"):
        assert name in out
    assert "STATUS_PRIMARY_IDENTITY" in out  # the vCard provider's resource flags
    assert "STATUS_VALIDATE_STATE" in out  # methods
    assert "2 contacts" in out  # a status string


def test_status_json_is_one_consistent_view(daemon: DaemonProc) -> None:
    session = logon(daemon)["session"]
    result = cli(daemon.runtime, "status", "--json")
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert daemon.proc is not None and view["daemon"]["pid"] == daemon.proc.pid
    assert view["daemon"]["uptime_s"] >= 0
    dt.datetime.fromisoformat(view["daemon"]["started"])
    assert view["config"]["gen"] == 1 and view["config"]["last_reload"]["ok"] is True
    (info,) = [s for s in view["sessions"] if s["session"] == session]
    assert info["profile"] == "alpha" and info["state"] == "active"
    assert info["flags"] == ["MAPI_NEW_SESSION"]
    rows = info["status"]
    assert rows[0]["PR_RESOURCE_TYPE"] == "MAPI_SUBSYSTEM"
    assert rows[0]["PR_STATUS_CODE"] == ["STATUS_AVAILABLE"]
    assert rows[0]["PR_OBJECT_TYPE"] == "MAPI_STATUS"
    assert [r["PR_ROWID"] for r in rows] == sorted(r["PR_ROWID"] for r in rows)
    assert all(isinstance(r["PR_INSTANCE_KEY"], str) for r in rows)  # bytes as hex
    assert "STATUS_DEFAULT_STORE" in json.dumps(rows)


def test_status_of_one_session_and_of_none(daemon: DaemonProc) -> None:
    first = logon(daemon)["session"]
    second = logon(daemon, "beta")["session"]
    view = json.loads(cli(daemon.runtime, "status", first, "--json").stdout)
    assert [s["session"] for s in view["sessions"]] == [first]
    assert second not in cli(daemon.runtime, "status", first).stdout

    result = cli(daemon.runtime, "status", "zzzz-no-such-session")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "MAPI_E_NOT_FOUND" in result.stderr


def test_status_without_sessions(daemon: DaemonProc) -> None:
    result = cli(daemon.runtime, "status")
    assert result.exit_code == 0
    assert "no sessions" in result.stdout


def test_sessions_table_and_json(daemon: DaemonProc) -> None:
    session = logon(daemon, "beta", "--no-mail")["session"]
    result = cli(daemon.runtime, "sessions")
    assert result.exit_code == 0, result.output
    assert session in result.stdout and "beta" in result.stdout
    assert "MAPI_NO_MAIL" in result.stdout

    data = json.loads(cli(daemon.runtime, "sessions", "--json").stdout)
    (info,) = data["sessions"]
    assert info["session"] == session and info["members"] == 1 and info["shared"] is False
    assert "MAPI_NO_MAIL" in info["flags"]


# --- logon, logoff, status-table, events ------------------------------------------------------


def test_logon_logoff_round_trip_seen_in_events(daemon: DaemonProc) -> None:
    follower = popen(daemon.runtime, "events", "session.", "--json", "--count", "2")
    try:
        assert "following events" in read_line(follower.stderr)
        result = cli(daemon.runtime, "logon", "alpha", "--new-session")
        assert result.exit_code == 0, result.output
        fields = dict(line.split(None, 1) for line in result.stdout.splitlines())
        session, token = fields["session"], fields["token"]
        assert len(bytes.fromhex(token)) == 32
        assert "until `mapictl logoff TOKEN`" in fields["lease"]

        table = cli(daemon.runtime, "status-table", token)
        assert table.exit_code == 0 and "MAPI_SUBSYSTEM" in table.stdout

        assert cli(daemon.runtime, "logoff", token).exit_code == 0
        out, err = follower.communicate(timeout=10)
    finally:
        follower.kill()
        follower.wait()
    assert follower.returncode == 0, err
    events = json_lines(out)
    assert [(e["topic"], e["type"]) for e in events] == [
        (f"session.{session}", "logon"),
        (f"session.{session}", "logoff"),
    ]
    assert events[0]["info"]["profile"] == "alpha"
    dt.datetime.fromisoformat(events[0]["info"]["created"])  # datetimes as ISO 8601
    assert events[1]["seq"] > events[0]["seq"]


def test_events_in_process_with_status_rows(daemon: DaemonProc) -> None:
    """`events` prints status-table changes readably; heartbeats only when asked."""

    def act() -> None:
        time.sleep(0.7)  # the subscription is made within a few ms of the command's start
        with Client(daemon.runtime) as client:
            token = client.session_logon("beta", ["MAPI_NEW_SESSION"], lease_s=0)["token"]
            client.session_logoff(token)

    actor = threading.Thread(target=act)
    actor.start()
    try:
        result = cli(daemon.runtime, "events", "status.", "--count", "5")
    finally:
        actor.join()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    assert all("TABLE_ROW_ADDED" in line for line in lines)
    assert "MAPI_SUBSYSTEM" in lines[0] and "STATUS_AVAILABLE" in lines[0]
    assert "hb" not in result.stdout

    beats = cli(daemon.runtime, "events", "--heartbeats", "--count", "1", "--json")
    assert beats.exit_code == 0, beats.output
    (beat,) = json_lines(beats.stdout)
    assert beat["topic"] == "hb" and beat["type"] == "heartbeat"
    dt.datetime.fromisoformat(beat["ts"])


def test_status_table_json_and_bad_tokens(daemon: DaemonProc) -> None:
    token = logon(daemon)["token"]
    data = json.loads(cli(daemon.runtime, "status-table", token, "--json").stdout)
    assert data["total"] == len(data["rows"]) >= 3
    assert data["rows"][0]["PR_RESOURCE_TYPE"] == "MAPI_SUBSYSTEM"

    bad = cli(daemon.runtime, "status-table", "not-hex")
    assert bad.exit_code == ExitCode.USAGE

    assert cli(daemon.runtime, "logoff", token, "--json").stdout.strip() == '{"ok":true}'
    dead = cli(daemon.runtime, "--json", "status-table", token)
    assert dead.exit_code == ExitCode.MAPI_ERROR
    assert "MAPI_E_END_OF_SESSION" in dead.stderr
    assert json.loads(dead.stdout)["error"]["code"] == "MAPI_E_END_OF_SESSION"


def test_logon_flags_and_shared_logoff(daemon: DaemonProc) -> None:
    first = json.loads(
        cli(
            daemon.runtime, "logon", "alpha", "--new-session", "-f", "allow_others", "--json"
        ).stdout
    )
    assert first["shared"] is True and first["lease_s"] == 0
    joined = json.loads(cli(daemon.runtime, "logon", "--json").stdout)  # the shared one
    assert joined["session"] == first["session"]
    assert cli(daemon.runtime, "logoff", first["token"], "--shared").exit_code == 0
    assert cli(daemon.runtime, "status-table", joined["token"]).exit_code == 1


def test_logon_use_default(daemon: DaemonProc) -> None:
    data = json.loads(cli(daemon.runtime, "logon", "--use-default", "--json").stdout)
    assert data["profile"] == "alpha"


# --- exit codes ------------------------------------------------------------------------------


def test_unknown_profile_is_not_found(daemon: DaemonProc) -> None:
    result = cli(daemon.runtime, "logon", "no-such-profile")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "MAPI_E_LOGON_FAILED" in result.stderr and "no-such-profile" in result.stderr
    assert result.stdout == ""

    result = cli(daemon.runtime, "--json", "logon", "no-such-profile")
    assert result.exit_code == 3
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "MAPI_E_LOGON_FAILED"
    assert error["details"]["reason"] == "not_found"


def test_other_mapi_error_is_1(daemon: DaemonProc) -> None:
    result = cli(daemon.runtime, "logon", "alpha", "--flag", "NO_SUCH_FLAG", "--json")
    assert result.exit_code == ExitCode.MAPI_ERROR
    assert "MAPI_E_UNKNOWN_FLAGS" in result.stderr
    assert json.loads(result.stdout)["error"]["hresult"] == int(ErrorCode.MAPI_E_UNKNOWN_FLAGS)


@pytest.mark.parametrize(
    "args", [["ping"], ["status"], ["status", "--watch"], ["sessions"], ["events"]]
)
def test_no_daemon_is_4(empty_runtime: Path, args: list[str]) -> None:
    result = cli(empty_runtime, *args)
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert "unreachable" in result.stderr and str(empty_runtime) in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)

    result = cli(empty_runtime, *args, "--json")
    assert result.exit_code == 4
    assert json.loads(result.stdout)["error"]["code"] == "DAEMON_UNREACHABLE"


def test_no_daemon_is_4_in_a_subprocess(empty_runtime: Path) -> None:
    proc = run(empty_runtime, "ping")
    assert proc.returncode == 4
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_dead_daemon_is_4(make_daemon: DaemonFactory) -> None:
    """A connection file left by a killed daemon is 'unreachable', not 'timed out'."""
    proc = make_daemon(name="killed")
    proc.stop(signal.SIGKILL)
    result = cli(proc.runtime, "--timeout", "0.5", "ping")
    assert result.exit_code == ExitCode.UNREACHABLE, result.output


def test_frozen_daemon_is_5(stopped: DaemonProc) -> None:
    started = time.monotonic()
    result = cli(stopped.runtime, "--timeout", "0.5", "ping")
    assert result.exit_code == ExitCode.TIMED_OUT, result.output
    assert time.monotonic() - started < 3
    assert "timed out" in result.stderr

    result = cli(stopped.runtime, "status", "--timeout", "0.5", "--json")
    assert result.exit_code == 5
    assert json.loads(result.stdout)["error"]["code"] == "TIMED_OUT"

    result = cli(stopped.runtime, "events", "--timeout", "0.5")
    assert result.exit_code == 5, result.output


def test_frozen_daemon_is_5_in_a_subprocess(stopped: DaemonProc) -> None:
    proc = run(stopped.runtime, "--timeout", "0.5", "version")
    assert proc.returncode == 5
    assert f"mapictl {__version__}" in proc.stdout
    assert "Traceback" not in proc.stderr


# --- real processes --------------------------------------------------------------------------


def test_subprocess_commands(daemon: DaemonProc) -> None:
    ping = run(daemon.runtime, "ping")
    assert ping.returncode == 0 and "min/avg/max" in ping.stdout

    logged = run(daemon.runtime, "logon", "alpha", "--json")
    assert logged.returncode == 0, logged.stderr
    token = json.loads(logged.stdout)["token"]

    status = run(daemon.runtime, "status")
    assert status.returncode == 0
    assert "STATUS_AVAILABLE" in status.stdout and "MAPI_SUBSYSTEM" in status.stdout

    view = json.loads(run(daemon.runtime, "status", "--json").stdout)
    assert view["sessions"][0]["status"][0]["PR_RESOURCE_TYPE"] == "MAPI_SUBSYSTEM"

    assert run(daemon.runtime, "logoff", token).returncode == 0
    missing = run(daemon.runtime, "logon", "nobody")
    assert missing.returncode == 3 and "Traceback" not in missing.stderr


def test_runtime_dir_from_environment(daemon: DaemonProc) -> None:
    """Without --runtime-dir the client library's discovery applies ($MAPID_RUNTIME_DIR)."""
    env = dict(os.environ, MAPID_RUNTIME_DIR=str(daemon.runtime))
    script = shutil.which("mapictl")
    argv = [script] if script else [sys.executable, "-m", "mapid.cli.app"]
    proc = subprocess.run(
        [*argv, "version", "--json"], capture_output=True, text=True, env=env, timeout=20
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["daemon"] == __version__


def test_status_watch_json_prints_then_terminates(daemon: DaemonProc) -> None:
    watcher = popen(daemon.runtime, "status", "--watch", "--json")
    try:
        first = json.loads(read_line(watcher.stdout))
        assert first["synced"] is True and first["sessions"] == []
        session = logon(daemon)["session"]
        while True:  # one line per change until the new session shows with its rows
            view = json.loads(read_line(watcher.stdout))
            mine = [s for s in view["sessions"] if s["session"] == session]
            if mine and len(mine[0]["status"]) == 5:
                break
        assert mine[0]["status"][0]["PR_STATUS_CODE"] == ["STATUS_AVAILABLE"]
        watcher.terminate()
        _, err = watcher.communicate(timeout=10)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 0
    assert "Traceback" not in err


def test_status_watch_survives_a_daemon_restart(make_daemon: DaemonFactory) -> None:
    proc = make_daemon(name="restarted")
    watcher = popen(proc.runtime, "status", "--watch", "--json")
    try:
        first = json.loads(read_line(watcher.stdout))
        proc.stop()
        proc.start()
        while True:
            view = json.loads(read_line(watcher.stdout))
            if view["synced"] and view["epoch"] != first["epoch"]:
                break
        assert view["resyncs"] >= 2
        assert proc.proc is not None and view["daemon"]["pid"] == proc.proc.pid
    finally:
        watcher.kill()
        watcher.wait()


def test_status_watch_human_in_a_subprocess(daemon: DaemonProc) -> None:
    logon(daemon)
    watcher = popen(daemon.runtime, "status", "--watch")
    try:
        time.sleep(1.5)
        watcher.terminate()
        out, err = watcher.communicate(timeout=10)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 0, err
    assert "MAPI_SUBSYSTEM" in out and "not synced" not in out


def test_reload(daemon: DaemonProc) -> None:
    result = cli(daemon.runtime, "reload", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True
    (daemon.config_dir / "profiles" / "broken.toml").write_text("this is [not toml\n")
    result = cli(daemon.runtime, "reload", "--check")
    assert result.exit_code == 1
    assert "broken.toml" in result.stdout.replace("\n", "")  # a long path wraps at 80 columns


# --- pieces without a daemon ------------------------------------------------------------------


def test_jsonable_turns_wire_values_into_json() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    value = {"k": b"\x00\xff", b"\x01": [when, 1.5, None]}
    assert jsonable(value) == {"k": "00ff", "01": ["2024-01-02T03:04:05+00:00", 1.5, None]}


def test_decode_row_keeps_unknown_bits() -> None:
    row = decode_row(
        {
            "PR_STATUS_CODE": 0x1 | 0x00100000 | 0x40000000,
            "PR_RESOURCE_TYPE": 99,
            "PR_RESOURCE_METHODS": 0,
            "PR_DISPLAY_NAME": "x",
        }
    )
    assert row["PR_STATUS_CODE"] == ["STATUS_AVAILABLE", "STATUS_OUTBOUND_ENABLED", "0x40000000"]
    assert row["PR_RESOURCE_TYPE"] == "0x00000063"
    assert row["PR_RESOURCE_METHODS"] == []
    assert decode_session({"flags": 0x8008})["flags"] == ["MAPI_ALLOW_OTHERS", "MAPI_NO_MAIL"]


@pytest.mark.parametrize(
    ("kind", "code", "progress", "state"),
    [
        (ResourceType.MAPI_STORE_PROVIDER, StatusCode.STATUS_AVAILABLE, None, "online"),
        (ResourceType.MAPI_STORE_PROVIDER, StatusCode.STATUS_OFFLINE, None, "offline"),
        # an IMAP store that was never reached: available for the cache, offline to the server
        (
            ResourceType.MAPI_STORE_PROVIDER,
            StatusCode.STATUS_AVAILABLE | StatusCode.STATUS_OFFLINE,
            None,
            "offline",
        ),
        (ResourceType.MAPI_STORE_PROVIDER, StatusCode.STATUS_AVAILABLE, 40, "syncing 40%"),
        (ResourceType.MAPI_STORE_PROVIDER, StatusCode.STATUS_AVAILABLE, 100, "online"),
        (ResourceType.MAPI_TRANSPORT_PROVIDER, StatusCode.STATUS_FAILURE, None, "failed"),
        (ResourceType.MAPI_AB_PROVIDER, StatusCode.STATUS_AVAILABLE, None, "online"),
        (ResourceType.MAPI_SPOOLER, StatusCode.STATUS_AVAILABLE, None, None),
        (ResourceType.MAPI_SUBSYSTEM, StatusCode.STATUS_AVAILABLE, None, None),
    ],
)
def test_account_state_says_online_offline_syncing(
    kind: ResourceType, code: StatusCode, progress: int | None, state: str | None
) -> None:
    row: dict[str, object] = {"PR_RESOURCE_TYPE": int(kind), "PR_STATUS_CODE": int(code)}
    if progress is not None:
        row["PR_REMOTE_PROGRESS"] = progress
    assert account_state(row) == state
    assert decode_row(row).get("state") == state


def test_exit_code_mapping() -> None:
    assert exit_code(MapiError(ErrorCode.MAPI_E_NOT_FOUND)) == 3
    assert exit_code(MapiError(ErrorCode.MAPI_E_UNKNOWN_ENTRYID)) == 3
    not_found = MapiError(ErrorCode.MAPI_E_LOGON_FAILED, details={"reason": "not_found"})
    assert exit_code(not_found) == 3
    assert exit_code(MapiError(ErrorCode.MAPI_E_LOGON_FAILED)) == 1
    assert exit_code(MapiError(ErrorCode.MAPI_E_TIMEOUT)) == 5
    assert exit_code(DaemonUnreachable("x")) == 4
    assert exit_code(RequestTimedOut("x", op="daemon.ping", timeout=0.5)) == 5
    assert error_object(RequestTimedOut("x", op="daemon.ping", timeout=0.5))["details"] == {
        "op": "daemon.ping",
        "timeout": 0.5,
    }


def test_logon_flag_names() -> None:
    assert logon_flag("new_session") == "MAPI_NEW_SESSION"
    assert logon_flag("MAPI_NO_MAIL") == "MAPI_NO_MAIL"
    assert logon_flag("no-mail") == "MAPI_NO_MAIL"
    assert logon_flag("BOGUS") == "BOGUS"
