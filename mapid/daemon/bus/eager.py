"""Start a coroutine at once, and make it a task only if it has to wait.

Most ops are `async def` (the provider API is), yet most finish without ever waiting: a
property set on a new message, a release. A task for each costs more than the op (creation,
a trip through the loop, its callbacks). Python 3.12's eager task factory does what this
does; the daemon runs on 3.11, so here is the small part of it the request server needs.

The first step runs in `context`, as it would in the task; a coroutine that waits continues
as a task in the same context, from where it stopped, with the future it waits for.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any


def start(
    coro: Coroutine[Any, Any, None], context: contextvars.Context
) -> asyncio.Task[None] | None:
    """Run `coro` up to its first wait; None if it finished, else the task that goes on.

    Outside a task, `asyncio.current_task()` is None during the first step: code that needs
    a task there (`asyncio.timeout`) must not be started this way.
    """
    try:
        waits_for = context.run(coro.send, None)
    except StopIteration:
        return None
    loop = asyncio.get_running_loop()
    return loop.create_task(_rest(coro, waits_for), context=context)


async def _rest(coro: Coroutine[Any, Any, None], waits_for: Any) -> None:
    await _Resume(coro, waits_for)


class _Resume:
    """Hands the task what the coroutine yields, and the coroutine what the task sends or
    throws, as `await coro` would have from the start."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, None]:
        coro = self._coro
        yielded = self._first
        self._first = None
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # every throw goes on to the coroutine
                try:
                    yielded = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration:
                    return
