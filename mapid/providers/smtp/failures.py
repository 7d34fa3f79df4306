"""What went wrong, for the spooler: smtplib's replies and exceptions as TransportFailures.

A 5xx reply to MAIL or DATA is permanent (a non-delivery report); anything the user or
the network can mend (a 4xx, a refused or timed-out connection, a TLS or certificate
failure, a wrong password or access token) is temporary, so the message stays queued.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Mapping

from mapid.providers.base import TransportFailure
from mapid.providers.smtp.config import SmtpSettings

__all__ = ["address_words", "auth_failure", "failure_of", "reply_failure", "reply_text"]


def reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def address_words(by_address: Mapping[str, str]) -> str:
    return "; ".join(f"{address}: {words}" for address, words in by_address.items())


def reply_failure(command: str, code: int, reply: bytes | str, s: SmtpSettings) -> Exception:
    words = f"{code} {reply_text(reply)}"
    if 500 <= code < 600:
        return TransportFailure(f"{command} refused: {words}", permanent=True)
    return TransportFailure(f"{command} deferred: {words}")


def auth_failure(
    exc: smtplib.SMTPAuthenticationError,
    s: SmtpSettings,
    mechanism: str,
    *,
    token_status: str | None,
    refreshed: bool,
    secret: str,
) -> TransportFailure:
    """The server refused an OAuth2 AUTH: temporary, as a wrong password is (the user mends
    it by signing in again with the token helper). The server's words, never the token: a
    server that echoes it gets it masked."""
    words = f"{exc.smtp_code} {reply_text(exc.smtp_error)}"
    if secret:
        words = words.replace(secret, "********")
    said = f", error status {token_status}" if token_status else ""
    again = "; a fresh token from oauth2_token_command was rejected too" if refreshed else ""
    return TransportFailure(
        f"authentication failed for {s.username} ({mechanism}{said}): {words}{again}"
    )


def failure_of(exc: BaseException, s: SmtpSettings) -> TransportFailure:
    """A clear, temporary-or-permanent failure for an exception of smtplib, ssl or socket."""
    where = f"{s.host}:{s.port}"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return TransportFailure(
            f"authentication failed for {s.username}: {exc.smtp_code} {reply_text(exc.smtp_error)}"
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return TransportFailure(f"authentication failed: {exc}")
    if isinstance(exc, smtplib.SMTPResponseException):
        words = f"{exc.smtp_code} {reply_text(exc.smtp_error)}"
        return TransportFailure(f"server said {words}", permanent=500 <= exc.smtp_code < 600)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransportFailure(
            f"certificate check failed for {s.host}: {exc.verify_message or exc.reason}"
            + ("" if s.ca_file else " (a private CA? set ca_file)")
        )
    if isinstance(exc, ssl.SSLError):
        return TransportFailure(f"TLS with {where} failed: {exc.reason or exc}")
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return TransportFailure(f"{where} did not answer within {s.timeout:g} s (timed out)")
    if isinstance(exc, ConnectionRefusedError):
        return TransportFailure(f"connection refused by {where} (is the server running?)")
    if isinstance(exc, socket.gaierror):
        return TransportFailure(f"host {s.host} not found: {exc.strerror}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransportFailure(f"{where} closed the connection")
    if isinstance(exc, FileNotFoundError) and s.ca_file is not None:
        return TransportFailure(f"ca_file {s.ca_file} does not exist")
    if isinstance(exc, OSError):
        return TransportFailure(f"cannot reach {where}: {exc.strerror or exc}")
    return TransportFailure(f"{type(exc).__name__}: {exc}", permanent=True)
