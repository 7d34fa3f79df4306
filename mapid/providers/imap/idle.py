"""The Inbox's IDLE connection (RFC 2177), on a thread of its own.

`IdleWatch` opens a second connection (IMAPClient is blocking, and a connection in IDLE
can do nothing else), EXAMINEs the Inbox and waits in IDLE. New mail (EXISTS) it fetches
itself: it ends the IDLE, reads the messages from the UIDNEXT it knows on (sync.py
`fetch_arrivals`) and hands them to the event loop as `arrived(uidvalidity, records)`, then
IDLEs again. Its view of the Inbox is already up to date when the server says EXISTS, so
this costs two quick commands, where the command connection would first select the Inbox
and have the server rescan it (a third of a second on a Dovecot Maildir of 10 000). Whatever
else the server says about the mailbox (EXPUNGE, FETCH) is handed over with
`loop.call_soon_threadsafe(changed)`, and so is every arrival after it: the account then
syncs the Inbox on its command connection, which also keeps the cache's marks right.

IDLE is renewed every 25 minutes (servers may end it after 29). A BYE, an
end of file or a socket error is handed over as `lost(reason)`: the account goes offline
at once. `stop()` (from the loop) sets a flag and shuts the socket down, which wakes the
thread's poll; the thread then closes its connection and ends.

`SuspendWatch` notices a resume from suspend on the loop: every SUSPEND_CHECK_S it reads
two clocks, and when the wall clock (CLOCK_BOOTTIME where there is one: it counts the time
suspended and no one sets it; else time.time()) ran ahead of the monotonic one, which stops
while the machine sleeps, by more than SUSPEND_SLACK_S, the machine slept: the account
reconnects at once instead of finishing a backoff or trusting connections that the server
or a NAT on the way has likely dropped meanwhile. `clock_jump` is the pure test, fed the
readings, so a test needs no sleeping machine. logind's PrepareForSleep(false) on the
system bus says it sooner, where there is a logind (mapid.dbus_bus.watch_resume; the
account holds both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from imapclient import IMAPClient

from mapid.providers.imap.cache import Record
from mapid.providers.imap.config import ImapSettings
from mapid.providers.imap.connection import (
    LINK_ERRORS,
    Login,
    close_quietly,
    describe,
    open_connection,
)
from mapid.providers.imap.names import INBOX
from mapid.providers.imap.sync import fetch_arrivals

__all__ = [
    "REIDLE_S",
    "SUSPEND_CHECK_S",
    "SUSPEND_SLACK_S",
    "IdleWatch",
    "SuspendWatch",
    "clock_jump",
    "clocks",
]

REIDLE_S = 25 * 60.0
"""Renew IDLE this often: RFC 2177 lets a server end it after 29 minutes."""
SUSPEND_CHECK_S = 2.0
"""How often SuspendWatch reads the clocks: a resume is noticed within this long."""
SUSPEND_SLACK_S = 3.0
"""A gap between the clocks below this is no suspend (a slewing NTP moves milliseconds)."""
_CHANGES = (b"EXISTS", b"EXPUNGE", b"FETCH", b"RECENT", b"VANISHED")


class IdleWatch:
    """One IDLE connection on the Inbox, reporting to the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: ImapSettings,
        password: Login | None,
        context: ssl.SSLContext | None,
        changed: Callable[[], None],
        lost: Callable[[str], None],
        logger: logging.Logger,
        arrived: Callable[[int, list[Record]], None] | None = None,
    ) -> None:
        self._loop = loop
        self._arrived = arrived
        self._validity = 0
        self._uidnext = 0
        self._settings = settings
        self._password = password
        self._context = context
        self._changed = changed
        self._lost = lost
        self._log = logger
        self._stopping = threading.Event()
        self._client: IMAPClient | None = None
        self._thread = threading.Thread(target=self._run, name="mapid-imap-idle", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the watch (from the loop): the thread wakes and closes its connection."""
        self._stopping.set()
        client = self._client
        if client is not None:
            with contextlib.suppress(OSError):
                client.socket().shutdown(socket.SHUT_RDWR)

    def _report(self, callback: Callable[..., None], *args: object) -> None:
        if self._stopping.is_set():
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: the daemon is stopping
            self._loop.call_soon_threadsafe(callback, *args)

    def _run(self) -> None:
        try:
            self._client = open_connection(self._settings, self._password, self._context)
            if self._stopping.is_set():
                return
            status = self._client.select_folder(INBOX, readonly=True)
            self._validity = int(status.get(b"UIDVALIDITY", 0))
            self._uidnext = int(status.get(b"UIDNEXT", 0))
            self._report(self._changed)  # what came between the sync and this EXAMINE
            while not self._stopping.is_set():
                self._idle_once(self._client)
        except LINK_ERRORS as exc:
            if not self._stopping.is_set():
                self._report(self._lost, describe(exc))
        except Exception as exc:  # a protocol surprise: the account reconnects
            self._log.warning("IDLE on %s failed: %r", self._settings.where, exc)
            self._report(self._lost, describe(exc))
        finally:
            client, self._client = self._client, None
            if client is not None:
                close_quietly(client)

    def _idle_once(self, client: IMAPClient) -> None:
        """One IDLE of up to REIDLE_S seconds."""
        client.idle()
        deadline = time.monotonic() + REIDLE_S
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            asked = time.monotonic()
            responses = client.idle_check(timeout=left)
            if self._stopping.is_set():
                return
            for response in responses:
                if len(response) >= 1 and response[0] == b"BYE":
                    raise EOFError("the server said BYE")  # no DONE: it is going away
            if (
                self._arrived is not None
                and self._uidnext
                and any(len(r) >= 2 and r[1] == b"EXISTS" for r in responses)
            ):
                client.idle_done()
                self._fetch_arrivals(client)
                return
            if any(len(r) >= 2 and r[1] in _CHANGES for r in responses):
                self._report(self._changed)
            elif not responses and time.monotonic() - asked < left - 0.5:
                break  # woke with nothing to read: an end of file? idle_done will tell
        if not self._stopping.is_set():
            client.idle_done()  # raises on a dead connection

    def _fetch_arrivals(self, client: IMAPClient) -> None:
        """New mail, fetched here (module docstring); the command connection syncs after."""
        assert self._arrived is not None
        records, self._uidnext = fetch_arrivals(client, self._uidnext)
        if records:
            self._report(self._arrived, self._validity, records)
        self._report(self._changed)


Clocks = tuple[float, float]
"""(wall, monotonic) seconds, read together."""


def clocks() -> Clocks:
    """(CLOCK_BOOTTIME, or time.time() without one; time.monotonic())."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    wall = time.clock_gettime(boottime) if boottime is not None else time.time()
    return wall, time.monotonic()


def clock_jump(before: Clocks, after: Clocks, slack: float = SUSPEND_SLACK_S) -> float:
    """How many seconds the wall clock ran ahead of the monotonic one between two readings:
    the length of a suspend in between, or 0.0 when that is within `slack` (a clock set
    back, or slewed, is no suspend)."""
    ahead = (after[0] - before[0]) - (after[1] - before[1])
    return ahead if ahead > slack else 0.0


class SuspendWatch:
    """Calls `resumed(seconds)` on the loop once the machine woke from a suspend."""

    def __init__(
        self,
        resumed: Callable[[float], None],
        *,
        interval: float = SUSPEND_CHECK_S,
        read: Callable[[], Clocks] = clocks,
    ) -> None:
        self._resumed = resumed
        self._interval = interval
        self._read = read
        self._task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its loop is gone already
                task.cancel()

    async def _run(self) -> None:
        last = self._read()
        while True:
            await asyncio.sleep(self._interval)
            now = self._read()
            jump, last = clock_jump(last, now), now
            if jump:
                self._resumed(jump)
