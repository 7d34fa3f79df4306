"""`services.*` operations (PROTOCOL.md 6.3, IMsgServiceAdmin): the read-only ones so far.

Each takes the session's `token` or `args.profile`, so a configuration tool can look at a
profile without logging on to it.
"""

from __future__ import annotations

from typing import Any

from mapid.constants import ResourceType, ServiceFlags
from mapid.daemon.profiles import Profile, provider_uid
from mapid.daemon.registry import Bin, OpContext, Str, op
from mapid.daemon.service_registry import ServiceUnavailable
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import MessageService

PROFILE_ARG = {"profile": Str(max_len=4096)}


def target_profile(ctx: OpContext, args: dict[str, Any]) -> Profile:
    """The profile an admin op works on: the session's, else `args.profile`."""
    profiles: dict[str, Profile] = ctx.daemon.profiles
    if ctx.session is not None:
        return profiles.get(ctx.session.profile.name, ctx.session.profile)
    name = args.get("profile")
    if not name:
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "give a session token or args.profile")
    profile = profiles.get(name)
    if profile is None:
        raise MapiError(
            ErrorCode.MAPI_E_NOT_FOUND, f"no profile {name!r}", details={"profile": name}
        )
    return profile


def _service_class(ctx: OpContext, name: str) -> type[MessageService] | None:
    try:
        cls: type[MessageService] = ctx.daemon.registry.get(name)
    except ServiceUnavailable:
        return None
    return cls


@op("services.available", token=False)
def services_available(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Every installed message service with its providers and config schema."""
    found = []
    for service in ctx.daemon.registry.available():
        cls = service.cls
        found.append(
            {
                "name": service.name,
                "display_name": cls.display_name,
                "providers": [
                    {"name": p.name, "display": p.display, "resource_type": int(p.resource_type)}
                    for p in cls.providers
                ],
                "flags": int(cls.flags),
                "config_schema": cls.config_schema,
            }
        )
    return {"services": found}


def _service_rows(ctx: OpContext, profile: Profile) -> list[dict[str, Any]]:
    rows = []
    identity_taken = False
    store_taken = False
    for section in profile.services:
        cls = _service_class(ctx, section.service)
        flags = ServiceFlags(0)
        if cls is not None:
            flags = ServiceFlags(cls.flags)
            if not identity_taken and cls.identity(section.config) is not None:
                flags |= ServiceFlags.SERVICE_PRIMARY_IDENTITY
                identity_taken = True
            kinds = {p.resource_type for p in cls.providers}
            if not store_taken and ResourceType.MAPI_STORE_PROVIDER in kinds:
                flags |= ServiceFlags.SERVICE_DEFAULT_STORE
                store_taken = True
        rows.append(
            {
                "PR_DISPLAY_NAME": section.config.get("display_name") or section.key,
                "PR_SERVICE_NAME": section.service,
                "PR_SERVICE_UID": section.uid,
                "PR_RESOURCE_FLAGS": int(flags),
                "PR_INSTANCE_KEY": section.uid,
            }
        )
    return rows


@op("services.table", token=False, token_optional=True, args=PROFILE_ARG, table=True)
def services_table(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """The message services of a profile (a snapshot)."""
    assert ctx.table is not None
    result: dict[str, Any] = ctx.table.run(_service_rows(ctx, target_profile(ctx, args)))
    return result


@op(
    "services.providers",
    token=False,
    token_optional=True,
    args={**PROFILE_ARG, "service_uid": Bin()},
    table=True,
)
def services_providers(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """The providers of a profile, or of one of its services (`service_uid`)."""
    assert ctx.table is not None
    profile = target_profile(ctx, args)
    wanted = args["service_uid"]
    if wanted is not None and not any(s.uid == wanted for s in profile.services):
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no service with that PR_SERVICE_UID")
    rows = []
    ordinal = 0
    for section in profile.services:
        cls = _service_class(ctx, section.service)
        if cls is None:
            continue
        for provider in cls.providers:
            uid = provider_uid(profile.name, section.key, provider.name)
            if wanted is None or section.uid == wanted:
                rows.append(
                    {
                        "PR_PROVIDER_UID": uid,
                        "PR_PROVIDER_DISPLAY": provider.display,
                        "PR_RESOURCE_TYPE": int(provider.resource_type),
                        "PR_PROVIDER_ORDINAL": ordinal,
                        "PR_SERVICE_UID": section.uid,
                        "PR_RESOURCE_FLAGS": int(provider.resource_flags),
                        "PR_DISPLAY_NAME": section.config.get("display_name") or section.key,
                        "PR_INSTANCE_KEY": uid,
                    }
                )
            ordinal += 1
    result: dict[str, Any] = ctx.table.run(rows)
    return result
