"""The `sendmail` message service (the entry point `mapid.providers.sendmail:SendmailService`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mapid.constants import ServiceFlags
from mapid.providers.base import ConfigProblem, MessageService
from mapid.providers.sendmail.config import CONFIG_SCHEMA, check_config
from mapid.providers.sendmail.transport import SendmailTransport

__all__ = ["SendmailService"]


class SendmailService(MessageService):
    """The `sendmail` service: one transport provider for address type SMTP."""

    name = "sendmail"
    display_name = "sendmail transport"
    flags = ServiceFlags.SERVICE_NO_PRIMARY_IDENTITY
    providers = (SendmailTransport,)
    config_schema: ClassVar[dict[str, Any]] = CONFIG_SCHEMA

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[ConfigProblem]:
        return check_config(config)
