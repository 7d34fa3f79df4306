"""Start-up, the embedded default, the runtime directory, configuration checks, clean stops."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from mapid.client import Client
from mapid.errors import DaemonUnreachable
from mapid.paths import read_connection_file
from mapid.wire import envelope

from conftest import DaemonFactory, DaemonProc, prepare_daemon


def _subscribe(runtime: Path) -> zmq.Socket:  # type: ignore[type-arg]
    info = read_connection_file(runtime)
    assert info is not None
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt_string(zmq.SUBSCRIBE, "")
    sub.connect(info.events)
    assert sub.poll(3000)  # the heartbeat that greets a new subscription
    return sub


def _drain(sub: zmq.Socket, seconds: float) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    events = []
    deadline = time.monotonic() + seconds
    while sub.poll(max(1, int(1000 * (deadline - time.monotonic())))):
        topic, payload = envelope.decode_event_frames(sub.recv_multipart())
        if topic != "hb":
            events.append((topic, payload))
        if time.monotonic() > deadline:
            break
    return events


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_cleanly(make_daemon: DaemonFactory, sig: int) -> None:
    proc = make_daemon()
    client = proc.client()
    logon = client.session_logon("alpha", ["MAPI_NEW_SESSION"])
    sub = _subscribe(proc.runtime)
    started = time.monotonic()
    assert proc.stop(sig) == 0
    assert time.monotonic() - started < 5
    assert not (proc.runtime / "mapid.json").exists()
    events = _drain(sub, 0.5)
    sub.close()
    kinds = [(t, p["type"]) for t, p in events]
    assert ("daemon", "stopping") in kinds
    assert (f"session.{logon['session']}", "logoff") in kinds
    deleted = [k for k in kinds if k == (f"status.{logon['session']}", "TABLE_ROW_DELETED")]
    assert len(deleted) == 5
    with pytest.raises(DaemonUnreachable):
        Client(proc.runtime)


def test_the_embedded_default_profile(make_daemon: DaemonFactory) -> None:
    proc = make_daemon(embedded=True)
    data = Path(proc.env["XDG_DATA_HOME"]) / "mapid"
    assert (data / "Mail" / "cur").is_dir()
    assert (data / "Mail" / "mapid.uid").is_file()
    assert (data / "contacts").is_dir()
    profile = proc.config_dir / "profiles" / "default.toml"
    assert oct(profile.stat().st_mode & 0o777) == "0o600"
    client = proc.client()
    sessions = client.daemon_sessions()["sessions"]
    assert [s["profile"] for s in sessions] == ["default"]  # autologon, shared
    attached = client.session_logon(None, 0)
    assert attached["session"] == sessions[0]["session"]
    rows = client.session_status_table(attached["token"])["rows"]
    assert {r["PR_PROVIDER_DLL_NAME"] for r in rows} == {"mapid", "vcard", "maildir"}
    assert all(r["PR_STATUS_CODE"] & 1 for r in rows)
    assert client.session_query_identity(attached["token"]).warning is None
    # A second start keeps the user's files as they are.
    profile.write_text(profile.read_text() + "# edited\n")
    proc.stop()
    proc.start()
    assert profile.read_text().endswith("# edited\n")


def _run_on_a_loose_runtime_directory(proc: DaemonProc) -> subprocess.CompletedProcess[str]:
    """`mapid run` with the runtime directory made 0755, which the daemon refuses."""
    proc.runtime.mkdir(mode=0o755)
    os.chmod(proc.runtime, 0o755)
    return subprocess.run(
        [sys.executable, "-m", "mapid", "run"],
        env=proc.env,
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_a_loose_runtime_directory_is_refused(tmp_path: Path) -> None:
    proc = prepare_daemon(tmp_path / "d")
    result = _run_on_a_loose_runtime_directory(proc)
    assert result.returncode == 1
    assert str(proc.runtime) in result.stderr
    assert f"chmod 700 {proc.runtime}" in result.stderr
    assert not (proc.runtime / "request.sock").exists()


def test_a_refused_start_writes_no_default_profile(tmp_path: Path) -> None:
    """Issue 19: every check that can refuse a start runs before anything is written."""
    proc = prepare_daemon(tmp_path / "d", embedded=True)
    shutil.rmtree(proc.config_dir)
    result = _run_on_a_loose_runtime_directory(proc)
    assert result.returncode == 1
    assert f"chmod 700 {proc.runtime}" in result.stderr
    assert not proc.config_dir.exists(), sorted(map(str, proc.config_dir.rglob("*")))
    assert not (tmp_path / "d" / "data" / "mapid").exists()  # nor its Maildir and contacts
    os.chmod(proc.runtime, 0o700)  # the same start, allowed now, writes the default
    proc.start()
    assert (proc.config_dir / "profiles").is_dir()
    proc.close()


def test_a_second_daemon_on_the_same_directory_is_refused(make_daemon: DaemonFactory) -> None:
    proc = make_daemon()
    result = subprocess.run(
        [sys.executable, "-m", "mapid", "run"],
        env=proc.env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1
    assert f"pid {proc.proc.pid}" in result.stderr  # type: ignore[union-attr]
    assert proc.client().daemon_ping() == {}


def test_a_stale_connection_file_and_socket_are_replaced(make_daemon: DaemonFactory) -> None:
    proc = make_daemon()
    proc.stop(signal.SIGKILL)
    assert (proc.runtime / "mapid.json").exists()
    with pytest.raises(DaemonUnreachable):
        Client(proc.runtime, timeout=0.5).daemon_ping()
    proc.start()
    assert proc.client().daemon_ping() == {}


def test_check_config_names_file_and_line(tmp_path: Path) -> None:
    proc = prepare_daemon(tmp_path / "d")
    good = subprocess.run(
        [sys.executable, "-m", "mapid", "check-config", str(proc.config_dir)],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    broken = proc.config_dir / "profiles" / "broken.toml"
    broken.write_text('autologon = false\n[services.x]\nservice = "vcard"\npath = \n')
    bad = subprocess.run(
        [sys.executable, "-m", "mapid", "check-config", str(proc.config_dir)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert f"{broken}:4:" in bad.stderr


def test_reload_keeps_the_last_good_version_of_a_broken_file(make_daemon: DaemonFactory) -> None:
    proc = make_daemon()
    client = proc.client()
    sub = _subscribe(proc.runtime)
    beta = proc.config_dir / "profiles" / "beta.toml"
    beta.write_text("this is not toml\n")
    (proc.config_dir / "profiles" / "gamma.toml").write_text("autologon = false\n")
    report = client.daemon_reload()
    assert report["ok"] is False
    assert report["added"] == ["gamma"] and report["removed"] == []
    assert report["errors"][0]["file"] == str(beta)
    assert report["errors"][0]["line"] == 1
    assert client.session_logon("beta", ["MAPI_NEW_SESSION"])["profile"] == "beta"
    events = _drain(sub, 0.5)
    assert ("daemon", "reload_failed") in [(t, p["type"]) for t, p in events]
    checked = client.daemon_reload(check=True)
    assert checked["gen"] == report["gen"]
    os.kill(proc.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
    events = _drain(sub, 1.0)
    sub.close()
    assert [p["trigger"] for t, p in events if t == "daemon"] == ["sighup"]
    assert client.daemon_hello()["config_gen"] == report["gen"] + 1


def test_a_readable_profile_with_a_password_is_refused(make_daemon: DaemonFactory) -> None:
    proc = make_daemon()
    client = proc.client()
    secret = proc.config_dir / "profiles" / "secret.toml"
    secret.write_text(
        'autologon = false\n\n[services.out]\nservice = "ews"\nhost = "x"\npassword = "hunter2"\n'
    )
    os.chmod(secret, 0o644)
    report = client.daemon_reload()
    assert report["ok"] is False and "secret" not in report["added"]
    error = report["errors"][0]
    assert error["file"] == str(secret) and error["line"] == 6
    assert f"chmod 600 {secret}" in error["message"]
    assert "hunter2" not in str(report)
    os.chmod(secret, 0o600)
    report = client.daemon_reload()
    assert report["ok"] is True and report["added"] == ["secret"]


def test_providers_get_their_password_from_password_command(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    script = tmp_path / "secret.sh"
    script.write_text("#!/bin/sh\necho s3cr3t-value\necho second line\n")
    script.chmod(0o700)
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\necho s3cr3t-value\nexit 3\n")
    failing.chmod(0o700)
    profile = (
        f'[services.good]\nservice = "providers_for_tests:WithPassword"\n'
        f'password_command = "{script}"\n'
        f'[services.bad]\nservice = "providers_for_tests:WithPassword"\n'
        f'password_command = ["{failing}"]\n'
    )
    proc = make_daemon(profiles={"alpha": profile})
    client = proc.client()
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
    rows = {r["PR_DISPLAY_NAME"]: r for r in client.session_status_table(token)["rows"]}
    assert rows["good"]["PR_STATUS_STRING"] == "password of 12 characters"
    assert rows["bad"]["PR_STATUS_CODE"] & 4  # STATUS_FAILURE
    assert "fail.sh" in rows["bad"]["PR_STATUS_STRING"]
    assert "s3cr3t" not in str(rows) and "s3cr3t" not in proc.log()


def test_a_request_running_at_sigterm_is_still_answered(make_daemon: DaemonFactory) -> None:
    proc = make_daemon(
        config='default_profile = "alpha"\nwatch = "off"\nprovider_timeout = 0.3\n',
        profiles={"alpha": '[services.slow]\nservice = "providers_for_tests:Hanging"\n'},
    )
    from mapid.wire.codec import pack, unpack

    info = read_connection_file(proc.runtime)
    assert info is not None
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(info.request)
    request = {"v": 1, "id": 1, "op": "session.logon", "args": {"profile": "alpha"}}
    dealer.send_multipart([b"", pack(request)])
    time.sleep(0.1)  # the logon now waits on its hanging provider
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    assert dealer.poll(3000), "the running logon got no answer"
    reply = unpack(dealer.recv_multipart()[1])
    dealer.close()
    assert reply["id"] == 1 and reply["ok"] is True
    assert proc.proc.wait(5) == 0
