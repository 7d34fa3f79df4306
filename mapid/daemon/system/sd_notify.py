"""The systemd notify protocol (sd_notify(3)): one datagram to $NOTIFY_SOCKET per state.

A few lines of socket code instead of a dependency. It does nothing without NOTIFY_SOCKET
(a daemon started by hand), never raises (systemd's absence must not stop the daemon), and
takes the variables out of the environment so that programs the daemon runs (such as a
password_command) do not inherit them.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger("mapid.daemon.system.sd_notify")

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd matches RELOADING=1 against."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        values = {name: env.pop(name, None) for name in _VARIABLES}
        address = values["NOTIFY_SOCKET"] or ""
        # An abstract socket is named with a leading '@', sent as a NUL byte.
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        self.watchdog_s = self._watchdog(values["WATCHDOG_USEC"], values["WATCHDOG_PID"])
        self._sock: socket.socket | None = None

    @staticmethod
    def _watchdog(usec: str | None, pid: str | None) -> float | None:
        """WATCHDOG_USEC in seconds, when it is meant for this process (WATCHDOG_PID)."""
        if pid and pid != str(os.getpid()):
            return None
        try:
            value = int(usec or "0")
        except ValueError:
            return None
        return value / 1_000_000 if value > 0 else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` lines as one datagram; False when not sent."""
        if self.address is None:
            return False
        data = "\n".join(assignments).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(data, self.address)
        except OSError as exc:
            log.debug("notify %s not sent: %s", assignments[0] if assignments else "", exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self, status: str) -> bool:
        # MONOTONIC_USEC in the same datagram lets systemd tie it to this reload cycle.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
