"""The `vcard` message service (the entry point `mapid.providers.vcard:VCardService`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mapid.constants import ServiceFlags
from mapid.providers.base import ConfigProblem, Identity, MessageService
from mapid.providers.vcard.config import CONFIG_SCHEMA, check_config, config_identity
from mapid.providers.vcard.provider import VCardAddressBook

__all__ = ["VCardService"]


class VCardService(MessageService):
    """The `vcard` service: one address book provider; it can supply the primary identity."""

    name = "vcard"
    display_name = "vCard address book"
    flags = ServiceFlags(0)
    providers = (VCardAddressBook,)

    config_schema: ClassVar[dict[str, Any]] = CONFIG_SCHEMA

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[ConfigProblem]:
        return check_config(config)

    @classmethod
    def identity(cls, config: Mapping[str, Any]) -> Identity | None:
        return config_identity(config)
