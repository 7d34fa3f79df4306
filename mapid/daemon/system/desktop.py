"""Desktop notifications (user mode): org.freedesktop.Notifications.Notify on the session
bus, app name "mapid", with `desktop_notifications = true` in mapid.toml.

Three things are worth a person's attention: new mail in a logged-on session's stores
(`new_mail`: the sender and subject; mail that arrives within COALESCE_S of the first is
one "5 new messages"; a message seen by several sessions of one profile is one message,
by its entry ID), a send that failed for good (`send_failed`), and mail stuck in an Outbox
(`stuck_mail`, once per episode: spool/stuck.py decides).

One connection to the bus (dbus_bus.open_router) stays open between notifications; one
that broke is opened again for the next. No bus, or no notification server on it, is one
log line, never a failure: while it lasts the failures that follow are logged at debug
level, and a bus that could not be reached is tried again only RETRY_S later. Nothing
waits for the desktop: the calls queue the notice and return; one task sends them.

May import: `mapid`'s shared modules only (mapid.dbus_bus) and jeepney.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from jeepney import DBusAddress, HeaderFields, Message, MessageType, new_method_call
from jeepney.io.asyncio import DBusRouter
from jeepney.io.common import RouterClosed

from mapid.dbus_bus import BusUnavailable, open_router

__all__ = [
    "APP_NAME",
    "COALESCE_S",
    "RETRY_S",
    "DesktopNotifier",
    "Notice",
    "sender_and_subject",
]

log = logging.getLogger("mapid.desktop")

APP_NAME = "mapid"
NOTIFICATIONS = DBusAddress(
    "/org/freedesktop/Notifications",
    bus_name="org.freedesktop.Notifications",
    interface="org.freedesktop.Notifications",
)
COALESCE_S = 1.5
"""New mail within this long of the first message of a burst is one notification."""
RETRY_S = 60.0
"""A bus that could not be reached is tried again at the first notification after this."""
CALL_TIMEOUT_S = 5.0
"""How long the notification server may take to answer one call."""
DESCRIBE_TIMEOUT_S = 2.0
"""How long reading one new message's sender and subject may take (else: "New mail")."""
SEEN_MAX = 4096
"""Entry IDs of new mail remembered, so that every session's copy of it is one notice."""
QUEUE_MAX = 64
"""Notices waiting for the bus; more are dropped (a desktop is not a log)."""
URGENCY_NORMAL = 1


@dataclass(frozen=True)
class Notice:
    """One notification: `summary` is plain text, `body` plain text (escaped if the server
    takes markup)."""

    summary: str
    body: str = ""
    icon: str = "mail-unread"
    category: str = "email"


Describe = Callable[[], Awaitable[tuple[str, str] | None]]
"""Reads one new message's (sender, subject); None when it cannot."""


class _Readable(Protocol):
    async def get_props(self, tags: list[str] | None) -> dict[str, Any]: ...
    async def release(self) -> None: ...


class _Opener(Protocol):
    async def open_entry(self, entryid: bytes, flags: int) -> Any: ...


async def sender_and_subject(store: _Opener, entryid: bytes) -> tuple[str, str] | None:
    """The sender (name, else address) and subject of a message, opened through `store`
    (a store provider); None when it cannot be opened."""
    tags = [
        "PR_SUBJECT",
        "PR_SENT_REPRESENTING_NAME",
        "PR_SENDER_NAME",
        "PR_SENT_REPRESENTING_EMAIL_ADDRESS",
        "PR_SENDER_EMAIL_ADDRESS",
    ]
    try:
        message: _Readable = await store.open_entry(entryid, 0)
        try:
            props = await message.get_props(tags)
        finally:
            await message.release()
    except Exception as exc:  # a provider's failure is no reason to lose the notice
        log.debug("cannot read the new message for its notification: %s", exc)
        return None
    sender = next((str(props[t]) for t in tags[1:] if props.get(t)), "")
    return sender, str(props.get("PR_SUBJECT") or "")


def _mail_notice(count: int, described: tuple[str, str] | None) -> Notice:
    if count > 1:
        return Notice(f"{count} new messages", category="email.arrived")
    if described is None:
        return Notice("New mail", category="email.arrived")
    sender, subject = described
    summary = f"New mail from {sender}" if sender else "New mail"
    return Notice(summary, subject or "(no subject)", category="email.arrived")


class DesktopNotifier:
    """Sends the daemon's notices to the desktop; off until `configure(True)`."""

    def __init__(
        self, bus: str = "SESSION", *, coalesce_s: float = COALESCE_S, retry_s: float = RETRY_S
    ) -> None:
        self.bus = bus
        self.enabled = False
        self.coalesce_s = coalesce_s
        self.retry_s = retry_s
        self.shown = 0
        """Notifications the server took (for tests and the log)."""
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._pending: dict[bytes, Describe] = {}
        """New mail of the burst being gathered, by entry ID."""
        self._gather: asyncio.TimerHandle | None = None
        self._queue: asyncio.Queue[Notice | Describe] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._router: DBusRouter | None = None
        self._markup: bool | None = None
        """Whether the server renders markup in the body (GetCapabilities); None: not asked."""
        self._retry_at = 0.0
        self._failing = False

    # -- what the daemon calls -----------------------------------------------------------
    def configure(self, enabled: bool) -> None:
        """desktop_notifications from mapid.toml (at start and at every reload)."""
        if enabled and not self.enabled:
            log.info("desktop notifications on (%s)", _bus_name(self.bus))
        self.enabled = enabled
        if not enabled:
            self._pending.clear()
            if self._gather is not None:
                self._gather.cancel()
                self._gather = None

    def new_mail(self, key: bytes, describe: Describe) -> None:
        """New mail with entry ID `key`; `describe` reads its sender and subject if it
        turns out to be the only message of its burst."""
        if not self.enabled or not self._first_sight(key):
            return
        self._pending[key] = describe
        if self._gather is None:
            loop = asyncio.get_running_loop()
            self._gather = loop.call_later(self.coalesce_s, self._mail_gathered)

    def already_told(self, key: bytes) -> None:
        """Mail that needs no notice of its own (the report of a send_failed)."""
        self._first_sight(key)
        self._pending.pop(key, None)

    def send_failed(self, summary: str, body: str, report: bytes | None = None) -> None:
        """A send that failed for good; `report`: the entry ID of its non-delivery report,
        whose new-mail notice this one replaces."""
        if report is not None:
            self.already_told(report)
        self._put(Notice(summary, body, icon="dialog-error", category="email.bounced"))

    def stuck_mail(self, summary: str, body: str) -> None:
        self._put(Notice(summary, body, icon="dialog-warning", category="email"))

    async def close(self) -> None:
        self.configure(False)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._disconnect()

    # -- gathering -----------------------------------------------------------------------
    def _first_sight(self, key: bytes) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def _mail_gathered(self) -> None:
        self._gather = None
        pending, self._pending = self._pending, {}
        if len(pending) == 1:
            self._put(next(iter(pending.values())))
        elif pending:
            self._put(_mail_notice(len(pending), None))

    def _put(self, item: Notice | Describe) -> None:
        if not self.enabled:
            return
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_MAX)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(self._queue), name="desktop-notifications"
            )
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            log.debug("desktop notification dropped: %d are waiting already", QUEUE_MAX)

    async def _run(self, queue: asyncio.Queue[Notice | Describe]) -> None:
        while True:
            item = await queue.get()
            try:
                if not isinstance(item, Notice):
                    try:
                        async with asyncio.timeout(DESCRIBE_TIMEOUT_S):
                            described = await item()
                    except TimeoutError:
                        described = None
                    item = _mail_notice(1, described)
                if self.enabled:
                    await self._notify(item)
            except Exception:
                log.exception("desktop notification failed")

    # -- the bus -------------------------------------------------------------------------
    async def _notify(self, notice: Notice) -> None:
        for attempt in (1, 2):
            router = await self._connect()
            if router is None:
                return
            try:
                if self._markup is None:
                    self._markup = await self._capabilities(router)
                body = html.escape(notice.body, quote=False) if self._markup else notice.body
                hints = {
                    "urgency": ("y", URGENCY_NORMAL),
                    "category": ("s", notice.category),
                    "desktop-entry": ("s", APP_NAME),
                }
                call = new_method_call(
                    NOTIFICATIONS,
                    "Notify",
                    "susssasa{sv}i",
                    (APP_NAME, 0, notice.icon, notice.summary, body, [], hints, -1),
                )
                reply = await self._call(router, call)
            except (RouterClosed, OSError, EOFError) as exc:
                await self._disconnect()  # the bus went away: once more on a new connection
                log.debug("the connection to %s broke (%s): opening it again", self.bus, exc)
                if attempt == 2:
                    self._failed(f"the connection to {_bus_name(self.bus)} broke: {exc}")
                continue
            except TimeoutError:
                self._failed(f"the notification server did not answer in {CALL_TIMEOUT_S:g} s")
                return
            if reply.header.message_type is MessageType.error:
                self._markup = None  # a server that starts later may say otherwise
                self._failed(_error_text(reply))
                return
            self.shown += 1
            if self._failing:
                log.info("desktop notifications reach the desktop again")
                self._failing = False
            return

    async def _call(self, router: DBusRouter, call: Message) -> Message:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            return await router.send_and_get_reply(call)

    async def _capabilities(self, router: DBusRouter) -> bool | None:
        """Whether the server takes markup in the body; None when it did not say."""
        call = new_method_call(NOTIFICATIONS, "GetCapabilities")
        reply = await self._call(router, call)
        if reply.header.message_type is MessageType.error or not reply.body:
            return None
        return "body-markup" in reply.body[0]

    async def _connect(self) -> DBusRouter | None:
        if self._router is not None:
            return self._router
        now = time.monotonic()
        if now < self._retry_at:
            log.debug("desktop notification not shown: no bus until the next try")
            return None
        stack = contextlib.AsyncExitStack()
        try:
            self._router = await stack.enter_async_context(open_router(self.bus))
        except BusUnavailable as exc:
            self._retry_at = now + self.retry_s
            self._failed(f"{exc} (tried again in {self.retry_s:g} s)")
            return None
        self._stack = stack
        self._markup = None
        return self._router

    async def _disconnect(self) -> None:
        stack, self._stack, self._router = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):  # a broken connection says so on closing
                await stack.aclose()

    def _failed(self, why: str) -> None:
        """One log line for a run of failures; the rest at debug level."""
        if self._failing:
            log.debug("desktop notification not shown: %s", why)
            return
        self._failing = True
        log.warning("desktop notification not shown: %s", why)


def _bus_name(bus: str) -> str:
    return {"SESSION": "the session bus", "SYSTEM": "the system bus"}.get(bus, bus)


def _error_text(reply: Message) -> str:
    name = reply.header.fields.get(HeaderFields.error_name, "an error")
    words = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
    if name == "org.freedesktop.DBus.Error.ServiceUnknown":
        return "no notification server on the session bus"
    return f"{name}: {words}" if words else str(name)
