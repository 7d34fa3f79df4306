"""Opening one IMAP connection (blocking; run on that connection's own thread), logging in
with a password or an OAuth2 access token, and saying in a few words why it failed.

`security = "tls"` is TLS from the first byte (IMAPS), "starttls" upgrades before the login,
"none" (loopback only, config.py) logs in in the clear. Certificates and host names are
always checked, against the system's CAs or the `ca_file`.

With `oauth2_token_command` the login is SASL OAUTHBEARER (RFC 7628) when the server's
CAPABILITY lists AUTH=OAUTHBEARER, else XOAUTH2, with the messages smtp sends too
(smtp/sasl.py). The exchange goes through IMAPClient's `sasl_login` with a mechanism of
our own rather than its `oauthbearer_login` / `oauth2_login`: those answer the
server's error challenge with the initial response (the token) again, where RFC 7628 3.2.3
wants a lone %x01 (XOAUTH2: an empty line), and drop the error's status. When the server
rejects the token, `Login.refreshed` gets a fresh one (the token command runs again, on the
event loop) and the login is tried once more, on the same connection or, when the server
hung up, on a new one; rejected again, it is `TokenRejected`, which no retry will mend
until someone acts. "[UNAVAILABLE]" (the server could not check the token now) is not a
rejection: no fresh token, a plain AuthFailed, and the account retries later.

Never a password or a token in a message or a log line: `Login`'s repr hides them, failure
texts are the server's words with any secret cut out, and IMAPClient's own debug log shows
only the length of what AUTHENTICATE sends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import imaplib
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mapid.errors import MapiError
from mapid.providers.base import ProviderSupport
from mapid.providers.imap.config import ImapSettings
from mapid.providers.smtp.sasl import Bearer, oauthbearer, pick_mechanism, xoauth2

__all__ = [
    "FRESH_TOKEN_WAIT_S",
    "LINK_ERRORS",
    "AuthFailed",
    "Login",
    "TokenRejected",
    "describe",
    "make_login",
    "open_connection",
    "tls_context",
]

LINK_ERRORS: tuple[type[BaseException], ...] = (OSError, imaplib.IMAP4.error, EOFError)
"""What a broken or refused connection raises (socket errors, IMAPClient's errors)."""
FRESH_TOKEN_WAIT_S = 60.0
"""How long a connection's thread waits for the loop to run the token command again."""


class AuthFailed(Exception):
    """The server refused the login (not a network failure): the row says so."""


class TokenRejected(AuthFailed):
    """The server rejected the access token and a fresh one as well: trying again would
    run the token command again for nothing, so the account waits for validate_state or a
    new configuration (the user re-authorizes the helper meanwhile)."""


class Login:
    """What a login needs, shared by the account's connections (the command connection and
    IDLE's, each on a thread of its own): the user and a password, or an OAuth2 access token
    and `fresh`, a blocking call that gets a fresh one. Its repr never shows a secret."""

    def __init__(
        self,
        username: str,
        *,
        password: str | None = None,
        token: str | None = None,
        fresh: Callable[[], str] | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.token = token
        self._fresh = fresh
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        kind = "token" if self.token is not None else "password"
        return f"Login({self.username!r}, {kind}=...)"

    def refreshed(self, rejected: str) -> str:
        """A fresh token after the server rejected `rejected`. The command runs once for a
        rejected token, however many connections saw it rejected: a thread that comes
        second gets the token the first one fetched."""
        with self._lock:
            current = self.token or ""
            if current != rejected:
                return current
            if self._fresh is None:
                raise AuthFailed("the access token was rejected and no fresh one can be had")
            self.token = self._fresh()
            return self.token


async def make_login(settings: ImapSettings, support: ProviderSupport) -> Login:
    """The login of the account's next connections (on the loop): the password from
    `support.password()`, or the access token from `support.oauth2_token()` (the kept one)
    with a way to a fresh one that the connection's thread can take. A token command that
    fails raises MapiError (its message says why, never the token)."""
    if not settings.oauth2:
        return Login(settings.username, password=await support.password())
    token = await support.oauth2_token()
    if token is None:
        raise AuthFailed("no access token: the service names no oauth2_token_command")
    loop = asyncio.get_running_loop()
    where, user, logger = settings.where, settings.username, support.logger

    def fresh() -> str:
        """On a connection's thread: a fresh token, from the command run on the loop."""
        logger.info(
            "imap %s rejected the access token of %s; running oauth2_token_command again",
            where,
            user,
        )
        future = asyncio.run_coroutine_threadsafe(support.oauth2_token(refresh=True), loop)
        try:
            got = future.result(FRESH_TOKEN_WAIT_S)
        except MapiError as exc:  # where and why, never the token
            raise AuthFailed(f"no fresh access token: {exc.message}") from None
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            future.cancel()
            raise AuthFailed(
                "no fresh access token: oauth2_token_command did not give one in time"
            ) from None
        if got is None:
            raise AuthFailed("no fresh access token: the service names no oauth2_token_command")
        return got

    return Login(user, token=token, fresh=fresh)


def tls_context(settings: ImapSettings) -> ssl.SSLContext:
    cafile = str(settings.ca_file) if settings.ca_file is not None else None
    return ssl.create_default_context(cafile=cafile)


def open_connection(
    settings: ImapSettings, login: Login | None, context: ssl.SSLContext | None
) -> IMAPClient:
    """Connect, upgrade to TLS as configured, and log in (with the password or the token)."""
    client = _connect(settings, context)
    try:
        if login is None or (login.password is None and login.token is None):
            raise AuthFailed(f"no password for {settings.username}")
        if login.token is not None:
            client = _oauth2(client, settings, context, login)
        else:
            _password_login(client, settings, login.password or "")
    except BaseException:
        close_quietly(client)
        raise
    return client


def _connect(settings: ImapSettings, context: ssl.SSLContext | None) -> IMAPClient:
    client = IMAPClient(
        settings.host,
        port=settings.port,
        ssl=settings.security == "tls",
        ssl_context=context,
        timeout=settings.timeout,
    )
    try:
        if settings.security == "starttls":
            client.starttls(context)
    except BaseException:
        close_quietly(client)
        raise
    return client


def _password_login(client: IMAPClient, settings: ImapSettings, password: str) -> None:
    try:
        client.login(settings.username, password)
    except LoginError as exc:
        if "socket error" in str(exc):  # IMAPClient wraps a dropped link in LoginError
            raise EOFError(_text(exc)) from None
        text = _text(exc).replace(password, "...") if password else _text(exc)
        raise AuthFailed(f"login as {settings.username} refused: {text}") from None


# -- OAuth2 ----------------------------------------------------------------------------------


class _Exchange:
    """imaplib's authobject for one AUTHENTICATE: the initial response to the first (empty)
    continuation, then what the mechanism's spec answers to an error challenge (Bearer)."""

    def __init__(self, bearer: Bearer) -> None:
        self.bearer = bearer
        self.started = False

    def __call__(self, challenge: bytes) -> str:
        if not self.started:
            self.started = True
            return self.bearer()
        return self.bearer(challenge)


class _Refused(Exception):
    """One AUTHENTICATE was answered NO or BAD: the server's words and its error status."""

    def __init__(self, text: str, status: str | None) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


def _mechanism(client: IMAPClient, settings: ImapSettings) -> str:
    caps = [bytes(c).decode("ascii", "replace").upper() for c in client.capabilities()]
    offered = [c[5:] for c in caps if c.startswith("AUTH=")]
    mechanism = pick_mechanism(offered)
    if mechanism is None:
        raise AuthFailed(
            f"login as {settings.username} impossible: the server offers neither "
            "AUTH=OAUTHBEARER nor AUTH=XOAUTH2 for oauth2_token_command (it offers "
            + (" ".join(f"AUTH={m}" for m in offered) or "no AUTH= mechanism")
            + (" before STARTTLS" if settings.security == "none" else "")
            + ")"
        )
    return mechanism


def _authenticate(
    client: IMAPClient, settings: ImapSettings, mechanism: str, user: str, token: str
) -> None:
    """One AUTHENTICATE with `token`; _Refused when the server says NO (or BAD)."""
    if mechanism == "OAUTHBEARER":
        initial = oauthbearer(user, token, settings.host, settings.port)
    else:
        initial = xoauth2(user, token)
    exchange = _Exchange(Bearer(mechanism, initial))
    try:
        client.sasl_login(mechanism, exchange)
    except LoginError as exc:
        # sasl_login turns every imaplib error into LoginError; the one it caught stays
        # the exception's context, and a broken link (abort) is not a refusal.
        if isinstance(exc.__context__, imaplib.IMAP4.abort):
            raise exc.__context__ from None
        text = _text(exc).replace(token, "...")
        raise _Refused(text, exchange.bearer.error) from None


def _oauth2(
    client: IMAPClient, settings: ImapSettings, context: ssl.SSLContext | None, login: Login
) -> IMAPClient:
    """Log in with the access token; when the server rejects it, once more with a fresh one
    (on a new connection when the server hung up). Returns the logged-in client."""
    mechanism = _mechanism(client, settings)
    token = login.token or ""
    try:
        _authenticate(client, settings, mechanism, login.username, token)
        return client
    except _Refused as refused:
        _unless_unavailable(refused, settings, mechanism)
        first = refused
    fresh = login.refreshed(token)
    try:
        _authenticate(client, settings, mechanism, login.username, fresh)
        return client
    except _Refused as refused:
        _unless_unavailable(refused, settings, mechanism)
        raise _rejected(settings, mechanism, first, refused) from None
    except LINK_ERRORS:
        # The server hung up after the rejection: the fresh token gets a new connection.
        close_quietly(client)
    client = _connect(settings, context)
    try:
        mechanism = _mechanism(client, settings)
        _authenticate(client, settings, mechanism, login.username, fresh)
    except _Refused as refused:
        close_quietly(client)
        _unless_unavailable(refused, settings, mechanism)
        raise _rejected(settings, mechanism, first, refused) from None
    except BaseException:
        close_quietly(client)
        raise
    return client


def _unless_unavailable(refused: _Refused, settings: ImapSettings, mechanism: str) -> None:
    """RFC 5530's [UNAVAILABLE]: the server could not check the token now (its identity
    provider is down): not the token's fault, so no fresh one, and the account retries."""
    if "[UNAVAILABLE]" in refused.text.upper():
        raise AuthFailed(
            f"login as {settings.username} ({mechanism}) failed for now: {refused.text}"
        )


def _rejected(
    settings: ImapSettings, mechanism: str, first: _Refused, second: _Refused
) -> TokenRejected:
    status = second.status or first.status
    why = f", error status {status}" if status else ""
    return TokenRejected(
        f"authentication failed for {settings.username} ({mechanism}{why}): the server "
        f"rejected the access token, and a fresh one from oauth2_token_command too: "
        f"{second.text}"
    )


# -- closing and naming failures -------------------------------------------------------------


def close_quietly(client: Any) -> None:
    """Log out if the connection still answers; drop it either way."""
    with contextlib.suppress(Exception):
        client.shutdown()


def _text(exc: BaseException) -> str:
    text = str(exc).strip()
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text or type(exc).__name__


def describe(exc: BaseException) -> str:
    """A few words for the status row: "connection refused", "timed out"..."""
    if isinstance(exc, AuthFailed):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        return "the server closed the connection"
    if isinstance(exc, imaplib.IMAP4.abort):
        return f"connection lost ({_text(exc)})"
    if isinstance(exc, OSError):
        return (exc.strerror or str(exc) or type(exc).__name__).lower()
    return _text(exc)
