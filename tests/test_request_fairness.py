"""The request server reads a burst in slices and lets the rest of the loop run between them
(bus/server.py, `_schedule_drain`): what a request starts runs while the burst goes on, not
after it. Counted in requests, not timed: a spooler that a logon starts has run its first
pass before a few hundred more requests have been served.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mapid import AsyncClient
from mapid.daemon.bus.server import DRAIN_BATCH

from conftest import DaemonProc

LOGONS = 3_000
IN_FLIGHT = 64
SLACK = 4 * DRAIN_BATCH + IN_FLIGHT
"""Requests that may be served after a logon before its spooler's first pass: a slice read
in the step of the loop that started it and one in the next, with room to spare."""


def spooler_status(table: dict[str, Any]) -> str:
    (row,) = [r for r in table["rows"] if r.get("PR_DISPLAY_NAME") == "MAPI Spooler"]
    return str(row.get("PR_STATUS_STRING", ""))


def test_tasks_a_burst_of_logons_starts_run_during_the_burst(daemon: DaemonProc) -> None:
    async def main() -> list[str]:
        async with AsyncClient(daemon.runtime, timeout=60.0) as client:
            gate = asyncio.Semaphore(IN_FLIGHT)
            tokens: list[bytes] = []
            statuses: list[str] = []

            async def log_on() -> None:
                async with gate:
                    reply = await client.session_logon("alpha", ["MAPI_NEW_SESSION"])
                    tokens.append(bytes(reply["token"]))
                    if len(tokens) > SLACK + 1:  # the first is the queue's sender
                        # A session that logged on SLACK requests ago, asked while the
                        # burst goes on: its spooler has had its pass.
                        earlier = tokens[len(tokens) - SLACK]
                        table = await client.session_status_table(earlier)
                        statuses.append(spooler_status(table))

            await asyncio.gather(*(log_on() for _ in range(LOGONS)))
            return statuses

    statuses = asyncio.run(main())
    assert len(statuses) >= LOGONS - SLACK - 1
    late = [s for s in statuses if not s.startswith("standby")]
    assert not late, f"{len(late)} of {len(statuses)} spoolers had not run: {late[:3]}"
