"""session.open_profile_section with MAPI's rules (docs/mapi.md 2 and 11, item 34)."""

from __future__ import annotations

import time
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


def test_a_service_section_is_its_configuration(daemon: DaemonProc, client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    mail = next(r for r in client.services_table(token)["rows"] if r["PR_DISPLAY_NAME"] == "mail")
    uid = mail["PR_SERVICE_UID"]
    handle = client.session_open_profile_section(token, uid)["handle"]
    props = client.object_get_props(token, handle)["props"]
    assert props["PR_SERVICE_NAME"] == "maildir" and props["primary_store"] is True
    assert props["PR_PROFILE_NAME"] == "alpha"
    # Read-only: writes refused; a writer is refused while a reader has it.
    expect(ErrorCode.MAPI_E_NO_ACCESS, client.object_set_props, token, handle, {"x": 1})
    other = client.session_logon("alpha", NEW)["token"]
    expect(ErrorCode.MAPI_E_NO_ACCESS, client.session_open_profile_section, other, uid, 1)
    second_reader = client.session_open_profile_section(other, uid)["handle"]
    client.object_release(token, handle)
    client.object_release(other, second_reader)

    writer = client.session_open_profile_section(token, uid, ["MAPI_MODIFY"])["handle"]
    expect(ErrorCode.MAPI_E_NO_ACCESS, client.session_open_profile_section, other, uid)
    result = client.object_set_props(
        token, writer, {"display_name": "Post", "PR_SERVICE_NAME": "nope"}
    )
    assert result["problems"] == {"PR_SERVICE_NAME": "MAPI_E_COMPUTED"}
    assert client.object_get_props(token, writer, ["display_name"])["props"] == {
        "display_name": "Post"
    }
    assert 'display_name = "Post"' in (daemon.config_dir / "profiles" / "alpha.toml").read_text()
    error = expect(
        ErrorCode.MAPI_E_INVALID_PARAMETER, client.object_set_props, token, writer, {"path": 3}
    )
    assert error.details["errors"][0]["key"] == "path"
    client.session_logoff(token)  # the session's handles go, and with them the lock
    client.session_open_profile_section(other, uid, ["MAPI_MODIFY"])
    # The live session follows the change: its store row is renamed.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        names = {r["PR_DISPLAY_NAME"] for r in client.session_status_table(other)["rows"]}
        if "Post" in names:
            break
        time.sleep(0.05)
    assert "Post" in names


def test_unknown_sections(daemon: DaemonProc, client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    uid = bytes(range(16))
    expect(ErrorCode.MAPI_E_NOT_FOUND, client.session_open_profile_section, token, uid)
    expect(ErrorCode.MAPI_E_INVALID_PARAMETER, client.session_open_profile_section, token, b"x")
    handle = client.session_open_profile_section(token, uid, ["MAPI_MODIFY"])["handle"]
    assert client.object_set_props(token, handle, {"PR_COMMENT_X": "hi", "n": 3}) == {
        "problems": {}
    }
    client.object_release(token, handle)
    again = client.session_open_profile_section(token, uid)["handle"]
    props = client.object_get_props(token, again)["props"]
    assert props["n"] == 3 and props["PR_COMMENT_X"] == "hi"
    text = (daemon.config_dir / "profiles" / "alpha.toml").read_text()
    assert uid.hex() in text
