"""Shared providers (docs/providers.md, "Shared providers"): one logon for every session of
a profile, a row in each session, the last holder logs it off. Against the real daemon,
with a shared test service whose row counts its logons, and with the real Maildir store.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mapid.client import Client
from mapid.constants import ResourceType, StatusCode

from conftest import DEFAULT_CONFIG, DaemonFactory, standard_profile, wait_until

NEW = ["MAPI_NEW_SESSION"]


def shared_profile(root: Path, **config: Any) -> str:
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in config.items())
    return f'[services.together]\nservice = "providers_for_tests:Shared"\n{extra}'


def book_row(client: Client, token: bytes) -> dict[str, Any]:
    rows = client.session_status_table(token)["rows"]
    (row,) = [r for r in rows if r.get("PR_DISPLAY_NAME") == "together"]
    return dict(row)


NO_LINGER = DEFAULT_CONFIG + "shared_linger_s = 0\n"


def test_sessions_of_a_profile_hold_one_logon(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    proc = make_daemon(profiles={"alpha": shared_profile(tmp_path)}, config=NO_LINGER)
    client = proc.client()
    tokens = [client.session_logon("alpha", NEW)["token"] for _ in range(3)]
    for token in tokens:
        row = book_row(client, token)
        assert row["PR_STATUS_STRING"] == "logons=1 logoffs=0"
        assert row["PR_STATUS_CODE"] == StatusCode.STATUS_AVAILABLE
    # Each session has a row of its own: its own entry ID opens it in that session only.
    assert len({book_row(client, t)["PR_ENTRYID"] for t in tokens}) == 1  # numbered alike
    client.session_logoff(tokens[0])
    client.session_logoff(tokens[1])
    later = client.session_logon("alpha", NEW)["token"]  # the third still holds it
    assert book_row(client, later)["PR_STATUS_STRING"] == "logons=1 logoffs=0"
    client.session_logoff(tokens[2])
    client.session_logoff(later)  # the last holder, with no linger: the provider logs off
    assert client.daemon_stats()["shared_logons"] == 0
    again = client.session_logon("alpha", NEW)["token"]
    assert book_row(client, again)["PR_STATUS_STRING"] == "logons=2 logoffs=1"


def test_the_last_holder_leaves_the_logon_lingering_for_the_next(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """shared_linger_s: a client that logs on and off again and again finds the logon up,
    with the row the last session had; when nobody comes, it logs off."""
    config = DEFAULT_CONFIG + "shared_linger_s = 2\n"
    proc = make_daemon(profiles={"alpha": shared_profile(tmp_path)}, config=config)
    client = proc.client()
    first = client.session_logon("alpha", NEW)["token"]
    row = book_row(client, first)
    handle = client.session_open_entry(first, row["PR_ENTRYID"])["handle"]
    client.status_validate_state(first, handle, 0)  # the provider changes its row
    client.session_logoff(first)
    stats = client.daemon_stats()
    assert (stats["shared_logons"], stats["shared_lingering"]) == (1, 1)
    second = client.session_logon("alpha", NEW)["token"]  # well within the linger
    assert book_row(client, second)["PR_STATUS_STRING"] == "validated logons=1 logoffs=0"
    assert client.daemon_stats()["shared_lingering"] == 0  # held again
    client.session_logoff(second)
    wait_until(
        lambda: client.daemon_stats()["shared_logons"] == 0 or None,
        "the lingering logon logged off",
    )
    third = client.session_logon("alpha", NEW)["token"]
    assert book_row(client, third)["PR_STATUS_STRING"] == "logons=2 logoffs=1"


def test_the_stop_logs_lingering_logons_off(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """A lingering logon says its goodbye at the stop (the test service writes a file when
    it logs off), within the stop's deadline rather than after its linger."""
    marker = tmp_path / "logged-off"
    profile = shared_profile(tmp_path, logoff_marker=str(marker))
    proc = make_daemon(
        profiles={"alpha": profile}, config=DEFAULT_CONFIG + "shared_linger_s = 3600\n"
    )
    client = proc.client()
    client.session_logoff(client.session_logon("alpha", NEW)["token"])
    assert client.daemon_stats()["shared_lingering"] == 1
    assert not marker.exists()
    assert proc.stop() == 0  # SIGTERM
    assert marker.read_text() == "logons=1 logoffs=1"


def test_sessions_that_come_while_it_logs_on_wait_for_that_logon(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    proc = make_daemon(profiles={"alpha": shared_profile(tmp_path, delay=0.5)})
    results: list[bytes] = []

    def log_on() -> None:
        with proc.client() as own:
            results.append(own.session_logon("alpha", NEW)["token"])

    threads = [threading.Thread(target=log_on) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 4
    client = proc.client()
    for token in results:
        assert book_row(client, token)["PR_STATUS_STRING"] == "logons=1 logoffs=0"


def test_a_failed_logon_fails_its_session_and_is_not_kept(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    proc = make_daemon(
        profiles={"alpha": shared_profile(tmp_path, fail_first="MAPI_E_FAILONEPROVIDER")}
    )
    client = proc.client()
    first = book_row(client, client.session_logon("alpha", NEW)["token"])
    assert first["PR_STATUS_CODE"] == StatusCode.STATUS_FAILURE
    assert "MAPI_E_FAILONEPROVIDER" in first["PR_STATUS_STRING"]
    second = book_row(client, client.session_logon("alpha", NEW)["token"])
    assert second["PR_STATUS_CODE"] == StatusCode.STATUS_AVAILABLE
    assert second["PR_STATUS_STRING"] == "logons=2 logoffs=0"  # tried again, not remembered


def test_a_row_change_reaches_every_holder(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """More holders than one step of the loop changes (FANOUT_CHUNK, 1000): the change
    reaches the first ones at once and the rest in the next steps, and a session that
    logs on meanwhile starts with the changed row."""
    proc = make_daemon(profiles={"alpha": shared_profile(tmp_path)})
    client = proc.client(timeout=60)
    tokens = [client.session_logon("alpha", NEW)["token"] for _ in range(1100)]
    row = book_row(client, tokens[0])
    handle = client.session_open_entry(tokens[0], row["PR_ENTRYID"])["handle"]
    client.status_validate_state(tokens[0], handle, 0)
    newcomer = client.session_logon("alpha", NEW)["token"]
    wanted = "validated logons=1 logoffs=0"
    assert book_row(client, newcomer)["PR_STATUS_STRING"] == wanted
    for token in [*tokens[:3], *tokens[-3:]]:
        wait_until(
            lambda t=token: book_row(client, t)["PR_STATUS_STRING"] == wanted or None,
            "the change reached every holder",
        )
    rows = [book_row(client, t)["PR_STATUS_STRING"] for t in tokens]
    assert rows == [wanted] * len(tokens)


def test_a_maildir_store_goes_on_for_the_sessions_left(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The real Maildir store, held by two sessions: the first logs off, and the second's
    row still follows the Inbox, as does a third's that logs on afterwards."""
    proc = make_daemon(profiles={"alpha": standard_profile(tmp_path / "a")})
    client = proc.client()
    first, second = (client.session_logon("alpha", NEW)["token"] for _ in range(2))

    def store_row(token: bytes) -> dict[str, Any]:
        rows = client.session_status_table(token)["rows"]
        (row,) = [r for r in rows if r["PR_RESOURCE_TYPE"] == ResourceType.MAPI_STORE_PROVIDER]
        return dict(row)

    assert store_row(first)["PR_STATUS_STRING"].endswith("0 messages in Inbox")
    client.session_logoff(first)
    new = tmp_path / "a" / "Mail" / "new"
    (new / "1.mapid-test").write_bytes(b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n")
    wait_until(
        lambda: store_row(second)["PR_STATUS_STRING"].endswith("1 message in Inbox") or None,
        "the store row of the session left follows the Inbox",
    )
    third = client.session_logon("alpha", NEW)["token"]
    assert store_row(third)["PR_STATUS_STRING"] == store_row(second)["PR_STATUS_STRING"]
