"""OAuth2 for the smtp transport, against a real aiosmtpd with auth_OAUTHBEARER / auth_XOAUTH2
hooks (smtp_server.OAuth2Handler) and a real token command: a script in tmp_path that prints
a token of realistic length and counts its runs in a file, as oama or mutt_oauth2.py would
print a fresh one on each call. Provider-level first, then in the daemon (its log and rows).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mapid.client import Client
from mapid.constants import ResourceType, StatusCode
from mapid.daemon.config.credentials import (
    MASK,
    TokenSource,
    check_file_secrecy,
    resolve_oauth2_token,
    resolve_password,
    secret_problems,
)
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import Identity, OutgoingMessage, Recipient, SendResult, TransportFailure
from mapid.providers.smtp import SmtpService, SmtpTransport
from mapid.providers.smtp.sasl import Bearer, oauthbearer, pick_mechanism, xoauth2

from conftest import DaemonFactory, standard_profile, wait_until
from provider_support import Support
from smtp_server import OAuth2Account, SmtpServer, smtp_section

T = TypeVar("T")
MakeServer = Callable[..., SmtpServer]
USER = "ada@example.org"
GRACE = {
    "PR_EMAIL_ADDRESS": "grace@example.org",
    "PR_DISPLAY_NAME": "Grace Hopper",
    "PR_ADDRTYPE": "SMTP",
}

HELPER = """\
import pathlib, sys
count, prefix, mode = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
runs = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(runs))
if mode == "fail":
    sys.stderr.write("oama: no refresh token for ada@example.org; run oama authorize\\n")
    sys.exit(2)
if mode == "token":
    print(f"{prefix}{runs}." + "Q" * 1500)
"""


class TokenCommand:
    """The token helper: run n prints token(n), a 1.5 kB bearer token like a real one."""

    def __init__(self, tmp_path: Path, mode: str = "token", prefix: str = "ya29.run") -> None:
        self.script = tmp_path / "token-helper.py"
        self.script.write_text(HELPER)
        self.count_file = tmp_path / "token-runs"
        self.prefix = prefix
        self.argv = [sys.executable, str(self.script), str(self.count_file), prefix, mode]

    def token(self, run: int) -> str:
        return f"{self.prefix}{run}." + "Q" * 1500

    @property
    def runs(self) -> int:
        return int(self.count_file.read_text()) if self.count_file.exists() else 0


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


def message(*addresses: str) -> OutgoingMessage:
    mime = b"From: Ada <ada@example.org>\nTo: Grace <grace@example.org>\nSubject: OAuth2\n\nHi.\n"
    return OutgoingMessage(
        entryid=b"\x01" * 20,
        mime=mime,
        recipients=tuple(Recipient(a) for a in addresses),
        sender=Identity("Ada Lovelace", USER),
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


async def failure_of(aw: Awaitable[SendResult]) -> TransportFailure:
    with pytest.raises(TransportFailure) as caught:
        await aw
    return caught.value


class Mail:
    """One member logged on to the default profile, composing as a client does."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.token = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
        stores = client.session_msg_stores_table(self.token)["rows"]
        default = next(r for r in stores if r.get("PR_DEFAULT_STORE"))
        opened = client.session_open_msg_store(self.token, default["PR_ENTRYID"], ["MDB_WRITE"])
        self.store = opened["handle"]
        subtree = client.container_open_entry(
            self.token, self.store, opened["props"]["PR_IPM_SUBTREE_ENTRYID"]
        )
        rows = client.container_hierarchy_table(self.token, subtree["handle"])["rows"]
        self.folders = {
            r["PR_DISPLAY_NAME"]: client.container_open_entry(
                self.token, self.store, r["PR_ENTRYID"]
            )["handle"]
            for r in rows
            if r["PR_DISPLAY_NAME"] in ("Drafts", "Outbox")
        }

    def send(self, subject: str, to: dict[str, Any]) -> None:
        c, t = self.client, self.token
        handle = c.folder_create_message(t, self.folders["Drafts"])["handle"]
        c.object_set_props(t, handle, {"PR_SUBJECT": subject, "PR_BODY": f"{subject}\n"})
        c.message_modify_recipients(t, handle, [dict(to, PR_RECIPIENT_TYPE=1)])
        c.message_submit(t, handle)

    def outbox(self) -> list[str]:
        table = {"columns": ["PR_SUBJECT"]}
        rows = self.client.container_contents_table(self.token, self.folders["Outbox"], table)
        return [r["PR_SUBJECT"] for r in rows["rows"]]

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.client.session_status_table(self.token)["rows"]
        return rows

    def row(self, kind: ResourceType) -> dict[str, Any]:
        return next(r for r in self.rows() if r["PR_RESOURCE_TYPE"] == int(kind))

    def status(self, kind: ResourceType) -> int:
        opened = self.client.session_open_entry(self.token, self.row(kind)["PR_ENTRYID"])
        handle: int = opened["handle"]
        return handle

    def spooler_says(self) -> str:
        text: str = self.row(ResourceType.MAPI_SPOOLER).get("PR_STATUS_STRING", "")
        return text


def oauth2_server(
    make_smtp_server: MakeServer,
    security: str = "starttls",
    *,
    tokens: set[str] | None = None,
    mechanisms: tuple[str, ...] = ("OAUTHBEARER", "XOAUTH2"),
    hang_up: bool = False,
) -> SmtpServer:
    account = OAuth2Account(USER, tokens or set(), mechanisms, hang_up)
    server: SmtpServer = make_smtp_server(security=security, oauth2=account)
    return server


def oauth2_config(server: SmtpServer, helper: TokenCommand, **extra: Any) -> dict[str, Any]:
    return config_for(server, username=USER, oauth2_token_command=helper.argv, **extra)


# -- the SASL messages -----------------------------------------------------------------------


def test_the_sasl_messages_are_the_specs() -> None:
    assert oauthbearer("ada@example.org", "tok", "smtp.example.org", 587) == (
        "n,a=ada@example.org,\x01host=smtp.example.org\x01port=587\x01auth=Bearer tok\x01\x01"
    )
    assert oauthbearer("a,b=c", "t", "h", 1).startswith("n,a=a=2Cb=3Dc,\x01")  # RFC 5801
    assert xoauth2("ada@example.org", "tok") == "user=ada@example.org\x01auth=Bearer tok\x01\x01"
    assert pick_mechanism(["PLAIN", "XOAUTH2", "OAUTHBEARER"]) == "OAUTHBEARER"
    assert pick_mechanism(["xoauth2", "LOGIN"]) == "XOAUTH2"
    assert pick_mechanism(["PLAIN", "LOGIN"]) is None
    bearer = Bearer("XOAUTH2", "initial")
    assert bearer() == "initial"
    assert bearer(b'{"status":"401","schemes":"bearer"}') == ""  # an empty line, as specified
    assert bearer.error == "401"
    assert Bearer("OAUTHBEARER", "i")(b'{"status":"invalid_token"}') == "\x01"  # RFC 7628


# -- provider level --------------------------------------------------------------------------


def test_oauthbearer_is_preferred_when_offered(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    helper = TokenCommand(tmp_path)
    server = oauth2_server(make_smtp_server, tokens={helper.token(1)})

    async def body(t: SmtpTransport, s: Support) -> list[SendResult]:
        return [await t.send(message("grace@example.org")) for _ in range(2)]

    results = run(tmp_path, oauth2_config(server, helper), body)
    assert [r.refused for r in results] == [{}, {}]
    got = server.wait_for(2)
    assert {m.login for m in got} == {USER}
    [attempt] = server.oauth2_attempts  # one AUTH: the second send kept the connection
    assert attempt.mechanism == "OAUTHBEARER" and attempt.accepted
    assert attempt.user == USER
    assert attempt.fields["host"] == "127.0.0.1"
    assert attempt.fields["port"] == str(server.port)
    assert attempt.token == helper.token(1)
    assert helper.runs == 1


def test_xoauth2_when_only_it_is_offered_over_implicit_tls(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    helper = TokenCommand(tmp_path)
    server = oauth2_server(
        make_smtp_server, "tls", tokens={helper.token(1)}, mechanisms=("XOAUTH2",)
    )
    run(tmp_path, oauth2_config(server, helper), lambda t, s: t.send(message("g@example.org")))
    assert server.wait_for(1)[0].login == USER
    [attempt] = server.oauth2_attempts
    assert (attempt.mechanism, attempt.accepted, attempt.fields["user"]) == ("XOAUTH2", True, USER)
    assert helper.runs == 1


@pytest.mark.parametrize(("mechanism", "answer"), [("OAUTHBEARER", b"\x01"), ("XOAUTH2", b"")])
def test_a_rejected_token_is_refreshed_once_and_the_fresh_one_kept(
    tmp_path: Path, make_smtp_server: MakeServer, mechanism: str, answer: bytes
) -> None:
    helper = TokenCommand(tmp_path)
    server = oauth2_server(make_smtp_server, tokens={helper.token(2)}, mechanisms=(mechanism,))

    async def body(t: SmtpTransport, s: Support) -> int:
        await t.send(message("grace@example.org"))
        after_first = helper.runs
        # A new connection later (the idle close, a restart of the server): the kept token.
        await t._drop()
        await t.send(message("grace@example.org"))
        return after_first

    assert run(tmp_path, oauth2_config(server, helper), body) == 2  # exactly two runs
    assert helper.runs == 2
    assert len(server.wait_for(2)) == 2
    first, second, third = server.oauth2_attempts
    assert (first.token, first.accepted, first.answer) == (helper.token(1), False, answer)
    assert (second.token, second.accepted) == (helper.token(2), True)
    assert (third.token, third.accepted) == (helper.token(2), True)
    assert len({m.peer for m in server.messages}) == 2  # one connection for each send


def test_a_server_that_hangs_up_after_the_rejection_gets_a_new_connection(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    helper = TokenCommand(tmp_path)
    server = oauth2_server(make_smtp_server, tokens={helper.token(2)}, hang_up=True)
    run(tmp_path, oauth2_config(server, helper), lambda t, s: t.send(message("g@example.org")))
    assert server.wait_for(1)[0].login == USER
    assert [a.accepted for a in server.oauth2_attempts] == [False, True]
    assert helper.runs == 2


def test_rejected_twice_is_a_temporary_auth_failure_in_the_row(
    tmp_path: Path, make_smtp_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    helper = TokenCommand(tmp_path)
    server = oauth2_server(make_smtp_server)  # accepts no token at all

    async def body(t: SmtpTransport, s: Support) -> tuple[TransportFailure, str]:
        failure = await failure_of(t.send(message("grace@example.org")))
        return failure, s.row["PR_STATUS_STRING"]

    with caplog.at_level("DEBUG"):
        failure, text = run(tmp_path, oauth2_config(server, helper), body)
    assert not failure.permanent  # stays queued, as a wrong password does
    assert "authentication failed for ada@example.org (OAUTHBEARER" in failure.message
    assert "535" in failure.message and "rejected too" in failure.message
    assert "error status invalid_token" in failure.message
    assert text.startswith("Send failed: authentication failed")
    assert helper.runs == 2
    assert [a.accepted for a in server.oauth2_attempts] == [False, False]
    assert server.messages == []
    assert "rejected the access token" in caplog.text  # the log says what happened...
    for token in (helper.token(1), helper.token(2), helper.prefix):
        assert token not in failure.message + text + caplog.text  # ...never the token


def test_a_server_offering_neither_mechanism(tmp_path: Path, make_smtp_server: MakeServer) -> None:
    helper = TokenCommand(tmp_path)
    server = oauth2_server(make_smtp_server, mechanisms=("PLAIN", "LOGIN"))

    async def body(t: SmtpTransport, s: Support) -> tuple[TransportFailure, str]:
        failure = await failure_of(t.send(message("grace@example.org")))
        return failure, s.row["PR_STATUS_STRING"]

    failure, text = run(tmp_path, oauth2_config(server, helper), body)
    assert not failure.permanent
    assert "offers neither OAUTHBEARER nor XOAUTH2" in failure.message
    assert "AUTH LOGIN PLAIN" in failure.message
    assert "offers neither OAUTHBEARER nor XOAUTH2" in text
    assert server.oauth2_attempts == []


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("fail", "exited with status 2: oama: no refresh token"),
        ("empty", "printed no access token"),
    ],
)
def test_a_token_command_that_fails_says_why(
    tmp_path: Path, make_smtp_server: MakeServer, mode: str, words: str
) -> None:
    helper = TokenCommand(tmp_path, mode)
    server = oauth2_server(make_smtp_server)

    async def body(t: SmtpTransport, s: Support) -> tuple[TransportFailure, str]:
        failure = await failure_of(t.send(message("grace@example.org")))
        return failure, s.row["PR_STATUS_STRING"]

    failure, text = run(tmp_path, oauth2_config(server, helper), body)
    assert not failure.permanent
    assert failure.message.startswith("no access token: test, service svc: oauth2_token_command")
    assert words in failure.message and words in text
    assert server.oauth2_attempts == [] and server.open_connections() == 0


def test_the_token_source_keeps_the_token_until_asked_for_a_fresh_one(tmp_path: Path) -> None:
    helper = TokenCommand(tmp_path)
    config = {"oauth2_token_command": helper.argv}

    async def main() -> list[str | None]:
        source = TokenSource()
        got = [await source.token(config, where="w") for _ in range(3)]
        got.append(await source.token(config, where="w", refresh=True))
        got.append(await source.token(config, where="w"))
        changed = {"oauth2_token_command": [*helper.argv[:3], "ya29.other", "token"]}
        got.append(await source.token(changed, where="w"))  # another command: run anew
        got.append(await source.token({}, where="w"))  # none named: None
        got.append(await resolve_password(config, where="w"))  # no password either
        return got

    got = asyncio.run(main())
    assert got[:5] == [helper.token(1)] * 3 + [helper.token(2)] * 2
    assert got[5] == "ya29.other3." + "Q" * 1500
    assert got[6:] == [None, None]


def test_a_token_with_spaces_or_control_characters_is_refused(tmp_path: Path) -> None:
    for printed in ("two words", "bad\x01sep"):
        config = {"oauth2_token_command": ["printf", "%s\\n", printed]}
        with pytest.raises(MapiError) as caught:
            asyncio.run(resolve_oauth2_token(config, where="p"))
        assert caught.value.code == ErrorCode.MAPI_E_LOGON_FAILED
        assert "no access token" in caught.value.message
        assert printed not in caught.value.message


# -- configuration -------------------------------------------------------------------------


def test_configuration_errors() -> None:
    base = {"host": "smtp.example.org", "username": USER, "oauth2_token_command": "oama access a"}
    assert SmtpService.check_config(base) == []
    assert SmtpService.check_config({**base, "security": "tls", "port": 465}) == []
    for extra in ({"password": "x"}, {"password_command": "pass show m"}, {"keyring": "m"}):
        problems = SmtpService.check_config({**base, **extra})
        assert [p.key for p in problems] == ["oauth2_token_command"]
        assert "not both" in problems[0].message
        [why] = secret_problems({**base, **extra})  # the daemon's resolver refuses it too
        assert "not both" in why
    both = {**base, "password": "x"}
    with pytest.raises(MapiError) as caught:
        asyncio.run(resolve_oauth2_token(both, where="p"))
    assert caught.value.code == ErrorCode.MAPI_E_INVALID_PARAMETER

    no_user = {k: v for k, v in base.items() if k != "username"}
    assert [p.key for p in SmtpService.check_config(no_user)] == ["username"]
    clear = SmtpService.check_config({**base, "security": "none"})
    assert [p.key for p in clear] == ["security"]
    assert "access token unencrypted" in clear[0].message
    assert SmtpService.check_config({**base, "security": "none", "host": "127.0.0.1"}) == []
    assert [p.key for p in SmtpService.check_config({**base, "oauth2_token_command": 3})] == [
        "oauth2_token_command"
    ]
    assert "oauth2_token_command" in SmtpService.secret_keys


def test_a_profile_that_runs_a_token_command_must_not_be_writable_by_others(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alpha.toml"
    path.write_text('[services.out]\nservice = "smtp"\noauth2_token_command = "oama access a"\n')
    sections = [{"service": "smtp", "oauth2_token_command": "oama access a"}]
    path.chmod(0o644)
    assert check_file_secrecy(path, sections) is None
    path.chmod(0o664)
    problem = check_file_secrecy(path, sections)
    assert problem is not None and problem.line == 3
    assert "runs an oauth2_token_command but is writable by others" in problem.message


def test_a_configuration_with_both_does_not_log_on(tmp_path: Path) -> None:
    config = {
        "host": "smtp.example.org",
        "username": USER,
        "oauth2_token_command": "oama access a",
        "password": "hunter2",
    }

    async def logon() -> None:
        await SmtpTransport(Support(config, tmp_path)).logon()

    with pytest.raises(MapiError) as caught:
        asyncio.run(logon())
    assert caught.value.code == ErrorCode.MAPI_E_UNCONFIGURED
    assert "oauth2_token_command: give either oauth2_token_command" in caught.value.message
    assert "hunter2" not in caught.value.message


# -- in the daemon ---------------------------------------------------------------------------

DEBUG = 'default_profile = "alpha"\nwatch = "off"\nlog_level = "debug"\n'


def _profile(tmp_path: Path, server: SmtpServer, helper: TokenCommand) -> str:
    return standard_profile(tmp_path / "alpha") + smtp_section(
        server, username=USER, oauth2_token_command=helper.argv
    )


def test_daemon_refreshes_a_rejected_token_and_never_logs_it(
    tmp_path: Path, make_daemon: DaemonFactory, make_smtp_server: MakeServer
) -> None:
    helper = TokenCommand(tmp_path)
    server = oauth2_server(make_smtp_server, tokens={helper.token(2)})
    proc = make_daemon(profiles={"alpha": _profile(tmp_path, server, helper)}, config=DEBUG)
    mail = Mail(proc.client())
    mail.send("By OAuth2", to=GRACE)
    assert server.wait_for(1)[0].login == USER
    wait_until(lambda: mail.outbox() == [] or None, "an empty Outbox")
    assert helper.runs == 2
    row = mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)
    shown = mail.client.status_settings(
        mail.token, mail.status(ResourceType.MAPI_TRANSPORT_PROVIDER)
    )
    assert shown["config"]["oauth2_token_command"] == MASK
    log = proc.log()
    assert "rejected the access token" in log
    for token in (helper.token(1), helper.token(2), helper.prefix):
        assert token not in log and token not in repr(row) and token not in repr(shown)


def test_daemon_rejected_twice_keeps_the_message_queued(
    tmp_path: Path, make_daemon: DaemonFactory, make_smtp_server: MakeServer
) -> None:
    helper = TokenCommand(tmp_path)
    server = oauth2_server(make_smtp_server, "tls", mechanisms=("XOAUTH2",))
    proc = make_daemon(profiles={"alpha": _profile(tmp_path, server, helper)}, config=DEBUG)
    mail = Mail(proc.client())
    mail.send("Not by OAuth2", to=GRACE)
    row = wait_until(
        lambda: (
            r
            if "authentication failed"
            in (r := mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER))["PR_STATUS_STRING"]
            else None
        ),
        "the transport row to say authentication failed",
    )
    assert row["PR_STATUS_STRING"].startswith("Send failed: authentication failed for ")
    assert "XOAUTH2, error status 401" in row["PR_STATUS_STRING"]
    assert not row["PR_STATUS_CODE"] & StatusCode.STATUS_FAILURE  # a send failed, not logon
    wait_until(lambda: "next try in" in mail.spooler_says() or None, "the spooler to wait")
    assert mail.outbox() == ["Not by OAuth2"]
    assert server.messages == []
    assert helper.runs == 2
    texts = proc.log() + repr(mail.rows())
    for token in (helper.token(1), helper.token(2), helper.prefix):
        assert token not in texts


def test_daemon_both_credentials_is_a_clear_error_in_the_row(
    tmp_path: Path, make_daemon: DaemonFactory, make_smtp_server: MakeServer
) -> None:
    helper = TokenCommand(tmp_path)
    server = oauth2_server(make_smtp_server)
    profile = _profile(tmp_path, server, helper) + 'password_command = ["printf", "hunter2"]\n'
    proc = make_daemon(profiles={"alpha": profile})
    client = proc.client()
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
    rows = client.session_status_table(token)["rows"]
    text = repr(rows)
    assert "give either oauth2_token_command (OAuth2) or a password, not both" in text, rows
    assert "hunter2" not in text and "hunter2" not in proc.log()
    assert helper.runs == 0
