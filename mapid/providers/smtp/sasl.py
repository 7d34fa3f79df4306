"""The SASL messages of OAuth2 (RFC 7628 OAUTHBEARER, and Google's and Microsoft's XOAUTH2).

Pure: no sockets, no smtplib. `Bearer` is the authobject smtplib's `SMTP.auth` wants: called
without a challenge it gives the initial response; called with one (the server's error JSON
after a rejected token) it gives what each mechanism's spec requires in answer, a single
%x01 for OAUTHBEARER (RFC 7628 3.2.3), an empty line for XOAUTH2, and keeps the error's
status for the failure's wording. An IMAP client sends the same messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = ["MECHANISMS", "Bearer", "oauthbearer", "pick_mechanism", "xoauth2"]

MECHANISMS = ("OAUTHBEARER", "XOAUTH2")
"""The OAuth2 mechanisms, the one to prefer first."""


def _saslname(user: str) -> str:
    """RFC 5801's escaping of an authzid in the GS2 header: "," and "=" as =2C and =3D."""
    return user.replace("=", "=3D").replace(",", "=2C")


def oauthbearer(user: str, token: str, host: str, port: int) -> str:
    """RFC 7628's client response: GS2 header, then host, port and auth key-values."""
    return f"n,a={_saslname(user)},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"


def xoauth2(user: str, token: str) -> str:
    """The XOAUTH2 initial response (developers.google.com/gmail/imap/xoauth2-protocol)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def pick_mechanism(offered: Iterable[str]) -> str | None:
    """OAUTHBEARER when the server offers it, else XOAUTH2, else None."""
    names = {name.upper() for name in offered}
    return next((m for m in MECHANISMS if m in names), None)


class Bearer:
    """smtplib's authobject for one OAuth2 AUTH exchange."""

    def __init__(self, mechanism: str, initial: str) -> None:
        self.mechanism = mechanism
        self._initial = initial
        self.error: str | None = None
        """The `status` of the server's error JSON, if it sent one (e.g. "401",
        "invalid_token"): the server's words, never the token."""

    def __call__(self, challenge: bytes | None = None) -> str:
        if challenge is None:
            return self._initial
        self.error = _error_status(challenge)
        return "\x01" if self.mechanism == "OAUTHBEARER" else ""


def _error_status(challenge: bytes) -> str:
    try:
        found = json.loads(challenge.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "no error status"
    status = found.get("status") if isinstance(found, dict) else None
    if not isinstance(status, str | int):
        return "no error status"
    return "".join(ch for ch in str(status) if ch.isprintable())[:40]
