"""The provider API: message services, their providers, and the support object.

A message service is a class registered under the `mapid.services` entry-point group (the
MAPISVC.INF of this world). It names its providers; the daemon creates one instance of each
provider per session and hands it a `ProviderSupport` (MAPI's IMAPISupport), through which
the provider reads its configuration, updates its status row, registers its MAPIUID and
raises notifications. Providers never import the daemon.

Like aiosmtpd's handlers, every hook has a sensible default, so a provider overrides only
what it does. Hooks are coroutines; blocking work goes through `support.run_blocking`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import jsonschema

from mapid.constants import (
    FlushFlags,
    NotificationEvent,
    ObjectType,
    ResourceFlags,
    ResourceMethods,
    ResourceType,
    ServiceFlags,
    StatusCode,
    ValidateStateFlags,
)
from mapid.errors import ErrorCode, MapiError

T = TypeVar("T")


@dataclass(frozen=True)
class Identity:
    """The user a service stands for (PR_IDENTITY_* in its status rows)."""

    display_name: str
    email: str
    addrtype: str = "SMTP"


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a service's configuration, for `details.errors`."""

    key: str
    message: str


SECRET_KEYS: frozenset[str] = frozenset({"password", "password_command", "keyring"})
"""Configuration keys whose values never appear in a log, event, table or message."""


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def schema_problems(
    schema: Mapping[str, Any],
    config: Mapping[str, Any],
    secret_keys: frozenset[str] = SECRET_KEYS,
) -> list[ConfigProblem]:
    """Check `config` against a JSON Schema; each problem names its key (`identity.email`).

    A subschema may carry `x-error`, a plain sentence used instead of the validator's
    message (which quotes regular expressions at the user) for any failure but a wrong type.
    """
    validator = _validator(json.dumps(schema, sort_keys=True))
    problems: list[ConfigProblem] = []
    for error in sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.path)):
        path = [str(part) for part in error.absolute_path]
        wanted = error.validator_value
        if error.validator == "required" and isinstance(error.instance, Mapping):
            missing = (
                [k for k in wanted if k not in error.instance] if isinstance(wanted, list) else []
            )
            for key in missing:
                problems.append(ConfigProblem(".".join([*path, key]), "required"))
            continue
        message = error.message
        if secret_keys & set(path):  # the validator quotes the value: never a secret's
            message = f"is not a valid value ({error.validator} {error.validator_value!r})"
        custom = error.schema.get("x-error") if isinstance(error.schema, Mapping) else None
        if error.validator != "type" and isinstance(custom, str):
            message = custom  # the schema's own words for a value of the right type
        problems.append(ConfigProblem(".".join(path) or "(config)", message))
    return problems


class ProviderSupport(Protocol):
    """What the daemon gives each provider instance (MAPI's IMAPISupport)."""

    profile_name: str
    service_key: str
    """The key of the service's section in the profile file (`[services.<key>]`)."""
    service_uid: bytes
    provider_uid: bytes
    logger: logging.Logger

    def config(self) -> Mapping[str, Any]:
        """The service's section of the profile, as last loaded (read my profile section)."""
        ...

    def resolve_path(self, value: str) -> Path:
        """A path from the configuration: `~` expanded, relative to the config directory."""
        ...

    def modify_status_row(self, props: Mapping[str, Any], *, update: bool = True) -> None:
        """Change my status row: merge `props` (STATUSROW_UPDATE) or replace my columns."""
        ...

    def set_provider_uid(self, uid: bytes) -> None:
        """Register a MAPIUID: entry IDs carrying it are routed to this provider."""
        ...

    def notify(
        self, event: NotificationEvent, *, entryid: bytes | None = None, **fields: Any
    ) -> int:
        """Raise a notification to the advise sinks registered on `entryid` (or all of mine).

        Returns how many sinks it reached.
        """
        ...

    async def run_blocking(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Run blocking I/O in the daemon's bounded thread pool."""
        ...

    async def password(self) -> str | None:
        """The service's secret: its `password_command`, the Secret Service (`keyring`) or a
        `password` in a file only its owner reads; None when it names none. Failures raise
        MapiError(MAPI_E_LOGON_FAILED) with a message that never holds the secret."""
        ...


class MapiObject:
    """An object a provider hands out through `open_entry` (a store, folder, mail user...)."""

    object_type: ClassVar[ObjectType]

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        """Properties by tag name; with `tags` None, all of them. Absent ones are left out."""
        return {}

    async def set_props(self, props: Mapping[str, Any]) -> dict[str, str]:
        """Set properties; returns the problems, tag -> error code name ({} when all went)."""
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, "this object is read-only")

    async def delete_props(self, tags: list[str]) -> dict[str, str]:
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, "this object is read-only")

    async def save_changes(self) -> None:
        """Commit pending changes; objects without transactions have nothing to do."""

    async def release(self) -> None:
        """The client released its handle."""


def pick_props(props: Mapping[str, Any], tags: list[str] | None) -> dict[str, Any]:
    """The properties named by `tags` that `props` has (all of them for None)."""
    if tags is None:
        return dict(props)
    return {tag: props[tag] for tag in tags if tag in props}


class PropsObject(MapiObject):
    """A read-only object whose properties are fixed when it is opened."""

    def __init__(self, props: Mapping[str, Any]) -> None:
        self.props = dict(props)

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        return pick_props(self.props, tags)


class Provider:
    """Base of every provider. Subclass one of the three kinds below."""

    resource_type: ClassVar[ResourceType]
    name: ClassVar[str] = "provider"
    """The provider's name within its service (e.g. "contacts")."""
    display: ClassVar[str] = "mapid"
    """PR_PROVIDER_DISPLAY: who made it."""
    resource_methods: ClassVar[ResourceMethods] = ResourceMethods.STATUS_VALIDATE_STATE
    resource_flags: ClassVar[ResourceFlags] = ResourceFlags(0)

    def __init__(self, support: ProviderSupport) -> None:
        self.support = support

    def display_name(self) -> str:
        """PR_DISPLAY_NAME of the status row; the section's `display_name`, else the key."""
        value = self.support.config().get("display_name")
        return value if isinstance(value, str) and value else self.support.service_key

    def status_props(self) -> dict[str, Any]:
        """The provider's own columns of its first status row (status code, path, ...)."""
        return {"PR_STATUS_CODE": int(StatusCode.STATUS_AVAILABLE)}

    async def logon(self) -> None:
        """Log on. Raise MAPI_E_UNCONFIGURED to have the service configured and retried once,
        MAPI_E_FAILONEPROVIDER to disable only this provider; any other error disables the
        whole service for the session."""

    async def logoff(self) -> None:
        """Log off: drop connections and objects. The daemon removes the status row."""

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject:
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no object with that entry ID")

    def compare_entryids(self, a: bytes, b: bytes) -> bool:
        """Whether two of my entry IDs name the same object (default: the same bytes)."""
        return a == b

    async def advise(self, entryid: bytes, event_mask: NotificationEvent) -> None:
        """Accept or refuse a registration for events on one of my objects."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this provider raises no notifications")

    async def validate_state(self, flags: ValidateStateFlags) -> None:
        """IMAPIStatus::ValidateState on my status object."""

    async def flush_queues(self, flags: FlushFlags) -> None:
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this provider has no queues")

    async def change_password(self, old: str, new: str) -> None:
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this provider has no password")


class AddressBookProvider(Provider):
    resource_type = ResourceType.MAPI_AB_PROVIDER

    def identity(self) -> Identity | None:
        """The identity this provider supplies, if any (PR_IDENTITY_* in its row)."""
        return None

    def identity_entryid(self) -> bytes | None:
        """An entry ID of mine for the identity; None lets the daemon build a one-off."""
        return None


class StoreProvider(Provider):
    resource_type = ResourceType.MAPI_STORE_PROVIDER


class TransportProvider(Provider):
    resource_type = ResourceType.MAPI_TRANSPORT_PROVIDER
    resource_methods = ResourceMethods.STATUS_VALIDATE_STATE | ResourceMethods.STATUS_FLUSH_QUEUES
    address_types: ClassVar[tuple[str, ...]] = ()

    def status_props(self) -> dict[str, Any]:
        code = StatusCode.STATUS_AVAILABLE | StatusCode.STATUS_OUTBOUND_ENABLED
        return {"PR_STATUS_CODE": int(code)}

    async def flush_queues(self, flags: FlushFlags) -> None:
        """Send what is queued now (the spooler drives this)."""


class MessageService:
    """A message service: a named group of providers with one configuration section."""

    name: ClassVar[str]
    """The installed name, used as `service = "<name>"` in profiles."""
    display_name: ClassVar[str]
    flags: ClassVar[ServiceFlags] = ServiceFlags.SERVICE_NO_PRIMARY_IDENTITY
    providers: ClassVar[tuple[type[Provider], ...]] = ()
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    secret_keys: ClassVar[frozenset[str]] = SECRET_KEYS

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[ConfigProblem]:
        """Problems with a configuration: whatever breaks `config_schema`.

        A service with rules a schema cannot say overrides this and adds its own.
        """
        return schema_problems(cls.config_schema, config, SECRET_KEYS | cls.secret_keys)

    @classmethod
    async def configure(cls, config: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """MSG_SERVICE_CONFIGURE, called after a provider's logon said MAPI_E_UNCONFIGURED.

        Return a completed configuration to retry with, or None to retry unchanged.
        """
        return None

    @classmethod
    def identity(cls, config: Mapping[str, Any]) -> Identity | None:
        """The identity this service supplies under `config`, if it can supply one."""
        return None
