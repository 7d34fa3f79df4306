"""Opening a connection to the server: the TLS context, the greeting, STARTTLS and AUTH.

Blocking: the transport calls these in a worker thread. AUTH is smtplib's `login` (PLAIN,
LOGIN, CRAM-MD5) with a password; with an OAuth2 access token it is `SMTP.auth` with
OAUTHBEARER when the server offers it, else XOAUTH2 (sasl.py). A rejected token is asked for
once more (`Login.fresh`, which runs the token command again) and tried once more, on the
same connection or, when the server hung up after the rejection, on a new one.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mapid.providers.base import TransportFailure
from mapid.providers.smtp.config import SmtpSettings
from mapid.providers.smtp.failures import auth_failure
from mapid.providers.smtp.sasl import Bearer, oauthbearer, pick_mechanism, xoauth2

__all__ = [
    "Login",
    "ServerNameContext",
    "close_quietly",
    "new_client",
    "open_session",
    "quit_quietly",
]


class Login:
    """What AUTH needs, handed to the worker thread: the user and a password, or an access
    token and `fresh`, a blocking call that gets a fresh one (the transport runs the token
    command on the loop). Its repr never shows a secret."""

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
        self.fresh = fresh

    def __repr__(self) -> str:
        kind = "token" if self.token is not None else "password"
        return f"Login({self.username!r}, {kind}=...)"


class ServerNameContext(ssl.SSLContext):
    """A verifying client context that always checks the certificate against one host name.

    smtplib passes the host given to its constructor as the TLS server name, and an
    unconnected client (which the transport needs, to abort a stuck greeting) has none. Rather
    than set smtplib's private `_host`, the context fills in the name it was made for.
    """

    expected_host = ""

    @classmethod
    def for_server(cls, host: str, ca_file: Path | None) -> ServerNameContext:
        context = cls(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
        context.expected_host = host
        if ca_file is not None:
            context.load_verify_locations(cafile=str(ca_file))
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return context

    def wrap_socket(  # type: ignore[override]
        self, sock: socket.socket, server_side: bool = False, **kwargs: Any
    ) -> ssl.SSLSocket:
        kwargs["server_hostname"] = kwargs.get("server_hostname") or self.expected_host
        return super().wrap_socket(sock, server_side, **kwargs)


def new_client(s: SmtpSettings, tls: ssl.SSLContext | None) -> smtplib.SMTP:
    """An unconnected client for `s`: SMTP_SSL for security "tls", else SMTP.

    Made unconnected and then connected (open_session), so that the transport can reach its
    socket (to abort it) while the greeting, STARTTLS or AUTH is still under way. An
    unconnected smtplib client has no server name for TLS; the context supplies it
    (ServerNameContext).
    """
    if s.security == "tls":
        return smtplib.SMTP_SSL(local_hostname=s.helo, timeout=s.timeout, context=tls)
    return smtplib.SMTP(local_hostname=s.helo, timeout=s.timeout)


def open_session(
    conn: smtplib.SMTP, s: SmtpSettings, tls: ssl.SSLContext | None, login: Login | None
) -> None:
    """Connect `conn`, greet, secure and authenticate it; on any failure it is closed."""
    try:
        _greet(conn, s, tls)
        if login is not None:
            if s.oauth2:
                _oauth2(conn, s, tls, login)
            else:
                conn.login(login.username, login.password or "")
    except BaseException:
        close_quietly(conn)
        raise


def _greet(conn: smtplib.SMTP, s: SmtpSettings, tls: ssl.SSLContext | None) -> None:
    """Connect, EHLO, STARTTLS (for "starttls"); with a username, the server must offer AUTH."""
    conn.connect(s.host, s.port)
    conn.ehlo_or_helo_if_needed()
    if s.security == "starttls":
        if not conn.has_extn("starttls"):
            raise TransportFailure(f"{s.where}: the server does not offer STARTTLS")
        conn.starttls(context=tls)
        conn.ehlo()
    if s.username is not None and not conn.has_extn("auth"):
        raise TransportFailure(
            f"authentication failed: {s.where} offers no AUTH"
            + (" before STARTTLS" if s.security == "none" else "")
        )


def _mechanism(conn: smtplib.SMTP, s: SmtpSettings) -> str:
    offered = (conn.esmtp_features.get("auth") or "").upper().split()
    mechanism = pick_mechanism(offered)
    if mechanism is None:
        raise TransportFailure(
            f"authentication failed: {s.where} offers neither OAUTHBEARER nor XOAUTH2 for "
            f"oauth2_token_command (it offers AUTH {' '.join(offered) or 'without mechanisms'})"
        )
    return mechanism


def _oauth2(conn: smtplib.SMTP, s: SmtpSettings, tls: ssl.SSLContext | None, login: Login) -> None:
    """AUTH with the access token; when the server rejects it (a 5xx), once more with a
    fresh token. A second rejection, a 4xx (the server's trouble) or a 504 (it does not know
    the mechanism after all: a fresh token would not help) is the failure."""
    mechanism = _mechanism(conn, s)
    try:
        _bearer(conn, s, mechanism, login)
        return
    except _Rejected as rejected:
        if not 500 <= rejected.code < 600 or rejected.code == 504 or login.fresh is None:
            raise rejected.failure from None
    login.token = login.fresh()
    try:
        _bearer(conn, s, mechanism, login, again=True)
    except smtplib.SMTPServerDisconnected:
        # The server hung up after the rejection: the fresh token gets a new connection.
        close_quietly(conn)
        conn.ehlo_resp = conn.helo_resp = None  # as quit() leaves them: greet anew
        conn.esmtp_features, conn.does_esmtp = {}, False
        _greet(conn, s, tls)
        mechanism = _mechanism(conn, s)
        try:
            _bearer(conn, s, mechanism, login, again=True)
        except _Rejected as rejected:
            raise rejected.failure from None
    except _Rejected as rejected:
        raise rejected.failure from None


class _Rejected(Exception):
    def __init__(self, code: int, failure: TransportFailure) -> None:
        super().__init__(failure.message)
        self.code = code
        self.failure = failure


def _bearer(
    conn: smtplib.SMTP, s: SmtpSettings, mechanism: str, login: Login, *, again: bool = False
) -> None:
    token = login.token or ""
    if mechanism == "OAUTHBEARER":
        initial = oauthbearer(login.username, token, s.host, s.port)
    else:
        initial = xoauth2(login.username, token)
    bearer = Bearer(mechanism, initial)
    try:
        conn.auth(mechanism, bearer, initial_response_ok=True)
    except smtplib.SMTPAuthenticationError as exc:
        failure = auth_failure(
            exc, s, mechanism, token_status=bearer.error, refreshed=again, secret=token
        )
        raise _Rejected(exc.smtp_code, failure) from None


def quit_quietly(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(smtplib.SMTPException, OSError):
        conn.quit()
    close_quietly(conn)


def close_quietly(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        conn.close()
