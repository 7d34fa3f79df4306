"""Message-service administration (IMsgServiceAdmin, docs/protocol.md 6.3): writes to profiles.

Each change is written to the profile file through config_writer (the user's comments and
layout survive) and then reloaded like a hand edit, so live sessions follow it. A service's
configuration is checked against its JSON Schema before anything is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import tomlkit

from mapid import entryid
from mapid.constants import ResourceFlags, ResourceType, ServiceFlags
from mapid.daemon.config.profiles import Profile, ServiceSection, provider_uid
from mapid.daemon.config.service_registry import ServiceRegistry, ServiceUnavailable
from mapid.daemon.config.writer import (
    add_service,
    edit_toml,
    remove_key,
    remove_service,
    replace_service_config,
    set_value,
    unique_service_key,
)
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import ConfigProblem, MessageService, schema_problems

PRIMARY_IDENTITY_KEY = "primary_identity"
TRANSPORT_ORDER_KEY = "transport_order"

Reload = Callable[[str], Awaitable[Any]]


def _invalid(problems: list[ConfigProblem], what: str) -> MapiError:
    return MapiError(
        ErrorCode.MAPI_E_INVALID_PARAMETER,
        f"{what}: " + "; ".join(f"{p.key}: {p.message}" for p in problems),
        details={"errors": [{"key": p.key, "message": p.message} for p in problems]},
    )


def _section(profile: Profile, service_uid: bytes) -> ServiceSection:
    for section in profile.services:
        if section.uid == service_uid:
            return section
    raise MapiError(
        ErrorCode.MAPI_E_NOT_FOUND, f"profile {profile.name} has no service with that UID"
    )


def transports(profile: Profile, registry: ServiceRegistry) -> list[tuple[bytes, ServiceSection]]:
    """The profile's transport providers (PR_PROVIDER_UID, section), in transport order."""
    found: list[tuple[bytes, ServiceSection, bool]] = []
    for section in profile.services:
        try:
            cls = registry.get(section.service)
        except ServiceUnavailable:
            continue
        for provider in cls.providers:
            if provider.resource_type == ResourceType.MAPI_TRANSPORT_PROVIDER:
                uid = provider_uid(profile.path.stem, section.key, provider.name)
                last = bool(provider.resource_flags & ResourceFlags.STATUS_XP_PREFER_LAST)
                found.append((uid, section, last))
    order = profile.extra.get(TRANSPORT_ORDER_KEY)
    if isinstance(order, list):  # MsgServiceTransportOrder overrides STATUS_XP_PREFER_LAST
        rank = {value: i for i, value in enumerate(order)}
        found.sort(key=lambda item: rank.get(item[0].hex(), len(rank)))
    else:  # the order of addition, those that prefer to be last at the end
        found.sort(key=lambda item: item[2])
    return [(uid, section) for uid, section, _last in found]


class ServiceAdmin:
    def __init__(self, registry: ServiceRegistry, reload: Reload) -> None:
        self.registry = registry
        self.reload = reload

    def _class(self, name: str) -> type[MessageService]:
        try:
            return self.registry.get(name)
        except ServiceUnavailable as exc:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, str(exc)) from None

    @staticmethod
    def _check_partial(cls: type[MessageService], config: Mapping[str, Any]) -> None:
        """The keys given must be right; keys still missing may come with configure."""
        if "service" in config:
            raise _invalid([ConfigProblem("service", "is not part of the configuration")], "config")
        schema = {k: v for k, v in cls.config_schema.items() if k != "required"}
        problems = schema_problems(schema, config)
        if problems:
            raise _invalid(problems, f"invalid configuration for {cls.name}")

    async def create(
        self,
        profile: Profile,
        service_name: str,
        display_name: str | None,
        config: Mapping[str, Any] | None,
    ) -> tuple[bytes, str]:
        """Add the section; return its service UID and the key it was written under."""
        cls = self._class(service_name)
        if cls.flags & ServiceFlags.SERVICE_SINGLE_COPY and any(
            s.service == service_name for s in profile.services
        ):
            raise MapiError(
                ErrorCode.MAPI_E_NO_ACCESS,
                f"{service_name} allows one copy per profile and {profile.name} has it",
            )
        values = dict(config or {})
        if display_name:
            values["display_name"] = display_name
        self._check_partial(cls, values)
        key = await self._add(profile, service_name, values)
        await self.reload("services.create")
        return entryid.uid_from_name("service", profile.path.stem, key), key

    async def _add(self, profile: Profile, service_name: str, values: Mapping[str, Any]) -> str:
        chosen: list[str] = []

        def change(doc: tomlkit.TOMLDocument) -> None:
            chosen.append(unique_service_key(doc, service_name))
            add_service(doc, chosen[-1], service_name, values)

        await asyncio.to_thread(edit_toml, profile.path, change)
        return chosen[-1]

    async def configure(
        self, profile: Profile, service_uid: bytes, config: Mapping[str, Any]
    ) -> None:
        section = _section(profile, service_uid)
        cls = self._class(section.service)
        merged = {k: v for k, v in {**section.config, **config}.items() if v is not None}
        if "service" in config:
            raise _invalid([ConfigProblem("service", "is not part of the configuration")], "config")
        problems = cls.check_config(merged)
        if problems:
            raise _invalid(problems, f"invalid configuration for {section.key}")
        await asyncio.to_thread(
            edit_toml, profile.path, lambda doc: replace_service_config(doc, section.key, merged)
        )
        await self.reload("services.configure")

    async def delete(self, profile: Profile, service_uid: bytes) -> None:
        section = _section(profile, service_uid)

        def change(doc: tomlkit.TOMLDocument) -> None:
            remove_service(doc, section.key)
            if doc.get(PRIMARY_IDENTITY_KEY) == section.key:
                remove_key(doc, [PRIMARY_IDENTITY_KEY])

        await asyncio.to_thread(edit_toml, profile.path, change)
        await self.reload("services.delete")

    async def copy(self, profile: Profile, service_uid: bytes, target: Profile) -> bytes:
        section = _section(profile, service_uid)
        cls = self._class(section.service)
        if cls.flags & ServiceFlags.SERVICE_SINGLE_COPY and any(
            s.service == section.service for s in target.services
        ):
            raise MapiError(
                ErrorCode.MAPI_E_NO_ACCESS,
                f"{section.service} allows one copy per profile and {target.name} has it",
            )
        key = await self._add(target, section.service, section.config)
        await self.reload("services.copy")
        return entryid.uid_from_name("service", target.path.stem, key)

    async def set_primary_identity(self, profile: Profile, service_uid: bytes | None) -> None:
        """The service whose providers supply the identity; nil: no identity at all."""
        key = ""
        if service_uid is not None:
            section = _section(profile, service_uid)
            cls = self._class(section.service)
            if cls.flags & ServiceFlags.SERVICE_NO_PRIMARY_IDENTITY:
                raise MapiError(
                    ErrorCode.MAPI_E_NO_ACCESS, f"{section.service} cannot supply an identity"
                )
            key = section.key
        await asyncio.to_thread(
            edit_toml, profile.path, lambda doc: set_value(doc, [PRIMARY_IDENTITY_KEY], key)
        )
        await self.reload("services.set_primary_identity")

    async def transport_order(self, profile: Profile, provider_uids: list[bytes]) -> None:
        known = {uid for uid, _section in transports(profile, self.registry)}
        if len(provider_uids) != len(known):
            raise MapiError(
                ErrorCode.MAPI_E_BUSY,
                f"give all {len(known)} transports of the profile, not {len(provider_uids)}",
            )
        for uid in provider_uids:
            if uid not in known:
                raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"{uid.hex()} is not a transport here")
        order = [uid.hex() for uid in provider_uids]
        await asyncio.to_thread(
            edit_toml, profile.path, lambda doc: set_value(doc, [TRANSPORT_ORDER_KEY], order)
        )
        await self.reload("services.transport_order")
