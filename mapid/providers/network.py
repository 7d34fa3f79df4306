"""What every service that logs on to a server shares: its credential keys and their rules.

`CREDENTIAL_PROPERTIES` is the schema of the keys (a password by one of three ways, or
an OAuth2 token command); `credential_problems` checks what a schema cannot say: a token
command and a password are not both given, and credentials travel without TLS only to
this machine.
A service with `security = "none"` and a password or a token to any other host is
misconfigured (its check_config says so, naming the key); to a loopback host (a local
Dovecot, an SSH tunnel's end, a test server) the clear text never leaves the machine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from mapid.providers.base import ConfigProblem

__all__ = [
    "CREDENTIAL_PROPERTIES",
    "PASSWORD_KEYS",
    "TOKEN_COMMAND",
    "credential_problems",
    "is_loopback",
]

TOKEN_COMMAND = "oauth2_token_command"
PASSWORD_KEYS = ("password_command", "keyring", "password")

CREDENTIAL_PROPERTIES: dict[str, Any] = {
    "password": {
        "type": "string",
        "description": "Only in a profile file that no one else can read.",
    },
    "password_command": {
        "type": ["string", "array"],
        "items": {"type": "string"},
        "description": "A program that prints the password (no shell).",
    },
    "keyring": {"type": "string", "description": "Secret Service entry (with username)."},
    TOKEN_COMMAND: {
        "type": ["string", "array"],
        "items": {"type": "string"},
        "description": "OAuth2 instead of a password: a program that prints an access "
        "token (no shell), e.g. `oama access ada@gmail.com`; needs username.",
    },
}
"""The JSON Schema properties of the credential keys, for a service's CONFIG_SCHEMA."""

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine, so credentials may cross to it unencrypted.

    True for "localhost" (and "localhost.localdomain"), any address of 127.0.0.0/8 and ::1,
    written bare or in brackets ("[::1]"). Any other name is not trusted to be local, even if
    it resolves so today: the rule is read from the configuration alone, without DNS.
    """
    if host.lower().rstrip(".") in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def credential_problems(
    config: Mapping[str, Any], *, sends_credentials: bool, known: Sequence[ConfigProblem] = ()
) -> list[ConfigProblem]:
    """The credential rules a schema cannot say. `sends_credentials`: the service logs on
    with them (imap always; smtp when a username or token command is set). A key `known`
    already has a problem (the schema's) gets no second one."""
    problems: list[ConfigProblem] = []
    oauth2 = TOKEN_COMMAND in config
    passwords = [key for key in PASSWORD_KEYS if key in config]
    if oauth2 and passwords:
        problems.append(
            ConfigProblem(
                TOKEN_COMMAND,
                f"give either {TOKEN_COMMAND} (OAuth2) or a password, not both "
                f"(found {', '.join(passwords)} too)",
            )
        )
    username = config.get("username")
    if oauth2 and not username:
        problems.append(
            ConfigProblem("username", f"required with {TOKEN_COMMAND} (the account's address)")
        )
    elif oauth2 and isinstance(username, str) and not username.isascii():
        problems.append(ConfigProblem("username", f"must be ASCII with {TOKEN_COMMAND}"))
    host = config.get("host")
    clear = config.get("security") == "none" and isinstance(host, str) and not is_loopback(host)
    if clear and (sends_credentials or oauth2):
        secret = "access token" if oauth2 else "password"
        problems.append(
            ConfigProblem(
                "security",
                f'must be "starttls" or "tls": "none" would send the {secret} unencrypted '
                "(it is only for a server on this machine)",
            )
        )
    reported = {p.key for p in known}
    return [p for p in problems if p.key not in reported]
