"""The `imap` service's configuration: schema, the rules a schema cannot say, and the
settings a connection needs (`ImapSettings`), plus where the account's cache lives.

Credentials never cross a connection without TLS except to this machine: `security =
"none"` with any other host is a configuration error (mapid.providers.network's rule, the
smtp service's too). The account logs in with a password (`password_command`, `keyring`
or `password`) or with OAuth2 (`oauth2_token_command`, a program that prints an access
token: SASL OAUTHBEARER or XOAUTH2, connection.py), never both, as smtp does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import SECRET_KEYS, ConfigProblem, ProviderSupport, schema_problems
from mapid.providers.network import CREDENTIAL_PROPERTIES, TOKEN_COMMAND, credential_problems

__all__ = [
    "CONFIG_SCHEMA",
    "DEFAULT_PORTS",
    "ImapSettings",
    "cache_dir",
    "check_config",
]

DEFAULT_PORTS: Mapping[str, int] = {"none": 143, "starttls": 143, "tls": 993}
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_POLL_S = 60.0
DEFAULT_RECONNECT_MAX_S = 300.0
SECRETS = SECRET_KEYS | {TOKEN_COMMAND}

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "IMAP message store",
    "type": "object",
    "properties": {
        "host": {
            "type": "string",
            "pattern": "^[^\\s/]+$",
            "x-error": "must be a host name or address",
            "description": "The IMAP server.",
        },
        "port": {
            "type": "integer",
            "minimum": 1,
            "maximum": 65535,
            "description": "Default by security: 993 (tls), 143 (starttls, none).",
        },
        "security": {
            "enum": ["none", "starttls", "tls"],
            "default": "tls",
            "x-error": 'must be "none", "starttls" or "tls"',
            "description": "tls: TLS from the start; starttls: upgrade after connecting. "
            "Certificates and host names are always checked.",
        },
        "username": {"type": "string", "pattern": "\\S", "x-error": "must not be empty"},
        **CREDENTIAL_PROPERTIES,
        "display_name": {"type": "string", "description": "Name of the store."},
        "primary_store": {
            "type": "boolean",
            "default": False,
            "description": "Make this the profile's default store.",
        },
        "timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": DEFAULT_TIMEOUT_S,
            "description": "Seconds to wait for the server at each step.",
        },
        "save_sent": {
            "type": "boolean",
            "default": True,
            "description": "After sending, file a copy in the account's Sent folder.",
        },
        "poll_interval": {
            "type": "number",
            "minimum": 0.5,
            "default": DEFAULT_POLL_S,
            "description": "Seconds between checks of the folders IDLE does not watch.",
        },
        "reconnect_max": {
            "type": "number",
            "minimum": 1,
            "default": DEFAULT_RECONNECT_MAX_S,
            "description": "The longest wait between two tries to reach the server.",
        },
        "ca_file": {
            "type": "string",
            "description": "PEM file of a private CA to check the server's certificate with.",
        },
    },
    "required": ["host", "username"],
    "additionalProperties": False,
}


def check_config(config: Mapping[str, Any]) -> list[ConfigProblem]:
    """What is wrong with an `imap` section: the schema's problems, then the rules it
    cannot say (ImapService.check_config)."""
    problems = schema_problems(CONFIG_SCHEMA, config, SECRETS)
    problems += credential_problems(config, sends_credentials=True, known=problems)
    return problems


@dataclass(frozen=True)
class ImapSettings:
    """A checked configuration: what a connection needs and the row shows."""

    host: str
    port: int
    security: str
    username: str
    timeout: float
    poll_interval: float
    reconnect_max: float
    save_sent: bool
    ca_file: Path | None
    oauth2: bool = False
    """Log in with an access token from `oauth2_token_command` (OAUTHBEARER or XOAUTH2)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], support: ProviderSupport) -> ImapSettings:
        problems = check_config(config)
        if problems:
            raise MapiError(
                ErrorCode.MAPI_E_UNCONFIGURED,
                "imap: " + "; ".join(f"{p.key}: {p.message}" for p in problems),
                details={"errors": [{"key": p.key, "message": p.message} for p in problems]},
            )
        security = str(config.get("security", "tls"))
        ca_file = config.get("ca_file")
        return cls(
            host=str(config["host"]),
            port=int(config.get("port", DEFAULT_PORTS[security])),
            security=security,
            username=str(config["username"]),
            timeout=float(config.get("timeout", DEFAULT_TIMEOUT_S)),
            poll_interval=float(config.get("poll_interval", DEFAULT_POLL_S)),
            reconnect_max=float(config.get("reconnect_max", DEFAULT_RECONNECT_MAX_S)),
            save_sent=bool(config.get("save_sent", True)),
            ca_file=support.resolve_path(ca_file) if isinstance(ca_file, str) else None,
            oauth2=TOKEN_COMMAND in config,
        )

    @property
    def where(self) -> str:
        """host:port, as the row names the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def account(self) -> str:
        """Who and where: a cache made for another account is not reused."""
        return f"{self.username}@{self.where} ({self.security})"


def cache_dir(support: ProviderSupport) -> Path:
    """The account's cache directory: the service's own state directory (private, the same
    across sessions and restarts: `support.state_dir()`)."""
    return support.state_dir()
