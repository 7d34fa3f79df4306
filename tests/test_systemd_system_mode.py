"""`mapid run --system` and its runtime directory (docs/protocol.md 1, docs/design.md 9).

The directory is 0750 with the group whose members may connect; the daemon refuses one
that is looser, belongs to someone else, or has another group, naming the path and the fix.
A directory as systemd's RuntimeDirectory= makes it (the unit's user and group, 0750) is
accepted as it is. MAPID_RUNTIME_DIR, MAPID_CONFIG_DIR and MAPID_STATE_DIR stand in for
/run/mapid, /etc/mapid and /var/lib/mapid.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mapid.client import Client
from mapid.daemon.config.daemon_config import DaemonConfig
from mapid.paths import read_connection_file

from conftest import DaemonProc, prepare_daemon

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")


def start_system(proc: DaemonProc) -> subprocess.CompletedProcess[str]:
    """`mapid run --system` that is expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "mapid", "run", "--system"],
        env=proc.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def refused(proc: DaemonProc) -> str:
    done = start_system(proc)
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1, done.stderr  # one event, one line
    assert str(proc.runtime) in lines[0]
    return lines[0]


def test_system_mode_uses_the_system_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAPID_RUNTIME_DIR", "MAPID_CONFIG_DIR", "MAPID_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    config = DaemonConfig.defaults(system=True)
    assert (config.runtime_dir, config.config_dir, config.state_dir) == (
        Path("/run/mapid"),
        Path("/etc/mapid"),
        Path("/var/lib/mapid"),
    )
    assert config.system


@pytest.mark.parametrize("mode", [0o755, 0o777, 0o751])
def test_a_loose_runtime_directory_is_refused_in_system_mode(tmp_path: Path, mode: int) -> None:
    proc = prepare_daemon(tmp_path / "d")
    proc.runtime.mkdir()
    os.chmod(proc.runtime, mode)
    line = refused(proc)
    assert f"has mode {mode:04o}, looser than 0750" in line
    assert f"run `chmod 750 {proc.runtime}`" in line
    assert stat.S_IMODE(proc.runtime.stat().st_mode) == mode  # refused, not "fixed"


@needs_root
def test_a_runtime_directory_of_another_owner_is_refused(tmp_path: Path) -> None:
    proc = prepare_daemon(tmp_path / "d")
    proc.runtime.mkdir(mode=0o750)
    nobody = pwd.getpwnam("nobody")
    os.chown(proc.runtime, nobody.pw_uid, -1)
    line = refused(proc)
    assert f"belongs to nobody (uid {nobody.pw_uid})" in line
    assert f"run `chown root {proc.runtime}`" in line


@needs_root
def test_a_runtime_directory_of_another_group_is_refused(tmp_path: Path) -> None:
    proc = prepare_daemon(tmp_path / "d")
    proc.runtime.mkdir()
    os.chmod(proc.runtime, 0o750)
    other = grp.getgrnam("nogroup")
    os.chown(proc.runtime, -1, other.gr_gid)
    line = refused(proc)
    assert "has group nogroup" in line and "`chgrp " in line and str(proc.runtime) in line


def run_system(proc: DaemonProc) -> subprocess.Popen[bytes]:
    with open(proc.log_path, "ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "mapid", "run", "--system"],
            env=proc.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    proc.proc = daemon
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert daemon.poll() is None, proc.log()
        info = read_connection_file(proc.runtime)
        if info is not None and info.pid == daemon.pid:
            return daemon
        time.sleep(0.05)
    raise AssertionError(f"no system daemon within 15 s:\n{proc.log()}")


def test_a_directory_as_systemd_makes_it_is_used_as_it_is(tmp_path: Path) -> None:
    """RuntimeDirectory= with User=, Group= and RuntimeDirectoryMode=0750."""
    proc = prepare_daemon(tmp_path / "d")
    proc.runtime.mkdir()
    os.chmod(proc.runtime, 0o750)
    before = proc.runtime.stat()
    try:
        run_system(proc)
        after = proc.runtime.stat()
        assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (
            before.st_uid,
            before.st_gid,
            0o750,
        )
        # The group reads the connection file and talks on the sockets; others nothing.
        assert stat.S_IMODE((proc.runtime / "mapid.json").stat().st_mode) == 0o640
        for name in ("request.sock", "events.sock"):
            assert stat.S_IMODE((proc.runtime / name).stat().st_mode) == 0o660
        with Client(proc.runtime, timeout=5) as client:
            assert client.daemon_ping() is not None
        assert proc.stop(signal.SIGTERM) == 0
        assert not (proc.runtime / "mapid.json").exists()
    finally:
        proc.close()


def test_the_system_daemon_makes_its_directory_0750_and_writes_no_default(
    tmp_path: Path,
) -> None:
    proc = prepare_daemon(tmp_path / "d", embedded=True)  # an empty /etc/mapid
    try:
        run_system(proc)
        assert stat.S_IMODE(proc.runtime.stat().st_mode) == 0o750
        # The machine's daemon has no user to invent a default profile for.
        assert not (proc.config_dir / "mapid.toml").exists()
        assert list((proc.config_dir / "profiles").glob("*.toml")) == []
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        proc.close()
