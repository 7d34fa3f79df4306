"""services.* writes (docs/protocol.md 6.3) with MAPI's rules, against the real daemon and files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mapid.client import Client
from mapid.constants import ResourceFlags, ResourceType, ServiceFlags
from mapid.errors import ErrorCode, MapiError

from conftest import DaemonFactory, DaemonProc, standard_profile

NEW = ["MAPI_NEW_SESSION"]


def expect(code: ErrorCode, client: Client, op: str, args: dict[str, Any], **kw: Any) -> MapiError:
    with pytest.raises(MapiError) as info:
        client.call(op, args, **kw)
    assert info.value.code == code, info.value
    return info.value


def services(client: Client, profile: str) -> dict[str, dict[str, Any]]:
    return {r["PR_DISPLAY_NAME"]: r for r in client.services_table(profile=profile)["rows"]}


def rows(client: Client, token: bytes) -> dict[str, dict[str, Any]]:
    return {r["PR_DISPLAY_NAME"]: r for r in client.session_status_table(token)["rows"]}


def test_create_configure_delete_with_a_live_session(
    daemon: DaemonProc, client: Client, tmp_path: Path
) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    profile = daemon.config_dir / "profiles" / "alpha.toml"
    profile.write_text("# my own comment\n" + profile.read_text())
    client.daemon_reload()
    created = client.call(
        "services.create",
        {"profile": "alpha", "service_name": "vcard", "config": {"path": str(tmp_path / "x")}},
    )
    assert len(created["service_uid"]) == 16
    text = profile.read_text()
    assert text.startswith("# my own comment\n") and "[services.vcard]" in text
    assert services(client, "alpha")["vcard"]["PR_SERVICE_UID"] == created["service_uid"]
    assert rows(client, token)["vcard"]["PR_RESOURCE_TYPE"] == ResourceType.MAPI_AB_PROVIDER
    again = client.call("services.create", {"profile": "alpha", "service_name": "vcard"})
    assert "[services.vcard-2]" in profile.read_text()

    # A bad value is refused with the key and why, and nothing is written.
    before = profile.read_text()
    error = expect(
        ErrorCode.MAPI_E_INVALID_PARAMETER,
        client,
        "services.configure",
        {"service_uid": created["service_uid"], "config": {"identity": {"email": "x"}}},
        token=token,
    )
    keys = [e["key"] for e in error.details["errors"]]
    assert keys == ["identity.display_name", "identity.email"]
    assert profile.read_text() == before

    client.call(
        "services.configure",
        {
            "service_uid": created["service_uid"],
            "config": {"identity": {"display_name": "Ada", "email": "ada@x.org"}},
        },
        token=token,
    )
    assert 'email = "ada@x.org"' in profile.read_text()
    assert rows(client, token)["vcard"]["PR_IDENTITY_DISPLAY"] == "Ada"

    client.call("services.delete", {"service_uid": again["service_uid"]}, token=token)
    client.call("services.delete", {"service_uid": created["service_uid"]}, token=token)
    assert "vcard" not in rows(client, token) and "vcard-2" not in rows(client, token)
    assert "[services.vcard" not in profile.read_text()
    assert profile.read_text().startswith("# my own comment\n")


def test_create_errors(client: Client) -> None:
    expect(
        ErrorCode.MAPI_E_NOT_FOUND,
        client,
        "services.create",
        {"profile": "alpha", "service_name": "ews"},
    )
    expect(
        ErrorCode.MAPI_E_INVALID_PARAMETER,
        client,
        "services.create",
        {"profile": "alpha", "service_name": "vcard", "config": {"path": 3}},
    )
    expect(
        ErrorCode.MAPI_E_NOT_FOUND,
        client,
        "services.create",
        {"profile": "nope", "service_name": "vcard"},
    )
    expect(
        ErrorCode.MAPI_E_NOT_FOUND,
        client,
        "services.delete",
        {"profile": "alpha", "service_uid": b"\0" * 16},
    )


def test_copy_into_another_profile(daemon: DaemonProc, client: Client) -> None:
    mail = services(client, "alpha")["mail"]
    copied = client.call(
        "services.copy",
        {"profile": "alpha", "service_uid": mail["PR_SERVICE_UID"], "to_profile": "beta"},
    )
    beta = services(client, "beta")
    assert beta["maildir"]["PR_SERVICE_UID"] == copied["service_uid"]
    assert "[services.maildir]" in (daemon.config_dir / "profiles" / "beta.toml").read_text()
    expect(
        ErrorCode.MAPI_E_NOT_FOUND,
        client,
        "services.copy",
        {"profile": "alpha", "service_uid": mail["PR_SERVICE_UID"], "to_profile": "nope"},
    )


def test_set_primary_identity(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    profile = standard_profile(tmp_path / "a") + (
        '\n[services.more]\nservice = "vcard"\n'
        f'path = "{tmp_path / "more"}"\n'
        'identity = { display_name = "Second", email = "second@example.org" }\n'
    )
    proc = make_daemon(profiles={"alpha": profile})
    client = proc.client()
    table = services(client, "alpha")
    assert table["contacts"]["PR_RESOURCE_FLAGS"] & ServiceFlags.SERVICE_PRIMARY_IDENTITY
    client.call(
        "services.set_primary_identity",
        {"profile": "alpha", "service_uid": table["more"]["PR_SERVICE_UID"]},
    )
    table = services(client, "alpha")
    assert table["more"]["PR_RESOURCE_FLAGS"] & ServiceFlags.SERVICE_PRIMARY_IDENTITY
    assert not table["contacts"]["PR_RESOURCE_FLAGS"] & ServiceFlags.SERVICE_PRIMARY_IDENTITY
    token = client.session_logon("alpha", NEW)["token"]
    flagged = [
        name
        for name, row in rows(client, token).items()
        if row["PR_RESOURCE_FLAGS"] & ResourceFlags.STATUS_PRIMARY_IDENTITY
    ]
    assert flagged == ["more"]
    expect(
        ErrorCode.MAPI_E_NO_ACCESS,
        client,
        "services.set_primary_identity",
        {"profile": "alpha", "service_uid": table["mail"]["PR_SERVICE_UID"]},
    )
    client.call("services.set_primary_identity", {"profile": "alpha", "service_uid": None})
    token = client.session_logon("alpha", NEW)["token"]
    assert not any(
        row["PR_RESOURCE_FLAGS"] & ResourceFlags.STATUS_PRIMARY_IDENTITY
        for row in rows(client, token).values()
    )


def test_transport_order(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    profile = standard_profile(tmp_path / "a") + (
        '\n[services.one]\nservice = "providers_for_tests:Transport"\n'
        '\n[services.two]\nservice = "providers_for_tests:Transport"\n'
    )
    proc = make_daemon(profiles={"alpha": profile})
    client = proc.client()

    def transports() -> list[tuple[int, str, bytes]]:
        found = client.services_providers(profile="alpha")["rows"]
        return sorted(
            (r["PR_PROVIDER_ORDINAL"], r["PR_DISPLAY_NAME"], r["PR_PROVIDER_UID"])
            for r in found
            if r["PR_RESOURCE_TYPE"] == ResourceType.MAPI_TRANSPORT_PROVIDER
        )

    before = transports()
    assert [name for _o, name, _u in before] == ["one", "two"]
    uids = [uid for _o, _n, uid in before]
    expect(
        ErrorCode.MAPI_E_BUSY,
        client,
        "services.transport_order",
        {"profile": "alpha", "provider_uids": uids[:1]},
    )
    expect(
        ErrorCode.MAPI_E_NOT_FOUND,
        client,
        "services.transport_order",
        {"profile": "alpha", "provider_uids": [uids[0], b"\1" * 16]},
    )
    client.call("services.transport_order", {"profile": "alpha", "provider_uids": uids[::-1]})
    after = transports()
    assert [name for _o, name, _u in after] == ["two", "one"]
    assert [uid for _o, _n, uid in after] == uids[::-1]
    assert [o for o, _n, _u in after] == [o for o, _n, _u in before]  # the same places


def test_prefer_last_and_single_copy(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    profile = standard_profile(tmp_path / "a") + (
        '\n[services.late]\nservice = "providers_for_tests:PreferLast"\n'
        '\n[services.early]\nservice = "providers_for_tests:Transport"\n'
        '\n[services.one]\nservice = "providers_for_tests:OnlyOne"\n'
    )
    proc = make_daemon(profiles={"alpha": profile})
    client = proc.client()
    found = client.services_providers(profile="alpha")["rows"]
    order = sorted(
        (r["PR_PROVIDER_ORDINAL"], r["PR_DISPLAY_NAME"])
        for r in found
        if r["PR_RESOURCE_TYPE"] == ResourceType.MAPI_TRANSPORT_PROVIDER
    )
    assert [name for _o, name in order] == ["early", "late"]  # STATUS_XP_PREFER_LAST
    expect(
        ErrorCode.MAPI_E_NO_ACCESS,
        client,
        "services.create",
        {"profile": "alpha", "service_name": "providers_for_tests:OnlyOne"},
    )
    one = services(client, "alpha")["one"]
    expect(  # CopyMsgService into a profile that holds it already
        ErrorCode.MAPI_E_NO_ACCESS,
        client,
        "services.copy",
        {"profile": "alpha", "service_uid": one["PR_SERVICE_UID"], "to_profile": "alpha"},
    )
