"""A message's SMTP envelope: the reverse-path, the recipients and the MAIL options."""

from __future__ import annotations

import re
import smtplib
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from mapid.providers.base import Identity, TransportFailure

__all__ = ["BARE_LF", "envelope_sender", "mail_options", "plausible", "unique_addresses"]

_HEADER_PARSER = BytesHeaderParser()
BARE_LF = re.compile(rb"(?<!\r)\n")


def unique_addresses(addresses: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            out.append(address)
    return out


def plausible(address: str) -> bool:
    return bool(re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", address))


def envelope_sender(identity: Identity | None, mime: bytes) -> str:
    """The reverse-path: the transport's `from`, else the spooler's sender, else From."""
    if identity is not None and plausible(identity.email):
        return identity.email
    headers = _HEADER_PARSER.parsebytes(mime, headersonly=True)
    for _name, address in getaddresses(headers.get_all("From", [])):
        if plausible(address):
            return address
    raise TransportFailure(
        "no sender address: the session has no identity and the message no From "
        "(set the smtp service's from)",
        permanent=True,
    )


def mail_options(conn: smtplib.SMTP, sender: str, recipients: list[str], body: bytes) -> list[str]:
    """MAIL FROM's options: SMTPUTF8 for non-ASCII addresses (a permanent failure without
    it), BODY=8BITMIME for a non-ASCII body the server takes."""
    options: list[str] = []
    if not (sender + "".join(recipients)).isascii():
        if not conn.has_extn("smtputf8"):
            raise TransportFailure(
                "the server does not take non-ASCII addresses (no SMTPUTF8)", permanent=True
            )
        options.append("SMTPUTF8")
    if not body.isascii() and conn.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    return options
