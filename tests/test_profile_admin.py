"""profiles.* (docs/protocol.md 6.2) with MAPI's rules, against the real daemon and real files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mapid.client import Client
from mapid.errors import ErrorCode, MapiError

from conftest import DaemonProc

NEW = ["MAPI_NEW_SESSION"]


def expect(code: ErrorCode, fn: Any, *args: Any) -> MapiError:
    with pytest.raises(MapiError) as info:
        fn(*args)
    assert info.value.code == code, info.value
    return info.value


def names(client: Client) -> list[str]:
    return [r["PR_DISPLAY_NAME"] for r in client.profiles_table()["rows"]]


def path(daemon: DaemonProc, name: str) -> Path:
    return daemon.config_dir / "profiles" / f"{name}.toml"


def test_create_copy_and_their_rules(daemon: DaemonProc, client: Client) -> None:
    client.profiles_create("gamma")
    assert "gamma" in names(client)
    assert oct(path(daemon, "gamma").stat().st_mode & 0o777) == "0o600"
    assert client.session_logon("gamma", NEW)["profile"] == "gamma"
    expect(ErrorCode.MAPI_E_NO_ACCESS, client.profiles_create, "alpha")
    for bad in ("", " x", "x ", "a/b", ".hidden", "y" * 65):
        expect(ErrorCode.MAPI_E_INVALID_PARAMETER, client.profiles_create, bad)
    client.profiles_copy("alpha", "alpha-copy")
    copy_text = path(daemon, "alpha-copy").read_text()
    assert "[services.contacts]" in copy_text and "[services.mail]" in copy_text
    expect(ErrorCode.MAPI_E_NO_ACCESS, client.profiles_copy, "alpha", "beta")
    expect(ErrorCode.MAPI_E_NOT_FOUND, client.profiles_copy, "nope", "other")


def test_set_default_keeps_the_users_comments(daemon: DaemonProc, client: Client) -> None:
    config = daemon.config_dir / "mapid.toml"
    config.write_text('# my settings\ndefault_profile = "alpha"  # the usual one\nlease_s = 60\n')
    client.daemon_reload()
    client.profiles_set_default("beta")
    assert config.read_text() == (
        '# my settings\ndefault_profile = "beta"  # the usual one\nlease_s = 60\n'
    )
    rows = {r["PR_DISPLAY_NAME"]: r["PR_DEFAULT_PROFILE"] for r in client.profiles_table()["rows"]}
    assert rows == {"alpha": False, "beta": True}
    assert client.session_logon(None, ["MAPI_NEW_SESSION", "MAPI_USE_DEFAULT"])["profile"] == "beta"
    client.profiles_set_default(None)
    assert "default_profile" not in config.read_text()
    expect(ErrorCode.MAPI_E_LOGON_FAILED, client.session_logon, None, ["MAPI_USE_DEFAULT"])
    expect(ErrorCode.MAPI_E_NOT_FOUND, client.profiles_set_default, "nope")


def test_delete_of_an_unused_profile_is_immediate(daemon: DaemonProc, client: Client) -> None:
    client.profiles_delete("beta")
    assert names(client) == ["alpha"]
    assert not path(daemon, "beta").exists()
    expect(ErrorCode.MAPI_E_NOT_FOUND, client.profiles_delete, "beta")


def _wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_delete_of_a_profile_in_use_is_deferred(daemon: DaemonProc, client: Client) -> None:
    logon = client.session_logon("beta", NEW)
    client.profiles_delete("beta")
    assert names(client) == ["alpha"]  # hidden at once
    expect(ErrorCode.MAPI_E_LOGON_FAILED, client.session_logon, "beta", NEW)
    assert path(daemon, "beta").exists()  # the file stays while the session lives
    assert client.session_status_table(logon["token"])["total"] == 5
    pending = (daemon.state_dir / "pending.json").read_text()
    assert "beta" in pending
    client.session_logoff(logon["token"])
    _wait_for(lambda: not path(daemon, "beta").exists())
    assert "beta" not in (daemon.state_dir / "pending.json").read_text()


def test_rename_of_a_profile_in_use_is_deferred(daemon: DaemonProc, client: Client) -> None:
    logon = client.session_logon("beta", NEW)
    client.profiles_rename("beta", "delta")
    assert names(client) == ["alpha", "delta"]
    assert client.session_logon("delta", NEW)["profile"] == "delta"
    assert path(daemon, "beta").exists() and not path(daemon, "delta").exists()
    expect(ErrorCode.MAPI_E_NO_ACCESS, client.profiles_create, "delta")
    expect(ErrorCode.MAPI_E_NO_ACCESS, client.profiles_rename, "alpha", "delta")
    sessions = client.daemon_sessions()["sessions"]
    assert all(info["state"] == "active" for info in sessions)  # nobody is orphaned
    # The "delta" logon above is a second session on the same file: it still holds it.
    client.session_logoff(logon["token"])
    time.sleep(0.5)
    assert path(daemon, "beta").exists()
    delta = [s for s in client.daemon_sessions()["sessions"] if s["profile"] in ("beta", "delta")]
    assert len(delta) == 1


def test_a_pending_delete_survives_a_restart(daemon: DaemonProc, client: Client) -> None:
    client.session_logon("beta", NEW)
    client.profiles_delete("beta")
    assert path(daemon, "beta").exists()
    daemon.stop()
    daemon.start()
    assert not path(daemon, "beta").exists()
    assert names(daemon.client()) == ["alpha"]


def test_renaming_the_default_moves_the_default(daemon: DaemonProc, client: Client) -> None:
    client.profiles_rename("alpha", "omega")
    assert path(daemon, "omega").exists() and not path(daemon, "alpha").exists()
    rows = {r["PR_DISPLAY_NAME"]: r["PR_DEFAULT_PROFILE"] for r in client.profiles_table()["rows"]}
    assert rows == {"beta": False, "omega": True}
