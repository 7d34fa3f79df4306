"""Keeping a provider's status row true without flooding the status table (row_pacer.py).

Monitors read the status table and its TABLE_ROW_MODIFIED events, so what a row states (a
message count, a contact count, "Connected") must follow the change it describes within a
second or so. A burst of changes (200 deliveries, a vdirsyncer run) must not become one
event each: `RowPacer` runs the provider's push at once for the first change after a quiet
spell, then at most once per `interval` after a push that wrote the row, while changes keep
coming; the push reads the values as they are then, so the last one always reflects the
last change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["PACE_S", "RowPacer"]

PACE_S = 0.5
"""The shortest time between two pushes of one row: two events a second at most."""


class RowPacer:
    """Runs `push` after changes: at once after a quiet spell, else `interval` after the last
    push that wrote the row (it returns whether it did); changes during a push make one
    more. Use it on the event loop."""

    def __init__(
        self,
        push: Callable[[], Awaitable[bool]],
        logger: logging.Logger,
        *,
        interval: float = PACE_S,
    ) -> None:
        self._push = push
        self._logger = logger
        self.interval = interval
        self._dirty = False
        self._next = 0.0
        self._task: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """Something the row states may have changed."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            await self._pushes()
        finally:
            if self._task is asyncio.current_task():
                self._task = None  # a finished task is not kept (one per provider per session)

    async def _pushes(self) -> None:
        loop = asyncio.get_running_loop()
        while self._dirty:
            wait = self._next - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty = False
            try:
                if await self._push():
                    self._next = loop.time() + self.interval
            except asyncio.CancelledError:
                raise
            except Exception:  # the row stays as it was; the next change tries again
                self._logger.exception("updating the status row failed")

    def close(self) -> None:
        """Stop (logoff): a push waiting for its turn is dropped."""
        task, self._task = self._task, None
        self._dirty = False
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its loop is gone already
                task.cancel()
