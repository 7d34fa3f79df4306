"""The `sendmail` service's configuration: its schema, the checks a schema cannot say, and
`SendmailSettings`, what the transport reads once per logon.

Below both the transport and the service, so that neither imports the other for it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import ConfigProblem, Identity, schema_problems

__all__ = [
    "ADDRTYPE",
    "CONFIG_SCHEMA",
    "DEFAULT_COMMAND",
    "DEFAULT_TIMEOUT_S",
    "SendmailSettings",
    "check_config",
    "command_problem",
    "parse_sender",
]

ADDRTYPE = "SMTP"
DEFAULT_COMMAND: tuple[str, ...] = ("/usr/sbin/sendmail",)
"""Where msmtp-mta, Postfix, Exim and OpenSMTPD all put their sendmail program."""
DEFAULT_TIMEOUT_S = 20.0
"""Below the daemon's provider_timeout (30 s by default), which bounds every send anyway."""
HEADER_RECIPIENTS = frozenset({"-t"})
"""Options that make sendmail read the recipients from the header: never with mapid, which
passes them as arguments (the header has no Bcc left, and some recipients may be another
transport's)."""


def parse_sender(value: str) -> Identity | None:
    """`"Ada Lovelace <ada@example.org>"` or `"ada@example.org"` as an Identity; None if bad."""
    if "\r" in value or "\n" in value or value.count("<") > 1:
        return None
    name, address = parseaddr(value)
    if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", address) or address.startswith("-"):
        return None
    return Identity(display_name=name or address, email=address, addrtype=ADDRTYPE)


CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "sendmail transport",
    "type": "object",
    "properties": {
        "command": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "default": list(DEFAULT_COMMAND),
            "x-error": 'must be a list of strings, the program first: ["/usr/sbin/sendmail"]',
            "description": "The sendmail program and options of your own (msmtp's -a "
            "ACCOUNT); mapid adds -oi -f SENDER -- RECIPIENTS. Run without a shell.",
        },
        "from": {
            "type": "string",
            "description": 'Send as "Name <addr>" or addr instead of the session identity.',
        },
        "timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": DEFAULT_TIMEOUT_S,
            "description": "Seconds the program may take; then it is killed and the "
            "message stays queued.",
        },
        "display_name": {"type": "string", "description": "Name of the transport."},
    },
    "additionalProperties": False,
}


def command_problem(command: list[str]) -> ConfigProblem | None:
    """What is wrong with a `command` the schema took: the program must be an absolute path
    to an executable file (a daemon's PATH is not the user's), and -t is refused."""
    program = command[0]
    if not os.path.isabs(program):
        return ConfigProblem("command", f"{program} is not an absolute path")
    if not os.path.exists(program):
        return ConfigProblem(
            "command",
            f"{program} does not exist (install a sendmail-compatible program: msmtp-mta, "
            "postfix or exim4; or name yours)",
        )
    if not os.path.isfile(program) or not os.access(program, os.X_OK):
        return ConfigProblem("command", f"{program} is not an executable file")
    if HEADER_RECIPIENTS & set(command[1:]):
        return ConfigProblem("command", "leave out -t: mapid passes the recipients as arguments")
    return None


def check_config(config: Mapping[str, Any]) -> list[ConfigProblem]:
    """What is wrong with a `sendmail` section: the schema's problems, then the rules it
    cannot say (SendmailService.check_config)."""
    problems = schema_problems(CONFIG_SCHEMA, config)
    sender = config.get("from")
    if isinstance(sender, str) and parse_sender(sender) is None:
        problems.append(ConfigProblem("from", 'must be "Name <name@domain>" or name@domain'))
    command = config.get("command", list(DEFAULT_COMMAND))
    if not any(p.key.startswith("command") for p in problems):
        found = command_problem(list(command))
        if found is not None:
            problems.append(found)
    return problems


@dataclass(frozen=True)
class SendmailSettings:
    """A checked configuration: what the transport runs and shows."""

    command: tuple[str, ...]
    timeout: float
    sender: Identity | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SendmailSettings:
        """The settings, or MAPI_E_UNCONFIGURED naming every problem (the logon's row shows
        it; `details.errors` lists them by key, as services.configure does)."""
        problems = check_config(config)
        if problems:
            raise MapiError(
                ErrorCode.MAPI_E_UNCONFIGURED,
                "sendmail: " + "; ".join(f"{p.key}: {p.message}" for p in problems),
                details={"errors": [{"key": p.key, "message": p.message} for p in problems]},
            )
        sender = config.get("from")
        return cls(
            command=tuple(config.get("command", DEFAULT_COMMAND)),
            timeout=float(config.get("timeout", DEFAULT_TIMEOUT_S)),
            sender=parse_sender(sender) if isinstance(sender, str) else None,
        )

    @property
    def program(self) -> Path:
        return Path(self.command[0])
