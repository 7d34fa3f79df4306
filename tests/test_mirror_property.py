"""Property: whatever sessions come and go, a StatusMirror ends equal to a fresh snapshot.

Hypothesis draws sequences of logons (private, shared, attaching, no-mail), logoffs (plain
and MAPI_LOGOFF_SHARED) and lease expiries; they run against one real daemon while a mirror
follows the event stream. After each sequence the mirror must hold exactly what a new
`daemon.snapshot` holds, and must not have needed a re-snapshot to get there.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapid.client import Client
from mapid.errors import MapiError
from mapid.mirror import MirrorState, StatusMirror

from conftest import DaemonProc, prepare_daemon, standard_profile

TRANSPORT = '\n[services.out]\nservice = "providers_for_tests:Transport"\n'


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProc, Client]]:
    root = tmp_path_factory.mktemp("mirror")
    proc = prepare_daemon(
        root,
        profiles={
            "alpha": standard_profile(root / "alpha") + TRANSPORT,
            "beta": standard_profile(root / "beta", identity=False),
        },
    ).start()
    yield proc, proc.client()
    proc.close()


Step = tuple[str, Any]

steps = st.lists(
    st.one_of(
        st.tuples(st.just("logon"), st.sampled_from(["alpha", "beta"]), st.booleans()),
        st.tuples(st.just("share"), st.sampled_from(["alpha", "beta"])),
        st.tuples(st.just("attach"), st.booleans()),
        st.tuples(st.just("logoff"), st.integers(0, 20), st.booleans()),
        st.tuples(st.just("expire"), st.sampled_from(["alpha", "beta"])),
    ),
    min_size=1,
    max_size=12,
)


def _normalize(state: MirrorState) -> tuple[dict[str, Any], dict[str, Any]]:
    sessions = {sid: dict(info) for sid, info in state.sessions.items()}
    tables = {sid: sorted(state.rows(sid), key=lambda r: r["PR_ROWID"]) for sid in state.tables}
    tables = {sid: rows for sid, rows in tables.items() if sid in sessions or rows}
    return sessions, tables


def _run(client: Client, tokens: list[bytes], step: Step) -> None:
    kind = step[0]
    if kind == "logon":
        flags = ["MAPI_NEW_SESSION"] + (["MAPI_NO_MAIL"] if step[2] else [])
        tokens.append(client.session_logon(step[1], flags, lease_s=0)["token"])
    elif kind == "share":
        flags = ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"]
        tokens.append(client.session_logon(step[1], flags, lease_s=0)["token"])
    elif kind == "attach":
        flags = ["MAPI_NO_MAIL"] if step[1] else []
        # With no shared session now, MAPI_E_LOGON_FAILED is the right answer.
        with contextlib.suppress(MapiError):
            tokens.append(client.session_logon(None, flags, lease_s=0)["token"])
    elif kind == "logoff" and tokens:
        token = tokens.pop(step[1] % len(tokens))
        # It may have ended already through another member's MAPI_LOGOFF_SHARED.
        with contextlib.suppress(MapiError):
            client.session_logoff(token, ["MAPI_LOGOFF_SHARED"] if step[2] else 0)
    elif kind == "expire":
        client.session_logon(step[1], ["MAPI_NEW_SESSION"], lease_s=0.3)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps)
def test_mirror_ends_equal_to_a_fresh_snapshot(
    live: tuple[DaemonProc, Client], sequence: list[Step]
) -> None:
    proc, client = live
    with StatusMirror(proc.runtime, client=Client(proc.runtime)) as mirror:
        mirror.start()
        resyncs = mirror.resyncs
        tokens: list[bytes] = []
        expiring = any(step[0] == "expire" for step in sequence)
        for step in sequence:
            _run(client, tokens, step)
            mirror.poll(0.01)
        if expiring:
            time.sleep(1.6)  # leases of 0.3 s end within a second after
        mirror.poll(0.3)
        fresh = MirrorState()
        fresh.load_snapshot([dict(client.daemon_snapshot())])
        assert _normalize(mirror.state) == _normalize(fresh)
        assert mirror.state.last_seq == fresh.last_seq
        assert mirror.resyncs == resyncs, mirror.last_error
        for token in tokens:
            with contextlib.suppress(MapiError):
                client.session_logoff(token)


def test_prefix_mirror_follows_one_session(live: tuple[DaemonProc, Client], tmp_path: Path) -> None:
    proc, client = live
    logon = client.session_logon("alpha", ["MAPI_NEW_SESSION"], lease_s=0)
    prefix = f"status.{logon['session']}"
    with StatusMirror(proc.runtime, prefix, client=Client(proc.runtime)) as mirror:
        mirror.start()
        assert set(mirror.tables) == {logon["session"]}
        other = client.session_logon("beta", ["MAPI_NEW_SESSION"], lease_s=0)
        row = client.session_status_table(logon["token"])["rows"][0]
        handle = client.session_open_entry(logon["token"], row["PR_ENTRYID"])["handle"]
        client.status_validate_state(logon["token"], handle, 0)
        client.session_logoff(other["token"])
        mirror.poll(0.3)
        assert set(mirror.tables) == {logon["session"]}
        assert (
            mirror.state.rows(logon["session"])
            == client.session_status_table(logon["token"])["rows"]
        )
        client.session_logoff(logon["token"])
        mirror.poll(0.3)
        assert mirror.state.rows(logon["session"]) == []
