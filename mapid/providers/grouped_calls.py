"""Blocking calls that share trips to the daemon's thread pool (group commit).

A trip to the pool costs about as much as a small file operation itself (a thread woken, the
GIL handed over twice, the loop woken). When the spooler hands back a batch of sent messages,
the store's filings of all of them should not each pay one: calls made while a trip is under
way wait, and go together in the next trip, one after the other in call order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["GroupedCalls"]

A = TypeVar("A")
R = TypeVar("R")


class GroupedCalls(Generic[A, R]):
    """`await calls(arg)` runs `each(arg)` in the pool, with every other call made meanwhile.

    Each call gets its own result or exception. A caller that gives up (cancelled) does not
    stop the others; the trip under way finishes in its thread either way.
    """

    def __init__(self, run_blocking: Callable[..., Awaitable[Any]], each: Callable[[A], R]) -> None:
        self._run_blocking = run_blocking
        self._each = each
        self._waiting: list[tuple[A, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, arg: A) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((arg, future))
        if self._task is None:  # starts on the loop's next round: calls made now join it
            self._task = loop.create_task(self._trips())
        return await future

    def cancel(self) -> None:
        """Callers still waiting get CancelledError (the store logs off)."""
        if self._task is not None:
            self._task.cancel()
        for _, future in self._waiting:
            future.cancel()
        self._waiting.clear()

    def _all(self, args: list[A]) -> list[tuple[bool, Any]]:
        """In the worker thread: each call in turn; one failing does not stop the rest."""
        outcomes: list[tuple[bool, Any]] = []
        for arg in args:
            try:
                outcomes.append((True, self._each(arg)))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes

    async def _trips(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    outcomes = await self._run_blocking(self._all, [arg for arg, _ in group])
                except BaseException as exc:  # the pool failed us: every caller hears it
                    for _, future in group + self._waiting:
                        if future.done():
                            continue
                        if isinstance(exc, asyncio.CancelledError):
                            future.cancel()
                        else:
                            future.set_exception(exc)
                    self._waiting.clear()
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    return
                for (_, future), (ok, value) in zip(group, outcomes, strict=True):
                    if future.done():
                        continue  # its caller gave up
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._task = None
