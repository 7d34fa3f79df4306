"""MAPI's logon, logoff, status-table and identity rules against the real daemon.

Numbers in the test names are the items of docs/mapi.md 11.
"""

from __future__ import annotations

from typing import Any

import pytest

from mapid import entryid
from mapid.client import Client
from mapid.constants import (
    LogonFlags,
    ResourceFlags,
    ResourceMethods,
    ResourceType,
    StatusCode,
)
from mapid.errors import ErrorCode, MapiError

from conftest import DaemonFactory, DaemonProc, standard_profile

NEW = ["MAPI_NEW_SESSION"]


def rows(client: Client, token: bytes, **table: Any) -> list[dict[str, Any]]:
    return list(client.session_status_table(token, table or None)["rows"])


def by_type(client: Client, token: bytes, kind: ResourceType) -> list[dict[str, Any]]:
    return rows(
        client,
        token,
        restriction={"prop": "PR_RESOURCE_TYPE", "op": "eq", "value": int(kind)},
    )


def expect(code: ErrorCode, fn: Any, *args: Any, **kwargs: Any) -> MapiError:
    with pytest.raises(MapiError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value
    return info.value


# -- logon (items 4 to 12) ---------------------------------------------------------------


def test_04_no_name_no_default_no_shared_fails(client: Client) -> None:
    expect(ErrorCode.MAPI_E_LOGON_FAILED, client.session_logon, None, NEW)
    expect(ErrorCode.MAPI_E_LOGON_FAILED, client.session_logon, None, 0)


def test_05_use_default_takes_the_default_profile(client: Client) -> None:
    logon = client.session_logon(None, ["MAPI_NEW_SESSION", "MAPI_USE_DEFAULT"])
    assert logon["profile"] == "alpha"


def test_05_use_default_without_a_default_fails(make_daemon: DaemonFactory, tmp_path: Any) -> None:
    proc = make_daemon(config="", profiles={"only": standard_profile(tmp_path / "only")})
    client = proc.client()
    error = expect(
        ErrorCode.MAPI_E_LOGON_FAILED,
        client.session_logon,
        None,
        ["MAPI_NEW_SESSION", "MAPI_USE_DEFAULT"],
    )
    assert "default" in error.message


def test_06_explicit_profile_never_substitutes_the_default(client: Client) -> None:
    expect(
        ErrorCode.MAPI_E_LOGON_FAILED,
        client.session_logon,
        None,
        ["MAPI_NEW_SESSION", "MAPI_EXPLICIT_PROFILE"],
    )
    # With MAPI_USE_DEFAULT as well, the default is asked for explicitly.
    both = client.session_logon(
        None, ["MAPI_NEW_SESSION", "MAPI_EXPLICIT_PROFILE", "MAPI_USE_DEFAULT"]
    )
    assert both["profile"] == "alpha"


@pytest.mark.parametrize("name", ["x" * 65, " alpha", "alpha ", ""])
def test_07_bad_profile_names(client: Client, name: str) -> None:
    if name == "":
        expect(ErrorCode.MAPI_E_LOGON_FAILED, client.session_logon, name, NEW)
    else:
        expect(ErrorCode.MAPI_E_INVALID_PARAMETER, client.session_logon, name, NEW)


def test_unknown_profile_fails_with_details(client: Client) -> None:
    error = expect(ErrorCode.MAPI_E_LOGON_FAILED, client.session_logon, "nope", NEW)
    assert error.details == {"profile": "nope", "reason": "not_found"}


def test_08_a_password_argument_is_ignored(client: Client) -> None:
    result = client.call(
        "session.logon", {"profile": "alpha", "flags": NEW, "password": "secret", "lease_s": 0}
    )
    assert result["profile"] == "alpha"


def test_09_allow_others_publishes_the_shared_session(client: Client) -> None:
    first = client.session_logon("alpha", ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"])
    assert first["shared"] is True
    attached = client.session_logon(None, 0)
    assert attached["session"] == first["session"]
    assert attached["token"] != first["token"]
    sessions = {s["session"]: s for s in client.daemon_sessions()["sessions"]}
    assert sessions[first["session"]]["members"] == 2


def test_10_without_new_session_the_shared_session_wins_over_the_name(client: Client) -> None:
    shared = client.session_logon("alpha", ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"])
    other = client.session_logon("beta", 0)
    assert other["session"] == shared["session"]
    assert other["profile"] == "alpha"


def test_11_new_session_never_attaches(client: Client) -> None:
    shared = client.session_logon("alpha", ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"])
    private = client.session_logon("alpha", NEW)
    assert private["session"] != shared["session"]
    assert private["shared"] is False


def test_a_later_shared_logon_takes_the_place_and_the_old_keeps_members(client: Client) -> None:
    old = client.session_logon("alpha", ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"])
    member = client.session_logon(None, 0)
    new = client.session_logon("beta", ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"])
    assert client.session_logon(None, 0)["session"] == new["session"]
    # The old session still serves its members.
    assert rows(client, member["token"])
    sessions = {s["session"]: s for s in client.daemon_sessions()["sessions"]}
    assert sessions[old["session"]]["members"] == 2


def test_12_members_keep_their_own_flags(make_daemon: DaemonFactory, tmp_path: Any) -> None:
    profile = standard_profile(tmp_path / "p") + (
        '\n[services.out]\nservice = "providers_for_tests:Transport"\n'
    )
    proc = make_daemon(profiles={"alpha": profile})
    client = proc.client()
    nomail = client.session_logon(
        "alpha", ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS", "MAPI_NO_MAIL"]
    )
    assert by_type(client, nomail["token"], ResourceType.MAPI_TRANSPORT_PROVIDER) == []
    assert client.session_enum_adr_types(nomail["token"])["types"] == []
    mail = client.session_logon(None, 0)
    assert mail["session"] == nomail["session"]
    transports = by_type(client, mail["token"], ResourceType.MAPI_TRANSPORT_PROVIDER)
    assert len(transports) == 1
    assert client.session_enum_adr_types(mail["token"])["types"] == ["X-TEST"]
    spooler = by_type(client, mail["token"], ResourceType.MAPI_SPOOLER)[0]
    assert spooler["PR_STATUS_CODE"] & StatusCode.STATUS_AVAILABLE
    # The last mail-enabled member leaving takes the transports with it.
    client.session_logoff(mail["token"])
    assert by_type(client, nomail["token"], ResourceType.MAPI_TRANSPORT_PROVIDER) == []
    spooler = by_type(client, nomail["token"], ResourceType.MAPI_SPOOLER)[0]
    assert spooler["PR_STATUS_CODE"] & StatusCode.STATUS_FAILURE


# -- provider logon rules (items 14 to 18) ------------------------------------------------


def _profile_with(tmp_path: Any, *sections: str) -> str:
    return standard_profile(tmp_path / "p") + "".join(f"\n{s}\n" for s in sections)


def _row_named(all_rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in all_rows if r.get("PR_DISPLAY_NAME") == name]


def test_14_address_books_then_stores_then_transports(
    make_daemon: DaemonFactory, tmp_path: Any
) -> None:
    profile = (
        '[services.out]\nservice = "providers_for_tests:Transport"\n'
        + '[services.mail]\nservice = "maildir"\npath = "'
        + str(tmp_path / "M")
        + '"\n[services.book]\nservice = "providers_for_tests:Unconfigured"\nconfigured = true\n'
    )
    proc = make_daemon(profiles={"alpha": profile})
    client = proc.client()
    token = client.session_logon("alpha", NEW)["token"]
    kinds = [r["PR_RESOURCE_TYPE"] for r in rows(client, token)][3:]
    assert kinds == [
        ResourceType.MAPI_AB_PROVIDER,
        ResourceType.MAPI_STORE_PROVIDER,
        ResourceType.MAPI_TRANSPORT_PROVIDER,
    ]


def test_15_unconfigured_gets_one_configure_and_one_retry(
    make_daemon: DaemonFactory, tmp_path: Any
) -> None:
    proc = make_daemon(
        profiles={
            "alpha": _profile_with(
                tmp_path,
                '[services.fixme]\nservice = "providers_for_tests:Unconfigured"',
                '[services.hopeless]\nservice = "providers_for_tests:NeverConfigured"',
            )
        }
    )
    client = proc.client()
    all_rows = rows(client, client.session_logon("alpha", NEW)["token"])
    fixed = _row_named(all_rows, "fixme")[0]
    assert fixed["PR_STATUS_CODE"] == StatusCode.STATUS_AVAILABLE
    assert fixed["PR_STATUS_STRING"] == "attempts=2"
    hopeless = _row_named(all_rows, "hopeless")[0]
    assert hopeless["PR_STATUS_CODE"] == StatusCode.STATUS_FAILURE
    assert "MAPI_E_UNCONFIGURED" in hopeless["PR_STATUS_STRING"]
    assert hopeless["PR_RESOURCE_METHODS"] == 0


def test_16_a_failure_disables_the_whole_service(make_daemon: DaemonFactory, tmp_path: Any) -> None:
    proc = make_daemon(
        profiles={
            "alpha": _profile_with(
                tmp_path,
                '[services.broken]\nservice = "providers_for_tests:FailOne"\n'
                'fail_with = "MAPI_E_CALL_FAILED"',
                '[services.crash]\nservice = "providers_for_tests:Crashing"',
            )
        }
    )
    client = proc.client()
    all_rows = rows(client, client.session_logon("alpha", NEW)["token"])
    for name in ("broken", "crash"):
        service_rows = _row_named(all_rows, name)
        assert len(service_rows) == 2, service_rows  # the book and the store
        for row in service_rows:
            assert row["PR_STATUS_CODE"] == StatusCode.STATUS_FAILURE
            assert row["PR_STATUS_STRING"].startswith("service disabled")
    # The daemon kept serving, and the good services are up.
    assert _row_named(all_rows, "contacts")[0]["PR_STATUS_CODE"] & StatusCode.STATUS_AVAILABLE
    assert client.daemon_ping() == {}


def test_17_failoneprovider_disables_only_that_provider(
    make_daemon: DaemonFactory, tmp_path: Any
) -> None:
    proc = make_daemon(
        profiles={
            "alpha": _profile_with(
                tmp_path, '[services.half]\nservice = "providers_for_tests:FailOne"'
            )
        }
    )
    client = proc.client()
    half = _row_named(rows(client, client.session_logon("alpha", NEW)["token"]), "half")
    by_kind = {r["PR_RESOURCE_TYPE"]: r for r in half}
    assert by_kind[ResourceType.MAPI_AB_PROVIDER]["PR_STATUS_CODE"] == StatusCode.STATUS_AVAILABLE
    store = by_kind[ResourceType.MAPI_STORE_PROVIDER]
    assert store["PR_STATUS_CODE"] == StatusCode.STATUS_FAILURE
    assert "MAPI_E_FAILONEPROVIDER" in store["PR_STATUS_STRING"]


def test_a_hanging_provider_times_out(make_daemon: DaemonFactory, tmp_path: Any) -> None:
    proc = make_daemon(
        config='default_profile = "alpha"\nprovider_timeout = 0.5\n',
        profiles={
            "alpha": _profile_with(
                tmp_path, '[services.slow]\nservice = "providers_for_tests:Hanging"'
            )
        },
    )
    client = proc.client()
    slow = _row_named(rows(client, client.session_logon("alpha", NEW)["token"]), "slow")[0]
    assert slow["PR_STATUS_CODE"] == StatusCode.STATUS_FAILURE
    assert "timed out" in slow["PR_STATUS_STRING"]


def test_a_service_that_is_not_installed_has_one_failure_row(
    make_daemon: DaemonFactory, tmp_path: Any
) -> None:
    proc = make_daemon(
        profiles={"alpha": _profile_with(tmp_path, '[services.ghost]\nservice = "ews"')}
    )
    client = proc.client()
    ghost = _row_named(rows(client, client.session_logon("alpha", NEW)["token"]), "ghost")
    assert len(ghost) == 1
    row = ghost[0]
    assert row["PR_RESOURCE_TYPE"] == ResourceType.MAPI_PROFILE_PROVIDER
    assert row["PR_PROVIDER_DLL_NAME"] == "ews"
    assert row["PR_RESOURCE_METHODS"] == 0
    assert row["PR_STATUS_CODE"] == StatusCode.STATUS_FAILURE
    assert "not installed" in row["PR_STATUS_STRING"]


def test_18_no_mail_has_no_transports_and_a_failing_spooler(
    make_daemon: DaemonFactory, tmp_path: Any
) -> None:
    proc = make_daemon(
        profiles={
            "alpha": _profile_with(
                tmp_path, '[services.out]\nservice = "providers_for_tests:Transport"'
            )
        }
    )
    client = proc.client()
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION", "MAPI_NO_MAIL"])["token"]
    assert by_type(client, token, ResourceType.MAPI_TRANSPORT_PROVIDER) == []
    spooler = by_type(client, token, ResourceType.MAPI_SPOOLER)
    assert len(spooler) == 1 and spooler[0]["PR_STATUS_CODE"] & StatusCode.STATUS_FAILURE
    mail = client.session_logon("alpha", NEW)["token"]
    assert len(by_type(client, mail, ResourceType.MAPI_TRANSPORT_PROVIDER)) == 1


# -- logoff (items 19, 21 to 23) -----------------------------------------------------------


def test_19_after_logoff_every_op_ends_the_session(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    client.session_logoff(token)
    for call in (
        lambda: client.session_status_table(token),
        lambda: client.session_query_identity(token),
        lambda: client.session_renew(token),
        lambda: client.session_logoff(token),
    ):
        expect(ErrorCode.MAPI_E_END_OF_SESSION, call)


def test_20_handles_die_with_the_session(client: Client) -> None:
    shared = client.session_logon("alpha", ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"])
    other = client.session_logon(None, 0)
    entry = rows(client, shared["token"])[0]["PR_ENTRYID"]
    handle = client.session_open_entry(other["token"], entry)["handle"]
    client.session_logoff(shared["token"], ["MAPI_LOGOFF_SHARED"])
    expect(ErrorCode.MAPI_E_END_OF_SESSION, client.object_get_props, other["token"], handle)


def test_21_logoff_shared_sends_critical_error_to_the_others(daemon: DaemonProc) -> None:
    owner, watcher = daemon.client(), daemon.client()
    first = owner.session_logon("alpha", ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"])
    second = watcher.session_logon(None, 0)
    connection = watcher.session_advise(second["token"], ["fnevCriticalError"])["connection"]
    owner.session_logoff(first["token"], ["MAPI_LOGOFF_SHARED"])
    note = watcher.recv_notification(timeout=5)
    assert note is not None
    assert note["event"] == "fnevCriticalError"
    assert note["connection"] == connection
    assert note["session"] == first["session"]
    assert note["error"]["code"] == "MAPI_E_END_OF_SESSION"
    expect(ErrorCode.MAPI_E_END_OF_SESSION, watcher.session_renew, second["token"])


def test_22_logoff_shared_on_a_private_session_is_a_plain_logoff(client: Client) -> None:
    shared = client.session_logon("alpha", ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"])
    member = client.session_logon(None, 0)
    private = client.session_logon("beta", NEW)
    client.session_logoff(private["token"], ["MAPI_LOGOFF_SHARED"])
    assert rows(client, member["token"])  # the shared session is untouched
    assert rows(client, shared["token"])


def test_22_a_plain_logoff_of_a_sharer_only_detaches_it(client: Client) -> None:
    shared = client.session_logon("alpha", ["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS"])
    member = client.session_logon(None, 0)
    client.session_logoff(shared["token"])
    assert rows(client, member["token"])
    sessions = {s["session"]: s for s in client.daemon_sessions()["sessions"]}
    assert sessions[shared["session"]]["members"] == 1


def test_23_own_logoff_sends_extended_to_session_advises(client: Client) -> None:
    logon = client.session_logon("alpha", NEW)
    connection = client.session_advise(logon["token"], ["fnevExtended"])["connection"]
    client.session_logoff(logon["token"])
    note = client.recv_notification(timeout=5)
    assert note is not None
    assert note["event"] == "fnevExtended"
    assert note["connection"] == connection
    assert note["extended_event"] == "logoff"


# -- status table (items 40 to 46) ---------------------------------------------------------


def test_40_one_row_each_for_subsystem_spooler_and_address_book(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    for kind in (ResourceType.MAPI_SUBSYSTEM, ResourceType.MAPI_SPOOLER, ResourceType.MAPI_AB):
        assert len(by_type(client, token, kind)) == 1


def test_41_subsystem_row_is_named_after_the_profile(client: Client) -> None:
    token = client.session_logon("beta", NEW)["token"]
    assert by_type(client, token, ResourceType.MAPI_SUBSYSTEM)[0]["PR_DISPLAY_NAME"] == "beta"


REQUIRED = (
    "PR_DISPLAY_NAME",
    "PR_STATUS_CODE",
    "PR_RESOURCE_METHODS",
    "PR_PROVIDER_DLL_NAME",
    "PR_PROVIDER_DISPLAY",
    "PR_RESOURCE_FLAGS",
    "PR_RESOURCE_TYPE",
    "PR_ENTRYID",
    "PR_INSTANCE_KEY",
    "PR_ROWID",
    "PR_OBJECT_TYPE",
)


def test_42_every_row_has_the_required_columns(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    all_rows = rows(client, token)
    assert len(all_rows) == 5
    for row in all_rows:
        for tag in REQUIRED:
            assert tag in row, (tag, row)
        assert row["PR_OBJECT_TYPE"] == 10
        assert len(row["PR_ENTRYID"]) >= 20


def test_43_44_mapi_rows_methods_and_support(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    expected = {
        ResourceType.MAPI_SUBSYSTEM: ResourceMethods.STATUS_VALIDATE_STATE,
        ResourceType.MAPI_AB: ResourceMethods.STATUS_VALIDATE_STATE,
        ResourceType.MAPI_SPOOLER: ResourceMethods.STATUS_VALIDATE_STATE
        | ResourceMethods.STATUS_FLUSH_QUEUES,
    }
    for kind, methods in expected.items():
        row = by_type(client, token, kind)[0]
        assert row["PR_RESOURCE_METHODS"] == methods
        assert row["PR_PROVIDER_DLL_NAME"] == "mapid"
        handle = client.session_open_entry(token, row["PR_ENTRYID"])["handle"]
        client.status_validate_state(token, handle, ["SUPPRESS_UI"])
        expect(ErrorCode.MAPI_E_NO_SUPPORT, client.status_settings, token, handle)
        expect(ErrorCode.MAPI_E_NO_SUPPORT, client.status_change_password, token, handle, "a", "b")
        if kind == ResourceType.MAPI_SPOOLER:
            client.status_flush_queues(token, handle, ["FLUSH_UPLOAD"])
        else:
            expect(ErrorCode.MAPI_E_NO_SUPPORT, client.status_flush_queues, token, handle, 0)


def test_49_unknown_validate_state_bits(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    row = by_type(client, token, ResourceType.MAPI_SUBSYSTEM)[0]
    handle = client.session_open_entry(token, row["PR_ENTRYID"])["handle"]
    expect(ErrorCode.MAPI_E_UNKNOWN_FLAGS, client.status_validate_state, token, handle, 0x8)


def test_45_provider_row_updates_merge(make_daemon: DaemonFactory, tmp_path: Any) -> None:
    proc = make_daemon(
        profiles={
            "alpha": _profile_with(
                tmp_path, '[services.out]\nservice = "providers_for_tests:Transport"'
            )
        }
    )
    client = proc.client()
    token = client.session_logon("alpha", NEW)["token"]
    row = by_type(client, token, ResourceType.MAPI_TRANSPORT_PROVIDER)[0]
    handle = client.session_open_entry(token, row["PR_ENTRYID"])["handle"]
    client.status_flush_queues(token, handle, ["FLUSH_UPLOAD", "FLUSH_FORCE"])
    after = by_type(client, token, ResourceType.MAPI_TRANSPORT_PROVIDER)[0]
    assert after["PR_REMOTE_PROGRESS_TEXT"].startswith("flushed")
    assert after["PR_REMOTE_PROGRESS"] == 1  # untouched columns stay
    assert after["PR_INSTANCE_KEY"] == row["PR_INSTANCE_KEY"]
    expect(
        ErrorCode.MAPI_E_UNKNOWN_FLAGS,
        client.status_flush_queues,
        token,
        handle,
        ["FLUSH_ASYNC_OK"],
    )


def test_46_restrict_to_the_spooler_and_find_by_instance_key(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    spooler = by_type(client, token, ResourceType.MAPI_SPOOLER)
    assert len(spooler) == 1
    found = rows(
        client,
        token,
        restriction={"prop": "PR_INSTANCE_KEY", "op": "eq", "value": spooler[0]["PR_INSTANCE_KEY"]},
    )
    assert found == spooler


def test_28_status_rows_open_as_status_objects(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    for row in rows(client, token):
        opened = client.session_open_entry(token, row["PR_ENTRYID"])
        assert opened["object_type"] == 10
        assert opened["props"]["PR_OBJECT_TYPE"] == 10
        props = client.object_get_props(token, opened["handle"], ["PR_DISPLAY_NAME", "0x3E030003"])
        assert props["props"] == {
            "PR_DISPLAY_NAME": row["PR_DISPLAY_NAME"],
            "PR_RESOURCE_TYPE": row["PR_RESOURCE_TYPE"],
        }
        client.object_release(token, opened["handle"])
        expect(ErrorCode.MAPI_E_INVALID_OBJECT, client.object_get_props, token, opened["handle"])


def test_handles_of_another_session_are_invalid(client: Client) -> None:
    one = client.session_logon("alpha", NEW)["token"]
    two = client.session_logon("alpha", NEW)["token"]
    handle = client.session_open_entry(one, rows(client, one)[0]["PR_ENTRYID"])["handle"]
    expect(ErrorCode.MAPI_E_INVALID_OBJECT, client.object_get_props, two, handle)


# -- entry IDs (items 26, 27, 30) ----------------------------------------------------------


def test_26_27_open_entry_errors(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    expect(ErrorCode.MAPI_E_INVALID_PARAMETER, client.session_open_entry, token, None)
    expect(ErrorCode.MAPI_E_INVALID_ENTRYID, client.session_open_entry, token, b"\0" * 19)
    unknown = entryid.make(entryid.uid_from_name("nobody"), b"x")
    expect(ErrorCode.MAPI_E_UNKNOWN_ENTRYID, client.session_open_entry, token, unknown)


def test_30_compare_entryids(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    all_rows = rows(client, token)
    a, b = all_rows[0]["PR_ENTRYID"], all_rows[1]["PR_ENTRYID"]
    assert client.session_compare_entryids(token, a, a)["equal"] is True
    assert client.session_compare_entryids(token, a, b)["equal"] is False
    unknown = entryid.make(entryid.uid_from_name("nobody"), b"x")
    expect(ErrorCode.MAPI_E_UNKNOWN_ENTRYID, client.session_compare_entryids, token, a, unknown)
    one = entryid.one_off("Ada", "SMTP", "ada@example.org")
    other_case = entryid.one_off("Ada L.", "smtp", "ADA@example.org")
    assert client.session_compare_entryids(token, one, other_case)["equal"] is True


# -- identity (items 54 to 57) -------------------------------------------------------------


def test_54_identity_of_the_flagged_row(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    result = client.session_query_identity(token)
    assert result.warning is None
    flagged = rows(
        client,
        token,
        restriction={
            "bitmask": "PR_RESOURCE_FLAGS",
            "mask": int(ResourceFlags.STATUS_PRIMARY_IDENTITY),
            "test": "nez",
        },
    )
    assert len(flagged) == 1
    assert result["entryid"] == flagged[0]["PR_IDENTITY_ENTRYID"]
    assert flagged[0]["PR_IDENTITY_DISPLAY"] == "Ada Lovelace"
    assert flagged[0]["PR_IDENTITY_SEARCH_KEY"] == b"SMTP:ADA@EXAMPLE.ORG\0"
    user = client.session_open_entry(token, result["entryid"])
    assert user["props"]["PR_EMAIL_ADDRESS"] == "ada@example.org"


def test_55_flagged_row_without_entryid_gives_a_one_off(
    make_daemon: DaemonFactory, tmp_path: Any
) -> None:
    proc = make_daemon(
        profiles={"alpha": '[services.who]\nservice = "providers_for_tests:FlaggedNoEntryId"\n'}
    )
    client = proc.client()
    token = client.session_logon("alpha", NEW)["token"]
    result = client.session_query_identity(token)
    assert result.warning is None
    parsed = entryid.parse_one_off(result["entryid"])
    assert parsed == entryid.OneOff("Flagged Person", "SMTP", "flagged@example.org")


def test_56_no_flagged_row_takes_the_first_identity(
    make_daemon: DaemonFactory, tmp_path: Any
) -> None:
    proc = make_daemon(
        profiles={"alpha": '[services.who]\nservice = "providers_for_tests:UnflaggedIdentity"\n'}
    )
    client = proc.client()
    token = client.session_logon("alpha", NEW)["token"]
    result = client.session_query_identity(token)
    assert result.warning is None
    assert entryid.parse_one_off(result["entryid"]) == entryid.OneOff(
        "Unflagged Person", "SMTP", "unflagged@example.org"
    )


def test_57_no_identity_anywhere_is_a_warning(client: Client) -> None:
    token = client.session_logon("beta", NEW)["token"]
    result = client.session_query_identity(token)
    assert result.warning == "MAPI_W_NO_SERVICE"
    assert result["entryid"] == entryid.UNKNOWN_IDENTITY
    assert len(result["entryid"]) > 20


def test_only_the_first_identity_keeps_the_flag(make_daemon: DaemonFactory, tmp_path: Any) -> None:
    profile = standard_profile(tmp_path / "a") + (
        '\n[services.more]\nservice = "vcard"\n'
        f'path = "{tmp_path / "more"}"\n'
        'identity = { display_name = "Second", email = "second@example.org" }\n'
    )
    proc = make_daemon(profiles={"alpha": profile})
    client = proc.client()
    token = client.session_logon("alpha", NEW)["token"]
    flagged = [
        r["PR_DISPLAY_NAME"]
        for r in rows(client, token)
        if r["PR_RESOURCE_FLAGS"] & ResourceFlags.STATUS_PRIMARY_IDENTITY
    ]
    assert flagged == ["contacts"]


def test_get_last_error_reports_the_last_failure(client: Client) -> None:
    token = client.session_logon("alpha", NEW)["token"]
    assert client.session_get_last_error(token)["error"] is None
    expect(ErrorCode.MAPI_E_INVALID_OBJECT, client.object_get_props, token, 999)
    last = client.session_get_last_error(token)["error"]
    assert last["code"] == "MAPI_E_INVALID_OBJECT"


def test_handle_limit(make_daemon: DaemonFactory) -> None:
    proc = make_daemon(config='default_profile = "alpha"\nmax_handles = 3\n')
    client = proc.client()
    token = client.session_logon("alpha", NEW)["token"]
    entry = rows(client, token)[0]["PR_ENTRYID"]
    handles = [client.session_open_entry(token, entry)["handle"] for _ in range(3)]
    expect(ErrorCode.MAPI_E_NOT_ENOUGH_RESOURCES, client.session_open_entry, token, entry)
    client.object_release(token, handles[0])
    client.session_open_entry(token, entry)


def test_logon_flags_are_recorded(client: Client) -> None:
    logon = client.session_logon("alpha", ["MAPI_NEW_SESSION", "MAPI_NO_MAIL"])
    info = {s["session"]: s for s in client.daemon_sessions()["sessions"]}[logon["session"]]
    assert info["flags"] == LogonFlags.MAPI_NEW_SESSION | LogonFlags.MAPI_NO_MAIL
    assert info["state"] == "active" and info["shared"] is False
