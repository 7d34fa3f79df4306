"""What lets the spooler move many messages per trip to the thread pool: the provider API's
default `send_batch`, and `GroupedCalls` (the Maildir store's filing of sent messages)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mapid.providers.base import (
    Identity,
    OutgoingMessage,
    Recipient,
    SendResult,
    TransportFailure,
    TransportProvider,
)
from mapid.providers.grouped_calls import GroupedCalls

from provider_support import Support


def outgoing(address: str) -> OutgoingMessage:
    return OutgoingMessage(
        entryid=address.encode(),
        mime=b"Subject: hi\n\nhello\n",
        recipients=(Recipient(address, address),),
        sender=Identity("Ada Lovelace", "ada@example.org"),
    )


class ScriptedTransport(TransportProvider):
    """send() fails as its script says (by address) and records what it was given."""

    def __init__(self, support: Support, script: dict[str, TransportFailure]) -> None:
        super().__init__(support)
        self.script = script
        self.sent: list[str] = []

    async def send(self, message: OutgoingMessage) -> SendResult:
        address = message.recipients[0].address
        self.sent.append(address)
        failure = self.script.get(address)
        if failure is not None:
            raise failure
        return SendResult(response="250 ok")


def test_the_default_send_batch_sends_one_by_one_and_stops_at_a_temporary_failure(
    tmp_path: Path,
) -> None:
    script = {
        "b@example.org": TransportFailure("550 no such user", permanent=True),
        "d@example.org": TransportFailure("451 try later"),
    }
    transport = ScriptedTransport(Support({}, tmp_path), script)
    batch = [outgoing(f"{c}@example.org") for c in "abcde"]
    outcomes = list(asyncio.run(transport.send_batch(batch)))
    assert transport.sent == ["a@example.org", "b@example.org", "c@example.org", "d@example.org"]
    assert [type(o).__name__ for o in outcomes] == [
        "SendResult",
        "TransportFailure",
        "SendResult",
        "TransportFailure",
    ]
    assert outcomes[1] is script["b@example.org"] and outcomes[3] is script["d@example.org"]


class CountingPool:
    """A run_blocking that counts its trips and can hold one until told."""

    def __init__(self) -> None:
        self.trips: list[list[Any]] = []
        self.hold = threading.Event()
        self.hold.set()

    async def run_blocking(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        self.trips.append(list(args[0]))
        return await asyncio.to_thread(self._held, fn, *args)

    def _held(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.hold.wait(5)
        return fn(*args)


def square(n: int) -> int:
    if n < 0:
        raise ValueError(f"negative: {n}")
    return n * n


def test_calls_made_together_share_one_trip_and_get_their_own_outcomes() -> None:
    pool = CountingPool()
    calls = GroupedCalls(pool.run_blocking, square)

    async def main() -> list[Any]:
        return await asyncio.gather(*(calls(n) for n in (1, 2, -3, 4)), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert outcomes[:2] == [1, 4] and outcomes[3] == 16
    assert isinstance(outcomes[2], ValueError) and "negative: -3" in str(outcomes[2])
    assert pool.trips == [[1, 2, -3, 4]]


def test_calls_made_during_a_trip_go_in_the_next_one() -> None:
    pool = CountingPool()
    calls = GroupedCalls(pool.run_blocking, square)

    async def main() -> list[int]:
        pool.hold.clear()
        first = asyncio.ensure_future(calls(2))
        while not pool.trips:
            await asyncio.sleep(0.001)
        later = [asyncio.ensure_future(calls(n)) for n in (3, 5)]
        await asyncio.sleep(0.01)
        pool.hold.set()
        return [await first, *[await f for f in later]]

    assert asyncio.run(main()) == [4, 9, 25]
    assert pool.trips == [[2], [3, 5]]


def test_a_caller_that_gives_up_does_not_stop_the_others() -> None:
    pool = CountingPool()
    calls = GroupedCalls(pool.run_blocking, square)

    async def main() -> int:
        pool.hold.clear()
        impatient = asyncio.ensure_future(calls(2))
        patient = asyncio.ensure_future(calls(3))
        while not pool.trips:
            await asyncio.sleep(0.001)
        impatient.cancel()
        pool.hold.set()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        return await patient

    assert asyncio.run(main()) == 9


def test_a_failing_pool_fails_every_caller_and_the_next_call_starts_afresh() -> None:
    broken = [True]

    async def run_blocking(fn: Callable[..., Any], /, *args: Any) -> Any:
        if broken[0]:
            raise RuntimeError("cannot schedule new futures after shutdown")
        return fn(*args)

    calls = GroupedCalls(run_blocking, square)

    async def main() -> tuple[list[Any], int]:
        failed = await asyncio.gather(calls(2), calls(3), return_exceptions=True)
        broken[0] = False
        return list(failed), await calls(4)

    failed, after = asyncio.run(main())
    assert all(isinstance(f, RuntimeError) for f in failed)
    assert after == 16
