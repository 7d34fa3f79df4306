"""The client library: blocking and asyncio clients, their errors, resends, notifications."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from mapid import AsyncClient, Client, DaemonUnreachable, MapiError, RequestTimedOut
from mapid.errors import ErrorCode
from mapid.mirror import MirrorState, Resync

from conftest import DaemonFactory, DaemonProc


def test_no_connection_file_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnreachable) as info:
        Client(tmp_path)
    assert "mapid run" in str(info.value)


def test_a_stopped_daemon_times_out_and_a_dead_one_is_unreachable(
    make_daemon: DaemonFactory,
) -> None:
    proc = make_daemon()
    client = proc.client(timeout=0.6)
    pid = proc.proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(RequestTimedOut) as info:
            client.daemon_ping()
        assert info.value.op == "daemon.ping"
        assert 0.5 < time.monotonic() - started < 2
    finally:
        os.kill(pid, signal.SIGCONT)
    assert client.daemon_ping() == {}
    proc.stop(signal.SIGKILL)
    with pytest.raises(DaemonUnreachable):
        client.daemon_ping()


def test_a_resend_keeps_the_id_and_runs_once(make_daemon: DaemonFactory) -> None:
    """A daemon paused through the first send answers the resend from the same request."""
    proc = make_daemon()
    client = proc.client(timeout=3.0, retries=5)
    before = len(client.daemon_sessions()["sessions"])
    pid = proc.proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    loop_client = client

    async def resume_later() -> None:
        await asyncio.sleep(1.2)
        os.kill(pid, signal.SIGCONT)

    async def main() -> object:
        resume = asyncio.get_running_loop().create_task(resume_later())
        result = await asyncio.to_thread(loop_client.session_logon, "alpha", ["MAPI_NEW_SESSION"])
        await resume
        return result

    try:
        logon = asyncio.run(main())
    finally:
        os.kill(pid, signal.SIGCONT)
    assert isinstance(logon, dict)
    sessions = client.daemon_sessions()["sessions"]
    assert len(sessions) == before + 1
    stats = client.daemon_stats()
    assert stats["requests"] > stats["errors"]


def test_mapi_errors_carry_everything(client: Client) -> None:
    with pytest.raises(MapiError) as info:
        client.session_logon("nope", ["MAPI_NEW_SESSION"])
    error = info.value
    assert error.code == ErrorCode.MAPI_E_LOGON_FAILED
    assert error.hresult == 0x80040111
    assert error.retryable is False
    assert error.details["profile"] == "nope"


def test_async_client_runs_calls_concurrently(daemon: DaemonProc) -> None:
    async def main() -> None:
        async with AsyncClient(daemon.runtime) as client:
            logons = await asyncio.gather(
                *(client.session_logon("alpha", ["MAPI_NEW_SESSION"]) for _ in range(8))
            )
            assert len({bytes(x["token"]) for x in logons}) == 8
            tables = await asyncio.gather(
                *(client.session_status_table(x["token"]) for x in logons)
            )
            assert all(t["total"] == 5 for t in tables)
            token = logons[0]["token"]
            await client.session_advise(token, ["fnevExtended"])
            await client.session_logoff(token)
            note = await client.recv_notification(timeout=5)
            assert note is not None and note["event"] == "fnevExtended"
            with pytest.raises(MapiError) as info:
                await client.session_renew(token)
            assert info.value.code == ErrorCode.MAPI_E_END_OF_SESSION
            identity = await client.session_query_identity(logons[1]["token"])
            assert identity.warning is None

    asyncio.run(main())


def test_async_client_sends_with_the_compact_requests(daemon: DaemonProc) -> None:
    """Messages created with their props and recipients and submitted with release, three
    at once on one AsyncClient: each is queued and leaves no handle behind."""

    async def main() -> None:
        async with AsyncClient(daemon.runtime) as client:
            token = (await client.session_logon("alpha", ["MAPI_NEW_SESSION"]))["token"]
            rows = (await client.session_msg_stores_table(token))["rows"]
            store = await client.session_open_msg_store(token, rows[0]["PR_ENTRYID"], ["MDB_WRITE"])
            drafts_id = store["props"]["PR_IPM_DRAFTS_ENTRYID"]
            drafts = (await client.session_open_entry(token, drafts_id, ["MAPI_MODIFY"]))["handle"]

            async def send(i: int) -> tuple[int, bytes]:
                created = await client.folder_create_message(
                    token, drafts, {"PR_SUBJECT": f"async {i}"}, [{"PR_EMAIL_ADDRESS": "g@h.org"}]
                )
                assert created["problems"] == {}
                queued = await client.message_submit(token, created["handle"], release=True)
                return int(created["handle"]), bytes(queued["entryid"])

            sent = await asyncio.gather(*(send(i) for i in range(3)))
            assert len({entryid for _, entryid in sent}) == 3
            for handle, _ in sent:
                with pytest.raises(MapiError) as info:
                    await client.object_get_props(token, handle)
                assert info.value.code == ErrorCode.MAPI_E_INVALID_OBJECT
            left = await client.container_contents_table(token, drafts)
            assert left["total"] == 0

    asyncio.run(main())


def test_async_client_errors(make_daemon: DaemonFactory) -> None:
    proc = make_daemon()
    pid = proc.proc.pid  # type: ignore[union-attr]

    async def main() -> None:
        async with AsyncClient(proc.runtime, timeout=0.5) as client:
            assert await client.daemon_ping() == {}
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(RequestTimedOut):
                    await client.daemon_ping()
            finally:
                os.kill(pid, signal.SIGCONT)
            proc.stop(signal.SIGKILL)
            with pytest.raises(DaemonUnreachable):
                await client.daemon_ping()

    asyncio.run(main())


# -- the clone recipe's bookkeeping, event by event ---------------------------------------


def _snapshot(seq: int = 5, epoch: str = "e1") -> list[dict[str, object]]:
    row = {"PR_INSTANCE_KEY": b"\0\0\0\1", "PR_ROWID": 1, "PR_STATUS_CODE": 1}
    return [
        {
            "epoch": epoch,
            "seq": seq,
            "sessions": [{"session": "s1", "members": 1}],
            "status": {"s1": [row]},
            "topics": {"status.s1": 4, "session.s1": 3},
            "config": {"gen": 1},
        }
    ]


def _event(
    seq: int, kind: str, prev: int, epoch: str = "e1", **fields: object
) -> dict[str, object]:
    return {"v": 1, "epoch": epoch, "seq": seq, "ts": 0.0, "type": kind, "prev": prev, **fields}


def test_mirror_state_applies_in_order_and_drops_old_news() -> None:
    state = MirrorState()
    state.load_snapshot(_snapshot())
    assert not state.apply("status.s1", _event(4, "TABLE_ROW_DELETED", 0))
    row = {"PR_INSTANCE_KEY": b"\0\0\0\1", "PR_ROWID": 1, "PR_STATUS_CODE": 4}
    assert state.apply(
        "status.s1",
        _event(6, "TABLE_ROW_MODIFIED", 4, instance_key=row["PR_INSTANCE_KEY"], row=row),
    )
    assert state.rows("s1") == [row]
    assert state.apply("session.s1", _event(7, "logoff", 3, info={}))
    assert "s1" not in state.sessions and "s1" not in state.tables


def test_mirror_state_sees_gaps_epochs_and_silent_heartbeats() -> None:
    state = MirrorState()
    state.load_snapshot(_snapshot())
    with pytest.raises(Resync):
        state.apply("status.s1", _event(7, "TABLE_ROW_DELETED", 4, instance_key=b"\0\0\0\1"))
    with pytest.raises(Resync):
        state.apply("status.s1", _event(6, "TABLE_ROW_DELETED", 4, epoch="e2"))
    with pytest.raises(Resync):
        state.apply("hb", {"epoch": "e1", "seq": 9, "type": "heartbeat"})
    assert not state.apply("hb", {"epoch": "e1", "seq": 5, "type": "heartbeat"})


def test_prefix_mirror_state_checks_prev_per_topic() -> None:
    state = MirrorState(prefix="status.s1")
    state.load_snapshot(_snapshot())
    # Other topics' events took seqs 6 to 9: no gap for this topic.
    assert state.apply("status.s1", _event(10, "TABLE_ROW_DELETED", 4, instance_key=b"\0\0\0\1"))
    assert state.rows("s1") == []
    assert not state.apply("hb", {"epoch": "e1", "seq": 50, "type": "heartbeat"})
    with pytest.raises(Resync):
        state.apply("status.s1", _event(12, "TABLE_ROW_ADDED", 11))
