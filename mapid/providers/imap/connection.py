"""Opening one IMAP connection (blocking; run on that connection's own thread) and saying
in a few words why it failed.

`security = "tls"` is TLS from the first byte (IMAPS), "starttls" upgrades before the login,
"none" (loopback only, config.py) logs in in the clear. Certificates and host names are
always checked, against the system's CAs or the `ca_file`. Never a password in a message.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mapid.providers.imap.config import ImapSettings

__all__ = ["LINK_ERRORS", "AuthFailed", "describe", "open_connection", "tls_context"]

LINK_ERRORS: tuple[type[BaseException], ...] = (OSError, imaplib.IMAP4.error, EOFError)
"""What a broken or refused connection raises (socket errors, IMAPClient's errors)."""


class AuthFailed(Exception):
    """The server refused the login (not a network failure): the row says so."""


def tls_context(settings: ImapSettings) -> ssl.SSLContext:
    cafile = str(settings.ca_file) if settings.ca_file is not None else None
    return ssl.create_default_context(cafile=cafile)


def open_connection(
    settings: ImapSettings, password: str | None, context: ssl.SSLContext | None
) -> IMAPClient:
    """Connect, upgrade to TLS as configured, and log in."""
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
        if password is None:
            raise AuthFailed(f"no password for {settings.username}")
        try:
            client.login(settings.username, password)
        except LoginError as exc:
            if "socket error" in str(exc):  # IMAPClient wraps a dropped link in LoginError
                raise EOFError(_text(exc)) from None
            raise AuthFailed(f"login as {settings.username} refused: {_text(exc)}") from None
    except BaseException:
        close_quietly(client)
        raise
    return client


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
