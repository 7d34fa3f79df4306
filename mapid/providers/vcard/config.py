"""The `vcard` service's configuration: its schema, the check of a section, its identity.

Below both the provider (which checks the section at every load) and the service
(which declares the schema), so that neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mapid.providers.base import SECRET_KEYS, ConfigProblem, Identity, schema_problems
from mapid.providers.vcard.entryids import ADDRTYPE

__all__ = ["CONFIG_SCHEMA", "check_config", "config_identity"]

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "vCard address book",
    "type": "object",
    "properties": {
        "path": {
            "type": "string",
            "pattern": "\\S",
            "x-error": "must not be empty",
            "description": "A folder of .vcf files (khard / vdirsyncer layout); "
            "created if missing.",
        },
        "display_name": {"type": "string", "description": "Name of the address book."},
        "read_only": {
            "type": "boolean",
            "description": "Never write the folder (another program syncs it); "
            "creating, editing or deleting contacts is then MAPI_E_NO_ACCESS.",
        },
        "identity": {
            "type": "object",
            "description": "The user this service stands for (the session's identity).",
            "properties": {
                "display_name": {
                    "type": "string",
                    "pattern": "\\S",
                    "x-error": "must not be empty",
                },
                "email": {
                    "type": "string",
                    "pattern": "^[^@\\s]+@[^@\\s]+$",
                    "x-error": "must be an e-mail address (name@domain)",
                },
            },
            "required": ["display_name", "email"],
            "additionalProperties": False,
        },
    },
    "required": ["path"],
}


def check_config(config: Mapping[str, Any]) -> list[ConfigProblem]:
    """What is wrong with a `vcard` section (VCardService.check_config)."""
    return schema_problems(CONFIG_SCHEMA, config, SECRET_KEYS)


def config_identity(config: Mapping[str, Any]) -> Identity | None:
    """The configured identity, or None when there is none or it is incomplete."""
    raw = config.get("identity")
    if not isinstance(raw, Mapping):
        return None
    display, email = raw.get("display_name"), raw.get("email")
    if not isinstance(display, str) or not isinstance(email, str):
        return None
    if not display.strip() or not email.strip():
        return None
    return Identity(display_name=display.strip(), email=email.strip(), addrtype=ADDRTYPE)
