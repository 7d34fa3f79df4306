"""A flag that one task waits on: what the spooler needs of asyncio.Event, at less cost.

Every session has a spooler, and each spooler had two asyncio.Events: each Event allocates
its deque of waiters up front, about 740 bytes a spooler in all (tracemalloc at 2 000
sessions). Only the spooler's own task ever waits, so `Wakeup` keeps a flag and, while that
task waits, one future.
"""

from __future__ import annotations

import asyncio

__all__ = ["Wakeup"]


class Wakeup:
    """set / clear / is_set / wait, as asyncio.Event's, for a single waiter."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        if self._waiter is not None:
            raise RuntimeError("Wakeup has one waiter at most")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
