"""OAuth2 for the imap store, against a real Dovecot 2.3 whose `oauth2` passdb asks a real
token-introspection endpoint on loopback (tests/dovecot_server.py's `Introspection`), with a
real token command: a script in tmp_path that prints a 1.5 kB token and counts its runs, as
oama or mutt_oauth2.py print a fresh one on each call (test_smtp_oauth2.TokenCommand).

The store logs in with SASL OAUTHBEARER when Dovecot offers it, else XOAUTH2; a rejected
token is refreshed once (exactly two command runs), a second rejection is an
authentication failure in the row that waits for validate_state, and no token ever shows
in the daemon's log or rows. Provider level first (tests/provider_support.Support), then in
the daemon.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from test_imap_store import Mapi, imap_profile, mime
from test_smtp_oauth2 import TokenCommand

from mapid.constants import StatusCode, ValidateStateFlags
from mapid.daemon.sessions.logon import path_part
from mapid.errors import ErrorCode, MapiError
from mapid.providers.imap import ImapService, ImapStore
from mapid.providers.imap.connection import Login
from mapid.providers.network import is_loopback

from conftest import DaemonFactory, wait_until
from dovecot_server import (  # noqa: F401 (the fixture)
    IMAP_USER,
    DovecotFactory,
    DovecotServer,
    Introspection,
    dovecot_fixture,
)
from provider_support import Support

T = TypeVar("T")
OFFLINE = int(StatusCode.STATUS_OFFLINE)
BOTH = ("oauthbearer", "xoauth2")
TIMEOUT = 10
"""Dovecot waits 2 s before it answers a failed login (auth_failure_delay)."""
DEBUG = 'default_profile = "alpha"\nwatch = "off"\nlog_level = "debug"\n'


def start(dovecot: DovecotFactory, mechanisms: tuple[str, ...] = BOTH) -> DovecotServer:
    """A Dovecot offering `mechanisms` (and PLAIN, LOGIN), with one message in the Inbox."""
    server = dovecot.start(dovecot.root / "imap-mail", oauth2=mechanisms)
    server.imapclient().append("INBOX", mime("Welcome"), flags=())  # by password
    return server


def intro(server: DovecotServer) -> Introspection:
    assert server.introspection is not None
    return server.introspection


def config_for(server: DovecotServer, helper: TokenCommand, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.port,
        "security": "none",
        "username": IMAP_USER,
        "oauth2_token_command": helper.argv,
        "poll_interval": 600,
        "timeout": TIMEOUT,
    }
    config.update(extra)
    return config


def run(
    tmp_path: Path, config: dict[str, Any], body: Callable[[ImapStore, Support], Awaitable[T]]
) -> T:
    """Log an ImapStore on, run `body` with it, log it off: all in one event loop."""

    async def main() -> T:
        support = Support(config, tmp_path, state_root=tmp_path / "state")
        store = ImapStore(support)
        await store.logon()
        try:
            return await body(store, support)
        finally:
            await store.logoff()

    return asyncio.run(main())


async def row_when(store: ImapStore, check: Callable[[dict[str, Any]], bool], what: str) -> Any:
    """The store's row (code, text) once `check` holds for it."""
    deadline = asyncio.get_running_loop().time() + 3 * TIMEOUT
    while True:
        props = store.status_props()
        if check(props):
            return props
        assert asyncio.get_running_loop().time() < deadline, f"no row {what}: {props}"
        await asyncio.sleep(0.05)


def online(props: dict[str, Any]) -> bool:
    return not props["PR_STATUS_CODE"] & OFFLINE


def logins(server: DovecotServer, method: str) -> int:
    return len(re.findall(rf"Login: user=<{IMAP_USER}>, method={method}\b", server.log()))


# -- provider level --------------------------------------------------------------------------


def test_oauthbearer_when_offered(tmp_path: Path, dovecot: DovecotFactory) -> None:
    server = start(dovecot)
    helper = TokenCommand(tmp_path)
    intro(server).accept(helper.token(1))

    async def body(store: ImapStore, support: Support) -> dict[str, Any]:
        props = await row_when(store, online, "online")
        await asyncio.sleep(0.5)  # the IDLE connection logs in after the first sync
        return dict(props)

    props = run(tmp_path, config_for(server, helper), body)
    assert "1 message in Inbox, 1 unread" in props["PR_STATUS_STRING"], props
    assert helper.runs == 1
    # The command connection and IDLE's, both with the one token the command printed.
    assert intro(server).asked == [helper.token(1)] * 2
    assert logins(server, "OAUTHBEARER") == 2 and logins(server, "XOAUTH2") == 0


def test_xoauth2_when_only_it_is_offered(tmp_path: Path, dovecot: DovecotFactory) -> None:
    server = start(dovecot, ("xoauth2",))
    helper = TokenCommand(tmp_path)
    intro(server).accept(helper.token(1))

    async def body(store: ImapStore, support: Support) -> dict[str, Any]:
        return dict(await row_when(store, online, "online"))

    props = run(tmp_path, config_for(server, helper), body)
    assert props["PR_STATUS_STRING"].startswith("Online:"), props
    assert helper.runs == 1
    assert logins(server, "XOAUTH2") >= 1 and logins(server, "OAUTHBEARER") == 0


@pytest.mark.parametrize("mechanisms", [BOTH, ("xoauth2",)])
def test_a_rejected_token_is_refreshed_once(
    tmp_path: Path, dovecot: DovecotFactory, mechanisms: tuple[str, ...]
) -> None:
    server = start(dovecot, mechanisms)
    helper = TokenCommand(tmp_path)
    intro(server).accept(helper.token(2))  # the first token has expired, say

    async def body(store: ImapStore, support: Support) -> dict[str, Any]:
        props = await row_when(store, online, "online")
        await asyncio.sleep(0.5)
        return dict(props)

    props = run(tmp_path, config_for(server, helper), body)
    assert props["PR_STATUS_STRING"].startswith("Online:"), props
    assert helper.runs == 2  # exactly two: the kept fresh token serves IDLE's login too
    asked = intro(server).asked
    assert asked[:2] == [helper.token(1), helper.token(2)], asked
    assert set(asked[2:]) <= {helper.token(2)}


def test_rejected_twice_is_an_authentication_failure_until_validate_state(
    tmp_path: Path, dovecot: DovecotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(dovecot)
    helper = TokenCommand(tmp_path)  # Dovecot accepts none of its tokens, for now

    async def body(store: ImapStore, support: Support) -> tuple[str, str, int]:
        failed = await row_when(
            store, lambda p: "authentication failed" in p["PR_STATUS_STRING"], "failed"
        )
        assert failed["PR_STATUS_CODE"] & OFFLINE  # the cache still answers
        assert support.row["PR_STATUS_STRING"] == failed["PR_STATUS_STRING"]
        await asyncio.sleep(3)  # no retry of its own: a third token would fare no better
        runs = helper.runs
        intro(server).accept(helper.token(3))  # the user re-authorized the helper
        await store.validate_state(ValidateStateFlags(0))
        back = await row_when(store, online, "online after validate_state")
        return failed["PR_STATUS_STRING"], back["PR_STATUS_STRING"], runs

    with caplog.at_level("DEBUG"):
        text, back, runs = run(tmp_path, config_for(server, helper), body)
    assert text.startswith(
        f"127.0.0.1:{server.port}: authentication failed for {IMAP_USER} "
        "(OAUTHBEARER, error status invalid_token): the server rejected the access token, "
        "and a fresh one from oauth2_token_command too: "
    ), text
    assert text.endswith("; trying again on validate_state or a new configuration"), text
    assert "retrying" not in text
    assert runs == 2
    assert back.startswith("Online:")
    assert helper.runs == 3  # validate_state: the kept token (2) once more, then a fresh one
    assert "rejected the access token" in caplog.text
    for token in (helper.token(1), helper.token(2), helper.token(3), helper.prefix):
        assert token not in text + back + caplog.text


def test_a_server_that_cannot_check_tokens_now_is_retried_without_a_fresh_token(
    tmp_path: Path, dovecot: DovecotFactory
) -> None:
    server = start(dovecot)
    helper = TokenCommand(tmp_path)
    intro(server).status = 500  # the identity provider is down

    async def body(store: ImapStore, support: Support) -> str:
        props = await row_when(store, lambda p: "for now" in p["PR_STATUS_STRING"], "failed")
        return str(props["PR_STATUS_STRING"])

    text = run(tmp_path, config_for(server, helper), body)
    assert "(OAUTHBEARER) failed for now: [UNAVAILABLE]" in text, text
    assert re.search(r"; retrying in \d+ s$", text), text
    assert helper.runs == 1  # not the token's fault: no fresh one


def test_a_token_command_that_fails_says_why_and_is_retried(
    tmp_path: Path, dovecot: DovecotFactory
) -> None:
    server = start(dovecot)
    helper = TokenCommand(tmp_path, "fail")

    async def body(store: ImapStore, support: Support) -> str:
        props = await row_when(store, lambda p: "oauth2_token_command" in p["PR_STATUS_STRING"], "")
        return str(props["PR_STATUS_STRING"])

    text = run(tmp_path, config_for(server, helper), body)
    assert "exited with status 2: oama: no refresh token" in text, text
    assert re.search(r"; retrying in \d+ s$", text), text
    assert intro(server).asked == []


def test_a_server_without_oauth2_mechanisms(tmp_path: Path, dovecot: DovecotFactory) -> None:
    server = dovecot.start(dovecot.root / "imap-mail")  # PLAIN and LOGIN only
    helper = TokenCommand(tmp_path)

    async def body(store: ImapStore, support: Support) -> str:
        props = await row_when(store, lambda p: "neither" in p["PR_STATUS_STRING"], "failed")
        return str(props["PR_STATUS_STRING"])

    text = run(tmp_path, config_for(server, helper), body)
    assert "offers neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2" in text, text
    assert "(it offers AUTH=PLAIN AUTH=LOGIN before STARTTLS)" in text, text


def test_the_login_never_shows_its_secret() -> None:
    assert repr(Login("ada", token="ya29.secret")) == "Login('ada', token=...)"
    assert repr(Login("ada", password="hunter2")) == "Login('ada', password=...)"
    calls: list[int] = []

    def fresh() -> str:
        calls.append(1)
        return f"t{len(calls) + 1}"

    login = Login("ada", token="t1", fresh=fresh)
    assert login.refreshed("t1") == "t2"
    assert login.refreshed("t1") == "t2"  # a second connection saw t1 rejected: no new run
    assert calls == [1]


# -- configuration -------------------------------------------------------------------------


def test_configuration_errors() -> None:
    base = {"host": "imap.example.org", "username": IMAP_USER, "oauth2_token_command": "oama a"}
    assert ImapService.check_config(base) == []
    assert ImapService.check_config({**base, "security": "starttls", "port": 143}) == []
    for extra in ({"password": "x"}, {"password_command": "pass show m"}, {"keyring": "m"}):
        problems = ImapService.check_config({**base, **extra})
        assert [p.key for p in problems] == ["oauth2_token_command"]
        assert "give either oauth2_token_command (OAuth2) or a password, not both" in (
            problems[0].message
        )
    clear = ImapService.check_config({**base, "security": "none"})
    assert [p.key for p in clear] == ["security"]
    assert "access token unencrypted" in clear[0].message
    assert ImapService.check_config({**base, "security": "none", "host": "::1"}) == []
    no_user = {k: v for k, v in base.items() if k != "username"}
    assert [p.key for p in ImapService.check_config(no_user)] == ["username"]
    assert [p.key for p in ImapService.check_config({**base, "username": "adà"})] == ["username"]
    [bad] = ImapService.check_config({**base, "oauth2_token_command": 3})
    assert bad.key == "oauth2_token_command" and "3" not in bad.message
    assert "oauth2_token_command" in ImapService.secret_keys


def test_the_loopback_rule_is_one_for_every_service() -> None:
    from mapid.providers.smtp import SmtpService

    for host in ("localhost", "LOCALHOST.", "localhost.localdomain", "127.0.0.1", "127.8.9.1"):
        assert is_loopback(host), host
    for host in ("::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("imap.example.org", "10.0.0.1", "::2", "localhost.example.org", "", "[]"):
        assert not is_loopback(host), host
    for host, ok in (("127.0.0.1", True), ("mail.example.org", False)):
        imap = {"host": host, "username": "a", "password": "p", "security": "none"}
        smtp = {"host": host, "username": "a", "password": "p", "security": "none"}
        assert (ImapService.check_config(imap) == []) is ok
        assert (SmtpService.check_config(smtp) == []) is ok


def test_both_credentials_do_not_log_on(tmp_path: Path) -> None:
    config = {"host": "127.0.0.1", "username": "ada", "oauth2_token_command": "oama a"}
    config["password"] = "hunter2"

    async def logon() -> None:
        await ImapStore(Support(config, tmp_path)).logon()

    with pytest.raises(MapiError) as caught:
        asyncio.run(logon())
    assert caught.value.code == ErrorCode.MAPI_E_UNCONFIGURED
    assert "oauth2_token_command: give either" in caught.value.message
    assert "hunter2" not in caught.value.message


# -- in the daemon ---------------------------------------------------------------------------


def test_daemon_refreshes_a_rejected_token_and_never_logs_it(
    make_daemon: DaemonFactory, dovecot: DovecotFactory, tmp_path: Path
) -> None:
    server = start(dovecot)
    helper = TokenCommand(tmp_path)
    intro(server).accept(helper.token(2))
    profile = imap_profile(
        server, oauth2_token_command=helper.argv, timeout=TIMEOUT, poll_interval=600
    ).replace('password_command = ["printf", "%s", "dovecot-test-password"]\n', "")
    assert "password" not in profile
    proc = make_daemon(profiles={"alpha": profile}, config=DEBUG)
    mapi = Mapi(proc.client())
    row = wait_until(
        lambda: r if not (r := mapi.row())["PR_STATUS_CODE"] & OFFLINE else None,
        "the imap row online",
        timeout=3 * TIMEOUT,
    )
    assert "1 message in Inbox" in row["PR_STATUS_STRING"], row
    assert set(wait_until(lambda: mapi.contents("Inbox") or None, "the Inbox")) == {"Welcome"}
    assert helper.runs == 2

    # The service's state directory (Support.state_dir): private, under the daemon's.
    state = proc.state_dir / "services" / path_part("alpha") / path_part("mail")
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert any(state.iterdir()), "the account's cache is in the service's state directory"

    log = proc.log()
    assert "rejected the access token" in log
    rows = repr(mapi.client.session_status_table(mapi.token)["rows"])
    for token in (helper.token(1), helper.token(2), helper.prefix):
        assert token not in log and token not in rows


def test_daemon_rejected_twice_says_so_in_the_row(
    make_daemon: DaemonFactory, dovecot: DovecotFactory, tmp_path: Path
) -> None:
    server = start(dovecot, ("xoauth2",))
    helper = TokenCommand(tmp_path)
    profile = imap_profile(
        server, oauth2_token_command=helper.argv, timeout=TIMEOUT, poll_interval=600
    ).replace('password_command = ["printf", "%s", "dovecot-test-password"]\n', "")
    proc = make_daemon(profiles={"alpha": profile}, config=DEBUG)
    mapi = Mapi(proc.client())
    row = wait_until(
        lambda: r if "authentication failed" in (r := mapi.row())["PR_STATUS_STRING"] else None,
        "the imap row to say authentication failed",
        timeout=3 * TIMEOUT,
    )
    assert row["PR_STATUS_CODE"] & OFFLINE and not row["PR_STATUS_CODE"] & StatusCode.STATUS_FAILURE
    assert "(XOAUTH2, error status 401)" in row["PR_STATUS_STRING"], row
    assert helper.runs == 2
    assert mapi.contents("Inbox") == {}  # the logon stands; nothing cached yet
    texts = proc.log() + repr(mapi.client.session_status_table(mapi.token)["rows"])
    for token in (helper.token(1), helper.token(2), helper.prefix):
        assert token not in texts
