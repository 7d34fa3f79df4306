"""Live sessions follow their profile file on reload (docs/design.md 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mapid.client import Client
from mapid.constants import ResourceType, StatusCode
from mapid.mirror import StatusMirror

from conftest import DaemonProc


def rows_by_name(client: Client, token: bytes) -> dict[str, dict[str, Any]]:
    return {r["PR_DISPLAY_NAME"]: r for r in client.session_status_table(token)["rows"]}


def profile_path(daemon: DaemonProc, name: str) -> Path:
    return daemon.config_dir / "profiles" / f"{name}.toml"


def test_added_removed_and_changed_services_reach_live_sessions(
    daemon: DaemonProc, client: Client, tmp_path: Path
) -> None:
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
    other = client.session_logon("beta", ["MAPI_NEW_SESSION"])["token"]
    beta_before = rows_by_name(client, other)
    path = profile_path(daemon, "alpha")
    text = path.read_text()
    more = tmp_path / "more"
    added = text + f'\n[services.more]\nservice = "vcard"\npath = "{more}"\n'
    path.write_text(added)
    report = client.daemon_reload()
    assert report["changed"] == ["alpha"] and report["ok"]
    rows = rows_by_name(client, token)
    assert rows["more"]["PR_RESOURCE_TYPE"] == ResourceType.MAPI_AB_PROVIDER
    assert rows["more"]["PR_STATUS_CODE"] & StatusCode.STATUS_AVAILABLE
    assert rows_by_name(client, other) == beta_before  # another profile's session: untouched

    # A changed configuration: the provider re-reads it (validate_state CONFIG_CHANGED).
    changed = added.replace('display_name = "Ada Lovelace"', 'display_name = "Ada King"')
    assert changed != added
    path.write_text(changed)
    client.daemon_reload()
    assert rows_by_name(client, token)["contacts"]["PR_IDENTITY_DISPLAY"] == "Ada King"

    # A removed section: its provider logs off and its row goes.
    without_mail = (
        changed.split("\n[services.mail]")[0]
        + f'\n[services.more]\nservice = "vcard"\npath = "{more}"\n'
    )
    path.write_text(without_mail)
    client.daemon_reload()
    rows = rows_by_name(client, token)
    assert "mail" not in rows and "more" in rows
    assert not any(r["PR_RESOURCE_TYPE"] == ResourceType.MAPI_STORE_PROVIDER for r in rows.values())

    # A key whose service changed is logged off and on again as the new service.
    swapped = without_mail.replace(
        '[services.more]\nservice = "vcard"', '[services.more]\nservice = "ews"'
    )
    path.write_text(swapped)
    client.daemon_reload()
    more_row = rows_by_name(client, token)["more"]
    assert more_row["PR_RESOURCE_TYPE"] == ResourceType.MAPI_PROFILE_PROVIDER
    assert "not installed" in more_row["PR_STATUS_STRING"]
    # New sessions get the new version too.
    fresh = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
    assert set(rows_by_name(client, fresh)) == set(rows_by_name(client, token))


def test_a_live_change_publishes_row_events(daemon: DaemonProc, client: Client) -> None:
    logon = client.session_logon("alpha", ["MAPI_NEW_SESSION"])
    with StatusMirror(daemon.runtime, client=daemon.client()) as mirror:
        mirror.start()
        before = {r["PR_DISPLAY_NAME"] for r in mirror.state.rows(logon["session"])}
        assert "mail" in before
        path = profile_path(daemon, "alpha")
        path.write_text(path.read_text().split("\n[services.mail]")[0] + "\n")
        client.daemon_reload()
        mirror.poll(0.5)
        mirrored = mirror.state.rows(logon["session"])
        assert mirrored == client.session_status_table(logon["token"])["rows"]
        assert "mail" not in {r["PR_DISPLAY_NAME"] for r in mirrored}
        assert mirror.resyncs == 1  # followed by events alone, no second snapshot
