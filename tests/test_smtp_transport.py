"""The smtp transport against a real aiosmtpd on loopback: provider-level, then in the daemon.

`Support` is a small real ProviderSupport (as in test_providers_unit.py) that records the row
changes and spooler notifications; passwords come from the daemon's own resolver, so a
`password_command` really runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from mapid.client import Client
from mapid.constants import (
    ResourceMethods,
    ResourceType,
    SpoolerNotify,
    StatusCode,
    ValidateStateFlags,
)
from mapid.daemon.config.credentials import MASK
from mapid.errors import ErrorCode, MapiError
from mapid.providers import smtp
from mapid.providers.base import (
    REMOTE_PROGRESS_IDLE,
    Identity,
    OutgoingMessage,
    Recipient,
    SendResult,
    TransportFailure,
)
from mapid.providers.smtp import SmtpService, SmtpTransport
from mapid.providers.smtp import transport as smtp_transport

from conftest import DaemonFactory, standard_profile
from provider_support import Support
from smtp_server import SmtpServer, password_command_for, smtp_section

T = TypeVar("T")
MakeServer = Callable[..., SmtpServer]

MIME = (
    b"From: Ada Lovelace <ada@example.org>\n"
    b"To: Grace Hopper <grace@example.org>\n"
    b"Subject: Engines\n"
    b"Message-ID: <1@example.org>\n"
    b"\n"
    b"The engine weaves algebraic patterns.\n"
    b".a line that starts with a dot\n"
)


def config_for(server: SmtpServer, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "security": server.security,
        "timeout": 5,
    }
    if server.security != "none":
        config["ca_file"] = str(server.ca_file)
    config.update(extra)
    return config


def message(*addresses: str, sender: Identity | None = None) -> OutgoingMessage:
    return OutgoingMessage(
        entryid=b"\x01" * 20,
        mime=MIME,
        recipients=tuple(Recipient(a, a.split("@")[0].title()) for a in addresses),
        sender=sender if sender is not None else Identity("Ada Lovelace", "ada@example.org"),
    )


def run(
    tmp_path: Path,
    config: dict[str, Any],
    body: Callable[[SmtpTransport, Support], Awaitable[T]],
) -> T:
    """Log a transport on, run `body` with it, log it off: all in one event loop."""

    async def main() -> T:
        support = Support(config, tmp_path)
        transport = SmtpTransport(support)
        await transport.logon()
        support.modify_status_row(transport.status_props())
        try:
            return await body(transport, support)
        finally:
            await transport.logoff()

    return asyncio.run(main())


async def failure_of(aw: Coroutine[Any, Any, SendResult]) -> TransportFailure:
    with pytest.raises(TransportFailure) as caught:
        await aw
    return caught.value


# -- provider level ------------------------------------------------------------------------


def test_plain_sends_reuse_one_connection(tmp_path: Path, smtp_server: SmtpServer) -> None:
    async def body(t: SmtpTransport, s: Support) -> list[SendResult]:
        assert smtp_server.open_connections() == 0  # logon did not connect
        return [await t.send(message("grace@example.org", "alan@example.org")) for _ in range(3)]

    results = run(tmp_path, config_for(smtp_server), body)
    assert [r.refused for r in results] == [{}, {}, {}]
    assert results[0].response.startswith("250")
    got = smtp_server.wait_for(3)
    assert got[0].mail_from == "ada@example.org"
    assert got[0].rcpt_tos == ("grace@example.org", "alan@example.org")
    assert b"Subject: Engines\r\n" in got[0].wire  # bare \n of the store made CRLF
    assert b"\r\n.a line that starts with a dot" in got[0].wire  # dot-stuffing undone
    assert got[0].content == MIME
    assert len({m.peer for m in got}) == 1  # one connection for the three


def test_status_row_and_config_defaults(tmp_path: Path, smtp_server: SmtpServer) -> None:
    async def body(t: SmtpTransport, s: Support) -> dict[str, Any]:
        return dict(s.row)

    row = run(tmp_path, {"host": smtp_server.host, "port": smtp_server.port}, body)
    code = StatusCode(row["PR_STATUS_CODE"])
    assert code == StatusCode.STATUS_AVAILABLE | StatusCode.STATUS_OUTBOUND_ENABLED
    assert row["PR_STATUS_STRING"] == f"Ready: smtp://127.0.0.1:{smtp_server.port} (starttls)"
    assert row["PR_REMOTE_PROGRESS"] == REMOTE_PROGRESS_IDLE
    assert row["PR_REMOTE_VALIDATE_OK"] is True
    assert SmtpTransport.address_types == ("SMTP",)
    methods = ResourceMethods(SmtpTransport.resource_methods)
    assert methods & ResourceMethods.STATUS_SETTINGS_DIALOG
    assert methods & ResourceMethods.STATUS_FLUSH_QUEUES
    settings = smtp.SmtpSettings.from_config(
        {"host": "h", "security": "tls"}, Support({}, tmp_path)
    )
    assert (settings.port, settings.timeout) == (465, 30.0)
    assert smtp.SmtpSettings.from_config({"host": "h"}, Support({}, tmp_path)).port == 587
    plain = smtp.SmtpSettings.from_config({"host": "h", "security": "none"}, Support({}, tmp_path))
    assert plain.port == 25


def test_starttls_with_private_ca(tmp_path: Path, make_smtp_server: MakeServer) -> None:
    server = make_smtp_server(security="starttls")
    run(tmp_path, config_for(server), lambda t, s: t.send(message("grace@example.org")))
    assert server.wait_for(1)[0].rcpt_tos == ("grace@example.org",)


def test_implicit_tls_with_private_ca(tmp_path: Path, make_smtp_server: MakeServer) -> None:
    server = make_smtp_server(security="tls")
    run(tmp_path, config_for(server), lambda t, s: t.send(message("grace@example.org")))
    assert server.wait_for(1)[0].mail_from == "ada@example.org"


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_a_certificate_of_another_ca_fails_the_check(
    tmp_path: Path, make_smtp_server: MakeServer, security: str
) -> None:
    server = make_smtp_server(security=security)
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))

    async def body(t: SmtpTransport, s: Support) -> tuple[TransportFailure, str]:
        failure = await failure_of(t.send(message("grace@example.org")))
        return failure, s.row["PR_STATUS_STRING"]

    failure, text = run(tmp_path, config_for(server, ca_file=str(other)), body)
    assert not failure.permanent
    assert "certificate check failed" in failure.message
    assert "certificate check failed" in text
    assert server.messages == []


def test_system_cas_do_not_trust_a_private_ca(tmp_path: Path, make_smtp_server: MakeServer) -> None:
    server = make_smtp_server(security="tls")
    config = config_for(server)
    del config["ca_file"]
    failure = run(tmp_path, config, lambda t, s: failure_of(t.send(message("g@example.org"))))
    assert not failure.permanent
    assert "set ca_file" in failure.message


def test_auth_with_password_command(tmp_path: Path, make_smtp_server: MakeServer) -> None:
    server = make_smtp_server(security="starttls", auth=("ada", "s3cret pass"))
    config = config_for(
        server, username="ada", password_command=password_command_for("s3cret pass")
    )
    run(tmp_path, config, lambda t, s: t.send(message("grace@example.org")))
    assert server.wait_for(1)[0].login == "ada"


def test_auth_failure_is_temporary_and_never_shows_the_password(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    server = make_smtp_server(security="starttls", auth=("ada", "right"))
    config = config_for(server, username="ada", password_command=password_command_for("wrong1"))

    async def body(t: SmtpTransport, s: Support) -> tuple[TransportFailure, str]:
        failure = await failure_of(t.send(message("grace@example.org")))
        return failure, s.row["PR_STATUS_STRING"]

    failure, text = run(tmp_path, config, body)
    assert not failure.permanent  # the mail stays queued
    assert "authentication failed" in failure.message
    assert "535" in failure.message
    assert "authentication failed" in text
    assert "wrong1" not in failure.message + text
    assert server.messages == []
    assert server.auth_attempts == 2  # smtplib tries PLAIN, then LOGIN; no more than that


def test_auth_on_a_server_without_auth(tmp_path: Path, smtp_server: SmtpServer) -> None:
    config = config_for(smtp_server, username="ada", password_command=password_command_for("x"))
    failure = run(tmp_path, config, lambda t, s: failure_of(t.send(message("g@example.org"))))
    assert not failure.permanent
    assert "offers no AUTH" in failure.message


def test_a_refused_recipient_is_reported_the_others_get_it(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse("nobody@example.org")
    result = run(
        tmp_path,
        config_for(smtp_server),
        lambda t, s: t.send(message("grace@example.org", "nobody@example.org")),
    )
    assert list(result.refused) == ["nobody@example.org"]
    assert result.refused["nobody@example.org"].startswith("550 5.1.1")
    assert smtp_server.wait_for(1)[0].rcpt_tos == ("grace@example.org",)


def test_every_recipient_refused_is_permanent(tmp_path: Path, smtp_server: SmtpServer) -> None:
    smtp_server.refuse("a@example.org", "b@example.org")

    async def body(t: SmtpTransport, s: Support) -> tuple[TransportFailure, SendResult]:
        failure = await failure_of(t.send(message("a@example.org", "b@example.org")))
        smtp_server.accept_all()
        return failure, await t.send(message("a@example.org"))  # the connection still works

    failure, after = run(tmp_path, config_for(smtp_server), body)
    assert failure.permanent
    assert "a@example.org: 550" in failure.message and "b@example.org: 550" in failure.message
    assert after.refused == {}
    got = smtp_server.wait_for(1)
    assert got[0].rcpt_tos == ("a@example.org",)


def test_a_deferred_recipient_defers_the_whole_message(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse("busy@example.org", reply="450 4.2.1 mailbox busy")
    failure = run(
        tmp_path,
        config_for(smtp_server),
        lambda t, s: failure_of(t.send(message("grace@example.org", "busy@example.org"))),
    )
    assert not failure.permanent
    assert "450 4.2.1" in failure.message
    assert smtp_server.messages == []  # nobody got it, so a retry sends no duplicate


def test_a_batch_goes_over_one_connection_with_an_outcome_for_each_message(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse("nobody@example.org")
    batch = [
        message("grace@example.org"),
        message("nobody@example.org"),  # every recipient refused: permanent, the batch goes on
        message("alan@example.org", "nobody@example.org"),
    ]

    async def body(t: SmtpTransport, s: Support) -> tuple[list[SendResult | TransportFailure], str]:
        outcomes = list(await t.send_batch(batch))
        return outcomes, s.row["PR_STATUS_STRING"]

    outcomes, text = run(tmp_path, config_for(smtp_server), body)
    assert len(outcomes) == 3
    first, second, third = outcomes
    assert isinstance(first, SendResult) and first.refused == {}
    assert isinstance(second, TransportFailure) and second.permanent
    assert "nobody@example.org: 550" in second.message
    assert isinstance(third, SendResult) and list(third.refused) == ["nobody@example.org"]
    got = smtp_server.wait_for(2)
    assert [m.rcpt_tos for m in got] == [("grace@example.org",), ("alan@example.org",)]
    assert smtp_server.open_connections() == 0  # logoff closed the one connection
    assert not text.startswith("Send failed")  # the last message went: the row says ready


def test_a_batch_stops_at_a_temporary_failure(tmp_path: Path, smtp_server: SmtpServer) -> None:
    smtp_server.refuse("busy@example.org", reply="450 4.2.1 mailbox busy")
    batch = [message("grace@example.org"), message("busy@example.org"), message("a@example.org")]

    async def body(t: SmtpTransport, s: Support) -> tuple[list[SendResult | TransportFailure], str]:
        outcomes = list(await t.send_batch(batch))
        return outcomes, s.row["PR_STATUS_STRING"]

    outcomes, text = run(tmp_path, config_for(smtp_server), body)
    assert len(outcomes) == 2  # the third was not tried: it stays queued
    assert isinstance(outcomes[0], SendResult)
    assert isinstance(outcomes[1], TransportFailure) and not outcomes[1].permanent
    assert "450 4.2.1" in text
    time.sleep(0.2)
    assert [m.rcpt_tos for m in smtp_server.messages] == [("grace@example.org",)]


def test_a_batch_comes_back_in_pieces_after_its_time_slice(
    tmp_path: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smtp_transport, "BATCH_SLICE_S", 0.0)
    batch = [message(f"r{i}@example.org") for i in range(3)]

    async def body(t: SmtpTransport, s: Support) -> list[int]:
        sizes = []
        rest = batch
        while rest:
            outcomes = await t.send_batch(rest)
            sizes.append(len(outcomes))
            rest = rest[len(outcomes) :]
        return sizes

    assert run(tmp_path, config_for(smtp_server), body) == [1, 1, 1]
    assert len(smtp_server.wait_for(3)) == 3


def test_an_offline_transport_refuses_a_batch(tmp_path: Path, smtp_server: SmtpServer) -> None:
    async def body(t: SmtpTransport, s: Support) -> TransportFailure:
        await t.validate_state(ValidateStateFlags.FORCE_XP_DISCONNECT)
        with pytest.raises(TransportFailure) as caught:
            await t.send_batch([message("grace@example.org")])
        return caught.value

    failure = run(tmp_path, config_for(smtp_server), body)
    assert not failure.permanent and "offline" in failure.message
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("command", "reply", "permanent"),
    [
        ("DATA", "451 4.3.0 try again later", False),
        ("DATA", "554 5.6.0 message refused", True),
        ("MAIL", "550 5.7.1 sender refused", True),
        ("MAIL", "421 4.7.0 too busy", False),
    ],
)
def test_replies_to_mail_and_data(
    tmp_path: Path, smtp_server: SmtpServer, command: str, reply: str, permanent: bool
) -> None:
    if command == "DATA":
        smtp_server.answer_data(reply)
    else:
        smtp_server.answer_mail(reply)

    async def body(t: SmtpTransport, s: Support) -> tuple[TransportFailure, str]:
        failure = await failure_of(t.send(message("grace@example.org")))
        return failure, s.row["PR_STATUS_STRING"]

    failure, text = run(tmp_path, config_for(smtp_server), body)
    assert failure.permanent is permanent
    assert reply in failure.message
    assert reply in text  # the row says why the last send failed


def test_a_stalled_server_hits_the_time_out(tmp_path: Path, smtp_server: SmtpServer) -> None:
    smtp_server.stall("DATA", seconds=20)
    config = config_for(smtp_server, timeout=0.5)
    failure = run(tmp_path, config, lambda t, s: failure_of(t.send(message("g@example.org"))))
    assert not failure.permanent
    assert "timed out" in failure.message
    assert "0.5 s" in failure.message


def test_a_send_given_up_by_its_caller_keeps_the_connection_until_it_ends(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    smtp_server.stall("DATA", seconds=20)

    async def body(t: SmtpTransport, s: Support) -> SendResult:
        with pytest.raises(TimeoutError):  # as the spooler's wait_for gives up on a send
            await asyncio.wait_for(t.send(message("grace@example.org")), 0.3)
        smtp_server.accept_all()  # the stalled DATA is answered now
        return await t.send(message("alan@example.org"))  # waits for the first, same link

    result = run(tmp_path, config_for(smtp_server, timeout=10), body)
    assert result.refused == {}
    got = smtp_server.wait_for(2)
    assert [m.rcpt_tos for m in got] == [("grace@example.org",), ("alan@example.org",)]
    assert got[0].peer == got[1].peer


def test_server_down_then_up(tmp_path: Path, smtp_server: SmtpServer) -> None:
    async def body(t: SmtpTransport, s: Support) -> tuple[TransportFailure, str, SendResult]:
        await t.send(message("grace@example.org"))
        smtp_server.stop()
        failure = await failure_of(t.send(message("grace@example.org")))
        text = s.row["PR_STATUS_STRING"]
        smtp_server.start()  # same port; the connection kept from before is dead
        result = await t.send(message("grace@example.org"))
        return failure, text, result

    failure, text, result = run(tmp_path, config_for(smtp_server), body)
    assert not failure.permanent
    assert "refused" in failure.message or "closed" in failure.message
    assert failure.message in text
    assert result.refused == {}
    got = smtp_server.wait_for(2)
    assert got[0].peer != got[1].peer


def test_no_server_at_all_is_connection_refused(tmp_path: Path, smtp_server: SmtpServer) -> None:
    smtp_server.stop()
    failure = run(
        tmp_path, config_for(smtp_server), lambda t, s: failure_of(t.send(message("g@x.org")))
    )
    assert not failure.permanent
    assert "connection refused" in failure.message


def test_idle_connection_is_closed(
    tmp_path: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smtp_transport, "IDLE_CLOSE_S", 0.2)

    async def body(t: SmtpTransport, s: Support) -> None:
        await t.send(message("grace@example.org"))
        assert smtp_server.open_connections() == 1
        await asyncio.to_thread(smtp_server.wait_connections, 0, 5.0)

    run(tmp_path, config_for(smtp_server), body)


def test_transport_from_wins_and_a_missing_sender_uses_from_header(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    config = config_for(smtp_server, **{"from": "Ada at Work <ada@work.example>"})

    async def body(t: SmtpTransport, s: Support) -> Identity | None:
        await t.send(message("grace@example.org"))
        return t.sender_override()

    assert run(tmp_path, config, body) == Identity("Ada at Work", "ada@work.example")
    no_sender = OutgoingMessage(b"\x01", MIME, (Recipient("grace@example.org"),), None)
    run(tmp_path, config_for(smtp_server), lambda t, s: t.send(no_sender))
    got = smtp_server.wait_for(2)
    assert [m.mail_from for m in got] == ["ada@work.example", "ada@example.org"]
    assert run(tmp_path, config_for(smtp_server), lambda t, s: _value(t.sender_override())) is None


async def _value(value: T) -> T:
    return value


def test_validate_state_disconnect_and_connect(tmp_path: Path, smtp_server: SmtpServer) -> None:
    async def body(t: SmtpTransport, s: Support) -> None:
        await t.validate_state(ValidateStateFlags.FORCE_XP_DISCONNECT)
        assert s.row["PR_STATUS_CODE"] & StatusCode.STATUS_OFFLINE
        assert s.row["PR_STATUS_STRING"].startswith("Offline:")
        failure = await failure_of(t.send(message("grace@example.org")))
        assert not failure.permanent and "offline" in failure.message
        await t.validate_state(ValidateStateFlags.FORCE_XP_CONNECT)
        assert not s.row["PR_STATUS_CODE"] & StatusCode.STATUS_OFFLINE
        assert s.row["PR_STATUS_STRING"].startswith("Connected:")
        assert s.spooler == [SpoolerNotify.NOTIFY_READYTOSEND]
        assert smtp_server.open_connections() == 1
        await t.send(message("grace@example.org"))
        with pytest.raises(MapiError) as both:
            await t.validate_state(
                ValidateStateFlags.FORCE_XP_CONNECT | ValidateStateFlags.FORCE_XP_DISCONNECT
            )
        assert both.value.code == ErrorCode.MAPI_E_INVALID_PARAMETER
        with pytest.raises(MapiError) as header:
            await t.validate_state(ValidateStateFlags.REFRESH_XP_HEADER_CACHE)
        assert header.value.code == ErrorCode.MAPI_E_NO_SUPPORT

    run(tmp_path, config_for(smtp_server), body)
    assert len(smtp_server.wait_for(1)) == 1


def test_validate_state_connect_to_a_dead_server(tmp_path: Path, smtp_server: SmtpServer) -> None:
    smtp_server.stop()

    async def body(t: SmtpTransport, s: Support) -> None:
        with pytest.raises(MapiError) as caught:
            await t.validate_state(ValidateStateFlags.FORCE_XP_CONNECT)
        assert caught.value.code == ErrorCode.MAPI_E_NETWORK_ERROR
        assert "connection refused" in caught.value.message
        assert "connection refused" in s.row["PR_STATUS_STRING"]
        assert s.spooler == []

    run(tmp_path, config_for(smtp_server), body)


def test_config_changed_rereads_and_tells_the_spooler(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    first, second = make_smtp_server(), make_smtp_server()

    async def body(t: SmtpTransport, s: Support) -> None:
        await t.send(message("grace@example.org"))
        s.settings.update(port=second.port)
        await t.validate_state(ValidateStateFlags.CONFIG_CHANGED)
        assert s.spooler == [SpoolerNotify.NOTIFY_CONFIG_CHANGE]
        assert str(second.port) in s.row["PR_STATUS_STRING"]
        await t.send(message("alan@example.org"))
        s.settings["from"] = "not an address"
        with pytest.raises(MapiError) as caught:
            await t.validate_state(ValidateStateFlags.CONFIG_CHANGED)
        assert caught.value.code == ErrorCode.MAPI_E_UNCONFIGURED

    run(tmp_path, config_for(first), body)
    assert first.wait_for(1)[0].rcpt_tos == ("grace@example.org",)
    assert second.wait_for(1)[0].rcpt_tos == ("alan@example.org",)
    first.wait_connections(0)  # the old server's connection was dropped


def test_bad_configurations(tmp_path: Path) -> None:
    problems = SmtpService.check_config(
        {"port": 0, "security": "ssl", "timeout": 0, "from": "x", "hots": "typo"}
    )
    keys = {p.key for p in problems}
    assert {"host", "port", "security", "timeout", "from", "(config)"} <= keys
    assert SmtpService.check_config({"host": "mail.example.org", "from": "a@b.example"}) == []
    clear = {"host": "mail.example.org", "security": "none", "username": "ada"}
    assert [p.key for p in SmtpService.check_config(clear)] == ["security"]
    assert SmtpService.check_config({**clear, "host": "127.0.0.1"}) == []
    assert SmtpService.check_config({**clear, "host": "::1"}) == []
    secret = SmtpService.check_config({"host": "h", "password": 12345678})
    assert all("12345678" not in p.message for p in secret)

    async def logon() -> None:
        await SmtpTransport(Support({"security": "none"}, tmp_path)).logon()

    with pytest.raises(MapiError) as caught:
        asyncio.run(logon())
    assert caught.value.code == ErrorCode.MAPI_E_UNCONFIGURED
    assert "host" in caught.value.message


# -- in the daemon ---------------------------------------------------------------------------


def _profile(tmp_path: Path, server: SmtpServer, **section: Any) -> str:
    return standard_profile(tmp_path / "alpha") + smtp_section(server, **section)


def _transport_row(client: Client, token: bytes) -> dict[str, Any]:
    rows = client.session_status_table(token)["rows"]
    found = [r for r in rows if r["PR_RESOURCE_TYPE"] == ResourceType.MAPI_TRANSPORT_PROVIDER]
    assert len(found) == 1, rows
    row: dict[str, Any] = found[0]
    return row


def _wait_row(
    client: Client, token: bytes, check: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = _transport_row(client, token)
        if check(row):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"the transport row never got there: {row}")
        time.sleep(0.05)


def test_daemon_row_adr_types_and_validate_state(
    tmp_path: Path, make_daemon: DaemonFactory, smtp_server: SmtpServer
) -> None:
    daemon = make_daemon(profiles={"alpha": _profile(tmp_path, smtp_server)})
    client = daemon.client()
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
    row = _transport_row(client, token)
    assert row["PR_PROVIDER_DLL_NAME"] == "smtp"
    assert row["PR_DISPLAY_NAME"] == "outgoing"
    code = StatusCode(row["PR_STATUS_CODE"])
    assert code & StatusCode.STATUS_OUTBOUND_ENABLED and code & StatusCode.STATUS_AVAILABLE
    assert row["PR_STATUS_STRING"] == f"Ready: smtp://127.0.0.1:{smtp_server.port} (none)"
    assert row["PR_RESOURCE_METHODS"] & ResourceMethods.STATUS_SETTINGS_DIALOG
    assert smtp_server.open_connections() == 0
    assert "SMTP" in client.session_enum_adr_types(token)["types"]

    status = client.session_open_entry(token, row["PR_ENTRYID"])["handle"]
    client.status_validate_state(token, status, ["FORCE_XP_DISCONNECT"])
    row = _transport_row(client, token)
    assert row["PR_STATUS_CODE"] & StatusCode.STATUS_OFFLINE
    assert row["PR_STATUS_STRING"].startswith("Offline:")

    client.status_validate_state(token, status, ["FORCE_XP_CONNECT"])
    row = _transport_row(client, token)
    assert not row["PR_STATUS_CODE"] & StatusCode.STATUS_OFFLINE
    assert row["PR_STATUS_STRING"].startswith("Connected:")
    smtp_server.wait_connections(1)

    smtp_server.stop()
    with pytest.raises(MapiError) as caught:
        client.status_validate_state(token, status, ["FORCE_XP_CONNECT"])
    assert caught.value.code == ErrorCode.MAPI_E_NETWORK_ERROR
    row = _transport_row(client, token)
    assert "Connect failed" in row["PR_STATUS_STRING"]
    smtp_server.start()

    client.status_validate_state(token, status, ["CONFIG_CHANGED"])
    row = _transport_row(client, token)
    assert row["PR_STATUS_STRING"].startswith("Ready:")
    with pytest.raises(MapiError) as unknown:
        client.status_validate_state(token, status, 0x40000000)
    assert unknown.value.code == ErrorCode.MAPI_E_UNKNOWN_FLAGS
    client.session_logoff(token)


def test_daemon_unreachable_server_is_no_failed_logon(
    tmp_path: Path, make_daemon: DaemonFactory, smtp_server: SmtpServer
) -> None:
    smtp_server.stop()
    daemon = make_daemon(profiles={"alpha": _profile(tmp_path, smtp_server)})
    client = daemon.client()
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
    row = _transport_row(client, token)
    assert not row["PR_STATUS_CODE"] & StatusCode.STATUS_FAILURE
    assert row["PR_STATUS_STRING"].startswith("Ready:")


def test_daemon_settings_show_and_change(
    tmp_path: Path, make_daemon: DaemonFactory, make_smtp_server: MakeServer
) -> None:
    first = make_smtp_server(auth=("ada", "pw-one"))
    second = make_smtp_server()
    profile = _profile(
        tmp_path, first, username="ada", password_command=password_command_for("pw-one")
    )
    daemon = make_daemon(profiles={"alpha": profile})
    client = daemon.client()
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
    status = client.session_open_entry(token, _transport_row(client, token)["PR_ENTRYID"])

    shown = client.status_settings(token, status["handle"])
    assert shown["config"]["password_command"] == MASK
    assert shown["config"]["port"] == first.port
    assert shown["schema"]["properties"]["security"]["enum"] == ["none", "starttls", "tls"]
    assert "pw-one" not in repr(shown)

    # The masked secret goes back unchanged: the stored one stays.
    changed = {**shown["config"], "port": second.port, "timeout": 7}
    after = client.status_settings(token, status["handle"], changed)
    assert after["config"]["port"] == second.port
    assert after["config"]["password_command"] == MASK
    text = (daemon.config_dir / "profiles" / "alpha.toml").read_text()
    assert f"port = {second.port}" in text and "timeout = 7" in text
    assert "pw-one" in text  # the password_command kept, not replaced by the mask
    assert MASK not in text
    row = _wait_row(client, token, lambda r: str(second.port) in r["PR_STATUS_STRING"])
    assert row["PR_STATUS_STRING"].startswith("Ready:")

    with pytest.raises(MapiError) as bad:
        client.status_settings(token, status["handle"], {"security": "ssl"})
    assert bad.value.code == ErrorCode.MAPI_E_INVALID_PARAMETER
    errors = bad.value.details["errors"]
    assert isinstance(errors, list) and [e["key"] for e in errors] == ["security"]
    assert "ssl" not in (daemon.config_dir / "profiles" / "alpha.toml").read_text()

    # nil removes a key, as services.configure does
    client.status_settings(token, status["handle"], {"timeout": None})
    assert "timeout" not in client.status_settings(token, status["handle"])["config"]
