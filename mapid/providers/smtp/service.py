"""The `smtp` message service (the entry point `mapid.providers.smtp:SmtpService`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mapid.constants import ServiceFlags
from mapid.providers.base import ConfigProblem, MessageService
from mapid.providers.smtp.config import CONFIG_SCHEMA, SMTP_SECRET_KEYS, check_config
from mapid.providers.smtp.transport import SmtpTransport

__all__ = ["SmtpService"]


class SmtpService(MessageService):
    """The `smtp` service: one transport provider for address type SMTP."""

    name = "smtp"
    display_name = "SMTP transport"
    flags = ServiceFlags.SERVICE_NO_PRIMARY_IDENTITY
    providers = (SmtpTransport,)
    config_schema: ClassVar[dict[str, Any]] = CONFIG_SCHEMA
    secret_keys: ClassVar[frozenset[str]] = SMTP_SECRET_KEYS

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[ConfigProblem]:
        return check_config(config)
