"""D-Bus, for the few things mapid asks of the desktop and of logind: jeepney's asyncio
API (pure Python, no GLib main loop), on the session or the system bus.

A machine without the bus, or a bus without the peer, is normal (a server has no
session bus; a container has no logind): every failure to reach it is `BusUnavailable`,
which callers log and carry on from, never a failure of the daemon.

- `open_router(bus)`: an async context manager, a jeepney DBusRouter on "SESSION" or
  "SYSTEM" (the addresses from DBUS_SESSION_BUS_ADDRESS / DBUS_SYSTEM_BUS_ADDRESS, as
  libdbus reads them), or a bus address.
- `SignalWatch(bus, rule, on_signal)`: one task that subscribes to a signal and calls
  `on_signal(body)` on the loop for each; it ends quietly when the bus is missing. (A bus
  that goes away later leaves it waiting, harmlessly: jeepney's router does not tell its
  filters, and a bus restart is rare enough not to watch for.)
- `watch_resume(on_resume)`: logind's PrepareForSleep(false) on the system bus, the word
  that the machine woke up (only logind can own org.freedesktop.login1, so the match on
  that sender is the check).

May import: the standard library and jeepney; it is a shared module (tests/test_layout.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from jeepney import MatchRule
from jeepney.bus_messages import message_bus
from jeepney.io.asyncio import DBusRouter, Proxy, open_dbus_router

__all__ = [
    "CONNECT_TIMEOUT_S",
    "PREPARE_FOR_SLEEP",
    "BusUnavailable",
    "SignalWatch",
    "open_router",
    "watch_resume",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
"""How long connecting and saying Hello may take before the bus counts as missing."""


PREPARE_FOR_SLEEP = MatchRule(
    type="signal",
    sender="org.freedesktop.login1",
    interface="org.freedesktop.login1.Manager",
    member="PrepareForSleep",
    path="/org/freedesktop/login1",
)
"""logind's signal around a suspend: PrepareForSleep(true) before, (false) after."""


class BusUnavailable(Exception):
    """The bus cannot be reached (no address, no socket, refused, timed out)."""


@contextlib.asynccontextmanager
async def open_router(bus: str) -> AsyncIterator[DBusRouter]:
    """A router on `bus` ("SESSION", "SYSTEM" or an address); BusUnavailable if not."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            router = await asyncio.wait_for(
                stack.enter_async_context(open_dbus_router(bus)), CONNECT_TIMEOUT_S
            )
        except (OSError, KeyError, EOFError, ValueError, TimeoutError) as exc:
            raise BusUnavailable(_why(bus, exc)) from None
        yield router


def _why(bus: str, exc: BaseException) -> str:
    name = {"SESSION": "the session bus", "SYSTEM": "the system bus"}.get(bus, bus)
    if isinstance(exc, KeyError):
        return f"no {name}: DBUS_SESSION_BUS_ADDRESS is not set"
    if isinstance(exc, TimeoutError):
        return f"{name} did not answer within {CONNECT_TIMEOUT_S:g} s"
    return f"cannot reach {name}: {exc}"


class SignalWatch:
    """Calls `on_signal(body)` for every signal matching `rule` on `bus`, until stopped."""

    def __init__(
        self, bus: str, rule: MatchRule, on_signal: Callable[[tuple[Any, ...]], None]
    ) -> None:
        self._bus = bus
        self._rule = rule
        self._on_signal = on_signal
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        """Set once the bus has the match rule: signals from then on are seen."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its loop is gone already
                task.cancel()

    async def _run(self) -> None:
        try:
            async with open_router(self._bus) as router:
                # Matched here without the sender: a message carries its sender's unique
                # name (":1.42"), and only the bus knows which well-known name it owns.
                local = MatchRule(
                    type="signal",
                    interface=self._rule.header_fields.get("interface"),
                    member=self._rule.header_fields.get("member"),
                    path=self._rule.header_fields.get("path"),
                )
                with router.filter(local, bufsize=16) as queue:
                    await Proxy(message_bus, router).AddMatch(self._rule)
                    self.subscribed.set()
                    while True:
                        message = await queue.get()
                        self._on_signal(tuple(message.body))
        except BusUnavailable as exc:
            log.info("not watching %s: %s", self._rule.header_fields.get("member", "?"), exc)
        except (OSError, EOFError) as exc:
            log.info("D-Bus connection ended: %s", exc)


def watch_resume(on_resume: Callable[[], None], bus: str = "SYSTEM") -> SignalWatch:
    """A SignalWatch calling `on_resume()` when logind says the machine woke up."""

    def heard(body: tuple[Any, ...]) -> None:
        if body and body[0] is False:
            on_resume()

    return SignalWatch(bus, PREPARE_FOR_SLEEP, heard)
