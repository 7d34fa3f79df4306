"""A snapshot too large for one part comes in parts, all at one `seq` (docs/protocol.md 6.1)."""

from __future__ import annotations

import asyncio

import pytest

from mapid import AsyncClient, MapiError
from mapid.errors import ErrorCode

from conftest import DaemonProc

SESSIONS = 800  # about 1.8 KB each: more than the 1 MiB of one part (snapshot.PART_BUDGET)


async def _log_on_many(daemon: DaemonProc, count: int) -> None:
    async with AsyncClient(daemon.runtime, timeout=60) as client:
        gate = asyncio.Semaphore(32)

        async def one() -> None:
            async with gate:
                await client.session_logon("beta", ["MAPI_NEW_SESSION"], lease_s=0)

        await asyncio.gather(*(one() for _ in range(count)))


def test_a_large_snapshot_comes_in_parts_at_one_seq(daemon: DaemonProc) -> None:
    asyncio.run(_log_on_many(daemon, SESSIONS))
    client = daemon.client(timeout=30)
    parts = [dict(client.daemon_snapshot())]
    while parts[-1].get("next"):
        cursor = parts[-1]["next"]
        # Changes between parts do not reach the parts: they are frozen at the first seq.
        client.session_logon("beta", ["MAPI_NEW_SESSION"], lease_s=0)
        parts.append(dict(client.daemon_snapshot(cursor=cursor)))
    assert len(parts) >= 2
    assert {p["seq"] for p in parts} == {parts[0]["seq"]}
    assert {p["epoch"] for p in parts} == {parts[0]["epoch"]}
    ids = [s["session"] for p in parts for s in p["sessions"]]
    assert len(ids) == len(set(ids)) == SESSIONS
    for part in parts:
        assert set(part["status"]) == {s["session"] for s in part["sessions"]}
        assert all(len(rows) == 5 for rows in part["status"].values())
    topics = {t for p in parts for t in p["topics"]}
    assert topics == {f"{kind}.{sid}" for sid in ids for kind in ("session", "status")}
    with pytest.raises(MapiError) as info:
        client.daemon_snapshot(cursor=parts[-2]["next"])
    assert info.value.code == ErrorCode.MAPI_E_NOT_FOUND
    # A prefix that selects one session fits in one part.
    one = client.daemon_snapshot(prefix=f"status.{ids[0]}")
    assert "next" not in one and [s["session"] for s in one["sessions"]] == [ids[0]]
