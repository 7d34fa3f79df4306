"""Opening a connection to the server: the TLS context, the greeting, STARTTLS and AUTH.

Blocking: the transport calls these in a worker thread.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
from pathlib import Path
from typing import Any

from mapid.providers.base import TransportFailure
from mapid.providers.smtp.config import SmtpSettings

__all__ = ["ServerNameContext", "close_quietly", "new_client", "open_session", "quit_quietly"]


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
    conn: smtplib.SMTP, s: SmtpSettings, tls: ssl.SSLContext | None, password: str | None
) -> None:
    """Connect `conn`, greet, secure and authenticate it; on any failure it is closed."""
    try:
        conn.connect(s.host, s.port)
        conn.ehlo_or_helo_if_needed()
        if s.security == "starttls":
            if not conn.has_extn("starttls"):
                raise TransportFailure(f"{s.where}: the server does not offer STARTTLS")
            conn.starttls(context=tls)
            conn.ehlo()
        if s.username is not None:
            if not conn.has_extn("auth"):
                raise TransportFailure(
                    f"authentication failed: {s.where} offers no AUTH"
                    + (" before STARTTLS" if s.security == "none" else "")
                )
            conn.login(s.username, password or "")
    except BaseException:
        close_quietly(conn)
        raise


def quit_quietly(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(smtplib.SMTPException, OSError):
        conn.quit()
    close_quietly(conn)


def close_quietly(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        conn.close()
