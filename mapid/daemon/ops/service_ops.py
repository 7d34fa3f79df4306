"""`services.*` operations (docs/protocol.md 6.3, IMsgServiceAdmin).

Each takes the session's `token` or `args.profile`, so a configuration tool can look at a
profile without logging on to it.
"""

from __future__ import annotations

from typing import Any

from mapid.constants import ResourceType, ServiceFlags
from mapid.daemon.bus.registry import Arg, Bin, Map, OpContext, Str, op
from mapid.daemon.config.profiles import Profile, provider_uid
from mapid.daemon.config.service_admin import PRIMARY_IDENTITY_KEY, transports
from mapid.daemon.config.service_registry import ServiceUnavailable
from mapid.daemon.ops.common import table_of, target_profile
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import MessageService

PROFILE_ARG = {"profile": Str(max_len=4096)}


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
            chosen = profile.extra.get(PRIMARY_IDENTITY_KEY)
            supplies = cls.identity(section.config) is not None
            if chosen is not None:
                supplies = supplies and section.key == chosen
            if not identity_taken and supplies:
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
                "PR_MAPID_SERVICE_KEY": section.key,
            }
        )
    return rows


@op(
    "services.table",
    token=False,
    token_optional=True,
    locks_session=False,
    args=PROFILE_ARG,
    table=True,
)
def services_table(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """The message services of a profile (a snapshot)."""
    result: dict[str, Any] = table_of(ctx).run(_service_rows(ctx, target_profile(ctx, args)))
    return result


@op(
    "services.providers",
    token=False,
    token_optional=True,
    locks_session=False,  # a write reloads, and the reload takes the session's lock
    args={**PROFILE_ARG, "service_uid": Bin()},
    table=True,
)
def services_providers(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """The providers of a profile, or of one of its services (`service_uid`)."""
    profile = target_profile(ctx, args)
    wanted = args["service_uid"]
    if wanted is not None and not any(s.uid == wanted for s in profile.services):
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no service with that PR_SERVICE_UID")
    everything: list[dict[str, Any]] = []
    for section in profile.services:
        cls = _service_class(ctx, section.service)
        if cls is None:
            continue
        for provider in cls.providers:
            uid = provider_uid(profile.path.stem, section.key, provider.name)
            everything.append(
                {
                    "PR_PROVIDER_UID": uid,
                    "PR_PROVIDER_DISPLAY": provider.display,
                    "PR_RESOURCE_TYPE": int(provider.resource_type),
                    "PR_SERVICE_UID": section.uid,
                    "PR_RESOURCE_FLAGS": int(provider.resource_flags),
                    "PR_DISPLAY_NAME": section.config.get("display_name") or section.key,
                    "PR_INSTANCE_KEY": uid,
                }
            )
    # The transports take the transports' places, in transport order (MsgServiceTransportOrder).
    transport = int(ResourceType.MAPI_TRANSPORT_PROVIDER)
    by_uid = {r["PR_PROVIDER_UID"]: r for r in everything if r["PR_RESOURCE_TYPE"] == transport}
    ordered = iter(by_uid[uid] for uid, _section in transports(profile, ctx.daemon.registry))
    everything = [next(ordered) if r["PR_RESOURCE_TYPE"] == transport else r for r in everything]
    for ordinal, row in enumerate(everything):
        row["PR_PROVIDER_ORDINAL"] = ordinal
    rows = [r for r in everything if wanted is None or r["PR_SERVICE_UID"] == wanted]
    result: dict[str, Any] = table_of(ctx).run(rows)
    return result


SERVICE_UID = Bin(required=True)


def _uid_list(value: object, name: str) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(v, bytes) for v in value):
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, f"argument {name!r} is a list of bin")
    return value


@op(
    "services.create",
    token=False,
    token_optional=True,
    locks_session=False,  # a write reloads, and the reload takes the session's lock
    args={
        **PROFILE_ARG,
        "service_name": Str(required=True),
        "display_name": Str(),
        "config": Map(),
    },
)
async def services_create(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Add a service to the profile file, keyed by its name made unique (vcard, vcard-2)."""
    uid, key = await ctx.daemon.service_admin.create(
        target_profile(ctx, args), args["service_name"], args["display_name"], args["config"]
    )
    return {"service_uid": uid, "key": key}


@op(
    "services.configure",
    token=False,
    token_optional=True,
    locks_session=False,  # a write reloads, and the reload takes the session's lock
    args={**PROFILE_ARG, "service_uid": SERVICE_UID, "config": Map(required=True)},
)
async def services_configure(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Change a service's configuration (nil removes a key); checked against its schema."""
    await ctx.daemon.service_admin.configure(
        target_profile(ctx, args), args["service_uid"], args["config"]
    )
    return {}


@op(
    "services.delete",
    token=False,
    token_optional=True,
    locks_session=False,  # a write reloads, and the reload takes the session's lock
    args={**PROFILE_ARG, "service_uid": SERVICE_UID},
)
async def services_delete(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    await ctx.daemon.service_admin.delete(target_profile(ctx, args), args["service_uid"])
    return {}


@op(
    "services.copy",
    token=False,
    token_optional=True,
    locks_session=False,  # a write reloads, and the reload takes the session's lock
    args={**PROFILE_ARG, "service_uid": SERVICE_UID, "to_profile": Str(required=True)},
)
async def services_copy(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Copy a service, configuration and all, into another profile (or the same one)."""
    target = target_profile(ctx, {"profile": args["to_profile"]}, by_name=True)
    uid = await ctx.daemon.service_admin.copy(
        target_profile(ctx, args), args["service_uid"], target
    )
    return {"service_uid": uid}


@op(
    "services.set_primary_identity",
    token=False,
    token_optional=True,
    locks_session=False,  # a write reloads, and the reload takes the session's lock
    args={**PROFILE_ARG, "service_uid": Bin(required=True, nullable=True)},
)
async def services_set_primary_identity(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    await ctx.daemon.service_admin.set_primary_identity(
        target_profile(ctx, args), args["service_uid"]
    )
    return {}


@op(
    "services.transport_order",
    token=False,
    token_optional=True,
    locks_session=False,  # a write reloads, and the reload takes the session's lock
    args={**PROFILE_ARG, "provider_uids": Arg(_uid_list, required=True)},
)
async def services_transport_order(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """All the profile's transports, in the order the spooler is to try them."""
    await ctx.daemon.service_admin.transport_order(target_profile(ctx, args), args["provider_uids"])
    return {}
