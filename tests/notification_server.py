"""A desktop notification server of the tests' own, on a test's dbus-daemon.

`NotificationServer(bus)` owns org.freedesktop.Notifications on `bus` (tests/dbus_daemon.py)
and answers in a thread, with jeepney's blocking API, as a desktop's server does: Notify
(recorded, with a fresh id), GetCapabilities, GetServerInformation, CloseNotification.
Anything else gets org.freedesktop.DBus.Error.UnknownMethod. `stop()` lets the name go.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from dbus_daemon import DBusBus
from jeepney import HeaderFields, Message, MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"


@dataclass(frozen=True)
class Notified:
    """One Notify call, its arguments as the D-Bus specification names them."""

    app_name: str
    replaces_id: int
    app_icon: str
    summary: str
    body: str
    actions: list[str]
    hints: dict[str, Any]
    expire_timeout: int
    sender: str


class NotificationServer:
    def __init__(
        self, bus: DBusBus, capabilities: tuple[str, ...] = ("body", "body-markup")
    ) -> None:
        self.bus = bus
        self.capabilities = list(capabilities)
        self.conn = bus.connect()
        bus.own(self.conn, NAME)
        self._lock = threading.Condition()
        self._calls: list[Notified] = []
        self.members: list[str] = []
        """Every method called, in order."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="notifications", daemon=True)
        self._thread.start()

    @property
    def calls(self) -> list[Notified]:
        with self._lock:
            return list(self._calls)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Notified]:
        """The first `count` notifications, waiting up to `timeout` for them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._calls) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(self._calls)} notification(s) within {timeout} s, not {count}: "
                        f"{self._calls}"
                    )
                self._lock.wait(left)
            return list(self._calls)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.conn.receive(timeout=0.1)
            except TimeoutError:
                continue
            except (OSError, EOFError):
                return
            if msg.header.message_type is MessageType.method_call:
                self._answer(msg)

    def _answer(self, msg: Message) -> None:
        fields = msg.header.fields
        member = fields.get(HeaderFields.member, "")
        interface = fields.get(HeaderFields.interface, NAME)
        self.members.append(member)
        if interface != NAME or fields.get(HeaderFields.path) != PATH:
            reply = new_error(msg, "org.freedesktop.DBus.Error.UnknownObject", "s", ("no",))
        elif member == "Notify":
            with self._lock:
                self._calls.append(
                    Notified(
                        *msg.body[:5],
                        list(msg.body[5]),
                        dict(msg.body[6]),
                        msg.body[7],
                        fields.get(HeaderFields.sender, ""),
                    )
                )
                number = len(self._calls)
                self._lock.notify_all()
            reply = new_method_return(msg, "u", (number,))
        elif member == "GetCapabilities":
            reply = new_method_return(msg, "as", (self.capabilities,))
        elif member == "GetServerInformation":
            reply = new_method_return(msg, "ssss", ("tests", "mapid", "1", "1.2"))
        elif member == "CloseNotification":
            reply = new_method_return(msg)
        else:
            reply = new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (member,))
        self.conn.send(reply)

    def stop(self) -> None:
        """Stop answering and give up the name (a desktop without a server); again, or
        after its bus stopped, it does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(OSError, EOFError):  # the bus is gone: so is the name
            self.conn.send_and_get_reply(message_bus.ReleaseName(NAME), timeout=5)
