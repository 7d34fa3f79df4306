"""The `smtp` service's configuration: schema, checks and the settings a connection needs.

Below both the transport (which reads its settings through `SmtpSettings.from_config`)
and the service (which declares the schema), so that neither imports the other for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import (
    SECRET_KEYS,
    ConfigProblem,
    Identity,
    ProviderSupport,
    schema_problems,
)
from mapid.providers.network import CREDENTIAL_PROPERTIES, TOKEN_COMMAND, credential_problems

__all__ = [
    "ADDRTYPE",
    "CONFIG_SCHEMA",
    "DEFAULT_PORTS",
    "DEFAULT_TIMEOUT_S",
    "SMTP_SECRET_KEYS",
    "TOKEN_COMMAND",
    "SmtpSettings",
    "check_config",
    "parse_sender",
]

ADDRTYPE = "SMTP"
DEFAULT_PORTS: Mapping[str, int] = {"none": 25, "starttls": 587, "tls": 465}
DEFAULT_TIMEOUT_S = 30.0
SMTP_SECRET_KEYS = SECRET_KEYS | {TOKEN_COMMAND}
"""The keys never shown: the password's, and the command that prints the access token."""


def parse_sender(value: str) -> Identity | None:
    """`"Ada Lovelace <ada@example.org>"` or `"ada@example.org"` as an Identity; None if bad."""
    if "\r" in value or "\n" in value or value.count("<") > 1:
        return None
    name, address = parseaddr(value)
    if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", address):
        return None
    return Identity(display_name=name or address, email=address, addrtype=ADDRTYPE)


CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "SMTP transport",
    "type": "object",
    "properties": {
        "host": {
            "type": "string",
            "pattern": "^[^\\s/]+$",
            "x-error": "must be a host name or address",
            "description": "The SMTP server (submission server of your provider).",
        },
        "port": {
            "type": "integer",
            "minimum": 1,
            "maximum": 65535,
            "description": "Default by security: 25 (none), 587 (starttls), 465 (tls).",
        },
        "security": {
            "enum": ["none", "starttls", "tls"],
            "default": "starttls",
            "x-error": 'must be "none", "starttls" or "tls"',
            "description": "starttls: upgrade after connecting; tls: TLS from the start. "
            "Certificates and host names are always checked.",
        },
        "username": {"type": "string", "description": "AUTH user; AUTH only when set."},
        **CREDENTIAL_PROPERTIES,
        "timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": DEFAULT_TIMEOUT_S,
            "description": "Seconds to wait for the server at each step.",
        },
        "from": {
            "type": "string",
            "description": 'Send as "Name <addr>" or addr instead of the session identity.',
        },
        "ca_file": {
            "type": "string",
            "description": "PEM file of a private CA to check the server's certificate "
            "with (default: the system's CAs).",
        },
        "helo": {"type": "string", "description": "The name to greet with (EHLO)."},
        "display_name": {"type": "string", "description": "Name of the transport."},
    },
    "required": ["host"],
    "additionalProperties": False,
}


def check_config(config: Mapping[str, Any]) -> list[ConfigProblem]:
    """What is wrong with an `smtp` section: the schema's problems, then the rules it
    cannot say (SmtpService.check_config)."""
    problems = schema_problems(CONFIG_SCHEMA, config, SMTP_SECRET_KEYS)
    sender = config.get("from")
    if isinstance(sender, str) and parse_sender(sender) is None:
        problems.append(ConfigProblem("from", 'must be "Name <name@domain>" or name@domain'))
    problems += credential_problems(
        config, sends_credentials=bool(config.get("username")), known=problems
    )
    return problems


@dataclass(frozen=True)
class SmtpSettings:
    """A checked configuration; what the row shows and the connection needs."""

    host: str
    port: int
    security: str
    username: str | None
    timeout: float
    sender: Identity | None
    ca_file: Path | None
    helo: str | None
    oauth2: bool = False
    """AUTH with an access token from `oauth2_token_command` (OAUTHBEARER or XOAUTH2)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], support: ProviderSupport) -> SmtpSettings:
        problems = check_config(config)
        if problems:
            raise MapiError(
                ErrorCode.MAPI_E_UNCONFIGURED,
                "smtp: " + "; ".join(f"{p.key}: {p.message}" for p in problems),
                details={"errors": [{"key": p.key, "message": p.message} for p in problems]},
            )
        security = str(config.get("security", "starttls"))
        sender = config.get("from")
        ca_file = config.get("ca_file")
        return cls(
            host=str(config["host"]),
            port=int(config.get("port", DEFAULT_PORTS[security])),
            security=security,
            username=config.get("username") or None,
            timeout=float(config.get("timeout", DEFAULT_TIMEOUT_S)),
            sender=parse_sender(sender) if isinstance(sender, str) else None,
            ca_file=support.resolve_path(ca_file) if isinstance(ca_file, str) else None,
            helo=config.get("helo") or None,
            oauth2=TOKEN_COMMAND in config,
        )

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"smtp://{host}:{self.port} ({self.security})"
