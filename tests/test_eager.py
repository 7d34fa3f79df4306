"""mapid/daemon/bus/eager.py: a coroutine runs at once, and goes on as a task only if it waits,
with what `await` would have given it: results, exceptions, cancellation, its context."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from mapid.daemon.bus import eager

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("WHO", default="nobody")


def test_a_coroutine_that_never_waits_runs_inline_in_its_context() -> None:
    seen: list[str] = []

    async def quick() -> None:
        seen.append(WHO.get())

    async def main() -> None:
        context = contextvars.copy_context()
        context.run(WHO.set, "session-1")
        assert eager.start(quick(), context) is None
        assert seen == ["session-1"]  # done before start() returned
        assert WHO.get() == "nobody"  # the caller's context is untouched

    asyncio.run(main())


def test_a_coroutine_that_waits_goes_on_as_a_task_in_the_same_context() -> None:
    steps: list[tuple[str, str]] = []
    gate: asyncio.Future[str] | None = None

    async def slow() -> None:
        steps.append(("before", WHO.get()))
        WHO.set("changed in step one")
        assert gate is not None
        got = await gate  # a real future: the task must wait for it, then get its result
        await asyncio.sleep(0)  # a bare yield too
        steps.append((got, WHO.get()))

    async def main() -> None:
        nonlocal gate
        gate = asyncio.get_running_loop().create_future()
        context = contextvars.copy_context()
        context.run(WHO.set, "session-2")
        task = eager.start(slow(), context)
        assert task is not None and not task.done()
        assert steps == [("before", "session-2")]
        gate.set_result("after")
        await task
        assert steps[-1] == ("after", "changed in step one")

    asyncio.run(main())


def test_exceptions_and_cancellation_reach_the_coroutine() -> None:
    cleaned: list[str] = []

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    async def waits_forever() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            cleaned.append("finally ran")

    async def main() -> None:
        failing = eager.start(fails_later(), contextvars.copy_context())
        assert failing is not None
        with pytest.raises(ValueError, match="boom"):
            await failing
        stuck = eager.start(waits_forever(), contextvars.copy_context())
        assert stuck is not None
        await asyncio.sleep(0)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        assert cleaned == ["finally ran"]

    asyncio.run(main())
