"""A private D-Bus message bus for a test: Debian's `dbus-daemon`, on a socket in the
test's directory, with the session bus's policy (one user, everything allowed).

The daemon under test is pointed at it with DBUS_SESSION_BUS_ADDRESS (desktop
notifications) or DBUS_SYSTEM_BUS_ADDRESS (logind's PrepareForSleep). The test plays the
peer on the same bus with jeepney's blocking API: `bus.connect()` gives a connection,
`bus.own(conn, name)` takes a well-known name such as org.freedesktop.login1, so a match
rule with that sender sees the test's signals as a real logind's.

Without dbus-daemon the tests that need it are skipped, unless CI is set: there they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from jeepney import DBusAddress, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, open_dbus_connection

__all__ = ["DBusBus", "DBusFactory", "dbus_fixture", "emit"]

REQUEST_NAME_PRIMARY_OWNER = 1
"""RequestName's reply when the name is now ours (the D-Bus specification)."""


@dataclass
class DBusBus:
    address: str
    proc: subprocess.Popen[bytes]
    connections: list[DBusConnection] = field(default_factory=list)

    def connect(self) -> DBusConnection:
        """A blocking jeepney connection to this bus (closed when the bus stops)."""
        conn = open_dbus_connection(self.address)
        self.connections.append(conn)
        return conn

    def own(self, conn: DBusConnection, name: str) -> None:
        """Take the well-known `name` on `conn`."""
        reply = conn.send_and_get_reply(message_bus.RequestName(name, 0), timeout=5)
        if reply.body[0] != REQUEST_NAME_PRIMARY_OWNER:
            raise RuntimeError(f"could not own {name}: RequestName said {reply.body[0]}")

    def has_owner(self, name: str) -> bool:
        conn = self.connect()
        reply = conn.send_and_get_reply(message_bus.NameHasOwner(name), timeout=5)
        return bool(reply.body[0])

    def stop(self) -> None:
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.close()
        self.connections.clear()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class DBusFactory:
    def __init__(self, root: Path, exe: str) -> None:
        self.root = root
        self.exe = exe
        self.buses: list[DBusBus] = []

    def start(self) -> DBusBus:
        where = self.root / f"bus-{len(self.buses)}"
        where.mkdir(parents=True)
        address = f"unix:path={where / 'socket'}"
        read, write = os.pipe()
        proc = subprocess.Popen(
            [
                self.exe,
                "--session",
                "--nofork",
                "--nopidfile",
                f"--address={address}",
                f"--print-address={write}",
            ],
            pass_fds=(write,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(where / "dbus-daemon.log", "ab"),  # noqa: SIM115 (the child keeps it)
        )
        os.close(write)
        with os.fdopen(read, "rb") as printed:
            line = printed.readline().decode().strip()
        if not line:
            proc.kill()
            raise RuntimeError(f"dbus-daemon did not start: see {where / 'dbus-daemon.log'}")
        bus = DBusBus(line, proc)
        self.buses.append(bus)
        return bus

    def stop(self) -> None:
        for bus in self.buses:
            bus.stop()


@pytest.fixture(name="dbus")
def dbus_fixture(tmp_path: Path) -> Iterator[DBusFactory]:
    exe = shutil.which("dbus-daemon")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("dbus-daemon is missing; .ci/run installs Debian's dbus-daemon")
        pytest.skip("no dbus-daemon on this machine (Debian: apt install dbus-daemon)")
    factory = DBusFactory(tmp_path / "dbus", exe)
    try:
        yield factory
    finally:
        factory.stop()


def emit(
    conn: DBusConnection, path: str, interface: str, member: str, signature: str, *body: object
) -> None:
    """Send a signal from `conn`."""
    conn.send(new_signal(DBusAddress(path, interface=interface), member, signature, body))
