"""The read-only admin ops: profiles.table and services.available, .table, .providers."""

from __future__ import annotations

from typing import Any

import pytest

from mapid.client import Client
from mapid.constants import ResourceType, ServiceFlags
from mapid.errors import ErrorCode, MapiError

from conftest import DaemonFactory, standard_profile


def expect(code: ErrorCode, fn: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(MapiError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value


def test_profiles_table_marks_the_default(client: Client) -> None:
    table = client.profiles_table()
    assert table["total"] == 2
    rows = {r["PR_DISPLAY_NAME"]: r for r in table["rows"]}
    assert rows["alpha"]["PR_DEFAULT_PROFILE"] is True
    assert rows["beta"]["PR_DEFAULT_PROFILE"] is False
    only = client.profiles_table(
        {"restriction": {"prop": "PR_DEFAULT_PROFILE", "op": "eq", "value": True}}
    )
    assert [r["PR_DISPLAY_NAME"] for r in only["rows"]] == ["alpha"]


def test_services_available_lists_the_built_in_services(client: Client) -> None:
    services = {s["name"]: s for s in client.services_available()["services"]}
    assert {"vcard", "maildir"} <= set(services)
    vcard = services["vcard"]
    assert vcard["config_schema"]["required"] == ["path"]
    assert vcard["providers"][0]["resource_type"] == ResourceType.MAPI_AB_PROVIDER
    assert services["maildir"]["flags"] & ServiceFlags.SERVICE_NO_PRIMARY_IDENTITY


def test_services_table_by_profile_and_by_token(client: Client) -> None:
    by_name = client.services_table(profile="alpha")
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
    by_token = client.services_table(token)
    assert by_name == by_token
    rows = {r["PR_DISPLAY_NAME"]: r for r in by_name["rows"]}
    assert rows["contacts"]["PR_SERVICE_NAME"] == "vcard"
    assert rows["contacts"]["PR_RESOURCE_FLAGS"] & ServiceFlags.SERVICE_PRIMARY_IDENTITY
    assert rows["mail"]["PR_RESOURCE_FLAGS"] & ServiceFlags.SERVICE_DEFAULT_STORE
    assert len(rows["mail"]["PR_SERVICE_UID"]) == 16
    # The UIDs are derived from profile and key: the same in every daemon, every start.
    again = client.services_table(profile="alpha")
    assert again["rows"][0]["PR_SERVICE_UID"] == by_name["rows"][0]["PR_SERVICE_UID"]


def test_services_providers_of_one_service(make_daemon: DaemonFactory, tmp_path: Any) -> None:
    profile = standard_profile(tmp_path / "p") + (
        '\n[services.half]\nservice = "providers_for_tests:FailOne"\n'
    )
    proc = make_daemon(profiles={"alpha": profile})
    client = proc.client()
    everything = client.services_providers(profile="alpha")
    assert [r["PR_PROVIDER_ORDINAL"] for r in everything["rows"]] == [0, 1, 2, 3]
    half = next(
        r for r in client.services_table(profile="alpha")["rows"] if r["PR_DISPLAY_NAME"] == "half"
    )
    mine = client.services_providers(profile="alpha", service_uid=half["PR_SERVICE_UID"])
    assert [r["PR_RESOURCE_TYPE"] for r in mine["rows"]] == [
        ResourceType.MAPI_AB_PROVIDER,
        ResourceType.MAPI_STORE_PROVIDER,
    ]
    assert {r["PR_SERVICE_UID"] for r in mine["rows"]} == {half["PR_SERVICE_UID"]}
    expect(
        ErrorCode.MAPI_E_NOT_FOUND,
        client.services_providers,
        profile="alpha",
        service_uid=b"\0" * 16,
    )


def test_admin_ops_need_a_token_or_a_profile(client: Client) -> None:
    expect(ErrorCode.MAPI_E_INVALID_PARAMETER, client.services_table)
    expect(ErrorCode.MAPI_E_NOT_FOUND, client.services_table, profile="nope")
    expect(ErrorCode.MAPI_E_END_OF_SESSION, client.services_table, b"\0" * 32)
