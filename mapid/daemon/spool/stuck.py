"""Stuck mail: a message waiting in an Outbox longer than `outbox_alert_s` (mapid.toml,
900 s) is loud.

`StuckWatch` runs beside one spooler (spooler.py starts and stops it). Every
min(CHECK_MAX_S, outbox_alert_s / 4) seconds, while that spooler sends its store's queue,
it lists the Outbox (`StoreProvider.queued()`) and keeps each message's submit time in
`QueueAges` (read once per message with `queued_message()`, at most READ_MAX a check).
While some message is older than the limit, the spooler's row says so first:
"2 messages waiting longer than 15 min (oldest 47 min); 2 queued; next try in ...", and
`SessionEnv.on_stuck_mail` (the desktop notifier) hears of it once per episode, when the
first message becomes stuck; once none is, the row says what the spooler does, as before.

`QueueAges` is the one account of how old a spooler's queue is (its count and its oldest
message), for whoever else needs it.

May import: what spool may (spooler.py imports this module, never the reverse).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from mapid.errors import MapiError

if TYPE_CHECKING:
    from mapid.daemon.sessions.session import Session
    from mapid.providers.base import StoreProvider

__all__ = ["CHECK_MAX_S", "QueueAges", "StuckWatch", "duration", "stuck_text"]

log = logging.getLogger("mapid.spooler")

CHECK_MAX_S = 60.0
"""The longest time between two looks at the queue's ages."""
CHECK_MIN_S = 0.25
READ_MAX = 32
"""Queued messages read for their submit time in one check (a big queue takes a few)."""


class QueueAges:
    """When each message of one Outbox was submitted (seconds since the epoch), as far as
    known: a message not read yet counts from when it was first seen in the queue."""

    def __init__(self) -> None:
        self._when: dict[bytes, float] = {}
        self._guessed: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._when)

    def update(self, entryids: Sequence[bytes], now: float | None = None) -> list[bytes]:
        """The queue as it is now (`queued()`): messages gone are forgotten, new ones count
        from `now` until `note` says better; returns those whose time is such a guess."""
        now = time.time() if now is None else now
        present = set(entryids)
        for gone in [e for e in self._when if e not in present]:
            del self._when[gone]
            self._guessed.discard(gone)
        for entryid in entryids:
            if entryid not in self._when:
                self._when[entryid] = now
                self._guessed.add(entryid)
        return [e for e in entryids if e in self._guessed]

    def note(self, entryid: bytes, submitted: datetime | None) -> None:
        """The submit time a store gave (None: it keeps none; the first sight stays)."""
        if entryid in self._when:
            self._guessed.discard(entryid)
            if submitted is not None:
                self._when[entryid] = submitted.timestamp()

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds the oldest queued message has waited; None for an empty queue."""
        if not self._when:
            return None
        now = time.time() if now is None else now
        return max(0.0, now - min(self._when.values()))

    def older_than(self, seconds: float, now: float | None = None) -> tuple[int, float]:
        """How many messages have waited longer than `seconds`, and the oldest one's age."""
        now = time.time() if now is None else now
        ages = [now - when for when in self._when.values()]
        stuck = [age for age in ages if age > seconds]
        return len(stuck), max(stuck, default=0.0)

    def clear(self) -> None:
        self._when.clear()
        self._guessed.clear()


def duration(seconds: float) -> str:
    """ "45 s", "15 min", "3 h": whole units, rounded down (the limit stays exact)."""
    if seconds < 120:
        return f"{math.floor(seconds)} s"
    if seconds < 2 * 3600:
        return f"{math.floor(seconds / 60)} min"
    if seconds < 2 * 86400:
        return f"{math.floor(seconds / 3600)} h"
    return f"{math.floor(seconds / 86400)} days"


def stuck_text(count: int, limit: float, oldest: float) -> str:
    """What the spooler's row says first while mail is stuck (mapictl status shows these
    words: mapid/cli/output.py's STUCK_MAIL matches them)."""
    many = "message" if count == 1 else "messages"
    return f"{count} {many} waiting longer than {duration(limit)} (oldest {duration(oldest)})"


class StuckWatch:
    """Stuck mail in one spooler's queue: its row's text and one notice an episode.

    `own_store()` is the default store while the spooler sends its Outbox (None in
    standby, or without a store); `write(activity)` writes the spooler's row again (the
    spooler's `_set_status`, which asks `decorate` for the words)."""

    def __init__(
        self,
        session: Session,
        own_store: Callable[[], StoreProvider | None],
        write: Callable[[str], None],
    ) -> None:
        self.session = session
        self._own_store = own_store
        self._write = write
        self.ages = QueueAges()
        self.text = ""
        """The stuck-mail words the row shows first ("" while nothing is stuck)."""
        self.activity = "idle"
        """What the spooler says it does ("3 queued; next try in 30 s: ...")."""
        self._task: asyncio.Task[None] | None = None
        self._broken = False

    def decorate(self, activity: str) -> str:
        """The row's PR_STATUS_STRING: the stuck-mail words, then what the spooler does."""
        self.activity = activity
        return f"{self.text}; {activity}" if self.text else activity

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"stuck-mail-{self.session.id}"
            )

    def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its loop is gone already
                task.cancel()
        self.ages.clear()
        self.text = ""

    async def _run(self) -> None:
        while True:
            limit = self.session.env.outbox_alert_s
            await asyncio.sleep(min(CHECK_MAX_S, max(CHECK_MIN_S, limit / 4)))
            try:
                await self.check()
            except (MapiError, TimeoutError) as exc:
                log.debug("session %s: cannot look at the Outbox: %s", self.session.id, exc)
            except Exception:
                if not self._broken:  # once: it would say the same every few seconds
                    log.exception("session %s: the stuck-mail check failed", self.session.id)
                self._broken = True
            else:
                self._broken = False

    async def check(self) -> None:
        """Look at the queue's ages once; say so when mail became stuck or unstuck."""
        session = self.session
        store = self._own_store()
        if store is None:  # no queue of ours (standby: the owner's spooler watches it)
            self.ages.clear()
            self._show("")
            return
        timeout = session.env.provider_timeout
        async with asyncio.timeout(timeout):
            entryids = await store.queued()
        for entryid in self.ages.update(entryids)[:READ_MAX]:
            try:
                async with asyncio.timeout(timeout):
                    message = await store.queued_message(entryid)
            except MapiError:
                self.ages.note(entryid, None)  # gone, or unreadable: its first sight counts
                continue
            self.ages.note(entryid, message.submitted)
        limit = session.env.outbox_alert_s
        count, oldest = self.ages.older_than(limit)
        self._show(stuck_text(count, limit, oldest) if count else "")

    def _show(self, text: str) -> None:
        if text == self.text:
            return
        began = bool(text) and not self.text
        self.text = text
        self._write(self.activity)
        session = self.session
        if began:
            log.warning("session %s (profile %s): %s", session.id, session.profile.name, text)
            tell = session.env.on_stuck_mail
            if tell is not None:
                tell(
                    f"Mail stuck in the Outbox ({session.profile.name})",
                    f"{text}. {self.activity}",
                )
        elif not text:
            log.info("session %s: no mail is stuck in the Outbox any more", session.id)
